"""How much of its short-benchmark speed a device keeps when it computes back to back at its power limit.

Kernel tables (and the benchmarks behind a preset's GEMM ratio) time kernels for a few milliseconds, often
with pauses between repeats. A training step or a busy serving engine keeps the tensor cores working for
seconds; a device whose tensor cores can draw more than its power limit then holds its SM clocks down, and
compute-bound kernels slow with them. Memory-bound kernels keep the HBM's bandwidth (its clock is its own).

Measured on a B200 (flashinfer-ai/flashinfer PR #2899, "bench: fix GPU power throttling in benchmark
utilities", 2026-03-26): FlashAttention-4's BF16 forward (b=4, s=8192, 16 heads of 128) run back to back for
100 iterations reaches 1,450 TFLOP/s over iterations 10-19 and 1,237 TFLOP/s over iterations 70-79, once the SM
clock has fallen from 1,965 to ~1,580 MHz with the board at ~1,000 W (its limit); the PR then pauses every
~5 ms of compute so that benchmarks measure the unthrottled speed. 1,237 / 1,450 = 0.853 is the fraction a
compute-bound kernel keeps on a B200 under sustained load (``hardware.device.sustained_compute_fraction``).

The GB200 (its B200 die at 1,200 W, with an 11 % higher datasheet peak and a best GEMM 4.4 % above an HGX
B200's, moesim/data/mamf.csv) keeps the same share. No clock trace of one under load is published, but runs that
differ only in the device say so. Dense training that keeps the tensor cores busy runs at most 5 % faster on
a GB200 than on a B200 with the same software, model and plan: MLPerf Training v5.0's Llama 2 70B LoRA, NVIDIA's
DP8 submissions, 1.469 against 1.543 s a step (1.050x); Megatron-Bridge 25.11's Llama 3 8B on 8 GPUs, 31,508
against 30,624 tokens/s/GPU in FP8 with current scaling (1.029x) and 29,789 against 29,521 in MXFP8 (1.009x). MoE
runs agree: Megatron-Bridge 26.04.01's Qwen3-30B-A3B on 8 GPUs at MBS 4, 26,112 against 27,136 (0.962x; moesim
1.003x), and Nemotron 3 Nano at MBS 2, 32,768 on both.
A GB200 that held its benchmark clock would run such steps 1.044 / 0.853 = 1.22x a B200's; one that keeps the
B200's share runs them 1.044x. The GB300 (1,400 W, the GB200's dense BF16 and FP8 peaks) keeps 1: the same
recipes run 1.19-1.22x faster on it than on a GB200 (Llama 3 8B 37,556 and 36,108 tokens/s/GPU; Llama 3 70B
LoRA on 8 GPUs, Megatron-Bridge 26.06, 7,481 against 6,206; Qwen3-30B-A3B on 8 GPUs, 25.11, 28,934 against
23,766), which is what a GB300 at its full clock over a GB200 at the B200's share gives (1 / 0.853 = 1.17x). Held out
since: MLPerf Training v5.1's Llama 3.1 8B on one rack of each (CP2 DP36, one config), 0.1681 against 0.1474 s a step,
1.143x, where moesim now prices 0.1642 and 0.1432 s, 1.147x (validation rows TRN-80/81).
Not measured: the B300 (1,100 W; its GB300 twin, Qwen3-30B-A3B in Megatron-Bridge 26.06, runs 1.10x faster where
the presets differ by 1.05x, docs/validation-misses.md) and Hopper (the H100 profile's kernel timings price
Hopper's training and serving rows within a few percent at the median), so their presets keep 1.

FP4 on Blackwell Ultra (``hardware.device.sustained_fp4_fraction``). The GB300 and B300 keep their Blackwell twins'
BF16 and FP8 peaks but compute NVFP4 at 1.5x and 1.56x their FP4 peaks (15 and 14 against 10 and 9 PFLOP/s dense)
on the same 4NP process, at 1.17x and 1.10x the board power (1,400 W against the GB200's 1,200; 1,100 against the
B200's 1,000; Verda's per-GPU table, verda.com/blog/gb300-nvl72-architecture). Tensor cores that already run
their Blackwell twin into its power limit cannot do half as much work again on a sixth more power: under sustained
FP4 load an Ultra part is power-bound, its FP4 rate its twin's sustained FP4 rate times the ratio of their power
limits (the same work per joule), a fraction of its own datasheet FP4 peak:

    f_fp4 = twin_fp4_peak * twin_sustained_fraction * (power_w / twin_power_w) / fp4_peak

GB300: 10,000 x 0.853 x 1,400 / 1,200 / 15,000 = 0.664; B300: 9,000 x 0.853 x 1,100 / 1,000 / 14,000 = 0.603. Its
BF16 and FP8 work, at its twin's peaks, stays under the limit (the GB300's 1.19-1.22x over a GB200 above). Nothing
here is fitted to a run. Checked against run pairs that differ only in the device: MLPerf Training v5.1's Llama 3.1
8B in NVFP4 on 8 GPUs (NVIDIA's config on both, TRN-163/164) steps 1.17x faster on a GB300 than on a GB200 where the
power ratio says 1.167 (the datasheet FP4 peaks said 1.32x); on a B300 over a B200, 1.16x (Nebius) and 1.09-1.11x
(Lenovo) against 1.10 (TRN-169/170). Held out: MLPerf Inference v5.1's Llama 3.1 405B in NVFP4 on a GB300 rack,
prefill-heavy, read +37 % at the datasheet FP4 peak and +12 % with it (INF-444).
"""

from __future__ import annotations

#: FlashInfer PR #2899's B200: TFLOP/s of FlashAttention-4 BF16 over iterations 10-19 (clocks at 1,965 MHz) and 70-79
#: (held at ~1,580 MHz at the 1,000 W limit).
B200_BURST_TFLOPS, B200_SUSTAINED_TFLOPS = 1450.0, 1237.0
#: The fraction of its benchmarked compute rate a B200 keeps under sustained load.
B200_SUSTAINED_COMPUTE_FRACTION = B200_SUSTAINED_TFLOPS / B200_BURST_TFLOPS
#: A GB200 keeps the B200's share: the same steps run 1.01-1.05x faster on it than on a B200 (module docstring).
GB200_SUSTAINED_COMPUTE_FRACTION = B200_SUSTAINED_COMPUTE_FRACTION

#: Board power of each Blackwell part and its Ultra twin, W (Verda's per-GPU table of GB300, GB200, B300 and B200).
B200_POWER_W, GB200_POWER_W, B300_POWER_W, GB300_POWER_W = 1000.0, 1200.0, 1100.0, 1400.0
#: Dense FP4 peaks, TFLOP/s (the same table; the presets' ``peak_tflops.fp4``).
B200_FP4_TFLOPS, GB200_FP4_TFLOPS, B300_FP4_TFLOPS, GB300_FP4_TFLOPS = 9000.0, 10000.0, 14000.0, 15000.0


def power_bound_fraction(fp4_tflops: float, power_w: float, twin_fp4_tflops: float, twin_power_w: float,
                         twin_sustained_fraction: float) -> float:
    """Fraction of its FP4 peak a part keeps under sustained FP4 load when its power limit binds: its twin's sustained
    FP4 rate (``twin_fp4_tflops`` x ``twin_sustained_fraction``) scaled by the ratio of their power limits (the same
    work per joule), over its own peak ``fp4_tflops``; at most 1 (a part whose limit does not bind keeps its clock)."""
    return min(1.0, twin_fp4_tflops * twin_sustained_fraction * (power_w / twin_power_w) / fp4_tflops)


#: The GB300's sustained share of its 15 PFLOP/s FP4 peak: the GB200's sustained FP4 rate x 1,400 / 1,200 W (0.664).
GB300_SUSTAINED_FP4_FRACTION = power_bound_fraction(GB300_FP4_TFLOPS, GB300_POWER_W, GB200_FP4_TFLOPS, GB200_POWER_W,
                                                    GB200_SUSTAINED_COMPUTE_FRACTION)
#: The B300's sustained share of its 14 PFLOP/s FP4 peak: the B200's sustained FP4 rate x 1,100 / 1,000 W (0.603).
B300_SUSTAINED_FP4_FRACTION = power_bound_fraction(B300_FP4_TFLOPS, B300_POWER_W, B200_FP4_TFLOPS, B200_POWER_W,
                                                   B200_SUSTAINED_COMPUTE_FRACTION)
