"""The decode batch where a serving step turns from memory-bound to compute-bound. Pure numpy."""

from __future__ import annotations

import numpy as np

from moesim.engine import expert_load
from moesim.engine.serving.decode_cost import IterationCost


def knee_batch(cost: IterationCost, max_batch: int = 1 << 16, points: int = 200) -> int:
    """Decode batch past which the step stops being memory-bound (its time grows with the batch).

    Times a pure decode step of ``B`` sequences with the cost model, leaving attention out (its KV
    reads stay memory-bound at any batch): projections, FFN or experts at their expected load,
    router, head, collectives. The knee is the smallest ``B`` at which doubling the batch costs at
    least half the time again, ``t(2B) >= 1.5 t(B)``: for a step of ``a + c B`` seconds that is
    ``B = a / c``, where one more sequence costs half the average (``dt/dB = 0.5 t/B``), and for a
    roofline's ``max(a, c B)`` three quarters of its ridge. Measured over a doubling, not one
    sequence, so a GEMM tile's step (one more row of an expert starting a new 64-row tile: +12 % on
    Mixtral at 257 sequences) is not read as the knee. For MoE the search starts once the batch is
    expected to touch every expert (below that, reading more experts also makes the time grow).
    Evaluated on ``points`` log-spaced batches up to ``max_batch``; returns ``max_batch`` if never.
    """
    m = cost.s.model
    b = np.unique(np.round(np.geomspace(1, max_batch, points)))

    def step_s(batch: np.ndarray) -> np.ndarray:
        return cost.fixed_s(batch) + cost.uniform_experts_s(batch)[0] + cost.head_s(batch)

    both = step_s(np.concatenate([b, 2 * b]))  # one call: each costs mostly its fixed overhead, not its points
    t, t2 = both[: b.size], both[b.size:]
    start = 1.0
    if m.n_moe_layers and m.n_experts > 1:
        e_local = cost.placement.experts_per_rank
        busy = expert_load.uniform_busy(b, m.top_k, cost.placement, cost.ep_sources,
                                         busiest=cost.dims.local_dispatch)[0]
        start = float(b[np.argmax(busy >= e_local - 0.5)]) if (busy >= e_local - 0.5).any() else max_batch
    ok = np.flatnonzero((t2 >= 1.5 * t) & (b >= start))
    return int(b[ok[0]]) if ok.size else int(max_batch)
