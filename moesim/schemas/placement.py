"""Where experts live on the expert-parallel ranks: redundant copies of hot experts (EPLB)."""

from __future__ import annotations

from moesim.schemas._base import MAX_EXPERTS, Strict, bounded


class PlacementSpec(Strict):
    """Expert placement over the ``plan.ep`` ranks of an expert-parallel group.

    By default each rank holds ``model.n_experts / plan.ep`` consecutive experts. With
    ``redundant_experts: N`` (DeepSeek-V3's redundant experts, its EPLB), N extra slots hold copies
    of the hottest experts of each MoE layer (from ``routing``'s popularity: each extra slot goes to
    the expert with the highest load per copy), packed so every rank gets ``(n_experts + N) / ep``
    slots and a similar load; a replicated expert's tokens split evenly over its copies. ``plan.ep``
    must then divide ``n_experts + N`` (256 + 32 over 144 ranks) instead of ``n_experts``.
    """

    redundant_experts: int = bounded(
        0, ge=0, le=MAX_EXPERTS, why="at most model.n_experts (at most 2^20): one extra copy of every expert",
        description="Extra expert slots holding copies of the hottest experts (EPLB), 0 to model.n_experts; "
                    "plan.ep must divide model.n_experts + redundant_experts.")
