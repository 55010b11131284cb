"""Memory per device: weights, gradients, optimizer states, activations, KV cache. Pure functions.

Training memory holds weights at the 16-bit width (bf16 under FP8 math), 2-byte gradients and a
12-byte mixed-precision Adam per parameter (ZeRO, Rajbhandari et al. 2020), sharded by the ZeRO
stage, and the activations per layer of Korthikanti et al. 2022 ("Reducing Activation
Recomputation in Large Transformer Models") of the layers pipeline stage 0 holds, times the
schedule's microbatches in flight; under FP8 only the inputs of FP8 GEMMs are kept in FP8
(DeepSeek-V3 technical report, 2024, sec. 3.3). Serving memory is the weights plus a KV pool.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from moesim.accounting import GIB, kv_bytes_per_token, param_counts
from moesim.engine.expert_tp import expert_dp_group
from moesim.engine.training.schedules import schedule_for
from moesim.precision import Precision, precision, scenario_precision
from moesim.schemas import (
    DTYPE_BYTES,
    ModelSpec,
    PlanSpec,
    RoutingSpec,
    Scenario,
    ServingWorkload,
    TrainingWorkload,
)

# ---------------------------------------------------------------- memory per device


@dataclass(frozen=True)
class MemoryReport:
    """Memory per device, GiB, for the busiest device (pipeline stage 0)."""

    weights_gib: float
    gradients_gib: float
    optimizer_gib: float
    activations_gib: float
    kv_cache_gib: float
    total_gib: float
    capacity_gib: float
    fits: bool
    headroom_gib: float

    def as_dict(self) -> dict:
        return asdict(self)


def weight_params_per_device(m: ModelSpec, plan: PlanSpec, redundant_experts: int = 0) -> tuple[float, float]:
    """(dense, expert) parameters held by one device before ZeRO-3 sharding.

    Dense parameters split over tp*pp; routed experts over ep*etp*pp (each expert split over the
    expert TP, ``plan.expert_tp``: tp unless ``plan.etp`` is set; Megatron-core MoE parallel folding).
    With ``redundant_experts`` N (EPLB copies), each EP rank holds ``(n_experts + N) / ep`` experts.
    Stage 0 also holds the embedding, so its share is at least the average.
    """
    p = param_counts(m)
    dense = p.dense / (plan.tp * plan.pp)
    experts = p.routed_experts / (plan.ep * plan.expert_tp * plan.pp)
    if redundant_experts and m.n_experts > 1:
        experts *= (m.n_experts + redundant_experts) / m.n_experts
    if plan.pp > 1 and (plan.first_stage_layers is not None or plan.last_stage_layers is not None):
        d_share, e_share = stage_param_shares(m, plan, p)
        dense, experts = dense * d_share, experts * e_share
    return dense, experts


def stage_param_shares(m: ModelSpec, plan: PlanSpec, p=None, stage: int = 0) -> tuple[float, float]:
    """(dense, expert) parameters of pipeline stage ``stage`` over the even split's average (1, 1 when
    the stage holds ``n_layers / pp`` layers of the average kind): its own layers (``stage_layers``),
    the parameters outside the layers (embedding, head, final norm) averaged over pp as before."""
    p = p or param_counts(m)
    own = stage_layers(m, plan, stage)
    moe_own = sum(1 for i in own if m.is_moe_layer(i))
    n_moe, n_dense = m.n_moe_layers, m.n_layers - m.n_moe_layers
    per_layer = p.attention / m.n_layers + 2 * m.d_model  # attention and the layer's two norms
    in_layers = p.attention + 2 * m.d_model * m.n_layers + p.dense_ffn + p.shared_experts + p.router
    own_dense = (len(own) * per_layer + (len(own) - moe_own) * (p.dense_ffn / n_dense if n_dense else 0.0)
                 + moe_own * ((p.shared_experts + p.router) / n_moe if n_moe else 0.0))
    d_share = ((p.dense - in_layers) / plan.pp + own_dense) / (p.dense / plan.pp)
    e_share = moe_own * plan.pp / n_moe if n_moe else 1.0
    return d_share, e_share


#: Bytes per parameter of the gradients (16-bit) and of mixed-precision Adam's states (fp32 master
#: copy + fp32 m + fp32 v = 4 + 4 + 4) in training: ZeRO (Rajbhandari et al. 2020, sec. 3.1) and
#: Megatron-core's distributed-optimizer defaults (bf16 grads, fp32 master, m and v). FP8 training
#: keeps them: FP8 is only the GEMMs' inputs. The DeepSeek-V3 report (sec. 3.3.3) instead keeps
#: fp32 gradients and bf16 m and v (4 + 4 + 2 + 2 = 12 bytes of grads + master + moments against
#: 2 + 12 = 14 here); this model keeps the Megatron default.
TRAIN_GRAD_BYTES = 2.0
TRAIN_OPTIMIZER_BYTES = 12.0


def training_weight_bytes(prec: Precision) -> float:
    """Bytes per parameter of the model weights a training step keeps (before ZeRO-3 sharding).

    The 16-bit (or fp32) width of the compute: ``DTYPE_BYTES[prec.act_dtype]``. FP8 training keeps
    bf16 weights (2 bytes), not fp8 ones: the GEMMs cast them to FP8 on the fly (Transformer
    Engine, Megatron-core's default without ``--fp8-param-gather``) and the optimizer's fp32 master
    copy is in :data:`TRAIN_OPTIMIZER_BYTES`. Not counted: the FP8 copy (and, on Hopper, its
    transpose) of each weight that Transformer Engine caches across a step's microbatches, up to
    2 more bytes per parameter.
    """
    return DTYPE_BYTES[prec.act_dtype]


def activation_widths(prec: Precision) -> tuple[float, float]:
    """``(b16, b8)``: bytes per element of saved activations kept in 16 bits, and of saved inputs of
    GEMMs that run in the compute dtype.

    ``b16`` is the activation dtype's width (``Precision.act_dtype``: bf16 under FP8 math, else the
    compute dtype; fp32 training: 4). ``b8`` is 1 under FP8 math, else ``b16``: an FP8 GEMM saves
    the FP8 cast of its input for its weight-gradient GEMM (Transformer Engine's ``Linear`` /
    ``LayerNormLinear`` / ``GroupedLinear`` under ``fp8_autocast``; DeepSeek-V3 report sec. 3.3.3,
    "we cache and dispatch activations in FP8"). Everything else stays 16-bit: norm inputs,
    attention's Q/K/V and output (flash attention runs in bf16: DeepSeek-V3 sec. 3.3.1 keeps
    attention, normalization and MoE gating in their original precision), the router input, and the
    FFN's fc1 output (the SwiGLU/GeLU input).
    """
    return DTYPE_BYTES[prec.act_dtype], prec.act_bytes


def routed_slots_per_token(m: ModelSpec, routing: RoutingSpec | None = None, tokens: float | None = None) -> float:
    """Routed-expert buffer rows one token of a MoE layer occupies on average: the FFN activations'
    multiplier in :func:`ffn_activation_bytes_per_token`.

    ``dropless`` (or no ``routing``): ``top_k`` (what is routed is computed). ``drop``: every expert
    is padded to its capacity (GShard/Switch layout, ``engine.routing``): each source rank gives each
    of the ``E`` experts ``C = capacity_per_expert(tokens, top_k, E, cf, min_capacity)`` slots, so
    ``E * C / tokens`` rows per token, ``cf * top_k`` up to rounding (used when ``tokens`` is None).
    ``tokens``: one source rank's microbatch. A model without routed experts (``n_experts`` 1): 1.
    """
    if m.n_experts <= 1:
        return 1.0
    if routing is None or routing.overflow != "drop":
        return float(m.top_k)
    if tokens is None:
        return routing.capacity_factor * m.top_k
    from moesim.engine.routing import capacity_per_expert  # local: engine modules import accounting

    t = max(float(tokens), 1.0)
    cap = capacity_per_expert(t, m.top_k, m.n_experts, routing.capacity_factor, routing.min_capacity)
    return m.n_experts * cap / t


def attention_activation_bytes_per_token(m: ModelSpec, recompute: str, prec: Precision | None = None) -> float:
    """Bytes the attention block saves for backward per token (one layer, before TP/SP splitting).

    Korthikanti et al. 2022 (sec. 4.1, attention: ``11sbh + 5as^2b`` bytes at 2 bytes per element)
    with flash attention (no ``s^2`` terms, no dropout masks), per token, ``b16``/``b8`` from
    :func:`activation_widths`::

        standard: d*b16 (norm input) + d*b8 (QKV GEMM input) + (h*hd + 2*kv*hd)*b16 (Q, K, V)
                  + h*hd*b16 (attention output O, also the output projection's input)
        MLA:      d*b16 + (q_lora + kv_lora)*b16 (the block's and the two latent RMSNorms' inputs)
                  + (d + q_lora + kv_lora)*b8 (down-projection input; Q and KV up-projection inputs)
                  + (2*h*(qk_nope + qk_rope) + h*v_head)*b16 (Q, K with the rope part per head, V)
                  + h*v_head*b16 (O)

    (``q_lora_rank`` 0: Q is projected from the block input, no Q latent.) With bf16 this is
    Korthikanti's ``2sbh`` (norm) + ``2sbh`` (QKV input) + ``6sbh`` (Q, K, V) + ``2sbh`` (O) for
    multi-head attention, i.e. his attention term without the dropout mask and the ``s^2`` terms,
    plus the norm input he books under "layer norm". ``selective``: the attention core's inputs
    Q/K/V are recomputed from the saved GEMM inputs (Megatron-core's ``core_attn`` / MLA's
    ``mla_up_proj`` recompute) and not saved. Not counted: flash attention's fp32 log-sum-exp
    (``4h`` bytes) and, under FP8, the output projection's FP8 copy of O (``h*v`` bytes).
    """
    b16, b8 = activation_widths(prec or precision(m.dtype))
    d, h = m.d_model, m.n_heads
    if m.mla is None:
        norm_in, gemm_in = d, d
        qkv = h * m.head_width + 2 * m.kv_heads * m.head_width
        out = h * m.head_width
    else:
        a = m.mla
        latents = a.q_lora_rank + a.kv_lora_rank
        norm_in, gemm_in = d + latents, d + latents
        qkv = 2 * h * (a.qk_nope_head_dim + a.qk_rope_head_dim) + h * a.v_head_dim
        out = h * a.v_head_dim
    core = 0 if recompute == "selective" else qkv * b16
    return norm_in * b16 + gemm_in * b8 + core + out * b16


def _mlp_activation_bytes(width: int, gated: bool, b16: float, b8: float) -> float:
    """One FFN's saved tensors past its input: fc1 output (gate and up for SwiGLU) in 16 bits, fc2 input."""
    return (2 if gated else 1) * width * b16 + width * b8


def ffn_activation_bytes_per_token(m: ModelSpec, moe_layer: bool, prec: Precision | None = None,
                                   routed_slots: float | None = None) -> float:
    """Bytes the FFN block of one layer saves for backward per token (before TP/SP splitting).

    Korthikanti et al. 2022 (sec. 4.1, MLP: ``19sbh``: fc1 input ``2sbh``, GeLU input and fc2
    input ``8sbh`` each, a dropout mask) with SwiGLU adding the gate, and no dropout. Per token,
    with ``g`` = 2 for a gated FFN (gate and up) else 1, ``b16``/``b8`` from :func:`activation_widths`::

        dense layer (width F = ffn_hidden): d*b16 (norm input) + d*b8 (fc1 input) + g*F*b16 + F*b8
        MoE layer:  d*b16 (norm input) + d*b16 (router input, also the shared expert's fc1 input)
                    + slots * (d*b8 + g*w*b16 + w*b8)    (routed rows, w = expert_ffn_hidden)
                    + g*S*b16 + S*b8                     (shared experts, S = n_shared * shared width)

    ``slots`` = :func:`routed_slots_per_token` (``top_k`` dropless, ``cf * top_k`` padded when
    ``overflow: drop``; default ``top_k``). The router runs in 16 bits (DeepSeek-V3 sec. 3.3.1), so
    its input is saved at ``b16``; each routed row's fc1 input is the permuted (dispatched) copy. A
    MoE layer without routed experts (``n_experts`` 1, shared experts only) has no router: its norm
    output is saved once at ``b8`` and its one expert has one row per token. Not counted: the
    router's probabilities (``E`` fp32 per token), the expert outputs the combine's weighted sum
    saves for the probabilities' gradient, and the shared expert's FP8 copy of its input under FP8.
    """
    b16, b8 = activation_widths(prec or precision(m.dtype))
    d = m.d_model
    if not moe_layer:
        return d * b16 + d * b8 + _mlp_activation_bytes(m.ffn_hidden, m.gated_ffn, b16, b8)
    shared = _mlp_activation_bytes(m.n_shared_experts * m.shared_width, m.gated_ffn, b16, b8)
    routed = _mlp_activation_bytes(m.expert_width, m.gated_ffn, b16, b8)
    if m.n_experts <= 1:
        return d * b16 + d * b8 + routed + shared
    slots = m.top_k if routed_slots is None else routed_slots
    return 2 * d * b16 + slots * (d * b8 + routed) + shared


def layer_activation_bytes_per_token(m: ModelSpec, layer: int, tp: int, recompute: str,
                                     prec: Precision | None = None, routed_slots: float | None = None) -> float:
    """Activation bytes layer ``layer`` (0-based) keeps for backward, per token per device.

    Sequence parallelism splits everything over ``tp`` (Korthikanti et al. 2022, sec. 4.2.2:
    ``34sbh/t`` per layer without the attention core). ``full`` recompute keeps only the layer's
    input, ``d*b16/tp`` (Korthikanti's ``2sbh`` per layer); otherwise attention
    (:func:`attention_activation_bytes_per_token`) + FFN (:func:`ffn_activation_bytes_per_token`:
    the dense FFN on dense layers, routed + shared experts on MoE layers).
    """
    prec = prec or precision(m.dtype)
    if recompute == "full":
        return m.d_model * activation_widths(prec)[0] / tp
    attn = attention_activation_bytes_per_token(m, recompute, prec)
    ffn = ffn_activation_bytes_per_token(m, m.is_moe_layer(layer), prec, routed_slots)
    return (attn + ffn) / tp


def activation_bytes_per_token_layer(m: ModelSpec, tp: int, recompute: str, prec: Precision | None = None,
                                     routed_slots: float | None = None) -> float:
    """Activation bytes kept for backward per token per device, averaged over the model's layers
    (dense layers with their ``ffn_hidden`` FFN, MoE layers with routed and shared experts).

    The mean of :func:`layer_activation_bytes_per_token` over all ``n_layers``; see it and
    :func:`attention_activation_bytes_per_token` / :func:`ffn_activation_bytes_per_token` for
    the formulas and sources. ``routed_slots``: :func:`routed_slots_per_token` (default ``top_k``).
    """
    prec = prec or precision(m.dtype)
    n_moe = m.n_moe_layers
    first_moe = next((i for i in range(m.n_layers) if m.is_moe_layer(i)), None)
    first_dense = next((i for i in range(m.n_layers) if not m.is_moe_layer(i)), None)
    total = 0.0
    for layer, count in ((first_moe, n_moe), (first_dense, m.n_layers - n_moe)):
        if count:
            total += count * layer_activation_bytes_per_token(m, layer, tp, recompute, prec, routed_slots)
    return total / m.n_layers


def stage_layers(m: ModelSpec, plan: PlanSpec, stage: int = 0) -> list[int]:
    """0-based layers whose activations one microbatch leaves on pipeline stage ``stage``
    (``schedule_for(plan).stage_layers``): the ``numpy.array_split`` chunks the engine plays
    (``Schedule.chunk_layers``), stage ``s`` holding chunks ``s, s + pp, ...``; under DualPipe the
    stage's direction-0 chunk (a microbatch passes one of its two)."""
    return schedule_for(plan).stage_layers(m.n_layers, stage, plan.pp, plan.virtual_stages)


def memory_report(s: Scenario, serving_kv_tokens: float | None = None) -> MemoryReport:
    """Memory per device for training (weights, grads, Adam, activations) or serving (weights, KV).

    Training, on pipeline stage 0 (the busiest stage when ``plan.first_stage_layers`` /
    ``last_stage_layers`` make the split uneven: :func:`_busiest_uneven_stage`): weights at :func:`training_weight_bytes` (bf16 under FP8 math),
    gradients at :data:`TRAIN_GRAD_BYTES` and Adam at :data:`TRAIN_OPTIMIZER_BYTES` per parameter,
    sharded by ZeRO stage, times the schedule's ``param_copies`` (DualPipe: 2); activations =
    microbatch tokens x the microbatches the schedule keeps in
    flight x the sum of :func:`layer_activation_bytes_per_token` over the stage's layers
    (:func:`stage_layers`), with routed rows from :func:`routed_slots_per_token` (padded to capacity
    under ``overflow: drop``). Context parallelism (Megatron-core, ``plan.cp``): a device holds
    ``seq_len / cp`` tokens of each sequence, so activations divide by ``cp`` (the ring's remote K/V
    block in flight is not counted), and ZeRO shards over the ``dp * cp`` ranks holding the same weights.

    Serving: the KV pool takes ``kv_cache_fraction`` of what weights and working activations leave;
    it must hold ``serving_kv_tokens`` (default: the longest request) or the plan does not fit.
    """
    m, plan = s.model, s.plan
    prec = scenario_precision(s)
    b = prec.weight_bytes
    dense, experts = weight_params_per_device(m, plan, s.placement.redundant_experts)
    # ZeRO groups: the ranks holding the same weights, DP x CP (dense) and expert-DP (experts:
    # tp * cp * dp / (ep * etp), i.e. DP/EP x CP when etp = tp; engine/expert_tp.py)
    dp = plan.dp * plan.cp
    expert_dp = expert_dp_group(plan)[0]  # data-parallel group of one expert's replicas
    capacity = s.hardware.device.mem_gib
    w = s.workload
    if isinstance(w, TrainingWorkload):
        z = plan.zero_stage
        b = training_weight_bytes(prec)
        copies = schedule_for(plan).param_copies  # DualPipe: the stage's chunk of each direction, 2x
        weights = copies * (dense * b / (dp if z >= 3 else 1) + experts * b / (expert_dp if z >= 3 else 1))
        g, o = TRAIN_GRAD_BYTES, TRAIN_OPTIMIZER_BYTES
        grads = copies * (dense * g / (dp if z >= 2 else 1) + experts * g / (expert_dp if z >= 2 else 1))
        optim = copies * (dense * o / (dp if z >= 1 else 1) + experts * o / (expert_dp if z >= 1 else 1))
        micro_seqs = w.global_batch_seqs / (plan.dp * plan.microbatches)
        tokens = micro_seqs * w.seq_len / plan.cp  # this CP rank's share of the microbatch
        slots = routed_slots_per_token(m, s.routing, tokens)
        in_flight = schedule_for(plan).microbatches_in_flight(plan.pp, plan.microbatches, plan.virtual_stages)
        if plan.overlap_alltoall and plan.ep > 1:  # combined 1F1B: one more warm-up forward (of a chunk)
            in_flight = min(in_flight + (1.0 / plan.virtual_stages if plan.pp > 1 else 1.0), plan.microbatches)
        per_token = sum(layer_activation_bytes_per_token(m, i, plan.tp, plan.recompute, prec, slots)
                        for i in stage_layers(m, plan))
        acts = per_token * tokens * in_flight
        kv = 0.0
    else:
        # Serving engines pre-allocate a KV pool from what the weights leave (vLLM-style); it fits
        # when the pool holds at least one sequence of the longest length the workload can send.
        weights = (dense + experts) * b + spec_weight_bytes_per_device(s)
        grads = optim = 0.0
        acts = _serving_activation_bytes(s)
        pool = serving_kv_pool_bytes(s)
        need = (serving_kv_tokens if serving_kv_tokens is not None else _longest_request(s)) * kv_bytes_per_token_per_device(s)
        kv = pool if pool >= need else need
    if isinstance(w, TrainingWorkload) and plan.pp > 1 and (plan.first_stage_layers or plan.last_stage_layers):
        weights, grads, optim, acts = _busiest_uneven_stage(s, (weights, grads, optim, acts))
    parts = [x / GIB for x in (weights, grads, optim, acts, kv)]
    total = sum(parts)
    return MemoryReport(*parts, total_gib=total, capacity_gib=capacity, fits=total <= capacity,
                        headroom_gib=capacity - total)


def _busiest_uneven_stage(s: Scenario, stage0: tuple[float, float, float, float]) -> tuple[float, ...]:
    """(weights, grads, optimizer, activations) bytes of the stage holding the most, for a plan whose
    first or last stage has its own layer count (``plan.first_stage_layers`` / ``last_stage_layers``).

    Stage 0 is no longer the busiest by construction: a later stage may hold more layers. Each
    stage's parameters scale with its own layers (:func:`stage_param_shares`, over stage 0's), its
    activations are the peak, over the schedule's order on that stage, of the layers whose forward
    activations are live (a chunk's from its forward to its input-gradient backward) x the bytes
    per token of each layer, scaled like stage 0's (which carries the in-flight rules above).
    """
    m, plan = s.model, s.plan
    prec = scenario_precision(s)
    w = s.workload
    tokens = w.global_batch_seqs / (plan.dp * plan.microbatches) * w.seq_len / plan.cp
    slots = routed_slots_per_token(m, s.routing, tokens)
    per_layer = [layer_activation_bytes_per_token(m, i, plan.tp, plan.recompute, prec, slots) for i in range(m.n_layers)]
    peaks = _live_activation_peaks(plan, m.n_layers, per_layer)
    d0, e0 = stage_param_shares(m, plan, stage=0)
    best, best_total = stage0, sum(stage0)
    for st in range(1, plan.pp):
        d, e = stage_param_shares(m, plan, stage=st)
        scale = (d + e) / (d0 + e0) if d0 + e0 > 0 else 1.0  # dense and experts: one ratio (close enough)
        acts = stage0[3] * peaks[st] / peaks[0] if peaks[0] > 0 else stage0[3]
        parts = (stage0[0] * scale, stage0[1] * scale, stage0[2] * scale, acts)
        if sum(parts) > best_total:
            best, best_total = parts, sum(parts)
    return best


def _live_activation_peaks(plan: PlanSpec, n_layers: int, per_layer: list[float]) -> list[float]:
    """Per stage: the most activation bytes per token its live chunks hold at once (one microbatch's
    forward of a chunk adds its layers' bytes, that chunk's whole or input-gradient backward frees them)."""
    from moesim.engine.training.schedules import Unit

    sched = schedule_for(plan)
    chunks = sched.chunk_layers(n_layers, plan.pp, plan.virtual_stages)
    out = []
    for st, order in enumerate(sched.orders(plan.pp, plan.microbatches, plan.virtual_stages)):
        live = peak = 0.0
        for entry in order:
            for u in ([entry] if isinstance(entry, Unit) else entry):
                size = sum(per_layer[i] for i in chunks[sched.global_chunk(st, u.chunk, plan.pp)])
                if not u.backward:
                    live += size
                elif u.part in ("", "B"):
                    live -= size
                peak = max(peak, live)
        out.append(peak)
    return out


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


def _longest_request(s: Scenario) -> float:
    """Tokens of the longest request the serving workload can send (prompt + output)."""
    w: ServingWorkload = s.workload  # type: ignore[assignment]
    longest = w.prompt_tokens.upper_bound_tokens() + w.output_tokens.upper_bound_tokens()
    return float(longest or s.model.max_seq_len)


def _serving_activation_bytes(s: Scenario) -> float:
    """Working activations of one serving iteration per device: max_batch_tokens x a few vectors."""
    m, w = s.model, s.workload
    return w.max_batch_tokens * (4 * m.d_model + 2 * m.expert_width * m.top_k) * scenario_precision(s).act_bytes / s.plan.tp


def serving_kv_pool_bytes(s: Scenario) -> float:
    """Bytes per device of the KV pool: kv_cache_fraction of what weights and activations leave."""
    dense, experts = weight_params_per_device(s.model, s.plan, s.placement.redundant_experts)
    w = s.workload
    frac = w.kv_cache_fraction if isinstance(w, ServingWorkload) else 0.9
    left = (s.hardware.device.mem_gib * GIB - (dense + experts) * scenario_precision(s).weight_bytes
            - _serving_activation_bytes(s) - spec_weight_bytes_per_device(s))
    return max(left, 0.0) * frac


def kv_cache_capacity_tokens(s: Scenario) -> float:
    """Tokens of KV cache one serving replica holds (its KV pool over the per-token bytes per device)."""
    return serving_kv_pool_bytes(s) / kv_bytes_per_token_per_device(s)
