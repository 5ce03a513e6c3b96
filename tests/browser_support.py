"""Helpers shared by the browser tests and ``docs/make_screenshots.py``.

A small generated project materialized into a real on-disk Dagster instance, the Dagster
webserver started on it exactly as a user does (``dagster-webserver -w workspace.yaml``), and
Debian's Chromium driven by Playwright (never a downloaded browser build).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import yaml

from .server_support import free_port, stop_group

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
INSTANCE_YAML = "telemetry:\n  enabled: false\nnux:\n  enabled: false\n"
os.environ.setdefault("SEGPIPE_PSEUDONYMIZATION_KEY", "test-key-not-secret")


def make_sample_project(root: Path, *, customers: int = 300, months: int = 3, start: str = "2024-11",
                        seed: int = 7, scale: dict | None = None) -> Path:
    """A generated sample under ``root/data/sample`` and the repo's ``segpipe.yaml`` pointed at it
    (lake in ``root/lake``, first month ``start``, ``scale`` settings if given); returns the config path."""
    from segpipe.sample import generate_sample

    generate_sample(root / "data" / "sample", customers=customers, months=months, start=start, seed=seed)
    cfg = yaml.safe_load((REPO / "segpipe.yaml").read_text())
    cfg["lake_dir"] = "lake"
    cfg["first_month"] = start
    if scale is not None:
        cfg["scale"] = scale
    path = root / "segpipe.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def make_instance_home(home: Path) -> Path:
    """A DAGSTER_HOME folder with telemetry and the new-user tour off."""
    home.mkdir(parents=True, exist_ok=True)
    (home / "dagster.yaml").write_text(INSTANCE_YAML)
    return home


def materialize(config_path: Path, home: Path, first: str, last: str | None = None):
    """Run ``segpipe_refresh`` for months ``first``..``last`` in one run, recorded in the on-disk
    instance at ``home``; returns the execution result."""
    import dagster as dg

    from assets.build import build_definitions

    job = build_definitions(config_path).resolve_job_def("segpipe_refresh")
    tags = {"dagster/asset_partition_range_start": first, "dagster/asset_partition_range_end": last or first}
    with dg.DagsterInstance.local_temp(str(home)) as instance:
        return job.execute_in_process(instance=instance, tags=tags, raise_on_error=False)


def graphql(url: str, query: str, variables: dict | None = None) -> dict:
    """POST ``query`` to the webserver's GraphQL endpoint; the ``data`` of the answer."""
    req = urllib.request.Request(url + "/graphql", data=json.dumps({"query": query, "variables": variables or {}}).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=60) as resp:
        answer = json.load(resp)
    if answer.get("errors"):
        raise AssertionError(f"GraphQL errors: {answer['errors']}")
    return answer["data"]


_LAUNCH = """
mutation Launch($params: LaunchBackfillParams!) {
  launchPartitionBackfill(backfillParams: $params) {
    __typename
    ... on LaunchBackfillSuccess { backfillId }
    ... on PythonError { message }
    ... on InvalidSubsetError { message }
  }
}"""
_STATUS = """
query Status($id: String!) {
  partitionBackfillOrError(backfillId: $id) {
    __typename
    ... on PartitionBackfill { status numPartitions runs(limit: 500) { runId status } }
    ... on PythonError { message }
  }
}"""
_NODES = "{ assetNodes { assetKey { path } } }"
_DONE = ("COMPLETED", "COMPLETED_SUCCESS", "COMPLETED_FAILED", "FAILED", "CANCELED")


def last_complete_months(n: int) -> list[str]:
    """Partition keys of the ``n`` months ending with the last complete one. An asset backfill also
    targets the later months of the cumulative assets (customer_state needs the month before), so a
    backfilled history must reach the last partition whatever day the suite runs."""
    from segpipe.timeutil import month_key, month_range, month_start, next_month

    this_month = month_start(dt.datetime.now(dt.timezone.utc))
    return month_range(month_key(next_month(this_month, -n)), month_key(next_month(this_month, -1)))


def backfill_all_assets(url: str, months: list[str], *, title: str, timeout: float,
                        poll: float = 5) -> tuple[str, dict]:
    """Launch an asset backfill of every asset over ``months`` through the webserver's GraphQL API
    (as the UI's "Materialize all -> backfill" does) and wait until it ends or ``timeout`` seconds
    pass; returns the backfill id and its last status (``status``, ``runs``)."""
    keys = [n["assetKey"]["path"] for n in graphql(url, _NODES)["assetNodes"]]
    assert len(keys) >= 20, keys
    launched = graphql(url, _LAUNCH, {"params": {
        "partitionNames": months, "assetSelection": [{"path": k} for k in keys], "fromFailure": False,
        "title": title}})["launchPartitionBackfill"]
    assert launched["__typename"] == "LaunchBackfillSuccess", launched
    deadline, status = time.time() + timeout, {}
    while time.time() < deadline:
        status = graphql(url, _STATUS, {"id": launched["backfillId"]})["partitionBackfillOrError"]
        if status["status"] in _DONE:
            break
        time.sleep(poll)
    return launched["backfillId"], status


class Webserver:
    """``dagster-webserver -w workspace.yaml`` (or ``dagster dev``: webserver and daemon, with
    ``daemon=True``) on 127.0.0.1 and a free port, against the instance at ``home`` with
    ``SEGPIPE_CONFIG=config_path``. :meth:`start` returns at once (so a run can execute while the
    code location loads), :meth:`wait` until it serves, :meth:`stop` ends its process group."""

    def __init__(self, config_path: Path, home: Path, *, daemon: bool = False):
        self.config_path, self.home = Path(config_path), Path(home)
        self.command = [str(BIN / "dagster"), "dev"] if daemon else [str(BIN / "dagster-webserver")]
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None

    def start(self) -> Webserver:
        env = {**os.environ, "DAGSTER_HOME": str(self.home), "SEGPIPE_CONFIG": str(self.config_path)}
        with open(self.home / "webserver.log", "wb") as log:
            self.proc = subprocess.Popen(
                ["env", "--default-signal=TERM,INT,HUP", *self.command,
                 "-w", str(REPO / "workspace.yaml"), "-h", "127.0.0.1", "-p", str(self.port)],
                cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )
        return self

    def _log(self) -> str:
        return self.log()[-3000:]

    def log(self) -> str:
        """Everything the server (and daemon) printed so far."""
        return (self.home / "webserver.log").read_text(errors="replace")

    def wait(self, timeout: float = 120) -> str:
        """Block until the code location has loaded; returns the URL."""
        assert self.proc is not None, "start() first"
        query = "{ workspaceOrError { ... on Workspace { locationEntries { locationOrLoadError { __typename } } } } }"
        deadline = time.time() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError("dagster-webserver exited:\n" + self._log())
            try:
                entries = graphql(self.url, query)["workspaceOrError"]["locationEntries"]
            except OSError:
                entries = []
            if entries and all(e["locationOrLoadError"] for e in entries):
                kinds = {e["locationOrLoadError"]["__typename"] for e in entries}
                if kinds != {"RepositoryLocation"}:
                    raise RuntimeError(f"code location failed to load ({kinds}):\n" + self._log())
                return self.url
            if time.time() > deadline:
                raise TimeoutError(f"dagster-webserver did not serve in {timeout:.0f} s:\n" + self._log())
            time.sleep(0.3)

    def stop(self) -> None:

        stop_group(self.proc)


@contextlib.contextmanager
def webserver(config_path: Path, home: Path, *, timeout: float = 120, daemon: bool = False) -> Iterator[str]:
    """A started :class:`Webserver`; yields its URL once it serves, stops it on exit."""
    server = Webserver(config_path, home, daemon=daemon).start()
    try:
        yield server.wait(timeout)
    finally:
        server.stop()


def prepared_ui(config_path: Path, home: Path, first: str, last: str | None = None):
    """Materialize ``first``..``last`` while the webserver loads the code location (they only
    share the instance's SQLite files, created before either starts); returns (result, server)
    with the server serving. The caller stops the server."""
    import dagster as dg

    with dg.DagsterInstance.local_temp(str(home)):
        pass  # create and migrate the instance's storage once, before two processes use it
    server = Webserver(config_path, home).start()
    try:
        result = materialize(config_path, home, first, last)
        server.wait()
    except BaseException:
        server.stop()
        raise
    return result, server


@contextlib.contextmanager
def chromium() -> Iterator:
    """A headless Debian Chromium driven by Playwright (sync API)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


def settle(page, timeout: float = 5_000) -> None:
    """Give the page a moment without network traffic (the UI polls, so do not insist) and let
    animations such as the graph's zoom-to-fit finish."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    with contextlib.suppress(PlaywrightTimeout):
        page.wait_for_load_state("networkidle", timeout=timeout)
    page.wait_for_timeout(500)


def open_lineage(browser, url: str, *, expected_nodes: int | None = None, screenshot: Path | None = None,
                 viewport: dict | None = None, hide_sidebar: bool = False):
    """Open the global asset lineage (``/asset-groups``), expand every group (the UI's ⌥E
    shortcut) and wait until the asset nodes have rendered their names; returns the page (the
    caller closes it). With ``expected_nodes``, waits until that many nodes show."""
    page = browser.new_page(viewport=viewport or {"width": 1800, "height": 1000})
    page.goto(url + "/asset-groups", wait_until="domcontentloaded")
    page.get_by_text("Global asset lineage").first.wait_for(timeout=30_000)
    names = "[class*=AssetNode_assetName]"
    page.locator("[class*=CollapsedGroupNode_collapsedGroupNodeBox], " + names).first.wait_for(timeout=30_000)
    if page.locator(names).count() == 0:  # groups start collapsed
        page.locator("body").press("Alt+KeyE")
    page.locator(names).first.wait_for(timeout=30_000)
    if hide_sidebar:  # the asset tree beside the graph: more room for the graph
        page.get_by_placeholder("Jump to…").locator("xpath=following::button[1]").click()
    if expected_nodes is not None:
        page.wait_for_function(f"document.querySelectorAll('{names}').length >= {expected_nodes}", timeout=30_000)
    settle(page)
    if screenshot is not None:
        screenshot.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(screenshot))
    return page


def open_report(browser, report: Path, *, screenshot: Path | None = None) -> tuple[object, list[str]]:
    """Open a report page from ``file://``, wait for every chart; returns (page, console errors)."""
    page = browser.new_page(viewport={"width": 1200, "height": 900})
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(report.resolve().as_uri())
    page.wait_for_selector("body[data-charts-done]", timeout=30_000)
    if screenshot is not None:
        screenshot.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(screenshot), full_page=True)
    return page, errors
