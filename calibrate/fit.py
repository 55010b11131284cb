"""Fitting: measured rows in, profile parameters out. Pure numpy, no torch, no files.

Shared by the local calibration (``calibrate.run``) and the shipped-default fit (``calibrate.fit_vidur``).
Every fit minimises relative (not absolute) error, because kernel times span five decades.
"""

from __future__ import annotations

import zlib

import numpy as np

from moesim.costmodel.profile import FitError, GemmTable

EFF_FLOOR = 1e-5  # smallest efficiency a table may hold


def held_out(*key) -> bool:
    """Deterministic 1-in-5 hold-out by a stable hash of the row's identifying values."""
    return zlib.crc32(repr(key).encode()) % 5 == 0


def end_sizes(group_sizes) -> set:
    """The ``(group, size)`` pairs at the smallest and largest size of each group."""
    sizes: dict = {}
    for g, x in group_sizes:
        sizes.setdefault(g, []).append(x)
    return {(g, x) for g, xs in sizes.items() for x in (min(xs), max(xs))}


def split_held_out(rows: list, along=None) -> tuple[list, list]:
    """(fitted, held out) measurement rows: 1 row in 5 by a stable hash of its kind and shape.

    ``along(row) -> (group, size)``: a row at the smallest or largest size of its group is always
    fitted; the ends anchor a table, and holding them out would score extrapolation instead.
    """
    key = lambda r: (r.kind,) + tuple(sorted((k, str(v)) for k, v in r.params.items() if k not in ("counts", "dropped")))
    ends = end_sizes(along(r) for r in rows) if along is not None else set()
    held = [held_out(*key(r)) and (along is None or along(r) not in ends) for r in rows]
    return [r for r, h in zip(rows, held) if not h], [r for r, h in zip(rows, held) if h]


def abs_pct_error(pred, meas) -> np.ndarray:
    """|pred - meas| / meas in percent, per row."""
    pred = np.asarray(pred, dtype=float)
    meas = np.asarray(meas, dtype=float)
    return 100.0 * np.abs(pred - meas) / meas


def fit_error(pred, meas, rows_fit: int) -> FitError:
    """Median, p90 and max absolute percent error of held-out predictions."""
    e = abs_pct_error(pred, meas)
    if e.size == 0:
        return FitError(rows_fit=rows_fit, rows_held_out=0, median_abs_pct=0.0, p90_abs_pct=0.0, max_abs_pct=0.0)
    return FitError(rows_fit=rows_fit, rows_held_out=int(e.size), median_abs_pct=round_sig(np.median(e), 3),
                    p90_abs_pct=round_sig(np.percentile(e, 90), 3), max_abs_pct=round_sig(e.max(), 3))


def round_sig(x, digits: int = 4):
    """Round a float (or nested lists of floats) to ``digits`` significant digits, as plain floats."""
    if isinstance(x, (list, tuple, np.ndarray)):
        return [round_sig(v, digits) for v in x]
    x = float(x)
    if x == 0 or not np.isfinite(x):
        return x
    return float(f"{x:.{digits}g}")


def fit_nnls(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Non-negative c minimising |a @ c - b|^2, with columns rescaled for conditioning."""
    from scipy.optimize import nnls

    a = np.asarray(a, dtype=float)
    scale = np.maximum(np.abs(a).max(axis=0), 1e-300)
    c, _ = nnls(a / scale, np.asarray(b, dtype=float))
    return c / scale


def fit_relative_nnls(features: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Non-negative coefficients c minimising sum(((features @ c) - y) / y)^2.

    ``features`` is (rows, p), ``y`` (rows,) positive. Used for ``t = launch + bytes / bw`` and the
    alpha-beta collective models.
    """
    y = np.asarray(y, dtype=float)
    return fit_nnls(np.asarray(features, dtype=float) / y[:, None], np.ones(len(y)))


def fit_launch_bandwidth(bytes_moved, time_s) -> tuple[float, float]:
    """(launch s, bytes/s) of ``t = launch + bytes / bw`` by relative least squares."""
    b = np.asarray(bytes_moved, dtype=float)
    c = fit_relative_nnls(np.column_stack([np.ones_like(b), b]), np.asarray(time_s, dtype=float))
    return float(c[0]), float(1.0 / c[1]) if c[1] > 0 else float("inf")


def log2_nodes(values, step: float = 1.0) -> list[float]:
    """Powers of 2 (spacing ``step`` in log2) covering ``values``: interpolation nodes for a table."""
    v = np.log2(np.asarray(values, dtype=float))
    lo, hi = np.floor(v.min() / step) * step, np.ceil(v.max() / step) * step
    return [float(2.0 ** x) for x in np.arange(lo, hi + step / 2, step)]


def _hat_weights(nodes: np.ndarray, x: np.ndarray) -> np.ndarray:
    """(rows, nodes) linear-interpolation weights of ``x`` on ascending ``nodes`` (clamped)."""
    w = np.zeros((x.size, nodes.size))
    if nodes.size == 1:
        w[:, 0] = 1.0
        return w
    xc = np.clip(x, nodes[0], nodes[-1])
    i = np.clip(np.searchsorted(nodes, xc, side="right") - 1, 0, nodes.size - 2)
    f = (xc - nodes[i]) / (nodes[i + 1] - nodes[i])
    rows = np.arange(x.size)
    w[rows, i] = 1 - f
    w[rows, i + 1] += f
    return w


def _second_diff(n: int) -> np.ndarray:
    d = np.zeros((max(n - 2, 0), n))
    for r in range(n - 2):
        d[r, r:r + 3] = [1.0, -2.0, 1.0]
    return d


def fit_gemm_table(m, weight_elems, efficiency, m_nodes, w_nodes, smooth: float = 0.3) -> GemmTable:
    """Least-squares table of log efficiency on (log2 m, log2 weight) nodes, lightly smoothed.

    ``efficiency`` per row is the achieved fraction of peak. The smoothing (second differences along
    both axes, weight ``smooth``) fills nodes with no rows and tames noise.
    """
    mx, wy = np.log2(np.asarray(m, float)), np.log2(np.asarray(weight_elems, float))
    mn, wn = np.log2(np.asarray(m_nodes, float)), np.log2(np.asarray(w_nodes, float))
    hx, hy = _hat_weights(mn, mx), _hat_weights(wn, wy)
    basis = (hy[:, :, None] * hx[:, None, :]).reshape(mx.size, -1)  # node index = iy * len(mn) + ix
    target = np.log(np.clip(np.asarray(efficiency, float), EFF_FLOOR, 1.0))
    dx, dy = _second_diff(mn.size), _second_diff(wn.size)
    reg = [np.kron(np.eye(wn.size), dx), np.kron(dy, np.eye(mn.size))]
    reg = [r for r in reg if r.size]
    lam = smooth * np.sqrt(max(mx.size, 1) / basis.shape[1])
    a = np.vstack([basis] + [lam * r for r in reg])
    b = np.concatenate([target, np.zeros(sum(r.shape[0] for r in reg))])
    ridge = 1e-6 * np.eye(basis.shape[1])  # keeps nodes with no rows and no neighbours defined
    sol = np.linalg.lstsq(np.vstack([a, ridge]), np.concatenate([b, np.full(basis.shape[1], 1e-6 * target.mean())]),
                          rcond=None)[0]
    eff = np.clip(np.exp(sol), EFF_FLOOR, 1.0).reshape(wn.size, mn.size)
    return GemmTable(tokens=round_sig(list(m_nodes), 10), weight_elems=round_sig(list(w_nodes), 10),
                     efficiency=[round_sig(list(r)) for r in eff])
