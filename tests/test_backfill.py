"""A 24-month backfill through Dagster's own backfill machinery: `dagster dev` (webserver + daemon) on
the code location, an asset backfill of every asset and month launched over GraphQL as the UI's
"Materialize all -> backfill" does, and the daemon running it to completion in dependency order."""

import polars as pl
import pytest

from segpipe.identity import build_identity_map
from segpipe.lake import asset_path
from tests.browser_support import Webserver, backfill_all_assets, last_complete_months, make_instance_home, make_sample_project

MONTHS = last_complete_months(24)


@pytest.mark.timeout(1500)
def test_24_month_asset_backfill_with_the_daemon(tmp_path):
    config = make_sample_project(tmp_path, customers=300, months=len(MONTHS), start=MONTHS[0][:7], seed=11)
    server = Webserver(config, make_instance_home(tmp_path / "dagster_home"), daemon=True).start()
    try:
        url = server.wait(180)
        _, bf = backfill_all_assets(url, MONTHS, title="24-month history", timeout=1400)
        assert bf.get("status") in ("COMPLETED", "COMPLETED_SUCCESS"), f"backfill {bf}\n{server.log()[-4000:]}"
    finally:
        server.stop()
    runs = bf["runs"]
    assert runs and all(r["status"] == "SUCCESS" for r in runs), runs
    # every month of every asset is in the lake; the cumulative state carried through all 24 months
    lake = tmp_path / "lake"
    for month in MONTHS:
        for asset in ("customer_state", "customer_features", "segment_membership", "segment_outcomes", "feature_drift",
                      "segment_migration"):
            assert asset_path(lake, asset, month).is_file(), f"{asset} {month} missing"
        assert asset_path(lake, "segment_report", month).with_suffix(".html").is_file()
    # each month's identity map, updated from the month before, is the map of the month's whole graph
    for month in MONTHS:
        imap = pl.read_parquet(asset_path(lake, "identity_map", month))
        assert imap.equals(build_identity_map(pl.scan_parquet(asset_path(lake, "identity_graph", month)), distinct=True))
    first = pl.read_parquet(asset_path(lake, "customer_features", MONTHS[0])).height
    last = pl.read_parquet(asset_path(lake, "customer_features", MONTHS[-1])).height
    assert last > first
    mig = pl.read_parquet(asset_path(lake, "segment_migration", MONTHS[-1]))
    mem = pl.read_parquet(asset_path(lake, "segment_membership", MONTHS[-1]))
    assert mig.filter((pl.col("scheme") == "rfm") & (pl.col("to_segment") != "(gone)"))["customers"].sum() == mem.height
