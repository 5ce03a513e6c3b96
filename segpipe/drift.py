"""Drift statistics between a reference sample and a current sample (pure functions).

* PSI over quantile bins of the reference (``sum((c - r) * ln(c / r))``, empty bins smoothed);
* Wasserstein distance normalised by the reference standard deviation (Evidently's default for
  numeric features);
* Jensen-Shannon distance (base 2, in [0, 1]) for categorical features;
* a two-sample chi-square test on the PSI bins' counts, so that a PSI above
  the threshold on a handful of customers is not reported as a significant shift.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.spatial.distance import jensenshannon
from scipy.stats import chi2_contingency, wasserstein_distance

EPS = 1e-4  # share given to an empty bin so that the logarithm stays finite


def quantile_edges(reference: np.ndarray, bins: int = 10) -> np.ndarray:
    """Inner bin edges at the reference's quantiles (duplicates removed: ties make fewer bins)."""
    ref = np.asarray(reference, dtype=float)
    ref = ref[np.isfinite(ref)]
    if ref.size == 0:
        return np.array([])
    qs = np.quantile(ref, np.linspace(0, 1, bins + 1)[1:-1])
    return np.unique(qs)


def bin_shares(values: np.ndarray, edges: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Counts and shares of ``values`` in the bins ``(-inf, e1), [e1, e2), ..., [ek, inf)``
    (left-closed, like Polars' ``bin_quantiles`` default)."""
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    idx = np.searchsorted(edges, v, side="right")
    counts = np.bincount(idx, minlength=len(edges) + 1).astype(float)
    total = counts.sum()
    return counts, (counts / total if total else counts)


def psi(reference_shares: np.ndarray, current_shares: np.ndarray, *, eps: float = EPS) -> float:
    """Population stability index of two share vectors over the same bins (>= 0; 0 when equal)."""
    r = np.clip(np.asarray(reference_shares, dtype=float), eps, None)
    c = np.clip(np.asarray(current_shares, dtype=float), eps, None)
    r, c = r / r.sum(), c / c.sum()
    return float(np.sum((c - r) * np.log(c / r)))


def normalized_wasserstein(reference: np.ndarray, current: np.ndarray) -> float:
    """Wasserstein (earth mover's) distance divided by the reference's standard deviation."""
    ref = np.asarray(reference, dtype=float)
    cur = np.asarray(current, dtype=float)
    ref, cur = ref[np.isfinite(ref)], cur[np.isfinite(cur)]
    if ref.size == 0 or cur.size == 0:
        return float("nan")
    std = ref.std()
    d = wasserstein_distance(ref, cur)
    return float(d / std) if std > 0 else (0.0 if d == 0 else float("inf"))


def js_distance(reference: list, current: list) -> float:
    """Jensen-Shannon distance (base 2, in [0, 1]) between two categorical samples."""
    cats = sorted({*map(str, reference), *map(str, current)})
    if not cats:
        return 0.0
    pos = {c: i for i, c in enumerate(cats)}
    r = np.bincount([pos[str(x)] for x in reference], minlength=len(cats)).astype(float)
    c = np.bincount([pos[str(x)] for x in current], minlength=len(cats)).astype(float)
    if r.sum() == 0 or c.sum() == 0:
        return float("nan")
    return float(jensenshannon(r / r.sum(), c / c.sum(), base=2))


@dataclass(frozen=True)
class NumericDrift:
    psi: float
    wasserstein: float
    p_value: float  # chi-square test of independence of the reference and current bin counts
    bins: int


def numeric_drift(reference: np.ndarray, current: np.ndarray, *, bins: int = 10) -> NumericDrift:
    """PSI on reference quantile bins, normalised Wasserstein distance and chi-square p-value."""
    edges = quantile_edges(reference, bins)
    r_count, r_share = bin_shares(reference, edges)
    c_count, c_share = bin_shares(current, edges)
    if c_count.sum() == 0 or r_count.sum() == 0:
        return NumericDrift(float("nan"), float("nan"), float("nan"), len(edges) + 1)
    table = np.vstack([r_count, c_count])
    table = table[:, table.sum(axis=0) > 0]
    # two-sample test: the reference is a sample too, not the truth
    p = float(chi2_contingency(table).pvalue) if table.shape[1] > 1 else 1.0
    return NumericDrift(psi(r_share, c_share), normalized_wasserstein(reference, current), p, len(edges) + 1)
