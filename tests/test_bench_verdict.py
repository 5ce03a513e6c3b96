"""The verdict of bench/features.py on the refresh target (month last / month 1 <= 1.5), from one
process and from the median of several: the arithmetic that decides what the benchmark prints."""

from __future__ import annotations

import statistics

import pytest
from tests.conftest import load_bench_script


@pytest.fixture(scope="module")
def bench():
    return load_bench_script("features")


def test_the_target_holds_only_when_wall_and_cpu_are_both_within_it(bench):
    assert bench.verdict(1.5, 1.49) == "holds"  # the bound itself is within the target
    assert bench.verdict(1.51, 1.6) == "FAILS"
    assert bench.verdict(1.45, 1.52).startswith("UNCLEAR")
    assert bench.verdict(1.52, 1.45).startswith("UNCLEAR")


def test_ratios_per_process_pair_each_processes_own_months(bench):
    procs = [
        {"2024-11-01": {"total": 0.30, "min_cpu": 0.50}, "2026-10-01": {"total": 0.45, "min_cpu": 0.80}},
        {"2024-11-01": {"total": 0.40, "min_cpu": 0.60}, "2026-10-01": {"total": 0.52, "min_cpu": 0.84}},
        {"2024-11-01": {"total": 0.32, "min_cpu": 0.52}, "2026-10-01": {"total": 0.52, "min_cpu": 0.78}},
    ]
    walls, cpus = bench.process_ratios(procs, "2024-11-01", "2026-10-01")
    assert walls == pytest.approx([1.5, 1.3, 1.625])
    assert cpus == pytest.approx([1.6, 1.4, 1.5])
    # the median of the processes, not the best of all months across processes (0.52 / 0.30 = 1.73)
    assert statistics.median(walls) == pytest.approx(1.5)
    assert bench.verdict(statistics.median(walls), statistics.median(cpus)) == "holds"


def test_a_kept_lake_is_found_by_its_first_and_last_months_rollups(bench, tmp_path):
    with pytest.raises(FileNotFoundError, match=r"no kept lake with 2024-11 .* --sizes 500 --keep first"):
        bench.kept_lake(tmp_path, 500, 3)
    lake = bench.size_dir(tmp_path, 500, 3) / "lake"
    for k in ("2024-11-01", "2025-01-01"):
        path = bench.asset_path(lake, "customer_activity_daily", k)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"")
    assert bench.kept_lake(tmp_path, 500, 3) == (lake, "2024-11-01", "2025-01-01")
    bench.asset_path(lake, "customer_activity_daily", "2025-01-01").unlink()
    with pytest.raises(FileNotFoundError, match="no kept lake with 2025-01"):
        bench.kept_lake(tmp_path, 500, 3)
