"""The op graph: the ops of one transformer block, built once and priced by every engine. Pure numpy.

``block_ops`` lists what one block runs on one device for a batch shape, in order: the attention
norm, QKV projection (a serving engine's RoPE and KV-cache write after it; MLA's serving kernels,
:func:`mla_projection_ops`, in its place), attention core, output projection and TP all-reduce; the FFN norm; then a
dense FFN (up, activation, down) or an MoE layer (router GEMM and top-k, permute, EP dispatch,
grouped expert GEMMs with their activation and host overhead, EP combine, un-permute, shared
experts); and the second TP all-reduce. Each :class:`Op` carries its FLOPs, the bytes it moves,
the stream it runs on (``compute``, ``tp_comm``, ``ep_comm``) and the keyword arguments of the
cost-model call that prices it (for collectives: bytes, group size, stride or algorithm).

The training step (``layer_costs``), the serving iteration (``decode_cost``) and the calibration's
layer prediction (``calibrate.predict``) all price these lists with :func:`price`, so
``calibrate --validate`` checks the ops the engines use. What differs between them is the batch
shape they pass (tokens, per-sequence query/context lengths, the routed tokens per expert of the
busiest EP rank, the all-to-all bytes their routing implies) and, for the MoE glue kernels, the
implementation (:data:`MOE_IMPLS`): the engines price fused GPU kernels (Megatron/vLLM permute
and un-permute: one read and one write of each row, one activation launch), the calibration prices
the reference layer it measures (``kernels.moe_ref``: a gather, a zeroed output, a scale and a
scatter-add; an activation per expert in the loop version).

Backward (training) runs the same ops in reverse; a compute op costs twice its forward (input and
weight gradients), a collective the same as forward (:func:`backward_s`).
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from moesim.costmodel import CostModel
from moesim.costmodel.flash_attention import ATTN_BWD_FACTOR
from moesim.costmodel.roofline import gemm_bytes, gemm_flops
from moesim.engine.op_types import BlockDims, Op, OpDtypes

#: MoE glue implementations: ``fused`` (GPU engines), ``loop``/``triton`` (the reference layer).
MOE_IMPLS = ("fused", "loop", "triton")
#: Ops of the routed experts proper (their time follows the per-expert loads of the busiest rank).
EXPERT_OPS = ("expert_up", "expert_act", "expert_down", "moe_overhead")


# ---------------------------------------------------------------- builders


def _gemm(name: str, tokens, n: int, k: int, dtype: str, b: float) -> Op:
    return Op(name, "gemm", "compute", dict(m=tokens, n=n, k=k, dtype=dtype),
              gemm_flops(tokens, n, k), gemm_bytes(tokens, n, k, b))


def _memory(name: str, nbytes) -> Op:
    return Op(name, "memory", "compute", dict(nbytes=nbytes), 0.0, nbytes)


def norm_op(name: str, dims: BlockDims, dt: OpDtypes, tokens) -> Op:
    """A fused residual-add + RMSNorm: reads the input and the residual, writes the normed rows."""
    return _memory(name, 3.0 * np.asarray(tokens, dtype=float) * dims.d_model * dt.act_bytes)


def allreduce_op(name: str, dims: BlockDims, dt: OpDtypes, tokens) -> list[Op]:
    """The TP all-reduce of the block's ``tokens x d_model`` output (none without TP)."""
    if dims.tp <= 1:
        return []
    nbytes = np.asarray(tokens, dtype=float) * dims.d_model * dt.act_bytes
    return [Op(name, "allreduce", "tp_comm", dict(nbytes=nbytes, n=dims.tp, stride=1, algorithm=dims.allreduce),
               0.0, nbytes)]


def attention_core_op(dims: BlockDims, dt: OpDtypes, q_tokens, kv_tokens) -> Op:
    """One attention kernel over a batch of sequences (last axis): QK^T, softmax, AV; its backward
    takes :data:`ATTN_BWD_FACTOR` times its forward."""
    q, kv = np.asarray(q_tokens, dtype=float), np.asarray(kv_tokens, dtype=float)
    flops = (4.0 * dims.heads * dims.head_dim * q * np.maximum(kv - q / 2, 1.0)).sum(axis=-1)
    kv_bytes = {} if dt.kv_bytes is None else {"kv_bytes": dt.kv_bytes}
    if not dt.paged_kv:
        kv_bytes["paged"] = False
    return Op("attn_core", "attention", "compute",
              dict(q_tokens=q, kv_tokens=kv, n_heads=dims.heads, head_dim=dims.head_dim,
                   kv_heads=dims.kv_heads, dtype=dt.attn_dtype, **kv_bytes), flops, bwd_factor=ATTN_BWD_FACTOR)


def attention_ops(dims: BlockDims, dt: OpDtypes, tokens, q_tokens, kv_tokens, seq_parallel: bool = False) -> list[Op]:
    """Norm, QKV projection, attention core, output projection, TP all-reduce.

    ``tokens``: new tokens on the device (scalar or array); ``q_tokens``/``kv_tokens``: per
    sequence on the last axis. ``seq_parallel``: norms run on ``tokens / tp`` (Megatron SP).
    MLA in its serving form (``dims.mla``): the kernels of :func:`mla_projection_ops` around the core.
    A serving engine (``dt.paged_kv``) also rotates Q and K and writes K and V to its cache in a kernel
    before the attention core (:func:`rope_kv_write_op`); training rotates them in a kernel of its own
    (:func:`rope_op`).
    """
    local = np.asarray(tokens, dtype=float) / (dims.tp if seq_parallel else 1)
    if dims.mla is not None:
        pre, post = mla_projection_ops(dims, dt, tokens)
    else:
        pre, post = [_gemm("qkv_proj", tokens, dims.qkv_n, dims.d_model, dt.weights, dt.gemm_in_bytes)], []
        if dt.paged_kv:
            pre.append(rope_kv_write_op(dt, tokens, dims.rotated, 2 * dims.kv_heads * dims.head_dim))
    if not dt.paged_kv and dims.rotated > 0:
        pre.append(rope_op(dt, tokens, dims.rotated))
    return [norm_op("attn_norm", dims, dt, local), *pre,
            attention_core_op(dims, dt, q_tokens, kv_tokens), *post,
            _gemm("o_proj", tokens, dims.d_model, dims.o_k, dt.weights, dt.gemm_in_bytes),
            *allreduce_op("attn_allreduce", dims, dt, tokens)]


def rope_op(dt: OpDtypes, tokens, rotated: float) -> Op:
    """Training's rotary-embedding kernel (Megatron-core's fused RoPE, Transformer Engine's
    ``fused_apply_rotary_pos_emb``): reads and writes the ``rotated`` elements per token; its backward
    rotates their gradients back, the same bytes again."""
    nbytes = 2.0 * np.asarray(tokens, dtype=float) * rotated * dt.act_bytes
    return Op("rope", "memory", "compute", dict(nbytes=nbytes), 0.0, nbytes, bwd_factor=1.0)


def rope_kv_write_op(dt: OpDtypes, tokens, rotated: float, cached: int) -> Op:
    """A serving engine's kernel between the QKV projection and the attention core: rotate the new
    tokens' ``rotated`` query and key elements (``BlockDims.rotated``; read and write) and copy the
    ``cached`` elements per token into the paged cache at its dtype. TensorRT-LLM fuses both into one
    preprocessing kernel; vLLM and SGLang run a rotary kernel and a cache write."""
    t = np.asarray(tokens, dtype=float)
    ab = dt.act_bytes
    kv_b = ab if dt.kv_bytes is None else dt.kv_bytes
    return _memory("rope_kv_write", 2.0 * t * rotated * ab + t * cached * (ab + kv_b))


def mla_projection_ops(dims: BlockDims, dt: OpDtypes, tokens) -> tuple[list[Op], list[Op]]:
    """(before, after) the attention core: the kernels a serving engine runs for absorbed MLA.

    Before: the fused down-projection (replicated over TP), the RMSNorms of the query and KV latents,
    the query up-projection, the absorbed key up-projection (a per-head batched GEMM from the no-RoPE
    query to the latent), and the kernel that rotates the RoPE parts (every query head's and the one
    shared key's) and writes the latent to the KV cache (:func:`rope_kv_write_op`). After: the
    absorbed value up-projection (latent to value heads), a batched GEMM too.
    (vLLM ``MLACommonImpl``, SGLang ``DeepseekV2AttentionMLA``, TensorRT-LLM ``MLA``; the batched
    GEMMs are priced as one GEMM of the same weights and FLOPs.) Same weights as the folded training
    form but for the replicated down-projection; same FLOPs per token as the absorbed attention sees.
    """
    a, d, ab = dims.mla, dims.d_model, dt.act_bytes
    t = np.asarray(tokens, dtype=float)
    g = lambda name, n, k: _gemm(name, tokens, max(1, round(n)), max(1, round(k)), dt.weights, dt.gemm_in_bytes)  # noqa: E731
    before = [g("qkv_a_proj", a.a_n, d)]
    if a.q_lora:
        before.append(_memory("q_a_norm", 2.0 * t * a.q_lora * ab))
    before += [_memory("kv_a_norm", 2.0 * t * a.kv_lora * ab),
               g("q_b_proj", a.heads * (a.nope + a.rope), a.q_lora or d),
               g("q_absorb", a.heads * a.kv_lora, a.nope),
               rope_kv_write_op(dt, tokens, dims.rotated, a.kv_lora + a.rope)]
    return before, [g("v_absorb", a.heads * a.v, a.kv_lora)]


def ffn_ops(prefix: str, dims: BlockDims, dt: OpDtypes, tokens, width: int) -> list[Op]:
    """A dense FFN of ``width`` hidden units per device: up(+gate) GEMM, activation, down GEMM."""
    up = (2 if dims.gated else 1) * width
    elements = np.asarray(tokens, dtype=float) * width
    act_bytes = elements * (3 if dims.gated else 2) * dt.act_bytes
    return [_gemm(f"{prefix}_up", tokens, up, dims.d_model, dt.weights, dt.gemm_in_bytes),
            Op(f"{prefix}_act", "activation", "compute",
               dict(out_elements=elements, gated=dims.gated, act_bytes=dt.act_bytes), 0.0, act_bytes),
            _gemm(f"{prefix}_down", tokens, dims.d_model, width, dt.weights, dt.gemm_in_bytes)]


def expert_ops(dims: BlockDims, dt: OpDtypes, expert_tokens, impl: str = "fused",
               working_set_bytes=None, capacity: bool = False) -> list[Op]:
    """The routed experts of one EP rank: grouped up(+gate) GEMM, activation, grouped down GEMM,
    and the MoE overhead: the profile's host-side cost (0 from a datasheet) plus ``dims.moe_fixed_us``.

    ``expert_tokens``: ``(..., experts_on_rank)`` tokens each expert computes. ``loop`` runs an
    activation per busy expert, and one loop step runs both GEMMs of an expert, so the up GEMM's
    per-expert loop costs are paid by the down GEMM only (``kernels.moe_ref.expert_ffn_loop``).
    """
    c = np.asarray(expert_tokens, dtype=float)
    w, d = dims.expert_w, dims.d_model
    up = (2 if dims.gated else 1) * w
    # the tokens of the batch these experts serve (their kernels may pick tiles by it): routed rows / top_k
    g = dict(dtype=dt.expert_weights or dt.weights, working_set_bytes=working_set_bytes,
             batch_tokens=c.sum(axis=-1) / max(dims.top_k, 1))
    flops = gemm_flops(c, up, d).sum(axis=-1)
    act_elems = c * w if impl == "loop" else c.sum(axis=-1) * w
    return [Op("expert_up", "grouped_gemm", "compute",
               dict(tokens_per_expert=c, n=up, k=d, loop_costs=impl == "fused", **g), flops),
            Op("expert_act", "activation", "compute",
               dict(out_elements=act_elems, gated=dims.gated, act_bytes=dt.act_bytes, per_expert=impl == "loop")),
            Op("expert_down", "grouped_gemm", "compute",
               dict(tokens_per_expert=c, n=d, k=w, loop_costs=True, **g), gemm_flops(c, d, w).sum(axis=-1)),
            Op("moe_overhead", "moe_overhead", "compute",
               dict(busy_experts=(c > 0).sum(axis=-1), capacity=capacity, assignments=c.sum(axis=-1),
                    fixed_us=dims.moe_fixed_us))]


def moe_ops(dims: BlockDims, dt: OpDtypes, tokens, expert_tokens, a2a_bytes=0.0, impl: str = "fused",
            algorithm: str = "flat", seq_parallel: bool = False, capacity: bool = False,
            working_set_bytes=None, rows=None) -> list[Op]:
    """An MoE layer on one device, in order: router GEMM and top-k, permute, EP dispatch, the routed
    experts (:func:`expert_ops`), EP combine, un-permute, shared experts.

    ``tokens``: tokens the device holds (``/ tp`` under sequence parallelism are routed here);
    ``expert_tokens``: per-expert tokens of the busiest EP rank; ``a2a_bytes``: bytes one device
    sends in the dispatch (from the engine's routing: padded, dropless, or the expected load), at
    ``gemm_in_bytes`` per element; the combine moves the same rows at ``act_bytes`` (16-bit).
    The glue kernels' bytes follow ``impl`` (:data:`MOE_IMPLS`) over ``rows`` routed rows (default
    ``tokens * top_k``; the reference layer moves only the kept ones).
    """
    if impl not in MOE_IMPLS:
        raise ValueError(f"impl = {impl!r}: allowed {MOE_IMPLS}")
    t = np.asarray(tokens, dtype=float) / (dims.tp if seq_parallel else 1)
    d, E, k = dims.d_model, dims.n_experts, dims.top_k
    n = t * k if rows is None else np.asarray(rows, dtype=float)
    b, ab = dt.gemm_in_bytes, dt.act_bytes
    ops = [_gemm("router", t, E, d, dt.act_dtype, ab),
           Op("router_topk", "router_topk", "compute", dict(tokens=t, n_experts=E, top_k=k), 0.0, t * E * 4.0)]
    if impl == "fused":  # read each token once, write its k rows; read k rows back, write the token
        permute, unpermute = [_memory("permute", t * d * ab + n * d * b)], [_memory("unpermute", n * d * ab + t * d * ab)]
    else:  # gather (read + write n rows); zeroed output, scale (n rows), scatter-add (n rows) as 3 kernels
        permute = [_memory("permute", 2 * n * d * b)]
        unpermute = [_memory("unpermute_zero", t * d * b), _memory("unpermute_scale", 2 * n * d * b),
                     _memory("unpermute", 3 * n * d * b)]
    ops += permute
    a2a = _alltoall("dispatch", dims, a2a_bytes, algorithm)
    ops += a2a
    ops += expert_ops(dims, dt, expert_tokens, impl, working_set_bytes, capacity)
    # the combine returns the experts' 16-bit outputs (DeepEP: FP8 dispatch, BF16 combine)
    ops += _alltoall("combine", dims, np.asarray(a2a_bytes, dtype=float) * (ab / b), algorithm)
    ops += unpermute
    if dims.n_shared:
        # the shared experts are a TP-sharded MLP (width / tp): under sequence parallelism it runs on
        # the TP group's all-gathered tokens, like the dense FFN, not on this rank's 1/tp slice
        ts = np.asarray(tokens, dtype=float)[()]  # [()]: a 0-d input stays a scalar (memo keys hash)
        if impl == "fused":  # one FFN of all shared experts' width, added in the un-permute
            ops += ffn_ops("shared", dims, dt, ts, dims.shared_w)
        else:  # the reference layer runs each shared expert and adds its output (read 2, write 1)
            width = dims.shared_w // dims.n_shared
            for i in range(dims.n_shared):
                ops += ffn_ops(f"shared{i}", dims, dt, ts, width)
                ops.append(_memory(f"shared{i}_add", 3 * t * d * b))
    return ops


def _alltoall(name: str, dims: BlockDims, nbytes, algorithm: str) -> list[Op]:
    if dims.ep <= 1 or dims.local_dispatch:
        return []
    # EP ranks sit etp apart in rank order (the cost model's ``tp`` argument is that stride)
    args = dict(bytes_to_peers=nbytes, ep=dims.ep, tp=dims.expert_tp, algorithm=algorithm, top_k=dims.top_k,
                n_experts=dims.n_experts, max_nodes=dims.max_nodes_per_token)
    return [Op(name, "alltoall", "ep_comm", args, 0.0, nbytes)]


def block_ops(dims: BlockDims, dt: OpDtypes, moe: bool, tokens, q_tokens, kv_tokens, expert_tokens=None,
              a2a_bytes=0.0, seq_parallel: bool = False, algorithm: str = "flat") -> list[Op]:
    """Every op of one transformer block on one device (see the module docstring for the order).

    A one-expert "MoE" layer is a dense FFN of the expert width (nothing to route).
    """
    local = np.asarray(tokens, dtype=float) / (dims.tp if seq_parallel else 1)
    ops = attention_ops(dims, dt, tokens, q_tokens, kv_tokens, seq_parallel)
    ops.append(norm_op("ffn_norm", dims, dt, local))
    if moe and dims.n_experts > 1:
        if expert_tokens is None:
            raise ValueError("an MoE block needs expert_tokens")
        ops += moe_ops(dims, dt, tokens, expert_tokens, a2a_bytes, "fused", algorithm, seq_parallel)
        if dims.expert_tp != dims.tp and not dims.local_dispatch:  # expert-TP all-gather + reduce-scatter (expert_tp.py)
            return ops + allreduce_op("ffn_allreduce", replace(dims, tp=dims.expert_tp), dt,
                                      np.asarray(tokens, dtype=float) * dims.expert_tp / dims.tp)
    else:
        ops += ffn_ops("ffn", dims, dt, tokens, dims.expert_w if moe else dims.ffn_w)
    return ops + allreduce_op("ffn_allreduce", dims, dt, tokens)


# ---------------------------------------------------------------- pricing


def _grouped(cm: CostModel, tokens_per_expert, n, k, dtype, working_set_bytes, loop_costs, batch_tokens=None):
    s = cm.grouped_gemm_s(tokens_per_expert, n, k, dtype, working_set_bytes, batch_tokens=batch_tokens)
    return s if loop_costs else s - cm.grouped_loop_s(tokens_per_expert, n)


def _activation(cm: CostModel, out_elements, gated, act_bytes, per_expert=False):
    s = cm.activation_s(out_elements, gated, act_bytes)
    if per_expert:  # one launch per busy expert
        return np.sum(s * (np.asarray(out_elements) > 0), axis=-1)
    return s


#: The cost-model call of each op kind.
PRICERS = {
    "gemm": lambda cm, m, n, k, dtype: cm.gemm_s(m, n, k, dtype),
    "grouped_gemm": _grouped,
    "activation": _activation,
    "router_topk": lambda cm, tokens, n_experts, top_k: cm.router_topk_s(tokens, n_experts, top_k),
    "memory": lambda cm, nbytes: cm.memory_s(nbytes),
    # speedup: FP8 attention's speed over the 16-bit kernel the cost model prices (engine/training/fp8.py)
    "attention": lambda cm, speedup=1.0, **a: cm.attention_batch_s(**a) / speedup,
    "moe_overhead": lambda cm, busy_experts, capacity, assignments, fixed_us=0.0: (
        cm.moe_overhead_s(busy_experts, capacity, assignments) + fixed_us * 1e-6 * (np.asarray(busy_experts) > 0)),
    "allreduce": lambda cm, nbytes, n, stride, algorithm: cm.allreduce_s(nbytes, n, stride, algorithm),
    "p2p": lambda cm, nbytes, intra: cm.p2p_s(nbytes, intra),
    "alltoall": lambda cm, **a: cm.alltoall_s(**a),
    "fp8_cast": lambda cm, nbytes, kernels: cm.fp8_cast_s(nbytes, kernels),
}


def op_s(cm: CostModel, op: Op, **override):
    """Seconds of ``op`` on ``cm``; ``override`` replaces some of its arguments (e.g. new loads)."""
    args = {**op.args, **override} if override else op.args
    return PRICERS[op.kind](cm, **args)


def price(cm: CostModel, ops: list[Op], memo: dict | None = None) -> dict[str, np.ndarray]:
    """Seconds of each op by name (arrays shaped like the batch shape the ops were built for).

    ``memo``: a dict kept across calls on the same ``cm``; ops whose arguments are all scalars
    (the attention part shared by a model's dense and MoE blocks) are priced once.
    """
    out = {}
    for op in ops:
        key = None
        if memo is not None and all(np.ndim(v) == 0 for v in op.args.values()):
            key = (op.kind, tuple(sorted(op.args.items())))
            if key in memo:
                out[op.name] = memo[key]
                continue
        out[op.name] = t = np.asarray(op_s(cm, op), dtype=float)
        if key is not None:
            memo[key] = t
    return out


def total_s(cm: CostModel, ops: list[Op]):
    """Seconds of running ``ops`` one after another (a forward pass: backward-only ops excluded)."""
    return sum((forward_s(op, t) for op, t in zip(ops, price(cm, ops).values(), strict=True)), np.zeros(()))


def forward_s(op: Op, seconds):
    """Seconds ``op`` adds to the forward pass (0 for a backward-only op)."""
    return seconds * 0.0 if op.phase == "bwd" else seconds


def backward_s(op: Op, seconds):
    """Backward seconds of an op priced at ``seconds``: a backward-only op its own price, a forward-only
    one nothing; else compute twice (input and weight gradients), a collective once (the same bytes
    move in reverse), or the op's own ``bwd_factor``."""
    if op.phase != "both":
        return seconds if op.phase == "bwd" else seconds * 0.0
    if op.bwd_factor is not None:
        return seconds * op.bwd_factor
    return seconds * (2.0 if op.stream == "compute" else 1.0)
