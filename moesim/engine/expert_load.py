"""Which experts a decode batch touches, and how many tokens each gets. Pure numpy.

Decode reads only the experts its tokens are routed to. With ``B`` tokens, each choosing ``k``
distinct experts out of ``E``, expert ``e`` is hit by one token with probability ``q_e`` (its
*inclusion probability*), so the expected number of distinct experts is
``sum_e 1 - (1 - q_e)^B``; under uniform routing ``q_e = k/E`` and this is ``E(1-(1-k/E)^B)``.

Expert popularity comes from ``moesim/engine/routing.py`` (the same sampler training uses). Shapes: popularity and
inclusion arrays are ``(layers, experts)``; loads are integer arrays of the same shape.
"""

from __future__ import annotations

import numpy as np

from moesim.engine.routing import cap_inclusion


def inclusion_probabilities(popularity: np.ndarray, top_k: int) -> np.ndarray:
    """Probability that one token's ``top_k`` distinct experts include each expert.

    ``popularity`` is each expert's share of assignments (rows sum to 1). No expert can take more
    than ``1/top_k`` of them (a token picks distinct experts), so the shares are capped by the
    training engine's water-filling (``routing.cap_inclusion``) and ``q = k p`` then never exceeds
    1; rows sum to ``k``. Exact for uniform popularity (``q = k/E``) and for ``k = 1``.
    """
    p = np.asarray(popularity, dtype=float)
    k = min(top_k, p.shape[-1])
    p = p / p.sum(axis=-1, keepdims=True)
    return np.minimum(k * cap_inclusion(p, k), 1.0)


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
