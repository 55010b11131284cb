"""Fine-tuning in the training step's op graph: frozen GEMMs, LoRA adapters, QLoRA dequantisation.

``workload.trainable`` (``moesim.finetune``) changes three things in a block's ops (``ops.block_ops``):

- a frozen GEMM's backward computes only its input gradient ``dX = dY W^T``: half of the usual
  two-GEMM backward (Qi et al. 2023, arXiv:2401.10241 sec. 2), and no weight-gradient part for
  zero-bubble schedules (``wgrad``);
- a LoRA target gets two skinny GEMMs after its base GEMM, ``X A^T`` (``r`` outputs per adapted
  matrix) and ``(X A^T) B^T``; their backward is the usual two GEMMs each (the adapters train);
- under QLoRA each frozen quantised GEMM first dequantises its weights: a memory-bound kernel
  reading the nf4 weight (``finetune.nf4_bytes_per_weight``) and writing it in bf16, again in the
  backward (``dX`` needs ``W`` too); the GEMM itself runs in bf16 as before (bitsandbytes' 4-bit
  linear layer, QLoRA paper sec. 3). Expert GEMMs dequantise only the experts that got tokens.

With ``dropout`` each adapter first drops out its input (``lora_B(lora_A(dropout(x)))``, PEFT's and
Megatron's LoRA): an elementwise kernel reading the 16-bit input and writing its dropped-out copy and a 1-byte
mask, 5 bytes an element, and in backward reading the gradient and the mask and writing the input's gradient,
5 again (one dropout per adapted GEMM of the op graph: Megatron's fused QKV has one, Hugging Face's separate
q/k/v projections would have three).

Op names: ``<gemm>_lora_a``, ``<gemm>_lora_b``, ``<gemm>_lora_dropout``, ``<gemm>_dequant``, booked in their
GEMM's slot.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from moesim.engine.op_types import Op
from moesim.finetune import nf4_bytes_per_weight
from moesim.schemas.workload import TrainableSpec

#: The weight group (``finetune.GROUPS``) of each GEMM of the op graph.
GEMM_GROUP = {"qkv_proj": "attention", "o_proj": "attention", "router": "router",
              "expert_up": "experts", "expert_down": "experts",
              "shared_up": "dense_ffn", "shared_down": "dense_ffn", "ffn_up": "dense_ffn", "ffn_down": "dense_ffn"}
#: Suffixes of the ops this module adds (``layer_costs.slot_of`` books them with their GEMM).
SUFFIXES = ("_lora_a", "_lora_b", "_lora_dropout", "_dequant")
#: Bytes a dropout moves per element of its input, forward and (again) backward: 2 + 2 + 1 (mask).
DROPOUT_BYTES_PER_ELEMENT = 5.0
_BF16_BYTES = 2.0  # dequantised weights and LoRA compute are bf16 (QLoRA's compute dtype)


def frozen_groups(spec: TrainableSpec) -> frozenset[str]:
    """Weight groups whose base GEMMs skip the weight gradient under ``spec``."""
    return frozenset({"all": (), "experts": ("attention", "router", "dense_ffn"), "non_experts": ("experts",),
                      "lora": tuple(set(GEMM_GROUP.values()))}[spec.mode])


def frozen_op_names(spec: TrainableSpec) -> frozenset[str]:
    """Names of the op graph's GEMMs whose weights are frozen under ``spec``."""
    groups = frozen_groups(spec)
    return frozenset(name for name, g in GEMM_GROUP.items() if g in groups)


def _matrices(name: str, gated: bool) -> int:
    """Weight matrices fused in one GEMM of the op graph: Q, K, V in the QKV projection (MLA's
    factors approximated as three), gate and up in a gated up projection."""
    if name == "qkv_proj":
        return 3
    return 2 if gated and name.endswith("_up") else 1


def _rows(op: Op) -> np.ndarray:
    """Rows a GEMM op multiplies: its ``m``, or a grouped GEMM's tokens summed over its experts."""
    a = op.args
    if op.kind == "gemm":
        return np.asarray(a["m"], dtype=float)
    return np.asarray(a["tokens_per_expert"], dtype=float).sum(axis=-1)


def _gemm_like(op: Op, name: str, n: int, k: int) -> Op:
    """A GEMM shaped like ``op`` (same rows or tokens per expert) with ``n`` outputs and ``k`` inputs."""
    a, rows = op.args, _rows(op)
    args = dict(m=a["m"], n=n, k=k, dtype=a["dtype"]) if op.kind == "gemm" else dict(a, n=n, k=k)
    return Op(name, op.kind, "compute", args, 2.0 * rows * n * k, rows * (n + k) * _BF16_BYTES)


def lora_ops(op: Op, rank: int, gated: bool) -> list[Op]:
    """The adapter GEMMs of base GEMM ``op``: ``A`` (``k`` to ``matrices x r``), then ``B``
    (block-diagonal, ``matrices x r`` to ``n``: the FLOPs of one ``r x n`` GEMM)."""
    n, k = int(op.args["n"]), int(op.args["k"])
    r = rank * _matrices(op.name, gated)
    return [_gemm_like(op, f"{op.name}_lora_a", r, k), _gemm_like(op, f"{op.name}_lora_b", n, rank)]


def dropout_op(op: Op) -> Op:
    """The adapter's dropout on the input of ``op`` (its rows x ``k`` elements, :data:`DROPOUT_BYTES_PER_ELEMENT`
    each way): a memory-bound kernel in the GEMM's slot, its backward as long as its forward."""
    nbytes = _rows(op)[()] * float(op.args["k"]) * DROPOUT_BYTES_PER_ELEMENT
    return Op(f"{op.name}_lora_dropout", "memory", "compute", dict(nbytes=nbytes), 0.0, nbytes, bwd_factor=1.0)


def dequant_op(op: Op, spec: TrainableSpec) -> Op:
    """QLoRA's dequantisation of the weights of ``op`` (read nf4, write bf16), forward and backward."""
    a = op.args
    per_matrix = float(a["n"]) * float(a["k"])
    if op.kind == "grouped_gemm":  # only the experts that received tokens run
        weights = (np.asarray(a["tokens_per_expert"], dtype=float) > 0).sum(axis=-1) * per_matrix
    else:
        weights = per_matrix
    nbytes = np.asarray(weights, dtype=float)[()] * (nf4_bytes_per_weight(spec) + _BF16_BYTES)
    return Op(f"{op.name}_dequant", "memory", "compute", dict(nbytes=nbytes), 0.0, nbytes, bwd_factor=1.0)


def finetune_ops(ops: list[Op], spec: TrainableSpec, gated: bool) -> list[Op]:
    """``ops`` of one block under ``spec``: frozen GEMMs with an input-gradient-only backward, each
    followed by its dequantisation (QLoRA) and its adapters (LoRA targets). ``all``: ``ops`` as given."""
    if spec.mode == "all":
        return ops
    frozen = frozen_op_names(spec)
    out = []
    for op in ops:
        if op.name not in frozen:
            out.append(op)
            continue
        out.append(replace(op, bwd_factor=(op.bwd_factor or 2.0) / 2))  # dX only
        if spec.quantized:
            out.append(dequant_op(op, spec))
        if spec.mode == "lora" and GEMM_GROUP[op.name] in spec.lora_targets:
            out += ([dropout_op(op)] if spec.dropout else []) + lora_ops(op, spec.rank, gated)
    return out
