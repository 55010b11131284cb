"""FP8 on Hopper: how far FP8 GEMMs fall short of 2x BF16, and the casts FP8 training adds. Pure numpy.

Two corrections for a cost model that prices an FP8 GEMM with a BF16 efficiency table applied to the
FP8 peak (2x the BF16 peak on H100/H200/H800):

1. ``fp8_efficiency_scale(m, n, k)``: (FP8 achieved fraction of the FP8 peak) / (BF16 achieved fraction
   of the BF16 peak) for the same shape on the same device. Since the FP8 peak is exactly twice the BF16
   one on Hopper, this is simply ``fp8 speedup over bf16 / 2``. Model (two fitted constants, the ridge
   from the device, not fitted)::

       I(m, n, k) = 2 m n k / (m k + n k + 2 m n)          FLOP per byte of the fp8 GEMM (fp8 in, bf16 out)
       c          = I**q / (I**q + I_ridge**q)             0 when bandwidth-bound, 1 when compute-bound
       I_ridge    = peak_fp8_flops / mem_bw_bytes_s        591 FLOP/B on H100 SXM (1978.9 TF, 3350 GB/s)
       q          = grouped_eff.OVERLAP (1.99)             the soft-roofline exponent fitted there; not refitted
       scale      = S_MEMORY + c * (S_COMPUTE - S_MEMORY)

   For a weight-dominated GEMM ``I ~ 2m``: on H100 (n = 12288, k = 5376) ``m = 64`` tokens gives
   ``c = 0.04``, ``m = 128`` 0.14, ``m = 512`` 0.66, ``m = 4096`` 0.96.

2. ``fp8_cast_bytes(...)``: the memory passes Transformer Engine (TE) adds around every linear layer in
   FP8 *training* (delayed or current per-tensor scaling), per microbatch, split into forward, backward
   and weight casts, with the kernels launched. The spec (``CAST_PASSES``) is read from TE's source; see
   "Cast spec" below. Serving with FP8 weights and FP8 activations (TensorRT-LLM, vLLM) casts no weights
   at run time and fuses the activation quantization into the preceding kernel: only the scale applies.

Data: ``moesim/data/fp8_gemm.csv`` -- published same-device BF16 vs FP8 GEMM measurements on Hopper,
each row citing its source and shape:

* FBGEMM PR #2546 (H100 at 500 W, CUTLASS row-wise FP8 vs torch BF16, three large shapes),
* vLLM PR #49363 (H100, CUTLASS per-tensor FP8 vs torch BF16, N=12288 K=5376, m = 1..128),
* TransformerEngine ``docs/examples/gemm_profiling/gemm_profiling.rst`` @1609c89 (H200 NVL, cuBLASLt
  per-tensor FP8 pre-quantized vs BF16, per-layer sums of the Fprop/Dgrad/Wgrad GEMMs of a 5B model;
  and the same GEMMs under te.Linear autocast, which adds the operand casts -- the ``cast`` rows),
* stas00/ml-engineering's "Maximum Achievable Matmul FLOPS" table @7bc7c30 (best BF16 vs best FP8 over
  a shape search, H100 SXM and GH200) -- different shapes, used as a held-out sanity check only,
* block-scaled FP8 kernels (FBGEMM, vLLM, torchao; ``kind = block``): recorded, not fitted (0.67-0.86;
  kernel-dependent: DeepGEMM's block-scaled kernels reach ~72 % of the FP8 peak, see ``grouped_eff.py``).

Fit (``fit_scale``; rows ``split = fit``: FBG-1..3, VLLM-1, VLLM-3): ``S_COMPUTE = 0.980``,
``S_MEMORY = 0.884``. Fit rows: |error| of the scale median 1.9 %, max 6.4 % (FBG-3, where FP8 beat 2x
BF16). Held out (VLLM-2, VLLM-4, TE-F/D/W, MAMF-H100, MAMF-GH200): median 3.3 %, max 9.8 %, and biased
high: VLLM-4 (m = 128, 0.825 measured: the FP8 kernel's dip near the ridge) +8.8 %, the three H200
cuBLASLt rows +2.8..3.3 % (0.949-0.953 measured), MAMF-H100 +9.8 % (0.883), MAMF-GH200 +5.3 %. So for
cuBLAS-based stacks on compute-bound shapes ~0.95 is the better reading (refitting both constants on
all ten same-shape kernel rows gives 0.963 / 0.868); a single constant fitted on the fit rows (0.937)
misses the held-out rows by median 1.7 %, max 13.5 % (it over-speeds the bandwidth-bound ones).

What the data do NOT say: the scale is measured with fast accumulation (fprop-style) FP8 GEMMs. TE runs
dgrad and wgrad with split accumulation (``_2X_ACC_DGRAD = _2X_ACC_WGRAD = True`` in TE 1.x
``module/base.py``; ``fp8_gemm_dgrad/wgrad = MMParams(use_split_accumulator=True)`` in TE 2.x recipes),
which pytorch/ao issue #2377 puts at 1.1-1.2x slower than fast accumulation on H100 (a stated range, no
table): ``SPLIT_ACCUMULATION_SLOWDOWN`` (1.15, unfitted) is offered for the backward GEMMs. Only where the
tensor cores need it (``hardware.device.fp8_split_accumulation``): Hopper's FP8 MMA accumulates in reduced
precision (DeepSeek-V3's report and DeepGEMM issue #50: ~14 bits kept per product; triton-lang/triton PR #2300:
the accumulation flag "only applies to Hopper"), while Blackwell's accumulates in FP32 and cuBLASLt has no
fast-accumulation mode on sm100 (NVIDIA/TransformerEngine PR #2748 review, 2026-03-11: "there is no
fastAccuMode for sm100"), so the Blackwell presets run the backward at the forward's speed.

Cast spec (TE v1.8 ``transformer_engine/pytorch/module/{linear,layernorm_linear,layernorm_mlp,base}.py``
@3ec998e, mid-2024, the generation NeMo 24.07 shipped (the container's exact TE version not checked); TE
2.x @d0067d0 ``module/{linear,layernorm_linear}.py``, ``csrc/quantizer.cpp``,
``csrc/extensions/normalization.cpp`` for current scaling; Megatron-LM core_r0.8.0 @baf94af
``models/gpt/gpt_layer_specs.py`` (QKV and FC1 are ``TELayerNormColumnParallelLinear``, proj and FC2
``TERowParallelLinear``) and ``pipeline_parallel/schedules.py`` (``set_is_first_microbatch``: the fp8
weight copies are cast on the first microbatch of a step and reused, unless
``disable_parameter_transpose_cache``)). Per linear layer ``y = x W^T`` with ``x``
``tokens x in``, ``W`` ``out x in``, ``dy`` ``tokens x out``; bytes per element read / written:

====================  =====  ==========================================================  =========  ======  ==============
tensor                pass   kernel (delayed scaling)                                    read B     write   kernels
====================  =====  ==========================================================  =========  ======  ==============
x (te.Linear)         fwd    ``fp8_cast_transpose_fused``: fp8 x and fp8 x^T (for wgrad)  2          1 + 1   1
x (LayerNormLinear)   fwd    the norm kernel writes fp8 (``_apply_normalization`` fp8     (0)        -1      0 (fused)
                             output): FREE, saves 1 B/elem against the bf16 norm output
x^T (LayerNormLinear) bwd    ``tex.fp8_transpose(ln_out)`` before the wgrad GEMM           1          1       1
W                     wt     ``get_fp8_workspace(..., with_transpose=True)``: W and W^T    2          1 + 1   1
                             once per step (Megatron passes ``is_first_microbatch``; the
                             cast is cached for the other microbatches), else per call
dy                    bwd    ``grad_output_preprocess``: ``fp8_cast_transpose_fused``     2          1 + 1   1
                             (``_bgrad_fused`` with a bias: the bias gradient is free)
dx, dW                bwd    dgrad writes bf16, wgrad accumulates into fp32 main_grad:    0          0       0
                             as in BF16 training
====================  =====  ==========================================================  =========  ======  ==============

amax: computed inside every cast kernel (free); once per microbatch forward and once per backward the
model's amax buffer is all-reduced over the amax-reduction group and one fused kernel updates the
history and scales (``AMAX_UPDATES_PER_MICROBATCH``; bytes negligible, ~2 x (one small all-reduce + 1
launch) per microbatch for the whole model).

Current (per-tensor, just-in-time) scaling, TE 2.x ``Float8CurrentScalingQuantizer``: every cast first
reads the tensor once for its amax (``nvte_compute_amax``), computes the scale (a tiny kernel; all-reduced
over TP when sequence-parallel), then casts: +2 B read and +2 kernels per tensor. Its norm path is
``FUSED_NORM_AMAX_FP8``: the norm writes bf16 (as in BF16 training) with the amax fused, then one cast
kernel writes fp8 x and x^T (read 2, write 2).

What is free (fused into a neighbour): the cast of a LayerNormLinear input (QKV and FC1 in Megatron's
TE layer spec) into its norm under delayed scaling; every amax under delayed scaling; the bias
gradient into the grad-output cast; the fp8 GEMM's own operand reads (the GEMM reads 1 B instead of 2 B).
Not covered: FP8 attention (``fp8_dpa``), FP8 all-gathers under sequence parallelism (TE casts before
the gather, halving those bytes, and transposes after it), recomputed forwards (a full-recompute
forward repeats the forward activation casts, not the weight cast).

Cast kernels' speed: the H200 NVL ``cast`` rows (te.Linear autocast minus pre-quantized time, where the
benchmark casts x with transpose and W without, ``autocast_cast_bytes``) imply the cast kernels stream
at ``CAST_MEMORY_FRACTION`` = 0.830 of the datasheet bandwidth (fitted on the three current-scaling
rows, each within 1.4 %; the three delayed-scaling rows, held out, within -0.4 %, +14.6 % (Dgrad set)
and -4.2 %: the byte counts of both recipes, amax pass included, hold). That is well
above the 0.576 the shipped H100 profile measured for the SwiGLU kernel (``memory_efficiency``): price
the casts with this fraction, not with the profile's.

Units: ``m``/``tokens`` rows, ``n``/``k``/features elements, bytes, seconds, FLOP/s, bytes/s.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from moesim.costmodel.grouped_eff import OVERLAP
from moesim.costmodel.published import data_path, read_table

#: The published points (CSV with ``#`` comment lines above the header).
DATA_CSV = data_path("fp8_gemm.csv")

S_COMPUTE = 0.980
"""FP8/BF16 ratio of achieved fractions of peak for compute-bound GEMMs (c -> 1). Fitted (``fit_scale``)."""

S_MEMORY = 0.884
"""The same ratio for bandwidth-bound GEMMs (c -> 0): FP8 moves half the weight bytes but reaches
~1.77x, not 2x (scales, epilogue, launch latency). Fitted (``fit_scale``)."""

H100_RIDGE_FLOP_PER_BYTE = 1978.9e12 / 3350e9
"""Ridge of the H100 SXM FP8 roofline: datasheet FP8 dense FLOP/s over HBM bytes/s (~591)."""

CAST_MEMORY_FRACTION = 0.830
"""Fraction of the datasheet HBM bandwidth TE's cast / cast-transpose / amax kernels stream at
(H200 NVL, fitted on the ``cast_fit`` rows by ``fit_cast_fraction``)."""

SPLIT_ACCUMULATION_SLOWDOWN = 1.15
"""Time factor of an FP8 GEMM with split (periodically promoted) accumulation over fast accumulation:
the middle of the 1.1-1.2x pytorch/ao issue #2377 states for H100. Not fitted; TE uses split
accumulation for dgrad and wgrad, fast for fprop. Hopper and Ada only (``DeviceSpec.fp8_split_accumulation``)."""

AMAX_UPDATES_PER_MICROBATCH = 2
"""Delayed scaling: amax all-reduces + fused history/scale update kernels per microbatch for the whole
model (one after the forward, one in the backward; TE ``FP8GlobalStateManager.reduce_and_update_fp8_tensors``)."""

RECIPES = ("delayed", "current", "mxfp8", "nvfp4")
"""Cast recipes: Transformer Engine's FP8 scaling recipes (``plan.fp8_recipe``) and NVFP4BlockScaling, the
recipe of ``model.dtype: nvfp4`` training (``NVFP4_COPY_BYTES``)."""

TENSOR_SCALED = ("delayed", "current")
"""The recipes with one scale per tensor, whose weights can be kept in FP8 (``plan.fp8_param_gather``)."""

PRIMARY_WEIGHT_RECIPES = TENSOR_SCALED + ("nvfp4",)
"""The recipes under which ``plan.fp8_param_gather`` keeps the weights themselves in low precision, so no layer casts
one (MXFP8 weights keep their casts)."""

NVFP4_COPY_BYTES = 0.5 + 1.0 / 16.0
"""Bytes per element of one NVFP4 copy of a tensor: a 4-bit E2M1 value and an E4M3 scale per 16 values
(Transformer Engine's ``NVFP4Quantizer``; its one FP32 scale per tensor is left out)."""


# --------------------------------------------------------------------------------------- the scale

def arithmetic_intensity(m, n, k, in_bytes: float = 1.0, out_bytes: float = 2.0):
    """FLOP per byte of an ``(m x k) @ (k x n)`` GEMM reading each operand once at ``in_bytes`` per
    element and writing the ``m x n`` output at ``out_bytes``."""
    m = np.asarray(m, dtype=float)
    n, k = np.asarray(n, dtype=float), np.asarray(k, dtype=float)
    return 2.0 * m * n * k / (in_bytes * (m * k + n * k) + out_bytes * m * n)


def compute_boundness(m, n, k, ridge_flop_per_byte: float = H100_RIDGE_FLOP_PER_BYTE, q: float = OVERLAP):
    """``c = I**q / (I**q + I_ridge**q)`` in [0, 1): how compute-bound the FP8 GEMM is (0: bandwidth-bound)."""
    i = arithmetic_intensity(m, n, k) / ridge_flop_per_byte
    return i**q / (i**q + 1.0)


def fp8_efficiency_scale(m, n, k, *, ridge_flop_per_byte: float = H100_RIDGE_FLOP_PER_BYTE,
                         s_compute: float = S_COMPUTE, s_memory: float = S_MEMORY):
    """(FP8 achieved fraction of the FP8 peak) / (BF16 achieved fraction of the BF16 peak), same shape
    and device, per-tensor or row-wise scaled FP8 (TE delayed/current scaling, TensorRT-LLM, vLLM):
    ``s_memory + c * (s_compute - s_memory)`` with ``c = compute_boundness(m, n, k)``.

    Multiply a BF16 efficiency (fraction of the BF16 peak) by this to get the FP8 efficiency (fraction
    of the FP8 peak). ``ridge_flop_per_byte``: the target's FP8 peak FLOP/s over its bytes/s (default
    H100 SXM). Fast-accumulation kernels; see ``SPLIT_ACCUMULATION_SLOWDOWN`` for dgrad/wgrad.
    """
    c = compute_boundness(m, n, k, ridge_flop_per_byte)
    return s_memory + c * (s_compute - s_memory)


# --------------------------------------------------------------------------------------- the data

_NUMERIC = ("peak_bf16_tflops", "peak_fp8_tflops", "mem_bw_gbps", "m", "n", "k", "bf16_tflops", "fp8_tflops",
            "bf16_ms", "fp8_ms", "fp8_quant_ms", "tolerance")


def load_points(path: Path | str = DATA_CSV) -> list[dict]:
    """The CSV rows (numeric columns float, blank -> nan), each with ``shape_list``: ``[(m, n, k), ...]``
    (the ``shapes`` column of an aggregated row, else the row's own ``(m, n, k)``)."""
    rows = read_table(path)
    for r in rows:
        for c in _NUMERIC:
            r[c] = float(r[c]) if r[c].strip() else float("nan")
        shapes = r["shapes"].strip()
        if shapes and r["kind"] != "best":
            r["shape_list"] = [tuple(float(x) for x in s.split("x")) for s in shapes.split(";")]
        else:
            r["shape_list"] = [(r["m"], r["n"], r["k"])]
    return rows


def measured_scale(row: dict) -> float:
    """The row's measured scale: FP8 speedup over BF16 / (FP8 peak / BF16 peak)."""
    if np.isfinite(row["bf16_tflops"]) and np.isfinite(row["fp8_tflops"]):
        speedup = row["fp8_tflops"] / row["bf16_tflops"]
    else:
        speedup = row["bf16_ms"] / row["fp8_ms"]
    return speedup / (row["peak_fp8_tflops"] / row["peak_bf16_tflops"])


def _ridge(row: dict) -> float:
    return row["peak_fp8_tflops"] * 1e12 / (row["mem_bw_gbps"] * 1e9)


def _compute_boundness_of(row: dict) -> float:
    """FLOP-weighted compute-boundness of a row's shape set (a ``best`` row: its fp8 best shape)."""
    shapes = np.array(row["shape_list"], dtype=float)
    c = compute_boundness(shapes[:, 0], shapes[:, 1], shapes[:, 2], _ridge(row))
    flops = shapes.prod(axis=1)
    return float((c * flops).sum() / flops.sum())


def predict_scale(row: dict, s_compute: float = S_COMPUTE, s_memory: float = S_MEMORY) -> float:
    """Modelled scale of a row. An aggregated row sums its GEMMs' times, each taken proportional to
    its FLOPs in BF16 (one BF16 efficiency for the set): ``sum(f) / sum(f / s_i)``."""
    shapes = np.array(row["shape_list"], dtype=float)
    s = fp8_efficiency_scale(shapes[:, 0], shapes[:, 1], shapes[:, 2], ridge_flop_per_byte=_ridge(row),
                             s_compute=s_compute, s_memory=s_memory)
    flops = shapes.prod(axis=1)
    return float(flops.sum() / (flops / s).sum())


def scale_rows(rows: list[dict] | None = None, split: str | None = None) -> list[dict]:
    """The per-tensor / row-wise rows of ``kind`` kernel or best (optionally only one ``split``)."""
    rows = load_points() if rows is None else rows
    return [r for r in rows if r["kind"] in ("kernel", "best") and r["fp8_scaling"] in ("tensor", "row")
            and (split is None or r["split"] == split)]


def fit_scale(rows: list[dict] | None = None) -> tuple[float, float]:
    """(S_COMPUTE, S_MEMORY) by least squares on the relative error of the ``fit`` rows' scales.

    The model is linear in the two constants (``s = S_MEMORY * (1 - c) + S_COMPUTE * c``), so this is a
    weighted linear least squares (weights 1 / measured): closed form, numpy only.
    """
    fit = scale_rows(rows, "fit")
    c = np.array([_compute_boundness_of(r) for r in fit])
    y = np.array([measured_scale(r) for r in fit])
    a = np.stack([c, 1.0 - c], axis=1) / y[:, None]
    sol, *_ = np.linalg.lstsq(a, np.ones_like(y), rcond=None)
    return float(sol[0]), float(sol[1])


def scale_errors(rows: list[dict] | None = None, split: str | None = None,
                 s_compute: float = S_COMPUTE, s_memory: float = S_MEMORY) -> dict[str, float]:
    """Row id -> modelled / measured scale - 1."""
    return {r["id"]: predict_scale(r, s_compute, s_memory) / measured_scale(r) - 1.0
            for r in scale_rows(rows, split)}


# --------------------------------------------------------------------------------------- the casts

@dataclass(frozen=True)
class CastPass:
    """One memory pass FP8 training adds to a linear layer.

    ``tensor``: ``x`` (input, tokens x in), ``w`` (weight, in x out), ``dy`` (output gradient,
    tokens x out). ``phase``: ``fwd``/``bwd`` (every microbatch) or ``weight`` (every weight cast:
    once per optimizer step under Megatron, else every microbatch). ``read_b``/``write_b``: bytes per
    element read and written beyond what the BF16 layer moves (negative: saved). ``kernels``: launches.
    """

    tensor: str
    phase: str
    read_b: float
    write_b: float
    kernels: int
    what: str
    transpose_b: float = 0.0  # of write_b: the transposed copy (x^T, W^T, dy^T) a TN-only GEMM needs
    transpose_only: bool = False  # the pass only transposes (tex.fp8_transpose): none without TN-only GEMMs


#: (recipe, norm_fused) -> the passes of one linear layer. ``norm_fused``: the input comes from a
#: fused norm (TE LayerNormLinear: Megatron's QKV and FC1); otherwise a te.Linear (proj, FC2).
CAST_PASSES: dict[tuple[str, bool], tuple[CastPass, ...]] = {
    ("delayed", False): (
        CastPass("x", "fwd", 2.0, 2.0, 1, "fp8_cast_transpose_fused: fp8 x (fprop) and fp8 x^T (wgrad); amax fused", 1.0),
        CastPass("dy", "bwd", 2.0, 2.0, 1, "fp8_cast_transpose_fused: fp8 dy (dgrad) and dy^T (wgrad); amax, bgrad fused",
                 1.0),
        CastPass("w", "weight", 2.0, 2.0, 1, "weight cast + transpose into the fp8 workspace (W fprop, W^T dgrad)", 1.0),
    ),
    ("delayed", True): (
        CastPass("x", "fwd", 0.0, -1.0, 0, "norm kernel writes fp8 instead of bf16 (fused cast: free, saves 1 B)"),
        CastPass("x", "bwd", 1.0, 1.0, 1, "tex.fp8_transpose(ln_out) for the wgrad GEMM", 1.0, True),
        CastPass("dy", "bwd", 2.0, 2.0, 1, "fp8_cast_transpose_fused of the output gradient", 1.0),
        CastPass("w", "weight", 2.0, 2.0, 1, "weight cast + transpose into the fp8 workspace", 1.0),
    ),
    ("current", False): (
        CastPass("x", "fwd", 4.0, 2.0, 3, "amax pass (read 2) + scale kernel + cast_transpose (read 2, write 1+1)", 1.0),
        CastPass("dy", "bwd", 4.0, 2.0, 3, "amax pass + scale kernel + cast_transpose of the output gradient", 1.0),
        CastPass("w", "weight", 4.0, 2.0, 3, "amax pass + scale kernel + cast_transpose of the weight", 1.0),
    ),
    ("current", True): (
        CastPass("x", "fwd", 2.0, 2.0, 2, "FUSED_NORM_AMAX_FP8: norm writes bf16 with amax; scale kernel; "
                 "cast_transpose (read 2, write 1+1)", 1.0),
        CastPass("dy", "bwd", 4.0, 2.0, 3, "amax pass + scale kernel + cast_transpose of the output gradient", 1.0),
        CastPass("w", "weight", 4.0, 2.0, 3, "amax pass + scale kernel + cast_transpose of the weight", 1.0),
    ),
}


#: MXFP8 (Transformer Engine's MXFP8BlockScaling, Blackwell): one quantize kernel writes a rowwise and a
#: columnwise FP8 copy, each with its own E8M0 scale per 32 elements along its reduction axis, so the
#: columnwise copy is a second quantization, not a transpose: every GEMM layout needs both, on any GPU.
#: Priced with delayed scaling's passes (read 2, write 1+1 per cast; no amax pass), the scales' 1/32 B
#: per element and per copy left out.
CAST_PASSES[("mxfp8", False)] = tuple(replace(p, transpose_b=0.0) for p in CAST_PASSES[("delayed", False)])
CAST_PASSES[("mxfp8", True)] = tuple(replace(p, transpose_b=0.0, transpose_only=False)
                                     for p in CAST_PASSES[("delayed", True)])


#: NVFP4 (Transformer Engine's NVFP4BlockScaling, Blackwell; ``model.dtype: nvfp4`` training): every GEMM operand
#: in 4-bit E2M1 with an E4M3 scale per 16 elements along the GEMM's reduction axis and one FP32 scale per tensor
#: from its amax. As under MXFP8 the columnwise copy is a second quantization, not a transpose (the FP4 GEMMs
#: are TN-only and the 16-element blocks run along K), so a cast writes two copies of ``NVFP4_COPY_BYTES``; as
#: under current scaling the tensor's amax is a pass of its own before the quantize kernel (read 2 + read 2).
#: The norm-fused input is priced as a te.Linear's (the norm writes its 16-bit output and the cast follows):
#: no fused norm-to-NVFP4 kernel is assumed. Priced as MLPerf Training v5.1's NVIDIA configs run it
#: (config_common_fp4.sh: NVTE_NVFP4_DISABLE_RHT, _STOCHASTIC_ROUNDING and _2D_QUANTIZATION set): no random
#: Hadamard transform of the weight-gradient inputs, round-to-nearest, 1x16 blocks for the weights too.
_NVFP4_WRITE = 2.0 * NVFP4_COPY_BYTES
_NVFP4_PASSES = (
    CastPass("x", "fwd", 4.0, _NVFP4_WRITE, 2, "amax pass (read 2) + NVFP4 quantize: rowwise (fprop) and columnwise "
             "(wgrad) copies, 4 bits + a scale per 16 each"),
    CastPass("dy", "bwd", 4.0, _NVFP4_WRITE, 2, "amax pass + NVFP4 quantize of the output gradient: rowwise (dgrad) "
             "and columnwise (wgrad) copies"),
    CastPass("w", "weight", 4.0, _NVFP4_WRITE, 2, "amax pass + NVFP4 quantize of the weight: rowwise (fprop) and "
             "columnwise (dgrad) copies"),
)
CAST_PASSES[("nvfp4", False)] = CAST_PASSES[("nvfp4", True)] = _NVFP4_PASSES


#: FP8 primary weights (``plan.fp8_param_gather``) need no cast, only, on a TN-only GPU, their transpose once a step.
FP8_WEIGHT_TRANSPOSE = CastPass("w", "weight", 1.0, 1.0, 1, "transpose of the FP8 primary weight for the dgrad GEMM",
                                1.0, True)


def cast_passes(recipe: str = "delayed", norm_fused: bool = False, transposes: bool = True) -> tuple[CastPass, ...]:
    """The passes of one linear layer (see ``CAST_PASSES``). ``transposes`` False: the device's FP8 GEMMs
    take operands in any layout (``DeviceSpec.fp8_non_tn_gemm``), so the tensor-scaled recipes write no
    transposed copies (Transformer Engine's ``Float8Tensor.update_usage`` never makes one where
    ``is_non_tn_fp8_gemm_supported()``): each cast writes its rowwise copy only, and the transpose-only
    passes go."""
    if recipe not in RECIPES:
        raise ValueError(f"recipe = {recipe!r}: allowed {RECIPES}")
    passes = CAST_PASSES[(recipe, bool(norm_fused))]
    if transposes:
        return passes
    return tuple(replace(p, write_b=p.write_b - p.transpose_b, transpose_b=0.0) for p in passes if not p.transpose_only)


def cached_weight_bytes(recipe: str = "delayed", transposes: bool = True, fp8_params: bool = False) -> float:
    """Bytes per weight element of the FP8 copies a training step keeps between microbatches.

    Megatron-core passes ``is_first_microbatch`` to Transformer Engine, whose linear layers then cast each
    weight once a step and keep the result in the module's FP8 workspaces for the other microbatches (and
    the backward): what the weight cast writes (``cast_passes``), held beside the 16-bit weights, 2 bytes
    on Hopper (the FP8 copy and its transpose), 1 on Blackwell under tensor scaling, 2 under MXFP8 (row-
    and column-wise copies; their scales, 1/32 of a byte each, left out), 1.125 under NVFP4 (two 4-bit copies with
    their scales). FP8 primary weights
    (``fp8_params``, tensor-scaled) are not cast: the FP8 weight and, on Hopper, its cached transpose are the
    stored weights themselves (``train_bytes.stored_weight_bytes`` counts them at this cast's bytes), so 0 here, as
    for NVFP4 primary weights; MXFP8 keeps its casts (as :func:`fp8_cast_bytes`)."""
    if fp8_params and recipe in PRIMARY_WEIGHT_RECIPES:
        return 0.0
    return float(sum(p.write_b for p in cast_passes(recipe, False, transposes) if p.phase == "weight"))


def fp8_cast_bytes(tokens, in_features: int, out_features: int, *, recipe: str = "delayed",
                   norm_fused: bool = False, weight_casts_per_microbatch: float = 1.0,
                   transposes: bool = True, fp8_params: bool = False) -> dict[str, np.ndarray]:
    """Extra bytes (and kernel launches) FP8 training adds to one linear layer for one microbatch.

    ``tokens``: rows of the layer's input on this device (scalar or array); ``in_features`` /
    ``out_features``: the weight's dimensions on this device. ``weight_casts_per_microbatch``: 1 when
    every microbatch casts the weight (TE without ``is_first_microbatch``), ``1 / microbatches`` under
    Megatron (cast once per step and cached). ``transposes``: as :func:`cast_passes`. ``fp8_params``: the
    weights are kept in FP8 (Transformer Engine's FP8 primary weights, Megatron's ``--fp8-param-gather``):
    the optimizer writes them in FP8 from its master shard, so no layer casts a weight; a tensor-scaled
    weight is only transposed (read 1, write 1) where the GEMMs need TN layouts (MXFP8 weights keep their
    casts: not modelled apart); under ``nvfp4`` the weights are NVFP4 primary weights (Megatron's
    ``fp4_param_gather``, or a pre-quantized NVFP4 base for LoRA) holding their rowwise and columnwise copies, so
    no weight pass at all. Returns ``fwd_bytes``, ``bwd_bytes``, ``weight_bytes``
    (already times ``weight_casts_per_microbatch``) and ``fwd_kernels``, ``bwd_kernels``,
    ``weight_kernels`` (likewise).
    """
    t = np.asarray(tokens, dtype=float)
    elems = {"x": t * in_features, "dy": t * out_features, "w": np.full_like(t, float(in_features) * out_features)}
    out = {f"{p}_{q}": np.zeros_like(t) for p in ("fwd", "bwd", "weight") for q in ("bytes", "kernels")}
    passes = cast_passes(recipe, norm_fused, transposes)
    if fp8_params and recipe in PRIMARY_WEIGHT_RECIPES:
        passes = tuple(p for p in passes if p.phase != "weight")
        if transposes and recipe in TENSOR_SCALED:  # NVFP4 primary weights carry both copies: no transpose either
            passes += (FP8_WEIGHT_TRANSPOSE,)
    for p in passes:
        share = weight_casts_per_microbatch if p.phase == "weight" else 1.0
        out[f"{p.phase}_bytes"] = out[f"{p.phase}_bytes"] + share * elems[p.tensor] * (p.read_b + p.write_b)
        out[f"{p.phase}_kernels"] = out[f"{p.phase}_kernels"] + share * p.kernels
    return out


def cast_time_s(nbytes, kernels, mem_bw_bytes_s: float, launch_s: float = 0.0,
                fraction: float = CAST_MEMORY_FRACTION):
    """Seconds of cast kernels moving ``nbytes`` in ``kernels`` launches (negative bytes: a saving)."""
    return np.asarray(nbytes, dtype=float) / (mem_bw_bytes_s * fraction) + np.asarray(kernels, dtype=float) * launch_s


# --------------------------------------------------------------------------------------- cast data

def autocast_cast_bytes(m, n, k, recipe: str) -> np.ndarray:
    """Bytes the TE GEMM benchmark's autocast mode adds to one ``(m x k) @ (k x n)``: a te.Linear
    forward with grad enabled but an input that needs no grad (benchmarks/gemm/benchmark_gemm.py
    @1609c89): x is cast with its transpose (``backward_needs_input``), W without (``columnwise_usage
    = inp.requires_grad`` is False), every call. Delayed: x 2+2, W 2+1; current: +2 read each (amax)."""
    x, w = np.asarray(m, dtype=float) * k, np.asarray(n, dtype=float) * k
    amax = 2.0 if recipe == "current" else 0.0
    return x * (4.0 + amax) + w * (3.0 + amax)


def cast_rows(rows: list[dict] | None = None, split: str | None = None) -> list[dict]:
    """The ``cast`` rows (optionally one ``split``: ``cast_fit`` or ``cast_holdout``)."""
    rows = load_points() if rows is None else rows
    return [r for r in rows if r["kind"] == "cast" and (split is None or r["split"] == split)]


def implied_cast_fraction(row: dict) -> float:
    """Fraction of the row's HBM bandwidth its casts streamed at: modelled bytes / (overhead * bw)."""
    shapes = np.array(row["shape_list"], dtype=float)
    nbytes = autocast_cast_bytes(shapes[:, 0], shapes[:, 1], shapes[:, 2], row["fp8_scaling"]).sum()
    overhead_s = (row["fp8_quant_ms"] - row["fp8_ms"]) * 1e-3
    return float(nbytes / (overhead_s * row["mem_bw_gbps"] * 1e9))


def fit_cast_fraction(rows: list[dict] | None = None) -> float:
    """``CAST_MEMORY_FRACTION``: geometric mean of the ``cast_fit`` rows' implied fractions (least
    squares in log time)."""
    fr = np.array([implied_cast_fraction(r) for r in cast_rows(rows, "cast_fit")])
    return float(np.exp(np.log(fr).mean()))


def cast_errors(rows: list[dict] | None = None, split: str | None = None,
                fraction: float = CAST_MEMORY_FRACTION) -> dict[str, float]:
    """Row id -> modelled / measured cast overhead - 1 (launches ignored: ~2 per GEMM, < 1 % here)."""
    return {r["id"]: implied_cast_fraction(r) / fraction - 1.0 for r in cast_rows(rows, split)}
