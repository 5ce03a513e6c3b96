"""Parquet IO manager for Polars frames (``dagster-polars`` cannot read under Polars 2).

Partitioned assets hand over ``dict[partition_key, DataFrame]`` (one entry per partition of the
run, so a single run can materialize a range) and receive ``dict[partition_key, LazyFrame]`` for
the upstream partitions that exist. Files: ``{lake_dir}/{asset}/{partition_key}.parquet``, or
``{lake_dir}/{asset}.parquet`` when unpartitioned; every write is atomic.
"""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import polars as pl

from segpipe.lake import asset_path, write_parquet_atomic


class ParquetIOManager(dg.ConfigurableIOManager):
    """Stores Polars frames as Parquet files in the local lake."""

    lake_dir: str

    def _name(self, key: dg.AssetKey) -> str:
        return "__".join(key.path)

    def handle_output(self, context: dg.OutputContext, obj) -> None:
        if obj is None:
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
                write_parquet_atomic(obj[key], asset_path(self.lake_dir, name, key))
        else:
            write_parquet_atomic(obj, asset_path(self.lake_dir, name))

    def load_input(self, context: dg.InputContext):
        name = self._name(context.asset_key)
        if context.has_asset_partitions:
            out: dict[str, pl.LazyFrame] = {}
            for key in sorted(context.asset_partition_keys):
                path = asset_path(self.lake_dir, name, key)
                if path.is_file():
                    out[key] = pl.scan_parquet(path)
            return out
        path = asset_path(self.lake_dir, name)
        if not Path(path).is_file():
            raise FileNotFoundError(f"{name}: {path} does not exist; materialize {name} first")
        return pl.scan_parquet(path)
