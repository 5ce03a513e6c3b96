"""Jobs, schedules and sensors. Imports partitions and keys from ``assets``, never the other way round.

* ``segpipe_refresh`` (every asset) for one month: run by ``monthly_refresh`` at 02:00 UTC on the
  1st of each month that does not start a quarter, and by ``quarterly_refit`` at 02:00 UTC on
  1 Jan/Apr/Jul/Oct with the refit tag, so the quarter's last snapshot refits the cluster model
  and the RFM thresholds and is assigned with them. Exactly one scheduled run per month.
* ``segpipe_refit`` (the cluster model and everything downstream: membership, profiles, outcomes,
  exports, drift, report) for one month with the refit tag: requested by ``drift_refit`` when a
  month's feature drift or centroid shift reaches the alert level (once per month).
* ``landing_files``: new or changed files under the sources' globs request ``segpipe_refresh``
  for the months they hold.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json

import dagster as dg

from assets.drift import REFIT_NEEDED
from assets.resources import SegpipeResource
from assets.segments import REFIT_TAG
from segpipe.landing import changed, file_months, snapshot
from segpipe.timeutil import month_key, next_month

REFRESH_JOB = "segpipe_refresh"
REFIT_JOB = "segpipe_refit"
TRIGGER_TAG = "segpipe/trigger"
#: Months whose refresh the monthly schedule runs (the others start a quarter: quarterly_refit).
MONTHLY_CRON = "0 2 1 2,3,5,6,8,9,11,12 *"
QUARTERLY_CRON = "0 2 1 1,4,7,10 *"
DRIFT_ASSETS = ("feature_drift", "centroid_shift")


def build_jobs(monthly: dg.PartitionsDefinition) -> list[dg.UnresolvedAssetJobDefinition]:
    """The refresh job (every asset) and the refit job (the model and everything downstream)."""
    return [
        dg.define_asset_job(
            REFRESH_JOB,
            selection=dg.AssetSelection.all(),
            partitions_def=monthly,
            description="Ingest every source, stitch identities, build features, segments, drift and the "
                        "report for a month (or a range).",
        ),
        dg.define_asset_job(
            REFIT_JOB,
            selection=dg.AssetSelection.assets("segment_model").downstream(),
            partitions_def=monthly,
            tags={REFIT_TAG: "true"},
            description="Refit the cluster model and RFM thresholds on a month's snapshot and re-assign the "
                        "month: membership, profiles, exports, drift and report.",
        ),
    ]


def previous_month_key(when: dt.datetime) -> str:
    """The partition of the month that ended before ``when``."""
    return month_key(next_month(dt.datetime(when.year, when.month, 1), -1))


def build_schedules(jobs: list[dg.UnresolvedAssetJobDefinition]) -> list[dg.ScheduleDefinition]:
    refresh = next(j for j in jobs if j.name == REFRESH_JOB)

    def month_end(name: str, cron: str, tags: dict[str, str], description: str) -> dg.ScheduleDefinition:
        """A schedule requesting ``segpipe_refresh`` for the month that ended before each tick."""

        @dg.schedule(name=name, job=refresh, cron_schedule=cron, execution_timezone="UTC", description=description)
        def _schedule(context: dg.ScheduleEvaluationContext):
            pk = previous_month_key(context.scheduled_execution_time)
            return dg.RunRequest(run_key=f"{name}:{pk}", partition_key=pk, tags={**tags, TRIGGER_TAG: name})

        return _schedule

    monthly_refresh = month_end(
        "monthly_refresh", MONTHLY_CRON, {},
        "02:00 UTC on the 1st: ingestion -> features -> all schemes -> drift for the month that just ended. "
        "Months that end a quarter are refreshed by quarterly_refit instead.")
    quarterly_refit = month_end(
        "quarterly_refit", QUARTERLY_CRON, {REFIT_TAG: "true"},
        "02:00 UTC on 1 Jan/Apr/Jul/Oct: refresh the quarter's last month and refit the cluster model and RFM "
        "thresholds on its snapshot, then assign that month with the new model.")
    return [monthly_refresh, quarterly_refit]


def build_sensors(monthly: dg.PartitionsDefinition) -> list[dg.SensorDefinition]:
    @dg.sensor(
        name="drift_refit", job_name=REFIT_JOB, minimum_interval_seconds=60,
        description="Requests a refit run for a month whose feature drift or centroid shift reached the alert "
                    "level (metadata refit_needed), once per month; the cursor is the last materialization "
                    "read.",
    )
    def drift_refit(context: dg.SensorEvaluationContext):
        cursor = int(context.cursor or 0)
        newest, months = cursor, {}
        for asset in DRIFT_ASSETS:
            result = context.instance.fetch_materializations(
                dg.AssetRecordsFilter(asset_key=dg.AssetKey(asset), after_storage_id=cursor), limit=10_000,
                ascending=True)
            for rec in result.records:
                newest = max(newest, rec.storage_id)
                mat = rec.asset_materialization
                flag = mat.metadata.get(REFIT_NEEDED) if mat else None
                if mat and mat.partition and flag is not None and flag.value is True:
                    months.setdefault(mat.partition, []).append(asset)
        context.update_cursor(str(newest))
        if not months:
            return dg.SkipReason(f"no drift alert in materializations after storage id {cursor}")
        return [
            dg.RunRequest(run_key=f"drift-refit:{pk}", partition_key=pk,
                          tags={REFIT_TAG: "true", TRIGGER_TAG: "drift_refit", "segpipe/drift_alert": ",".join(a)})
            for pk, a in sorted(months.items())
        ]

    @dg.sensor(
        name="landing_files", job_name=REFRESH_JOB, minimum_interval_seconds=60,
        description="Watches the files the sources' path globs match. A new or changed file requests a refresh "
                    "of the months it holds (from YYYY-MM in its name, else its event times). The first tick "
                    "only records the files already there.",
    )
    def landing_files(context: dg.SensorEvaluationContext, segpipe: SegpipeResource):
        config = segpipe.config()
        now = snapshot(config)
        if context.cursor is None:
            context.update_cursor(json.dumps(now))
            return dg.SkipReason(f"recorded {len(now)} file(s) already landed; watching for new ones")
        before = json.loads(context.cursor)
        new = changed(before, now)
        context.update_cursor(json.dumps(now))
        if not new:
            return dg.SkipReason("no new or changed source file")
        valid = set(monthly.get_partition_keys())
        per_month: dict[str, list[str]] = {}
        for path in new:
            for pk in file_months(config, now[path]["source"], path):
                if pk in valid:
                    per_month.setdefault(pk, []).append(path)
                else:
                    context.log.info(f"{path}: month {pk[:7]} is not a complete month of the history; not requested")
        requests = []
        for pk, paths in sorted(per_month.items()):
            digest = hashlib.sha256(json.dumps([[p, now[p]] for p in sorted(paths)]).encode()).hexdigest()[:16]
            requests.append(dg.RunRequest(run_key=f"landing:{pk}:{digest}", partition_key=pk,
                                          tags={TRIGGER_TAG: "landing_files"}))
        return requests or dg.SkipReason(f"{len(new)} new file(s), none for a complete month")

    return [drift_refit, landing_files]
