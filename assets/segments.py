"""Segment assets: k-means membership and per-segment profiles per snapshot month."""


import dagster as dg
import polars as pl

from assets.metadata import OWNER, column_schema, partitions_of, preview, require
from assets.partitions import monthly_partitions
from assets.resources import SegpipeResource
from segpipe.config import SegpipeConfig
from segpipe.segments import MEMBERSHIP_SCHEMA, segment_customers


def build_segment_assets(config: SegpipeConfig) -> list[dg.AssetsDefinition]:
    monthly = monthly_partitions(config)

    @dg.multi_asset(
        name="segment_customers",
        ins={"customer_features": dg.AssetIn("customer_features")},
        outs={
            "segment_membership": dg.AssetOut(
                group_name="segments",
                kinds={"scikit-learn", "parquet"}, owners=[OWNER],
                description="One row per customer: behavioral cluster (k-means, automatic k) with a reason.",
                metadata={"dagster/column_schema": column_schema(MEMBERSHIP_SCHEMA, {
                    "snapshot_month": "Snapshot month.", "segment_id": "Cluster id (C1 = highest mean revenue).",
                    "segment_name": "Name generated from the cluster's median profile.",
                    "reason": "Why the customer is in the segment.",
                })},
            ),
            "segment_profiles": dg.AssetOut(
                group_name="segments",
                kinds={"polars", "parquet"}, owners=[OWNER],
                description="Per segment: size, share of customers and revenue, median features, playbook action.",
            ),
        },
        partitions_def=monthly,
        backfill_policy=dg.BackfillPolicy.single_run(),
        can_subset=False,
    )
    def segment_customers_asset(context: dg.AssetExecutionContext, segpipe: SegpipeResource,
                                customer_features: dict[str, pl.LazyFrame]):
        cfg = segpipe.config()
        members, profiles = {}, {}
        for pk in partitions_of(context):
            seg = segment_customers(require(customer_features, pk, "customer_features").collect(),
                                    cfg.segments.clustering)
            prof = seg.profiles.with_columns(
                pl.col("segment_name").replace_strict(cfg.playbook, default="(no playbook action configured)")
                .alias("playbook_action")
            )
            members[pk], profiles[pk] = seg.membership, prof
            context.add_asset_metadata(
                {"dagster/row_count": seg.membership.height, "k": seg.k, "silhouette": seg.silhouette,
                 "k_scores": dg.MetadataValue.json({str(k): v for k, v in seg.k_scores.items()}),
                 **{f"share_{r['segment_id']}": r["share_customers"] for r in prof.iter_rows(named=True)}},
                asset_key="segment_membership", partition_key=pk,
            )
            context.add_asset_metadata(
                {"dagster/row_count": prof.height,
                 "profiles": preview(prof.select("segment_id", "segment_name", "customers",
                                                 pl.col("share_customers").round(3), pl.col("share_revenue").round(3),
                                                 "median_orders", "median_recency_days", "playbook_action"), 20)},
                asset_key="segment_profiles", partition_key=pk,
            )
        yield dg.Output(members, output_name="segment_membership")
        yield dg.Output(profiles, output_name="segment_profiles")

    return [segment_customers_asset]
