"""Fine-tuning accounting: which parameters train, what LoRA adds, what QLoRA stores. Pure functions.

``workload.trainable`` (``TrainableSpec``) picks the weights a run updates:

- ``all``: every weight (pre-training, full fine-tuning); nothing here changes the engine's numbers;
- ``experts``: only the routed experts; attention, router, shared experts, dense FFNs, norms and the
  embedding and output head are frozen;
- ``non_experts``: everything but the routed experts (the Switch / ST-MoE finding: as good as full
  fine-tuning; Zoph et al. 2022, arXiv:2202.08906 sec. 5);
- ``lora``: every base weight frozen; each targeted matrix ``W`` (``d_in x d_out``) gets
  ``B A`` with ``A: r x d_in`` and ``B: d_out x r``, i.e. ``r * (d_in + d_out)`` trainable
  parameters (Hu et al. 2021, arXiv:2106.09685), one adapter per matrix of every routed expert for
  the ``experts`` target. ``base_dtype: nf4`` is QLoRA (Dettmers et al. 2023, arXiv:2305.14314):
  the frozen linear weights are stored in 4-bit NormalFloat and dequantised to bf16 for each GEMM.

What freezing changes, from first principles: only trainable parameters keep gradients and
optimizer states and join the data-parallel gradient sync; a frozen GEMM still computes its input
gradient ``dX = dY W^T`` (the layers below need it) but not its weight gradient ``dW = X^T dY``,
one of the backward's two GEMMs (a third of the GEMM's forward + backward FLOPs).
``layers: N`` trains only the last ``N`` blocks (under any mode; the embedding, final norm and head
freeze too): no gradient is needed before block ``n_layers - N`` (:func:`first_trainable_layer`), so
autograd (or MLX's ``value_and_grad``) runs no backward there, and those blocks keep no activations.
A frozen GEMM keeps no input for the backward (no ``dW`` to compute); an adapted one keeps it for the
adapter's ``dA`` (``moesim.frozen_inputs``). Not modelled: LoRA's ``T x r`` intermediates (r << d).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from moesim.accounting import (
    attention_core_flops,
    attention_params,
    flops_per_token,
    local_keys,
    mtp_flops_per_token,
    param_counts,
    training_flops_per_token,
    training_passes,
)
from moesim.errors import InputError
from moesim.schemas import ModelSpec
from moesim.schemas.workload import TrainableSpec

#: Bits per weight of NF4 with one fp32 absmax per block of 64 weights: 4 + 32/64 (QLoRA paper,
#: arXiv:2305.14314 sec. 3, "Double Quantization": "32/64 = 0.5 bits per parameter" of constants).
NF4_BITS = 4.0 + 32 / 64
#: ... with double quantisation (8-bit absmax per block of 64, one fp32 constant per 256 blocks):
#: 4 + 8/64 + 32/(64*256) = 4.127 bits (same section: "from 0.5 bits per parameter to 0.127 bits").
NF4_DQ_BITS = 4.0 + 8 / 64 + 32 / (64 * 256)
#: The weight groups of ``TrainableSpec.targets`` and what each mode trains of them.
GROUPS = ("attention", "experts", "router", "dense_ffn")
#: Every weight trains (mode ``all``): a layer's base parameters through :func:`layer_trainable`.
_EVERY_WEIGHT = TrainableSpec()


def nf4_bytes_per_weight(spec: TrainableSpec) -> float:
    """Bytes per stored base weight under QLoRA (``NF4_DQ_BITS`` or ``NF4_BITS`` / 8)."""
    return (NF4_DQ_BITS if spec.double_quant else NF4_BITS) / 8


def lora_matrix_params(d_in: int, d_out: int, rank: int) -> int:
    """Trainable parameters of one LoRA adapter on a ``d_in x d_out`` matrix: ``r * (d_in + d_out)``."""
    return rank * (d_in + d_out)


def attention_matrices(m: ModelSpec) -> list[tuple[int, int]]:
    """(d_in, d_out) of every linear map of one attention block (Q, K, V, O; MLA's factors)."""
    d, h = m.d_model, m.n_heads
    if m.mla is not None:
        a = m.mla
        qk = a.qk_nope_head_dim + a.qk_rope_head_dim
        q = [(d, a.q_lora_rank), (a.q_lora_rank, h * qk)] if a.q_lora_rank else [(d, h * qk)]
        kv = [(d, a.kv_lora_rank + a.qk_rope_head_dim), (a.kv_lora_rank, h * (a.qk_nope_head_dim + a.v_head_dim))]
        return q + kv + [(h * a.v_head_dim, d)]
    q_out, kv_out = h * m.head_width, m.kv_heads * m.head_width
    return [(d, q_out), (d, kv_out), (d, kv_out), (q_out, d)]


def ffn_matrices(d_model: int, hidden: int, gated: bool) -> list[tuple[int, int]]:
    """(d_in, d_out) of an FFN's matrices: gate and up (gated) or up, then down."""
    return [(d_model, hidden)] * (2 if gated else 1) + [(hidden, d_model)]


def _adapter(mats: list[tuple[int, int]], rank: int) -> int:
    return sum(lora_matrix_params(i, o, rank) for i, o in mats)


@dataclass(frozen=True)
class LayerTrainable:
    """Trainable parameters of one layer (model-wide, before any sharding)."""

    dense: int  # attention, norms, router, shared experts or dense FFN (or their adapters)
    per_expert: int  # one routed expert (or its adapters)


def first_trainable_layer(m: ModelSpec, spec: TrainableSpec) -> int:
    """Index of the first block that trains: ``n_layers - layers`` under ``spec.layers``, else 0.
    Backward stops there (autograd computes no gradient for the frozen blocks before it)."""
    return m.n_layers - spec.layers if spec.layers is not None else 0


def layer_trainable(m: ModelSpec, spec: TrainableSpec, layer: int) -> LayerTrainable:
    """Trainable parameters of ``layer`` under ``spec`` (mode ``all``: its whole weights; a block
    before :func:`first_trainable_layer`: none)."""
    if layer < first_trainable_layer(m, spec):
        return LayerTrainable(0, 0)
    d, moe = m.d_model, m.is_moe_layer(layer)
    routed = moe and m.n_experts >= 1
    expert_mats = ffn_matrices(d, m.expert_width, m.gated_ffn) if routed else []
    # the shared experts as one MLP of their summed width, as Hugging Face builds them (DeepSeek's
    # ``DeepseekV2MLP(intermediate_size=moe_intermediate_size * n_shared_experts)``): one adapter per matrix
    shared = ffn_matrices(d, m.n_shared_experts * m.shared_width, m.gated_ffn) if moe and m.n_shared_experts else []
    dense_ffn = ffn_matrices(d, m.ffn_hidden, m.gated_ffn) if not moe else shared
    router = [(d, m.n_experts)] if moe and m.n_experts > 1 else []
    if spec.mode == "lora":
        t, r = spec.lora_targets, spec.rank
        dense = ((_adapter(attention_matrices(m), r) if "attention" in t else 0)
                 + (_adapter(router, r) if "router" in t else 0) + (_adapter(dense_ffn, r) if "dense_ffn" in t else 0))
        return LayerTrainable(dense, _adapter(expert_mats, r) if "experts" in t else 0)
    full_dense = attention_params(m) + 2 * d + sum(i * o for i, o in dense_ffn + router)
    full_expert = sum(i * o for i, o in expert_mats)
    return LayerTrainable(0 if spec.mode == "experts" else full_dense, 0 if spec.mode == "non_experts" else full_expert)


def embeddings_trainable(spec: TrainableSpec) -> bool:
    """Whether the embedding, output head and final norm train (modes all and non_experts, unless
    ``layers`` trains the last blocks only)."""
    return spec.mode in ("all", "non_experts") and spec.layers is None


def routed_experts_in(m: ModelSpec, layer: int) -> int:
    """Routed experts of ``layer`` (0 on a dense layer)."""
    return m.n_experts if m.is_moe_layer(layer) and m.n_experts >= 1 else 0


@dataclass(frozen=True)
class TrainableCounts:
    """Parameters of a fine-tuning run, model-wide. Counts of weights (plain numbers)."""

    trainable: int  # updated by the optimizer (LoRA: the adapters)
    trainable_dense: int  # of which not on routed experts (replicated or TP-sharded)
    trainable_experts: int  # of which on routed experts (EP-sharded)
    base: int  # the model's own parameters (``param_counts(m).total``)
    frozen: int  # base parameters the run does not update
    quantized: int  # frozen base parameters stored in nf4 (QLoRA), else 0

    @property
    def fraction(self) -> float:
        """Trainable over base parameters."""
        return self.trainable / self.base if self.base else 0.0


def trainable_counts(m: ModelSpec, spec: TrainableSpec) -> TrainableCounts:
    """Trainable, frozen and quantised parameter counts of ``m`` under ``spec``."""
    p = param_counts(m)
    embed = p.embedding + m.d_model  # embedding (and head) tables + the final norm
    dense = experts = 0
    for i in range(m.n_layers):
        lt = layer_trainable(m, spec, i)
        dense += lt.dense
        experts += lt.per_expert * routed_experts_in(m, i)
    if embeddings_trainable(spec):
        dense += embed
    trainable = dense + experts
    if trainable == 0:  # e.g. experts (or LoRA on experts only) of a dense model
        what = f"lora on {', '.join(spec.lora_targets)}" if spec.mode == "lora" else repr(spec.mode)
        where = f" in its last {spec.layers} blocks" if spec.layers is not None else ""
        raise InputError(f"workload.trainable: {what} trains no parameter of {m.name}: it has no "
                         f"{_missing_parts(m, spec)}{where}; choose another mode or target")
    frozen = p.total - (trainable if spec.mode != "lora" else 0)
    return TrainableCounts(trainable, dense, experts, p.total, frozen, quantizable_params(m) if spec.quantized else 0)


def _missing_parts(m: ModelSpec, spec: TrainableSpec) -> str:
    """What a mode or a LoRA target list found none of in ``m``, for the error of :func:`trainable_counts`."""
    parts = {"experts": "routed experts", "router": "router (one expert or none)",
             "dense_ffn": "dense FFN layers or shared experts", "attention": "attention"}
    wanted = spec.lora_targets if spec.mode == "lora" else ("experts",) if spec.mode == "experts" else GROUPS
    return " or ".join(parts[g] for g in wanted)


def quantizable_params(m: ModelSpec) -> int:
    """Base weights QLoRA stores in nf4: every linear layer's (attention, experts, router, FFNs);
    the embedding, output head and norms stay 16-bit (bitsandbytes quantises ``nn.Linear`` but
    the ``lm_head``)."""
    p = param_counts(m)
    return p.attention + p.routed_experts + p.shared_experts + p.dense_ffn + p.router


@dataclass(frozen=True)
class DeviceShares:
    """Per base parameter held on a device: bytes of weights and the fraction that trains.

    ``dense_*`` apply to the parameters outside the routed experts, ``expert_*`` to the routed
    experts' (``memory.weight_params_per_device`` splits a device's parameters this way).
    """

    dense_weight_bytes: float
    expert_weight_bytes: float
    dense_trainable: float  # trainable parameters per base dense parameter (LoRA: adapters, << 1)
    expert_trainable: float


@dataclass(frozen=True)
class _Tally:
    """Base and trainable parameters of a set of blocks (and the weights outside them), model-wide units."""

    dense: float  # base parameters outside the routed experts
    train_dense: float
    experts: float  # base routed-expert parameters
    train_experts: float
    quant_dense: float  # of ``dense``, the linear weights QLoRA stores in nf4


def _whole_tally(m: ModelSpec, spec: TrainableSpec) -> _Tally:
    p, c = param_counts(m), trainable_counts(m, spec)
    return _Tally(p.dense, c.trainable_dense, p.routed_experts, c.trainable_experts,
                  quantizable_params(m) - p.routed_experts)


def _stage_tally(m: ModelSpec, spec: TrainableSpec, layers: Sequence[int], outside: float) -> _Tally:
    """The tally of the blocks ``layers`` and ``outside`` parameters beside them (embedding table, final norm,
    output head: 16-bit, trainable with :func:`embeddings_trainable`)."""
    dense = train_d = experts = train_e = quant = 0.0
    for i in layers:
        base, lt, n = layer_trainable(m, _EVERY_WEIGHT, i), layer_trainable(m, spec, i), routed_experts_in(m, i)
        dense, train_d, quant = dense + base.dense, train_d + lt.dense, quant + base.dense - 2 * m.d_model  # norms
        experts, train_e = experts + n * base.per_expert, train_e + n * lt.per_expert
    return _Tally(dense + outside, train_d + (outside if embeddings_trainable(spec) else 0.0), experts, train_e, quant)


def device_shares(m: ModelSpec, spec: TrainableSpec, train_weight_bytes: float,
                  stored: tuple[float, float] | None = None,
                  stage: tuple[Sequence[int], float] | None = None) -> DeviceShares:
    """Bytes per base parameter of the weights and the trainable fractions, dense and expert.

    Frozen and trainable base weights are kept at ``stored`` (dense, expert) bytes each (default
    ``train_weight_bytes``, the 16-bit width; FP8 primary weights fewer: ``train_bytes.stored_weight_bytes``);
    QLoRA's quantisable weights at :func:`nf4_bytes_per_weight`; LoRA adds its adapters at
    ``train_weight_bytes`` (spread over the base parameters they sit on). ``stage``: (its blocks, its
    parameters outside them) to take the shares of one pipeline stage (``layers: N`` trains the last stages
    alone), None: of the whole model.
    """
    t = _whole_tally(m, spec) if stage is None else _stage_tally(m, spec, *stage)
    f_dense = t.train_dense / t.dense if t.dense else 0.0
    f_expert = t.train_experts / t.experts if t.experts else 0.0
    dense_b, expert_b = stored or (train_weight_bytes, train_weight_bytes)
    if spec.quantized:
        q = nf4_bytes_per_weight(spec)
        dense_b = (t.quant_dense * q + (t.dense - t.quant_dense) * train_weight_bytes) / t.dense if t.dense else 0.0
        expert_b = q
    if spec.mode == "lora":  # adapters are weights too
        dense_b += f_dense * train_weight_bytes
        expert_b += f_expert * train_weight_bytes
    return DeviceShares(dense_b, expert_b, f_dense, f_expert)


def trained_depth(m: ModelSpec, spec: TrainableSpec) -> float:
    """Share of the blocks a backward runs through: ``layers / n_layers`` under ``spec.layers``, else 1
    (a block's share of the blocks' FLOPs taken as its share of the blocks)."""
    return 1.0 if spec.layers is None else spec.layers / m.n_layers


def trainable_summary(m: ModelSpec, spec: TrainableSpec) -> dict[str, float]:
    """``trainable_params`` and ``trainable_fraction`` of a fine-tune for ``simulate``'s and ``check``'s
    summaries; empty when every weight trains (pre-training summaries keep their keys)."""
    if spec.full:
        return {}
    counts = trainable_counts(m, spec)
    return {"trainable_params": counts.trainable, "trainable_fraction": counts.fraction}


def step_flops_per_token(m: ModelSpec, spec: TrainableSpec, seq_len: int, recompute: str = "none",
                         mtp_layers: int = 0) -> float:
    """FLOPs per token of one training step under ``spec``: pre-training's ``3 F`` (``4 F`` with full
    recompute, ``accounting.training_flops_per_token``) when every weight of every block trains, with
    ``mtp_layers`` multi-token-prediction modules' forward (``accounting.mtp_flops_per_token``) taken
    as many times (what Megatron-core's FLOPs count includes), else :func:`finetune_flops_per_token`
    plus, under full recompute, the forward again of the blocks the backward reaches (the head is
    not recomputed)."""
    if spec.full:
        return (training_flops_per_token(m, seq_len, recompute)
                + training_passes(recompute) * mtp_flops_per_token(m, seq_len, mtp_layers))
    redo = 0.0
    if recompute == "full":
        redo = (flops_per_token(m, seq_len) - 2.0 * m.vocab_size * m.d_model) * trained_depth(m, spec)
    return finetune_flops_per_token(m, spec, seq_len) + redo


def finetune_flops_per_token(m: ModelSpec, spec: TrainableSpec, seq_len: int) -> float:
    """Model FLOPs per token of one fine-tuning step (no recompute): the forward ``F``
    (``accounting.flops_per_token``), the input gradients through every layer (another ``F``: each
    GEMM's ``dX``), the attention core's second backward half (it has no weights: both halves of its
    ``2 x`` backward are input gradients), the weight gradients of the trainable matrices the token
    uses (``2 x`` their active weights), and LoRA's adapters (``6 x`` the adapter weights the token
    passes: forward and both backward GEMMs). ``all``: the usual ``3 F``. With ``layers`` the input
    gradients stop at the first trainable block: the output head's and the last ``layers`` blocks'
    (:func:`trained_depth`), and the weight gradients cover those blocks only."""
    f = flops_per_token(m, seq_len)
    if spec.full:
        return 3.0 * f
    core = attention_core_flops(m, seq_len / 2, local_keys(m, seq_len=seq_len))  # its second backward half
    p, c = param_counts(m), trainable_counts(m, spec)
    share = m.top_k / m.n_experts if m.n_experts > 1 else 1.0  # of the routed experts a token passes
    head = m.vocab_size * m.d_model
    depth = trained_depth(m, spec)  # of the blocks backward runs through
    input_grads = 2.0 * head + (f - 2.0 * head + core) * depth
    routed_active = p.routed_experts * share
    if spec.mode == "lora":
        return f + input_grads + 6.0 * (c.trainable_dense + c.trainable_experts * share)
    if spec.mode == "experts":
        return f + input_grads + 2.0 * routed_active * depth
    dense_matmul = p.active - routed_active - p.norms - (0 if m.tied_embeddings else head)  # non_experts
    if spec.mode == "all":  # the last blocks whole, the head frozen
        return f + input_grads + 2.0 * (dense_matmul - head + routed_active) * depth
    if spec.layers is not None:  # non_experts over the last blocks, the head frozen
        return f + input_grads + 2.0 * (dense_matmul - head) * depth
    return f + input_grads + 2.0 * dense_matmul
