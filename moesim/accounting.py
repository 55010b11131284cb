"""Analytic accounting: parameters, FLOPs and bytes per token. Pure functions (memory: ``moesim.memory``).

Conventions: parameter counts are plain numbers of weights; FLOPs count a multiply-add as 2;
bytes follow ``moesim.precision``: weights at the model dtype's bytes per parameter (quantization
scales included), activations and the KV cache at the compute dtype's bytes (16-bit when int8/int4,
or fp8 without fp8 tensor cores, run weight-only). Training memory differs: weights at the 16-bit
width (bf16 under FP8 math), saved activations 16-bit except the inputs of FP8 GEMMs (1 byte under
FP8 math). Functions given only a model assume a device with fp8 tensor cores and group-128 scales.
Norm weights are counted; biases are not (the presets have none). Sources for the memory formulas:
ZeRO (Rajbhandari et al. 2020) for the 2+2+12 bytes per parameter of mixed-precision Adam,
Korthikanti et al. 2022 ("Reducing Activation Recomputation in Large Transformer Models") for
activations per layer, and the DeepSeek-V3 technical report (2024, sec. 3.3) for what FP8 training
keeps in FP8 and what in higher precision.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from moesim.engine.local_attention import keys_before, local_kv
from moesim.precision import Precision, precision
from moesim.schemas import (
    ModelSpec,
    Scenario,
    ServingWorkload,
)

GIB = 2**30


# ---------------------------------------------------------------- parameters


def attention_params(m: ModelSpec) -> int:
    """Weights of one attention block (Q, K, V, O projections; MLA's low-rank factors)."""
    d, h = m.d_model, m.n_heads
    if m.mla is not None:
        a = m.mla
        qk = a.qk_nope_head_dim + a.qk_rope_head_dim
        q_up = a.q_lora_rank * h * qk if a.q_lora_rank else d * h * qk  # without a Q latent: Q from the hidden state
        kv_up = a.kv_lora_rank * h * (a.qk_nope_head_dim + a.v_head_dim)
        return tp_replicated_attention_params(m) + q_up + kv_up + h * a.v_head_dim * d
    q_out = h * m.head_width
    kv_out = m.kv_heads * m.head_width
    return d * q_out + 2 * d * kv_out + q_out * d


def tp_replicated_attention_params(m: ModelSpec) -> int:
    """Weights of one attention block that every TP rank holds whole: MLA's down-projections to the
    query and KV latents and the latents' norms. Serving engines load them as one replicated linear
    (vLLM/SGLang ``ReplicatedLinear``, ``MlaDims.a_n``) and Megatron-core builds them as
    ``TELinear`` (parallel mode "duplicated", gpt_layer_specs: ``linear_q_down_proj``,
    ``linear_kv_down_proj``). 0 for standard attention."""
    if m.mla is None:
        return 0
    a = m.mla
    return m.d_model * (a.q_lora_rank + a.kv_lora_rank + a.qk_rope_head_dim) + a.q_lora_rank + a.kv_lora_rank


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


def attention_core_flops(m: ModelSpec, context_tokens: float, local_tokens: float | None = None) -> float:
    """Forward FLOPs of QK^T and AV for one token attending to ``context_tokens`` keys on full
    layers and ``local_tokens`` (default: as many) on ``model.local_attention``'s layers, all layers."""
    if m.mla is not None:
        qk = m.mla.qk_nope_head_dim + m.mla.qk_rope_head_dim
        per_key = 2 * m.n_heads * (qk + m.mla.v_head_dim)
    else:
        per_key = 4 * m.n_heads * m.head_width
    return per_key * layer_keys(m, context_tokens, local_tokens)


def layer_keys(m: ModelSpec, context_tokens: float, local_tokens: float | None = None) -> float:
    """Keys one token reads summed over the layers: ``context_tokens`` on each full layer,
    ``local_tokens`` (default: as many) on each of ``model.local_attention``'s layers."""
    local = context_tokens if local_tokens is None else local_tokens
    n_local = m.n_local_layers
    return (m.n_layers - n_local) * context_tokens + n_local * local


def local_keys(m: ModelSpec, seq_len: float | None = None, context_tokens: float | None = None) -> float | None:
    """Keys the average token of a local layer attends to: exact over a sequence of ``seq_len``
    tokens, else ``min(context, window)`` (sliding) or ``min(context, window / 2)`` (chunked) for
    an average context; None without ``model.local_attention``."""
    la = m.local_attention
    if la is None:
        return None
    if seq_len is not None:
        return float(keys_before(seq_len, la.window, la.kind)) / seq_len
    return min(context_tokens, la.window / (2 if la.kind == "chunked" else 1))


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
        seq = m.max_seq_len if seq_len is None else seq_len
        return 2.0 * matmul + attention_core_flops(m, seq / 2, local_keys(m, seq_len=seq))
    return 2.0 * matmul + attention_core_flops(m, context_tokens, local_keys(m, context_tokens=context_tokens))


def serving_mean_lengths(w: ServingWorkload, fallback: float) -> tuple[float, float]:
    """(mean prompt, mean output) tokens of a serving workload's requests. A length with ``dist:
    trace`` takes the mean of its ``workload.arrival.trace`` column (the first ``n_requests`` rows when
    the arrivals come from the trace too, as the run plays them; the whole column when the run
    resamples it); ``fallback`` where such a length has no trace to read."""
    prompt_col = output_col = None
    if w.arrival.trace is not None and "trace" in (w.prompt_tokens.dist, w.output_tokens.dist):
        from moesim.engine.serving.requests import (
            read_trace,  # local: reads a file, only when asked
        )

        _, prompt_col, output_col = read_trace(w.arrival.trace)
        if w.arrival.process == "trace":
            prompt_col, output_col = prompt_col[:w.arrival.n_requests], output_col[:w.arrival.n_requests]
    return w.prompt_tokens.mean_tokens(fallback, prompt_col), w.output_tokens.mean_tokens(fallback, output_col)


def serving_mean_context(s: Scenario) -> float:
    """Keys the average generated token attends to: mean prompt + half the mean output (a trace's
    means when the lengths come from ``workload.arrival.trace``; half ``max_seq_len`` each without one)."""
    prompt, output = serving_mean_lengths(s.workload, s.model.max_seq_len / 2)  # type: ignore[arg-type]
    return prompt + output / 2


def training_passes(recompute: str = "none") -> float:
    """Forward passes' worth of FLOPs a training step spends per forward: 3 (forward + backward), 4 with
    full recompute (the forward again)."""
    return 4.0 if recompute == "full" else 3.0


def training_flops_per_token(m: ModelSpec, seq_len: int | None = None, recompute: str = "none") -> float:
    """Forward + backward FLOPs per token (:func:`training_passes` x the forward)."""
    return flops_per_token(m, seq_len) * training_passes(recompute)


def mtp_flops_per_token(m: ModelSpec, seq_len: int, modules: int) -> float:
    """Forward FLOPs per token of ``modules`` multi-token-prediction modules (DeepSeek-V3 report sec.
    2.2): each is one block of the model's last layer's kind (attention, its core over ``seq_len / 2``
    keys, and the MoE layer's active experts, shared experts and router, or the dense FFN), the
    ``2d x d`` projection of the concatenated hidden state and next-token embedding, and another
    pass of the output head (the embedding and head are shared, so their weights are not new)."""
    if modules <= 0:
        return 0.0
    d, last = m.d_model, m.n_layers - 1
    if m.is_moe_layer(last):
        p = param_counts(m)
        n_moe = m.n_moe_layers
        ffn = (p.routed_experts * m.top_k / m.n_experts if m.n_experts > 1 else p.routed_experts) / n_moe
        ffn += (p.shared_experts + p.router) / n_moe
    else:
        ffn = ffn_params(d, m.ffn_hidden, m.gated_ffn)
    block = 2.0 * (attention_params(m) + ffn) + attention_core_flops(m, seq_len / 2) / m.n_layers
    return modules * (block + 2.0 * (2 * d * d) + 2.0 * m.vocab_size * d)


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
                           prec: Precision | None = None, expert_prec: Precision | None = None) -> float:
    """Bytes read from memory per decode step per sequence at batch ``batch``.

    Reads every non-expert weight once per step, the experts the batch touches (expected, uniform
    routing; at ``model.expert_dtype``'s bytes when it has one: ``expert_prec``, default that dtype's
    device-free precision), and each sequence's KV cache over ``context_tokens`` (a local layer's
    window only, ``model.local_attention``). Divided by ``batch`` to give a per-token figure.
    """
    p = param_counts(m)
    prec = prec or precision(m.dtype)
    if expert_prec is None:
        expert_prec = precision(m.expert_dtype) if m.expert_dtype is not None else prec
    embed_read = m.vocab_size * m.d_model  # output head; the input embedding is a gather
    touched = expected_experts_touched(m.n_experts, m.top_k, batch)
    experts = m.n_moe_layers * touched * expert_params(m) if m.n_experts > 1 else p.routed_experts
    other = p.total - p.routed_experts - p.embedding + embed_read
    weights = other * prec.weight_bytes + experts * expert_prec.weight_bytes
    la = m.local_attention
    # a local layer's decode reads its window's keys (local_kv); kv_bytes_per_token covers all layers
    local = (None if la is None else
             float(local_kv(1, float(context_tokens), la.window, la.kind)) if context_tokens >= 1 else 0.0)
    kv = kv_bytes_per_token(m, prec) * layer_keys(m, context_tokens, local) / m.n_layers * batch
    return (weights + kv) / batch
