"""How much more routed-expert work the busiest EP rank holds than the mean, for memory. Pure functions.

Under ``overflow: dropless`` an expert computes every token routed to it, so an EP rank's expert
buffers (the routed rows of :func:`moesim.activations.routed_slots_per_token`) grow with the tokens
it receives: with skewed routing the busiest rank holds more than the ``top_k`` rows per token the
mean gives, and it is the rank that runs out of memory first. Under ``drop`` every expert is padded
to its capacity whatever the routing, and with ``ep == 1`` one device holds every expert, so both
give 1.

Two factors, from each layer's expected expert popularity (``engine.routing.expert_popularity`` at
the routing seed, laid out by the scenario's placement; the multinomial noise of a sample is left out):

- ``stored``: the activations kept for backward sum over the MoE layers, so a rank holds the sum of
  its shares of every layer; the busiest rank's sum over the mean. Zipf popularity is shuffled per
  layer, so the hot experts land on different ranks and this stays well below one layer's imbalance.
- ``working``: what one layer's backward re-creates or works in at a time is that layer's rows alone:
  the largest single-layer imbalance (max over the mean tokens per rank).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from moesim.schemas import Scenario


@dataclass(frozen=True)
class RoutedLoad:
    """Busiest EP rank's routed rows over the mean: summed over the MoE layers (``stored``) and in
    the busiest single layer (``working``); both >= 1, 1 when the routing cannot skew a rank's rows."""

    stored: float = 1.0
    working: float = 1.0


def busiest_rank_load(s: Scenario) -> RoutedLoad:
    """:class:`RoutedLoad` of a training scenario's routing, plan and placement (module docstring)."""
    m, plan, r = s.model, s.plan, s.routing
    n_moe = sum(1 for i in range(m.n_layers) if m.is_moe_layer(i))
    if r.overflow == "drop" or plan.ep <= 1 or m.n_experts <= 1 or n_moe == 0 or r.distribution == "uniform":
        return RoutedLoad()
    trace = str(r.trace) if r.trace is not None else None
    return _load(r.distribution, r.zipf_s, r.dirichlet_alpha, trace, r.seed, n_moe, m.n_experts, m.top_k,
                 plan.ep, s.placement.redundant_experts)


@lru_cache(maxsize=256)
def _load(distribution: str, zipf_s: float, alpha: float, trace: str | None, seed: int, n_layers: int,
          n_experts: int, top_k: int, ep: int, redundant: int) -> RoutedLoad:
    """Cached core of :func:`busiest_rank_load` (plan searches ask it of many plans)."""
    from moesim.engine.placement import Placement  # local: engine modules import accounting
    from moesim.engine.routing import expert_popularity
    from moesim.schemas.routing import RoutingSpec

    spec = RoutingSpec.model_construct(distribution=distribution, zipf_s=zipf_s, dirichlet_alpha=alpha, trace=trace)
    pop = expert_popularity(spec, n_layers, n_experts, top_k, np.random.default_rng(seed))  # [L, E]
    place = Placement.balanced(pop, ep, redundant) if redundant else Placement.contiguous(n_experts, ep)
    share = place.per_rank(pop, layer_axis=0)  # [L, ep], each row sums to 1
    total = share.sum(axis=0)
    stored = float(total.max() / total.mean())
    working = float((share.max(axis=1) * ep).max())
    return RoutedLoad(max(stored, 1.0), max(working, 1.0))
