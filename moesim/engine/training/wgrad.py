"""The weight-gradient half of the backward, for schedules that play it apart (zero-bubble, DualPipe).

A layer's backward computes, for every GEMM ``Y = X W``, the input gradient ``dX = dY W^T`` (what
the previous stage waits for: ZB's B) and the weight gradient ``dW = X^T dY`` (what only the
optimizer needs: W), each one forward GEMM's FLOPs (Qi et al. 2023, "Zero Bubble Pipeline
Parallelism", arXiv:2401.10241, sec. 2). So W is half of every GEMM's backward seconds (grouped
expert GEMMs, the router and the output head included, FP8's split-accumulation slowdown
included); the rest of the backward, the attention core, norms, activations, permutes, FP8 casts,
the recompute and the TP all-reduces / EP all-to-alls, stays in B. ``layer_costs`` books the W
seconds as it prices each GEMM (``LayerCosts.wgrad_s``, ``head_wgrad_s``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from moesim.engine.training.layer_costs import LayerCosts


@dataclass(frozen=True)
class Wgrad:
    """Weight-gradient seconds of one step, inside the backward's slots."""

    slot_s: np.ndarray  # [L, M, len(BWD_SLOTS)] W seconds within each backward slot (0 in the recompute slot)
    head_s: float  # W seconds of the output head (its GEMM's weight gradient)


def wgrad_costs(costs: LayerCosts) -> Wgrad:
    """The weight-gradient seconds of every backward slot, as ``layer_costs`` booked them."""
    return Wgrad(costs.wgrad_s, float(costs.head_wgrad_s))
