"""Low-precision training's extra ops: Transformer Engine's casts around every FP8 or NVFP4 GEMM
(``costmodel.fp8``), and FP8 attention's speed (``costmodel.attention_rate``)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from moesim.costmodel.flash_attention import ATTN_BWD_FACTOR
from moesim.costmodel.fp8 import NVFP4_COPY_BYTES, SPLIT_ACCUMULATION_SLOWDOWN, fp8_cast_bytes
from moesim.engine.op_types import Op


def cast_recipe(compute_dtype: str, fp8_recipe: str) -> str | None:
    """The cast recipe of a training step's GEMMs: ``plan.fp8_recipe`` under FP8 math, Transformer Engine's
    NVFP4BlockScaling (``nvfp4``) under FP4 math (``model.dtype: nvfp4`` on Blackwell), None for 16-bit or
    fp32 GEMMs (no casts)."""
    return {"fp8": fp8_recipe, "fp4": "nvfp4"}.get(compute_dtype)


def primary_weight_bytes(recipe: str) -> float:
    """Bytes a parameter all-gather moves per weight kept in low precision (``plan.fp8_param_gather``): 1 for FP8,
    one NVFP4 copy (4 bits and a scale per 16 values) for ``nvfp4``."""
    return NVFP4_COPY_BYTES if recipe == "nvfp4" else 1.0


def fp8_training_ops(ops: list[Op], recipe: str, weight_casts_per_microbatch: float,
                     split_accumulation: bool = True, transposes: bool = True,
                     fp8_params: bool = False) -> list[Op]:
    """``ops`` of an FP8 training block with Transformer Engine's extra work (``costmodel.fp8``).

    After each FP8 GEMM (every GEMM but the router's) come a forward cast op (its input cast to FP8
    with its transpose, free where fused into the preceding norm: QKV and the FFN/shared up
    projections; plus the weight's cast, ``weight_casts_per_microbatch`` of it) and a backward cast
    op (the output gradient's cast-transpose, and the input's transpose where the norm fused the
    forward cast). With ``split_accumulation`` (Hopper, Ada: ``hardware.device.fp8_split_accumulation``)
    the GEMMs' backward runs with split accumulation (``fp8.SPLIT_ACCUMULATION_SLOWDOWN`` on its 2x);
    without it (Blackwell: FP32 accumulation in the tensor cores) at the forward's speed. ``transposes``
    False (``hardware.device.fp8_non_tn_gemm``: Blackwell's FP8 GEMMs take any layout): the tensor-scaled
    casts write no transposed copies (``costmodel.fp8.cast_passes``). ``fp8_params`` (``plan.fp8_param_gather``):
    FP8 primary weights, which no layer casts (``costmodel.fp8.fp8_cast_bytes``).
    """
    slowdown = SPLIT_ACCUMULATION_SLOWDOWN if split_accumulation else 1.0
    out = []
    for op in ops:
        if op.kind not in ("gemm", "grouped_gemm") or op.name == "router":
            out.append(op)
            continue
        a = op.args
        if op.kind == "gemm":
            rows, experts = np.asarray(a["m"], dtype=float), 1.0
        else:
            c = np.asarray(a["tokens_per_expert"], dtype=float)
            rows, experts = c.sum(axis=-1), float(c.shape[-1])  # every local expert's weight is cast
        fused = op.name in ("qkv_proj", "ffn_up") or (op.name.startswith("shared") and op.name.endswith("_up"))
        c = fp8_cast_bytes(rows, a["k"], a["n"], recipe=recipe, norm_fused=fused,
                           weight_casts_per_microbatch=weight_casts_per_microbatch, transposes=transposes,
                           fp8_params=fp8_params)
        fwd = c["fwd_bytes"] + experts * c["weight_bytes"]
        out += [replace(op, bwd_factor=2.0 * slowdown),
                Op(f"{op.name}_cast", "fp8_cast", "compute", dict(nbytes=fwd, kernels=c["fwd_kernels"] + c["weight_kernels"]),
                   0.0, fwd, phase="fwd"),
                Op(f"{op.name}_cast_bwd", "fp8_cast", "compute", dict(nbytes=c["bwd_bytes"], kernels=c["bwd_kernels"]),
                   0.0, c["bwd_bytes"], phase="bwd")]
    return out


def fp8_attention_ops(ops: list[Op], speedup: tuple[float, float]) -> list[Op]:
    """``ops`` with the attention core in FP8: its forward ``speedup[0]`` and its backward ``speedup[1]``
    times the 16-bit kernel's speed (``costmodel.attention_rate.fp8_attention_speedup``)."""
    fwd, bwd = speedup
    return [replace(op, args={**op.args, "speedup": fwd}, bwd_factor=(op.bwd_factor or ATTN_BWD_FACTOR) * fwd / bwd)
            if op.name == "attn_core" else op for op in ops]


#: Bytes one element of an FP8-dispatched row takes: 1 byte and one fp32 scale per 128 channels (DeepEP's FP8
#: dispatch, deepseek-ai/DeepEP README; DeepSeek-V3's 1x128 activation tiles, arXiv:2412.19437 sec. 3.3.2).
FP8_DISPATCH_BYTES = 1.0 + 4.0 / 128


def fp8_dispatch_ops(ops: list[Op], act_bytes: float) -> tuple[list[Op], float]:
    """``ops`` with the forward EP dispatch sent in FP8 (``plan.fp8_dispatch``), and the ratio of its bytes to
    the 16-bit dispatch's. DeepSeek-V3 (sec. 3.3.3) quantizes the activations before the MoE up-projections to
    FP8 and then dispatches them; the combine and both backward all-to-alls (the gradients of dispatch and
    combine) stay in BF16. So the ``dispatch`` op becomes a forward-only op at ``FP8_DISPATCH_BYTES /
    act_bytes`` of its bytes and a backward-only ``dispatch_bwd`` at the 16-bit bytes (the same slot)."""
    ratio = FP8_DISPATCH_BYTES / act_bytes
    out: list[Op] = []
    for op in ops:
        if op.name == "dispatch" and op.kind == "alltoall":
            fwd_args = dict(op.args, bytes_to_peers=np.asarray(op.args["bytes_to_peers"], dtype=float) * ratio)
            out += [replace(op, args=fwd_args, nbytes=np.asarray(op.nbytes, dtype=float) * ratio, phase="fwd"),
                    replace(op, name="dispatch_bwd", phase="bwd")]
        else:
            out.append(op)
    return out, ratio
