"""The decode batch where a serving step turns from memory-bound to compute-bound. Pure numpy."""

from __future__ import annotations

import numpy as np

from moesim.engine import expert_load
from moesim.engine.serving.decode_cost import IterationCost


def knee_batch(cost: IterationCost, max_batch: int = 1 << 16, points: int = 400) -> int:
    """Decode batch past which the step stops being memory-bound (its time grows with the batch).

    Times a pure decode step of ``B`` sequences with the cost model, leaving attention out (its KV
    reads stay memory-bound at any batch): projections, FFN or experts at their expected load,
    router, head, collectives. The knee is the smallest ``B`` at which one more sequence costs at
    least half the average time per sequence, ``dt/dB >= 0.5 t(B)/B``: flat (memory-bound) before,
    linear (compute-bound) after. For MoE the search starts once the batch is expected to touch
    every expert (below that, reading more experts also makes the time grow). Evaluated on
    ``points`` log-spaced batches up to ``max_batch``; returns ``max_batch`` if never.
    """
    m = cost.s.model
    b = np.unique(np.round(np.geomspace(1, max_batch, points)))
    t = cost.fixed_s(b) + cost.uniform_experts_s(b)[0] + cost.head_s(b)
    slope = np.diff(t) / np.diff(b)
    avg = t[:-1] / b[:-1]
    start = 1.0
    if m.n_moe_layers and m.n_experts > 1:
        e_local = cost.placement.experts_per_rank
        busy = expert_load.uniform_busy(b[:-1], m.top_k, cost.placement, cost.ep_sources,
                                         busiest=cost.dims.local_dispatch)[0]
        start = float(b[:-1][np.argmax(busy >= e_local - 0.5)]) if (busy >= e_local - 0.5).any() else max_batch
    ok = np.flatnonzero((slope >= 0.5 * avg) & (b[:-1] >= start))
    return int(b[ok[0]]) if ok.size else int(max_batch)
