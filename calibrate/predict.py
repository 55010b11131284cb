"""Predicted time of the reference MoE layer (``kernels.moe_ref.moe_forward``) from a CostModel.

``moe_layer_s`` sums the cost model's price of every op the layer runs; it never looks at measured
layer times. The op list mirrors ``moe_forward`` (keep the two in step):

=====================  ==========================================  ==========================
op                     shape                                       CostModel call
=====================  ==========================================  ==========================
router logits          (T x d) @ (d x E)                           ``gemm_s(T, E, d)``
softmax, top-k         T x E fp32 logits, k picked per token       ``router_topk_s(T, E, k)``
dispatch               sort T x k assignments by expert, counts,   ``profile.dispatch`` (measured;
                       capacity drop, counts to the host           see below)
gather by expert       N = kept assignments, N x d read + written  ``memory_s``
gate/up projection     per expert (c_e x d) @ (d x 2f)             ``grouped_gemm_s(c, 2f, d)``
SwiGLU activation      per busy expert: c_e x f outputs            ``activation_s`` per expert
                       (Triton path: once over N x f)
down projection        per expert (c_e x f) @ (f x d)              ``grouped_gemm_s(c, d, f)``
weighted combine       zero T x d; scale N x d; scatter-add N x d  ``memory_s`` x 3
shared experts         dense SwiGLU on all T tokens, each          ``gemm_s`` + ``activation_s``
host bookkeeping       per layer, busy expert, assignment, cap.    ``moe_overhead_s``
=====================  ==========================================  ==========================

Every op but the dispatch is an op of ``engine.ops.moe_ops`` (the list the engines price), with the
reference implementation's glue. The dispatch is the reference layer's host-side step
(``kernels.moe_ref.dispatch``: a stable argsort, a bincount, a capacity cut, ``tolist``); the
engines' fused permute kernels include theirs, so it is priced here, from the profile's measured
``DispatchSpec`` (its own microbenchmark: fixed + per assignment + per expert, more with a
capacity), and costs nothing with a profile that has none.

GEMM kernels compute rows in tiles: an expert with 11 tokens costs a CPU kernel with 4-row tiles
what 16 tokens cost (the remainder 3 runs as a 2-row and a 1-row pass, each paid like a full
tile). The calibration's GEMM tables are measured at powers of 2, where the tile divides the rows,
while routed per-expert counts are irregular; the profile's measured row tile (``gemm_rows``, fitted
from GEMMs at irregular token counts) pads each expert's rows in the cost model's grouped GEMM
(``ProfiledCostModel.kernel_rows``), so the engines pay it too.

``c_e`` are the assignments expert e keeps (``min(load_e, capacity)`` with a capacity factor).
The grouped GEMMs are told the layer's working set (busy experts' weights plus the token
activations x, gathered rows, expert outputs, result), which decides on a CPU whether expert
weights stay in cache between calls.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from moesim.costmodel import CostModel
from moesim.engine.op_types import BlockDims, Op, OpDtypes
from moesim.engine.ops import PRICERS, forward_s, moe_ops, price
from moesim.schemas import DTYPE_BYTES


def dispatch_s(cm: CostModel, assignments, n_experts: int, capacity: bool):
    """The reference layer's dispatch from the profile's ``DispatchSpec`` (0 without one)."""
    spec = getattr(getattr(cm, "profile", None), "dispatch", None)
    if spec is None:
        return np.zeros(np.shape(assignments))
    return spec.seconds(assignments, n_experts, capacity)


#: Pricers of the reference layer's own ops (those ``engine.ops.PRICERS`` has no entry for).
REFERENCE_PRICERS = {"moe_dispatch": dispatch_s}


def price_reference(cm: CostModel, ops: list[Op]) -> dict[str, np.ndarray]:
    """Seconds of each op by name, in order: the engines' pricers (``engine.ops.price``), then the
    reference layer's own (``REFERENCE_PRICERS``)."""
    engine = price(cm, [op for op in ops if op.kind in PRICERS])
    return {op.name: engine[op.name] if op.kind in PRICERS else np.asarray(REFERENCE_PRICERS[op.kind](cm, **op.args),
                                                                            dtype=float)
            for op in ops}


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
    ops = reference_layer_ops(tokens, d_model, ffn, n_experts, top_k, kept_per_expert, n_shared, shared_ffn, dtype,
                              capacity, loop)
    ops += reference_host_ops(tokens, n_experts, top_k, capacity)
    return float(sum(forward_s(op, t) for op, t in zip(ops, price_reference(cm, ops).values())))


def reference_layer_ops(tokens: int, d_model: int, ffn: int, n_experts: int, top_k: int,
                        kept_per_expert: Sequence[int], n_shared: int = 0, shared_ffn: int | None = None,
                        dtype: str = "fp32", capacity: bool = False, loop: bool = True) -> list[Op]:
    """The op list of the reference layer: ``ops.moe_ops`` with the reference implementation's glue
    (every op priceable by ``engine.ops.price``; the host-side dispatch is ``reference_host_ops``).
    The expert GEMMs' rows are padded to the profile's row tile by the cost model itself
    (``ProfiledCostModel.kernel_rows``), as the engines price them."""
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


def reference_host_ops(tokens: int, n_experts: int, top_k: int, capacity: bool = False) -> list[Op]:
    """The reference layer's own host-side op: its dispatch of the ``tokens * top_k`` routed
    assignments (priced by ``REFERENCE_PRICERS``)."""
    return [Op("dispatch", "moe_dispatch", "compute",
               dict(assignments=float(tokens) * top_k, n_experts=n_experts, capacity=capacity))]
