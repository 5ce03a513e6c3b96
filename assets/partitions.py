"""Partitions, defined once and imported everywhere (assets and schedules)."""

from __future__ import annotations

import dagster as dg

from segpipe.config import SegpipeConfig

#: Upstream window meaning "every month from the first one up to this one" (clipped to the
#: partitions that exist): 100 years of months.
HISTORY_MONTHS = 1200


def monthly_partitions(config: SegpipeConfig) -> dg.MonthlyPartitionsDefinition:
    """Monthly partitions from the configured first month to the last complete month (UTC)."""
    return dg.MonthlyPartitionsDefinition(start_date=f"{config.first_month}-01", timezone="UTC")


#: This month only.
SAME_MONTH = dg.TimeWindowPartitionMapping()
#: This month and every month before it.
HISTORY_TO_DATE = dg.TimeWindowPartitionMapping(
    start_offset=-HISTORY_MONTHS, end_offset=0, allow_nonexistent_upstream_partitions=True
)
#: The month before (the first month has none).
PREVIOUS_MONTH = dg.TimeWindowPartitionMapping(start_offset=-1, end_offset=-1, allow_nonexistent_upstream_partitions=True)
#: The month before and this one.
PREVIOUS_AND_THIS_MONTH = dg.TimeWindowPartitionMapping(
    start_offset=-1, end_offset=0, allow_nonexistent_upstream_partitions=True
)
