"""Multi-token prediction in a training step (``workload.mtp_layers``; DeepSeek-V3 report sec. 2.2).

Each MTP module runs after the model's last layer on the stage that computes the loss: the next
token's embedding (the shared table) and the last hidden state, each normalised, are concatenated
and projected back to ``d`` (a ``2d x d`` GEMM), one transformer block of the last layer's kind
runs on it, and the shared output head computes another loss. Megatron-core places it there too
(its pipeline layouts end in ``...tmL``: the last layer, the MTP module, the loss).

Priced from what the step already prices, per microbatch: the block as the last layer's forward and
backward seconds (all its slots, all-to-alls and straggler waits included, the mean over
microbatches), the projection as one more GEMM, and the head pass again; they join the output
head's op (``LayerCosts.head_s``), so they sit where the head sits in every schedule, DualPipe's
two ends included. The block's and the projection's parameters sync their gradients and take
optimizer states with the head's; the embedding and head are shared, so they add none. Pure
functions.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # layer_costs imports this module
    from moesim.engine.training.layer_costs import LayerCosts


@dataclass(frozen=True)
class MtpProjection:
    """One module's ``2d x d`` projection on one device: its GEMM seconds per microbatch (forward;
    backward is twice that), gradient sync seconds and bytes, and the parameters this device updates."""

    gemm_s: float
    dp_s: float
    dp_bytes: float
    opt_params: float


def with_mtp(costs: LayerCosts, modules: int, proj: MtpProjection) -> LayerCosts:
    """``costs`` with ``modules`` MTP modules added to the output head's op: forward and backward
    seconds, the weight-gradient part zero-bubble schedules play apart, the gradient sync (the last
    layer's dense and expert syncs per module, and the projection's) and the optimizer's
    parameters. Unchanged when ``modules`` is 0."""
    if modules <= 0:
        return costs
    j = costs.fwd_s.shape[0] - 1  # the block repeats the last layer
    block_f = float(np.mean(costs.fwd_s[j].sum(axis=-1) + costs.straggler_fwd_s[j]))
    block_b = float(np.mean(costs.bwd_s[j].sum(axis=-1) + costs.straggler_bwd_s[j]))
    block_w = float(np.mean(costs.wgrad_s[j].sum(axis=-1))) if costs.wgrad_s is not None else 0.0
    h_f, h_b = costs.head_s
    block_dp_s = float(costs.dp_dense_s[j] + costs.dp_expert_s[j])
    block_dp_bytes = float(np.asarray(costs.dp_dense_bytes)[j] + np.asarray(costs.dp_expert_bytes)[j])
    out = replace(
        costs,
        head_s=(h_f + modules * (h_f + block_f + proj.gemm_s), h_b + modules * (h_b + block_b + 2 * proj.gemm_s)),
        head_wgrad_s=costs.head_wgrad_s * (1 + modules) + modules * (block_w + proj.gemm_s),
        head_dp_s=costs.head_dp_s + modules * (block_dp_s + proj.dp_s),
        head_dp_bytes=costs.head_dp_bytes + modules * (block_dp_bytes + proj.dp_bytes),
        head_opt_params=costs.head_opt_params + modules * (float(costs.opt_params[j]) + proj.opt_params),
    )
    if costs.gather_layer_s is not None and costs.gather_head_s is not None:  # ZeRO-3: the block's weights too
        out = replace(out, gather_head_s=costs.gather_head_s + modules * float(costs.gather_layer_s[j]))
    return out
