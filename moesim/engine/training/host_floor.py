"""The GPU waiting for the host to issue a training MoE layer's kernels. Pure numpy.

Each MoE layer pass (one layer's forward, or its backward, for one micro-batch on one device) takes
at least its share of the host floor (``costmodel/train_host.py``); the shortfall is booked as a
wait in the experts slot, where Megatron's token dispatcher makes the host catch up with the GPU.
"""

from __future__ import annotations

import numpy as np

from moesim.costmodel import CostModel
from moesim.costmodel.host import host_spec_for
from moesim.costmodel.train_host import RECENT_PASS_MS, compiled_step
from moesim.schemas import Scenario


def moe_layer_host_us(s: Scenario, cm: CostModel) -> float:
    """The floor of one MoE layer pass, forward + backward, us: ``plan.moe_layer_host_us`` when
    set, else the cost model's host spec (0 for a TPU, which runs a compiled whole step)."""
    if s.plan.moe_layer_host_us is not None:
        return float(s.plan.moe_layer_host_us)
    device = s.hardware.device
    return 0.0 if compiled_step(device.name) else float(host_spec_for(cm.profile, device).train_moe_layer_us)


def apply_host_floor(fwd: np.ndarray, bwd: np.ndarray, moe: np.ndarray, floor_s: tuple[float, float],
                     counted: np.ndarray, wait_slot: int, bwd_wait_slot: int) -> tuple[np.ndarray, np.ndarray]:
    """Raise each MoE layer pass to ``floor_s`` = (forward, backward) seconds, in place.

    ``fwd``: ``[L, M, F]`` seconds per forward slot; ``bwd``: ``[L, M, 1 + F]`` (a recompute slot,
    then the forward slots reversed); ``moe``: ``[L]`` which layers have routed experts.
    ``counted``: ``[F]`` which forward slots are GPU work the host's issue can hide behind (the
    all-to-alls only while they share the compute stream). The shortfall goes into ``wait_slot``
    (forward) and ``bwd_wait_slot`` (backward). Returns the waits, ``[L, M]`` each.
    """
    wait_f, wait_b = np.zeros(fwd.shape[:2]), np.zeros(fwd.shape[:2])
    floor_f, floor_b = floor_s
    if not moe.any() or floor_f + floor_b <= 0.0:
        return wait_f, wait_b
    counted_b = np.concatenate([[True], counted[::-1]])
    wait_f[moe] = np.maximum(floor_f - fwd[moe][..., counted].sum(axis=-1), 0.0)
    wait_b[moe] = np.maximum(floor_b - bwd[moe][..., counted_b].sum(axis=-1), 0.0)
    fwd[:, :, wait_slot] += wait_f
    bwd[:, :, bwd_wait_slot] += wait_b
    return wait_f, wait_b


#: Share of a step spent waiting for the host above which ``simulate`` says so under the run.
HOST_NOTE_SHARE = 0.2


def host_wait_note(host_wait_s: float, step_s: float, floor_us: float, set_in_plan: bool) -> str:
    """The line ``simulate`` prints under a training run whose MoE layers wait for the host for at
    least :data:`HOST_NOTE_SHARE` of the step, '' otherwise: how long, at which floor (us per MoE layer
    pass, forward + backward of one micro-batch), and, for the default floor, that it was read off
    2025 runs while later stacks measured less (``RECENT_PASS_MS``) and full CUDA graphs remove it."""
    if step_s <= 0 or host_wait_s < HOST_NOTE_SHARE * step_s:
        return ""
    head = (f"the MoE layers wait for the host {host_wait_s:.3g} s of the {step_s:.3g} s step "
            f"({host_wait_s / step_s:.0%}): a floor of {floor_us / 1e3:.3g} ms per MoE layer pass")
    if set_in_plan:
        return head + " (plan.moe_layer_host_us)."
    low, high = RECENT_PASS_MS
    return (head + ", read off 2025 Megatron-Core runs; 2026 recipes measured "
            f"{low:g}-{high:g} ms and full CUDA graphs remove it: set plan.moe_layer_host_us for your stack "
            "(0 with full graphs).")
