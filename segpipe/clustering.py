"""Behavioral clusters: k-means with automatic k, stable identities across refits, generated names.

The fitted model is plain data (a Polars frame, one row per cluster) so it is stored in the lake
like every other asset and read by any tool: feature names, the log1p + robust-scaler parameters,
the centroid in scaled units, the stable cluster id and its name.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl

from segpipe.config import ClusteringConfig

MODEL_SCHEMA: dict[str, pl.DataType] = {
    "cluster_id": pl.String(), "cluster_name": pl.String(), "fitted_on": pl.Date(), "k": pl.Int32(),
    "silhouette": pl.Float64(), "size_share": pl.Float64(), "features": pl.List(pl.String()),
    "center": pl.List(pl.Float64()), "scale": pl.List(pl.Float64()), "centroid": pl.List(pl.Float64()),
    "profile": pl.List(pl.Float64()),
    "rfm_thresholds": pl.List(pl.Float64()),
}
ANONYMOUS_ID, ANONYMOUS_NAME = "A0", "Anonymous visitors"


RECENCY_COLUMNS = ("recency_days", "recency")


def null_fills(features: pl.DataFrame | pl.LazyFrame, columns: list[str]) -> dict[str, float]:
    """What :func:`feature_matrix` puts for a missing recency (no order): 30 days beyond the
    largest recency of ``features``, i.e. farther than any buyer of the snapshot. Computed over
    the whole snapshot even when its customers are assigned in buckets (reads one column)."""
    rec = [c for c in columns if c in RECENCY_COLUMNS]
    if not rec:
        return {}
    row = features.lazy().select(
        (pl.col(c).cast(pl.Float64).max().fill_null(0.0) + 30.0).alias(c) for c in rec).collect().row(0)
    return dict(zip(rec, row))


def feature_matrix(features: pl.DataFrame, columns: list[str], fills: dict[str, float] | None = None) -> np.ndarray:
    """Clustering inputs: nulls as 0 (recency: farther than any buyer, see :func:`null_fills`; of
    ``features`` unless ``fills`` are given), negatives clipped, log1p."""
    fills = null_fills(features, columns) if fills is None else fills
    exprs = []
    for c in columns:
        e = pl.col(c).cast(pl.Float64)
        if c in RECENCY_COLUMNS:
            e = e.fill_null(fills[c])
        exprs.append(e.fill_null(0.0).clip(lower_bound=0.0))
    return np.log1p(features.select(exprs).to_numpy()) if exprs else np.zeros((features.height, 0))


def nearest(x: np.ndarray, centers: np.ndarray, chunk: int = 65_536) -> tuple[np.ndarray, np.ndarray]:
    """Index of each row's nearest center and the (Euclidean) distance to it, ``chunk`` rows at a
    time: the rows x centers x features differences of millions of rows would take gigabytes."""
    idx = np.empty(x.shape[0], dtype=np.int64)
    dist = np.empty(x.shape[0], dtype=np.float64)
    for start in range(0, x.shape[0], chunk):
        d = np.linalg.norm(x[start:start + chunk, None, :] - centers[None, :, :], axis=2)
        idx[start:start + chunk] = d.argmin(axis=1)
        dist[start:start + chunk] = d[np.arange(d.shape[0]), idx[start:start + chunk]]
    return idx, dist


def choose_k(x: np.ndarray, cfg: ClusteringConfig) -> tuple[int, dict[int, float], np.ndarray]:
    """k in [k_min, k_max] with the best sampled silhouette among ks whose smallest cluster holds
    at least ``min_segment_share`` (cost: one k-means per k on at most ``fit_sample`` rows plus a
    silhouette on at most ``silhouette_sample`` of them, whatever the number of customers)."""
    from sklearn.cluster import KMeans  # imported when fitting: steps that only assign start faster
    from sklearn.metrics import silhouette_score

    if x.shape[0] > cfg.fit_sample:
        # a seeded sample of its own, so that below fit_sample the draws (and results) stay as they were
        fit_rows = np.sort(np.random.default_rng(cfg.random_state + 1).choice(x.shape[0], size=cfg.fit_sample,
                                                                                replace=False))
        x = x[fit_rows]
    n = x.shape[0]
    rng = np.random.default_rng(cfg.random_state)
    sample = np.sort(rng.choice(n, size=min(n, cfg.silhouette_sample), replace=False))
    scores: dict[int, float] = {}
    best: tuple[float, int, np.ndarray] | None = None
    fallback: tuple[int, np.ndarray] | None = None
    for k in range(cfg.k_min, min(cfg.k_max, n - 1) + 1):
        km = KMeans(n_clusters=k, n_init=3, random_state=cfg.random_state).fit(x)
        labels = km.labels_
        if fallback is None:
            fallback = (k, km.cluster_centers_)
        if len(np.unique(labels[sample])) < 2:
            continue
        score = round(float(silhouette_score(x[sample], labels[sample])), 4)
        scores[k] = score
        share = np.bincount(labels, minlength=k).min() / n
        if share >= cfg.min_segment_share and (best is None or score > best[0]):
            best = (score, k, km.cluster_centers_)
    if best is None:
        assert fallback is not None
        return fallback[0], scores, fallback[1]
    return best[1], scores, best[2]


def _name(profile: dict[str, float], pop: dict[str, float]) -> str:
    """A short name from a centroid's raw-unit profile compared with the population medians."""
    def high(c: str, factor: float = 1.5) -> bool:
        return c in profile and profile[c] > max(pop.get(c, 0.0) * factor, 0.5)

    buys = profile.get("orders_365d", profile.get("orders_lifetime", 0.0))
    recency = profile.get("days_since_last_activity", profile.get("recency_days", 0.0))
    parts = []
    if recency > 120:
        parts.append("Dormant")
    elif high("app_days_30d") or high("active_days_30d"):
        parts.append("Highly engaged")
    if buys < 0.5:
        what = "app users" if high("app_days_30d") else (
            "browsers" if high("product_views_30d") else ("email readers" if high("email_open_rate_90d", 1.0) else "non-buyers"))
    else:
        freq = "Frequent" if high("orders_365d") else "Occasional"
        value = "high spenders" if high("avg_order_value", 1.2) or high("revenue_365d", 2.0) else "buyers"
        if high("discount_share_365d", 1.2):
            value = "deal seekers"
        if high("orders_share_holiday", 1.2):
            value = "seasonal gift buyers"
        what = f"{freq.lower() if parts else freq} {value}"
    return " ".join([*parts, what]).strip().capitalize() if parts else what[0].upper() + what[1:]


@dataclass(frozen=True)
class ClusterModel:
    frame: pl.DataFrame  # MODEL_SCHEMA rows, one per cluster
    k_scores: dict[int, float] | None = None  # silhouette per k tried (not persisted)

    @property
    def features(self) -> list[str]:
        return list(self.frame["features"][0]) if self.frame.height else []

    def scaled(self, features: pl.DataFrame, fills: dict[str, float] | None = None) -> np.ndarray:
        center = np.array(self.frame["center"][0])
        scale = np.array(self.frame["scale"][0])
        return (feature_matrix(features, self.features, fills) - center) / scale

    def centroids(self) -> np.ndarray:
        return np.vstack(self.frame["centroid"].to_list())

    def assign(self, features: pl.DataFrame, fills: dict[str, float] | None = None) -> tuple[pl.Series, np.ndarray]:
        """Nearest centroid's cluster id per row, and the distance to it (scaled units). ``fills``:
        :func:`null_fills` of the whole snapshot when ``features`` is a part of it (a bucket)."""
        idx, dist = nearest(self.scaled(features, fills), self.centroids())
        return pl.Series("cluster_id", self.frame["cluster_id"].to_numpy()[idx], dtype=pl.String), dist


def fit_cluster_model(
    features: pl.DataFrame, cfg: ClusteringConfig, *, previous: ClusterModel | None = None
) -> ClusterModel:
    """Fit k-means on the snapshot's identified customers and give clusters stable ids.

    Clusters are matched to ``previous``'s by the Hungarian algorithm
    (:func:`scipy.optimize.linear_sum_assignment`) on centroid distances, both expressed in this
    fit's scaled units; a match closer than ``cfg.match_max_distance`` keeps the old id and name,
    other clusters get new ids. Without a previous model, ids follow mean revenue (C1 highest).
    """
    from scipy.optimize import linear_sum_assignment
    from sklearn.preprocessing import RobustScaler

    features = features.sort("customer_id")
    raw = feature_matrix(features, cfg.features)
    scaler = RobustScaler().fit(raw)
    # Zero-inflated features (most customers 0) have no inter-quartile range: fall back to their
    # standard deviation so that they still count, then to 1.
    std = raw.std(axis=0) if raw.size else np.ones(raw.shape[1])
    scale = np.where(scaler.scale_ > 0, scaler.scale_, np.where(std > 0, std, 1.0))
    x = (raw - scaler.center_) / scale
    k, scores, centers = choose_k(x, cfg)
    labels, _ = nearest(x, centers)
    profiles = np.vstack([
        np.expm1(np.median(raw[labels == j], axis=0)) if (labels == j).any() else np.zeros(raw.shape[1])
        for j in range(k)
    ])
    sizes = np.bincount(labels, minlength=k) / max(len(labels), 1)
    revenue = features["revenue_lifetime"].to_numpy() if "revenue_lifetime" in features.columns else np.zeros(len(labels))
    mean_rev = np.array([revenue[labels == j].mean() if (labels == j).any() else 0.0 for j in range(k)])

    ids: list[str | None] = [None] * k
    names: list[str | None] = [None] * k
    if previous is not None and previous.frame.height:
        prev_raw = np.vstack(previous.frame["centroid"].to_list()) * np.array(previous.frame["scale"][0]) + np.array(
            previous.frame["center"][0])
        prev_x = (prev_raw - scaler.center_) / scale
        cost = np.linalg.norm(centers[:, None, :] - prev_x[None, :, :], axis=2)
        rows, cols = linear_sum_assignment(cost)
        for r, c in zip(rows, cols):
            if cost[r, c] <= cfg.match_max_distance:
                ids[r] = previous.frame["cluster_id"][int(c)]
                names[r] = previous.frame["cluster_name"][int(c)]
        used = {int(i[1:]) for i in previous.frame["cluster_id"].to_list() if i[1:].isdigit()}
    else:
        used = set()
    next_id = max(used, default=0) + 1
    for j in sorted(range(k), key=lambda j: (-mean_rev[j], j)):
        if ids[j] is None:
            ids[j] = f"C{next_id}"
            next_id += 1
    pop = dict(zip(cfg.features, np.expm1(np.median(raw, axis=0)).tolist()))
    taken: set[str] = set()
    for j in sorted(range(k), key=lambda j: (-mean_rev[j], j)):
        if ids[j] in cfg.names:
            names[j] = cfg.names[ids[j]]
        elif names[j] is None:
            names[j] = _name(dict(zip(cfg.features, profiles[j].tolist())), pop)
        if names[j] in taken:
            names[j] = f"{names[j]} ({ids[j]})"
        taken.add(names[j])
    sil = scores.get(k, float("nan"))
    fitted_on = features["snapshot_month"][0] if features.height else None
    frame = pl.DataFrame(
        {
            "cluster_id": ids, "cluster_name": names, "fitted_on": [fitted_on] * k, "k": [k] * k,
            "silhouette": [sil] * k, "size_share": sizes.tolist(), "features": [cfg.features] * k,
            "center": [scaler.center_.tolist()] * k, "scale": [scale.tolist()] * k,
            "centroid": centers.tolist(), "profile": profiles.tolist(), "rfm_thresholds": [None] * k,
        },
        schema=MODEL_SCHEMA,
    ).sort("cluster_id")
    return ClusterModel(frame=frame, k_scores=scores)



def adjusted_rand_against(model: ClusterModel, features: pl.DataFrame, labels: pl.DataFrame, column: str,
                          only: list[str] | None = None) -> tuple[float, int]:
    """Adjusted Rand index of the model's clusters on ``features`` against ``labels[column]`` (joined
    on customer_id; restricted to the labels in ``only``), and the number of customers scored."""
    from sklearn.metrics import adjusted_rand_score

    ids, _ = model.assign(features)
    scored = features.select("customer_id").with_columns(ids.alias("__cluster")).join(
        labels.select("customer_id", pl.col(column).cast(pl.String).alias("__label")), on="customer_id", how="inner")
    if only is not None:
        scored = scored.filter(pl.col("__label").is_in(only))
    if scored.height < 2:
        return float("nan"), scored.height
    return float(adjusted_rand_score(scored["__label"].to_list(), scored["__cluster"].to_list())), scored.height
