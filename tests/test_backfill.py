"""A 24-month backfill through Dagster's own backfill machinery: `dagster dev` (webserver + daemon) on
the code location, an asset backfill of every asset and month launched over GraphQL as the UI's
"Materialize all → backfill" does, and the daemon running it to completion in dependency order."""

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import polars as pl
import pytest
import yaml

from segpipe.lake import asset_path
from segpipe.sample import generate_sample
from segpipe.timeutil import month_range

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
MONTHS = month_range("2024-11", "2026-10")

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


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _graphql(url: str, query: str, variables: dict | None = None) -> dict:
    req = urllib.request.Request(url + "/graphql", data=json.dumps({"query": query, "variables": variables or {}}).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=60) as resp:
        body = json.load(resp)
    assert "errors" not in body, body["errors"]
    return body["data"]


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    root = tmp_path_factory.mktemp("backfill_project")
    generate_sample(root / "data" / "sample", customers=300, months=len(MONTHS), start="2024-11", seed=11,
                    bad_row_share=0.01)
    cfg = yaml.safe_load((REPO / "segpipe.yaml").read_text())
    cfg["lake_dir"] = "lake"
    (root / "segpipe.yaml").write_text(yaml.safe_dump(cfg))
    home = root / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\nnux:\n  enabled: false\n")
    return root


@pytest.fixture(scope="module")
def dagster_dev(project):
    port = _free_port()
    env = {**os.environ, "DAGSTER_HOME": str(project / "dagster_home"), "SEGPIPE_CONFIG": str(project / "segpipe.yaml")}
    log = open(project / "dagster_dev.log", "wb")
    proc = subprocess.Popen(
        [str(BIN / "dagster"), "dev", "-w", str(REPO / "workspace.yaml"), "-h", "127.0.0.1", "-p", str(port)],
        cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 180
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(url + "/server_info", timeout=2):
                break
        except OSError:
            if proc.poll() is not None:
                pytest.fail((project / "dagster_dev.log").read_text()[-3000:])
            time.sleep(0.5)
    else:
        pytest.fail("dagster dev did not start in 180 s")
    yield url
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
    log.close()


@pytest.mark.timeout(1500)
def test_24_month_asset_backfill_with_the_daemon(project, dagster_dev):
    url = dagster_dev
    keys = [n["assetKey"]["path"] for n in _graphql(url, NODES)["assetNodes"]]
    assert len(keys) >= 20
    launched = _graphql(url, LAUNCH, {"params": {
        "partitionNames": MONTHS, "assetSelection": [{"path": k} for k in keys], "fromFailure": False,
        "title": "24-month history"}})["launchPartitionBackfill"]
    assert launched["__typename"] == "LaunchBackfillSuccess", launched
    backfill_id = launched["backfillId"]
    deadline, status = time.time() + 1400, None
    while time.time() < deadline:
        bf = _graphql(url, STATUS, {"id": backfill_id})["partitionBackfillOrError"]
        status = bf["status"]
        if status in ("COMPLETED", "COMPLETED_SUCCESS", "COMPLETED_FAILED", "FAILED", "CANCELED"):
            break
        time.sleep(5)
    log = (project / "dagster_dev.log").read_text(errors="replace")
    assert status in ("COMPLETED", "COMPLETED_SUCCESS"), f"backfill {status}: {bf}\n{log[-4000:]}"
    runs = bf["runs"]
    assert runs and all(r["status"] == "SUCCESS" for r in runs), runs
    # every month of every asset is in the lake; the cumulative state carried through all 24 months
    lake = project / "lake"
    for month in MONTHS:
        for asset in ("customer_state", "customer_features", "segment_membership", "feature_drift", "segment_migration"):
            assert asset_path(lake, asset, month).is_file(), f"{asset} {month} missing"
        assert asset_path(lake, "segment_report", month).with_suffix(".html").is_file()
    first = pl.read_parquet(asset_path(lake, "customer_state", MONTHS[0])).height
    last = pl.read_parquet(asset_path(lake, "customer_state", MONTHS[-1])).height
    assert last > first
    mig = pl.read_parquet(asset_path(lake, "segment_migration", MONTHS[-1]))
    mem = pl.read_parquet(asset_path(lake, "segment_membership", MONTHS[-1]))
    assert mig.filter((pl.col("scheme") == "rfm") & (pl.col("to_segment") != "(gone)"))["customers"].sum() == mem.height
