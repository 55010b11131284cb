"""Analytic accounting: parameters, FLOPs, bytes and memory per device. Pure functions.

Conventions: parameter counts are plain numbers of weights; FLOPs count a multiply-add as 2;
bytes follow ``moesim.precision``: weights at the model dtype's bytes per parameter (quantization
scales included), activations and the KV cache at the compute dtype's bytes (16-bit when int8/int4,
or fp8 without fp8 tensor cores, run weight-only). Functions given only a model assume a device
with fp8 tensor cores and group-128 scales. Norm weights are counted; biases are not (the presets
have none). Sources for the memory formulas: ZeRO (Rajbhandari et al. 2020) for the 2+2+12 bytes
per parameter of mixed-precision Adam, and Korthikanti et al. 2022 for activations per layer.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from moesim.engine.schedules import schedule_for
from moesim.precision import Precision, precision, scenario_precision, summary_fields
from moesim.schemas import ModelSpec, PlanSpec, Scenario, ServingWorkload, TrainingWorkload

GIB = 2**30


# ---------------------------------------------------------------- parameters


def attention_params(m: ModelSpec) -> int:
    """Weights of one attention block (Q, K, V, O projections; MLA's low-rank factors)."""
    d, h = m.d_model, m.n_heads
    if m.mla is not None:
        a = m.mla
        qk = a.qk_nope_head_dim + a.qk_rope_head_dim
        q = d * a.q_lora_rank + a.q_lora_rank * h * qk if a.q_lora_rank else d * h * qk
        kv = d * (a.kv_lora_rank + a.qk_rope_head_dim) + a.kv_lora_rank * h * (a.qk_nope_head_dim + a.v_head_dim)
        norms = a.kv_lora_rank + a.q_lora_rank
        return q + kv + h * a.v_head_dim * d + norms
    q_out = h * m.head_width
    kv_out = m.kv_heads * m.head_width
    return d * q_out + 2 * d * kv_out + q_out * d


def ffn_params(d_model: int, hidden: int, gated: bool) -> int:
    """Weights of one FFN (or one expert): 3 matrices when gated (SwiGLU), else 2."""
    return (3 if gated else 2) * d_model * hidden


def expert_params(m: ModelSpec) -> int:
    """Weights of one routed expert."""
    return ffn_params(m.d_model, m.expert_width, m.gated_ffn)


@dataclass(frozen=True)
class ParamCounts:
    """Parameter counts of a model, split by where they live."""

    embedding: int
    attention: int  # all layers
    dense_ffn: int  # all dense layers
    routed_experts: int  # all MoE layers, all routed experts
    shared_experts: int
    router: int
    norms: int
    total: int
    active: int  # used by one token: routed experts count top_k of n_experts

    @property
    def dense(self) -> int:
        """Everything but the routed experts (replicated or TP-sharded, never EP-sharded)."""
        return self.total - self.routed_experts

    def as_dict(self) -> dict:
        return asdict(self)


def param_counts(m: ModelSpec) -> ParamCounts:
    """Total and active parameters of ``m``."""
    embed = m.vocab_size * m.d_model * (1 if m.tied_embeddings else 2)
    attn = m.n_layers * attention_params(m)
    dense_ffn = m.n_dense_layers * ffn_params(m.d_model, m.ffn_hidden, m.gated_ffn)
    n_moe = m.n_moe_layers
    routed = n_moe * m.n_experts * expert_params(m) if m.n_experts > 1 else 0
    if m.n_experts == 1 and n_moe:  # a "MoE" layer with one routed expert is a dense FFN of that width
        routed = n_moe * expert_params(m)
    shared = n_moe * m.n_shared_experts * ffn_params(m.d_model, m.shared_width, m.gated_ffn)
    router = n_moe * m.d_model * m.n_experts if m.n_experts > 1 else 0
    norms = (2 * m.n_layers + 1) * m.d_model
    total = embed + attn + dense_ffn + routed + shared + router + norms
    routed_active = routed * m.top_k // m.n_experts if m.n_experts > 1 else routed
    active = total - routed + routed_active
    return ParamCounts(embed, attn, dense_ffn, routed, shared, router, norms, total, active)


# ---------------------------------------------------------------- FLOPs and bytes


def attention_core_flops(m: ModelSpec, context_tokens: float) -> float:
    """Forward FLOPs of QK^T and AV for one token attending to ``context_tokens`` keys, all layers."""
    if m.mla is not None:
        qk = m.mla.qk_nope_head_dim + m.mla.qk_rope_head_dim
        per_layer = 2 * m.n_heads * context_tokens * (qk + m.mla.v_head_dim)
    else:
        per_layer = 4 * m.n_heads * m.head_width * context_tokens
    return m.n_layers * per_layer


def flops_per_token(m: ModelSpec, seq_len: int | None = None, context_tokens: float | None = None) -> float:
    """Forward FLOPs per token: 2 x active matmul weights + attention over a causal context.

    ``seq_len``: tokens per sequence; the average token attends to ``seq_len / 2`` keys.
    Defaults to ``m.max_seq_len``. ``context_tokens`` (instead): the keys the average token
    attends to (serving: ``serving_mean_context``). Embedding lookup is free; the output head is a matmul.
    """
    p = param_counts(m)
    # The input embedding is a gather (no FLOPs) unless tied, when its one table is the output head.
    matmul = p.active - p.norms - (0 if m.tied_embeddings else m.vocab_size * m.d_model)
    if context_tokens is None:
        context_tokens = (m.max_seq_len if seq_len is None else seq_len) / 2
    return 2.0 * matmul + attention_core_flops(m, context_tokens)


def serving_mean_context(s: Scenario) -> float:
    """Keys the average generated token attends to: mean prompt + half the mean output (a trace's
    means when the lengths come from ``workload.arrival.trace``; half ``max_seq_len`` each without one)."""
    w: ServingWorkload = s.workload  # type: ignore[assignment]
    prompt_col = output_col = None
    if w.arrival.trace is not None and "trace" in (w.prompt_tokens.dist, w.output_tokens.dist):
        from moesim.engine.requests import read_trace  # local: reads a file, only when asked

        _, prompt_col, output_col = read_trace(w.arrival.trace)
    half = s.model.max_seq_len / 2
    return w.prompt_tokens.mean_tokens(half, prompt_col) + w.output_tokens.mean_tokens(half, output_col) / 2


def training_flops_per_token(m: ModelSpec, seq_len: int | None = None, recompute: str = "none") -> float:
    """Forward + backward FLOPs per token (3x forward; full recompute adds another forward)."""
    f = flops_per_token(m, seq_len)
    return f * (4.0 if recompute == "full" else 3.0)


def kv_bytes_per_token(m: ModelSpec, prec: Precision | None = None) -> float:
    """KV cache bytes one token adds across all layers (whole model, before any sharding)."""
    if m.mla is not None:
        per_layer = m.mla.kv_lora_rank + m.mla.qk_rope_head_dim
    else:
        per_layer = 2 * m.kv_heads * m.head_width
    return m.n_layers * per_layer * (prec or precision(m.dtype)).kv_bytes


def expected_experts_touched(n_experts: int, top_k: int, tokens: float) -> float:
    """Expected distinct experts per MoE layer that ``tokens`` uniformly routed tokens hit: E(1-(1-k/E)^B)."""
    if n_experts <= 1:
        return float(n_experts)
    return n_experts * (1.0 - (1.0 - top_k / n_experts) ** tokens)


def decode_bytes_per_token(m: ModelSpec, context_tokens: float = 0.0, batch: int = 1,
                           prec: Precision | None = None) -> float:
    """Bytes read from memory per decode step per sequence at batch ``batch``.

    Reads every non-expert weight once per step, the experts the batch touches (expected, uniform
    routing), and each sequence's KV cache. Divided by ``batch`` to give a per-token figure.
    """
    p = param_counts(m)
    prec = prec or precision(m.dtype)
    bytes_w = prec.weight_bytes
    embed_read = m.vocab_size * m.d_model  # output head; the input embedding is a gather
    touched = expected_experts_touched(m.n_experts, m.top_k, batch)
    experts = m.n_moe_layers * touched * expert_params(m) if m.n_experts > 1 else p.routed_experts
    other = p.total - p.routed_experts - p.embedding + embed_read
    weights = (other + experts) * bytes_w
    kv = kv_bytes_per_token(m, prec) * context_tokens * batch
    return (weights + kv) / batch


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


def weight_params_per_device(m: ModelSpec, plan: PlanSpec) -> tuple[float, float]:
    """(dense, expert) parameters held by one device before ZeRO-3 sharding.

    Dense parameters split over tp*pp; routed experts over ep*tp*pp (experts are TP-sharded too).
    Stage 0 also holds the embedding, so its share is at least the average.
    """
    p = param_counts(m)
    dense = p.dense / (plan.tp * plan.pp)
    experts = p.routed_experts / (plan.ep * plan.tp * plan.pp)
    return dense, experts


def activation_bytes_per_token_layer(m: ModelSpec, tp: int, recompute: str, prec: Precision | None = None) -> float:
    """Activation bytes kept for backward, per token per layer per device (sequence parallel).

    Follows Korthikanti et al. 2022 with flash attention (no s^2 term): attention keeps its input,
    Q/K/V, output and projection input; the FFN keeps its input and the up/gate outputs once per
    routed copy (top_k). Selective recompute drops the attention core's inputs (Q/K/V); full
    recompute keeps only each layer's input.
    """
    b = (prec or precision(m.dtype)).act_bytes
    d = m.d_model
    if recompute == "full":
        return d * b / tp
    kv = 2 * m.kv_heads * m.head_width
    attn = (3 * d + m.n_heads * m.head_width + kv) * b
    if recompute == "selective":
        attn = 3 * d * b
    copies = m.top_k if m.is_moe else 1
    width = m.expert_width if m.is_moe else m.ffn_hidden
    ffn = copies * (d + (3 if m.gated_ffn else 2) * width) * b + d * b
    return (attn + ffn + 2 * d) / tp  # + two norm inputs (1 byte masks ignored)


def memory_report(s: Scenario, serving_kv_tokens: float | None = None) -> MemoryReport:
    """Memory per device for training (weights, grads, Adam, activations) or serving (weights, KV).

    Serving: the KV pool takes ``kv_cache_fraction`` of what weights and working activations leave;
    it must hold ``serving_kv_tokens`` (default: the longest request) or the plan does not fit.
    """
    m, plan = s.model, s.plan
    prec = scenario_precision(s)
    b = prec.weight_bytes
    dense, experts = weight_params_per_device(m, plan)
    expert_dp = max(plan.dp // plan.ep, 1)  # data-parallel group of one expert's replicas
    capacity = s.hardware.device.mem_gib
    w = s.workload
    if isinstance(w, TrainingWorkload):
        z = plan.zero_stage
        weights = dense * b / (plan.dp if z >= 3 else 1) + experts * b / (expert_dp if z >= 3 else 1)
        grads = dense * 2 / (plan.dp if z >= 2 else 1) + experts * 2 / (expert_dp if z >= 2 else 1)
        optim = dense * 12 / (plan.dp if z >= 1 else 1) + experts * 12 / (expert_dp if z >= 1 else 1)
        micro_seqs = w.global_batch_seqs / (plan.dp * plan.microbatches)
        tokens = micro_seqs * w.seq_len
        layers_per_stage = m.n_layers / plan.pp
        in_flight = schedule_for(plan).microbatches_in_flight(plan.pp, plan.microbatches, plan.virtual_stages)
        acts = activation_bytes_per_token_layer(m, plan.tp, plan.recompute, prec) * tokens * layers_per_stage * in_flight
        kv = 0.0
    else:
        # Serving engines pre-allocate a KV pool from what the weights leave (vLLM-style); it fits
        # when the pool holds at least one sequence of the longest length the workload can send.
        weights = (dense + experts) * b
        grads = optim = 0.0
        acts = _serving_activation_bytes(s)
        pool = serving_kv_pool_bytes(s)
        need = (serving_kv_tokens if serving_kv_tokens is not None else _longest_request(s)) * kv_bytes_per_token_per_device(s)
        kv = pool if pool >= need else need
    parts = [x / GIB for x in (weights, grads, optim, acts, kv)]
    total = sum(parts)
    return MemoryReport(*parts, total_gib=total, capacity_gib=capacity, fits=total <= capacity,
                        headroom_gib=capacity - total)


def kv_bytes_per_token_per_device(s: Scenario) -> float:
    """KV cache bytes one token adds on one device: layers split over pp, KV heads over tp."""
    return kv_bytes_per_token(s.model, scenario_precision(s)) / (s.plan.pp * _kv_shards(s.model, s.plan.tp))


def _kv_shards(m: ModelSpec, tp: int) -> int:
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
    dense, experts = weight_params_per_device(s.model, s.plan)
    w = s.workload
    frac = w.kv_cache_fraction if isinstance(w, ServingWorkload) else 0.9
    left = s.hardware.device.mem_gib * GIB - (dense + experts) * scenario_precision(s).weight_bytes - _serving_activation_bytes(s)
    return max(left, 0.0) * frac


def kv_cache_capacity_tokens(s: Scenario) -> float:
    """Tokens of KV cache one serving replica holds (its KV pool over the per-token bytes per device)."""
    return serving_kv_pool_bytes(s) / kv_bytes_per_token_per_device(s)


def summary(s: Scenario) -> dict:
    """The numbers ``moesim check`` prints: parameters, FLOPs, bytes, memory, fits."""
    m = s.model
    p = param_counts(m)
    training = isinstance(s.workload, TrainingWorkload)
    seq = s.workload.seq_len if training else None
    context = None if training else serving_mean_context(s)
    mem = memory_report(s)
    prec = scenario_precision(s)
    out = {
        "scenario": s.name,
        "model": m.name,
        "hardware": s.hardware.name,
        "devices": s.hardware.n_devices,
        **summary_fields(s),  # compute_dtype, weight_bytes_per_param, precision_note
        "total_params": p.total,
        "active_params": p.active,
        "routed_expert_params": p.routed_experts,
        "flops_per_token": flops_per_token(m, seq, context),
        "training_flops_per_token": training_flops_per_token(m, seq, s.plan.recompute),
        "kv_cache_bytes_per_token": kv_bytes_per_token(m, prec),
        "decode_bytes_per_token_batch1": decode_bytes_per_token(m, prec=prec),
        "memory_per_device_gib": mem.total_gib,
        "memory": mem.as_dict(),
        "fits": mem.fits,
        "headroom_gib": mem.headroom_gib,
    }
    from moesim.fit_advice import fit_explanation  # local: fit_advice imports this module

    out["fits_reason"], out["fits_advice"] = fit_explanation(s, mem)
    if not s.is_training:
        out["kv_cache_capacity_tokens"] = kv_cache_capacity_tokens(s)
    return out


