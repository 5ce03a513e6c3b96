"""First feature stage: per-customer monthly rollups and RFM snapshot features.

Snapshots are built from the monthly rollups, never from a rescan of raw events. A snapshot for
month M is "as of the end of M" (exclusive upper bound, UTC). The full feature store (all eight
behavioral families) replaces :func:`build_rfm_features`; the rollup grain stays.
"""

from __future__ import annotations

import datetime as dt

import polars as pl

from segpipe.timeutil import month_start, next_month

ROLLUP_SCHEMA: dict[str, pl.DataType] = {
    "customer_id": pl.String(),
    "month": pl.Date(),
    "events": pl.UInt32(),
    "active_days": pl.UInt32(),
    "orders": pl.UInt32(),
    "order_days": pl.UInt32(),
    "revenue": pl.Float64(),
    "first_event_time": pl.Datetime("us", "UTC"),
    "last_event_time": pl.Datetime("us", "UTC"),
    "first_order_time": pl.Datetime("us", "UTC"),
    "last_order_time": pl.Datetime("us", "UTC"),
}

#: One-line definitions, shown in the UI as column descriptions and in the docs.
FEATURE_DEFINITIONS: dict[str, str] = {
    "customer_id": "Stitched customer id.",
    "identity": "customer (own customer id), contact (email/app account only) or anonymous (cookies only).",
    "snapshot_month": "Snapshot month (features as of the end of this month, UTC).",
    "first_seen": "Time of the customer's first event in any source.",
    "last_seen": "Time of the customer's last event in any source.",
    "tenure_days": "Days from first event to the end of the snapshot month.",
    "days_since_last_activity": "Days from the last event of any kind to the end of the snapshot month.",
    "recency_days": "Days from the last order to the end of the snapshot month (null if never ordered).",
    "orders_lifetime": "Orders up to the end of the snapshot month.",
    "revenue_lifetime": "Order revenue up to the end of the snapshot month.",
    "avg_order_value": "revenue_lifetime / orders_lifetime (0 if no orders).",
    "orders_90d": "Orders in the snapshot month and the two before (month-granular window).",
    "orders_365d": "Orders in the snapshot month and the eleven before (month-granular window).",
    "revenue_365d": "Revenue in the snapshot month and the eleven before (month-granular window).",
    "events_30d": "Events of any kind in the snapshot month.",
    "active_months_12": "Months with any event among the last 12 (incl. the snapshot month).",
}

_TS = pl.Datetime("us", "UTC")
#: Types of the snapshot feature columns.
FEATURE_SCHEMA: dict[str, pl.DataType] = {
    "customer_id": pl.String(), "identity": pl.String(), "snapshot_month": pl.Date(),
    "first_seen": _TS, "last_seen": _TS, "tenure_days": pl.Float64(),
    "days_since_last_activity": pl.Float64(), "recency_days": pl.Float64(),
    "orders_lifetime": pl.Int64(), "revenue_lifetime": pl.Float64(), "avg_order_value": pl.Float64(),
    "orders_90d": pl.Int64(), "orders_365d": pl.Int64(), "revenue_365d": pl.Float64(),
    "events_30d": pl.Int64(), "active_months_12": pl.Int64(),
}


def build_activity_rollup(events: pl.LazyFrame, *, month: str) -> pl.LazyFrame:
    """One row per customer active in ``month``: counts, revenue and first/last times."""
    is_order = pl.col("event_type") == "order"
    return (
        events.group_by("customer_id")
        .agg(
            pl.len().cast(pl.UInt32).alias("events"),
            pl.col("event_time").dt.date().n_unique().cast(pl.UInt32).alias("active_days"),
            is_order.sum().cast(pl.UInt32).alias("orders"),
            pl.col("event_time").filter(is_order).dt.date().n_unique().cast(pl.UInt32).alias("order_days"),
            pl.col("amount").filter(is_order).sum().alias("revenue"),
            pl.col("event_time").min().alias("first_event_time"),
            pl.col("event_time").max().alias("last_event_time"),
            pl.col("event_time").filter(is_order).min().alias("first_order_time"),
            pl.col("event_time").filter(is_order).max().alias("last_order_time"),
        )
        .with_columns(pl.lit(month_start(month).date()).alias("month"))
        .select(list(ROLLUP_SCHEMA))
        .cast(ROLLUP_SCHEMA)
        .sort("customer_id")
    )


def build_rfm_features(rollups: pl.LazyFrame, identity: pl.LazyFrame, *, month: str) -> pl.LazyFrame:
    """RFM snapshot features as of the end of ``month`` from monthly rollups of months <= month.

    ``identity`` is :func:`segpipe.identity.customer_identity` of the month's identity map.
    """
    start = month_start(month)
    end = next_month(start)
    as_of = pl.lit(end, dtype=pl.Datetime("us", "UTC"))
    m = pl.col("month")

    def since(col: str) -> pl.Expr:
        return ((as_of - pl.col(col)).dt.total_seconds() / 86400.0)

    def window(months: int) -> pl.Expr:
        return m >= next_month(start, -(months - 1)).date()

    return (
        rollups.filter(m <= start.date())
        .group_by("customer_id")
        .agg(
            pl.col("first_event_time").min().alias("first_seen"),
            pl.col("last_event_time").max().alias("last_seen"),
            pl.col("last_order_time").max().alias("last_order_time"),
            pl.col("orders").sum().cast(pl.Int64).alias("orders_lifetime"),
            pl.col("revenue").sum().alias("revenue_lifetime"),
            pl.col("orders").filter(window(3)).sum().cast(pl.Int64).alias("orders_90d"),
            pl.col("orders").filter(window(12)).sum().cast(pl.Int64).alias("orders_365d"),
            pl.col("revenue").filter(window(12)).sum().alias("revenue_365d"),
            pl.col("events").filter(m == start.date()).sum().cast(pl.Int64).alias("events_30d"),
            m.filter(window(12)).n_unique().cast(pl.Int64).alias("active_months_12"),
        )
        .with_columns(
            pl.lit(start.date()).alias("snapshot_month"),
            since("first_seen").alias("tenure_days"),
            since("last_seen").alias("days_since_last_activity"),
            since("last_order_time").alias("recency_days"),
            pl.when(pl.col("orders_lifetime") > 0)
            .then(pl.col("revenue_lifetime") / pl.col("orders_lifetime"))
            .otherwise(0.0)
            .alias("avg_order_value"),
        )
        .join(identity, on="customer_id", how="left")
        .with_columns(pl.col("identity").fill_null("anonymous"))
        .select(list(FEATURE_DEFINITIONS))
        .cast(FEATURE_SCHEMA)
        .sort("customer_id")
    )


def snapshot_end(month: str) -> dt.datetime:
    """Exclusive end (UTC) of the snapshot month."""
    return next_month(month_start(month))
