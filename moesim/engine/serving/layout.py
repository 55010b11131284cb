"""Where a serving replica's experts live and how hot each is: the layout ``IterationCost`` starts from.

Under skewed routing the layers' popularity is the first draw from the serving engine's routing
generator; the placement is contiguous, or EPLB's from that popularity with
``placement.redundant_experts`` (uniform routing: one map for every layer).
"""

from __future__ import annotations

import numpy as np

from moesim.engine import expert_load
from moesim.engine.placement import Placement
from moesim.engine.routing import expert_popularity
from moesim.schemas import Scenario


def expert_layout(s: Scenario, rng: np.random.Generator):
    """(popularity ``[L, E]`` or None, inclusion ``[L, E]`` or None, placement, imbalance ``[L]``).

    Popularity and inclusion are None under uniform routing. The imbalance is max/mean expected
    tokens per EP rank of each MoE layer (1 under uniform routing without replicas).
    """
    m, n_red = s.model, s.placement.redundant_experts
    skewed = m.n_moe_layers > 0 and m.n_experts > 1 and s.routing.distribution != "uniform"
    pop = inclusion = None
    if skewed:
        pop = expert_popularity(s.routing, m.n_moe_layers, m.n_experts, m.top_k, rng)
        inclusion = expert_load.inclusion_probabilities(pop, m.top_k)
        placement = Placement.balanced(pop, s.plan.ep, n_red)
        imbalance = placement.imbalance(inclusion, layer_axis=0)
    else:
        placement = Placement.balanced(np.full((1, m.n_experts), 1.0 / m.n_experts), s.plan.ep, n_red)
        imbalance = placement.imbalance(np.ones((1, m.n_experts)), layer_axis=0).repeat(m.n_moe_layers)
    return pop, inclusion, placement, imbalance
