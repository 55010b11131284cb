"""Which experts a decode batch touches, and how many tokens each gets. Pure numpy.

Decode reads only the experts its tokens are routed to. With ``B`` tokens, each choosing ``k``
distinct experts out of ``E``, expert ``e`` is hit by one token with probability ``q_e`` (its
*inclusion probability*), so the expected number of distinct experts is
``sum_e 1 - (1 - q_e)^B``; under uniform routing ``q_e = k/E`` and this is ``E(1-(1-k/E)^B)``.

Expert popularity comes from ``moesim/engine/routing.py`` (the same sampler training uses), and so
does capacity (``routing.capacity_per_expert``, per source rank: one replica's batch). Shapes:
popularity and inclusion arrays are ``(layers, experts)``; loads are integer arrays of the same shape.
"""

from __future__ import annotations

import numpy as np

from moesim.engine.placement import Placement
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


def uniform_dropped(tokens, top_k: int, n_experts: int, capacity) -> np.ndarray:
    """Expected assignments one source rank drops per batch under uniform routing, per ``tokens``.

    The rank's ``tokens`` hit ``busy = E(1-(1-k/E)^tokens)`` experts (``expected_touched``) with
    ``tokens * k / busy`` each on average; each drops what it gets over ``capacity`` (its slots for
    this source rank, broadcasting against ``tokens``): ``busy * max(load - capacity, 0)``. A
    mean-load estimate: the spread of the loads around that mean is left out.
    """
    t = np.asarray(tokens, dtype=float)
    busy = expected_touched(np.full(n_experts, top_k / n_experts), t)
    load = np.where(busy > 0, t * top_k / np.maximum(busy, 1e-12), 0.0)
    return busy * np.maximum(load - capacity, 0.0)


def uniform_busy(tokens, top_k: int, placement: Placement, sources: int | None = None,
                 busiest: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Expected (busy experts, routed tokens) of one EP rank per batch size, under uniform routing.

    ``tokens`` (shape ``(n,)``) is one replica's batch; the rank serves the batches of ``sources``
    replicas (default ``ep``: EP carved out of data parallelism, each replica's batch assumed equal;
    1 when the EP group is one replica's TP group and shares its batch) on its
    ``experts_per_rank`` experts, so with ``G = tokens * sources`` routed tokens in the group
    ``busy = (E/ep)(1-(1-k/E)^G)`` (fractional) and ``routed = G * k / ep`` on average.
    With replicas (EPLB) a slot of an expert with ``c`` copies is hit with ``q = k/(E c)`` per token;
    the rank whose slots draw the most (over every layer's map) gives ``busy = sum 1-(1-q)^G``
    and ``routed = G * sum q``.

    ``busiest``: the expected busy experts of the busiest of the ``ep`` ranks instead of one rank's
    mean (the layer waits for it), :func:`expected_max_binomial` over ranks whose ``E/ep`` experts
    are each busy with ``p = 1-(1-k/E)^G`` (independent, an approximation), each carrying the
    ``G k / (E p)`` tokens a busy expert gets. It matters when the group batch is a few tokens (one
    replica's decode batch over its own TP group); without replicas only.
    """
    t = np.asarray(tokens, dtype=float)
    n_experts, ep = placement.n_experts, placement.ep
    group = t * (ep if sources is None else sources)
    if placement.redundant_experts:
        layers = placement.slot_expert.shape[0]
        q = placement.split(np.full((layers, n_experts), top_k / n_experts), layer_axis=0)  # [L, ep, slots]
        q = q.reshape(-1, q.shape[-1])
        slots = q[int(np.argmax(q.sum(axis=-1)))]
        busy = (1.0 - (1.0 - slots[None, :]) ** group[..., None]).sum(axis=-1)
        return busy, group * float(slots.sum())
    p_busy = 1.0 - (1.0 - top_k / n_experts) ** group
    if busiest and ep > 1:
        busy = expected_max_binomial(placement.experts_per_rank, p_busy, ep)
        per_busy = np.divide(group * top_k / n_experts, p_busy, out=np.zeros_like(group), where=p_busy > 0)
        return busy, busy * per_busy
    return placement.experts_per_rank * p_busy, group * top_k / ep


def expected_max_binomial(n: int, p, m: int) -> np.ndarray:
    """``E[max of m independent Binomial(n, p)]`` for each ``p`` (array): the sum over ``j < n`` of
    ``1 - F(j)^m``, ``F`` the binomial CDF (``scipy.stats.binom``; ``n`` is a rank's few experts)."""
    from scipy.stats import binom  # local: only serving with EP over the TP group needs it

    p = np.clip(np.asarray(p, dtype=float), 0.0, 1.0)
    cdf = binom.cdf(np.arange(n), n, p[..., None])
    return (1.0 - cdf ** m).sum(axis=-1)


def compact_loads(loads: np.ndarray) -> np.ndarray:
    """Loads sorted busiest first along the last axis, trailing columns idle in every row cut off."""
    srt = -np.sort(-np.asarray(loads), axis=-1)
    width = int((srt > 0).sum(axis=-1).max()) if srt.size else 0
    return srt[..., :max(width, 1)]


def busiest_ranks(rank_loads: np.ndarray, n: int) -> np.ndarray:
    """The ``n`` ranks with the most tokens of each row: ``[..., ep, slots]`` -> ``[..., min(n, ep), slots]``.

    The slowest rank of a layer is the busiest or close to it (a grouped GEMM's time grows with its
    tokens; tile padding can reorder near-ties), so pricing the ``n`` busiest finds it without
    pricing every rank of a wide expert-parallel group. ``ep <= n``: unchanged.
    """
    ep = rank_loads.shape[-2]
    if ep <= n:
        return rank_loads
    totals = rank_loads.sum(axis=-1)
    top = np.argpartition(-totals, n - 1, axis=-1)[..., :n]
    return np.take_along_axis(rank_loads, top[..., None], axis=-2)
