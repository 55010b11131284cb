"""``hypergeom_excess`` (expected per-source-rank drops): its recursion over the draws against brute force.

The function sums a band of draws instead of each draw's support and cuts the band where the tail
mass is below e^-30; its docstring bounds the cut's error by ``2 K e^-30`` tokens and float rounding
by a relative ~2e-16 N ln N (1e-9 at the largest N here; scipy's reference has as much). The
tolerance below is that bound plus a relative 1e-8: far tighter than the drops' use needs (a
thousandth of a token).
"""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest

from moesim.engine.routing import expected_source_drops, hypergeom_excess


def brute_force(draws, t: int, K: int, N: int) -> np.ndarray:
    """``sum_j max(j - t, 0) pmf(j)`` over the whole support, pmf from ``scipy.stats.hypergeom``.

    ``exp(logpmf)``: scipy's ``pmf`` takes a second per call at ``N = 65536``; the two agree to 1e-9.
    """
    from scipy.stats import hypergeom

    out = []
    for n in draws:
        j = np.arange(max(0, n - (N - K)), min(K, n) + 1)
        out.append(float(np.sum(np.maximum(j - t, 0) * np.exp(hypergeom.logpmf(j, N, K, n)))))
    return np.array(out)


def tolerance(want: np.ndarray, K: int) -> np.ndarray:
    return 2 * K * math.exp(-30) + 1e-8 * want + 1e-12


def grid_draws(t: int, K: int, N: int) -> np.ndarray:
    """Draws across the support, and densely where ``t`` sits within a few sd of the mean (the band)."""
    p = K / N
    centre = t / p
    sd = math.sqrt(max(centre * p * (1 - p), 1.0)) / p
    near = centre + sd * np.linspace(-12, 12, 49)
    return np.unique(np.clip(np.concatenate([np.linspace(0, N, 17), near]).astype(np.int64), 0, N))


@pytest.mark.parametrize("ep", [2, 3, 8, 64])
@pytest.mark.parametrize("K", [1, 5, 12, 64, 1000, 8192])
def test_matches_brute_force_on_a_grid(ep, K):
    N = ep * K
    for t in sorted({0, 1, 2, K // ep, math.ceil(1.25 * K / ep), K // 2, K - 1, K}):
        n = grid_draws(max(t, 1), K, N)
        want = brute_force(n, t, K, N)
        got = hypergeom_excess(n, t, K, N)
        assert (np.abs(got - want) <= tolerance(want, K)).all(), (ep, K, t, np.abs(got - want).max())


@pytest.mark.parametrize("t, K, N", [
    (1280, 8192, 65536),  # mixtral-8x7b-h100-train: 8 sources of 4096 tokens x top-2
    (160, 16384, 131072),  # switch-base-128-train
    (1280, 16384, 262144),  # gpt4-rumour-a100-train: 16 sources
])
def test_matches_brute_force_at_shipped_training_sizes(t, K, N):
    n = grid_draws(t, K, N)
    want = brute_force(n, t, K, N)
    got = hypergeom_excess(n, t, K, N)
    assert (np.abs(got - want) <= tolerance(want, K)).all(), np.abs(got - want).max()
    assert want.max() > 100  # the grid reaches well past the capacity


def test_equals_exact_rationals_on_every_small_case():
    """Every (n, t) of four small populations, in exact arithmetic (no scipy)."""
    for K, N in [(3, 6), (4, 12), (7, 14), (10, 30)]:
        n = np.arange(N + 1)
        for t in range(K + 2):
            want = [float(sum(Fraction(max(j - t, 0) * math.comb(K, j) * math.comb(N - K, x - j), math.comb(N, x))
                              for j in range(max(0, x - (N - K)), min(K, x) + 1))) for x in n]
            np.testing.assert_allclose(hypergeom_excess(n, t, K, N), want, rtol=1e-12, atol=1e-14,
                                       err_msg=f"K={K} N={N} t={t}")


def test_edge_cases_and_shape():
    n = np.array([[0, 3, 9], [12, 17, 24]])
    np.testing.assert_allclose(hypergeom_excess(n, 0, 12, 24), n / 2)  # nothing is cut: E[H]
    np.testing.assert_array_equal(hypergeom_excess(n, 12, 12, 24), 0)  # H <= K = t
    np.testing.assert_array_equal(hypergeom_excess(n, 30, 12, 24), 0)
    np.testing.assert_allclose(hypergeom_excess(n, 5, 24, 24), np.maximum(n - 5, 0))  # one source: H = n
    assert hypergeom_excess(n, 3, 12, 24).shape == n.shape
    assert hypergeom_excess(np.array([], dtype=int), 3, 12, 24).shape == (0,)


def test_increments_are_probabilities_and_bounds_hold():
    """f(n + 1) - f(n) = E[(K - H_n) / (N - n); H_n >= t] lies in [0, 1]; Jensen below, n above."""
    for t, K, N in [(1280, 8192, 65536), (3, 12, 48), (160, 16384, 131072)]:
        n = np.arange(N + 1)
        f = hypergeom_excess(n, t, K, N)
        step = np.diff(f)
        assert (step >= -1e-12).all() and (step <= 1 + 1e-12).all()
        assert (f >= np.maximum(n * K / N - t, 0) * (1 - 1e-8)).all() and (f <= n).all()


def test_expected_source_drops_are_zero_up_to_capacity_and_clipped_above_it():
    rng = np.random.default_rng(0)
    loads = rng.integers(0, 3000, size=(4, 3, 16))
    cap, per_source, ep = 160, 2048, 8
    got = expected_source_drops(loads, cap, per_source, ep)
    over = loads > cap
    assert (got[~over] == 0).all()
    want = np.clip(ep * hypergeom_excess(loads[over], cap, per_source, ep * per_source),
                   np.maximum(loads[over] - ep * cap, 0), loads[over])
    np.testing.assert_array_equal(got[over], want)
