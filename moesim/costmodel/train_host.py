"""Host time of eager MoE training: a floor on each MoE layer's forward and backward per micro-batch.

Megatron-Core trains eagerly: Python issues every kernel of a layer (Transformer Engine modules,
the router, the token dispatcher, one cuBLAS call per local expert in ``GroupedLinear``), and the
dropless dispatcher reads the per-expert token counts back to the host once per MoE layer forward
(a device-to-host sync: the host cannot run more than a layer ahead). When the GPU work of a layer
pass is shorter than the host's, the GPU waits: the pass takes the host's time. Megatron's MoE
guide names the regime ("CPU Overhead Bottleneck ... gaps between GPU kernels where CPU cannot
launch kernels fast enough"; fixes: CUDA graphs, "Decrease TP size or increase micro-batch size",
NVIDIA/Megatron-LM ``megatron/core/transformer/moe/README.md``).

The floor (``TRAIN_MOE_LAYER_US``, per MoE layer, forward + backward of one micro-batch on one GPU)
is read off published runs, not built bottom-up:

* TRN-14 (Qwen3-235B-A22B, 256 H100, TP4 PP8 VP4 EP8, BF16, micro-batch 1): 29.0 s per step over
  3,008 MoE-layer passes per GPU, less moesim's pipeline bubble: 9.39 ms per pass, where moesim
  prices 4.7 ms of GPU work;
* TRN-19 (Qwen3-30B-A3B, 16 H100, PP2 VP12 EP8, FP8, micro-batch 1): 28.9 s over 3,072 passes:
  9.0 ms per pass, moesim's GPU work 5.8 ms.

Their mean, 9.2 ms, is the default. Two models, two precisions, TP4 and TP1, both with 16 local
experts. Held out (not used for the number): TRN-15, TRN-23 and TRN-24, whose measured passes take
10.9, 10.7 and 12.6 ms against moesim's 7.3, 5.6 and 6.8 ms; and the MoE training rows moesim
already matched price at least 9.4 ms per pass (TRN-05/08/12/20/26), so the floor leaves them
about alone.

A bottom-up count from cited CPU timings gives the same order but not the number, which is why
the number is read off the runs: a TE linear layer's forward costs 115-140 us of CPU on an H100
host (NVIDIA/TransformerEngine PR #1191, Megatron-core ``TEColumnParallelLinear``, BF16, TP1), FP8
more than twice that (TE issue #761), ``GroupedLinear`` adds a ``torch.split`` and two allocations
per local expert (TE issue #1499), and TE's fused MXFP8 grouped-MLP block alone takes 1.2 ms of
CPU forward and 2.1 ms backward on GB200 (TE issue #2897): about 4-7 ms per pass for these layers.

The floor is split between forward and backward as TE's grouped-MLP block splits its CPU time
(1.2 : 2.1 ms, TE issue #2897; the backward issues a data- and a weight-gradient GEMM for each
forward one) and compared with the GPU work the pass queues on the compute stream: compute and
all-to-alls when they share it, compute alone when the all-to-alls overlap on their own stream
(``plan.overlap_alltoall``, DualPipe). Dense layers get no floor (no dispatcher sync, a few modules).
Apple MPS and CPU profiles default to 0 (no measurement), and so do TPUs: XLA compiles the whole
step, so no host issues a layer's kernels one by one.
"""

from __future__ import annotations

#: Published Megatron-Core runs behind the default: row -> (seconds per step measured, moesim's
#: pipeline bubble s, MoE-layer passes per GPU per step). Checked by ``tests/test_train_host.py``.
SOURCE_ROWS: dict[str, tuple[float, float, int]] = {
    "TRN-14": (29.0, 0.746, 3008),
    "TRN-19": (28.93, 1.194, 3072),
}


def implied_pass_us(step_s: float, bubble_s: float, passes: int) -> float:
    """Time per MoE-layer pass a published step implies: (step - bubble) / passes, us."""
    return (step_s - bubble_s) / passes * 1e6


#: Floor per MoE layer pass (forward + backward of one micro-batch), us: the mean of SOURCE_ROWS to
#: the nearest 100 us (two significant figures: the two rows differ by 4 %).
TRAIN_MOE_LAYER_US = round(sum(implied_pass_us(*row) for row in SOURCE_ROWS.values()) / len(SOURCE_ROWS), -2)
#: 2026 Megatron-Core MoE recipes with partial or no CUDA graphs (validation rows: Megatron-LM's
#: TRN-36/37/42, Megatron-Bridge's verified TRN-51; their published step: global batch x seq /
#: (tokens/s/GPU x GPUs), no pipeline bubble at PP1): row -> (seconds per step, MoE-layer passes per
#: GPU per step). Checked against the table by ``tests/test_train_host.py``.
RECENT_ROWS: dict[str, tuple[float, int]] = {
    "TRN-36": (3.134, 384),   # Qwen3-30B-A3B, 32 H100, EP8, BF16: 48 layers x 8 micro-batches
    "TRN-37": (3.103, 384),   # the same in FP8 blockwise
    "TRN-42": (44.27, 6016),  # Qwen3-235B-A22B, 128 GB200, EP64, MXFP8: 94 layers x 64 micro-batches
    "TRN-51": (20.147, 3072),  # Qwen3-30B-A3B, 16 H100, EP16, BF16, router graphs: 48 layers x 64
}
#: Range of their time per MoE layer pass, ms (one decimal): below the 2025 floor above, which stays the
#: default; ``simulate`` says so to users whose run waits for the host (docs/validation-misses.md).
RECENT_PASS_MS = tuple(round(f(implied_pass_us(step, 0.0, passes) for step, passes in RECENT_ROWS.values()) / 1e3, 1)
                       for f in (min, max))
#: TE issue #2897: CPU time of TE's fused MXFP8 grouped-MLP block, forward and backward, ms.
GROUPED_MLP_CPU_MS = (1.2, 2.1)
#: Share of the floor in the forward pass; the rest is the backward's.
FORWARD_SHARE = GROUPED_MLP_CPU_MS[0] / sum(GROUPED_MLP_CPU_MS)


def moe_layer_floor_s(layer_us: float) -> tuple[float, float]:
    """(forward, backward) floor in seconds of one MoE layer pass whose whole floor is ``layer_us``."""
    total = layer_us * 1e-6
    return total * FORWARD_SHARE, total * (1.0 - FORWARD_SHARE)


def compiled_step(device_name: str) -> bool:
    """Whether the device runs a compiled whole-step program (TPUs under XLA): no eager host floor."""
    return "tpu" in device_name.lower()
