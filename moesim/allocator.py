"""What PyTorch's CUDA caching allocator reserves beyond a training step's live tensors.

Training logs report ``torch.cuda.max_memory_reserved``: ms-swift's ``memory(GiB)`` for both its
Megatron and its transformers backends (``swift/megatron/callbacks/print.py``, ``swift/utils/
torch_utils.py`` @3602360a), Megatron-LM's ``max reserved``. That is the live tensors at their peak
plus the cached blocks no tensor uses: freed blocks stay with the allocator, and blocks in different
segments never merge, so a pattern of tensors that keep changing size (activation recompute, LoRA,
ZeRO-3 gathers) strands memory between them. moesim's memory report counts the live tensors
(``peak_memory_gib``, what decides whether a plan fits: under memory pressure the allocator frees
its cache and retries before it fails); ``peak_reserved_gib`` adds the stranded share.

The share comes from GMLake (Guo et al., ASPLOS 2024, arXiv:2401.08156), which measured PyTorch's
utilization ratio, peak active over peak reserved memory, while fine-tuning LLMs of 1.3-20B on
A100-80GB under DeepSpeed ZeRO-3, FSDP and Colossal-AI. The ratios below are read off its figures
(intelligent-machine-learning/glake ``GMLake/README.md`` and ``GMLake/docs/figures/*.png``
@2898380c): by strategy for three models, by platform, by batch size for three models and by GPU
count for two. Every one of those runs recomputes activations; most add LoRA.
"""

from __future__ import annotations

import statistics

# PyTorch's utilization ratio (peak active / peak reserved) in GMLake's runs with activation
# recompute, with or without LoRA and offload: 47 runs read off the figures (to ~0.01).
GMLAKE_UTILIZATION_RECOMPUTE = (
    0.67, 0.65, 0.645, 0.645, 0.84, 0.76, 0.77, 0.80, 0.96, 0.79, 0.73, 0.72,  # by strategy (3 models)
    0.69, 0.78, 0.53,  # by platform: GLM-10B, OPT-13B, GPT-2
    0.62, 0.80, 0.78, 0.75, 0.76, 0.76, 0.78,  # OPT-13B by batch size
    0.79, 0.77, 0.78, 0.80, 0.76, 0.80,  # GPT-NeoX-20B by batch size
    0.68, 0.66, 0.65, 0.655, 0.645, 0.64, 0.655, 0.775, 0.77,  # OPT-1.3B by batch size
    0.75, 0.845, 0.825, 0.80, 0.785,  # Vicuna-13B by GPU count
    0.92, 0.76, 0.77, 0.75, 0.67,  # OPT-13B by GPU count
)
# The same without any memory-saving strategy (OPT-1.3B, Vicuna-13B, GPT-NeoX-20B).
GMLAKE_UTILIZATION_PLAIN = (0.93, 0.98, 0.96)

UNUSED_RECOMPUTE = 1.0 - statistics.median(GMLAKE_UTILIZATION_RECOMPUTE)  # 0.24
UNUSED_PLAIN = 1.0 - statistics.median(GMLAKE_UTILIZATION_PLAIN)  # 0.04


def unused_fraction(allocator: str, recompute: str, frozen_base: bool) -> float:
    """Share of the reserved memory no live tensor holds at the peak (0 <= f < 1).

    ``allocator``: ``plan.allocator``; ``expandable_segments`` (one segment per stream that grows
    and shrinks by mapping pages, so freed ranges always merge) strands nothing here. The default
    caching allocator strands ``UNUSED_RECOMPUTE`` when whole layers are recomputed (``recompute``
    ``full``: the gradient checkpointing of GMLake's runs) or base weights are frozen
    (``frozen_base``: LoRA and partial fine-tunes, ``workload.trainable`` other than every weight, which
    fragmented more than checkpointing alone on each of GMLake's three models), else ``UNUSED_PLAIN`` (selective
    recompute re-runs only parts of a layer, whose allocations look like a run without it).
    """
    if allocator == "expandable_segments":
        return 0.0
    if recompute == "full" or frozen_base:
        return UNUSED_RECOMPUTE
    return UNUSED_PLAIN


def reserved_gib(allocated_gib: float, fraction: float) -> float:
    """Reserved memory, GiB, when ``fraction`` of it is stranded around ``allocated_gib`` of tensors."""
    return allocated_gib / (1.0 - fraction)
