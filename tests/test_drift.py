"""Drift statistics against hand-computed values and scipy."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import wasserstein_distance

from segpipe.drift import bin_shares, js_distance, normalized_wasserstein, numeric_drift, psi, quantile_edges


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
