"""Drift assets per snapshot month: feature drift, segment size shift, migration and centroid shift.

Each has a non-blocking asset check (WARN at the warn thresholds, ERROR at the alert ones): drift
never stops publishing; an alert makes the drift sensor request a refit of the month
(sensor ``drift_refit`` in ``schedules``). The model reference of a month is the snapshot its cluster
model was fitted on (``segment_model.fitted_on``), read from the history input.
"""


import dagster as dg
import polars as pl

from assets.metadata import OWNER, column_schema, partitions_of, preview, require
from assets.partitions import HISTORY_TO_DATE, monthly_partitions
from assets.resources import SegpipeResource
from segpipe.clustering import ClusterModel
from segpipe.config import SegpipeConfig
from segpipe.drift import (
    ALERT,
    CENTROID_SHIFT_DESCRIPTIONS,
    CENTROID_SHIFT_SCHEMA,
    FEATURE_DRIFT_DESCRIPTIONS,
    FEATURE_DRIFT_SCHEMA,
    MIGRATION_DESCRIPTIONS,
    MIGRATION_SCHEMA,
    OK,
    SEGMENT_SHIFT_DESCRIPTIONS,
    SEGMENT_SHIFT_SCHEMA,
    WARN,
    centroid_shift,
    drift_status,
    feature_drift,
    month_status,
    level,
    migration_matrix,
    segment_shift,
    shift_psi,
    stay_rates,
    worst,
)
from segpipe.timeutil import month_key, month_start, next_month

FEATURE_DRIFT_CHECK = "feature_drift_within_thresholds"
SEGMENT_SHIFT_CHECK = "segment_shares_stable"
CENTROID_SHIFT_CHECK = "centroids_within_thresholds"
#: Materialization metadata key the drift sensor reads: True when the month needs a refit.
REFIT_NEEDED = "refit_needed"

_SEVERITY = {WARN: dg.AssetCheckSeverity.WARN, ALERT: dg.AssetCheckSeverity.ERROR}
def _check_result(check: str, asset: str, per_month: dict[str, str], detail: dict[str, str]) -> dg.AssetCheckResult:
    """One result for the months of the run: passes when every month is ok, else WARN or ERROR by
    the worst month."""
    status = worst(list(per_month.values()))
    return dg.AssetCheckResult(
        check_name=check, asset_key=dg.AssetKey(asset), passed=status == OK,
        severity=_SEVERITY.get(status, dg.AssetCheckSeverity.WARN),
        metadata={"status": status, "months": dg.MetadataValue.json(per_month),
                  "not_ok": dg.MetadataValue.json({k: detail[k] for k, v in per_month.items() if v != OK})},
    )


def _prev_key(pk: str) -> str:
    return month_key(next_month(month_start(pk), -1))


def _model(frames: dict[str, pl.LazyFrame], pk: str) -> ClusterModel:
    return ClusterModel(require(frames, pk, "segment_model").collect())


def _fitted_key(model: ClusterModel) -> str | None:
    return month_key(str(model.frame["fitted_on"][0])) if model.frame.height else None


def build_drift_assets(config: SegpipeConfig) -> list[dg.AssetsDefinition]:
    monthly = monthly_partitions(config)
    common = dict(partitions_def=monthly, owners=[OWNER], group_name="drift", kinds={"polars", "parquet"},
                  backfill_policy=dg.BackfillPolicy.single_run())

    @dg.asset(
        **common, name="feature_drift",
        ins={"features_history": dg.AssetIn("customer_features", partition_mapping=HISTORY_TO_DATE),
             "segment_model": dg.AssetIn("segment_model")},
        metadata={"dagster/column_schema": column_schema(FEATURE_DRIFT_SCHEMA, FEATURE_DRIFT_DESCRIPTIONS)},
        check_specs=[dg.AssetCheckSpec(
            FEATURE_DRIFT_CHECK, asset="feature_drift", blocking=False,
            description="ERROR at dataset drift (drift.dataset_drift_share of the watched features drifted) "
                        "against the previous month that is not seasonal (the same change a year earlier did not "
                        "drift) after drift.warmup_months; WARN when drift.warn_share drifted against the previous "
                        "month or the model's reference. Never blocks: an alert makes the drift sensor request "
                        "a refit.")],
    )
    def feature_drift_asset(context: dg.AssetExecutionContext, segpipe: SegpipeResource,
                            features_history: dict[str, pl.LazyFrame], segment_model: dict[str, pl.LazyFrame]):
        """Per watched feature, this snapshot against the previous month and against the snapshot the
        cluster model was fitted on: PSI on the reference's quantile bins, normalised Wasserstein
        (numeric) or Jensen-Shannon (categorical) distance, chi-square significance, drifted flag."""
        cfg = segpipe.config()
        numeric, categorical = cfg.drift.features, cfg.drift.categorical
        out, statuses, detail = {}, {}, {}
        # each month is read once however many later months compare with it; months older than any
        # comparison of the month at hand (13 months back, or the model's reference) are let go
        snapshots: dict[str, pl.DataFrame] = {}

        def snapshot(key: str) -> pl.DataFrame:
            if key not in snapshots:  # the watched columns only (and who is anonymous)
                snapshots[key] = features_history[key].select("identity", *numeric, *categorical).collect()
            return snapshots[key]

        for pk in partitions_of(context):
            require(features_history, pk, "customer_features")
            model = _model(segment_model, pk)
            year_key = month_key(next_month(month_start(pk), -12))
            oldest = month_key(next_month(month_start(pk), -13))
            for key in [k for k in snapshots if k < oldest and k != _fitted_key(model)]:
                del snapshots[key]
            pairs = {"previous_month": (pk, _prev_key(pk)), "model_reference": (pk, _fitted_key(model)),
                     "last_year_change": (year_key, _prev_key(year_key))}
            parts = []
            for comparison, (ck, rk) in pairs.items():
                if rk is None or rk not in features_history or ck not in features_history:
                    continue
                current, ref = snapshot(ck), snapshot(rk)
                parts.append(feature_drift(current, ref, numeric, categorical, cfg.drift).with_columns(
                    pl.lit(month_start(pk).date()).alias("snapshot_month"), pl.lit(comparison).alias("comparison"),
                    pl.lit(month_start(rk).date()).alias("reference_month")))
            table = (pl.concat(parts) if parts else pl.DataFrame(schema=FEATURE_DRIFT_SCHEMA)).select(
                list(FEATURE_DRIFT_SCHEMA)).cast(FEATURE_DRIFT_SCHEMA)
            out[pk] = table
            summary = drift_status(table, cfg.drift)
            in_warmup = pk < month_key(next_month(cfg.first_month_start, cfg.drift.warmup_months))
            status, why = month_status(summary, in_warmup=in_warmup)
            statuses[pk] = status
            detail[pk] = f"{why}; " + "; ".join(
                f"{c}: {s['drift_share']:.0%} drifted {s['drifted']}" for c, s in summary.items())
            prev_s, ref_s = summary.get("previous_month", {}), summary.get("model_reference", {})
            year_s = summary.get("last_year_change", {})
            context.add_asset_metadata(
                {
                    "dagster/row_count": table.height,
                    "status": status,
                    "drift_share_previous": float(prev_s.get("drift_share", 0.0)),
                    "drift_share_reference": float(ref_s.get("drift_share", 0.0)),
                    "drift_share_last_year_change": float(year_s.get("drift_share", 0.0)),
                    "reason": why,
                    "dataset_drift": status == ALERT,
                    REFIT_NEEDED: status == ALERT and _fitted_key(model) != pk,
                    "max_psi": float(table["psi"].fill_nan(None).max() or 0.0),
                    "drifted_features_previous": ", ".join(prev_s.get("drifted", [])) or "none",
                    "model_fitted_on": (_fitted_key(model) or "")[:7],
                    "table": preview(table.filter(pl.col("drifted") | (pl.col("psi_band") != OK)).select(
                        "comparison", "feature", pl.col("psi").round(3), "psi_band", pl.col("wasserstein").round(3),
                        pl.col("js").round(3), "drifted"), 40),
                },
                partition_key=pk,
            )
            context.log.info(f"feature drift {pk[:7]}: {status} ({detail[pk]})")
        yield dg.Output(out)
        yield _check_result(FEATURE_DRIFT_CHECK, "feature_drift", statuses, detail)

    @dg.asset(
        **common, name="segment_shift",
        ins={"membership_history": dg.AssetIn("segment_membership", partition_mapping=HISTORY_TO_DATE),
             "segment_model": dg.AssetIn("segment_model")},
        metadata={"dagster/column_schema": column_schema(SEGMENT_SHIFT_SCHEMA, SEGMENT_SHIFT_DESCRIPTIONS)},
        check_specs=[dg.AssetCheckSpec(
            SEGMENT_SHIFT_CHECK, asset="segment_shift", blocking=False,
            description="PSI over each scheme's segment shares against the previous month: WARN at "
                        "drift.psi_warn, ERROR at drift.psi_alert (WARN at most during drift.warmup_months; the "
                        "cluster scheme is not judged in the month its model was refit). Never blocks.")],
    )
    def segment_shift_asset(context: dg.AssetExecutionContext, segpipe: SegpipeResource,
                            membership_history: dict[str, pl.LazyFrame], segment_model: dict[str, pl.LazyFrame]):
        """Each scheme's segment shares this month, last month and in the model's reference month,
        with the PSI over the shares per scheme."""
        config = segpipe.config()
        cfg = config.drift
        warmup_end = month_key(next_month(config.first_month_start, cfg.warmup_months))
        out, statuses, detail = {}, {}, {}
        for pk in partitions_of(context):
            # scans: counted one scheme column at a time, never a whole month in memory
            cur = require(membership_history, pk, "segment_membership")
            pk_prev, pk_ref = _prev_key(pk), _fitted_key(_model(segment_model, pk))
            prev = membership_history.get(pk_prev)
            ref = membership_history.get(pk_ref)
            table = segment_shift(cur, prev, ref)
            out[pk] = table
            psi_prev, psi_ref = shift_psi(table, "share_previous"), shift_psi(table, "share_reference")
            # a refit renames clusters by design: their shares against last month are not drift
            judged = {s: v for s, v in psi_prev.items() if v is not None and not (s == "cluster" and pk_ref == pk)}
            status = worst([level(v, cfg.psi_warn, cfg.psi_alert) for v in judged.values()])
            statuses[pk] = WARN if status == ALERT and pk < warmup_end else status
            detail[pk] = ", ".join(f"{s} PSI {v:.3f}" for s, v in judged.items())
            context.add_asset_metadata(
                {
                    "dagster/row_count": table.height, "status": statuses[pk],
                    **{f"psi_previous_{s}": float(v) for s, v in psi_prev.items() if v is not None},
                    **{f"psi_reference_{s}": float(v) for s, v in psi_ref.items() if v is not None},
                    "shares": preview(table.select("scheme", "segment", "customers", pl.col("share").round(3),
                                                   pl.col("change_previous").round(3),
                                                   pl.col("change_reference").round(3)), 60),
                },
                partition_key=pk,
            )
        yield dg.Output(out)
        yield _check_result(SEGMENT_SHIFT_CHECK, "segment_shift", statuses, detail)

    @dg.asset(
        **common,
        ins={"membership_history": dg.AssetIn("segment_membership", partition_mapping=HISTORY_TO_DATE)},
        metadata={"dagster/column_schema": column_schema(MIGRATION_SCHEMA, MIGRATION_DESCRIPTIONS)},
    )
    def segment_migration(context: dg.AssetExecutionContext, membership_history: dict[str, pl.LazyFrame]):
        """Per scheme, customers moving from each segment last month to each segment this month (row
        shares sum to 1), including new customers and customers who left; the stay rate is the share
        of customers present in both months who kept their segment."""
        out = {}
        for pk in partitions_of(context):
            # scans: the two months joined on ids one scheme column at a time, streaming
            cur = require(membership_history, pk, "segment_membership")
            pk_prev = _prev_key(pk)
            prev = membership_history.get(pk_prev)
            matrix = migration_matrix(prev, cur)
            out[pk] = matrix
            stays = stay_rates(matrix)
            context.add_asset_metadata(
                {
                    "dagster/row_count": matrix.height,
                    **{f"stay_rate_{s}": float(v) for s, v in stays.items() if v is not None},
                    "previous_month_available": prev is not None,
                    "largest_moves": preview(
                        matrix.filter(pl.col("from_segment") != pl.col("to_segment"))
                        .sort("customers", descending=True)
                        .select("scheme", "from_segment", "to_segment", "customers", pl.col("row_share").round(3)), 20),
                },
                partition_key=pk,
            )
        return out

    @dg.asset(
        **common, name="centroid_shift",
        ins={"customer_features": dg.AssetIn("customer_features"), "segment_model": dg.AssetIn("segment_model")},
        metadata={"dagster/column_schema": column_schema(CENTROID_SHIFT_SCHEMA, CENTROID_SHIFT_DESCRIPTIONS)},
        check_specs=[dg.AssetCheckSpec(
            CENTROID_SHIFT_CHECK, asset="centroid_shift", blocking=False,
            description="Distance of each cluster's mean from the model centroid: WARN at drift.centroid_warn, "
                        "ERROR at drift.centroid_alert (scaled units). Never blocks: an alert makes the drift "
                        "sensor request a refit.")],
    )
    def centroid_shift_asset(context: dg.AssetExecutionContext, segpipe: SegpipeResource,
                             customer_features: dict[str, pl.LazyFrame], segment_model: dict[str, pl.LazyFrame]):
        """Distance of this month's cluster means (and of all known customers' mean) from the cluster
        model's centroids, in the model's scaled units."""
        cfg = segpipe.config().drift
        out, statuses, detail = {}, {}, {}
        for pk in partitions_of(context):
            model = _model(segment_model, pk)
            snapshot = require(customer_features, pk, "customer_features").select(  # the model's columns only
                list(dict.fromkeys(["snapshot_month", "identity", *model.features])))
            table = centroid_shift(snapshot.collect(), model, cfg)
            out[pk] = table
            statuses[pk] = worst(table["level"].to_list())
            detail[pk] = ", ".join(f"{r['cluster_id']} {r['shift']:.2f}" for r in table.iter_rows(named=True))
            clusters = table.filter(pl.col("cluster_id") != "(all)")
            context.add_asset_metadata(
                {
                    "dagster/row_count": table.height, "status": statuses[pk],
                    "max_shift": float(clusters["shift"].fill_nan(None).max() or 0.0),
                    "population_shift": float(table.filter(pl.col("cluster_id") == "(all)")["shift"].sum()),
                    REFIT_NEEDED: statuses[pk] == ALERT and _fitted_key(model) != pk,
                    "model_fitted_on": (_fitted_key(model) or "")[:7],
                    "clusters": preview(table.select("cluster_id", "cluster_name", "customers", pl.col("share").round(3),
                                                     pl.col("model_share").round(3), pl.col("shift").round(3), "level"), 20),
                },
                partition_key=pk,
            )
        yield dg.Output(out)
        yield _check_result(CENTROID_SHIFT_CHECK, "centroid_shift", statuses, detail)

    return [feature_drift_asset, segment_shift_asset, segment_migration, centroid_shift_asset]
