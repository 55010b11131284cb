"""NVFP4 GEMMs on Blackwell: one kernel model fitted on published timings. Pure numpy.

A Blackwell GPU's dense FP4 peak is four times its BF16 one (B200: 9,000 against 2,250 TFLOP/s). An
NVFP4 GEMM (``model.dtype: nvfp4`` on a device with an ``fp4`` peak: weights and activations in FP4
with an FP8 scale per 16 values) is priced as

    t = FP4_FIXED_S + max(flops / (peak_fp4 * FP4_COMPUTE_EFFICIENCY), bytes / (bandwidth * memory efficiency))

a fixed latency plus its roofline at a fitted fraction of the FP4 peak; the memory term is the
profile's weight-streaming efficiency (a decode GEMM is bound by its 4.5-bit weights). The H100
profile's BF16 table is not used for FP4: at 1024^3 an NVFP4 GEMM takes as long as the BF16 one
(both about 5 us of fixed latency), so a scale on the BF16 efficiency would have to depend on the
shape in a way one table of squares cannot pin down.

Data: pytorch/ao PR #2427 (``benchmarks/float8/bench_matmul.py --recipe nvfp4`` on a B200):
``torch._scaled_mm`` on pre-quantized NVFP4 operands, square shapes, seconds per GEMM:

    n^3        1024     1536     2048     3072     4096     6144     8192
    NVFP4 s    5.87e-6  6.73e-6  1.02e-5  1.65e-5  3.08e-5  8.44e-5  2.05e-4

Fit (``fit_kernel``: least squares on the relative error, all seven points; the FLOP roofline at
9,000 TFLOP/s and 7.67 TB/s with 4.5-bit operands and 16-bit outputs): ``FP4_FIXED_S`` 5.5 us,
``FP4_COMPUTE_EFFICIENCY`` 0.61; every point within 16 % (2048^3 the worst, 8.6 us for 10.2 measured).
The same page's BF16 GEMMs reach 0.63-0.65 of the BF16 peak at 4096^3-8192^3: large FP4 GEMMs keep
the BF16 fraction. Not measured: activation quantization (fused into the previous kernel by serving
engines).

Grouped (MoE) NVFP4 GEMMs have their own model (``fp4_grouped_gemm_s``), read off a whole MoE layer that
FlashInfer PR #4985 timed on a B300 (DeepSeek-V3's experts, 32 of 256 on the GPU, 1-4096 tokens, TensorRT-LLM's
and CUTLASS's NVFP4 kernels; ``moesim/data/fused_moe.csv``). The dense fit above prices that layer 23-48 %
fast from 1024 tokens (32-128 rows per expert): the grouped kernels do not reach 61 % of the FP4 peak. Two
things are priced instead:

* the row tile: TensorRT-LLM's generated MoE kernels pick one for the call from the experts' mean rows times an
  imbalance allowance of 1.3, rounded up to a power of two between 8 and 128 (FlashInfer's
  ``calculate_tile_tokens_dim`` and vLLM's ``_get_tile_tokens_dim``: "pad the number to the next power of 2 ...
  Cap to 8-max_tile_tokens_dim tokens per CTA tile"), and each expert's rows are padded to it;
* streaming the weights and computing the padded rows one after the other, not overlapped: the layer's time grows
  by the compute added from 2048 to 4096 tokens while its weights read stay the same. Its MMAs run at
  ``FP4_GROUPED_COMPUTE_EFFICIENCY`` of the FP4 peak, the value that fits both kernels' times from 2048 tokens
  (64 rows per expert) up, TensorRT-LLM's to 16384 (512 rows per expert, FlashInfer PR #5301's extension of the
  same benchmark): least squares on the log error, residuals -18 to +11 % (``tests/test_fused_moe_blackwell.py``
  recomputes it); the weights stream at the profile's rate, as the dense decode GEMMs do.

Held out: the same table's 16-1024 tokens (within 20 % but TensorRT-LLM's own jump at 1024).
"""

from __future__ import annotations

from functools import cache

import numpy as np

from moesim.costmodel.hbm import B200_HBM_GBPS
from moesim.costmodel.roofline import gemm_bytes, gemm_flops, roofline_s

#: pytorch/ao PR #2427 on a B200 (peaks 2.25e15 BF16, 9.00e15 FP4): (n of the n^3 GEMM, NVFP4 seconds).
AO_B200_NVFP4_S: tuple[tuple[int, float], ...] = (
    (1024, 5.87e-6), (1536, 6.73e-6), (2048, 1.02e-5), (3072, 1.65e-5), (4096, 3.08e-5), (6144, 8.44e-5),
    (8192, 2.05e-4))
#: The B200 the timings were taken on: dense FP4 FLOP/s and HBM bytes/s (moesim's b200 preset).
AO_B200_PEAK_FLOPS, AO_B200_BW = 9000e12, B200_HBM_GBPS * 1e9
#: Bytes of an NVFP4 operand element (4 bits plus an FP8 scale per 16) and of a 16-bit output.
NVFP4_BYTES, OUT_BYTES = 4.5 / 8.0, 2.0


@cache
def fit_kernel() -> tuple[float, float]:
    """(fixed seconds, fraction of the FP4 peak) minimising the relative error of ``t0 + ideal / e`` on
    the published timings: a weighted linear least squares in (t0, 1/e)."""
    n = np.array([r[0] for r in AO_B200_NVFP4_S], dtype=float)
    t = np.array([r[1] for r in AO_B200_NVFP4_S])
    x = roofline_s(2.0 * n**3, n * n * (2 * NVFP4_BYTES + OUT_BYTES), AO_B200_PEAK_FLOPS, AO_B200_BW)
    a = np.stack([np.ones_like(x), x], axis=1) / t[:, None]
    (t0, inv_e), *_ = np.linalg.lstsq(a, np.ones_like(t), rcond=None)
    return float(t0), float(1.0 / inv_e)


FP4_FIXED_S, FP4_COMPUTE_EFFICIENCY = fit_kernel()


#: TensorRT-LLM's MoE row tile: the experts' mean rows times this allowance for imbalance, a power of two within
#: ``MOE_TILE_ROWS`` (FlashInfer ``calculate_tile_tokens_dim``).
MOE_TILE_IMBALANCE = 1.3
MOE_TILE_ROWS = (8, 128)
#: Fraction of the FP4 peak the MMAs of a grouped NVFP4 GEMM run at, after its weights stream (fitted on
#: FlashInfer PR #4985's and #5301's B300 MoE layer at 2048-16384 tokens; ``tests/test_fused_moe_blackwell.py``).
FP4_GROUPED_COMPUTE_EFFICIENCY = 0.35


def moe_tile_rows(mean_rows):
    """Rows per expert tile TensorRT-LLM's NVFP4 MoE kernels choose for experts averaging ``mean_rows`` rows."""
    m = np.maximum(np.asarray(mean_rows, dtype=float) * MOE_TILE_IMBALANCE, 1.0)
    return np.clip(2.0 ** np.ceil(np.log2(m)), *MOE_TILE_ROWS)


def fp4_grouped_gemm_s(tokens_per_expert, n: int, k: int, peak_flops: float, bw: float, memory_efficiency: float,
                       act_bytes: float, weight_bytes: float):
    """Seconds of one grouped NVFP4 GEMM over the experts on the last axis of ``tokens_per_expert`` (rows of each;
    activations and weights at ``act_bytes`` / ``weight_bytes`` per element, the precision's):
    one fixed latency, every busy expert's bytes streamed, then its rows padded to the call's tile
    (``moe_tile_rows``) computed at ``FP4_GROUPED_COMPUTE_EFFICIENCY`` of ``peak_flops``. 0 with no rows."""
    t = np.asarray(tokens_per_expert, dtype=float)
    tile = moe_tile_rows(t.mean(axis=-1, keepdims=True))
    rows = np.ceil(t / tile) * tile
    flops = gemm_flops(rows, n, k).sum(axis=-1)
    moved = (gemm_bytes(t, n, k, act_bytes, weight_bytes) * (t > 0)).sum(axis=-1)
    secs = FP4_FIXED_S + moved / (bw * memory_efficiency) + flops / (peak_flops * FP4_GROUPED_COMPUTE_EFFICIENCY)
    return np.where((t > 0).any(axis=-1), secs, 0.0)


def fp4_gemm_s(flops, moved, peak_flops: float, bw: float, memory_efficiency: float, calls=1):
    """Seconds of ``calls`` NVFP4 GEMM kernels doing ``flops`` and moving ``moved`` bytes in all (0
    where they do nothing): the fixed latency per call plus the roofline at the fitted compute
    fraction and ``memory_efficiency`` of ``bw``."""
    t = roofline_s(flops, moved, peak_flops, bw, FP4_COMPUTE_EFFICIENCY, memory_efficiency, FP4_FIXED_S * calls)
    return np.where(np.asarray(flops) > 0, t, 0.0)  # no tokens: the kernel is not launched
