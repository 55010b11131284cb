"""Activation bytes per token that training keeps for the backward, layer by layer. Pure functions.

Per Korthikanti et al. 2022 ("Reducing Activation Recomputation in Large Transformer Models"),
with flash attention and sequence parallelism; MLA's real Q/K/V and latent widths; dense layers at
``ffn_hidden``, shared experts and routed rows (padded to capacity under ``overflow: drop``); under
FP8 only the inputs of FP8 GEMMs are kept in FP8 (DeepSeek-V3 technical report, 2024, sec. 3.3).
``moesim.memory`` multiplies these by the tokens and microbatches a pipeline stage holds.
"""

from __future__ import annotations

from collections.abc import Collection

from moesim.frozen_inputs import PRETRAINING, Saves, saves_delta_bytes_per_token
from moesim.precision import Precision, precision
from moesim.schemas import DTYPE_BYTES, ModelSpec, RoutingSpec


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
                                     prec: Precision | None = None, routed_slots: float | None = None,
                                     modules: Collection[str] | None = None, saves: Saves = PRETRAINING) -> float:
    """Activation bytes layer ``layer`` (0-based) keeps for backward, per token per device.

    Sequence parallelism splits everything over ``tp`` (Korthikanti et al. 2022, sec. 4.2.2:
    ``34sbh/t`` per layer without the attention core). ``full`` recompute keeps only the layer's
    input, ``d*b16/tp`` (Korthikanti's ``2sbh`` per layer); otherwise attention
    (:func:`attention_activation_bytes_per_token`) + FFN (:func:`ffn_activation_bytes_per_token`:
    the dense FFN on dense layers, routed + shared experts on MoE layers), less what the selective
    recompute ``modules`` (``plan.recompute_modules``) drop (:func:`recomputed_bytes_per_token`), and
    what ``saves`` change (:func:`moesim.frozen_inputs.saves_delta_bytes_per_token`: a fine-tune's frozen
    GEMMs keep no inputs, its adapters keep theirs; FP8 attention and FP8 activation inputs).
    """
    prec = prec or precision(m.dtype)
    if recompute == "full":
        return m.d_model * activation_widths(prec)[0] / tp
    moe = m.is_moe_layer(layer)
    mods = modules if recompute == "selective" else None
    kept = (attention_activation_bytes_per_token(m, recompute if mods is None else "none", prec)
            + ffn_activation_bytes_per_token(m, moe, prec, routed_slots))
    if mods is not None:
        kept -= recomputed_bytes_per_token(m, moe, prec, routed_slots, mods)
    if recompute == "selective" and mods is None:  # Q/K/V are recomputed, not kept in any width
        saves = saves._replace(fp8_core=False)
    return (kept - saves_delta_bytes_per_token(m, moe, prec, routed_slots, saves, mods)) / tp


def recompute_working_bytes_per_token(m: ModelSpec, layer: int, tp: int, recompute: str,
                                       prec: Precision | None = None, routed_slots: float | None = None,
                                       modules: Collection[str] | None = None,
                                       saves: Saves = PRETRAINING) -> float:
    """Activation bytes per token per device that layer ``layer`` re-creates for its own backward:
    what its recompute dropped (:func:`layer_activation_bytes_per_token` without recompute, less
    with it), live from the layer's re-run forward until its backward ends. Megatron-core's full
    recompute (``recompute_method uniform``, one layer per checkpoint) and Hugging Face's gradient
    checkpointing re-run one layer at a time, so a device holds one layer's set for one microbatch
    on top of the checkpoints (Chen et al. 2016, "Training Deep Nets with Sublinear Memory Cost":
    checkpointing costs the checkpoints plus the largest segment's activations). 0 without recompute."""
    if recompute == "none":
        return 0.0
    full = layer_activation_bytes_per_token(m, layer, tp, "none", prec, routed_slots, saves=saves)
    kept = layer_activation_bytes_per_token(m, layer, tp, recompute, prec, routed_slots, modules, saves)
    return max(full - kept, 0.0)


#: Not a Megatron-core module: the marker :func:`kept_modules` adds for ``plan.fp8_moe_act_input``, whose
#: ``moe_act`` keeps the routed rows' SwiGLU input (fc1's output) in FP8 (DeepSeek-V3 sec. 3.3.3).
FP8_MOE_ACT_INPUT = "fp8_moe_act_input"


def kept_modules(plan) -> list[str] | None:
    """``plan.recompute_modules`` as :func:`recomputed_bytes_per_token` reads them: with
    :data:`FP8_MOE_ACT_INPUT` added under ``plan.fp8_moe_act_input``."""
    mods = plan.recompute_modules
    if mods is None or not plan.fp8_moe_act_input:
        return mods
    return [*mods, FP8_MOE_ACT_INPUT]


def recomputed_bytes_per_token(m: ModelSpec, moe_layer: bool, prec: Precision, routed_slots: float | None,
                               modules: Collection[str]) -> float:
    """Bytes per token (one layer, before TP/SP splitting) that Megatron-core's selective recompute
    ``modules`` (``plan.recompute_modules``) drop from what the layer keeps with ``recompute: none``.

    Each module's saved tensors, in the terms of :func:`attention_activation_bytes_per_token` and
    :func:`ffn_activation_bytes_per_token` (``b16``/``b8`` from :func:`activation_widths`)::

        core_attn       0: its checkpoint keeps Q/K/V as inputs, and flash attention keeps nothing else
        layernorm       the outputs of the pre-norms that are layers of their own: the MoE block's
                        (the router's 16-bit input, d*b16; a one-expert block's fc1 input, d*b8) and
                        MLA's input norm (its down-projection input, d*b8). Megatron-core's Transformer
                        Engine spec fuses the other pre-norms into the next GEMM
                        (``TELayerNormColumnParallelLinear``: no separate norm to recompute)
        mla_up_proj     MLA's per-head Q, K (with rope) and V
        moe_act         the routed rows' fc2 input, slots * w*b8; with :data:`FP8_MOE_ACT_INPUT` also
                        their kept SwiGLU input's upper byte, slots * g*w*(b16 - b8) (0 unless FP8)
        shared_experts  the shared experts' fc1 output and fc2 input
        moe             the MoE block but its input (the router's input): routed rows and shared experts
        mlp             a dense layer's FFN but its input: g*F*b16 + F*b8 (fc1's own input is the
                        checkpoint's, kept)

    Overlaps count once (``moe`` with ``moe_act`` or ``shared_experts``). Under FP8 the GEMM after
    a recomputed norm or activation keeps its 16-bit input instead of an FP8 copy
    (``set_save_original_input`` in ``megatron/core/transformer/transformer_layer.py`` and
    ``moe/experts.py``), which the output-discarding checkpoint then frees: ``b8`` either way.
    """
    b16, b8 = activation_widths(prec)
    d, mods = m.d_model, set(modules)
    out = 0.0
    if "layernorm" in mods:
        out += d * b8 if m.mla is not None else 0.0  # MLA's down-projection input (its TENorm)
        if moe_layer:
            out += d * b16 if m.n_experts > 1 else d * b8  # the router's input; a one-expert block's fc1
    if "mla_up_proj" in mods and m.mla is not None:
        a = m.mla
        out += (2 * m.n_heads * (a.qk_nope_head_dim + a.qk_rope_head_dim) + m.n_heads * a.v_head_dim) * b16
    if moe_layer:
        slots = m.top_k if routed_slots is None else routed_slots
        routed = slots * (d * b8 + _mlp_activation_bytes(m.expert_width, m.gated_ffn, b16, b8))
        if m.n_experts <= 1:  # one expert, no router: its fc1 input is the block's input (kept)
            slots, routed = 1.0, _mlp_activation_bytes(m.expert_width, m.gated_ffn, b16, b8)
        shared = _mlp_activation_bytes(m.n_shared_experts * m.shared_width, m.gated_ffn, b16, b8)
        if "moe" in mods:
            out += routed + shared
        else:
            if "moe_act" in mods:
                out += slots * m.expert_width * b8
                if FP8_MOE_ACT_INPUT in mods:  # the fc1 output it keeps, cached at b8 instead of b16
                    out += slots * (2 if m.gated_ffn else 1) * m.expert_width * (b16 - b8)
            if "shared_experts" in mods:
                out += shared
    elif "mlp" in mods:
        out += _mlp_activation_bytes(m.ffn_hidden, m.gated_ffn, b16, b8)
    return out


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


#: Bytes per logit while the loss runs, by ``plan.loss_impl``. ``inplace``: Megatron-core's eager
#: vocab-parallel cross entropy (``cross_entropy_loss_fusion`` off): the head's 16-bit output and the
#: fp32 copy it works on, alive together; it exponentiates that copy in place and keeps it for its
#: backward, which turns it into the gradient in place before the 16-bit cast: 6. ``fused``: the same
#: steps under ``cross_entropy_loss_fusion`` (``cross_entropy_fusion_impl`` native), which
#: ``megatron.core.jit.jit_fuser`` compiles with ``torch.compile``: where a compiled graph both mutates
#: the logits in place and reduces over them (the exponent and its row sum) or scatters into them (the
#: backward's target update), Inductor writes the new values to a fresh logits-sized fp32 buffer and
#: copies them back (NVIDIA/Megatron-LM ``megatron/core/fusions/fused_cross_entropy.py`` @0cb4a9c8,
#: whose note measures it as 4 GB for an 8k x 128k fp32 head and splits the steps to avoid it; the
#: version of @d98e8a64, 2026-08, and every earlier one since 2024-06 compiles them together): 2 + 4 + 4
#: = 10 in forward. ``transformers``: Hugging Face's ``ForCausalLMLoss``
#: (``transformers/loss/loss_utils.py``) upcasts the logits to fp32 (4) beside the 16-bit output (2),
#: and ``cross_entropy``'s log-softmax saves its fp32 output (4): 10 bytes in forward; its backward then
#: holds that saved output, the dense fp32 gradient ``nll_loss`` hands it and the one it returns: 12 (the
#: 16-bit output is the caller's until the step's loss is taken, so it is gone by then). ``chunked``: torchtune's
#: ``CEWithChunkedOutputLoss`` with its ``compute_cross_entropy`` compiled (the recipes' ``compile: True``): the head
#: writes its 16-bit logits in :data:`TORCHTUNE_OUTPUT_CHUNKS` chunks, and each chunk's compiled upcast and cross
#: entropy keeps only that 16-bit chunk and two fp32 numbers a row for its backward (checked with saved-tensor hooks
#: on torch 2.13's CPU Inductor: a 512 x 4096 bf16 chunk saves itself and two 512 x 1 fp32 rows; run eagerly it saves
#: the fp32 log-softmax, 4 bytes a logit): 2, plus one chunk's 16-bit gradient in backward (2 / 8): 2.25
#: (torchtune ``torchtune/modules/loss/ce_chunked_output_loss.py``, PR #1390).
#: Chunks torchtune's decoder splits the output head's logits into for ``CEWithChunkedOutputLoss``
#: (``num_output_chunks``, 8 in every recipe config).
TORCHTUNE_OUTPUT_CHUNKS = 8
LOSS_BYTES_PER_LOGIT: dict[str, float] = {"inplace": 6.0, "fused": 10.0, "transformers": 12.0,
                                          "chunked": 2.0 + 2.0 / TORCHTUNE_OUTPUT_CHUNKS}

#: Bytes the loss moves per logit, (forward, backward), beyond the output head's GEMMs, by ``plan.loss_impl``: each
#: pass over the logits reads or writes them whole. ``inplace``, Megatron-core's eager vocab-parallel cross entropy
#: (``megatron/core/tensor_parallel/cross_entropy.py``, as at core_v0.6.0): the fp32 copy of the 16-bit logits (2 read,
#: 4 written), the row max (4), the subtraction (4 + 4), the exponent (4 + 4), the row sum (4) and the division
#: (4 + 4): 38; backward, the gradient scaled in place (4 + 4) and cast to 16 bits (4 + 2): 14. ``fused``: the same
#: steps compiled (``megatron/core/fusions/fused_cross_entropy.py``): the copy with its max (2 + 4), the subtraction,
#: exponent and sum in one pass (4 + 4) whose in-place write Inductor stages through a fresh buffer and copies back
#: (4 + 4, the note there), the division (4 + 4): 30; backward, the scatter into the softmax staged the same way
#: (4 + 4) and the scaled 16-bit gradient (4 + 2): 14. ``transformers``: ``ForCausalLMLoss`` upcasts (2 + 4), and
#: ``cross_entropy``'s log-softmax reads the row twice and writes it (4 + 4 + 4): 18; backward, ``nll_loss`` writes a
#: dense fp32 gradient (4), the log-softmax's backward reads it and its saved output and writes its own (4 + 4 + 4),
#: and the cast to 16 bits (4 + 2): 22. ``chunked`` (torchtune's, compiled): Inductor reduces each 16-bit chunk
#: for its row max and then its exponent sum without writing an fp32 copy (2 + 2): 4; backward, it reads the chunk
#: again and writes its 16-bit gradient (2 + 2): 4. Until 2026-12-05 every loss was priced as one fp32 write and
#: read (8, and 16 backward).
LOSS_PASS_BYTES_PER_LOGIT: dict[str, tuple[float, float]] = {
    "inplace": (38.0, 14.0), "fused": (30.0, 14.0), "transformers": (18.0, 22.0), "chunked": (4.0, 4.0)}
#: Losses that see the whole vocabulary on every tensor-parallel rank: Hugging Face's TP plans and torchtune's
#: (``torchtune/models/llama3/_parallelism.py``: the output head ``ColwiseParallel(output_layouts=Replicate())``)
#: gather the head's output before the loss; Megatron-core's cross entropy is vocab-parallel.
REPLICATED_LOGIT_LOSSES = ("transformers", "chunked")


#: Saved tensors torchtune's ``OffloadActivations`` keeps on the device while their copies to host memory finish
#: (``max_fwd_stash_size``, default 5; ``torchtune/training/_activation_offloading.py``): under activation
#: checkpointing one per layer, its input (``plan.activation_offload``).
OFFLOAD_STASH_TENSORS = 5


def offloaded_stash_bytes(layer_bytes: list[float]) -> float:
    """Bytes of a micro-batch's stored layer inputs a device keeps under ``plan.activation_offload``: the largest
    :data:`OFFLOAD_STASH_TENSORS` of ``layer_bytes`` (each layer's stored bytes); the rest wait in host memory
    (the forward's last layers, still in the stash when the loss runs, and in backward the layer being
    recomputed and the one prefetched)."""
    return sum(sorted(layer_bytes, reverse=True)[:OFFLOAD_STASH_TENSORS])


def per_layer_kind(m: ModelSpec, bytes_of_layer) -> dict[bool, float]:
    """``{is_moe_layer: bytes_of_layer(i)}`` for one dense and one MoE layer ``i`` of ``m`` (0 for a
    kind the model lacks): a layer's activation bytes depend on its kind only, so plan search's many
    memory reports price two layers, not every layer of every stage."""
    out = {False: 0.0, True: 0.0}
    for kind in (False, True):
        i = next((j for j in range(m.n_layers) if m.is_moe_layer(j) == kind), None)
        if i is not None:
            out[kind] = bytes_of_layer(i)
    return out


def loss_or_work(head: float, work: float) -> float:
    """Bytes the stage that computes the loss adds to its stored activations: the logits while the
    loss runs (``head``) or, later, the recompute working set of its last layer (``work``), whichever
    is more. The loss's backward frees the logits (their gradient becomes the head's input gradient)
    before that layer's recompute starts, so the two are not live together."""
    return max(head, work)


def loss_logit_count(m: ModelSpec, tp: int, tokens: float, loss_impl: str = "fused") -> float:
    """Logits the loss works on on one device: ``tokens`` x ``vocab_size / tp`` (vocab-parallel; transformers' and
    torchtune's losses see the whole vocabulary on every rank, :data:`REPLICATED_LOGIT_LOSSES`)."""
    return tokens * m.vocab_size / (1 if loss_impl in REPLICATED_LOGIT_LOSSES else tp)


def loss_logits_bytes(m: ModelSpec, tp: int, tokens: float, loss_impl: str = "fused") -> float:
    """Bytes the output head's logits take while the loss runs on the stage that computes it: one
    microbatch's ``tokens`` (this CP rank's) x ``vocab_size / tp`` (vocab-parallel; transformers'
    loss sees the whole vocabulary on every rank: its tensor-parallel plans replicate the head's
    output) x :data:`LOSS_BYTES_PER_LOGIT` of ``loss_impl`` (``plan.loss_implementation``). For a
    152k vocabulary and 8,192 tokens at tp 1, 7.0 GiB in place, 11.6 GiB fused, 13.9 GiB with
    transformers' loss, 2.6 GiB with torchtune's chunked one."""
    return loss_logit_count(m, tp, tokens, loss_impl) * LOSS_BYTES_PER_LOGIT[loss_impl]


def zero3_head_bytes(m: ModelSpec, tp: int, zero_stage: int, head_trains: bool, weight_bytes: float,
                     grad_bytes: float) -> float:
    """Bytes ZeRO-3 adds on the stage that computes the loss, while it does: the output head gathered
    whole (its ``vocab_size x d_model / tp`` weights at ``weight_bytes`` each) to compute the logits
    and, when it trains (``head_trains``), its whole gradient (``grad_bytes`` each), which autograd
    writes before the reduce-scatter shards it. 0 below ZeRO-3 (every rank holds the head).

    DeepSpeed's ZeRO-3 gathers a submodule's weights when its forward or backward runs (its fetch
    hooks), FSDP a wrapped unit's; both hold the head whole while its GEMMs run. The layers' gathered
    weights at other moments (one module or unit and the prefetched next: DeepSpeed's
    ``stage3_prefetch_bucket_size``) are not counted."""
    if zero_stage < 3:
        return 0.0
    return m.vocab_size * m.d_model / tp * (weight_bytes + (grad_bytes if head_trains else 0.0))
