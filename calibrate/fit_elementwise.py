"""Fit the elementwise kernels of the MoE layer: the SwiGLU activation and the router's top-k.

On a CPU these are not memory streams: ``exp`` in the softmax and the SiLU, and torch's top-k,
cost nanoseconds per element and vary by shape in ways no formula follows (top-2 of 64 logits
runs several times slower per logit than top-1). Both become tables of measured times, linear
in size between nodes (``tables.time_along``). Held-out points (``fit.split_held_out``: 1 in 5,
never the first or last size, which anchor the extrapolation) are left out of the table and filled by
interpolating their neighbours, so their recorded error is the table's.
"""

from __future__ import annotations

import numpy as np
from moesim.calibrate.fit import fit_error, round_sig, split_held_out
from moesim.calibrate.microbench import Measurement

from moesim.costmodel.profile import ElementCurve, ElementwiseSpec, FitError, RouterTable
from moesim.costmodel.tables import time_along


def _fill(x_all: list[float], x: list[float], y: list[float]) -> list[float]:
    """Times ``y`` measured at sizes ``x``, at every node of ``x_all`` (linear between measured ones)."""
    order = np.argsort(x)
    return list(time_along(np.asarray(x, dtype=float)[order], np.asarray(y, dtype=float)[order], x_all))


def fit_activation(rows: list[Measurement]) -> tuple[ElementCurve, FitError]:
    """Microseconds per call of the activation at each measured size (held-out ones filled)."""
    act = sorted((r for r in rows if r.kind == "activation"), key=lambda r: r.params["elements"])
    fit, held = split_held_out(act, lambda r: (None, r.params["elements"]))
    n = [float(r.params["elements"]) for r in act]
    us = _fill(n, [r.params["elements"] for r in fit], [r.time_s * 1e6 for r in fit])
    curve = ElementCurve(elements=n, us=round_sig(us))
    err = fit_error(curve.seconds([r.params["elements"] for r in held]), [r.time_s for r in held], len(fit))
    return curve, err


def fit_router(rows: list[Measurement]) -> tuple[RouterTable, FitError]:
    """Microseconds per call over (top_k, experts, tokens); a held-out point is filled along tokens.

    Cells the grid skips (top_k not below experts) take the nearest measured top-k's value.
    """
    rt = [r for r in rows if r.kind == "router"]
    tokens = sorted({r.params["tokens"] for r in rt})
    experts = sorted({r.params["experts"] for r in rt})
    ks = sorted({r.params["top_k"] for r in rt})
    fit, held = split_held_out(rt, lambda r: ((r.params["top_k"], r.params["experts"]), r.params["tokens"]))
    cells: dict[tuple[int, int], list[Measurement]] = {}
    for r in fit:
        cells.setdefault((r.params["top_k"], r.params["experts"]), []).append(r)
    table = np.full((len(ks), len(experts), len(tokens)), np.nan)
    for (k, e), rs in cells.items():
        table[ks.index(k), experts.index(e)] = _fill(tokens, [r.params["tokens"] for r in rs],
                                                     [r.time_s * 1e6 for r in rs])
    for i in range(len(ks)):  # top-k >= experts: not measured; borrow the nearest top-k that was
        for j in range(len(experts)):
            if np.isnan(table[i, j, 0]):
                done = [ii for ii in range(len(ks)) if not np.isnan(table[ii, j, 0])]
                table[i, j] = table[min(done, key=lambda ii: abs(ii - i)), j] if done else np.nanmax(table)
    spec = RouterTable(tokens=tokens, experts=experts, top_k=ks, us=round_sig(table.tolist()))
    pred = [float(spec.seconds(r.params["tokens"], r.params["experts"], r.params["top_k"])) for r in held]
    return spec, fit_error(pred, [r.time_s for r in held], len(fit))


def fit_elementwise(rows: list[Measurement]) -> tuple[ElementwiseSpec | None, dict[str, FitError]]:
    """Both tables when their microbenchmarks ran (None otherwise) and their held-out errors."""
    out, errors = {}, {}
    if any(r.kind == "activation" for r in rows):
        out["activation"], errors["activation"] = fit_activation(rows)
    if any(r.kind == "router" for r in rows):
        out["router"], errors["router"] = fit_router(rows)
    return (ElementwiseSpec(**out) if out else None), errors
