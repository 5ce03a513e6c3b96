"""The monthly segment report: a static HTML page per snapshot month in the lake."""


from pathlib import Path

import dagster as dg
import polars as pl

from assets.metadata import OWNER, column_schema, partitions_of, require
from assets.partitions import HISTORY_TO_DATE, PREVIOUS_AND_THIS_MONTH, monthly_partitions
from assets.resources import SegpipeResource
from segpipe.config import SegpipeConfig
from segpipe.lake import asset_path, location_uri
from segpipe.locks import write_partition_file
from segpipe.report import (
    build_segment_report,
    chart_count,
    drift_section,
    outcome_section,
    profile_column_descriptions,
)
from segpipe.segments import PROFILE_SCHEMA, SCHEMES
from segpipe.timeutil import month_key, month_start, next_month

REPORT_ASSET = "segment_report"



#: Columns of the report's profile and playbook table.
_TABLE_SCHEMA = {c: t for c, t in PROFILE_SCHEMA.items() if c != "snapshot_month"}


def report_path(lake_dir: str | Path, partition_key: str) -> str | Path:
    """``{lake_dir}/segment_report/{partition_key}.html`` (a URL in an object-store lake)."""
    return asset_path(lake_dir, REPORT_ASSET, partition_key, suffix=".html")


def build_report_assets(config: SegpipeConfig) -> list[dg.AssetsDefinition]:
    monthly = monthly_partitions(config)

    @dg.asset(
        name=REPORT_ASSET,
        ins={
            "segment_profiles": dg.AssetIn("segment_profiles", partition_mapping=HISTORY_TO_DATE),
            "segment_membership": dg.AssetIn("segment_membership", partition_mapping=PREVIOUS_AND_THIS_MONTH),
            "segment_outcomes": dg.AssetIn("segment_outcomes"),
            "feature_drift": dg.AssetIn("feature_drift"),
        },
        partitions_def=monthly,
        group_name="exports",
        kinds={"altair", "html"},
        owners=[OWNER],
        backfill_policy=dg.BackfillPolicy.single_run(),
        metadata={
            "dagster/column_schema": column_schema(_TABLE_SCHEMA, profile_column_descriptions(list(_TABLE_SCHEMA))),
            "file_pattern": f"{{lake_dir}}/{REPORT_ASSET}/{{YYYY-MM-01}}.html",
        },
    )
    def segment_report(context: dg.AssetExecutionContext, segpipe: SegpipeResource,
                       segment_profiles: dict[str, pl.LazyFrame],
                       segment_membership: dict[str, pl.LazyFrame],
                       segment_outcomes: dict[str, pl.LazyFrame],
                       feature_drift: dict[str, pl.LazyFrame]) -> dg.MaterializeResult:
        """Static HTML report of the month, one page that works offline: segment sizes over time and
        migration from the previous month per scheme, profiles and playbook (the columns below), and
        how last month's segments behaved this month (outcome lift)."""
        lake = segpipe.config().lake_path
        dcfg = segpipe.config().drift
        history = {k: lf.collect() for k, lf in sorted(segment_profiles.items())}  # small: one row per segment
        for pk in partitions_of(context):
            prev = month_key(next_month(month_start(pk), -1))
            require(segment_profiles, pk, "segment_profiles")
            page = build_segment_report(
                month=pk,
                profiles_by_month={k: frame for k, frame in history.items() if k <= pk},
                # scans: read one scheme column at a time, streaming
                membership_prev=segment_membership.get(prev),
                membership_cur=require(segment_membership, pk, "segment_membership"),
                schemes=SCHEMES,
                extra_sections=(
                    drift_section(feature_drift[pk].collect() if pk in feature_drift else None, month=pk,
                                  psi_warn=dcfg.psi_warn, psi_alert=dcfg.psi_alert, distance=dcfg.wasserstein),
                    outcome_section(segment_outcomes[pk].collect() if pk in segment_outcomes else None,
                                    month=prev, schemes=list(SCHEMES)),
                ),
            )
            path = report_path(lake, pk)
            stale = write_partition_file(lake, REPORT_ASSET, pk, path, lambda fh, page=page: fh.write(page.encode()))
            if stale:
                context.log.warning(f"{REPORT_ASSET} {pk[:7]}: removed {len(stale)} temp file(s) left by an "
                                    "interrupted write: " + ", ".join(Path(p).name for p in stale))
            charts = chart_count(page)
            context.add_asset_metadata(
                {
                    "report_path": dg.MetadataValue.path(str(path)),
                    "report_url": dg.MetadataValue.url(location_uri(path)),
                    "dagster/uri": location_uri(path),
                    "charts": charts,
                    "has_migration": prev in segment_membership,
                    "size_kb": round(len(page.encode()) / 1024, 1),
                },
                partition_key=pk,
            )
            context.log.info(f"segment report {pk[:7]}: {path} ({charts} charts)")
        return dg.MaterializeResult()

    return [segment_report]
