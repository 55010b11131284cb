"""The weight-gradient half of the backward, for schedules that play it apart (zero-bubble, DualPipe).

A layer's backward computes, for every GEMM ``Y = X W``, the input gradient ``dX = dY W^T`` (what
the previous stage waits for: ZB's B) and the weight gradient ``dW = X^T dY`` (what only the
optimizer needs: W), each one forward GEMM's FLOPs (Qi et al. 2023, "Zero Bubble Pipeline
Parallelism", arXiv:2401.10241, sec. 2). So W is half of every GEMM's backward seconds (grouped
expert GEMMs, the router and the output head included, FP8's split-accumulation slowdown
included); the rest of the backward, the attention core, norms, activations, permutes, FP8 casts,
the recompute and the TP all-reduces / EP all-to-alls, stays in B.

``layer_costs`` books each op's backward into slots without saying which op it came from, so
:func:`wgrad_costs` re-prices the same op lists with a cost model that prices only GEMMs
(:class:`_GemmOnly`: every other ``*_s`` call costs 0 s): its backward slots are exactly the
GEMMs' backward seconds, half of which is W. This costs a second pricing pass, paid only by
schedules with ``splits_backward``, and is skipped once ``LayerCosts`` carries ``wgrad_s`` and
``head_wgrad_s`` itself (booked as ``_into_slots`` prices each GEMM).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from moesim.costmodel import CostModel
from moesim.engine.routing import RoutingSample
from moesim.engine.training.layer_costs import LayerCosts, layer_costs
from moesim.schemas import Scenario

#: Cost-model calls that price GEMMs (``grouped_loop_s`` is part of the grouped GEMM's price).
_GEMM_CALLS = frozenset({"gemm_s", "grouped_gemm_s", "grouped_loop_s"})


def _zero_s(*_args, **_kwargs) -> float:
    return 0.0


class _GemmOnly:
    """A cost model that prices GEMMs as ``cm`` does and every other op (``*_s``) at 0 s."""

    def __init__(self, cm: CostModel):
        self._cm = cm

    def __getattr__(self, name: str):
        attr = getattr(self._cm, name)
        return _zero_s if callable(attr) and name.endswith("_s") and name not in _GEMM_CALLS else attr


@dataclass(frozen=True)
class Wgrad:
    """Weight-gradient seconds of one step, inside the backward's slots."""

    slot_s: np.ndarray  # [L, M, len(BWD_SLOTS)] W seconds within each backward slot (0 in the recompute slot)
    head_s: float  # W seconds of the output head (its GEMM's weight gradient)


def wgrad_costs(s: Scenario, cm: CostModel, routing: RoutingSample | None, costs: LayerCosts | None = None) -> Wgrad:
    """The weight-gradient seconds of every backward slot for ``s`` with the sampled ``routing``:
    ``costs``' own (``wgrad_s``, ``head_wgrad_s``) where ``layer_costs`` books them, else priced again."""
    if getattr(costs, "wgrad_s", None) is not None:
        return Wgrad(costs.wgrad_s, float(costs.head_wgrad_s))
    gemm = layer_costs(s, _GemmOnly(cm), routing)
    slot = gemm.bwd_s / 2
    slot[..., 0] = 0.0  # the recompute slot re-runs a forward: it feeds B
    return Wgrad(slot, float(gemm.head_s[1]) / 2)
