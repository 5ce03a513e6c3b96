"""Segment membership, profiles, outcomes and activation exports across every scheme.

Schemes: ``rfm`` (scores and map), ``rules`` (declarative), ``lifecycle`` (journey stage) and
``cluster`` (k-means model, see :mod:`segpipe.clustering`). Membership is one row per customer
with every scheme's label and reason; profiles and outcomes are long tables keyed by
``(scheme, segment)``.
"""

from __future__ import annotations

import polars as pl

from segpipe.clustering import ANONYMOUS_ID, ANONYMOUS_NAME, ClusterModel
from segpipe.config import SCHEME_NAMES, ConfigError, SegmentsConfig
from segpipe.features import cents, money_sum
from segpipe.schemes import RFM_DIMENSIONS, RfmThresholds, lifecycle_stage, rfm_thresholds, rule_segments, score_rfm

SCHEMES: dict[str, str] = {
    "rfm": "rfm_segment", "rules": "rule_segment", "lifecycle": "lifecycle_stage", "cluster": "cluster_name",
}
assert tuple(SCHEMES) == SCHEME_NAMES
MEMBERSHIP_SCHEMA: dict[str, pl.DataType] = {
    "customer_id": pl.String(), "snapshot_month": pl.Date(), "identity": pl.String(),
    "r_score": pl.Int8(), "f_score": pl.Int8(), "m_score": pl.Int8(), "rfm_segment": pl.String(), "rfm_reason": pl.String(),
    "rule_segment": pl.String(), "rule_reason": pl.String(),
    "lifecycle_stage": pl.String(), "lifecycle_reason": pl.String(),
    "cluster_id": pl.String(), "cluster_name": pl.String(), "cluster_reason": pl.String(),
}
MEMBERSHIP_DESCRIPTIONS = {
    "r_score": "Recency score 1-5 (quintiles over buyers; 5 = most recent).",
    "f_score": "Frequency score 1-5.", "m_score": "Monetary score 1-5.",
    "rfm_segment": "RFM segment from the (R, F) map.", "rfm_reason": "Scores and values behind the RFM segment.",
    "rule_segment": "First matching rule segment.", "rule_reason": "The rule's condition.",
    "lifecycle_stage": "Journey stage.", "lifecycle_reason": "Why this stage.",
    "cluster_id": "Stable behavioral cluster id.", "cluster_name": "Cluster name (generated or configured).",
    "cluster_reason": "Distance to the centroid (scaled units) of the nearest cluster.",
}
PROFILE_FEATURES = ("recency_days", "orders_365d", "revenue_365d", "avg_order_value", "active_days_30d",
                    "days_since_last_activity")
PROFILE_SCHEMA: dict[str, pl.DataType] = {
    "snapshot_month": pl.Date(), "scheme": pl.String(), "segment": pl.String(), "customers": pl.Int64(),
    "share_customers": pl.Float64(), "revenue_365d": pl.Float64(), "share_revenue": pl.Float64(),
    **{f"median_{c}": pl.Float64() for c in PROFILE_FEATURES}, "playbook_action": pl.String(),
}
OUTCOME_SCHEMA: dict[str, pl.DataType] = {
    "snapshot_month": pl.Date(), "outcome_month": pl.Date(), "scheme": pl.String(), "segment": pl.String(), "customers": pl.Int64(),
    "ordered_next": pl.Float64(), "active_next": pl.Float64(), "revenue_next_per_customer": pl.Float64(),
    "churned_next": pl.Float64(), "ordered_lift": pl.Float64(), "active_lift": pl.Float64(),
    "revenue_lift": pl.Float64(),
}
NO_ACTION = "(no playbook action configured)"


def _check_numeric(schema: dict, columns: list[str], where: str) -> None:
    missing = [c for c in columns if c not in schema]
    if missing:
        raise ConfigError(f"{where}: unknown feature column(s) {missing}")
    bad = [c for c in columns if not schema[c].is_numeric()]
    if bad:
        raise ConfigError(f"{where}: column(s) {bad} are not numeric")


def check_clustering_features(schema: dict, columns: list[str]) -> None:
    """Raise ConfigError naming ``segments.clustering.features`` when a column is unknown or not numeric."""
    _check_numeric(schema, columns, "segments.clustering.features")


def check_drift_features(schema: dict, numeric: list[str], categorical: list[str]) -> None:
    """Raise ConfigError naming ``drift.features`` / ``drift.categorical`` for unknown columns."""
    _check_numeric(schema, numeric, "drift.features")
    missing = [c for c in categorical if c not in schema]
    if missing:
        raise ConfigError(f"drift.categorical: unknown feature column(s) {missing}")


def clusterable(features: pl.DataFrame) -> pl.DataFrame:
    """The customers the cluster model is fitted on: known ones (anonymous visitors are not)."""
    return features.filter(pl.col("identity") != "anonymous")


def assign_clusters(features: pl.DataFrame, model: ClusterModel | None,
                    fills: dict[str, float] | None = None) -> pl.DataFrame:
    """Cluster id, name and reason per customer; anonymous visitors get their own segment.
    ``fills``: :func:`segpipe.clustering.null_fills` of the whole snapshot's clusterable customers
    when ``features`` is one bucket of it."""
    known = clusterable(features)
    anon = features.filter(pl.col("identity") == "anonymous").select(
        "customer_id", pl.lit(ANONYMOUS_ID).alias("cluster_id"), pl.lit(ANONYMOUS_NAME).alias("cluster_name"),
        pl.lit("anonymous web visitor (cookies only): not clustered").alias("cluster_reason"))
    if model is None or model.frame.height == 0 or known.height == 0:
        rest = known.select("customer_id", pl.lit("C0").alias("cluster_id"), pl.lit("Unclustered").alias("cluster_name"),
                            pl.lit("no cluster model yet").alias("cluster_reason"))
    else:
        ids, dist = model.assign(known, fills)
        names = dict(zip(model.frame["cluster_id"], model.frame["cluster_name"]))
        rest = known.select("customer_id").with_columns(
            ids, pl.Series("cluster_name", [names[i] for i in ids.to_list()], dtype=pl.String),
            pl.format("nearest centroid {} at distance {}", pl.lit(ids), pl.Series(dist).round(2)).alias("cluster_reason"))
    return pl.concat([rest, anon]).sort("customer_id")


def with_rfm_thresholds(model: ClusterModel, features: pl.DataFrame, cfg: SegmentsConfig) -> ClusterModel:
    """The model with the RFM score thresholds of ``features`` (the snapshot it is fitted on)."""
    t = rfm_thresholds(features, cfg.rfm)
    flat = [v for d in RFM_DIMENSIONS for v in t[d]]
    return ClusterModel(model.frame.with_columns(pl.lit(flat, dtype=pl.List(pl.Float64)).alias("rfm_thresholds")),
                        model.k_scores)


def model_rfm_thresholds(model: ClusterModel | None) -> RfmThresholds | None:
    """The RFM thresholds stored with ``model`` (None: score by this snapshot's quintiles)."""
    if model is None or model.frame.height == 0 or "rfm_thresholds" not in model.frame.columns:
        return None
    flat = model.frame["rfm_thresholds"][0]
    if flat is None or len(flat) != 4 * len(RFM_DIMENSIONS):
        return None
    flat = list(flat)
    return {d: flat[4 * i: 4 * i + 4] for i, d in enumerate(RFM_DIMENSIONS)}


def build_membership(features: pl.DataFrame, model: ClusterModel | None, cfg: SegmentsConfig,
                     fills: dict[str, float] | None = None) -> pl.DataFrame:
    """One row per customer with every scheme's label and reason. RFM scores use the thresholds
    fitted with the model when it has them, else this snapshot's quintiles. ``fills``: see
    :func:`assign_clusters` (for one bucket of the snapshot)."""
    features = features.sort("customer_id")
    out = (
        features.select("customer_id", "snapshot_month", "identity")
        .join(score_rfm(features, cfg.rfm, model_rfm_thresholds(model)), on="customer_id", how="left", maintain_order="left")
        .join(rule_segments(features, cfg.rules, default=cfg.rules_default), on="customer_id", how="left", maintain_order="left")
        .join(lifecycle_stage(features, cfg.lifecycle), on="customer_id", how="left", maintain_order="left")
        .join(assign_clusters(features, model, fills), on="customer_id", how="left", maintain_order="left")
    )
    return out.select(list(MEMBERSHIP_SCHEMA)).cast(MEMBERSHIP_SCHEMA).sort("customer_id")


def segment_rows(membership: pl.DataFrame | pl.LazyFrame, *others: pl.LazyFrame,
                 extra: tuple[pl.Expr, ...] = ()) -> pl.DataFrame:
    """One row per member: every scheme's segment column, the ``extra`` expressions of the membership,
    and the columns of ``others`` (left-joined on ``customer_id``), without the ids.

    The readers of segments count and summarise these rows per scheme column. With scans, the joins
    run in one streaming pass, and what is kept in memory is one narrow row per customer instead of
    the membership month, the joined frames and a long table of every scheme (four times the
    customers)."""
    rows = membership.lazy().select("customer_id", *extra, *SCHEMES.values())
    for other in others:
        rows = rows.join(other, on="customer_id", how="left")
    return rows.drop("customer_id").collect()


def _per_scheme(rows: pl.DataFrame, aggs: list[pl.Expr]) -> pl.DataFrame:
    """``aggs`` per ``(scheme, segment)`` of :func:`segment_rows`, one scheme column at a time."""
    return pl.concat([rows.group_by(pl.col(col).alias("segment")).agg(pl.len().cast(pl.Int64).alias("customers"), *aggs)
                      .with_columns(pl.lit(scheme).alias("scheme")) for scheme, col in SCHEMES.items()])


def build_profiles(membership: pl.DataFrame | pl.LazyFrame, features: pl.DataFrame | pl.LazyFrame,
                   playbook: dict[str, str]) -> pl.DataFrame:
    """Per scheme and segment: size, shares of customers and 365-day revenue, median features, action.

    Frames may be lazy (scans); see :func:`segment_rows`. Revenue is summed in whole cents, so the
    shares do not depend on the order of the rows."""
    features = features.lazy()
    total_rev = float(features.select(money_sum(pl.col("revenue_365d"))).collect().item() or 0.0)
    rows = segment_rows(membership, features.select("customer_id", *PROFILE_FEATURES))
    n = max(rows.height, 1)
    prof = _per_scheme(rows, [money_sum(pl.col("revenue_365d")).alias("revenue_365d"),
                              *[pl.col(c).cast(pl.Float64).median().alias(f"median_{c}") for c in PROFILE_FEATURES]])
    prof = prof.with_columns(
        pl.lit(snapshot_month_of(membership), dtype=pl.Date).alias("snapshot_month"),
        (pl.col("customers") / n).alias("share_customers"),
        (pl.col("revenue_365d") / total_rev if total_rev else pl.lit(0.0)).alias("share_revenue"),
        pl.col("segment").replace_strict(playbook, default=NO_ACTION, return_dtype=pl.String).alias("playbook_action"),
    )
    order = {s: i for i, s in enumerate(SCHEMES)}
    return (
        prof.with_columns(pl.col("scheme").replace_strict(order, return_dtype=pl.Int32).alias("__o"))
        .sort("__o", "customers", "segment", descending=[False, True, False])
        .select(list(PROFILE_SCHEMA)).cast(PROFILE_SCHEMA)
    )


def build_outcomes(membership: pl.DataFrame | pl.LazyFrame, next_month: pl.DataFrame | pl.LazyFrame | None, *,
                   churned_after_days: int, features_next: pl.DataFrame | pl.LazyFrame | None = None) -> pl.DataFrame:
    """What the customers of each segment at M did in M+1, and the lift against all known customers.

    ``next_month`` is the monthly activity rollup of M+1 (customer_id, orders, revenue, activity);
    ``features_next`` (optional) gives ``days_since_last_activity`` at the end of M+1 for churn.
    Returns no rows when M+1 has not been built yet. Frames may be lazy (scans); see
    :func:`segment_rows`. Revenue is summed in whole cents, so the means do not depend on the order
    of the rows.
    """
    if next_month is None:
        return pl.DataFrame(schema=OUTCOME_SCHEMA)
    nxt = next_month.lazy().select("customer_id", (pl.col("orders") > 0).alias("ordered"),
                                   (pl.col("activity") > 0).alias("active"), cents(pl.col("revenue")).alias("cents"))
    # only the churned customers are joined (the others are False): a smaller table to hash
    churn = [] if features_next is None else [features_next.lazy().select(
        "customer_id", (pl.col("days_since_last_activity") >= churned_after_days).alias("churned")).filter("churned")]
    rows = segment_rows(membership, nxt, *churn, extra=((pl.col("identity") != "anonymous").alias("known"),))
    rows = rows.with_columns(pl.col("ordered", "active").fill_null(False), pl.col("cents").fill_null(0),
                             pl.col("churned").fill_null(False) if churn else pl.lit(None, pl.Boolean).alias("churned"))
    means = [pl.col("ordered").mean().alias("ordered_next"), pl.col("active").mean().alias("active_next"),
             (pl.col("cents").sum() / 100 / pl.len()).alias("revenue_next_per_customer"),
             pl.col("churned").cast(pl.Float64).mean().alias("churned_next")]
    # Lift is measured against the addressable customers (anonymous cookies are not a population
    # anyone can act on, and their near-zero activity would flatter every segment).
    known = rows.filter("known")
    base = known.select(means).row(0, named=True) if known.height else {}

    def lift(col: str) -> pl.Expr:
        return (pl.col(col) / base[col]) if base.get(col) else pl.lit(None, pl.Float64)

    month = snapshot_month_of(membership)
    order = {s: i for i, s in enumerate(SCHEMES)}
    return (
        _per_scheme(rows, means)
        .with_columns(
            pl.lit(month, dtype=pl.Date).alias("snapshot_month"),
            pl.lit(month, dtype=pl.Date).dt.offset_by("1mo").alias("outcome_month"),
            lift("ordered_next").alias("ordered_lift"),
            lift("active_next").alias("active_lift"),
            lift("revenue_next_per_customer").alias("revenue_lift"),
            pl.col("scheme").replace_strict(order, return_dtype=pl.Int32).alias("__o"),
        )
        .sort("__o", "segment")
        .select(list(OUTCOME_SCHEMA)).cast(OUTCOME_SCHEMA)
    )


def transitions(previous: pl.DataFrame | pl.LazyFrame, current: pl.DataFrame | pl.LazyFrame, *,
                entered: str, exited: str) -> pl.DataFrame:
    """``(from_segment, to_segment, customers)`` between two ``(customer_id, segment)`` frames:
    ``entered`` for customers only in ``current``, ``exited`` for those only in ``previous``.
    Frames may be lazy (scans of two months): joined and counted in one streaming pass."""
    a = previous.lazy().select("customer_id", pl.col("segment").cast(pl.String).alias("from_segment"))
    b = current.lazy().select("customer_id", pl.col("segment").cast(pl.String).alias("to_segment"))
    return (
        a.join(b, on="customer_id", how="full", coalesce=True)
        .select(pl.col("from_segment").fill_null(entered), pl.col("to_segment").fill_null(exited))
        .group_by("from_segment", "to_segment")
        .agg(pl.len().cast(pl.Int64).alias("customers"))
        .collect()
    )


def rows_of(frame: pl.DataFrame | pl.LazyFrame) -> int:
    """Rows of a frame or a scan (a scan counts them from the files' metadata)."""
    return frame.height if isinstance(frame, pl.DataFrame) else int(frame.select(pl.len()).collect().item())


def snapshot_month_of(membership: pl.DataFrame | pl.LazyFrame):
    """The ``snapshot_month`` of a membership month (None if it has no rows)."""
    return membership.lazy().select(pl.col("snapshot_month").first()).collect().item()


def activation_export(membership: pl.DataFrame | pl.LazyFrame, scheme: str, playbook: dict[str, str]) -> pl.DataFrame:
    """Customer id, segment and action of one scheme, ready for an email or ads tool (from a frame
    or a scan, of which only the ids and the scheme's column are read)."""
    col = SCHEMES[scheme]
    return membership.lazy().select(
        "customer_id", pl.col(col).alias("segment"),
        pl.col(col).replace_strict(playbook, default=NO_ACTION, return_dtype=pl.String).alias("action"),
    ).sort("customer_id").collect()
