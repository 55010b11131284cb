"""Which experts a decode batch touches, and how many tokens each gets. Pure numpy.

Decode reads only the experts its tokens are routed to. With ``B`` tokens, each choosing ``k``
distinct experts out of ``E``, expert ``e`` is hit by one token with probability ``q_e`` (its
*inclusion probability*), so the expected number of distinct experts is
``sum_e 1 - (1 - q_e)^B``; under uniform routing ``q_e = k/E`` and this is ``E(1-(1-k/E)^B)``.

This module is the serving engine's own small sampler (the training engine owns
``moesim/engine/routing.py``); it follows the same RoutingSpec. Shapes: popularity and
inclusion arrays are ``(layers, experts)``; loads are integer arrays of the same shape.
"""

from __future__ import annotations

import numpy as np

from moesim.errors import InputError
from moesim.schemas import RoutingSpec


def expert_popularity(routing: RoutingSpec, n_layers: int, n_experts: int,
                      rng: np.random.Generator) -> np.ndarray:
    """Routing probabilities ``(n_layers, n_experts)``, rows summing to 1.

    uniform: 1/E. zipf: ``rank^-s`` with the ranks shuffled per layer. dirichlet: one draw of
    ``Dir(alpha)`` per layer. trace: the CSV rows (one per layer, tiled if fewer), normalised.
    """
    e = n_experts
    if routing.distribution == "uniform" or e == 1:
        return np.full((n_layers, e), 1.0 / e)
    if routing.distribution == "zipf":
        base = np.arange(1, e + 1, dtype=float) ** -routing.zipf_s
        base /= base.sum()
        perm = np.argsort(rng.random((n_layers, e)), axis=1)
        return base[perm]
    if routing.distribution == "dirichlet":
        return rng.dirichlet(np.full(e, routing.dirichlet_alpha), size=n_layers)
    try:
        table = np.loadtxt(routing.trace, delimiter=",", ndmin=2)
    except ValueError:  # a header row
        table = np.loadtxt(routing.trace, delimiter=",", ndmin=2, skiprows=1)
    if table.shape[1] != e or np.any(table < 0) or np.any(table.sum(axis=1) <= 0):
        raise InputError(f"routing.trace = {str(routing.trace)!r}: expected {e} non-negative "
                         f"columns per row (one per expert), got shape {table.shape}")
    rows = np.resize(table, (n_layers, e))
    return rows / rows.sum(axis=1, keepdims=True)


def inclusion_probabilities(popularity: np.ndarray, top_k: int) -> np.ndarray:
    """Probability that one token's ``top_k`` distinct experts include each expert.

    Approximates sampling without replacement by ``q = k p`` capped at 1, the excess spread over
    the uncapped experts in proportion to ``p`` (rows then sum to ``k``). Exact for uniform
    popularity (``q = k/E``) and for ``k = 1``.
    """
    p = np.asarray(popularity, dtype=float)
    k = min(top_k, p.shape[-1])
    q = k * p
    for _ in range(p.shape[-1]):
        over = q > 1.0
        if not over.any():
            break
        capped = np.where(over, 1.0, q)
        free = ~over & (q < 1.0)
        missing = k - capped.sum(axis=-1, keepdims=True)
        weight = np.where(free, p, 0.0)
        norm = weight.sum(axis=-1, keepdims=True)
        q = capped + np.where(norm > 0, missing * weight / np.where(norm > 0, norm, 1.0), 0.0)
    return np.minimum(q, 1.0)


def expected_touched(inclusion: np.ndarray, tokens) -> np.ndarray:
    """Expected distinct experts hit by ``tokens`` tokens: ``sum_e 1-(1-q_e)^tokens`` over the last axis.

    ``tokens`` broadcasts against ``inclusion[..., 0]``.
    """
    q = np.asarray(inclusion, dtype=float)
    b = np.asarray(tokens, dtype=float)[..., None]
    return (1.0 - (1.0 - q) ** b).sum(axis=-1)


def sample_loads(inclusion: np.ndarray, tokens: int, rng: np.random.Generator) -> np.ndarray:
    """Tokens routed to each expert, ``(layers, experts)`` int64, for a batch of ``tokens`` tokens.

    Each expert's load is Binomial(tokens, q_e): right marginals (so the distinct count has the
    exact expectation above); the loads' sum equals ``tokens * k`` only on average.
    """
    return rng.binomial(int(tokens), inclusion)


def capacity_per_expert(tokens, top_k: int, n_experts: int, capacity_factor: float):
    """Switch/GShard capacity: ``ceil(capacity_factor * tokens * top_k / n_experts)``."""
    return np.ceil(capacity_factor * np.asarray(tokens, dtype=float) * top_k / n_experts)


def uniform_busy(tokens, top_k: int, n_experts: int, ep: int) -> tuple[np.ndarray, np.ndarray]:
    """Expected (busy experts, routed tokens) of one EP rank per batch size, under uniform routing.

    ``tokens`` (shape ``(n,)``) is one replica's batch; with ``ep > 1`` the rank serves the batch
    of all ``ep`` replicas of its group (assumed equal) on its ``n_experts / ep`` experts, so
    ``busy = (E/ep)(1-(1-k/E)^(tokens*ep))`` (fractional) and ``routed = tokens * k`` on average.
    """
    t = np.asarray(tokens, dtype=float)
    e_local = n_experts // ep
    busy = e_local * (1.0 - (1.0 - top_k / n_experts) ** (t * ep))
    return busy, t * top_k


def compact_loads(loads: np.ndarray) -> np.ndarray:
    """Loads sorted busiest first along the last axis, trailing columns idle in every row cut off."""
    srt = -np.sort(-np.asarray(loads), axis=-1)
    width = int((srt > 0).sum(axis=-1).max()) if srt.size else 0
    return srt[..., :max(width, 1)]
