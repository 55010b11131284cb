"""What ZeRO-3 materialises beside its shards while a block runs: the block's weights gathered whole, the
next block's prefetched, and the block's whole gradient before the reduce-scatter shards it. Pure functions.

FSDP (wrapping each transformer block: torchtune, torchtitan, Hugging Face's ``auto_wrap``) all-gathers a
block's flat parameters before its forward and again before its backward, prefetches the next block's
(``backward_prefetch=BACKWARD_PRE``, FSDP2's default prefetch of one), and writes the block's unsharded
gradient before reduce-scattering it. DeepSpeed ZeRO-3 gathers per module and prefetches up to
``stage3_prefetch_bucket_size``, with an MoE block one leaf module (``set_z3_leaf_modules``, the default
for Mixtral and Qwen MoE blocks: ``plan.zero3_fetch: block``). So at the peak, the start of a backward,
a device holds two blocks' weights and one block's gradient beyond its shards: the largest block, as
a bound (PyTorch FSDP docs, ``BackwardPrefetch``; DeepSpeed ZeRO-3 config ``stage3_prefetch_bucket_size``).
The output head gathered at the loss is ``activations.zero3_head_bytes``.
"""

from __future__ import annotations

import numpy as np

from moesim.engine.training.layer_params import layer_params_per_device
from moesim.schemas import Scenario

#: Blocks whose weights a device holds whole at once under ZeRO-3: the one running and the prefetched next.
GATHERED_BLOCKS = 2


def zero3_block_bytes(s: Scenario, dense_bytes: float, expert_bytes: float, grad_bytes: float, dp: int,
                      expert_dp: int, trains: tuple[float, float] = (1.0, 1.0)) -> tuple[float, float]:
    """(weight, gradient) bytes one device holds beyond its ZeRO-3 shards while a block runs: the largest
    block's parameters on this device (after TP and EP, ``layer_params_per_device``) less the shard it
    keeps anyway (``1/dp`` of the dense ones, ``1/expert_dp`` of the experts'), :data:`GATHERED_BLOCKS`
    times at ``dense_bytes`` / ``expert_bytes`` each, and once at ``grad_bytes`` for the share that trains
    (``trains``: the dense and the expert fractions; a fine-tune's frozen base has no gradient). ``(0, 0)``
    below ZeRO-3 or when nothing is sharded (``dp`` and ``expert_dp`` 1)."""
    if s.plan.zero_stage < 3 or (dp <= 1 and expert_dp <= 1):
        return 0.0, 0.0
    dense, experts = layer_params_per_device(s)
    gathered_dense = dense * (1.0 - 1.0 / dp)
    gathered_experts = experts * (1.0 - 1.0 / expert_dp)
    weights = float(np.max(gathered_dense * dense_bytes + gathered_experts * expert_bytes))
    grads = float(np.max(gathered_dense * trains[0] + gathered_experts * trains[1])) * grad_bytes
    return GATHERED_BLOCKS * weights, grads
