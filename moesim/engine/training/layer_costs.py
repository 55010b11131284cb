"""Seconds and bytes of every op of every layer and microbatch of one training step. Pure numpy.

Everything is per device of one data-parallel replica (one TP rank of a pipeline stage), computed
for all layers ``L`` and microbatches ``M`` at once from the cost model and the sampled routing.
The ops of each layer come from the op graph (``ops.block_ops``, the list the serving iteration and
``calibrate.predict`` price too) and are booked into the slots of the training timeline
(``SLOT_OF``): one layer's forward slots, in order, are ``FWD_SLOTS``; backward runs ``BWD_SLOTS``
(a recompute slot, then the forward slots reversed). A slot that does not apply costs 0 s.

Modelling choices (see the README's training section):
- activations and collectives move ``bf16`` when the model computes in ``fp8`` (FP8 training keeps
  activations in bf16 between GEMMs), the model dtype otherwise (``Precision.act_dtype``; training
  accepts only native dtypes, see ``Scenario``);
- the ``attention`` slot holds the two norms, the QKV and output projections and one flash-attention
  kernel over the microbatch's sequences; MLA materialises per-head K and V (not absorbed);
- ``overflow: drop`` uses the padded Switch/GShard layout: each EP source rank fills
  ``capacity_per_source`` slots of every expert (drops per source rank, see ``routing.py``), so
  every expert computes ``capacity = ep * capacity_per_source`` slots and the all-to-all moves the
  padded buffers; ``dropless`` moves and computes the real loads, and
  the busiest EP rank sets the time of the expert GEMMs and both all-to-alls;
- backward costs 2x the forward compute and the same collectives again, in reverse; the recompute
  slot re-runs the attention core (selective) or the whole layer forward, collectives included (full);
- sequence parallelism: norms, router, permute and un-permute run on 1/tp of the tokens, and each
  TP rank sends 1/tp of the tokens in the all-to-all and pipeline p2p;
- context parallelism (``plan.cp``, ``engine/cp.py``): every op runs on the rank's ``tokens / cp``,
  the attention core on ``1/cp`` of the causal work; the exposed part of the ring attention's K/V
  exchange (or all of Ulysses' all-to-alls, ``plan.cp_comm`` a2a) is booked in the ``attention``
  slot (and the recompute slot when recompute re-runs attention), the dense gradient sync spans
  ``dp * cp`` ranks and the expert one ``dp / ep * cp``;
- expert tensor parallelism (``plan.etp``, ``engine/expert_tp.py``): an EP source is an expert-TP
  group of ``etp`` devices routing ``etp * T / tp`` tokens, each device dispatching its own
  ``T / tp``; experts run at ``1/etp`` of their width, the MoE layer's TP collective spans the
  ``etp`` group, and the expert gradient sync the expert-DP group. ``etp = tp`` (unset): as above.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from moesim.activations import LOSS_PASS_BYTES_PER_LOGIT, loss_logit_count
from moesim.costmodel import CostModel
from moesim.costmodel.attention_rate import FP8_WINDOW_BACKWARD_IS_FULL, fp8_attention_speedup
from moesim.costmodel.train_host import moe_layer_floor_s
from moesim.engine import cp as ctx
from moesim.engine.local_attention import local_kv
from moesim.engine.op_types import BlockDims, Op, OpDtypes
from moesim.engine.ops import (
    EXPERT_OPS,
    attention_core_op,
    backward_s,
    block_ops,
    expert_ops,
    forward_s,
    op_s,
    price,
    total_s,
)
from moesim.engine.routing import RoutingSample
from moesim.engine.training.alltoall_bytes import alltoall_bytes_dropless, alltoall_bytes_padded
from moesim.engine.training.buckets import bucket_params
from moesim.engine.training.finetune_ops import SUFFIXES as FT_SUFFIXES
from moesim.engine.training.finetune_ops import finetune_ops, frozen_op_names
from moesim.engine.training.finetune_params import finetune_params
from moesim.engine.training.fp8 import (
    cast_recipe,
    fp8_attention_ops,
    fp8_dispatch_ops,
    fp8_training_ops,
    primary_weight_bytes,
)
from moesim.engine.training.gathers import weight_gathers
from moesim.engine.training.hf_loop import apply_hf_loop
from moesim.engine.training.host_floor import apply_host_floor, moe_layer_host_us
from moesim.engine.training.layer_params import layer_params_per_device
from moesim.engine.training.mtp import MtpProjection, with_mtp
from moesim.engine.training.recompute import mla_up_share, recompute_s
from moesim.engine.training.schedules import schedule_for
from moesim.finetune import first_trainable_layer
from moesim.packing import attention_spans, micro_batch_seqs, rank_tokens, row_tokens
from moesim.precision import adam_state_bytes, grad_bytes, scenario_precision
from moesim.schemas import DTYPE_BYTES, Scenario

FWD_SLOTS = ("attention", "tp_allreduce", "router", "alltoall_dispatch", "experts",
             "alltoall_combine", "dense_ffn", "tp_allreduce")
BWD_SLOTS = ("recompute",) + FWD_SLOTS[::-1]
#: Breakdown category of each op kind (kinds not listed are compute).
CATEGORY = {"tp_allreduce": "tp_comm", "alltoall_dispatch": "alltoall", "alltoall_combine": "alltoall"}
#: Bytes of optimizer-state traffic per parameter of one Adam update (mixed precision): read the
#: bf16 grad (2), read+write fp32 master, m and v (3 x 8), write the bf16 weight (2).
ADAM_BYTES_PER_PARAM = 28.0


def adam_step_bytes(moments_dtype: str, master_weights: bool = True) -> float:
    """:data:`ADAM_BYTES_PER_PARAM` with the Adam states read and written at ``plan.moments_dtype``'s width
    (``precision.adam_state_bytes``; bf16 moments: 20 bytes a parameter): the bf16 gradient read, the states
    read and written, the bf16 weight written; without a master copy (``plan.master_weights: false``) the bf16
    weight is read as well (pure bf16 with bf16 moments: 14)."""
    return 2.0 + 2 * adam_state_bytes(moments_dtype, master_weights) + 2.0 + (0.0 if master_weights else 2.0)


ATT, TP1, ROUTER, DISPATCH, EXPERTS, COMBINE, DENSE, TP2 = range(len(FWD_SLOTS))
BWD_EXPERTS = BWD_SLOTS.index("experts")
#: The training slot each op of the op graph (``ops.block_ops``) is booked in. The un-permute
#: follows the combine in the layer but is booked with the expert compute (both are compute).
SLOT_OF = {"attn_norm": ATT, "qkv_proj": ATT, "rope": ATT, "attn_core": ATT, "cp_merge": ATT, "cp_merge_bwd": ATT,
           "o_proj": ATT, "ffn_norm": ATT,
           "attn_allreduce": TP1, "router": ROUTER, "router_topk": ROUTER, "permute": ROUTER,
           "dispatch": DISPATCH, "expert_up": EXPERTS, "expert_act": EXPERTS, "expert_down": EXPERTS,
           "moe_overhead": EXPERTS, "unpermute": EXPERTS, "shared_up": EXPERTS, "shared_act": EXPERTS,
           "shared_down": EXPERTS, "combine": COMBINE, "ffn_up": DENSE, "ffn_act": DENSE, "ffn_down": DENSE,
           "ffn_allreduce": TP2}


@dataclass(frozen=True)
class LayerCosts:
    """Per-layer op times of one step. Seconds per device; shapes in the field comments."""

    fwd_s: np.ndarray  # [L, M, len(FWD_SLOTS)]
    bwd_s: np.ndarray  # [L, M, len(BWD_SLOTS)]
    fwd_bytes: np.ndarray  # [L, M, len(FWD_SLOTS)] bytes one device sends in each comm slot
    fwd_tokens: np.ndarray  # [L, M, len(FWD_SLOTS)] tokens each op processes (experts: busiest rank)
    dropped: np.ndarray  # [L, M] assignments dropped by the EP group (0 on dense layers)
    straggler_fwd_s: np.ndarray  # [L, M] seconds the expert GEMMs and all-to-alls wait for the busiest rank
    straggler_bwd_s: np.ndarray  # [L, M]
    dp_dense_s: np.ndarray  # [L] gradient all-reduce of the layer's dense params over dp
    dp_expert_s: np.ndarray  # [L] gradient all-reduce of the layer's expert params over the expert-DP group
    dp_dense_bytes: np.ndarray  # [L] gradient bytes of the layer's dense params on this device
    dp_expert_bytes: np.ndarray  # [L] gradient bytes of the layer's expert params on this device
    opt_params: np.ndarray  # [L] parameters this device updates in the optimizer step (after ZeRO)
    embed_s: tuple[float, float, float]  # (fwd lookup, TP all-reduce, bwd) of the input embedding
    head_s: tuple[float, float]  # (fwd, bwd) of the final norm + output head + loss
    embed_dp_s: float  # gradient all-reduce of the embedding (first chunk)
    head_dp_s: float  # gradient all-reduce of the output head (last chunk)
    embed_dp_bytes: float
    head_dp_bytes: float
    embed_opt_params: float
    head_opt_params: float
    p2p_bytes: float  # bytes of one pipeline send (activation or its gradient)
    tokens_per_microbatch: int  # tokens one device processes per microbatch (seqs * seq_len / cp)
    # Megatron's gradient buckets (buckets.py), dense and expert groups, in gradient bytes (None: one
    # collective per layer, ZeRO-3), and the latency of one collective of each group, s
    dp_bucket_bytes: tuple[float | None, float | None] = (None, None)
    dp_latency_s: tuple[float, float] = (0.0, 0.0)
    # The weight-gradient part of bwd_s (zero-bubble schedules play it apart): half of each GEMM's
    # backward (dX = dY W^T and dW = X^T dY are one forward GEMM each); 0 in the recompute slot.
    wgrad_s: np.ndarray | None = None  # [L, M, len(BWD_SLOTS)]
    # backward bytes per forward slot where they differ from fwd_bytes (plan.fp8_dispatch: the forward dispatch
    # in FP8, its gradient in 16 bits); None: the same bytes move back
    bwd_bytes: np.ndarray | None = None  # [L, M, len(FWD_SLOTS)]
    head_wgrad_s: float = 0.0  # of head_s[1]: the output head's weight gradient
    # Context parallelism (all 0 when plan.cp == 1), per layer and microbatch:
    cp_exposed_s: tuple[float, float, float] = (0.0, 0.0, 0.0)  # ring seconds inside the (forward
    #   attention, backward attention, recompute) slots: what compute did not hide
    cp_ring_s: tuple[float, float] = (0.0, 0.0)  # (forward, backward) ring transfer, hidden or not
    cp_ring_bytes: tuple[float, float] = (0.0, 0.0)  # (forward, backward) bytes one device sends
    # Fine-tuning with frozen weights under ZeRO-3 (finetune_params.py): the parameter all-gathers
    # move every weight while dp_* hold the trainable ones only. None: the gathers are the dp_* ones.
    gather_layer_s: np.ndarray | None = None  # [L] all-reduce seconds of the layer's whole weights (dense + expert)
    gather_layer_bytes: np.ndarray | None = None  # [L] bytes of the layer's whole weights on this device
    gather_expert_s: np.ndarray | None = None  # [L] the routed experts' part of gather_layer_s (set with it)
    gather_embed_s: float | None = None
    gather_head_s: float | None = None
    # The GPU waiting for the host to issue an MoE layer's kernels (``apply_host_floor``), inside
    # the experts slot of fwd_s / bwd_s: [L, M] each. None: no wait.
    host_wait_fwd_s: np.ndarray | None = None
    host_wait_bwd_s: np.ndarray | None = None
    # (all-to-all, TP collective) seconds that recompute re-runs inside the recompute slot of bwd_s
    # (full: the whole forward's; selective ``moe``/``mlp`` modules: their block's): [L, M, 2]
    recompute_comm_s: np.ndarray | None = None


def training_dtypes(s: Scenario) -> OpDtypes:
    """Training moves every activation and collective at ``Precision.act_dtype`` (bf16 under fp8); its
    attention is flash attention over contiguous Q/K/V, not a serving engine's paged-KV kernel."""
    adt = scenario_precision(s).act_dtype
    return OpDtypes(weights=s.model.dtype, gemm_in_bytes=DTYPE_BYTES[adt], act_bytes=DTYPE_BYTES[adt],
                    act_dtype=adt, attn_dtype=adt, paged_kv=False)


def base_name(name: str) -> str:
    """The op-graph name of an op (an FP8 cast op, a LoRA adapter or a QLoRA dequantisation goes
    with its GEMM, a backward-only op with its forward)."""
    for suffix in FT_SUFFIXES:
        name = name.removesuffix(suffix)
    return name.removesuffix("_bwd").removesuffix("_cast")


def slot_of(name: str) -> int:
    """The training slot of an op of the op graph (:func:`base_name`'s)."""
    return SLOT_OF[base_name(name)]


#: Op kinds whose backward is two GEMMs of the forward's FLOPs, input and weight gradients.
GEMM_KINDS = ("gemm", "grouped_gemm")


def _into_slots(cm: CostModel, ops: list[Op], fwd: np.ndarray, bwd: np.ndarray, memo: dict,
                wgrad: np.ndarray, frozen: frozenset[str] = frozenset()) -> dict[str, np.ndarray]:
    """Price ``ops`` and add each op's forward and backward seconds into its slot of ``fwd`` and
    ``bwd`` (both ``[..., len(FWD_SLOTS)]``, forward slot order), and the weight-gradient half of
    each GEMM's backward into ``wgrad`` (none for the ``frozen`` GEMMs: their backward is the input
    gradient only, ``finetune_ops``); ``memo`` as ``ops.price``'s."""
    secs = price(cm, ops, memo)
    for op in ops:
        t = secs[op.name]
        j = slot_of(op.name)
        fwd[..., j] += forward_s(op, t)
        b = backward_s(op, t)
        bwd[..., j] += b
        if op.kind in GEMM_KINDS and op.name not in frozen:
            wgrad[..., j] += b / 2
    return secs


def layer_costs(s: Scenario, cm: CostModel, routing: RoutingSample | None) -> LayerCosts:
    """All per-layer op times of one step for ``s`` with the sampled ``routing`` (None: no MoE).

    Every layer's ops come from the op graph (``ops.block_ops``) and are priced once; the
    training slots group them (``SLOT_OF``).
    """
    m, plan, w = s.model, s.plan, s.workload
    L, M, tp, d, cp = m.n_layers, plan.microbatches, plan.tp, m.d_model, plan.cp
    per_node = s.hardware.node.devices_per_node
    seqs = micro_batch_seqs(w, plan)
    row = row_tokens(w, seqs, cp)  # seq_len, or the expected longest sample under padding: longest
    T = rank_tokens(w, plan)  # tokens of this CP rank per micro-batch (seqs * row / cp)
    dt = m.dtype
    dtypes = training_dtypes(s)
    adt, ab = dtypes.act_dtype, dtypes.act_bytes
    etp = plan.expert_tp
    dims = BlockDims.of(m, tp, plan.ep, mla_absorbed=False, max_nodes_per_token=s.routing.max_nodes_per_token, etp=etp)
    comm = plan.cp_comm
    q_len, kv_len = ctx.attention_tokens(row, cp, comm)  # the rank's core as one kernel
    one_q, one_kv = np.full(seqs, q_len), np.full(seqs, kv_len)
    piece, kernels = ctx.ring_kernels(row, cp, comm)
    q = kv = np.full(seqs * kernels, piece)  # CP: one kernel per ring step (engine/cp.py)
    core_dims = ctx.core_dims(dims, cp, comm)
    spans = attention_spans(w, seqs) if cp == 1 else None
    if spans is not None:  # packed samples, each attending only to itself
        q = kv = one_q = one_kv = spans
    moe = np.array([m.is_moe_layer(i) for i in range(L)])
    fwd = np.zeros((L, M, len(FWD_SLOTS)))
    nbytes = np.zeros_like(fwd)
    ratio = 1.0  # the forward dispatch's bytes over the 16-bit dispatch's (plan.fp8_dispatch: FP8)
    tokens = np.full_like(fwd, float(T))
    dropped = np.zeros((L, M))
    strag_f = np.zeros((L, M))
    strag_b = np.zeros((L, M))
    memo: dict = {}  # ops priced once for both block kinds
    back = np.zeros_like(fwd)  # backward seconds per forward slot (reversed into BWD_SLOTS below)
    wback = np.zeros_like(fwd)  # their weight-gradient part
    comp = scenario_precision(s).compute_dtype
    fp8 = comp == "fp8"
    recipe = cast_recipe(comp, plan.fp8_recipe)  # None: 16-bit GEMMs, no casts
    # FP8 attention (plan.fp8_attention, under FP8 or NVFP4 GEMMs): cuDNN's measured speed over BF16 on this
    # device and head width
    fp8_attn = (fp8_attention_speedup(s.hardware.device.name, dims.head_dim)
                if recipe and plan.fp8_attention else None)
    # Megatron casts each weight once per step and caches it (plan.fp8_weight_cache, train_bytes.fp8_weight_cache_bytes);
    # ZeRO-3 re-gathers it every microbatch
    weight_casts = 1.0 if plan.zero_stage >= 3 or not plan.fp8_weight_cache else 1.0 / M
    split = s.hardware.device.fp8_split_accumulation  # Hopper/Ada backward GEMMs; not on Blackwell
    transposes = not s.hardware.device.fp8_non_tn_gemm  # TN-only FP8 GEMMs need transposed copies (not Blackwell)

    spec = w.trainable
    frozen = frozen_op_names(spec)

    def block(**kw) -> list[Op]:
        ops = block_ops(dims, dtypes, tokens=T, q_tokens=q, kv_tokens=kv, seq_parallel=True,
                        algorithm=plan.alltoall, **kw) + ctx.merge_ops(dims, dtypes, T, cp, fp8_attn is not None, comm)
        if core_dims is not dims:  # Ulysses: the core kernel over the rank's share of the heads
            ops = [attention_core_op(core_dims, dtypes, q, kv) if op.name == "attn_core" else op for op in ops]
        ops = (fp8_training_ops(ops, recipe, weight_casts, split and fp8, transposes, plan.fp8_param_gather)
               if recipe else ops)
        ops = fp8_attention_ops(ops, fp8_attn) if fp8_attn else ops
        return finetune_ops(ops, spec, m.gated_ffn)

    priced = {}  # layer kind (True: MoE) -> (ops, seconds by op name), for the recompute modules
    if (~moe).any():
        row, brow, wrow = np.zeros(len(FWD_SLOTS)), np.zeros(len(FWD_SLOTS)), np.zeros(len(FWD_SLOTS))
        ops_ = block(moe=False)
        priced[False] = (ops_, _into_slots(cm, ops_, row, brow, memo, wrow, frozen))
        core = priced[False][1]["attn_core"]
        fwd[~moe], back[~moe], wback[~moe] = row, brow, wrow
    if moe.any():
        if routing is None or m.n_experts == 1:  # nothing to route: a dense FFN of the expert width
            row, brow, wrow = np.zeros(len(FWD_SLOTS)), np.zeros(len(FWD_SLOTS)), np.zeros(len(FWD_SLOTS))
            ops_ = block(moe=True, expert_tokens=np.zeros((1,)))
            priced[True] = (ops_, _into_slots(cm, ops_, row, brow, memo, wrow, frozen))
            core = priced[True][1]["attn_core"]
            fwd[moe], back[moe], wback[moe] = row, brow, wrow
        else:
            ep, E, k = plan.ep, m.n_experts, m.top_k
            # The busiest EP rank sets the time of the expert GEMMs and of both all-to-alls; the
            # straggler wait is what it costs over perfectly even routing (floored at 0).
            busiest = routing.busiest_rank_expert_tokens
            a2a_bytes = np.zeros(busiest.shape[:2])
            if ep > 1:
                if routing.padded:
                    a2a_bytes[:] = alltoall_bytes_padded(routing.capacity, E, ep, d, ab, etp)
                else:
                    a2a_bytes = alltoall_bytes_dropless(routing.rank_tokens.max(axis=-1), T, k, ep, d, ab, tp, etp)
            moe_ops_ = block(moe=True, expert_tokens=busiest, a2a_bytes=a2a_bytes)
            if plan.fp8_dispatch and recipe and ep > 1:
                moe_ops_, ratio = fp8_dispatch_ops(moe_ops_, ab)
            part = np.zeros(busiest.shape[:2] + (len(FWD_SLOTS),))
            bpart, wpart = np.zeros_like(part), np.zeros_like(part)
            secs = _into_slots(cm, moe_ops_, part, bpart, memo, wpart, frozen)
            priced[True] = (moe_ops_, secs)
            if plan.moe_impl == "hf_loop":  # transformers' per-expert Python loop (hf_loop.py)
                apply_hf_loop(s, cm, dims, moe_ops_, secs, busiest, part, bpart, wpart, frozen, slot_of, EXPERTS)
            core = secs["attn_core"]
            fwd[moe], back[moe], wback[moe] = part, bpart, wpart
            nbytes[moe, :, DISPATCH] = nbytes[moe, :, COMBINE] = a2a_bytes if ep > 1 else 0.0
            tokens[moe, :, EXPERTS] = busiest.sum(axis=-1)
            dropped[moe] = routing.dropped.sum(axis=-1)
            slowest = sum(secs[n] for n in EXPERT_OPS)
            even_loads = np.full(busiest.shape[-1], routing.balanced_expert_tokens)
            even = float(total_s(cm, expert_ops(dims, dtypes, even_loads)))
            # ep == 1: one rank holds every expert, so there is no other rank to wait for.
            expert_wait = np.maximum(slowest - even, 0.0) if ep > 1 else 0.0
            a2a_wait = 0.0
            if ep > 1:
                balanced = alltoall_bytes_padded(routing.balanced_expert_tokens, E, ep, d, ab, etp) * ratio
                dispatch = next(op for op in moe_ops_ if op.name == "dispatch")
                a2a_wait = np.maximum(secs["dispatch"] - float(op_s(cm, dispatch, bytes_to_peers=balanced)), 0.0)
            strag_f[moe] = expert_wait + 2 * a2a_wait
            strag_b[moe] = 2 * expert_wait + 2 * a2a_wait
    # sliding-window or chunked layers: their attention core over the window's keys (an empty mask
    # and no change without model.local_attention)
    local = np.array([m.is_local_layer(i) for i in range(L)])
    full_ops, full_secs = next(iter(priced.values()))  # the attention core is the same in every block
    merge = full_secs.get("cp_merge", 0.0)  # CP: the ring steps' forward merge (engine/cp.py)
    core_delta = (_local_core_delta(cm, next(op for op in full_ops if op.name == "attn_core"),
                                    float(full_secs["attn_core"]), core_dims, dtypes, m.local_attention, one_q, one_kv)
                  if local.any() else (0.0, 0.0))
    if fp8_attn and FP8_WINDOW_BACKWARD_IS_FULL:  # cuDNN's FP8 backward does not skip the tiles outside the window
        core_delta = (core_delta[0], 0.0)
    fwd[local, :, ATT] += core_delta[0]
    back[local, :, ATT] += core_delta[1]
    if tp > 1:
        nbytes[:, :, TP1] = nbytes[:, :, TP2] = T * d * ab
        if etp != tp:  # the MoE layers' TP collective spans the expert-TP group's etp * T / tp tokens
            nbytes[moe, :, TP2] = T * etp / tp * d * ab if etp > 1 else 0.0
    ring = ctx.ring_costs(cm, dims, dtypes, T, cp, float(np.max(core)), ctx.ring_intra(plan, per_node), comm)
    if cp > 1:  # the ring's exposed seconds are part of the attention slot
        fwd[:, :, ATT] += ring["exposed"][0]
        back[:, :, ATT] += ring["exposed"][1]

    bwd = np.zeros((L, M, len(BWD_SLOTS)))
    bwd[:, :, 1:] = back[:, :, ::-1]
    wgrad = np.zeros_like(bwd)
    wgrad[:, :, 1:] = wback[:, :, ::-1]
    cp_rc = 0.0
    rc_comm = np.zeros((L, M, 2))  # (all-to-all, TP collective) seconds inside the recompute slot
    modules = plan.recompute_modules
    if plan.recompute == "full":
        bwd[:, :, 0] = fwd.sum(axis=-1)
        rc_comm[..., 0] = fwd[..., DISPATCH] + fwd[..., COMBINE]
        rc_comm[..., 1] = fwd[..., TP1] + fwd[..., TP2]
        cp_rc = ring["exposed"][0]
    elif plan.recompute == "selective" and modules is None:  # re-running the core attention re-runs its ring
        bwd[:, :, 0] = core if cp == 1 else core + merge + ring["exposed"][0]
        bwd[local, :, 0] += core_delta[0]
        cp_rc = ring["exposed"][0]
    elif plan.recompute == "selective":  # Megatron-core's modules (recompute.py)
        share = mla_up_share(m)
        for kind, (ops_, secs_) in priced.items():
            rows = moe if kind else ~moe
            t, a2a, tpc = recompute_s(ops_, secs_, modules, base_name, share, mla=m.mla is not None, moe_layer=kind)
            bwd[rows, :, 0], rc_comm[rows, :, 0], rc_comm[rows, :, 1] = t, a2a, tpc
        if "core_attn" in modules:
            bwd[local, :, 0] += core_delta[0]
        if "core_attn" in modules and cp > 1:
            bwd[:, :, 0] += ring["exposed"][0]
            cp_rc = ring["exposed"][0]

    own = np.ones(len(FWD_SLOTS), dtype=bool)  # the slots the host floor counts as GPU work
    if s.plan.overlap_alltoall or schedule_for(s.plan).pairs_units:  # all-to-alls on their own stream
        own[[DISPATCH, COMBINE]] = False
    host_f, host_b = apply_host_floor(fwd, bwd, moe, moe_layer_floor_s(moe_layer_host_us(s, cm)),
                                      own, EXPERTS, BWD_EXPERTS)
    first = first_trainable_layer(m, spec)
    if first:  # workload.trainable.layers: no gradient reaches the blocks before the first trainable one
        for a in (bwd, wgrad, rc_comm, strag_b) + ((host_b,) if host_b is not None else ()):
            a[:first] = 0.0

    # Data-parallel gradient sync per layer and the optimizer's share of parameters. Megatron
    # reduces (and its distributed optimizer shards) over DP x CP: ``ctx.dp_groups``.
    dense_p, expert_p = layer_params_per_device(s)
    # a weight as the ZeRO parameter all-gathers move it: fp32, FP8 or NVFP4 (plan.fp8_param_gather), else 16-bit
    pb = 4.0 if dt == "fp32" else (primary_weight_bytes(recipe) if recipe and plan.fp8_param_gather else 2.0)
    gb = grad_bytes(dt, plan.grad_dtype)  # a gradient as the DP sync reduces it (fp32: Megatron's default)
    (dpn, dps), (edp, edps) = ctx.dp_groups(plan)
    table = m.vocab_size * d / tp
    head_p = (0.0 if m.tied_embeddings and plan.pp == 1 else table) + d / tp
    ft = None
    if not spec.full:  # only trainable parameters sync, update and (ZeRO-1/2) gather; ZeRO-3 gathers all
        ft = finetune_params(s, dense_p, expert_p, table, head_p, pb, cm, (dpn, dps), (edp, edps))
        dense_p, expert_p, table, head_p = ft.dense_p, ft.expert_p, ft.table, ft.head_p
    # pre-training: the weights move at their width where the gradients move at another (fine-tuning's are ft's)
    gathers = weight_gathers(cm, dense_p, expert_p, table, head_p, pb, (dpn, dps), (edp, edps)) \
        if ft is None and gb != pb else None
    dp_dense = cm.allreduce_s(dense_p * gb, dpn, dps) * (dense_p > 0)
    dp_expert = cm.allreduce_s(expert_p * gb, edp, edps) * (expert_p > 0)
    # the syncs' buckets (Megatron's DDP; one collective per layer under ZeRO-3) and one collective's latency
    buckets = (None, None) if plan.zero_stage >= 3 else (
        bucket_params(dpn, plan.overlap_dp_comm, float(dense_p.sum()) + table + head_p, plan.dp_bucket_params) * gb,
        bucket_params(edp, plan.overlap_dp_comm, float(expert_p.sum()), plan.dp_bucket_params) * gb)
    latency = (float(cm.allreduce_s(0.0, dpn, dps)), float(cm.allreduce_s(0.0, edp, edps)))
    z = plan.zero_stage >= 1
    opt_params = dense_p / (dpn if z else 1) + expert_p / (edp if z else 1)

    embed_f = float(cm.memory_s(T * d * ab))
    embed_ar = float(cm.allreduce_s(T * d * ab, tp, 1)) if tp > 1 else 0.0
    # the output head in FP8 (plan.fp8_output_proj: Megatron's fp8_output_proj); BF16 otherwise
    head_dt = dtypes.weights if fp8 and plan.fp8_output_proj else adt
    head_gemm = float(cm.gemm_s(T, max(1, round(m.vocab_size / tp)), d, head_dt))
    # the loss's passes over the logits (activations.LOSS_PASS_BYTES_PER_LOGIT, by plan.loss_impl)
    logits = loss_logit_count(m, tp, T, plan.loss_implementation)
    loss_f, loss_b = LOSS_PASS_BYTES_PER_LOGIT[plan.loss_implementation]
    head_f = float(head_gemm + cm.memory_s(logits * loss_f))
    head_b = float(2 * head_gemm + cm.memory_s(logits * loss_b))
    bwd_bytes = None
    if ratio != 1.0:  # the forward dispatch moves FP8 rows; its gradient the 16-bit ones
        bwd_bytes = nbytes.copy()
        nbytes[moe, :, DISPATCH] *= ratio
    costs = LayerCosts(
        fwd_s=fwd, bwd_s=bwd, fwd_bytes=nbytes, bwd_bytes=bwd_bytes, fwd_tokens=tokens, dropped=dropped,
        straggler_fwd_s=strag_f, straggler_bwd_s=strag_b,
        dp_dense_s=np.asarray(dp_dense, dtype=float), dp_expert_s=np.asarray(dp_expert, dtype=float),
        dp_dense_bytes=dense_p * gb, dp_expert_bytes=expert_p * gb, dp_bucket_bytes=buckets, dp_latency_s=latency,
        opt_params=opt_params,
        embed_s=(embed_f, embed_ar, 2 * embed_f), head_s=(head_f, head_b),
        embed_dp_s=float(cm.allreduce_s(table * gb, dpn, dps)) if table else 0.0,
        head_dp_s=float(cm.allreduce_s(head_p * gb, dpn, dps)) if head_p else 0.0,
        embed_dp_bytes=table * gb, head_dp_bytes=head_p * gb,
        embed_opt_params=table / (dpn if z else 1), head_opt_params=head_p / (dpn if z else 1),
        wgrad_s=wgrad, head_wgrad_s=head_gemm,
        p2p_bytes=T * d * ab / tp, tokens_per_microbatch=T,
        cp_exposed_s=(*ring["exposed"], float(cp_rc)), cp_ring_s=ring["ring_s"], cp_ring_bytes=ring["bytes"],
        host_wait_fwd_s=host_f, host_wait_bwd_s=host_b, recompute_comm_s=rc_comm,
    )
    if ft is not None:
        return ft.adjust(costs, head_gemm)
    if gathers is not None:  # the weights move at their width, the gradients at theirs
        costs = replace(costs, gather_layer_s=gathers.layer_s, gather_layer_bytes=gathers.layer_bytes,
                        gather_expert_s=gathers.expert_s,
                        gather_embed_s=gathers.embed_s, gather_head_s=gathers.head_s)
    if w.mtp_layers:  # pre-training only (the schema's rule): after the gathers, which it extends
        proj_p = 2 * d * d / tp  # the 2d -> d projection, column-parallel over TP
        proj = MtpProjection(gemm_s=float(cm.gemm_s(T, max(1, round(d / tp)), 2 * d, adt)),
                             dp_s=float(cm.allreduce_s(proj_p * gb, dpn, dps)), dp_bytes=proj_p * gb,
                             opt_params=proj_p / (dpn if z else 1))
        costs = with_mtp(costs, w.mtp_layers, proj)
    return costs


def _local_core_delta(cm: CostModel, full: Op, t_full: float, dims: BlockDims, dtypes: OpDtypes,
                      la, q, kv) -> tuple[float, float]:
    """(forward, backward) seconds a local layer's attention core (``model.local_attention``) saves
    over the full causal core ``full`` (priced at ``t_full``): one kernel at the rank's ``q`` queries
    over the window's keys of its ``kv`` context (``local_attention.local_kv``; under CP the window
    stays within the first ring step, so not one kernel per step as ``full``). Both <= 0."""
    local = attention_core_op(dims, dtypes, q, local_kv(q, kv, la.window, la.kind))
    t_local = float(price(cm, [local])["attn_core"])
    return (forward_s(local, t_local) - forward_s(full, t_full), backward_s(local, t_local) - backward_s(full, t_full))
