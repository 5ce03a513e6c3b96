"""The Dagster graph for real: definitions snapshot, in-process materialization, checks, re-runs."""

import json
from pathlib import Path

import dagster as dg
import polars as pl

from assets.build import build_definitions
from segpipe import ingest as ingest_mod
from segpipe.lake import asset_path

from .conftest import ORDERS_HEADER, orders_source, write_project, write_text

REPO = Path(__file__).resolve().parent.parent


def _run(config_path: Path, first: str, last: str | None = None, instance=None):
    defs = build_definitions(config_path)
    job = defs.resolve_job_def("segpipe_refresh")
    tags = {"dagster/asset_partition_range_start": first, "dagster/asset_partition_range_end": last or first}
    with (instance or dg.DagsterInstance.ephemeral()) as inst:
        return job.execute_in_process(instance=inst, tags=tags, raise_on_error=False)


def test_graph_snapshot_of_the_sample_config():
    """Every asset key, check, job and schedule: the graph cannot change unnoticed."""
    defs = build_definitions(REPO / "segpipe.yaml")
    graph = defs.resolve_asset_graph()
    keys = sorted(k.to_user_string() for k in graph.get_all_asset_keys())
    assert keys == sorted([
        *(f"{s}_{kind}" for s in ("orders", "product", "email", "web") for kind in ("ingested", "quarantine")),
        "identity_links", "identity_graph", "identity_map", "behavioral_events",
        "customer_activity_daily", "customer_activity_monthly", "customer_state", "customer_features",
        "segment_model", "segment_membership", "segment_profiles", "segment_outcomes",
        "segment_exports", "segment_report",
        "feature_drift", "segment_shift", "segment_migration", "centroid_shift",
    ])
    checks = sorted(f"{c.asset_key.to_user_string()}:{c.name}" for c in graph.asset_check_keys)
    assert checks == sorted([
        *(f"{s}_ingested:rows_accounted" for s in ("email", "orders", "product", "web")),
        "feature_drift:feature_drift_within_thresholds", "segment_shift:segment_shares_stable",
        "centroid_shift:centroids_within_thresholds",
    ])
    blocking = {f"{c.asset_key.to_user_string()}:{c.name}": graph.get_check_spec(c).blocking
                for c in graph.asset_check_keys}
    assert sorted(k for k, b in blocking.items() if b) == sorted(f"{s}_ingested:rows_accounted"
                                                           for s in ("email", "orders", "product", "web"))
    assert [j.name for j in defs.jobs] == ["segpipe_refresh", "segpipe_refit"]
    assert [s.name for s in defs.schedules] == ["monthly_refresh", "quarterly_refit"]
    assert [s.name for s in defs.sensors] == ["drift_refit", "landing_files"]
    groups = {k.to_user_string(): graph.get(k).group_name for k in graph.get_all_asset_keys()}
    assert groups["orders_ingested"] == "ingestion" and groups["identity_map"] == "identity"
    assert groups["behavioral_events"] == "events" and groups["customer_features"] == "features"
    assert groups["segment_membership"] == "segments"
    assert groups["segment_report"] == groups["segment_exports"] == "exports"
    assert groups["segment_model"] == groups["segment_outcomes"] == "segments"
    assert {groups[a] for a in ("feature_drift", "segment_shift", "segment_migration", "centroid_shift")} == {"drift"}
    for k in graph.get_all_asset_keys():
        node = graph.get(k)
        assert node.description, f"{k} has no description"
        assert node.backfill_policy == dg.BackfillPolicy.single_run(), f"{k} cannot run a partition range"
    # lineage: ingestion -> stitching -> events -> features -> segments
    parents = {k.to_user_string(): sorted(p.to_user_string() for p in graph.get(k).parent_keys)
               for k in graph.get_all_asset_keys()}
    assert parents["identity_links"] == [f"{s}_ingested" for s in ("email", "orders", "product", "web")]
    assert parents["identity_graph"] == ["identity_graph", "identity_links"]  # the previous month's graph + links
    assert parents["identity_map"] == ["identity_graph", "identity_map"]  # the month's graph + the previous map
    assert parents["behavioral_events"] == sorted(["identity_map", *(f"{s}_ingested" for s in ("orders", "product", "email", "web"))])
    assert parents["customer_state"] == ["customer_activity_daily", "customer_activity_monthly", "customer_state",
                                         "identity_map"]
    assert parents["customer_activity_monthly"] == ["behavioral_events", "customer_activity_daily"]
    assert parents["customer_features"] == [
        "customer_activity_daily", "customer_activity_monthly", "customer_state", "identity_map"]
    assert parents["segment_model"] == ["customer_features", "segment_model"]
    assert parents["segment_membership"] == ["customer_features", "segment_model"]
    assert parents["segment_outcomes"] == ["customer_activity_monthly", "customer_features", "segment_membership"]
    assert parents["segment_exports"] == ["segment_membership"]
    assert parents["segment_report"] == ["feature_drift", "segment_membership", "segment_outcomes", "segment_profiles"]
    assert parents["feature_drift"] == ["customer_features", "segment_model"]
    assert parents["segment_shift"] == ["segment_membership", "segment_model"]
    assert parents["segment_migration"] == ["segment_membership"]
    assert parents["centroid_shift"] == ["customer_features", "segment_model"]


def test_one_month_materializes_end_to_end(orders_project):
    result = _run(orders_project, "2025-01-01")
    assert result.success
    lake = orders_project.parent / "lake"
    assert pl.read_parquet(asset_path(lake, "orders_ingested", "2025-01-01")).height == 2
    assert pl.read_parquet(asset_path(lake, "orders_quarantine", "2025-01-01")).height == 5
    members = pl.read_parquet(asset_path(lake, "segment_membership", "2025-01-01"))
    assert members["customer_id"].to_list() == ["C1", "C2"]
    checks = {c.check_name: c for c in result.get_asset_check_evaluations()}
    assert sorted(checks) == ["centroids_within_thresholds", "feature_drift_within_thresholds", "rows_accounted",
                              "segment_shares_stable"]
    assert checks["rows_accounted"].passed and checks["rows_accounted"].metadata["rows_read"].value == 8
    # the first month has nothing to drift from
    assert checks["feature_drift_within_thresholds"].passed and checks["segment_shares_stable"].passed
    mats = {(m.asset_key.to_user_string(), m.partition): m.metadata
            for m in result.asset_materializations_for_node("ingest_orders")}
    md = mats[("orders_ingested", "2025-01-01")]
    assert (md["rows_read"].value, md["rows_kept"].value, md["rows_quarantined"].value, md["duplicates_removed"].value) == (8, 2, 5, 1)
    assert md["dagster/row_count"].value == 2


def test_a_range_runs_in_one_run_and_rerun_is_identical(orders_project):
    assert _run(orders_project, "2025-01-01", "2025-03-01").success
    lake = orders_project.parent / "lake"
    files = sorted(p for p in lake.rglob("*.parquet"))
    for key in build_definitions(orders_project).resolve_asset_graph().get_all_asset_keys():
        # every asset has one file per month (March is an empty partition); exports: one per scheme
        folder = lake / key.to_user_string() if key.to_user_string() != "segment_exports" else lake / "exports" / "rfm"
        assert len([p for p in folder.iterdir() if not p.name.startswith(".")]) == 3, key
    before = {p: p.read_bytes() for p in files}
    assert _run(orders_project, "2025-02-01").success
    assert {p: p.read_bytes() for p in sorted(lake.rglob("*.parquet"))} == before
    # no temp file left behind
    assert not [p for p in lake.rglob("*") if p.name.startswith(".tmp-")]
    feats = pl.read_parquet(asset_path(lake, "customer_features", "2025-03-01"))
    # March has no events, but customers seen before stay in the snapshot
    assert feats["customer_id"].to_list() == ["C1", "C2", "C3", "C7"]
    assert feats.filter(pl.col("customer_id") == "C1")["orders_lifetime"].item() == 2


def test_blocking_accounting_check_stops_downstream(orders_project, monkeypatch):
    real = ingest_mod.ingest_source

    def leaky(*args, **kwargs):
        out = real(*args, **kwargs)
        return {k: ingest_mod.MonthIngest(month=v.month, events=v.events.head(1), quarantine=v.quarantine,
                                          rows_read=v.rows_read, duplicates=v.duplicates, rows_kept=1, files=v.files)
                for k, v in out.items()}

    monkeypatch.setattr("assets.ingestion.ingest_source", leaky)
    result = _run(orders_project, "2025-01-01")
    assert not result.success
    evals = result.get_asset_check_evaluations()
    assert [(c.check_name, c.passed) for c in evals] == [("rows_accounted", False)]
    assert json.loads(json.dumps(evals[0].metadata["unbalanced_months"].value))["2025-01-01"]["rows_kept"] == 1
    lake = orders_project.parent / "lake"
    assert not asset_path(lake, "behavioral_events", "2025-01-01").exists()


def test_missing_source_file_fails_the_run_naming_it(tmp_path):
    cfg = write_project(tmp_path, {"orders": orders_source("src/none*.csv")})
    result = _run(cfg, "2025-01-01")
    assert not result.success
    failure = next(e for e in result.all_events if e.is_step_failure)
    assert "no file matches" in str(failure.event_specific_data.error) and "none*.csv" in str(failure.event_specific_data.error)


def test_several_sources_stitch_into_one_customer(tmp_path):
    write_text(tmp_path / "src" / "orders.csv", ORDERS_HEADER + "1,C1,2025-01-05 10:00:00,10,Ann@Example.com,toys\n")
    write_text(tmp_path / "src" / "email.csv", "m,to,at,ev\nm1,ann@example.com ,2025-01-02 08:00:00,open\n"
               "m2,zed@example.com,2025-01-03 08:00:00,click\n")
    sources = {
        "orders": orders_source("src/orders.csv"),
        "email": {"path": "src/email.csv", "format": "csv",
                  "columns": {"event_id": "m", "email": "to", "event_time": "at", "event_type": "ev"}},
    }
    cfg = write_project(tmp_path, sources)
    assert _run(cfg, "2025-01-01").success
    ev = pl.read_parquet(asset_path(tmp_path / "lake", "behavioral_events", "2025-01-01"))
    got = dict(zip(ev["event_id"], ev["customer_id"]))
    assert got["m1"] == "C1" and got["1"] == "C1"  # email normalised (case, spaces) before hashing
    assert got["m2"].startswith("sp-")
    assert dict(zip(ev["event_id"], ev["event_type"]))["m1"] == "email_open"
    # no raw email anywhere in the lake
    for p in (tmp_path / "lake").rglob("*.parquet"):
        text = pl.read_parquet(p).write_ndjson()
        assert "@example.com" not in text.lower(), p


def test_month_by_month_runs_complete_last_months_outcomes(orders_project):
    """As the monthly schedule runs them (one month per run), February's run follows January's
    segments into February: segment_outcomes of partition 2025-02 is complete without re-running
    January, and the same as a single run over both months."""
    lake = orders_project.parent / "lake"
    assert _run(orders_project, "2025-01-01").success
    assert pl.read_parquet(asset_path(lake, "segment_outcomes", "2025-01-01")).height == 0
    assert _run(orders_project, "2025-02-01").success
    stepwise = pl.read_parquet(asset_path(lake, "segment_outcomes", "2025-02-01"))
    assert stepwise.height > 0 and stepwise["snapshot_month"].unique().to_list()[0].isoformat() == "2025-01-01"
    rfm = stepwise.filter(pl.col("scheme") == "rfm")
    assert rfm["customers"].sum() == pl.read_parquet(asset_path(lake, "segment_membership", "2025-01-01")).height
    assert _run(orders_project, "2025-01-01", "2025-02-01").success
    assert pl.read_parquet(asset_path(lake, "segment_outcomes", "2025-02-01")).equals(stepwise)


def test_identity_graph_chains_the_months_and_the_map_is_that_of_all_links(orders_project):
    """February's identity graph is January's plus February's links (not a rescan of all links), and
    the map built from it is the map of all links to date; without January's graph, February's
    starts from all links to date and comes out the same."""
    from segpipe.identity import build_identity_map

    lake = orders_project.parent / "lake"
    assert _run(orders_project, "2025-01-01").success
    result = _run(orders_project, "2025-02-01")
    assert result.success
    links = pl.concat([pl.read_parquet(asset_path(lake, "identity_links", k)) for k in ("2025-01-01", "2025-02-01")])
    graph = pl.read_parquet(asset_path(lake, "identity_graph", "2025-02-01"))
    assert graph.equals(links.group_by("node", "other").agg(pl.col("first_seen").min()).sort("node", "other"))
    assert pl.read_parquet(asset_path(lake, "identity_map", "2025-02-01")).equals(build_identity_map(links.lazy()))
    built = [m.metadata["built_from"].value for m in result.asset_materializations_for_node("identity_graph")]
    assert built == ["previous graph"]
    asset_path(lake, "identity_graph", "2025-01-01").unlink()
    again = _run(orders_project, "2025-02-01")
    assert [m.metadata["built_from"].value for m in again.asset_materializations_for_node("identity_graph")] == \
        ["all links to date"]
    assert pl.read_parquet(asset_path(lake, "identity_graph", "2025-02-01")).equals(graph)


def test_a_state_written_before_the_running_sums_upgrades_on_the_next_refresh(orders_project):
    """A lake from a segpipe whose customer_state had no running sums (nor identity column): the
    next month's run rebuilds them from the stored monthly rollups and gives the same state and
    features as a lake built by this version."""
    from segpipe.features import ROLLING_SCHEMA

    lake = orders_project.parent / "lake"
    assert _run(orders_project, "2025-01-01", "2025-02-01").success
    state = pl.read_parquet(asset_path(lake, "customer_state", "2025-02-01"))
    features = pl.read_parquet(asset_path(lake, "customer_features", "2025-02-01"))
    assert state["orders_12m"].sum() > 0
    old = pl.read_parquet(asset_path(lake, "customer_state", "2025-01-01")).drop(*ROLLING_SCHEMA, "identity")
    old.write_parquet(asset_path(lake, "customer_state", "2025-01-01"))
    assert _run(orders_project, "2025-02-01").success
    assert pl.read_parquet(asset_path(lake, "customer_state", "2025-02-01")).equals(state)
    assert pl.read_parquet(asset_path(lake, "customer_features", "2025-02-01")).equals(features)
