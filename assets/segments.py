"""Segment assets: the cluster model, membership and profiles of every scheme, outcomes, exports."""

import dagster as dg
import polars as pl

from assets.buckets import bucketed_asset
from assets.metadata import OWNER, column_schema, partitions_of, preview, require
from assets.partitions import PREVIOUS_MONTH, monthly_partitions
from assets.resources import SegpipeResource
from segpipe.clustering import MODEL_SCHEMA, ClusterModel, adjusted_rand_against, fit_cluster_model, null_fills
from segpipe.config import SegmentsConfig, SegpipeConfig, resolve
from segpipe.lake import lake_join
from segpipe.locks import write_partition_file
from segpipe.schemes import rfm_columns
from segpipe.segments import (
    MEMBERSHIP_DESCRIPTIONS,
    MEMBERSHIP_SCHEMA,
    OUTCOME_SCHEMA,
    PROFILE_FEATURES,
    PROFILE_SCHEMA,
    SCHEMES,
    activation_export,
    build_membership,
    build_outcomes,
    build_profiles,
    clusterable,
    model_rfm_thresholds,
    rows_of,
    with_rfm_thresholds,
)
from segpipe.timeutil import month_key, month_start, next_month

REFIT_TAG = "segpipe/refit_model"


def _refit_reason(pk: str, first: str, previous: ClusterModel | None, refit_months: list[int], forced: bool) -> str | None:
    if previous is None or previous.frame.height == 0:
        return "first model" if pk == first else "no previous model"
    if forced:
        return "refit requested (tag segpipe/refit_model)"
    if month_start(pk).month in refit_months:
        return "quarterly refit"
    return None


def _model_columns(cfg: SegmentsConfig) -> list[str]:
    """The snapshot columns the cluster model's fit, names and RFM thresholds read."""
    return list(dict.fromkeys(["customer_id", "snapshot_month", "identity", "revenue_lifetime",
                               *cfg.clustering.features, *rfm_columns(cfg.rfm)]))


def build_segment_assets(config: SegpipeConfig) -> list[dg.AssetsDefinition]:
    monthly = monthly_partitions(config)
    common = dict(partitions_def=monthly, owners=[OWNER], backfill_policy=dg.BackfillPolicy.single_run())

    @dg.asset(
        **common, group_name="segments", kinds={"scikit-learn", "parquet"},
        ins={"customer_features": dg.AssetIn("customer_features"),
             "previous_model": dg.AssetIn("segment_model", partition_mapping=PREVIOUS_MONTH)},
        metadata={"dagster/column_schema": column_schema(MODEL_SCHEMA, {
            "cluster_id": "Stable cluster id (kept across refits when behavior persists).",
            "cluster_name": "Generated from the centroid profile, or configured in segments.clustering.names.",
            "fitted_on": "Snapshot month the model was fitted on.", "k": "Number of clusters.",
            "silhouette": "Sampled silhouette of the fit.", "size_share": "Share of fitted customers in the cluster.",
            "features": "Clustering features.", "center": "Robust scaler centers (log1p units).",
            "scale": "Robust scaler scales.", "centroid": "Centroid in scaled units.",
            "profile": "Median of each feature in the cluster (raw units).",
            "rfm_thresholds": "RFM score thresholds fitted on the same snapshot: smallest value scoring 2..5 for R "
                              "(days negated), F and M; later months are scored with them until the next refit.",
        })},
    )
    def segment_model(context: dg.AssetExecutionContext, segpipe: SegpipeResource,
                      customer_features: dict[str, pl.LazyFrame], previous_model: dict[str, pl.LazyFrame]):
        """The behavioral cluster model in force for the month: k-means with automatic k, refit on
        quarter-end snapshots (or on request) and carried forward otherwise; refit clusters keep the
        ids of the previous model's clusters they match."""
        config = segpipe.config()
        segments_cfg = config.segments
        cfg = segments_cfg.clustering
        keys = partitions_of(context)
        first = monthly.get_first_partition_key()
        prev_key = month_key(next_month(month_start(keys[0]), -1))
        prev = ClusterModel(previous_model[prev_key].collect()) if prev_key in previous_model else None
        forced = context.run.tags.get(REFIT_TAG) == "true"
        labels_cfg, labels = cfg.validation_labels, None
        if labels_cfg is not None:
            labels_path = resolve(config.base_dir, labels_cfg.path)
            if labels_path.is_file():
                labels = pl.read_parquet(labels_path)  # once for the run, not per month
            else:
                context.log.warning(f"segments.clustering.validation_labels: {labels_path} not found; no ARI")
        out = {}
        for pk in keys:
            reason = _refit_reason(pk, first, prev, cfg.refit_months, forced and pk == keys[-1])
            feats = None
            if reason or labels is not None:
                # only the columns the fit reads: the month's snapshot at scale is wide and long
                feats = clusterable(require(customer_features, pk, "customer_features").select(
                    _model_columns(segments_cfg)).collect())
            if reason:
                if feats.height >= 2 * cfg.k_max:
                    prev = with_rfm_thresholds(fit_cluster_model(feats, cfg, previous=prev), feats, segments_cfg)
                elif prev is None:
                    prev = ClusterModel(pl.DataFrame(schema=MODEL_SCHEMA))
                    reason = f"too few customers to cluster ({feats.height})"
            assert prev is not None
            out[pk] = prev.frame
            m = prev.frame
            validation = {}
            if labels is not None and m.height:
                ari, n = adjusted_rand_against(prev, feats, labels, labels_cfg.column, labels_cfg.only)
                validation = {"adjusted_rand_index": ari, "adjusted_rand_customers": n}
            context.add_asset_metadata(
                {
                    "refit": bool(reason), "reason": reason or "carried forward",
                    "fitted_on": str(m["fitted_on"][0]) if m.height else "",
                    "k": m.height, "silhouette": float(m["silhouette"][0]) if m.height else 0.0,
                    **({"k_scores": dg.MetadataValue.json({str(k): v for k, v in prev.k_scores.items()})}
                       if reason and prev.k_scores else {}),
                    "clusters": preview(m.select("cluster_id", "cluster_name", pl.col("size_share").round(3)), 20),
                    **validation,
                },
                partition_key=pk,
            )
        return out

    def membership_compute(context, inputs, whole):
        cfg = context.resources.segpipe.config()
        for pk in partitions_of(context):
            feats = require(inputs["customer_features"], pk, "customer_features").collect()
            model = ClusterModel(require(inputs["segment_model"], pk, "segment_model").collect())
            if model_rfm_thresholds(model) is None:
                # a model written before it stored its RFM thresholds: the month's quintiles over all
                # customers (not the bucket's), from the three RFM columns
                model = with_rfm_thresholds(model, whole["customer_features"][pk].select(
                    "customer_id", *rfm_columns(cfg.segments.rfm)).collect(), cfg.segments)
            # a bucket's customers are assigned with the whole month's fill for missing recency
            fills = (null_fills(clusterable(whole["customer_features"][pk]), model.features)
                     if model.frame.height else None)
            yield pk, build_membership(feats, model, cfg.segments, fills)

    def membership_report(pk: str, mem: pl.LazyFrame) -> dict:
        n = mem.select(pl.len()).collect().item()
        shares = {}
        for scheme in ("rfm", "cluster", "lifecycle"):
            col = SCHEMES[scheme]
            counts = mem.group_by(col).len().sort(col).collect()
            shares.update({f"share_{scheme}_{seg}": c / max(n, 1) for seg, c in counts.iter_rows()})
        clusters = mem.select(pl.col("cluster_id").n_unique()).collect().item()
        return {"dagster/row_count": n, **shares, "clusters": clusters}

    segment_membership = bucketed_asset(
        "segment_membership",
        ins={"customer_features": dg.AssetIn("customer_features"), "segment_model": dg.AssetIn("segment_model")},
        shared=("segment_model",), size_inputs={"customer_features": "customers"},
        compute=membership_compute, report=membership_report,
        description="One row per customer with every scheme's segment and the reason: RFM scores and map, rule "
                    "segment, lifecycle stage, behavioral cluster (nearest centroid of the month's model).",
        group_name="segments", kinds={"polars", "parquet"},
        metadata={"dagster/column_schema": column_schema(MEMBERSHIP_SCHEMA, MEMBERSHIP_DESCRIPTIONS)}, **common)

    @dg.asset(
        **common, group_name="segments", kinds={"polars", "parquet"},
        ins={"segment_membership": dg.AssetIn("segment_membership"), "customer_features": dg.AssetIn("customer_features")},
        metadata={"dagster/column_schema": column_schema(PROFILE_SCHEMA, {
            f"median_{c}": f"Median {c} of the segment's customers." for c in PROFILE_FEATURES})},
    )
    def segment_profiles(context: dg.AssetExecutionContext, segpipe: SegpipeResource,
                         segment_membership: dict[str, pl.LazyFrame], customer_features: dict[str, pl.LazyFrame]):
        """Per scheme and segment: size, share of customers and revenue, medians of key features and
        the playbook action."""
        cfg = segpipe.config()
        out = {}
        for pk in partitions_of(context):
            out[pk] = prof = build_profiles(  # scans: joined in one streaming pass
                require(segment_membership, pk, "segment_membership"),
                require(customer_features, pk, "customer_features"), cfg.playbook)
            context.add_asset_metadata(
                {"dagster/row_count": prof.height,
                 "profiles": preview(prof.select("scheme", "segment", "customers", pl.col("share_customers").round(3),
                                                 pl.col("share_revenue").round(3), "playbook_action"), 60)},
                partition_key=pk,
            )
        return out

    @dg.asset(
        **common, group_name="segments", kinds={"polars", "parquet"},
        ins={"segment_membership": dg.AssetIn("segment_membership", partition_mapping=PREVIOUS_MONTH),
             "customer_activity_monthly": dg.AssetIn("customer_activity_monthly"),
             "customer_features": dg.AssetIn("customer_features")},
        metadata={"dagster/column_schema": column_schema(OUTCOME_SCHEMA, {
            "snapshot_month": "Month of the segments followed (the month before the partition).",
            "outcome_month": "Month the outcomes were observed in (the partition).",
            "ordered_next": "Share of the segment's customers who ordered in the next month.",
            "active_next": "Share with any activity in the next month.",
            "revenue_next_per_customer": "Next month's revenue per customer of the segment.",
            "churned_next": "Share without activity for lifecycle.churned_after_days at the next month's end.",
            "ordered_lift": "ordered_next / the same share over all customers.",
            "active_lift": "active_next / the same share over all customers.",
            "revenue_lift": "revenue_next_per_customer / the same over all customers.",
        })},
    )
    def segment_outcomes(context: dg.AssetExecutionContext, segpipe: SegpipeResource,
                         segment_membership: dict[str, pl.LazyFrame], customer_activity_monthly: dict[str, pl.LazyFrame],
                         customer_features: dict[str, pl.LazyFrame]):
        """What the customers of each segment of the previous month did in this month (ordered,
        active, revenue, churned) and the lift against all known customers: how to check that
        'At Risk' customers really lapse more. Partition M follows the segments of M-1, so the
        monthly refresh of M completes the outcomes of M-1; empty in the first month."""
        cfg = segpipe.config()
        out = {}
        for pk in partitions_of(context):
            prev = month_key(next_month(month_start(pk), -1))
            if prev in segment_membership:
                res = build_outcomes(  # scans: joined and counted in one streaming pass
                    segment_membership[prev],
                    require(customer_activity_monthly, pk, "customer_activity_monthly").select(
                        "customer_id", "orders", "activity", "revenue"),
                    churned_after_days=cfg.segments.lifecycle.churned_after_days,
                    features_next=require(customer_features, pk, "customer_features").select(
                        "customer_id", "days_since_last_activity"),
                )
            else:
                res = pl.DataFrame(schema=OUTCOME_SCHEMA)
            out[pk] = res
            context.add_asset_metadata(
                {"dagster/row_count": res.height, "segments_month": prev[:7], "previous_month_available": res.height > 0,
                 "outcomes": preview(res.select("scheme", "segment", "customers", pl.col("ordered_next").round(3),
                                                pl.col("active_next").round(3), pl.col("ordered_lift").round(2)), 60)},
                partition_key=pk,
            )
        return out

    @dg.asset(
        **common, group_name="exports", kinds={"csv"},
        ins={"segment_membership": dg.AssetIn("segment_membership")},
        metadata={"dagster/column_schema": column_schema(
            {"customer_id": pl.String(), "segment": pl.String(), "action": pl.String()})},
    )
    def segment_exports(context: dg.AssetExecutionContext, segpipe: SegpipeResource,
                        segment_membership: dict[str, pl.LazyFrame]) -> dg.MaterializeResult:
        """Activation files per scheme and month — customer_id, segment, action — ready for an email or
        ads tool: {lake_dir}/exports/{scheme}/{YYYY-MM-01}.csv."""
        cfg = segpipe.config()
        for pk in partitions_of(context):
            mem = require(segment_membership, pk, "segment_membership")  # a scan, read per scheme
            paths = {}
            for scheme in cfg.segments.exports:
                path = lake_join(cfg.lake_path, "exports", scheme, f"{pk}.csv")
                frame = activation_export(mem, scheme, cfg.playbook)
                write_partition_file(cfg.lake_path, f"segment_exports/{scheme}", pk, path,
                                     lambda fh, frame=frame: frame.write_csv(fh))
                paths[scheme] = dg.MetadataValue.path(str(path))
            context.add_asset_metadata({"rows": rows_of(mem), **paths}, partition_key=pk)
        return dg.MaterializeResult()

    return [segment_model, segment_membership, segment_profiles, segment_outcomes, segment_exports]
