"""What a training step keeps of its GEMMs' inputs when some weights are frozen, LoRA adapters read
them, or FP8 attention and FP8 activation-function inputs are on. Pure functions.

A linear layer ``Y = X W`` keeps its input ``X`` for one reason: the weight gradient ``dW = X^T dY``.
Its input gradient ``dX = dY W^T`` needs only the weight. So a frozen ``W`` keeps no ``X``:

- Transformer Engine's ``Linear``, ``LayerNormLinear`` and ``GroupedLinear`` save their input only when
  ``backward_needs_input = is_grad_enabled and weight.requires_grad`` (``transformer_engine/pytorch/
  module/linear.py`` and its siblings, NVIDIA/TransformerEngine @3ec87875); ``LayerNormLinear`` still
  keeps the norm's input for the norm's own backward;
- PyTorch's ``nn.Linear`` does the same: with a frozen weight autograd saves the weight, not the input
  (checked with ``torch.autograd.graph.saved_tensors_hooks`` on torch 2.13: a frozen ``Linear(64, 32)``
  on a 10 x 64 input saves 2,048 elements, the weight; a trained one 640 + 2,048);
- bitsandbytes' 4-bit matmul (QLoRA's frozen base) computes no weight gradient and keeps no input.

A LoRA adapter on a frozen weight reads that input (``dA = X^T (dY B^T)``) at the adapter's 16-bit
width (adapters run outside FP8: NeMo's ``ParallelLinearAdapter``, PEFT's ``lora_A``), where a trained
FP8 GEMM keeps a 1-byte FP8 copy. With LoRA dropout (``workload.trainable.dropout`` > 0) the adapter
reads ``dropout(X)``, a tensor of its own, and the dropout keeps its mask (PyTorch's ``native_dropout``:
one byte an element): ``b16 + 1`` per element, whoever else keeps ``X``.

FP8 attention (``plan.fp8_attention``): Transformer Engine's FP8 dot-product attention keeps the FP8
Q, K, V and output for its FP8 backward (``NVTE_FP8_DPA_BWD``, default 1), 1 byte an element, and hands
the output projection a 16-bit ``O`` that it casts again (its own FP8 copy when it trains). Megatron-core's
``activation_func_fp8_input_store`` (``plan.fp8_act_input``) keeps each MLP's SwiGLU/GeLU input in FP8.

Checked (not fitted) against MLPerf Training v5.0's Llama 2 70B LoRA runs, whose ``max_memory_allocated``
at CP1, 2, 4 and 8 (168.8, 134.2, 99.6, 82.3 GiB; FT-60..63) imply 65.1 GiB of FP8 frozen weights and
~27 d bytes a token a layer of activations, which this accounting gives within a few per cent.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Literal, NamedTuple

from moesim.engine.training.finetune_ops import frozen_groups
from moesim.precision import Precision
from moesim.schemas import DTYPE_BYTES, ModelSpec
from moesim.schemas.workload import TrainableSpec

Role = Literal["trained", "adapted", "frozen"]
#: Bytes of a dropout mask per element (PyTorch's ``native_dropout`` keeps a bool mask).
DROPOUT_MASK_BYTES = 1.0
#: Bytes of an element kept in FP8 (attention's Q/K/V and output, activation inputs), NVFP4 runs included.
FP8_BYTES = 1.0


class Saves(NamedTuple):
    """What decides a layer's kept GEMM inputs beyond the model and precision: each weight group's role
    (trained, adapted: frozen with a LoRA adapter, frozen), the adapters' dropout, FP8 attention, and
    FP8 activation-function inputs. :data:`PRETRAINING` changes nothing."""

    attention: Role = "trained"
    router: Role = "trained"
    dense_ffn: Role = "trained"  # dense FFN layers and shared experts
    experts: Role = "trained"  # routed experts
    dropout: bool = False
    fp8_core: bool = False  # attention's Q, K, V and output kept in FP8 (plan.fp8_attention under FP8 GEMMs)
    fp8_act_input: bool = False  # every MLP's activation input kept in FP8 (plan.fp8_act_input under FP8 GEMMs)


PRETRAINING = Saves()


def saves_of(spec: TrainableSpec, fp8_core: bool = False, fp8_act_input: bool = False) -> Saves:
    """The :class:`Saves` of a run: ``spec`` (``workload.trainable``) sets each group's role (a frozen
    group with a LoRA adapter is adapted), ``fp8_core`` / ``fp8_act_input`` whether those FP8 stores are on
    (the caller checks that the GEMMs run FP8)."""
    frozen, adapted = frozen_groups(spec), spec.lora_targets

    def role(group: str) -> Role:
        return "trained" if group not in frozen else "adapted" if group in adapted else "frozen"

    dropout = spec.mode == "lora" and (spec.dropout or 0.0) > 0
    return Saves(role("attention"), role("router"), role("dense_ffn"), role("experts"), dropout, fp8_core,
                 fp8_act_input)


def saves_delta_bytes_per_token(m: ModelSpec, moe_layer: bool, prec: Precision, routed_slots: float | None,
                                saves: Saves, modules: Collection[str] | None = None) -> float:
    """Bytes per token (one layer, before TP/SP splitting) that ``saves`` take off what
    :mod:`moesim.activations`' formulas keep for pre-training (negative where they add: an adapter's
    16-bit input over an FP8 copy, dropout's own tensors). ``modules``: ``plan.recompute_modules`` under
    selective recompute; what they drop is not counted again. 0 for :data:`PRETRAINING`."""
    if saves == PRETRAINING:
        return 0.0
    b16, b8 = DTYPE_BYTES[prec.act_dtype], prec.act_bytes  # as activations.activation_widths
    mods = set(modules or ())
    fp8 = prec.act_bytes < b16
    adapter = b16 + (DROPOUT_MASK_BYTES if saves.dropout else 0.0)

    def kept(role: Role) -> float:  # bytes an element of a GEMM input keeps, by its reader's role
        return {"trained": b8, "adapted": adapter, "frozen": 0.0}[role]

    d, h = m.d_model, m.n_heads
    out = 0.0
    # attention: the QKV input (MLA: with the latents; its layernorm module drops the d part), then
    # the output projection's input O, which flash attention keeps anyway
    qkv_in = d if m.mla is None else (0 if "layernorm" in mods else d) + m.mla.q_lora_rank + m.mla.kv_lora_rank
    out += qkv_in * (b8 - kept(saves.attention))
    o = h * (m.head_width if m.mla is None else m.mla.v_head_dim)
    core = "core_attn" not in mods and fp8
    if saves.fp8_core and core:  # FP8 Q/K/V (and O: the FP8 output plus the projection's copy, as counted)
        qkv = h * m.head_width + 2 * m.kv_heads * m.head_width if m.mla is None else (
            2 * h * (m.mla.qk_nope_head_dim + m.mla.qk_rope_head_dim) + h * m.mla.v_head_dim)
        out += 0.0 if "mla_up_proj" in mods else qkv * (b16 - FP8_BYTES)
        out += o * (b8 - kept(saves.attention))  # the projection's own copy of O
    elif saves.attention == "adapted" and saves.dropout:  # its adapter's dropout(O) beside flash attention's O
        out -= o * adapter
    g = 2 if m.gated_ffn else 1
    if not moe_layer:
        if "mlp" in mods:  # the checkpoint keeps the FFN's input, drops the rest
            return out
        width = m.ffn_hidden
        act = g * width * (b16 - FP8_BYTES) if saves.fp8_act_input else 0.0
        return out + (d + width) * (b8 - kept(saves.dense_ffn)) + act
    if "moe" in mods:  # the checkpoint keeps the block's norm output, drops the rest
        return out
    slots = m.top_k if routed_slots is None else routed_slots
    w, shared_w = m.expert_width, m.n_shared_experts * m.shared_width
    if shared_w and "shared_experts" not in mods:
        out += shared_w * (b8 - kept(saves.dense_ffn)) + (g * shared_w * (b16 - FP8_BYTES) if saves.fp8_act_input else 0.0)
    readers = [saves.experts if m.n_experts <= 1 else saves.router] + ([saves.dense_ffn] if shared_w else [])
    if "layernorm" not in mods and m.n_experts <= 1:  # no router: the norm output is saved as its fc1's input
        out += d * (b8 - max(kept(r) for r in readers))
    elif "layernorm" not in mods:  # the router's input, at 16 bits while any reader keeps it
        out += d * (b16 - max(b16 if r == "trained" else kept(r) for r in readers))
    fc1 = 0.0 if m.n_experts <= 1 else d  # one expert: its fc1 input is the norm output above
    if "moe_act" in mods:  # the checkpoint keeps the 16-bit SwiGLU input (fp8_moe_act_input: its own FP8)
        return out + slots * fc1 * (b8 - kept(saves.experts))
    act = g * w * (b16 - FP8_BYTES) if saves.fp8_act_input else 0.0
    return out + slots * ((fc1 + w) * (b8 - kept(saves.experts)) + act)
