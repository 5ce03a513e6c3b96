"""Feature assets: monthly per-customer rollups and snapshot features."""


import dagster as dg
import polars as pl

from assets.metadata import OWNER, column_schema, partitions_of, preview, require
from assets.partitions import HISTORY_TO_DATE, monthly_partitions
from segpipe.config import SegpipeConfig
from segpipe.identity import IDENTITY_KINDS, customer_identity
from segpipe.features import FEATURE_DEFINITIONS, FEATURE_SCHEMA, ROLLUP_SCHEMA, build_activity_rollup, build_rfm_features


def build_feature_assets(config: SegpipeConfig) -> list[dg.AssetsDefinition]:
    monthly = monthly_partitions(config)

    @dg.asset(
        partitions_def=monthly,
        group_name="features",
        kinds={"polars", "parquet"},
        owners=[OWNER],
        backfill_policy=dg.BackfillPolicy.single_run(),
        metadata={"dagster/column_schema": column_schema(ROLLUP_SCHEMA, {
            "month": "Month of the rollup.", "events": "Events in the month.",
            "active_days": "Distinct days with any event.", "orders": "Orders in the month.",
            "order_days": "Distinct days with an order.", "revenue": "Order revenue in the month.",
            "first_event_time": "First event time in the month.", "last_event_time": "Last event time in the month.",
            "first_order_time": "First order time in the month.", "last_order_time": "Last order time in the month.",
        })},
    )
    def customer_activity_monthly(context: dg.AssetExecutionContext, behavioral_events: dict[str, pl.LazyFrame]):
        """Per customer active in the month: event and order counts, revenue, first/last times."""
        out = {}
        for pk in partitions_of(context):
            roll = build_activity_rollup(require(behavioral_events, pk, "behavioral_events"), month=pk).collect()
            out[pk] = roll.sort("customer_id")
            context.add_asset_metadata(
                {"dagster/row_count": roll.height, "active_customers": roll.height,
                 "buyers": roll.filter(pl.col("orders") > 0).height},
                partition_key=pk,
            )
        return out

    @dg.asset(
        ins={"rollups": dg.AssetIn("customer_activity_monthly", partition_mapping=HISTORY_TO_DATE),
             "identity_map": dg.AssetIn("identity_map")},
        partitions_def=monthly,
        group_name="features",
        kinds={"polars", "parquet"},
        owners=[OWNER],
        backfill_policy=dg.BackfillPolicy.single_run(),
        metadata={"dagster/column_schema": column_schema(
            FEATURE_SCHEMA, FEATURE_DEFINITIONS)},
    )
    def customer_features(context: dg.AssetExecutionContext, rollups: dict[str, pl.LazyFrame],
                          identity_map: dict[str, pl.LazyFrame]):
        """One row per customer seen up to the end of the month: RFM features as of the month's end."""
        out = {}
        for pk in partitions_of(context):
            require(rollups, pk, "customer_activity_monthly")
            history = pl.concat([lf for k, lf in rollups.items() if k <= pk])
            identity = customer_identity(require(identity_map, pk, "identity_map"))
            feats = build_rfm_features(history, identity, month=pk).collect().sort("customer_id")
            out[pk] = feats
            buyers = feats.filter(pl.col("orders_lifetime") > 0)
            context.add_asset_metadata(
                {
                    "dagster/row_count": feats.height,
                    "customers": feats.height,
                    "buyers": buyers.height,
                    **{f"identity_{k}": feats.filter(pl.col("identity") == k).height for k in IDENTITY_KINDS},
                    "revenue_lifetime": float(feats["revenue_lifetime"].sum()),
                    "median_recency_days": float(buyers["recency_days"].median() or 0.0),
                    "preview": preview(feats),
                },
                partition_key=pk,
            )
        return out

    return [customer_activity_monthly, customer_features]
