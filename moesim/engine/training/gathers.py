"""ZeRO-3's parameter all-gathers, priced apart from the gradient syncs. Pure functions.

ZeRO-3 gathers each layer's weights before its forward and backward; they move at the weights'
width (16-bit, or fp32 for an fp32 model). The gradient syncs move gradients, which Megatron keeps
and reduces in fp32 under bf16 (``plan.grad_dtype``), and which fine-tuning has only for its
trainable share. Where the two differ, :class:`WeightGathers` holds the gathers' seconds for the
training step (``LayerCosts.gather_*``). Seconds of one all-reduce-sized collective; bytes per device.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from moesim.costmodel import CostModel


@dataclass(frozen=True)
class WeightGathers:
    """Per layer ``[L]`` and for the embedding and the output head: all-reduce seconds (halved later
    with the gradient syncs, ``zero.sharded_costs``) and bytes of the weights one device gathers."""

    layer_s: np.ndarray
    layer_bytes: np.ndarray
    embed_s: float
    head_s: float
    expert_s: np.ndarray  # [L] the routed experts' part of layer_s (their own group)


def weight_gathers(cm: CostModel, dense_p: np.ndarray, expert_p: np.ndarray, table: float, head_p: float,
                   weight_bytes: float, dp: tuple[int, int], expert_dp: tuple[int, int]) -> WeightGathers:
    """The gathers of a device's whole weights: ``dense_p`` / ``expert_p`` parameters per layer,
    ``table`` of the embedding, ``head_p`` of the head, ``weight_bytes`` each; ``dp`` /
    ``expert_dp``: (group size, stride) of the dense and expert data-parallel groups."""
    expert = np.asarray(cm.allreduce_s(expert_p * weight_bytes, *expert_dp) * (expert_p > 0), dtype=float)
    layer = cm.allreduce_s(dense_p * weight_bytes, *dp) * (dense_p > 0) + expert
    return WeightGathers(
        layer_s=np.asarray(layer, dtype=float), layer_bytes=(dense_p + expert_p) * weight_bytes, expert_s=expert,
        embed_s=float(cm.allreduce_s(table * weight_bytes, *dp)),
        head_s=float(cm.allreduce_s(head_p * weight_bytes, *dp)) if head_p else 0.0)
