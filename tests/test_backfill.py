"""A 24-month backfill through Dagster's own backfill machinery: `dagster dev` (webserver + daemon) on
the code location, an asset backfill of every asset and month launched over GraphQL as the UI's
"Materialize all -> backfill" does, and the daemon running it to completion in dependency order."""

import datetime as dt
import time

import polars as pl
import pytest

from segpipe.lake import asset_path
from segpipe.timeutil import month_key, month_range, month_start, next_month
from tests.browser_support import Webserver, graphql, make_instance_home, make_sample_project

# the 24 months ending with the last complete one: an asset backfill also targets the later months
# of the cumulative assets (customer_state needs the month before), so the history must reach the
# last partition whatever day the suite runs
_THIS_MONTH = month_start(dt.datetime.now(dt.timezone.utc))
MONTHS = month_range(month_key(next_month(_THIS_MONTH, -24)), month_key(next_month(_THIS_MONTH, -1)))

LAUNCH = """
mutation Launch($params: LaunchBackfillParams!) {
  launchPartitionBackfill(backfillParams: $params) {
    __typename
    ... on LaunchBackfillSuccess { backfillId }
    ... on PythonError { message }
    ... on InvalidSubsetError { message }
  }
}"""
STATUS = """
query Status($id: String!) {
  partitionBackfillOrError(backfillId: $id) {
    __typename
    ... on PartitionBackfill { status numPartitions runs(limit: 500) { runId status } }
    ... on PythonError { message }
  }
}"""
NODES = "{ assetNodes { assetKey { path } } }"
DONE = ("COMPLETED", "COMPLETED_SUCCESS", "COMPLETED_FAILED", "FAILED", "CANCELED")


@pytest.mark.timeout(1500)
def test_24_month_asset_backfill_with_the_daemon(tmp_path):
    config = make_sample_project(tmp_path, customers=300, months=len(MONTHS), start=MONTHS[0][:7], seed=11)
    server = Webserver(config, make_instance_home(tmp_path / "dagster_home"), daemon=True).start()
    try:
        url = server.wait(180)
        keys = [n["assetKey"]["path"] for n in graphql(url, NODES)["assetNodes"]]
        assert len(keys) >= 20
        launched = graphql(url, LAUNCH, {"params": {
            "partitionNames": MONTHS, "assetSelection": [{"path": k} for k in keys], "fromFailure": False,
            "title": "24-month history"}})["launchPartitionBackfill"]
        assert launched["__typename"] == "LaunchBackfillSuccess", launched
        deadline, bf = time.time() + 1400, {}
        while time.time() < deadline:
            bf = graphql(url, STATUS, {"id": launched["backfillId"]})["partitionBackfillOrError"]
            if bf["status"] in DONE:
                break
            time.sleep(5)
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
    first = pl.read_parquet(asset_path(lake, "customer_features", MONTHS[0])).height
    last = pl.read_parquet(asset_path(lake, "customer_features", MONTHS[-1])).height
    assert last > first
    mig = pl.read_parquet(asset_path(lake, "segment_migration", MONTHS[-1]))
    mem = pl.read_parquet(asset_path(lake, "segment_membership", MONTHS[-1]))
    assert mig.filter((pl.col("scheme") == "rfm") & (pl.col("to_segment") != "(gone)"))["customers"].sum() == mem.height
