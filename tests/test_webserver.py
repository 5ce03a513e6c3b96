"""The Dagster webserver, started on the code location exactly as users do, serves the graph."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.server_support import free_port


REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent

QUERY = "{ assetNodes { assetKey { path } groupName description dependencyKeys { path } } }"


def _post(url: str, query: str) -> dict:
    req = urllib.request.Request(url, data=json.dumps({"query": query}).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as resp:
        return json.load(resp)


@pytest.fixture
def webserver(tmp_path):
    from tests.browser_support import make_instance_home
    from tests.browser_support import webserver as serve

    with serve(REPO / "segpipe.yaml", make_instance_home(tmp_path / "home")) as url:
        yield url


def test_webserver_shows_the_lineage_from_ingestion_to_segments(webserver):
    data = _post(webserver + "/graphql", QUERY)["data"]["assetNodes"]
    nodes = {"/".join(n["assetKey"]["path"]): n for n in data}
    deps = {k: sorted("/".join(d["path"]) for d in n["dependencyKeys"]) for k, n in nodes.items()}
    assert {n["groupName"] for n in data} == {"ingestion", "identity", "events", "features", "segments", "drift",
                                              "exports"}
    assert all(n["description"] for n in data)
    assert deps["identity_links"] == ["email_ingested", "orders_ingested", "product_ingested", "web_ingested"]
    assert "identity_map" in deps["behavioral_events"]
    assert deps["customer_activity_monthly"] == ["behavioral_events", "customer_activity_daily"]
    assert "customer_activity_monthly" in deps["customer_features"]
    assert deps["segment_membership"] == ["customer_features", "segment_model"]
    assert deps["feature_drift"] == ["customer_features", "segment_model"]
    assert deps["segment_migration"] == ["segment_membership"]
    assert "feature_drift" in deps["segment_report"]


def test_webserver_binds_loopback_only(webserver):
    port = int(webserver.rsplit(":", 1)[1])
    out = subprocess.run(["ss", "-ltnH", f"sport = :{port}"], capture_output=True, text=True)
    if out.returncode != 0:
        pytest.skip("ss not available")
    listeners = [line.split()[3] for line in out.stdout.splitlines() if line.strip()]
    assert listeners and all(addr.startswith("127.0.0.1:") for addr in listeners)


def test_segpipe_ui_serves_and_stops_on_ctrl_c(orders_project, tmp_path):
    """`segpipe ui` starts webserver + daemon on 127.0.0.1 with the project's instance and prints
    the URL; SIGINT (Ctrl-C) stops everything."""
    port = free_port()
    env = {**os.environ, "DAGSTER_HOME": str(tmp_path / "home")}
    proc = subprocess.Popen(
        [str(BIN / "segpipe"), "--config", str(orders_project), "ui", "--port", str(port)],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
    )
    try:
        first = proc.stdout.readline()
        assert first.startswith(f"Dagster UI: http://127.0.0.1:{port}")
        deadline = time.time() + 120
        while time.time() < deadline:
            try:
                nodes = _post(f"http://127.0.0.1:{port}/graphql", QUERY)["data"]["assetNodes"]
                break
            except OSError:
                time.sleep(0.5)
        else:
            pytest.fail("segpipe ui did not serve in 120 s")
        assert "orders_ingested" in {"/".join(n["assetKey"]["path"]) for n in nodes}
        assert (tmp_path / "home" / "dagster.yaml").is_file()
        os.killpg(proc.pid, signal.SIGINT)
        assert proc.wait(timeout=60) is not None
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    deadline = time.time() + 30  # webserver and daemon are gone, the port is free again
    while time.time() < deadline:
        try:
            os.killpg(proc.pid, 0)
            time.sleep(0.5)
        except ProcessLookupError:
            break
    else:
        pytest.fail("processes of segpipe ui still running 30 s after Ctrl-C")
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", port))
