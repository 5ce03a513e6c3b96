"""Drift statistics against hand-computed values and scipy."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import wasserstein_distance

from segpipe.drift import (
    bin_shares,
    categorical_drift,
    js_distance,
    normalized_wasserstein,
    numeric_drift,
    psi,
    quantile_edges,
    wasserstein_1d,
)


def test_psi_by_hand():
    r, c = [0.5, 0.5], [0.25, 0.75]
    expected = (0.25 - 0.5) * math.log(0.25 / 0.5) + (0.75 - 0.5) * math.log(0.75 / 0.5)
    assert psi(r, c) == pytest.approx(expected)
    assert psi(r, r) == 0.0


def test_bins_are_left_closed_on_reference_quantiles():
    ref = np.arange(1, 11, dtype=float)  # 1..10
    edges = quantile_edges(ref, bins=2)
    assert edges.tolist() == [5.5]
    counts, shares = bin_shares([5.5, 5.0, 6.0], edges)
    assert counts.tolist() == [1.0, 2.0] and shares.tolist() == pytest.approx([1 / 3, 2 / 3])


@pytest.mark.parametrize("case", ["counts", "continuous", "sizes", "constant", "disjoint"])
def test_wasserstein_over_distinct_values_equals_scipys(case):
    rng = np.random.default_rng(7)
    u, v = {
        "counts": (rng.poisson(2.0, 5000).astype(float), rng.poisson(2.4, 7000).astype(float)),
        "continuous": (rng.normal(0, 1, 3000), rng.normal(0.3, 1.2, 4000)),
        "sizes": (rng.exponential(5, 11), rng.exponential(6, 1000).round(1)),
        "constant": (np.full(10, 3.0), np.full(4, 3.0)),
        "disjoint": (np.array([1.0, 1.0, 2.0]), np.array([10.0, 12.0])),
    }[case]
    assert wasserstein_1d(u, v) == pytest.approx(wasserstein_distance(u, v), rel=1e-12, abs=1e-12)
    assert wasserstein_1d(v, u) == pytest.approx(wasserstein_distance(u, v), rel=1e-12, abs=1e-12)


def test_wasserstein_normalised_by_reference_std():
    ref = np.array([0.0, 1.0, 2.0, 3.0])
    cur = ref + 2.0
    assert normalized_wasserstein(ref, cur) == pytest.approx(wasserstein_distance(ref, cur) / ref.std())
    assert normalized_wasserstein(ref, cur) == pytest.approx(2.0 / ref.std())


def test_js_distance_by_hand():
    assert js_distance(["a", "a"], ["a", "a"]) == 0.0
    assert js_distance(["a"], ["b"]) == pytest.approx(1.0)
    # P = (1/2, 1/2), Q = (1, 0): JS divergence (base 2) = 1 - 0.75*log2(1/0.75)... computed directly
    p, q = np.array([0.5, 0.5]), np.array([1.0, 0.0])
    m = (p + q) / 2
    kl = lambda a, b: sum(x * math.log2(x / y) for x, y in zip(a, b) if x > 0)  # noqa: E731
    assert js_distance(["a", "b"], ["a", "a"]) == pytest.approx(math.sqrt((kl(p, m) + kl(q, m)) / 2))
    # the feature table passes Polars Series (counted by Polars): the same figures as lists
    ref, cur = ["heavy", "light", "light", "none"], ["light", "light", "medium"]
    assert categorical_drift(pl.Series(ref), pl.Series(cur)) == categorical_drift(ref, cur)
    psi_, js, p_value = categorical_drift(ref, cur)
    assert js == js_distance(ref, cur) and psi_ > 0 and 0 < p_value <= 1


def test_significance_separates_noise_from_shift():
    rng = np.random.default_rng(0)
    ref = rng.normal(0, 1, 20_000)
    same = numeric_drift(ref, rng.normal(0, 1, 20_000))
    shifted = numeric_drift(ref, rng.normal(0.5, 1, 20_000))
    tiny = numeric_drift(ref, rng.normal(0.5, 1, 15))
    assert same.psi < 0.01 and same.p_value > 0.01
    assert shifted.psi > 0.2 and shifted.p_value < 1e-6 and shifted.wasserstein == pytest.approx(0.5, abs=0.05)
    assert tiny.p_value > 0.001  # a shift measured on 15 customers is not significant


@settings(max_examples=40, deadline=None)
@given(st.lists(st.floats(min_value=-1e6, max_value=1e6, allow_nan=False), min_size=1, max_size=200),
       st.lists(st.floats(min_value=-1e6, max_value=1e6, allow_nan=False), min_size=1, max_size=200))
def test_psi_is_zero_for_identical_and_never_negative(ref, cur):
    edges = quantile_edges(np.array(ref))
    _, r = bin_shares(ref, edges)
    _, c = bin_shares(cur, edges)
    assert psi(r, r) == pytest.approx(0.0, abs=1e-12)
    assert psi(r, c) >= -1e-12


# -- tables the drift assets publish ------------------------------------------------------------
import datetime as dt  # noqa: E402

import polars as pl  # noqa: E402

from segpipe.config import DriftConfig  # noqa: E402
from segpipe.drift import (  # noqa: E402
    ENTERED,
    EXITED,
    centroid_shift,
    drift_status,
    feature_drift,
    migration_matrix,
    segment_shift,
    shift_psi,
    stay_rates,
)


def _members(month: dt.date, rows: dict[str, str]) -> pl.DataFrame:
    """Membership with the same label in every scheme (enough for the tables)."""
    ids = sorted(rows)
    labels = [rows[i] for i in ids]
    return pl.DataFrame({"customer_id": ids, "snapshot_month": [month] * len(ids), "rfm_segment": labels,
                         "rule_segment": labels, "lifecycle_stage": labels, "cluster_name": labels})


def test_migration_matrix_on_a_hand_made_pair_of_months():
    may = _members(dt.date(2025, 5, 1), {"a": "Champions", "b": "Champions", "c": "At Risk", "d": "At Risk", "x": "Lost"})
    jun = _members(dt.date(2025, 6, 1), {"a": "Champions", "b": "At Risk", "c": "At Risk", "d": "Lost", "n": "New"})
    m = migration_matrix(may, jun).filter(pl.col("scheme") == "rfm")
    got = {(r["from_segment"], r["to_segment"]): (r["customers"], r["row_share"]) for r in m.iter_rows(named=True)}
    assert got == {
        ("Champions", "Champions"): (1, 0.5), ("Champions", "At Risk"): (1, 0.5),
        ("At Risk", "At Risk"): (1, 0.5), ("At Risk", "Lost"): (1, 0.5),
        ("Lost", EXITED): (1, 1.0), (ENTERED, "New"): (1, 1.0),
    }
    assert m["snapshot_month"].unique().to_list() == [dt.date(2025, 6, 1)]
    # stayed: a (Champions) and c (At Risk) of the 4 customers present in both months
    assert stay_rates(migration_matrix(may, jun))["rfm"] == 0.5
    # the first month: everybody entered
    first = migration_matrix(None, may).filter(pl.col("scheme") == "rfm")
    assert set(first["from_segment"]) == {ENTERED} and first["customers"].sum() == 5


def test_segment_shift_shares_and_psi():
    prev = _members(dt.date(2025, 5, 1), {"a": "X", "b": "X", "c": "Y", "d": "Y"})
    cur = _members(dt.date(2025, 6, 1), {"a": "X", "b": "Y", "c": "Y", "d": "Y"})
    t = segment_shift(cur, prev, None).filter(pl.col("scheme") == "rfm")
    assert t.select("segment", "customers", "share", "share_previous", "change_previous").rows() == [
        ("Y", 3, 0.75, 0.5, 0.25), ("X", 1, 0.25, 0.5, -0.25)]
    assert t["share_reference"].null_count() == 2
    expected = (0.75 - 0.5) * math.log(0.75 / 0.5) + (0.25 - 0.5) * math.log(0.25 / 0.5)
    assert shift_psi(t, "share_previous")["rfm"] == pytest.approx(expected)
    assert shift_psi(t, "share_reference")["rfm"] is None
    assert shift_psi(segment_shift(cur, cur, cur), "share_reference")["rfm"] == 0.0


def test_shift_and_migration_from_parquet_scans_equal_the_frames(tmp_path):
    """The drift assets pass scans of the membership months: counted a scheme column at a time."""
    may = _members(dt.date(2025, 5, 1), {"a": "Champions", "b": "Champions", "c": "At Risk", "x": "Lost"})
    jun = _members(dt.date(2025, 6, 1), {"a": "Champions", "b": "At Risk", "c": None, "n": "New"})
    may.write_parquet(tmp_path / "may.parquet")
    jun.write_parquet(tmp_path / "jun.parquet")
    may_scan, jun_scan = pl.scan_parquet(tmp_path / "may.parquet"), pl.scan_parquet(tmp_path / "jun.parquet")
    assert migration_matrix(may_scan, jun_scan).equals(migration_matrix(may, jun))
    assert migration_matrix(None, jun_scan).equals(migration_matrix(None, jun))
    assert segment_shift(jun_scan, may_scan, None).equals(segment_shift(jun, may, None))
    assert segment_shift(jun_scan, may_scan.clear(), may_scan)["share_previous"].null_count() > 0
    # c has no rfm label in June: counted under the missing label, not dropped
    assert migration_matrix(may_scan, jun_scan).filter(pl.col("scheme") == "rfm")["customers"].sum() == 5


def _feats(month: dt.date, values: np.ndarray, cats: list[str]) -> pl.DataFrame:
    return pl.DataFrame({"customer_id": [f"c{i}" for i in range(len(values))], "snapshot_month": [month] * len(values),
                         "identity": ["customer"] * len(values), "x": values, "tier": cats})


def test_feature_drift_flags_a_shift_not_noise():
    rng = np.random.default_rng(3)
    cfg = DriftConfig()
    ref = _feats(dt.date(2025, 1, 1), rng.normal(0, 1, 5000), ["a"] * 2500 + ["b"] * 2500)
    same = _feats(dt.date(2025, 2, 1), rng.normal(0, 1, 5000), ["a"] * 2480 + ["b"] * 2520)
    moved = _feats(dt.date(2025, 2, 1), rng.normal(0.6, 1, 5000), ["a"] * 1000 + ["b"] * 4000)
    quiet = feature_drift(same, ref, ["x"], ["tier"], cfg)
    assert not quiet["drifted"].any() and set(quiet["psi_band"]) == {"ok"}
    loud = feature_drift(moved, ref, ["x"], ["tier"], cfg)
    row = {r["feature"]: r for r in loud.iter_rows(named=True)}
    assert row["x"]["drifted"] and row["x"]["wasserstein"] == pytest.approx(0.6, abs=0.06)
    assert row["x"]["psi_band"] == "alert"
    assert row["tier"]["drifted"] and row["tier"]["js"] > 0.1 and row["tier"]["kind"] == "categorical"
    status = drift_status(loud.with_columns(pl.lit("previous_month").alias("comparison")), cfg)
    assert status["previous_month"] == {"drift_share": 1.0, "drifted": ["x", "tier"], "status": "alert"}
    # 15 customers moved just as far: not significant, so not drifted
    few = feature_drift(moved.head(15), ref, ["x"], [], cfg)
    assert not few["drifted"].any() and few["psi_band"].to_list() == ["ok"]


def test_centroid_shift_in_scaled_units():
    from segpipe.clustering import fit_cluster_model
    from segpipe.config import ClusteringConfig

    rng = np.random.default_rng(5)
    n = 600
    base = pl.DataFrame({
        "customer_id": [f"c{i:04d}" for i in range(n)], "snapshot_month": [dt.date(2025, 3, 1)] * n,
        "identity": ["customer"] * n, "revenue_lifetime": [0.0] * n,
        "orders_365d": np.where(np.arange(n) % 2 == 0, 30.0, 0.0) + rng.normal(0, 0.1, n) ** 2,
        "app_days_30d": np.where(np.arange(n) % 2 == 0, 0.0, 20.0) + np.abs(rng.normal(0, 0.1, n)),
    })
    model = fit_cluster_model(base, ClusteringConfig(features=["orders_365d", "app_days_30d"], k_min=2, k_max=3,
                                                     min_segment_share=0.1))
    cfg = DriftConfig()
    at_fit = centroid_shift(base, model, cfg)
    assert at_fit["shift"].max() < 1e-6 and set(at_fit["level"]) == {"ok"}
    assert at_fit.filter(pl.col("cluster_id") == "(all)")["customers"].item() == n
    later = base.with_columns(pl.col("app_days_30d") * 8)  # app users use the app 8 times as much
    shifted = {r["cluster_name"]: r for r in centroid_shift(later, model, cfg).iter_rows(named=True)}
    app = shifted["Highly engaged app users"]
    # the app users' mean moves by log1p(~160) - log1p(~20) on the app-days axis, over the scaler's scale
    users = base.filter(pl.col("app_days_30d") > 1)["app_days_30d"].to_numpy()
    move = np.log1p(users * 8).mean() - np.log1p(users).mean()
    scale = model.frame["scale"][0][1]
    assert app["shift"] == pytest.approx(abs(move) / scale, rel=0.05) and app["customers"] == n // 2
    assert app["level"] == "warn" and cfg.centroid_warn <= app["shift"] < cfg.centroid_alert
    assert centroid_shift(later, model, cfg.model_copy(update={"centroid_alert": 0.6}))["level"].to_list().count("alert") == 1
