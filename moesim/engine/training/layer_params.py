"""Parameters of each layer one training device holds, dense and routed-expert. Pure numpy."""

from __future__ import annotations

import numpy as np

from moesim.accounting import attention_params, expert_params, ffn_params
from moesim.engine.placement import Placement
from moesim.schemas import Scenario


def layer_params_per_device(s: Scenario) -> tuple[np.ndarray, np.ndarray]:
    """(dense, expert) parameters of each layer held by one device: ``[L]`` each.

    Dense: attention, the two norms, the dense FFN or the shared experts and router, over tp.
    Expert: the routed expert slots of one EP rank (``Placement.experts_per_rank``: ``(E + N) / ep``
    with ``placement.redundant_experts: N``), over the expert TP (``plan.expert_tp``: tp unless etp is set).
    """
    m, plan = s.model, s.plan
    d = m.d_model
    moe = np.array([m.is_moe_layer(i) for i in range(m.n_layers)])
    base = attention_params(m) + 2 * d
    dense_ffn = ffn_params(d, m.ffn_hidden, m.gated_ffn)
    shared = m.n_shared_experts * ffn_params(d, m.shared_width, m.gated_ffn) + (d * m.n_experts if m.n_experts > 1 else 0)
    dense = np.where(moe, base + shared, base + dense_ffn) / plan.tp
    per_rank = Placement.slots_per_rank(m.n_experts, plan.ep, s.placement.redundant_experts)
    experts = np.where(moe, per_rank * expert_params(m), 0) / plan.expert_tp
    return dense.astype(float), experts.astype(float)
