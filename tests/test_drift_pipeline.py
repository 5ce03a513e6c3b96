"""Drift on the 24-month sample: the planted price rise is detected in its month, no alert fires in
the months before it, the drift sensor requests a refit for that month only, and the refit keeps
the ids of the clusters that persist."""

from pathlib import Path

import dagster as dg
import polars as pl
import pytest
import yaml

from assets.build import build_definitions
from assets.segments import REFIT_TAG
from schedules import REFIT_JOB
from segpipe.lake import asset_path
from segpipe.sample import generate_sample
from segpipe.timeutil import month_range

REPO = Path(__file__).resolve().parent.parent
MONTHS = month_range("2024-11", "2026-10")
CUSTOMERS = 8_000


@pytest.fixture(scope="module")
def drift_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("drift_project")
    manifest = generate_sample(root / "data" / "sample", customers=CUSTOMERS, months=len(MONTHS), start="2024-11",
                               seed=42, bad_row_share=0.0)
    cfg = yaml.safe_load((REPO / "segpipe.yaml").read_text())
    cfg["lake_dir"] = "lake"
    (root / "segpipe.yaml").write_text(yaml.safe_dump(cfg))
    defs = build_definitions(root / "segpipe.yaml")
    (root / "dagster_home").mkdir()
    with dg.DagsterInstance.local_temp(str(root / "dagster_home")) as instance:
        result = defs.resolve_job_def("segpipe_refresh").execute_in_process(
            instance=instance, raise_on_error=False,
            tags={"dagster/asset_partition_range_start": MONTHS[0], "dagster/asset_partition_range_end": MONTHS[-1]},
        )
        assert result.success
        yield root, manifest, defs, instance, result


def _metadata(result, asset: str) -> dict[str, dict]:
    out = {}
    for ev in result.get_asset_materialization_events():
        mat = ev.materialization
        if mat.asset_key == dg.AssetKey(asset):
            out[mat.partition] = {k: getattr(v, "value", v) for k, v in mat.metadata.items()}
    return out


def test_planted_drift_alerts_in_its_month_and_never_before(drift_run):
    root, manifest, _, _, result = drift_run
    planted = f"{manifest['drift']['month']}-01"
    status = {pk: md["status"] for pk, md in _metadata(result, "feature_drift").items()}
    assert sorted(status) == MONTHS
    assert status[planted] == "alert", "\n".join(f'{pk} {md["status"]} {md["drift_share_previous"]:.2f} {md["reason"]} {md["drifted_features_previous"]}'
                                        for pk, md in _metadata(result, "feature_drift").items())
    assert [pk for pk in MONTHS if pk < planted and status[pk] == "alert"] == []
    md = _metadata(result, "feature_drift")[planted]
    assert md["refit_needed"] is True and md["drift_share_previous"] >= 0.5
    assert {"orders_30d", "revenue_30d"} <= set(md["drifted_features_previous"].split(", "))
    # January after the holidays drifts against December too, but so did January a year earlier
    jan = _metadata(result, "feature_drift")["2026-01-01"]
    assert jan["status"] == "warn" and "seasonal" in jan["reason"]
    # the table in the lake holds every comparison with its reference month
    table = pl.read_parquet(asset_path(root / "lake", "feature_drift", planted))
    assert set(table["comparison"]) == {"previous_month", "model_reference", "last_year_change"}
    assert table.filter(pl.col("comparison") == "previous_month")["reference_month"].unique().to_list()[0].isoformat() \
        == "2026-04-01"
    # the drift check failed with ERROR (non-blocking: everything downstream was still built)
    checks = [e for e in result.get_asset_check_evaluations() if e.check_name == "feature_drift_within_thresholds"]
    assert checks and not checks[0].passed and checks[0].severity == dg.AssetCheckSeverity.ERROR
    assert asset_path(root / "lake", "segment_report", MONTHS[-1]).with_suffix(".html").is_file()


def test_migration_and_segment_shift_cover_every_customer(drift_run):
    root, manifest, _, _, result = drift_run
    month = MONTHS[-1]
    mem = pl.read_parquet(asset_path(root / "lake", "segment_membership", month))
    mig = pl.read_parquet(asset_path(root / "lake", "segment_migration", month))
    for scheme in ("rfm", "rules", "lifecycle", "cluster"):
        part = mig.filter(pl.col("scheme") == scheme)
        assert part.filter(pl.col("to_segment") != "(gone)")["customers"].sum() == mem.height
        sums = part.group_by("from_segment").agg(pl.col("row_share").sum())["row_share"]
        assert (sums - 1.0).abs().max() < 1e-9
    stay = _metadata(result, "segment_migration")[month]
    assert 0.5 < stay["stay_rate_rfm"] <= 1.0
    shift = pl.read_parquet(asset_path(root / "lake", "segment_shift", month))
    assert shift.group_by("scheme").agg(pl.col("share").sum())["share"].to_list() == pytest.approx([1.0] * 4)


def test_drift_sensor_requests_a_refit_that_keeps_persisting_cluster_ids(drift_run):
    root, manifest, defs, instance, _ = drift_run
    planted = f"{manifest['drift']['month']}-01"
    sensor = defs.resolve_sensor_def("drift_refit")
    data = sensor.evaluate_tick(dg.build_sensor_context(instance=instance, definitions=defs))
    assert [r.partition_key for r in data.run_requests] == [planted]
    before = pl.read_parquet(asset_path(root / "lake", "segment_model", planted))
    assert before["fitted_on"][0].isoformat() < planted  # the quarter's model was serving the month
    req = data.run_requests[0]
    result = defs.resolve_job_def(REFIT_JOB).execute_in_process(
        instance=instance, partition_key=req.partition_key, tags=req.tags, raise_on_error=False)
    assert result.success and req.tags[REFIT_TAG] == "true"
    after = pl.read_parquet(asset_path(root / "lake", "segment_model", planted))
    assert after["fitted_on"][0].isoformat() == planted
    kept = set(before["cluster_id"]) & set(after["cluster_id"])
    assert kept, "no cluster persisted across the drift refit"
    names_before = dict(zip(before["cluster_id"], before["cluster_name"]))
    assert all(dict(zip(after["cluster_id"], after["cluster_name"]))[c] == names_before[c] for c in kept)
    # the refit month's drift no longer asks for a refit, and the sensor does not ask twice
    assert _metadata(result, "feature_drift")[planted]["refit_needed"] is False
    again = sensor.evaluate_tick(dg.build_sensor_context(instance=instance, cursor=data.cursor, definitions=defs))
    assert again.run_requests == []


def test_segpipe_run_refit_refits_on_the_last_month(drift_run, monkeypatch, capsys):
    from segpipe.cli import main

    root, *_ = drift_run
    month = "2026-07-01"
    assert pl.read_parquet(asset_path(root / "lake", "segment_model", month))["fitted_on"][0].isoformat() < month
    monkeypatch.setenv("DAGSTER_HOME", str(root / "dagster_home"))
    assert main(["--config", str(root / "segpipe.yaml"), "run", "--from", "2026-07", "--to", "2026-07", "--refit"]) == 0
    model = pl.read_parquet(asset_path(root / "lake", "segment_model", month))
    assert model["fitted_on"][0].isoformat() == month
    assert model["rfm_thresholds"][0].len() == 12
    assert "succeeded" in capsys.readouterr().out
