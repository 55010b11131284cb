"""How fast a 4-bit weight-only GEMM can go when it is not waiting on memory. Pure numpy.

A weight-only kernel (W4A16: int4, MXFP4 or NVFP4 weights, 16-bit activations and math) reads its
weights at 4 bits and converts each tile to 16 bits in its main loop before the tensor cores use
it. Where the GEMM is memory-bound (decode at small batches) that conversion hides under the weight
reads and the kernel runs at its reduced bytes (``ProfiledCostModel._narrow_weight_scale``). Where it
is not, the conversion's instructions (unpack, scale, pack) share the SM's issue slots with the
MMAs, and on Hopper, whose tensor cores are four times an A100 SM's, they are what binds: the
kernel tops out at a fraction of the 16-bit peak that more tokens do not raise.

Measured (``DeviceSpec.weight_only_peak_fraction``, Hopper presets 0.257):
- sgl-project/sglang PR #38884 (2026-09-10): an nsys capture of a W4A16 MoE server on an H100,
  16,384-token prefill chunks: the Marlin W4A16 MoE GEMMs run 1.237 TFLOP per layer per GPU in
  4.863 ms, 254 TFLOP/s, 25.7 % of the BF16 peak, reading 5.3 % of HBM bandwidth; the SASS inner
  loop issues 64 MMA instructions of 220 per 32-deep K step, the rest convert, scale and pack.
- flashinfer-ai/flashinfer PR #5099 (2026-09-10): its cuTile MXFP4 W4A16 fused MoE on an H100 NVL
  reaches ~200-235 TFLOP/s at 4,096-8,192 tokens (Qwen3.6-35B-A3B and Nemotron shapes), 24-28 % of
  that card's 835 TFLOP/s: another kernel, the same ceiling.
- sgl-project/sglang PR #34967 (H20-3e): CUTLASS W4A16 MoE at 8,192 tokens runs 97 TFLOP/s, 65 % of
  the H20's 148 TFLOP/s BF16 peak: with a sixth of the H100's tensor throughput on the same SMs, the
  H20 is bound by its tensor cores first, as this bound says it should be (no H20 preset).
On Ampere (``DeviceSpec.weight_only_peak_fraction``, A100 presets 0.453):
- vllm-project/vllm PR #2497 (2024-01-24, the thread that brought Marlin into vLLM): Marlin's own ``bench.py``
  (IST-DASLab/marlin) at 1-4,000 tokens levels off at 139.7-141.4 TFLOP/s from 64 tokens up, 0.61-0.74x the FP16
  GEMM it is compared with. The thread does not name the GPU; only an A100 fits its figures (1.16 TB/s streamed at one
  token, a 231 TFLOP/s FP16 GEMM: 74 % of the A100's 312 TFLOP/s), and the A100 is the GPU Marlin was written for.
  141.4 / 312 = 0.453. Marlin's author gives the reason for the plateau (IST-DASLab/marlin issue #2, 2024-01-18): past
  64 tokens the kernel runs its 64-token tile repeatedly. Scaling the H100 measurement above by SMs and clocks, as an
  issue-bound loop would (108 SMs at 1.41 GHz against 132 at ~1.83), gives ~160 TFLOP/s, 0.51: the same size.
Not measured: TensorRT-LLM's Triton MXFP4 kernels on Hopper (``matmul_ogs``), which the bound is
assumed to hold for; vLLM's later Marlin MoE kernels on an A100, which the 2024 dense kernel's bound is assumed to
hold for; Blackwell, whose TensorRT-LLM and FlashInfer paths multiply MXFP4 in its own tensor cores.
"""

from __future__ import annotations

import numpy as np

#: Weight dtypes whose weight-only kernels convert 4-bit values in the main loop.
FOUR_BIT = ("int4", "mxfp4", "nvfp4")
#: The Hopper presets' bound: SGLang PR #38884's measured 254 TFLOP/s over the H100's 989.4 TFLOP/s.
HOPPER_W4A16_PEAK_FRACTION = 0.257
#: Marlin's plateau on an A100 (vLLM PR #2497): 141.4 TFLOP/s over the A100's 312 TFLOP/s FP16/BF16 peak.
AMPERE_MARLIN_TFLOPS, A100_16BIT_TFLOPS = 141.4, 312.0
AMPERE_W4A16_PEAK_FRACTION = AMPERE_MARLIN_TFLOPS / A100_16BIT_TFLOPS


def weight_only_floor_s(flops, model_dtype: str, weight_only: bool, peak_flops: float,
                        fraction: float | None):
    """Least seconds a GEMM of ``flops`` takes when its ``model_dtype`` weights run weight-only on a
    device whose 4-bit weight-only kernels reach at most ``fraction`` of ``peak_flops`` (the 16-bit
    peak, FLOP/s); 0 where no such bound applies. Shape of ``flops``."""
    f = np.asarray(flops, dtype=float)
    if not fraction or not weight_only or model_dtype not in FOUR_BIT:
        return np.zeros_like(f)
    return f / (fraction * peak_flops)
