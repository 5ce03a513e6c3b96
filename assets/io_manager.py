"""Parquet IO manager for Polars frames (``dagster-polars`` cannot read under Polars 2).

Partitioned assets hand over ``dict[partition_key, DataFrame]`` (one entry per partition of the
run, so a single run can materialize a range) and receive ``dict[partition_key, LazyFrame]`` for
the upstream partitions that exist. Files: ``{lake_dir}/{asset}/{partition_key}.parquet``, or
``{lake_dir}/{asset}.parquet`` when unpartitioned; every write is atomic. ``lake_dir`` is a local
folder or an object-store URL (``s3://``, ``gs://``, ``az://``; :mod:`segpipe.lake`): then inputs
are Polars' native cloud scans and credentials come from environment variables.

Op outputs that are not assets (the bucket numbers and part lists the ops of a bucketed asset pass
each other, :mod:`assets.buckets`) are small JSON values under ``{lake_dir}/_steps/``, so steps on
other processes or machines read them from the shared lake.

Each write holds the partition's lock (:mod:`segpipe.locks`), so two runs of the same partition
never write it at the same time (the second waits up to ``lock_timeout`` seconds, then fails
naming the other run's pid), and first removes the temp files a killed writer of that same
partition left behind. An object-store lake has no lock files: each object write is atomic and
the run that owns the partition in Dagster is the lock (:mod:`segpipe.locks`).
"""

from __future__ import annotations

import json
from pathlib import Path

import dagster as dg
import polars as pl
from pydantic import Field

from segpipe.lake import Location, asset_path, exists, lake_join, read_bytes, scan_parquet, write_atomic
from segpipe.locks import write_partition_file

#: Folder of the lake holding the small values passed between the ops of a graph-backed asset
#: (bucket numbers, lists of part files), per asset and run:
#: ``{lake}/_steps/{asset}/{run_id}/{step_key}.{output}.json``.
STEP_VALUES = "_steps"


def write_frame(lake_dir: Location, name: str, key: str | None, frame: pl.DataFrame | pl.LazyFrame,
                *, timeout: float = 120.0) -> list:
    """Write an asset (partition) file under its lock, atomically. A LazyFrame is streamed into the
    file (``sink_parquet``), so it never has to fit in memory. Returns the stale temp files removed."""
    path = asset_path(lake_dir, name, key)
    if isinstance(frame, pl.LazyFrame):
        def write(fh):
            frame.sink_parquet(fh, compression="zstd", statistics=True)
    else:
        def write(fh):
            frame.write_parquet(fh, compression="zstd", statistics=True)
    return write_partition_file(lake_dir, name, key, path, write, timeout=timeout)


def step_value_path(lake_dir: Location, identifier: list[str]) -> Location:
    run_id, step_key, *rest = identifier
    node = step_key.split(".", 1)[0]  # the graph-backed asset the op belongs to
    return lake_join(lake_dir, STEP_VALUES, node, run_id, f"{step_key}.{'.'.join(rest)}.json")


class ParquetIOManager(dg.ConfigurableIOManager):
    """Stores Polars frames as Parquet files in the lake (a local folder or an object store)."""

    lake_dir: str
    lock_timeout: float = Field(
        default=120.0, description="Seconds to wait for another run writing the same partition, then fail."
    )

    def _name(self, key: dg.AssetKey) -> str:
        return "__".join(key.path)

    def _write(self, context: dg.OutputContext, frame: pl.DataFrame, name: str, key: str | None) -> None:
        stale = write_frame(self.lake_dir, name, key, frame, timeout=self.lock_timeout)
        if stale:
            context.log.warning(
                f"{name} {key or ''}: removed {len(stale)} temp file(s) left by an interrupted write: "
                + ", ".join(Path(p).name for p in stale)
            )

    def handle_output(self, context: dg.OutputContext, obj) -> None:
        if not context.has_asset_key:  # a value passed between the ops of a graph-backed asset
            write_atomic(step_value_path(self.lake_dir, context.get_identifier()),
                         lambda fh: fh.write(json.dumps(obj).encode()))
            return
        if obj is None:  # the op wrote the asset itself (assets.buckets)
            return
        name = self._name(context.asset_key)
        if context.has_asset_partitions:
            if not isinstance(obj, dict):
                raise TypeError(f"{name}: a partitioned asset must return dict[partition_key, DataFrame]")
            expected = set(context.asset_partition_keys)
            unknown = sorted(set(obj) - expected)
            if unknown:
                raise ValueError(f"{name}: output for partitions not in this run: {unknown}")
            for key in sorted(obj):
                self._write(context, obj[key], name, key)
        else:
            self._write(context, obj, name, None)

    def load_input(self, context: dg.InputContext):
        if not context.has_asset_key:
            return json.loads(read_bytes(step_value_path(self.lake_dir, context.upstream_output.get_identifier())))
        name = self._name(context.asset_key)
        if context.has_asset_partitions:
            out: dict[str, pl.LazyFrame] = {}
            for key in sorted(context.asset_partition_keys):
                path = asset_path(self.lake_dir, name, key)
                if exists(path):
                    out[key] = scan_parquet(path)
            return out
        path = asset_path(self.lake_dir, name)
        if not exists(path):
            raise FileNotFoundError(f"{name}: {path} does not exist; materialize {name} first")
        return scan_parquet(path)
