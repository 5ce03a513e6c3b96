"""Segment schemes: RFM scores and map, rules, lifecycle, stable clusters, outcomes, exports."""

import datetime as dt

import numpy as np
import polars as pl
import pytest

from segpipe.clustering import fit_cluster_model
from segpipe.config import ClusteringConfig, ConfigError, LifecycleConfig, RfmConfig, RuleSegment, SegmentsConfig
from segpipe.features import FEATURE_SCHEMA
from segpipe.schemes import lifecycle_stage, quintile_score, rule_segments, score_rfm
from segpipe.segments import activation_export, build_membership, build_outcomes, build_profiles


def test_quintile_scores_ties_and_direction():
    s = pl.DataFrame({"v": [1.0, 2.0, 2.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, None]})
    up = s.select(quintile_score(pl.col("v"))).to_series().to_list()
    # 1 + floor(5 * (rank_min - 1) / n): the three 2.0 share the score of their lowest rank (1), and
    # the score 2 is skipped because the tie took its place
    assert up == [1, 1, 1, 1, 3, 3, 4, 4, 5, 5, None]
    down = s.select(quintile_score(pl.col("v"), higher_is_better=False)).to_series().to_list()
    assert down[-2] == 1 and down[0] == 5


def test_rfm_on_a_hand_made_frame():
    feats = pl.DataFrame({
        "customer_id": ["a", "b", "c", "d", "e", "n"],
        "recency_days": [1.0, 5.0, 40.0, 200.0, 300.0, None],
        "orders_lifetime": [20, 12, 1, 6, 1, 0],
        "revenue_lifetime": [900.0, 500.0, 20.0, 300.0, 15.0, 0.0],
    })
    r = score_rfm(feats, RfmConfig()).sort("customer_id")
    got = {row["customer_id"]: (row["r_score"], row["f_score"], row["m_score"], row["rfm_segment"]) for row in r.iter_rows(named=True)}
    assert got["a"] == (5, 5, 5, "Champions")
    assert got["b"] == (4, 4, 4, "Loyal Customers")
    assert got["c"] == (3, 1, 2, "About To Sleep")          # one order (tied with e: both F=1)
    assert got["d"] == (2, 3, 3, "At Risk")
    assert got["e"] == (1, 1, 1, "Lost")
    assert got["n"] == (None, None, None, "No purchases yet")
    assert r.filter(pl.col("customer_id") == "a")["rfm_reason"].item().startswith("R5 F5 M5")


def test_default_rfm_map_covers_every_score_pair():
    cfg = RfmConfig()
    for r in range(1, 6):
        for f in range(1, 6):
            assert any(rule.bounds("r")[0] <= r <= rule.bounds("r")[1] and rule.bounds("f")[0] <= f <= rule.bounds("f")[1]
                       for rule in cfg.segment_map), (r, f)
    assert {rule.name for rule in cfg.segment_map} == {
        "Champions", "Loyal Customers", "Potential Loyalist", "New Customers", "Promising", "Need Attention",
        "About To Sleep", "At Risk", "Can't Lose Them", "Hibernating", "Lost"}


def test_rule_segments_first_match_and_errors():
    feats = pl.DataFrame({"customer_id": ["a", "b", "c"], "pricing_views_7d": [5, 0, 4], "orders_30d": [0, 0, 2]})
    rules = [RuleSegment(name="High-intent visitors", where="pricing_views_7d >= 3 AND orders_30d = 0"),
             RuleSegment(name="Buyers", where="orders_30d > 0")]
    out = rule_segments(feats, rules, default="Unsegmented").sort("customer_id")
    assert out["rule_segment"].to_list() == ["High-intent visitors", "Unsegmented", "Buyers"]
    assert out["rule_reason"][0] == "matched: pricing_views_7d >= 3 AND orders_30d = 0"
    with pytest.raises(ConfigError, match=r"segments.rules\['Bad'\]: unknown feature column\(s\) \['pricing_views'\]"):
        rule_segments(feats, [RuleSegment(name="Bad", where="pricing_views > 1")], default="x")
    with pytest.raises(ConfigError, match=r"segments.rules\['Broken'\]: cannot parse"):
        rule_segments(feats, [RuleSegment(name="Broken", where="orders_30d >>> AND")], default="x")


def test_lifecycle_stages():
    feats = pl.DataFrame({
        "customer_id": list("abcdefg"),
        "days_since_last_activity": [400.0, 70.0, 3.0, 3.0, 3.0, 3.0, 3.0],
        "identity": ["customer", "customer", "anonymous", "customer", "customer", "customer", "contact"],
        "expansion": [False, False, False, True, False, False, False],
        "regular_use": [False, False, False, False, True, False, False],
        "repeat_buyer": [True, True, False, True, False, True, False],
        "recency_days": [400.0, 70.0, None, 3.0, 90.0, 200.0, None],  # f: a repeat buyer, but long ago
        "first_key_action_date": [dt.date(2024, 1, 1)] * 6 + [None],
    })
    out = lifecycle_stage(feats, LifecycleConfig()).sort("customer_id")
    assert out["lifecycle_stage"].to_list() == ["churned", "lapsed", "awareness", "expansion", "retention", "activation", "consideration"]


def _blobs(seed: int, month: dt.date, shift: float = 0.0) -> pl.DataFrame:
    """Three well separated behaviors: big spenders, app users, email readers."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(300):
        kind = i % 3
        rows.append({
            "customer_id": f"c{i:04d}", "snapshot_month": month, "identity": "customer",
            "orders_365d": [30, 0, 0][kind] * (1 + shift) + rng.normal(0, 1) ** 2,
            "app_days_30d": [2, 25, 0][kind] + abs(rng.normal(0, 1)),
            "email_open_rate_90d": [0.1, 0.0, 0.9][kind],
            "revenue_lifetime": [3000.0, 10.0, 0.0][kind],
        })
    return pl.DataFrame(rows)


CFG = ClusteringConfig(features=["orders_365d", "app_days_30d", "email_open_rate_90d"], k_min=2, k_max=5,
                       min_segment_share=0.05)


def test_cluster_ids_are_stable_across_refits():
    jan = fit_cluster_model(_blobs(1, dt.date(2025, 1, 1)), CFG)
    assert jan.frame.height == 3 and jan.frame["cluster_id"].to_list() == ["C1", "C2", "C3"]
    again = fit_cluster_model(_blobs(1, dt.date(2025, 1, 1)), CFG)
    assert again.frame.drop("fitted_on").equals(jan.frame.drop("fitted_on"))
    # a month later, slightly different data and another seed: the same behaviors keep their ids and names
    feb = fit_cluster_model(_blobs(2, dt.date(2025, 2, 1), shift=0.1), CFG, previous=jan)
    def by_kind(model, frame):
        ids, _ = model.assign(frame)
        return dict(zip(frame["customer_id"].head(3), ids.head(3)))
    assert by_kind(feb, _blobs(2, dt.date(2025, 2, 1))) == by_kind(jan, _blobs(1, dt.date(2025, 1, 1)))
    assert dict(zip(feb.frame["cluster_id"], feb.frame["cluster_name"])) == dict(zip(jan.frame["cluster_id"], jan.frame["cluster_name"]))


def test_a_new_behavior_gets_a_new_id():
    jan = fit_cluster_model(_blobs(1, dt.date(2025, 1, 1)), CFG)
    extra = pl.DataFrame([{"customer_id": f"n{i}", "snapshot_month": dt.date(2025, 2, 1), "identity": "customer",
                           "orders_365d": 0.0, "app_days_30d": 0.0, "email_open_rate_90d": 0.0, "revenue_lifetime": 0.0}
                          for i in range(100)])
    feb = fit_cluster_model(pl.concat([_blobs(2, dt.date(2025, 2, 1)), extra]), CFG, previous=jan)
    assert set(jan.frame["cluster_id"]) <= set(feb.frame["cluster_id"])
    assert "C4" in feb.frame["cluster_id"].to_list()


def test_cluster_names_can_be_overridden():
    cfg = CFG.model_copy(update={"names": {"C2": "Product-led fans"}})
    model = fit_cluster_model(_blobs(1, dt.date(2025, 1, 1)), cfg)
    assert dict(zip(model.frame["cluster_id"], model.frame["cluster_name"]))["C2"] == "Product-led fans"


def _features(n: int = 6) -> pl.DataFrame:
    cols = {c: t for c, t in FEATURE_SCHEMA.items()}
    base = pl.DataFrame(schema=cols)
    rows = pl.DataFrame({
        "customer_id": [f"c{i}" for i in range(n)], "identity": ["customer"] * (n - 1) + ["anonymous"],
        "snapshot_month": [dt.date(2025, 6, 1)] * n,
        "recency_days": [1.0, 10.0, 50.0, 200.0, None, None], "orders_lifetime": [9, 5, 2, 1, 0, 0],
        "revenue_lifetime": [900.0, 200.0, 50.0, 10.0, 0.0, 0.0], "revenue_365d": [900.0, 200.0, 50.0, 10.0, 0.0, 0.0],
        "days_since_last_activity": [1.0, 10.0, 50.0, 200.0, 5.0, 5.0], "expansion": [True] + [False] * (n - 1),
        "regular_use": [False] * n, "repeat_buyer": [True, True, True, False, False, False],
        "first_key_action_date": [dt.date(2025, 1, 1)] * 4 + [None, None],
    })
    return pl.concat([base, rows], how="diagonal_relaxed")


def test_membership_profiles_outcomes_and_export():
    feats = _features()
    cfg = SegmentsConfig(rules=[RuleSegment(name="Whales", where="revenue_lifetime > 500")])
    mem = build_membership(feats, None, cfg)
    assert mem.height == feats.height and mem["customer_id"].is_unique().all()
    assert mem.filter(pl.col("customer_id") == "c5")["cluster_name"].item() == "Anonymous visitors"
    assert mem.filter(pl.col("customer_id") == "c0")["rule_segment"].item() == "Whales"
    # with only four buyers the best recency rank is 1 + floor(5 * 3 / 4) = 4: c0 is R4 F4
    assert mem.filter(pl.col("customer_id") == "c0")["rfm_segment"].item() == "Loyal Customers"
    prof = build_profiles(mem, feats, {"Loyal Customers": "VIP offer"})
    rfm = prof.filter(pl.col("scheme") == "rfm")
    assert rfm["customers"].sum() == 6 and abs(rfm["share_customers"].sum() - 1) < 1e-12
    assert rfm.filter(pl.col("segment") == "Loyal Customers")["playbook_action"].item() == "VIP offer"
    assert abs(rfm["share_revenue"].sum() - 1) < 1e-12
    nxt = pl.DataFrame({"customer_id": ["c0", "c1"], "orders": [2, 0], "revenue": [50.0, 0.0], "activity": [3, 1]},
                       schema_overrides={"orders": pl.UInt32, "activity": pl.UInt32})
    out = build_outcomes(mem, nxt, churned_after_days=180)
    whales = out.filter((pl.col("scheme") == "rules") & (pl.col("segment") == "Whales")).row(0, named=True)
    assert (whales["ordered_next"], whales["active_next"], whales["revenue_next_per_customer"]) == (1.0, 1.0, 50.0)
    assert whales["ordered_lift"] == pytest.approx(1.0 / (1 / 5))  # 1 of the 5 known customers ordered
    assert build_outcomes(mem, None, churned_after_days=180).height == 0
    exp = activation_export(mem, "rfm", {"Champions": "VIP offer"})
    assert exp.columns == ["customer_id", "segment", "action"] and exp.height == 6


def test_rfm_thresholds_reproduce_quintiles_and_then_stay_fixed():
    """The quarterly refit stores the quintile boundaries; on the fitted snapshot they give the same
    scores (ties included), a month later they score against the old boundaries."""
    from segpipe.schemes import rfm_thresholds

    feats = pl.DataFrame({
        "customer_id": [f"c{i}" for i in range(11)],
        "recency_days": [1.0, 2.0, 2.0, 2.0, 9.0, 30.0, 31.0, 60.0, 90.0, 200.0, None],
        "orders_lifetime": [9, 1, 1, 1, 2, 3, 3, 4, 6, 1, 0],
        "revenue_lifetime": [90.0, 5.0, 5.0, 6.0, 20.0, 30.0, 31.0, 40.0, 60.0, 7.0, 0.0],
    })
    cfg = RfmConfig()
    t = rfm_thresholds(feats, cfg)
    assert score_rfm(feats, cfg, t).equals(score_rfm(feats, cfg))
    # R on negated days over the 10 buyers: score = 1 + floor(5 * (rank_min - 1) / 10), the three
    # tied 2.0 share rank 7 (score 4), so the smallest values scoring 2..5 are -60, -30, -2, -1
    assert t["r"] == [-60.0, -30.0, -2.0, -1.0]
    later = feats.with_columns(pl.col("recency_days") + 30)  # nobody ordered for a month
    fixed = score_rfm(later, cfg, t)
    assert fixed["r_score"].drop_nulls().to_list() == [2, 2, 2, 2, 2, 2, 1, 1, 1, 1]  # -31..-60 reach only -60
    assert score_rfm(later, cfg)["r_score"].drop_nulls().max() == 5  # re-ranked quintiles hide the lapse


def test_k_means_fits_on_a_seeded_sample_and_assigns_everyone():
    """Above clustering.fit_sample customers, k and the centroids come from a seeded sample (the fit's
    cost stays bounded at millions of customers) and every customer is assigned: the clusters agree
    with a fit on all rows."""
    from sklearn.metrics import adjusted_rand_score

    frame = pl.concat([_blobs(seed, dt.date(2025, 1, 1)).with_columns(pl.col("customer_id") + f"-{seed}")
                       for seed in range(10)])  # 3,000 customers
    full = fit_cluster_model(frame, CFG)
    sampled_cfg = CFG.model_copy(update={"fit_sample": 1_000})
    sampled = fit_cluster_model(frame, sampled_cfg)
    assert sampled.frame.height == full.frame.height == 3
    assert not np.allclose(sampled.centroids(), full.centroids())  # fitted on other rows
    ids_full, _ = full.assign(frame)
    ids_sampled, _ = sampled.assign(frame)
    assert ids_sampled.len() == frame.height and ids_sampled.null_count() == 0
    assert adjusted_rand_score(ids_full.to_list(), ids_sampled.to_list()) > 0.95
    again = fit_cluster_model(frame, sampled_cfg)
    assert again.frame.drop("fitted_on").equals(sampled.frame.drop("fitted_on"))


def test_nearest_center_in_chunks_equals_all_rows_at_once():
    """clustering.nearest works a chunk of rows at a time (memory): same indices and distances as
    the full rows x centers x features computation, across chunk edges."""
    import numpy as np

    from segpipe.clustering import nearest

    rng = np.random.default_rng(4)
    x, centers = rng.normal(size=(1_001, 5)), rng.normal(size=(7, 5))
    full = np.linalg.norm(x[:, None, :] - centers[None, :, :], axis=2)
    for chunk in (1, 64, 1_000, 5_000):
        idx, dist = nearest(x, centers, chunk=chunk)
        assert (idx == full.argmin(axis=1)).all()
        assert np.array_equal(dist, full.min(axis=1))


def test_profiles_and_outcomes_from_scans_do_not_depend_on_row_order(tmp_path):
    """The segment readers take scans (the assets pass them) and give the same table as from
    frames, whatever the order of the rows: sums of money are exact (cents)."""
    rng = np.random.default_rng(7)
    n = 3_000
    feats = pl.DataFrame({
        "customer_id": [f"c{i:05d}" for i in range(n)],
        "recency_days": rng.integers(0, 400, n).astype(float),
        "orders_365d": rng.integers(0, 9, n), "revenue_365d": rng.integers(0, 100_000, n) / 100,
        "avg_order_value": rng.random(n) * 80, "active_days_30d": rng.integers(0, 30, n),
        "days_since_last_activity": rng.integers(0, 400, n),
    })
    mem = pl.DataFrame({
        "customer_id": feats["customer_id"], "snapshot_month": [dt.date(2025, 3, 1)] * n,
        "identity": rng.choice(["customer", "contact", "anonymous"], n),
        **{col: rng.choice([f"{scheme}-{k}" for k in range(5)], n) for scheme, col in
           (("rfm", "rfm_segment"), ("rules", "rule_segment"), ("lifecycle", "lifecycle_stage"),
            ("cluster", "cluster_name"))},
    })
    nxt = pl.DataFrame({"customer_id": feats["customer_id"][::3], "orders": rng.integers(0, 3, 1_000),
                        "activity": rng.integers(0, 5, 1_000), "revenue": rng.integers(0, 50_000, 1_000) / 100})
    for name, frame in {"mem": mem, "feats": feats, "nxt": nxt}.items():
        frame.write_parquet(tmp_path / f"{name}.parquet")
    scan = {name: pl.scan_parquet(tmp_path / f"{name}.parquet") for name in ("mem", "feats", "nxt")}

    def shuffled(frame: pl.DataFrame, seed: int) -> pl.DataFrame:
        return frame.sample(fraction=1.0, shuffle=True, seed=seed)

    prof = build_profiles(mem, feats, {"rfm-0": "Call"})
    assert prof.equals(build_profiles(scan["mem"], scan["feats"], {"rfm-0": "Call"}))
    assert prof.equals(build_profiles(shuffled(mem, 1), shuffled(feats, 2), {"rfm-0": "Call"}))
    rfm0 = mem.filter(pl.col("rfm_segment") == "rfm-0").join(feats, on="customer_id")
    row = prof.filter((pl.col("scheme") == "rfm") & (pl.col("segment") == "rfm-0")).row(0, named=True)
    assert row["customers"] == rfm0.height and row["playbook_action"] == "Call"
    assert row["median_recency_days"] == rfm0["recency_days"].median()
    assert row["share_revenue"] == pytest.approx(rfm0["revenue_365d"].sum() / feats["revenue_365d"].sum(), rel=1e-12)

    out = build_outcomes(mem, nxt, churned_after_days=180, features_next=feats)
    assert out.equals(build_outcomes(scan["mem"], scan["nxt"], churned_after_days=180, features_next=scan["feats"]))
    assert out.equals(build_outcomes(shuffled(mem, 3), shuffled(nxt, 4), churned_after_days=180,
                                     features_next=shuffled(feats, 5)))
    assert out.filter(pl.col("scheme") == "cluster")["customers"].sum() == n
    # by hand: the lift of one segment against the known (non-anonymous) customers
    wide = mem.join(nxt, on="customer_id", how="left").with_columns(pl.col("orders").fill_null(0))
    base = (wide.filter(pl.col("identity") != "anonymous")["orders"] > 0).mean()
    seg = wide.filter(pl.col("rule_segment") == "rules-2")
    row = out.filter((pl.col("scheme") == "rules") & (pl.col("segment") == "rules-2")).row(0, named=True)
    assert row["ordered_next"] == pytest.approx((seg["orders"] > 0).mean())
    assert row["ordered_lift"] == pytest.approx((seg["orders"] > 0).mean() / base)
    assert row["revenue_next_per_customer"] == pytest.approx(seg["revenue"].fill_null(0).sum() / seg.height)
    churned = seg.join(feats, on="customer_id")["days_since_last_activity"] >= 180
    assert row["churned_next"] == pytest.approx(churned.mean())
