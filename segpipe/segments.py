"""First segmentation stage: k-means on RFM features with automatic k, named from centroids.

Cluster ids are ordered by mean lifetime revenue (C1 spends most) so they are deterministic for a
given snapshot; stable identities across refits come with the segment-scheme work.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl
from sklearn.cluster import KMeans
from sklearn.metrics import silhouette_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer, RobustScaler

from segpipe.config import ClusteringConfig

MEMBERSHIP_SCHEMA = {
    "customer_id": pl.String,
    "snapshot_month": pl.Date,
    "segment_id": pl.String,
    "segment_name": pl.String,
    "reason": pl.String,
}


ANONYMOUS_ID = "A0"
ANONYMOUS_NAME = "Anonymous visitors"


@dataclass(frozen=True)
class Segmentation:
    membership: pl.DataFrame  # MEMBERSHIP_SCHEMA
    profiles: pl.DataFrame  # one row per segment
    k: int
    silhouette: float
    k_scores: dict[int, float]


def check_clustering_features(schema: dict, columns: list[str]) -> None:
    """Raise ConfigError naming ``segments.clustering.features`` when a column is unknown or not numeric."""
    from segpipe.config import ConfigError

    missing = [c for c in columns if c not in schema]
    if missing:
        raise ConfigError(f"segments.clustering.features: unknown feature column(s) {missing}")
    bad = [c for c in columns if not schema[c].is_numeric()]
    if bad:
        raise ConfigError(f"segments.clustering.features: column(s) {bad} are not numeric")


def _matrix(features: pl.DataFrame, columns: list[str]) -> np.ndarray:
    check_clustering_features(features.schema, columns)
    exprs = []
    for c in columns:
        e = pl.col(c).cast(pl.Float64)
        if c == "recency_days":  # never ordered: farther than anyone who did
            e = e.fill_null(pl.col(c).max().fill_null(0.0) + 30.0)
        exprs.append(e.fill_null(0.0).clip(lower_bound=0.0))
    return features.select(exprs).to_numpy()


def choose_k(x: np.ndarray, cfg: ClusteringConfig) -> tuple[int, dict[int, float]]:
    """k in [k_min, k_max] with the best sampled silhouette whose smallest cluster holds at least
    ``min_segment_share`` of rows; falls back to k_min when no k qualifies."""
    n = x.shape[0]
    rng = np.random.default_rng(cfg.random_state)
    sample = rng.choice(n, size=min(n, cfg.silhouette_sample), replace=False) if n > 0 else np.array([], int)
    scores: dict[int, float] = {}
    best, best_score = cfg.k_min, -np.inf
    for k in range(cfg.k_min, min(cfg.k_max, max(n - 1, cfg.k_min)) + 1):
        km = KMeans(n_clusters=k, n_init=4, random_state=cfg.random_state).fit(x)
        labels = km.labels_
        if len(np.unique(labels[sample])) < 2:
            continue
        score = float(silhouette_score(x[sample], labels[sample]))
        scores[k] = round(score, 4)
        share = np.bincount(labels, minlength=k).min() / n
        if share >= cfg.min_segment_share and score > best_score:
            best, best_score = k, score
    return best, scores


def _name(c: dict, pop: dict) -> str:
    if c["orders_lifetime"] < 0.5:
        return "Engaged non-buyers" if c["days_since_last_activity"] <= 45 else "Dormant non-buyers"
    rec = c["recency_days"]
    when = "Active" if rec <= 60 else ("Cooling" if rec <= 180 else "Dormant")
    freq = "frequent" if c["orders_365d"] >= max(pop["orders_365d_p75"], 2) else (
        "occasional" if c["orders_365d"] >= 1 else "past")
    value = "high-value" if c["avg_order_value"] >= pop["aov_median"] else "low-value"
    return f"{when} {freq} {value} buyers"


def segment_customers(features: pl.DataFrame, cfg: ClusteringConfig) -> Segmentation:
    """Cluster the snapshot's customers; return membership with a reason and per-segment profiles."""
    features = features.sort("customer_id")
    anonymous = features.filter(pl.col("identity") == "anonymous") if "identity" in features.columns else features.clear()
    if anonymous.height:
        features = features.filter(pl.col("identity") != "anonymous")
    x = _matrix(features, cfg.features)
    if features.height < 2 * cfg.k_max:
        # Too few customers to cluster meaningfully (an empty or tiny month): one segment.
        k, scores, labels = 1, {}, np.zeros(features.height, dtype=np.int32)
    else:
        model = make_pipeline(FunctionTransformer(np.log1p), RobustScaler())
        xs = model.fit_transform(x)
        k, scores = choose_k(xs, cfg)
        labels = KMeans(n_clusters=k, n_init=4, random_state=cfg.random_state).fit(xs).labels_
    f = features.with_columns(pl.Series("__cluster", labels, dtype=pl.Int32))
    order = (
        f.group_by("__cluster").agg(pl.col("revenue_lifetime").mean().alias("r"))
        .sort(["r", "__cluster"], descending=[True, False])["__cluster"].to_list()
    )
    seg_id = {c: f"C{i + 1}" for i, c in enumerate(order)}
    med = f.group_by("__cluster").agg(
        pl.col(c).cast(pl.Float64).median() for c in
        ("orders_lifetime", "recency_days", "orders_365d", "avg_order_value", "days_since_last_activity")
    ).fill_null(1e9)
    buyers = f.filter(pl.col("orders_lifetime") > 0)
    pop = {
        "orders_365d_p75": float(buyers["orders_365d"].quantile(0.75) or 0) if buyers.height else 0.0,
        "aov_median": float(buyers["avg_order_value"].median() or 0) if buyers.height else 0.0,
    }
    names: dict[int, str] = {}
    used: dict[str, int] = {}
    for row in med.sort("__cluster").iter_rows(named=True):
        names[row["__cluster"]] = _name(row, pop)
    for c in order:  # disambiguate equal names, highest revenue keeps the plain name
        n = names[c]
        used[n] = used.get(n, 0) + 1
        if used[n] > 1:
            names[c] = f"{n} ({seg_id[c]})"
    mapping = pl.DataFrame(
        {"__cluster": order, "segment_id": [seg_id[c] for c in order], "segment_name": [names[c] for c in order]},
        schema={"__cluster": f.schema["__cluster"], "segment_id": pl.String, "segment_name": pl.String},
    )
    f = f.join(mapping, on="__cluster", maintain_order="left")
    membership = f.select(
        "customer_id", "snapshot_month", "segment_id", "segment_name",
        pl.format(
            "k-means cluster {}: {} orders, recency {} days, AOV {}",
            "segment_id", "orders_lifetime",
            pl.col("recency_days").round(0).cast(pl.Int64).cast(pl.String).fill_null("n/a"),
            pl.col("avg_order_value").round(2),
        ).alias("reason"),
    ).cast(MEMBERSHIP_SCHEMA).sort("customer_id")
    if anonymous.height:
        # Visitors known only by cookies are not clustered: nothing but page views to go on.
        membership = pl.concat([membership, anonymous.select(
            "customer_id", "snapshot_month", pl.lit(ANONYMOUS_ID).alias("segment_id"),
            pl.lit(ANONYMOUS_NAME).alias("segment_name"),
            pl.lit("anonymous web visitor (cookies only): not clustered").alias("reason"),
        ).cast(MEMBERSHIP_SCHEMA)]).sort("customer_id")
        f = pl.concat([f, anonymous.with_columns(
            pl.lit(-1, pl.Int32).alias("__cluster"), pl.lit(ANONYMOUS_ID).alias("segment_id"),
            pl.lit(ANONYMOUS_NAME).alias("segment_name"))], how="diagonal_relaxed")
    total_rev = float(f["revenue_lifetime"].sum()) or 1.0
    profiles = (
        f.group_by("segment_id", "segment_name")
        .agg(
            pl.len().alias("customers"),
            pl.col("revenue_lifetime").sum().alias("revenue"),
            pl.col("orders_lifetime").median().alias("median_orders"),
            pl.col("recency_days").median().alias("median_recency_days"),
            pl.col("avg_order_value").median().alias("median_aov"),
        )
        .with_columns(
            (pl.col("customers") / max(f.height, 1)).alias("share_customers"),
            (pl.col("revenue") / total_rev).alias("share_revenue"),
            pl.lit(features["snapshot_month"].first(), dtype=pl.Date).alias("snapshot_month"),
        )
        .sort("segment_id")
    )
    sil = scores.get(k, float("nan"))
    return Segmentation(membership=membership, profiles=profiles, k=k, silhouette=sil, k_scores=scores)
