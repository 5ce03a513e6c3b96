"""Refresh automation: the monthly and quarterly schedules, the drift sensor and the landing sensor,
evaluated against a real Dagster instance and real files."""

from __future__ import annotations

import datetime as dt
import os
import time

import dagster as dg
import pytest
from dagster._utils.schedules import cron_string_iterator

from assets.build import build_definitions
from assets.drift import REFIT_NEEDED
from assets.segments import REFIT_TAG
from schedules import MONTHLY_CRON, QUARTERLY_CRON, REFIT_JOB, REFRESH_JOB
from tests.conftest import ORDERS_HEADER, orders_source, write_project, write_text

UTC = dt.timezone.utc


@pytest.fixture
def defs(tmp_path) -> dg.Definitions:
    write_text(tmp_path / "src" / "orders_2025-01.csv", ORDERS_HEADER + "1,C1,2025-01-05 10:00:00,10,a@x.io,toys\n")
    return build_definitions(write_project(tmp_path, {"orders": orders_source()}))


@pytest.fixture(scope="module")
def instance():
    with dg.instance_for_test() as inst:
        yield inst


def _tick(defs: dg.Definitions, name: str, when: dt.datetime, instance) -> dg.RunRequest:
    schedule = defs.resolve_schedule_def(name)
    ctx = dg.build_schedule_context(instance=instance, scheduled_execution_time=when,
                                    repository_def=defs.get_repository_def())
    data = schedule.evaluate_tick(ctx)
    assert len(data.run_requests) == 1
    return data.run_requests[0]


def test_monthly_schedule_refreshes_the_month_that_just_ended(defs, instance):
    req = _tick(defs, "monthly_refresh", dt.datetime(2025, 3, 1, 2, 0, tzinfo=UTC), instance)
    assert req.partition_key == "2025-02-01" and REFIT_TAG not in req.tags
    assert defs.resolve_schedule_def("monthly_refresh").job_name == REFRESH_JOB
    # December's refresh runs on the 1st of December for November; January's in the quarterly one
    assert _tick(defs, "monthly_refresh", dt.datetime(2025, 12, 1, 2, tzinfo=UTC), instance).partition_key == "2025-11-01"


def test_quarterly_schedule_refits_on_the_quarters_last_snapshot(defs, instance):
    req = _tick(defs, "quarterly_refit", dt.datetime(2025, 4, 1, 2, 0, tzinfo=UTC), instance)
    assert req.partition_key == "2025-03-01" and req.tags[REFIT_TAG] == "true"
    assert _tick(defs, "quarterly_refit", dt.datetime(2026, 1, 1, 2, tzinfo=UTC), instance).partition_key == "2025-12-01"
    start = dt.datetime(2025, 2, 15, tzinfo=UTC).timestamp()
    ticks = cron_string_iterator(start, QUARTERLY_CRON, "UTC")
    assert [next(ticks).strftime("%Y-%m-%d %H:%M") for _ in range(5)] == [
        "2025-04-01 02:00", "2025-07-01 02:00", "2025-10-01 02:00", "2026-01-01 02:00", "2026-04-01 02:00"]


def test_the_two_schedules_give_every_month_exactly_one_run():
    start = dt.datetime(2025, 1, 1, tzinfo=UTC).timestamp()
    monthly, quarterly = cron_string_iterator(start, MONTHLY_CRON, "UTC"), cron_string_iterator(start, QUARTERLY_CRON, "UTC")
    days = sorted([next(monthly) for _ in range(8)] + [next(quarterly) for _ in range(4)])
    assert [d.strftime("%Y-%m-%d %H:%M") for d in days] == [f"2025-{m:02d}-01 02:00" for m in range(1, 13)]


def _report(instance, asset: str, month: str, refit: bool) -> None:
    instance.report_runless_asset_event(dg.AssetMaterialization(
        asset_key=asset, partition=month, metadata={REFIT_NEEDED: refit, "status": "alert" if refit else "ok"}))


def test_drift_sensor_requests_one_refit_for_a_drifted_month(defs):
    sensor = defs.resolve_sensor_def("drift_refit")
    assert sensor.job_name == REFIT_JOB
    with dg.instance_for_test() as instance:
        _report(instance, "feature_drift", "2025-01-01", False)
        _report(instance, "centroid_shift", "2025-01-01", False)
        ctx = dg.build_sensor_context(instance=instance, definitions=defs)
        assert sensor.evaluate_tick(ctx).run_requests == []  # a stable month: nothing
        _report(instance, "feature_drift", "2025-02-01", True)
        _report(instance, "centroid_shift", "2025-02-01", True)
        ctx = dg.build_sensor_context(instance=instance, cursor=ctx.cursor, definitions=defs)
        data = sensor.evaluate_tick(ctx)
        assert [(r.partition_key, r.tags[REFIT_TAG], r.run_key) for r in data.run_requests] == [
            ("2025-02-01", "true", "drift-refit:2025-02-01")]
        assert data.run_requests[0].tags["segpipe/drift_alert"] == "feature_drift,centroid_shift"
        # the cursor moved past those materializations: the next tick requests nothing
        again = sensor.evaluate_tick(dg.build_sensor_context(instance=instance, cursor=data.cursor, definitions=defs))
        assert again.run_requests == [] and data.cursor == again.cursor


def test_landing_sensor_picks_up_a_new_file_once(tmp_path, defs):
    sensor = defs.resolve_sensor_def("landing_files")
    assert sensor.job_name == REFRESH_JOB
    with dg.instance_for_test() as instance:
        first = sensor.evaluate_tick(dg.build_sensor_context(instance=instance, definitions=defs, resources=defs.resources))
        assert first.run_requests == [] and "recorded 1 file(s)" in first.skip_message
        # a new file for February lands; one for a month not complete yet is ignored
        write_text(tmp_path / "src" / "orders_2025-02.csv", ORDERS_HEADER + "2,C1,2025-02-05 10:00:00,20,a@x.io,toys\n")
        write_text(tmp_path / "src" / "orders_2099-01.csv", ORDERS_HEADER + "3,C1,2099-01-05 10:00:00,20,a@x.io,toys\n")
        second = sensor.evaluate_tick(dg.build_sensor_context(instance=instance, cursor=first.cursor, definitions=defs, resources=defs.resources))
        assert [r.partition_key for r in second.run_requests] == ["2025-02-01"]
        third = sensor.evaluate_tick(dg.build_sensor_context(instance=instance, cursor=second.cursor, definitions=defs, resources=defs.resources))
        assert third.run_requests == [] and third.skip_message == "no new or changed source file"
        # the February file is corrected: a new request with a new run key
        path = tmp_path / "src" / "orders_2025-02.csv"
        path.write_text(ORDERS_HEADER + "2,C1,2025-02-05 10:00:00,25,a@x.io,toys\n")
        os.utime(path, (time.time() + 5, time.time() + 5))
        fourth = sensor.evaluate_tick(dg.build_sensor_context(instance=instance, cursor=third.cursor, definitions=defs, resources=defs.resources))
        assert [r.partition_key for r in fourth.run_requests] == ["2025-02-01"]
        assert fourth.run_requests[0].run_key != second.run_requests[0].run_key


def test_landing_file_without_a_month_in_its_name_is_placed_by_its_event_times(tmp_path):
    from segpipe.config import load_config
    from segpipe.landing import file_months

    write_text(tmp_path / "src" / "orders_latest.csv", ORDERS_HEADER + "1,C1,2025-01-05 10:00:00,10,a@x.io,toys\n"
               "2,C2,2025-03-01T00:00:00Z,10,b@x.io,toys\n3,C3,garbage,1,c@x.io,toys\n")
    cfg = load_config(write_project(tmp_path, {"orders": orders_source()}))
    assert file_months(cfg, "orders", str(tmp_path / "src" / "orders_latest.csv")) == ["2025-01-01", "2025-03-01"]
    assert file_months(cfg, "orders", "x/orders_2025-07.csv") == ["2025-07-01"]
    assert file_months(cfg, "orders", "x/orders_202507.csv") == ["2025-07-01"]
