"""Atomic writes and the IO manager's lake layout."""

import os
import subprocess
import sys
import textwrap

import dagster as dg
import polars as pl
import pytest

from assets.io_manager import ParquetIOManager
from segpipe.lake import asset_path, write_parquet_atomic


def test_layout(tmp_path):
    assert asset_path(tmp_path, "segment_membership", "2025-03-01") == tmp_path / "segment_membership" / "2025-03-01.parquet"
    assert asset_path(tmp_path, "segment_model") == tmp_path / "segment_model.parquet"


def test_failed_write_keeps_the_previous_file(tmp_path, monkeypatch):
    path = tmp_path / "a" / "2025-01-01.parquet"
    write_parquet_atomic(pl.DataFrame({"x": [1, 2]}), path)

    def boom(self, file, **kwargs):
        file.write(b"PAR1 half a file")
        raise OSError("disk full")

    monkeypatch.setattr(pl.DataFrame, "write_parquet", boom)
    with pytest.raises(OSError, match="disk full"):
        write_parquet_atomic(pl.DataFrame({"x": [3]}), path)
    monkeypatch.undo()
    assert pl.read_parquet(path)["x"].to_list() == [1, 2]
    assert os.listdir(path.parent) == ["2025-01-01.parquet"]


def test_killed_writer_leaves_old_version_and_no_data_lookalike(tmp_path):
    """SIGKILL in the middle of a write: the old file stays readable; the leftover temp file is
    hidden (dot-prefixed, not *.parquet) so no glob mistakes it for data; the next write succeeds."""
    path = tmp_path / "a" / "2025-01-01.parquet"
    write_parquet_atomic(pl.DataFrame({"x": [1]}), path)
    script = textwrap.dedent(f"""
        import os, signal, polars as pl
        from segpipe import lake
        def die(self, file, **kw):
            file.write(b"PAR1 partial"); file.flush(); os.kill(os.getpid(), signal.SIGKILL)
        pl.DataFrame.write_parquet = die
        lake.write_parquet_atomic(pl.DataFrame({{"x": [2]}}), {str(path)!r})
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True)
    assert proc.returncode == -9
    assert pl.read_parquet(path)["x"].to_list() == [1]
    assert sorted(p.name for p in path.parent.glob("*.parquet")) == ["2025-01-01.parquet"]
    assert pl.scan_parquet(path.parent / "*.parquet").collect()["x"].to_list() == [1]
    write_parquet_atomic(pl.DataFrame({"x": [3]}), path)
    assert pl.read_parquet(path)["x"].to_list() == [3]


def test_io_manager_round_trip_of_a_partition_range(tmp_path):
    monthly = dg.MonthlyPartitionsDefinition(start_date="2025-01-01")

    @dg.asset(partitions_def=monthly, backfill_policy=dg.BackfillPolicy.single_run())
    def numbers(context: dg.AssetExecutionContext):
        return {k: pl.DataFrame({"month": [k]}) for k in context.partition_keys}

    @dg.asset(partitions_def=monthly, backfill_policy=dg.BackfillPolicy.single_run())
    def copied(context: dg.AssetExecutionContext, numbers):
        return {k: numbers[k].collect() for k in context.partition_keys}

    io = ParquetIOManager(lake_dir=str(tmp_path))
    job = dg.Definitions(assets=[numbers, copied], resources={"io_manager": io}).resolve_implicit_global_asset_job_def()
    res = job.execute_in_process(tags={"dagster/asset_partition_range_start": "2025-01-01",
                                       "dagster/asset_partition_range_end": "2025-03-01"})
    assert res.success
    got = pl.read_parquet(tmp_path / "copied" / "*.parquet")["month"].to_list()
    assert got == ["2025-01-01", "2025-02-01", "2025-03-01"]
