"""Explainable segment schemes computed from snapshot features: RFM, rules, lifecycle stages.

Every scheme returns one row per customer with a label and a short ``reason`` that says why.
"""

from __future__ import annotations

import polars as pl

from segpipe.config import ConfigError, LifecycleConfig, RfmConfig, RuleSegment

RFM_COLUMNS = {"r_score": pl.Int8, "f_score": pl.Int8, "m_score": pl.Int8, "rfm_segment": pl.String, "rfm_reason": pl.String}


def quintile_score(values: pl.Expr, *, higher_is_better: bool = True) -> pl.Expr:
    """Score 1..5 by quintile of rank among the non-null values.

    Ties share a score: the score is ``1 + floor(5 * (rank_min - 1) / n)`` where ``rank_min`` is
    the smallest rank of the tied group (so a tie never straddles two scores and the lowest
    values always get 1). With ``higher_is_better=False`` the values are negated first (recency:
    fewer days since the last order is better). Nulls stay null.
    """
    v = values if higher_is_better else -values
    n = v.count()
    return (1 + ((v.rank("min") - 1) * 5 / n).floor()).clip(1, 5).cast(pl.Int8)


#: Score dimension -> (input column attribute of RfmConfig, higher is better).
RFM_DIMENSIONS = {"r": ("recency", False), "f": ("frequency", True), "m": ("monetary", True)}
#: Thresholds per dimension: the smallest oriented value (recency negated) scoring 2, 3, 4 and 5
#: (NaN when no buyer reaches the score).
RfmThresholds = dict[str, list[float]]


def rfm_columns(cfg: RfmConfig) -> list[str]:
    """The snapshot columns RFM scoring reads: the buyer test (frequency) and each dimension's."""
    return list(dict.fromkeys([cfg.frequency, *(getattr(cfg, attr) for attr, _ in RFM_DIMENSIONS.values())]))


def _rfm_inputs(features: pl.DataFrame, cfg: RfmConfig) -> pl.DataFrame:
    buyers = pl.col(cfg.frequency) > 0
    return features.select(
        "customer_id",
        *(pl.when(buyers).then(pl.col(getattr(cfg, attr))).alias(f"__{d}") for d, (attr, _) in RFM_DIMENSIONS.items()),
    )


def rfm_thresholds(features: pl.DataFrame, cfg: RfmConfig) -> RfmThresholds:
    """The quintile boundaries of this snapshot's buyers, to score later snapshots with (the
    quarterly refit fixes them, so that scores and segment shares can drift between refits)."""
    inputs = _rfm_inputs(features, cfg)
    out: RfmThresholds = {}
    for d, (_, higher) in RFM_DIMENSIONS.items():
        v = pl.col(f"__{d}").cast(pl.Float64) * (1 if higher else -1)
        scored = inputs.select(v.alias("v"), quintile_score(pl.col(f"__{d}"), higher_is_better=higher).alias("s"))
        out[d] = [float(scored.filter(pl.col("s") >= s)["v"].min() if scored.filter(pl.col("s") >= s).height
                        else float("nan")) for s in range(2, 6)]
    return out


def threshold_score(values: pl.Expr, thresholds: list[float], *, higher_is_better: bool = True) -> pl.Expr:
    """Score 1..5: one plus the number of thresholds the (oriented) value reaches. On the snapshot
    the thresholds came from this equals :func:`quintile_score`, ties included."""
    v = values.cast(pl.Float64) * (1 if higher_is_better else -1)
    score = pl.lit(1, dtype=pl.Int8)
    for t in thresholds:
        if t == t:  # not NaN
            score = score + (v >= t).cast(pl.Int8)
    return pl.when(values.is_not_null()).then(score).cast(pl.Int8)


def score_rfm(features: pl.DataFrame, cfg: RfmConfig, thresholds: RfmThresholds | None = None) -> pl.DataFrame:
    """R, F and M scores over buyers and the RFM segment (first matching rule of the map).

    Scores are quintiles of this snapshot's buyers, or, with ``thresholds`` (from
    :func:`rfm_thresholds` on the model's snapshot), fixed boundaries. Customers who never ordered
    get ``cfg.no_purchase_label`` and null scores.
    """
    inputs = _rfm_inputs(features, cfg)
    scored = inputs.with_columns(
        (threshold_score(pl.col(f"__{d}"), thresholds[d], higher_is_better=higher) if thresholds
         else quintile_score(pl.col(f"__{d}"), higher_is_better=higher)).alias(f"{d}_score")
        for d, (_, higher) in RFM_DIMENSIONS.items()
    )
    label = pl.when(pl.col("r_score").is_null()).then(pl.lit(cfg.no_purchase_label))
    for rule in cfg.segment_map:
        (rlo, rhi), (flo, fhi) = rule.bounds("r"), rule.bounds("f")
        label = label.when(pl.col("r_score").is_between(rlo, rhi) & pl.col("f_score").is_between(flo, fhi)).then(
            pl.lit(rule.name))
    label = label.otherwise(pl.lit("Unmapped"))
    return scored.select(
        "customer_id", "r_score", "f_score", "m_score", label.alias("rfm_segment"),
        pl.when(pl.col("r_score").is_null()).then(pl.lit("never ordered"))
        .otherwise(pl.format("R{} F{} M{} ({}={}, {}={}, {}={})", "r_score", "f_score", "m_score",
                             pl.lit(cfg.recency), pl.col("__r").round(1), pl.lit(cfg.frequency), pl.col("__f"),
                             pl.lit(cfg.monetary), pl.col("__m").round(2)))
        .alias("rfm_reason"),
    ).cast(RFM_COLUMNS)


def compile_rules(rules: list[RuleSegment], columns: list[str] | dict) -> list[tuple[str, pl.Expr]]:
    """Compile rule conditions with ``pl.sql_expr``; unknown columns raise :class:`ConfigError`
    naming the rule and the column."""
    out = []
    known = set(columns)
    for rule in rules:
        try:
            expr = pl.sql_expr(rule.where)
        except Exception as exc:  # polars raises several SQL error types
            raise ConfigError(f"segments.rules[{rule.name!r}]: cannot parse {rule.where!r}: {exc}") from None
        unknown = sorted(set(expr.meta.root_names()) - known)
        if unknown:
            raise ConfigError(
                f"segments.rules[{rule.name!r}]: unknown feature column(s) {unknown} in {rule.where!r}")
        out.append((rule.name, expr))
    return out


def rule_segments(features: pl.DataFrame, rules: list[RuleSegment], *, default: str) -> pl.DataFrame:
    """First matching rule per customer, ``default`` when none matches."""
    compiled = compile_rules(rules, features.schema)
    if not compiled:
        return features.select("customer_id", pl.lit(default).alias("rule_segment"),
                               pl.lit("no rules configured").alias("rule_reason"))
    label = pl.when(pl.lit(False)).then(pl.lit(None, pl.String))
    reason = pl.when(pl.lit(False)).then(pl.lit(None, pl.String))
    for (name, expr), rule in zip(compiled, rules):
        cond = expr.fill_null(False)
        label = label.when(cond).then(pl.lit(name))
        reason = reason.when(cond).then(pl.lit(f"matched: {rule.where}"))
    return features.select(
        "customer_id",
        label.otherwise(pl.lit(default)).alias("rule_segment"),
        reason.otherwise(pl.lit("matched no rule")).alias("rule_reason"),
    )


LIFECYCLE_STAGES = ("awareness", "consideration", "activation", "retention", "expansion", "lapsed", "churned")


def lifecycle_stage(features: pl.DataFrame, cfg: LifecycleConfig) -> pl.DataFrame:
    """Journey stage per customer, checked in this order (first true wins):

    churned (no activity for ``churned_after_days``), lapsed (for ``lapsed_after_days``),
    awareness (anonymous: cookies only), expansion (invites, upgrades or growing spend in 90 days),
    retention (regular use, or a repeat buyer whose last order is within ``lapsed_after_days``), activation (a first key action: order or feature
    use), consideration (known but no key action yet).
    """
    idle = pl.col("days_since_last_activity")
    rules = [
        ("churned", idle >= cfg.churned_after_days, pl.format("no activity for {} days", idle.round(0).cast(pl.Int64))),
        ("lapsed", idle >= cfg.lapsed_after_days, pl.format("no activity for {} days", idle.round(0).cast(pl.Int64))),
        ("awareness", pl.col("identity") == "anonymous", pl.lit("anonymous web visitor")),
        ("expansion", pl.col("expansion"), pl.lit("invites, upgrades or growing spend in 90 days")),
        ("retention", pl.col("regular_use") | (pl.col("repeat_buyer") & (pl.col("recency_days") <= cfg.lapsed_after_days)),
         pl.lit("regular use, or a repeat buyer who ordered recently")),
        ("activation", pl.col("first_key_action_date").is_not_null(),
         pl.format("first key action on {}", pl.col("first_key_action_date"))),
    ]
    label = pl.when(pl.lit(False)).then(pl.lit(None, pl.String))
    reason = pl.when(pl.lit(False)).then(pl.lit(None, pl.String))
    for name, cond, why in rules:
        label = label.when(cond.fill_null(False)).then(pl.lit(name))
        reason = reason.when(cond.fill_null(False)).then(why)
    return features.select(
        "customer_id",
        label.otherwise(pl.lit("consideration")).alias("lifecycle_stage"),
        reason.otherwise(pl.lit("known contact, no order or feature use yet")).alias("lifecycle_reason"),
    )
