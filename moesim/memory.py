"""Memory per device: weights, gradients, optimizer states, activations, KV cache. Pure functions.

Training memory holds weights at the 16-bit width (bf16 under FP8 math), gradients (2 bytes; 4
with ``plan.grad_dtype: fp32``, Megatron-LM's own default) and a 12-byte mixed-precision Adam per
parameter (ZeRO, Rajbhandari et al. 2020), sharded by the ZeRO
stage, and the activations per layer (``moesim.activations``: Korthikanti et al. 2022) of the
layers pipeline stage 0 holds, times the schedule's microbatches in flight, plus what one layer's
recompute re-creates for its backward. Serving memory is the
weights plus a KV pool.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from moesim.accounting import GIB, kv_bytes_per_token, param_counts, tp_replicated_attention_params
from moesim.activations import (
    kept_modules,
    layer_activation_bytes_per_token,
    loss_logits_bytes,
    loss_or_work,
    offloaded_stash_bytes,
    per_layer_kind,
    recompute_working_bytes_per_token,
    routed_slots_per_token,
    zero3_head_bytes,
)
from moesim.allocator import reserved_gib, unused_fraction
from moesim.costmodel.host import platform_of
from moesim.costmodel.train_host import compiled_step
from moesim.engine.expert_tp import expert_dp_group
from moesim.engine.local_attention import slot_map
from moesim.engine.training.deferred_head import held_bytes
from moesim.engine.training.layer_params import layer_params_per_device
from moesim.engine.training.schedules import schedule_for
from moesim.finetune import device_shares, embeddings_trainable, first_trainable_layer
from moesim.grad_lifetime import grads_meet_forward, largest_grad_bytes, transient_peak
from moesim.packing import micro_batch_seqs
from moesim.precision import (
    grad_bytes,
    parameter_bytes,
    precision,
    scenario_precision,
)
from moesim.routed_load import busiest_rank_load
from moesim.schemas import (
    ModelSpec,
    PlanSpec,
    Scenario,
    ServingWorkload,
    TrainingWorkload,
)
from moesim.serving_reserve import engine_budget_bytes, sampler_warmup_bytes, serving_fit
from moesim.stage_memory import (
    busiest_stage,
    dualpipe_busiest_stage,
    held_layers,
    outside_params,
    stage_layers,
    stage_params,
)
from moesim.train_bytes import (
    fp8_weight_cache_bytes,
    optimizer_bytes,
    stored_weight_bytes,
    training_saves,
    training_weight_bytes,
)
from moesim.train_reserve import allocatable_gib, held_gib
from moesim.zero3_gather import zero3_block_bytes

# ---------------------------------------------------------------- memory per device


@dataclass(frozen=True)
class MemoryReport:
    """Memory per device, GiB, for the busiest device: pipeline stage ``stage`` (0 unless another
    stage holds more, see :func:`memory_report`; serving: every stage alike)."""

    weights_gib: float
    gradients_gib: float
    optimizer_gib: float
    activations_gib: float
    kv_cache_gib: float
    total_gib: float
    capacity_gib: float
    fits: bool
    headroom_gib: float
    reserved_gib: float  # what PyTorch's caching allocator reserves at the peak (moesim.allocator)
    stage: int = 0  # the pipeline stage these figures are of (training: the one holding the most)
    held_gib: float = 0.0  # training on CUDA: the CUDA context and NCCL's buffers beside PyTorch (train_reserve)
    # serving: KV the longest request needs per device, which the pool (kv_cache_gib) must hold to fit. Kept out
    # of as_dict: saved results and check's memory.* rows hold registered keys only (moesim.metrics)
    longest_request_kv_gib: float = 0.0

    def as_dict(self) -> dict:
        out = asdict(self)
        del out["longest_request_kv_gib"]
        return out


def weight_params_per_device(m: ModelSpec, plan: PlanSpec, redundant_experts: int = 0,
                             stage: int | None = 0) -> tuple[float, float]:
    """(dense, expert) parameters held by pipeline stage ``stage`` of one device before ZeRO-3 sharding.

    Dense parameters split over tp*pp but for MLA's down-projections, which every TP rank holds
    whole (:func:`~moesim.accounting.tp_replicated_attention_params`); routed experts over
    ep*etp*pp (each expert split over the expert TP, ``plan.expert_tp``: tp unless ``plan.etp`` is
    set; Megatron-core MoE parallel folding).
    With ``redundant_experts`` N (EPLB copies), each EP rank holds ``(n_experts + N) / ep`` experts.
    With ``pp > 1`` it is that stage's own (:func:`~moesim.stage_memory.stage_params`: its layers, the
    embedding on the first stage, the head on the last, an uneven split's layer counts);
    ``stage=None``: the even split's average.
    """
    p = param_counts(m)
    if stage is not None and plan.pp > 1:
        dense, experts = stage_params(m, plan, stage, p)
    else:
        whole = tp_replicated_attention_params(m) * m.n_layers  # on every TP rank
        dense = (p.dense - whole) / (plan.tp * plan.pp) + whole / plan.pp
        experts = p.routed_experts / (plan.ep * plan.expert_tp * plan.pp)
    if redundant_experts and m.n_experts > 1:
        experts *= (m.n_experts + redundant_experts) / m.n_experts
    return dense, experts


def memory_report(s: Scenario, serving_kv_tokens: float | None = None) -> MemoryReport:
    """Memory per device for training (weights, grads, Adam, activations) or serving (weights, KV).

    Training, on pipeline stage 0 (or the busiest stage when ``plan.first_stage_layers`` /
    ``last_stage_layers`` / ``pipeline_layout`` make the split uneven or MTP modules sit with the loss:
    :func:`moesim.stage_memory.busiest_stage`; ``MemoryReport.stage`` says which): weights at
    :func:`training_weight_bytes` (bf16 under FP8 math), gradients at ``precision.grad_bytes`` and
    Adam at :func:`optimizer_bytes` per parameter, sharded by ZeRO stage, times the schedule's
    ``param_copies`` (DualPipe: 2); activations = microbatch tokens x the microbatches the schedule
    keeps in flight x the sum of :func:`layer_activation_bytes_per_token` over the stage's layers
    (:func:`stage_layers`), with routed rows from :func:`routed_slots_per_token` (padded to capacity
    under ``overflow: drop``; under ``dropless`` those of the busiest EP rank, which skewed routing loads
    beyond the mean: :func:`moesim.routed_load.busiest_rank_load`), plus what recompute re-creates for
    the layer being back-propagated (:func:`recompute_working_bytes_per_token`, the stage's largest
    layer, one microbatch); the loss's
    stage adds its logits and, under ZeRO-3, the output head gathered whole (:func:`zero3_head_bytes`).
    Context parallelism (Megatron-core, ``plan.cp``): a device holds ``seq_len / cp`` tokens of
    each sequence, so activations divide by ``cp`` (the ring's remote K/V block in flight is not
    counted), and ZeRO shards over the ``dp * cp`` ranks holding the same weights. The stage that
    computes the loss adds one microbatch's logits (:func:`loss_logits_bytes`, by
    ``plan.loss_implementation``) in place of that working set when they are more
    (:func:`loss_or_work`): stage 0 with ``pp == 1``, else the last stage, weighed against the
    others by :func:`moesim.stage_memory.busiest_stage` when it may hold more than stage 0. DualPipe: the busiest
    stage, each stage's activations from its order (:func:`moesim.stage_memory.dualpipe_busiest_stage`).
    The capacity is what the device gives the tensors (:func:`moesim.train_reserve.allocatable_gib`: on CUDA the
    total CUDA reports less the context and NCCL's buffers, ``held_gib``; on Apple silicon the GPU's wired limit).

    Serving: the KV pool (``kv_cache_gib``, always the pool) takes ``kv_cache_fraction`` of what weights and working
    activations leave of the engine's budget (all of it under ``memory_utilization``; :func:`serving_kv_pool_bytes`),
    which is also the capacity; the pool must hold ``serving_kv_tokens`` (default: the longest request; its KV
    slots, fewer when local attention layers keep only their window: ``longest_request_kv_gib``) or the plan does
    not fit, whatever the budget keeps outside the pool (:func:`moesim.serving_reserve.serving_fit`).
    """
    m, plan = s.model, s.plan
    prec = scenario_precision(s)
    b = prec.weight_bytes
    copies = schedule_for(plan).param_copies  # DualPipe: the stage's chunk of each direction, 2x
    red = s.placement.redundant_experts
    # ZeRO groups: the ranks holding the same weights, DP x CP (dense) and expert-DP (experts:
    # tp * cp * dp / (ep * etp), i.e. DP/EP x CP when etp = tp; engine/expert_tp.py)
    dp = plan.dp * plan.cp
    expert_dp = expert_dp_group(plan)[0]  # data-parallel group of one expert's replicas
    w = s.workload
    stage, held = 0, 0.0  # the pipeline stage the figures are of; GiB held beside PyTorch's allocator
    need = 0.0  # serving: the longest request's KV bytes per device
    if isinstance(w, TrainingWorkload):
        # what PyTorch may allocate: CUDA's report less its context and NCCL's buffers (moesim.train_reserve)
        capacity, held = allocatable_gib(s), held_gib(s)
        z = plan.zero_stage
        b = training_weight_bytes(prec)
        g, o = grad_bytes(s.model.dtype, plan.grad_dtype), optimizer_bytes(plan, s.model.dtype)

        def params_of(st: int) -> tuple[float, float, float]:  # (weights, grads, Adam) bytes of stage st's chunk
            d_, e_ = weight_params_per_device(m, plan, red, stage=st)
            if not w.trainable.full:  # fine-tuning: gradients and Adam only for what trains, frozen (or nf4) base
                return _finetune_param_bytes(s, d_, e_, b, 1, dp, expert_dp, st)
            bd, be = stored_weight_bytes(s, b)
            # ZeRO-3: the running and prefetched blocks gathered whole, the running one's gradient unsharded
            gw, gg = zero3_block_bytes(s, bd, be, g, dp, expert_dp)
            return (zero_sharded_bytes(d_, e_, bd, be, 3, z, dp, expert_dp) + fp8_weight_cache_bytes(s, d_, e_) + gw,
                    zero_sharded_bytes(d_, e_, g, g, 2, z, dp, expert_dp) + gg,
                    zero_sharded_bytes(d_, e_, o, o, 1, z, dp, expert_dp))

        weights, grads, optim = params_of(0)
        if copies == 2:  # DualPipe: stage 0 also holds the last stage's chunk (direction 1)
            weights, grads, optim = (a + c for a, c in zip((weights, grads, optim), params_of(plan.pp - 1)))
        # this CP rank's share of the microbatch, at seq_len rows (a micro-batch of the longest samples
        # sets the peak, packing.row_tokens)
        tokens = micro_batch_seqs(w, plan) * w.seq_len / plan.cp
        slots = routed_slots_per_token(m, s.routing, tokens)
        load = busiest_rank_load(s)  # dropless: the busiest EP rank computes (and keeps) more routed rows
        in_flight = schedule_for(plan).microbatches_in_flight(plan.pp, plan.microbatches, plan.virtual_stages)
        if plan.overlap_alltoall and plan.ep > 1:  # combined 1F1B: one more warm-up forward (of a chunk)
            in_flight = min(in_flight + (1.0 / plan.virtual_stages if plan.pp > 1 else 1.0), plan.microbatches)
        # per token of one microbatch, by layer kind (dense / MoE: the only thing a layer's bytes depend on)
        saves = training_saves(s)  # frozen GEMMs, adapters, FP8 stores (moesim.frozen_inputs)
        kept = per_layer_kind(m, lambda i: layer_activation_bytes_per_token(
            m, i, plan.tp, plan.recompute, prec, slots * load.stored, kept_modules(plan), saves))
        redo = per_layer_kind(m, lambda i: recompute_working_bytes_per_token(
            m, i, plan.tp, plan.recompute, prec, slots * load.working, kept_modules(plan), saves))

        first = first_trainable_layer(m, w.trainable)  # blocks before it keep nothing for a backward

        def stage_kept(stage: int) -> list[float]:  # each layer's activations per token of one microbatch on ``stage``
            return [kept[m.is_moe_layer(i)] for i in stage_layers(m, plan, stage) if i >= first]

        def stage_bytes_per_token(stage: int) -> float:  # one microbatch's activations per token on ``stage``
            return sum(stage_kept(stage))

        def stage_work(stage: int) -> float:  # bytes one layer's recompute re-creates (the stage's largest)
            return tokens * max((redo[m.is_moe_layer(i)] for i in held_layers(plan, m.n_layers, stage) if i >= first),
                                default=0.0)

        stored = stage_bytes_per_token(0) * tokens * in_flight
        if plan.activation_offload:  # the layer inputs wait in host memory but the stash's (pp 1: one micro-batch)
            stored = tokens * offloaded_stash_bytes(stage_kept(0))
        head = loss_logits_bytes(m, plan.tp, tokens, plan.loss_implementation) + zero3_head_bytes(
            m, plan.tp, plan.zero_stage, embeddings_trainable(w.trainable), b, g)
        # plan.defer_head_wgrad: the held head inputs and logit gradients wait for the drain on the loss stage
        head += held_bytes(plan, m.d_model, m.vocab_size, tokens, scenario_precision(s).act_bytes)
        # MTP modules (workload.mtp_layers) run beside the loss: their activations while it runs, their parameters
        head += w.mtp_layers * kept[m.is_moe_layer(m.n_layers - 1)] * tokens
        mtp = mtp_param_bytes(s, b, g, dp, expert_dp)
        if copies == 2:  # DualPipe: the busiest stage, each stage's activations from its order
            weights, grads, optim, acts, stage = dualpipe_busiest_stage(s, params_of, kept, head, stage_work, tokens,
                                                                         mtp)
        elif plan.pp == 1:  # stage 0 computes the loss
            acts = stored + loss_or_work(head, stage_work(0))
            weights, grads, optim = weights + mtp[0], grads + mtp[1], optim + mtp[2]
            if plan.optimizer_in_backward or not grads_meet_forward(plan):  # .grad born in backward (grad_lifetime)
                live = largest_grad_bytes(m, plan, g, embeddings_trainable(w.trainable)) \
                    if plan.optimizer_in_backward else grads
                grads, acts = transient_peak(grads, acts, stage_work(0), live)
        else:
            acts = stored + stage_work(0)
            # the last stage adds the logits: it may hold the most when the split is uneven or when
            # its layers at stage 0's microbatches in flight (no stage holds more) plus the logits do
            last = stage_bytes_per_token(plan.pp - 1) * tokens * in_flight + loss_or_work(head, stage_work(plan.pp - 1))
            if plan.splits_layers or w.mtp_layers or sum(params_of(plan.pp - 1)) + last > weights + grads + optim + acts:
                weights, grads, optim, acts, stage = busiest_stage(s, params_of, stored, kept, head,
                                                                    [stage_work(st) for st in range(plan.pp)],
                                                                    tokens * in_flight, mtp)
        kv = 0.0
    else:
        # Serving engines pre-allocate a KV pool from what the weights leave (vLLM-style); it fits
        # when the pool holds at least one sequence of the longest length the workload can send.
        weights = parameter_bytes(s, *weight_params_per_device(m, plan, red)) + spec_weight_bytes_per_device(s)
        grads = optim = 0.0
        acts = _serving_activation_bytes(s)
        kv = serving_kv_pool_bytes(s)  # what the engine allocates, and kv_cache_capacity_tokens counts
        need = longest_request_kv_bytes(s, serving_kv_tokens)
        # the engine's budget is all it may use: its share of what CUDA reports (vLLM), or what the CUDA context
        # and the communicators leave of it (TensorRT-LLM; moesim.serving_reserve)
        capacity = engine_budget_bytes(s) / GIB
    parts = [x / GIB for x in (weights, grads, optim, acts, kv)]
    total = sum(parts)
    fits = total <= capacity * (1 + 1e-12)  # a pool sized to fill the engine's share sums to it, up to rounding
    headroom = capacity - total
    if not isinstance(w, TrainingWorkload):  # the pool, not the budget, must hold the longest request
        fits, headroom = serving_fit(capacity, (weights + acts) / GIB, kv / GIB, need / GIB, plan.pp)
    reserved = reserved_gib(total, stranded_fraction(s))
    if fits:  # short of memory, the allocator frees its cache and retries: never more than the device
        reserved = min(reserved, capacity)
    return MemoryReport(*parts, total_gib=total, capacity_gib=capacity, fits=fits, headroom_gib=headroom,
                        reserved_gib=reserved, stage=stage, held_gib=held, longest_request_kv_gib=need / GIB)


def zero_sharded_bytes(dense: float, experts: float, dense_bytes: float, expert_bytes: float, shard_from: int,
                       zero_stage: int, dp: int, expert_dp: int) -> float:
    """Bytes on one device of ``dense`` and ``experts`` parameters at ``dense_bytes`` / ``expert_bytes``
    each, split over their data-parallel groups (``dp`` / ``expert_dp``) once ``zero_stage`` reaches
    ``shard_from`` (ZeRO: 1 shards optimizer states, 2 gradients too, 3 weights too)."""
    sharded = zero_stage >= shard_from
    return dense * dense_bytes / (dp if sharded else 1) + experts * expert_bytes / (expert_dp if sharded else 1)


def mtp_param_bytes(s: Scenario, weight_bytes: float, grad_bytes_: float, dp: int,
                    expert_dp: int) -> tuple[float, float, float]:
    """(weights, gradients, optimizer) bytes the MTP modules (``workload.mtp_layers``) add on the
    stage that computes the loss: each holds the last layer's parameters on this device
    (``layer_params.layer_params_per_device``) and the ``2d x d`` projection over TP, sharded by the
    ZeRO stage as :func:`memory_report`; the embedding and head are shared. Zeros without MTP."""
    n = s.workload.mtp_layers
    if not n:
        return 0.0, 0.0, 0.0
    dense, experts = (float(a[-1]) for a in layer_params_per_device(s))
    dense += 2 * s.model.d_model ** 2 / s.plan.tp
    z = s.plan.zero_stage
    return tuple(n * zero_sharded_bytes(dense, experts, per, per, k, z, dp, expert_dp)
                 for per, k in ((weight_bytes, 3), (grad_bytes_, 2), (optimizer_bytes(s.plan, s.model.dtype), 1)))


def stranded_fraction(s: Scenario) -> float:
    """Share of the memory PyTorch's caching allocator reserves that no tensor holds at the peak
    (:func:`moesim.allocator.unused_fraction`). Serving engines allocate their pools up front, so
    what they reserve is what they hold; XLA (TPUs) plans a compiled step's buffers ahead of it and
    has no caching allocator to strand them; MLX on Apple silicon (moesim's Apple training scenarios)
    gives each array its own Metal buffer and, before a new one, frees as many cached ones as the
    limit needs (``MetalAllocator::malloc``, mlx/backend/metal/allocator.cpp): its cache never
    strands memory a tensor needs. 0 for all three."""
    w, plan = s.workload, s.plan
    device = s.hardware.device.name
    if not isinstance(w, TrainingWorkload) or compiled_step(device) or platform_of(device) == "mps":
        return 0.0
    return unused_fraction(plan.allocator, plan.recompute, not w.trainable.full)


def _finetune_param_bytes(s: Scenario, dense: float, experts: float, b: float, copies: int, dp: int,
                          expert_dp: int, stage: int | None = None) -> tuple[float, float, float]:
    """(weights, gradients, optimizer) bytes on one device of a fine-tuning run (``workload.trainable``
    other than ``all``): ``dense`` / ``experts`` base parameters on the device at ``b`` bytes each
    (``finetune.device_shares``: nf4 base weights under QLoRA, FP8 primary weights at :func:`stored_weight_bytes`,
    LoRA adapters added; under FP8 GEMMs the copies Transformer Engine caches of 16-bit weights,
    :func:`fp8_weight_cache_bytes`, frozen or not), gradients and Adam states only for the trainable share, each
    sharded by the ZeRO stage as :func:`memory_report`. ``stage``: the pipeline stage holding them (its own
    trainable shares: ``layers: N`` trains the last stages alone); None or ``pp`` 1: the whole model's."""
    z, m = s.plan.zero_stage, s.model
    where = None if stage is None or s.plan.pp == 1 else (stage_layers(m, s.plan, stage),
                                                         outside_params(m, s.plan, stage))
    sh = device_shares(m, s.workload.trainable, b, stored_weight_bytes(s, b), where)
    weights = copies * (zero_sharded_bytes(dense, experts, sh.dense_weight_bytes, sh.expert_weight_bytes, 3, z, dp,
                                           expert_dp) + fp8_weight_cache_bytes(s, dense, experts))
    dense_t, experts_t = dense * sh.dense_trainable, experts * sh.expert_trainable
    g, o = grad_bytes(s.model.dtype, s.plan.grad_dtype), optimizer_bytes(s.plan, s.model.dtype)
    grads = copies * zero_sharded_bytes(dense_t, experts_t, g, g, 2, z, dp, expert_dp)
    optim = copies * zero_sharded_bytes(dense_t, experts_t, o, o, 1, z, dp, expert_dp)
    # ZeRO-3: the running and prefetched blocks gathered whole (at the base's width), the share that trains has a gradient
    gw, gg = zero3_block_bytes(s, sh.dense_weight_bytes, sh.expert_weight_bytes, g, dp, expert_dp,
                               (sh.dense_trainable, sh.expert_trainable))
    return weights + gw, grads + gg, optim


def kv_bytes_per_token_per_device(s: Scenario) -> float:
    """KV cache bytes one token adds on one device: layers split over pp, KV heads over tp."""
    own = kv_bytes_per_token(s.model, scenario_precision(s)) / (s.plan.pp * kv_shards(s.model, s.plan.tp))
    return own + spec_kv_bytes_per_token_per_device(s)


def spec_model(s: Scenario) -> ModelSpec | None:
    """The model that drafts under ``workload.speculative``: the draft model, or one MTP head.

    An MTP head (DeepSeek-V3 report, sec. 2.2) is one transformer block shaped like the target's
    (MoE when the target is) sharing the target's embedding and output head; priced and stored as
    a one-layer copy of the target (its 2d x d input projection is added to the weights only).
    """
    spec = getattr(s.workload, "speculative", None)
    if spec is None:
        return None
    if spec.method == "draft":
        return spec.draft
    m = s.model
    return m.model_copy(update=dict(name=f"{m.name} MTP head", n_layers=1, first_dense_layers=0, moe_every=1))


def spec_plan(s: Scenario, draft: ModelSpec) -> PlanSpec:
    """The plan the drafter runs under: the target's TP on one pipeline stage, EP where it divides."""
    ep = s.plan.ep if draft.n_experts % s.plan.ep == 0 else 1
    return s.plan.model_copy(update=dict(pp=1, ep=ep, dp=s.plan.dp * s.plan.pp))


def spec_weight_bytes_per_device(s: Scenario) -> float:
    """Drafter weights on one device: the whole draft model (TP-sharded, on one stage), or k MTP heads
    (each a block of the target plus a 2d x d projection; embedding and head shared)."""
    d = spec_model(s)
    if d is None:
        return 0.0
    spec = s.workload.speculative
    dense, experts = weight_params_per_device(d, spec_plan(s, d))
    if spec.method == "draft":
        return (dense + experts) * precision(d.dtype, s.hardware.device).weight_bytes
    tp = s.plan.tp
    shared = (d.vocab_size * d.d_model * (1 if d.tied_embeddings else 2) + d.d_model) / tp
    per_head = dense - shared + experts + 2 * d.d_model * d.d_model / tp
    return spec.k * per_head * scenario_precision(s).weight_bytes


def spec_kv_bytes_per_token_per_device(s: Scenario) -> float:
    """KV bytes the drafter adds per token on one device (draft model's layers, or k MTP blocks)."""
    d = spec_model(s)
    if d is None:
        return 0.0
    spec = s.workload.speculative
    prec = precision(d.dtype, s.hardware.device) if spec.method == "draft" else scenario_precision(s)
    heads = 1 if spec.method == "draft" else spec.k
    return heads * kv_bytes_per_token(d, prec) / kv_shards(d, s.plan.tp)


def kv_shards(m: ModelSpec, tp: int) -> int:
    """Ways the KV cache splits over TP: KV heads split up to their count, then replicate; MLA replicates."""
    if m.mla is not None:
        return 1
    return min(tp, m.kv_heads)


def longest_request_kv_bytes(s: Scenario, tokens: float | None = None) -> float:
    """KV bytes per device of the longest request: ``tokens`` (default: the longest the serving workload can send,
    prompt + output), as KV slots (fewer when local attention layers keep only their window)."""
    longest = tokens if tokens is not None else _longest_request(s)
    slots = slot_map(s.model, s.workload.local_attention_mode)
    return (longest if slots is None else float(slots(int(math.ceil(longest))))) * kv_bytes_per_token_per_device(s)


def _longest_request(s: Scenario) -> float:
    """Tokens of the longest request the serving workload can send (prompt + output)."""
    w: ServingWorkload = s.workload  # type: ignore[assignment]
    longest = w.prompt_tokens.upper_bound_tokens() + w.output_tokens.upper_bound_tokens()
    return float(longest or s.model.max_seq_len)


def _serving_activation_bytes(s: Scenario) -> float:
    """Working activations of one serving iteration per device: max_batch_tokens x a few vectors, or what the
    engine's sampler warm-up holds (vLLM, ``moesim.serving_reserve``) where that is more: the profile run's forward
    and its sampler run come one after the other, so the larger peak is what the pool does not get."""
    m, w = s.model, s.workload
    work = w.max_batch_tokens * (4 * m.d_model + 2 * m.expert_width * m.top_k) * scenario_precision(s).act_bytes / s.plan.tp
    return max(work, sampler_warmup_bytes(s))


def serving_kv_pool_bytes(s: Scenario) -> float:
    """Bytes per device of the KV pool: what weights and activations leave of the engine's budget
    (:func:`moesim.serving_reserve.engine_budget_bytes`), all of it under ``memory_utilization`` (vLLM, SGLang),
    ``kv_cache_fraction`` of it otherwise (TensorRT-LLM's share of free memory)."""
    dense, experts = weight_params_per_device(s.model, s.plan, s.placement.redundant_experts)
    w = s.workload
    util = w.memory_utilization if isinstance(w, ServingWorkload) else None
    frac = w.kv_cache_fraction if isinstance(w, ServingWorkload) else 0.9
    taken = parameter_bytes(s, dense, experts) + _serving_activation_bytes(s) + spec_weight_bytes_per_device(s)
    left = max(engine_budget_bytes(s) - taken, 0.0)
    return left if util is not None else left * frac


def kv_cache_capacity_tokens(s: Scenario) -> float:
    """Tokens of KV cache one serving replica holds (its KV pool over the per-token bytes per device)."""
    return serving_kv_pool_bytes(s) / kv_bytes_per_token_per_device(s)
