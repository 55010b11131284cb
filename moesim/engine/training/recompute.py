"""What Megatron-core's selective recompute modules re-run in backward (``plan.recompute_modules``).

Each module re-runs its forward ops in the backward's recompute slot, just before the layer's
backward (``layer_costs``); what it stops keeping is in ``activations.recomputed_bytes_per_token``.
The op names are the op graph's (``ops.block_ops``); an FP8 cast or a fine-tuning adapter op goes
with its GEMM (``layer_costs.slot_of``'s suffixes). Megatron-core's own list and semantics:
``megatron/core/transformer/transformer_config.py`` ``recompute_modules``.
"""

from __future__ import annotations

from collections.abc import Collection

import numpy as np

from moesim.accounting import attention_params
from moesim.engine.op_types import Op
from moesim.engine.ops import forward_s
from moesim.schemas import ModelSpec

_MOE_BLOCK = ("router", "router_topk", "permute", "dispatch", "expert_up", "expert_act", "expert_down",
              "moe_overhead", "combine", "unpermute", "shared_up", "shared_act", "shared_down", "ffn_allreduce")

#: The forward ops each module re-runs (a dense layer has no MoE ops, a MoE layer no ``ffn_*`` GEMMs).
#: ``mla_up_proj`` re-runs MLA's up-projections, which the op graph folds into ``qkv_proj``: priced
#: at their share of its FLOPs (:func:`mla_up_share`), and the rotary embedding applied inside them. ``moe`` and ``mlp`` use normal checkpointing,
#: so the block's TP collective (sequence-parallel gather / scatter) runs again too. ``layernorm``
#: re-runs those of the two pre-norms that are layers of their own (:func:`layernorm_ops`).
RECOMPUTE_OPS: dict[str, tuple[str, ...]] = {
    "core_attn": ("attn_core", "cp_merge"),  # under CP the ring steps' merge re-runs with it
    "layernorm": ("attn_norm", "ffn_norm"),
    "mla_up_proj": ("qkv_proj", "rope"),
    "moe_act": ("expert_act",),
    "shared_experts": ("shared_up", "shared_act", "shared_down"),
    "moe": _MOE_BLOCK,
    "mlp": ("ffn_up", "ffn_act", "ffn_down", "ffn_allreduce"),
}
#: Megatron-core's recompute of the pre-norms and whole MoE blocks (``--recompute-modules layernorm
#: moe``): the usual way to fit long sequences of an MoE model short of full recompute, which fit
#: advice suggests and plan search tries (:func:`moe_recompute_applies`).
MOE_RECOMPUTE_MODULES = ("layernorm", "moe")
#: Ops whose re-run is communication, booked as such: (all-to-all, TP collective) names.
A2A_OPS = ("dispatch", "combine")
TP_OPS = ("attn_allreduce", "ffn_allreduce")


def moe_recompute_applies(s) -> bool:
    """Whether :data:`MOE_RECOMPUTE_MODULES` is a recompute setting to offer scenario ``s``: it has
    routed MoE layers, its experts run under Megatron-core (transformers' loop, ``moe_impl: hf_loop``,
    takes no modules) and its own selective recompute is not already that."""
    m, p = s.model, s.plan
    return (bool(m.n_moe_layers) and m.n_experts > 1 and p.moe_impl != "hf_loop"
            and p.recompute_modules != list(MOE_RECOMPUTE_MODULES))


def mla_up_share(m: ModelSpec) -> float:
    """Fraction of the op graph's MLA ``qkv_proj`` FLOPs that are the Q and KV up-projections (the
    whole Q projection without a Q latent); the rest: the down-projections to the latents and the
    shared rope key. 0 without MLA."""
    if m.mla is None:
        return 0.0
    a, h, d = m.mla, m.n_heads, m.d_model
    qk = a.qk_nope_head_dim + a.qk_rope_head_dim
    # without a Q latent (q_lora_rank 0) the Q projection itself runs inside the re-run (linear_q_proj)
    q = a.q_lora_rank * h * qk if a.q_lora_rank else d * h * qk
    up = q + a.kv_lora_rank * h * (a.qk_nope_head_dim + a.v_head_dim)
    return up / (attention_params(m) - h * a.v_head_dim * d)


def layernorm_ops(mla: bool, moe_layer: bool) -> set[str]:
    """The norms Megatron-core's ``layernorm`` module re-runs: those that are layers of their own
    under its Transformer Engine spec, MLA's input norm and a MoE layer's pre-MLP norm; the others
    are fused into the next GEMM (``TELayerNormColumnParallelLinear``) and have no separate output
    to discard (``transformer_layer.py`` recomputes a norm only when it is not an ``IdentityOp``).
    A subset of :data:`RECOMPUTE_OPS`' ``layernorm`` entry, the two pre-norms."""
    own = {"attn_norm": mla, "ffn_norm": moe_layer}
    return {n for n in RECOMPUTE_OPS["layernorm"] if own[n]}


def recompute_s(ops: list[Op], secs: dict[str, np.ndarray], modules: Collection[str], base_name,
                up_share: float, mla: bool = False, moe_layer: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(all, all-to-all, TP collective) forward seconds the ``modules`` re-run among ``ops`` priced at
    ``secs`` (``ops.price``) for a MoE layer (``moe_layer``) or a dense one, of a model with MLA or
    not (``mla``); an op counts once whichever modules list it. ``base_name``: maps an op's name to
    its op-graph name (strips cast / adapter suffixes)."""
    names = {n for mod in modules
             for n in (layernorm_ops(mla, moe_layer) if mod == "layernorm" else RECOMPUTE_OPS[mod])}
    total, a2a, tp = np.zeros(()), np.zeros(()), np.zeros(())
    for op in ops:
        base = base_name(op.name)
        if base not in names:
            continue
        t = forward_s(op, secs[op.name])
        if base == "qkv_proj":  # only mla_up_proj lists it
            t = t * up_share
        total = total + t
        if base in A2A_OPS:
            a2a = a2a + t
        elif base in TP_OPS:
            tp = tp + t
    return total, a2a, tp
