"""Fit the reference MoE layer's dispatch (``kernels.moe_ref.dispatch``) from its own microbenchmark.

The dispatch sorts the ``tokens x top_k`` routed assignments by expert (a stable argsort), counts
them per expert (a bincount), with a capacity finds each assignment's position in its expert and
drops those past it, and reads the counts back to the host (``tolist``). On a CPU it is host work
whose time grows with the assignments: the whole-layer residual (``fit_local.fit_moe_overhead``)
cannot tell it from a fixed cost, so it is timed alone (``microbench.dispatch_points``) and fitted
here as ``fixed + per assignment + per expert``, plus ``fixed + per assignment`` more with a
capacity, by relative least squares. One point in five (never the fewest or most tokens of a
shape) is held out and scored.
"""

from __future__ import annotations

import numpy as np
from moesim.calibrate.fit import fit_error, fit_relative_nnls, round_sig, split_held_out
from moesim.calibrate.microbench import Measurement

from moesim.costmodel.profile import DispatchSpec, FitError


def _features(rows: list[Measurement]) -> np.ndarray:
    n = np.array([r.params["tokens"] * r.params["top_k"] for r in rows], dtype=float)
    e = np.array([r.params["experts"] for r in rows], dtype=float)
    cap = np.array([r.params["capacity_factor"] is not None for r in rows], dtype=float)
    return np.column_stack([np.ones_like(n), n, e, cap, cap * n])


def fit_dispatch(rows: list[Measurement]) -> tuple[DispatchSpec | None, FitError | None]:
    """The dispatch's spec and held-out error from the ``dispatch`` rows (None, None without any)."""
    disp = [r for r in rows if r.kind == "dispatch"]
    if not disp:
        return None, None
    fit, held = split_held_out(disp, lambda r: ((r.params["experts"], r.params["top_k"], r.params["capacity_factor"]),
                                               r.params["tokens"]))
    c = fit_relative_nnls(_features(fit), np.array([r.time_s for r in fit]))
    spec = DispatchSpec(fixed_us=round_sig(c[0] * 1e6), per_assignment_ns=round_sig(c[1] * 1e9),
                        per_expert_ns=round_sig(c[2] * 1e9), capacity_us=round_sig(c[3] * 1e6),
                        capacity_per_assignment_ns=round_sig(c[4] * 1e9))
    pred = [float(spec.seconds(r.params["tokens"] * r.params["top_k"], r.params["experts"],
                               r.params["capacity_factor"] is not None)) for r in held]
    return spec, fit_error(pred, [r.time_s for r in held], len(fit))
