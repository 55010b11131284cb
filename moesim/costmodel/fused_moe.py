"""The fixed latency of a serving engine's fused MoE layer on a CUDA GPU.

A serving engine runs one routed-expert layer as a handful of kernels: the router's top-k, the
alignment of tokens by expert (vLLM's and SGLang's ``moe_align_block_size``), the input's FP8
quantization, the two grouped GEMMs with the activation between them, and the reduction of each
token's top-k outputs. Past what moesim prices for the GEMMs and the activation (their bytes,
FLOPs and launches), the whole layer takes a fixed extra latency, which shows at the smallest
batches, where the weights read are few.

``FUSED_MOE_FIXED_US`` is that extra: the median, over 21 published timings at 1 and 2 tokens
(``moesim/data/fused_moe.csv``: vLLM's ``benchmark_moe.py`` and SGLang's fused-MoE tuning script,
CUDA-graph replays on H100 and H200; Qwen3-30B-A3B, Mixtral 8x7B, Qwen3-Next-80B, DeepSeek-R1 and
Qwen3-235B at TP 1, 2, 4 and 8, bf16 and FP8), of the published time minus moesim's price of the
same kernels without it (the routed experts, and the op graph's top-k, permute and un-permute); the
residuals spread over 2-17 us (Mixtral's 8 experts at the low end).
``tests/test_fused_moe_tables.py`` recomputes it. Applied to serving on CUDA devices only (the
Apple presets price llama.cpp's Metal graph, whose per-op cost is fitted on its own rows; training
frameworks' MoE layers have their own floor, ``costmodel/train_host.py``).
"""

from __future__ import annotations

FUSED_MOE_FIXED_US = 11.8
"""Extra latency of one fused MoE layer beyond its GEMMs and activation, microseconds (see above)."""


def fused_moe_fixed_us(platform: str) -> float:
    """Microseconds a serving MoE layer adds once per iteration on ``platform`` ('cuda', 'mps', 'cpu')."""
    return FUSED_MOE_FIXED_US if platform == "cuda" else 0.0
