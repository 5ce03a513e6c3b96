"""Jobs and schedules. Imports partitions and keys from ``assets``, never the other way round."""

from __future__ import annotations

import dagster as dg

REFRESH_JOB = "segpipe_refresh"


def build_jobs(monthly: dg.PartitionsDefinition) -> list[dg.UnresolvedAssetJobDefinition]:
    """The monthly refresh job: every asset of the graph for one month (or a range)."""
    return [
        dg.define_asset_job(
            REFRESH_JOB,
            selection=dg.AssetSelection.all(),
            partitions_def=monthly,
            description="Ingest every source, stitch identities, build features and segments for a month.",
        )
    ]


def build_schedules(jobs: list[dg.UnresolvedAssetJobDefinition]) -> list[dg.ScheduleDefinition]:
    """Monthly refresh at 02:00 UTC on the 1st, for the month that just ended."""
    refresh = next(j for j in jobs if j.name == REFRESH_JOB)
    return [
        dg.build_schedule_from_partitioned_job(
            refresh, name="monthly_refresh", hour_of_day=2, minute_of_hour=0,
            description="Refresh every asset for the month that just ended (02:00 UTC on the 1st).",
        )
    ]
