"""The operators' view in a real browser: a small project materialized into an on-disk Dagster
instance, the webserver started on it as users do, and Debian's Chromium (Playwright) looking at
the global lineage, the checks tab and the HTML segment report."""

import re
from pathlib import Path

import pytest

pytest.importorskip("playwright.sync_api")

from .browser_support import (  # noqa: E402
    CHROMIUM,
    REPO,
    chromium,
    graphql,
    make_instance_home,
    make_sample_project,
    open_lineage,
    open_report,
    prepared_ui,
)

ARTIFACTS = REPO / "test-artifacts"
MONTHS = ("2024-11-01", "2024-12-01")  # two months: the second report has a migration section
SOURCES = ("orders", "product", "email", "web")

if not Path(CHROMIUM).is_file():
    pytest.skip(f"{CHROMIUM} not installed (apt-get install chromium)", allow_module_level=True)

ASSETS_QUERY = """{ assetNodes { assetKey { path } groupName dependencyKeys { path }
  assetChecksOrError { ... on AssetChecks { checks { name executionForLatestMaterialization { status } } } } } }"""


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """The sample (300 customers, 3 months) with two months materialized in one run into an
    on-disk instance, and the webserver serving that instance."""
    root = tmp_path_factory.mktemp("ui_project")
    config = make_sample_project(root, customers=300, months=3)
    home = make_instance_home(root / "dagster_home")
    result, server = prepared_ui(config, home, *MONTHS)
    try:
        assert result.success
        yield config, server.url
    finally:
        server.stop()


@pytest.fixture(scope="module")
def project(served):
    return served[0]


@pytest.fixture(scope="module")
def ui(served):
    return served[1]


@pytest.fixture(scope="module")
def browser():
    with chromium() as b:
        yield b


def _nodes(url: str) -> dict[str, dict]:
    return {"/".join(n["assetKey"]["path"]): n for n in graphql(url, ASSETS_QUERY)["assetNodes"]}


def _shown_as(label: str, keys: set[str]) -> str | None:
    """The asset key a node label stands for: the key itself, or Dagster's middle-truncated form
    ("customer_ac…_daily") when exactly one key matches it."""
    if label in keys:
        return label
    if "…" in label:
        head, tail = label.split("…", 1)
        hits = [k for k in keys if k.startswith(head) and k.endswith(tail) and len(k) > len(head) + len(tail)]
        return hits[0] if len(hits) == 1 else None
    return None


def test_lineage_page_shows_every_asset_and_the_checks_tab_shows_the_check_passed(project, ui, browser):
    from assets.build import build_definitions

    graph = build_definitions(project).resolve_asset_graph()
    keys = {k.to_user_string() for k in graph.get_all_asset_keys()}
    assert set(_nodes(ui)) == keys  # the webserver serves the graph of this config

    page = open_lineage(browser, ui, expected_nodes=len(keys), screenshot=ARTIFACTS / "lineage.png")
    try:
        labels = page.eval_on_selector_all("[class*=AssetNode_assetName]", "els => els.map(e => e.textContent)")
        shown = {_shown_as(label, keys) for label in labels}
        assert shown == keys, f"not on the lineage page: {sorted(keys - shown)}"
        for group in {graph.get(k).group_name for k in graph.get_all_asset_keys()}:
            assert page.get_by_text(group, exact=True).count() > 0, group

        page.goto(ui + "/assets/orders_ingested?view=checks", wait_until="domcontentloaded")
        page.get_by_text("rows_accounted").first.wait_for(timeout=30_000)
        page.get_by_text("Passed", exact=True).first.wait_for(timeout=30_000)
        assert page.get_by_text("This is a blocking asset check.").count() == 1
        page.screenshot(path=str(ARTIFACTS / "checks.png"))
    finally:
        page.close()
    # and the same through the API, for every source
    for src in SOURCES:
        checks = _nodes(ui)[f"{src}_ingested"]["assetChecksOrError"]["checks"]
        assert [(c["name"], c["executionForLatestMaterialization"]["status"]) for c in checks] == \
            [("rows_accounted", "SUCCEEDED")], src


def test_graphql_lineage_from_every_source_to_the_report(ui):
    nodes = _nodes(ui)
    parents = {k: {"/".join(d["path"]) for d in n["dependencyKeys"]} for k, n in nodes.items()}
    edges = {(p, k) for k, ps in parents.items() for p in ps}
    chain = ["identity_links", "identity_graph", "identity_map", "behavioral_events", "customer_activity_monthly",
             "customer_features", "segment_membership", "segment_report"]
    for src in SOURCES:
        assert (f"{src}_ingested", "identity_links") in edges, src
        assert (f"{src}_ingested", "behavioral_events") in edges, src
    missing = [(a, b) for a, b in zip(chain, chain[1:]) if (a, b) not in edges]
    assert not missing, f"lineage edges missing: {missing}"
    assert ("segment_profiles", "segment_report") in edges
    assert nodes["segment_report"]["groupName"] == "exports"


def test_report_renders_every_chart_without_console_errors(project, browser):
    report = project.parent / "lake" / "segment_report" / f"{MONTHS[-1]}.html"
    page, errors = open_report(browser, report, screenshot=ARTIFACTS / "report.png")
    try:
        expected = int(page.get_attribute("body", "data-charts"))
        assert expected >= 2  # sizes over time + migration
        charts = page.eval_on_selector_all(
            ".vega-chart",
            "els => els.map(e => [e.id, e.getAttribute('data-rendered'), e.querySelectorAll('svg, canvas').length,"
            " e.querySelectorAll('svg .mark-rect path, svg .mark-rect rect, svg path').length])",
        )
        assert len(charts) == expected
        for chart_id, rendered, drawn, marks in charts:
            assert rendered == "true" and drawn >= 1 and marks > 0, chart_id
        assert errors == []
        assert re.search(r"Migration from the previous month", page.inner_text("body"))
        # last month's segments are followed into this month: the outcome lift section is there
        assert page.locator("#outcomes .vega-chart").count() >= 1
        assert page.locator("#profiles table tbody tr").count() >= 2
    finally:
        page.close()
