"""Predicted time of the reference MoE layer (``kernels.moe_ref.moe_forward``) from a CostModel.

``moe_layer_s`` sums the cost model's price of every op the layer runs; it never looks at measured
layer times. The op list mirrors ``moe_forward`` (keep the two in step):

=====================  ==========================================  ==========================
op                     shape                                       CostModel call
=====================  ==========================================  ==========================
router logits          (T x d) @ (d x E)                           ``gemm_s(T, E, d)``
softmax, top-k         T x E fp32 logits, k picked per token       ``router_topk_s(T, E, k)``
gather by expert       N = kept assignments, N x d read + written  ``memory_s``
gate/up projection     per expert (c_e x d) @ (d x 2f)             ``grouped_gemm_s(c, 2f, d)``
SwiGLU activation      per busy expert: c_e x f outputs            ``activation_s`` per expert
                       (Triton path: once over N x f)
down projection        per expert (c_e x f) @ (f x d)              ``grouped_gemm_s(c, d, f)``
weighted combine       zero T x d; scale N x d; scatter-add N x d  ``memory_s`` x 3
shared experts         dense SwiGLU on all T tokens, each          ``gemm_s`` + ``activation_s``
host bookkeeping       per layer, per busy expert, capacity        ``moe_overhead_s``
=====================  ==========================================  ==========================

``c_e`` are the assignments expert e keeps (``min(load_e, capacity)`` with a capacity factor).
The grouped GEMMs are told the layer's working set (busy experts' weights plus the token
activations x, gathered rows, expert outputs, result), which decides on a CPU whether expert
weights stay in cache between calls.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from moesim.costmodel import CostModel
from moesim.engine.ops import BlockDims, Op, OpDtypes, moe_ops, total_s
from moesim.schemas import DTYPE_BYTES


def layer_working_set_bytes(tokens: float, kept: float, busy: int, d_model: int, ffn: int, dtype_bytes: float) -> float:
    """Bytes one layer call touches: busy experts' three matrices, x, gathered rows, outputs, result."""
    return dtype_bytes * (busy * 3.0 * d_model * ffn + 2.0 * (tokens + kept) * d_model)


def moe_layer_s(cm: CostModel, tokens: int, d_model: int, ffn: int, n_experts: int, top_k: int,
                kept_per_expert: Sequence[int], n_shared: int = 0, shared_ffn: int | None = None,
                dtype: str = "fp32", capacity: bool = False, loop: bool = True) -> float:
    """Seconds of one reference MoE layer forward over ``tokens`` tokens.

    ``kept_per_expert`` (length ``n_experts``) are the assignments each expert processes after any
    capacity drop; their sum N is tokens * ``top_k`` minus the dropped ones. ``capacity``: the layer
    enforces a capacity (its dispatch does the extra position bookkeeping). ``loop``: the experts
    run as a Python loop (``expert_ffn_loop``: an activation per expert) rather than the Triton
    kernels (``expert_ffn_triton``: one activation over all N rows).
    """
    return float(total_s(cm, reference_layer_ops(tokens, d_model, ffn, n_experts, top_k, kept_per_expert,
                                                 n_shared, shared_ffn, dtype, capacity, loop)))


def reference_layer_ops(tokens: int, d_model: int, ffn: int, n_experts: int, top_k: int,
                        kept_per_expert: Sequence[int], n_shared: int = 0, shared_ffn: int | None = None,
                        dtype: str = "fp32", capacity: bool = False, loop: bool = True) -> list[Op]:
    """The op list of the reference layer: ``ops.moe_ops`` with the reference implementation's glue."""
    b = DTYPE_BYTES[dtype]
    c = np.asarray(kept_per_expert, dtype=float)
    busy = int(np.count_nonzero(c))
    ws = layer_working_set_bytes(float(tokens), float(c.sum()), busy, d_model, ffn, b)
    sf = shared_ffn or ffn
    dims = BlockDims(d_model=d_model, expert_w=ffn, shared_w=n_shared * sf, n_shared=n_shared, gated=True,
                     n_experts=n_experts, top_k=top_k)
    dt = OpDtypes(weights=dtype, gemm_in_bytes=b, act_bytes=b, act_dtype=dtype, attn_dtype=dtype)
    return moe_ops(dims, dt, tokens, c, impl="loop" if loop else "triton", capacity=capacity,
                   working_set_bytes=ws, rows=c.sum())
