"""The local Parquet lake: one file per asset and partition, written atomically.

Layout: ``{lake_dir}/{asset_name}/{partition_key}.parquet`` for partitioned assets and
``{lake_dir}/{asset_name}.parquet`` otherwise.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import BinaryIO
import re
import tempfile
import time
from pathlib import Path

import polars as pl

TMP_PREFIX = ".tmp-"


def asset_path(lake_dir: str | Path, asset_name: str, partition_key: str | None = None) -> Path:
    """Where an asset (partition) lives in the lake."""
    base = Path(lake_dir)
    return base / asset_name / f"{partition_key}.parquet" if partition_key else base / f"{asset_name}.parquet"


def write_atomic(path: str | Path, write: Callable[[BinaryIO], object]) -> Path:
    """Write a file so that readers see the old version or the new one, never a part.

    ``write(fh)`` writes to a temporary file in the same folder (name starts with ``.tmp-`` and
    ends with ``.part``, so no data glob picks it up), which is flushed to disk and then renamed
    over ``path``. On any error the temporary file is removed and the old version stays.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=TMP_PREFIX + path.stem + "-", suffix=".part", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_parquet_atomic(frame: pl.DataFrame, path: str | Path) -> Path:
    """:func:`write_atomic` of a Parquet file (zstd, with statistics)."""
    return write_atomic(path, lambda fh: frame.write_parquet(fh, compression="zstd", statistics=True))


def temp_file_pattern(stem: str) -> re.Pattern[str]:
    """Names :func:`write_parquet_atomic` gives the temporary files of ``{stem}.parquet``."""
    return re.compile(rf"^{re.escape(TMP_PREFIX + stem)}-[A-Za-z0-9_]+\.part$")


def remove_stale_temp_files(folder: str | Path, stem: str, *, older_than: float | None = None) -> list[Path]:
    """Delete leftover temporary files of ``{folder}/{stem}.parquet`` (a writer killed mid-write).

    Only the temp files of that one target are touched, and only those last modified before
    ``older_than`` (seconds since the epoch; default now). Call it while holding the target's
    partition lock (:func:`segpipe.locks.partition_lock`): then no live writer owns such a file.
    Returns the removed paths.
    """
    folder = Path(folder)
    cutoff = time.time() if older_than is None else older_than
    pattern = temp_file_pattern(stem)
    removed: list[Path] = []
    try:
        entries = list(os.scandir(folder))
    except FileNotFoundError:
        return removed
    for entry in entries:
        if not pattern.match(entry.name):
            continue
        try:
            if entry.stat(follow_symlinks=False).st_mtime < cutoff:
                os.unlink(entry.path)
                removed.append(Path(entry.path))
        except FileNotFoundError:
            continue
    return removed
