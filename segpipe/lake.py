"""The local Parquet lake: one file per asset and partition, written atomically.

Layout: ``{lake_dir}/{asset_name}/{partition_key}.parquet`` for partitioned assets and
``{lake_dir}/{asset_name}.parquet`` otherwise.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import polars as pl

TMP_PREFIX = ".tmp-"


def asset_path(lake_dir: str | Path, asset_name: str, partition_key: str | None = None) -> Path:
    """Where an asset (partition) lives in the lake."""
    base = Path(lake_dir)
    return base / asset_name / f"{partition_key}.parquet" if partition_key else base / f"{asset_name}.parquet"


def write_parquet_atomic(frame: pl.DataFrame, path: str | Path) -> Path:
    """Write ``frame`` to ``path`` so that readers see the old file or the new one, never a part.

    The frame goes to a temporary file in the same folder (name starts with ``.tmp-``, so no glob
    of ``*.parquet`` picks it up), is flushed to disk, then renamed over ``path``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=TMP_PREFIX + path.stem + "-", suffix=".part", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            frame.write_parquet(fh, compression="zstd", statistics=True)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def scan_partitions(lake_dir: str | Path, asset_name: str, partition_keys: list[str]) -> pl.LazyFrame | None:
    """Lazy scan of the existing files of ``partition_keys`` (None when none exists)."""
    paths = [p for k in partition_keys if (p := asset_path(lake_dir, asset_name, k)).is_file()]
    return pl.scan_parquet(paths) if paths else None
