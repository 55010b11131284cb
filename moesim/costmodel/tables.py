"""Measured tables a profile holds: efficiencies and per-element costs over shape axes.

Every table interpolates linearly in log2 of its axes (and in log of its values) and clamps at the
edges, so a shape outside the measured range takes the nearest measured value.
"""

from __future__ import annotations

from itertools import pairwise

import numpy as np
from pydantic import Field, PositiveFloat, model_validator

from moesim.schemas._base import Strict


def safe_log2(x) -> np.ndarray:
    """log2 of ``x`` (array), with values at or below 0 read as 1e-30 so a table lookup never sees -inf."""
    return np.log2(np.maximum(np.asarray(x, dtype=float), 1e-30))


def _interp_index(axis: np.ndarray, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(lower index, weight of the upper node) of ``x`` on an ascending log2 ``axis``, clamped."""
    if axis.size == 1:
        return np.zeros(x.shape, dtype=int), np.zeros(x.shape)
    xc = np.clip(x, axis[0], axis[-1])
    i = np.clip(np.searchsorted(axis, xc, side="right") - 1, 0, axis.size - 2)
    w = (xc - axis[i]) / (axis[i + 1] - axis[i])
    return i, w


def _bilinear_log(xs, ys, grid, x, y) -> np.ndarray:
    """exp of the bilinear interpolation of log(grid[iy][ix]) at (log2 x, log2 y), clamped."""
    x, y = np.broadcast_arrays(safe_log2(x), safe_log2(y))
    ix, wx = _interp_index(safe_log2(xs), x)
    iy, wy = _interp_index(safe_log2(ys), y)
    g = np.log(np.asarray(grid, dtype=float))
    if g.shape[1] == 1:
        g = np.concatenate([g, g], axis=1)
    if g.shape[0] == 1:
        g = np.concatenate([g, g], axis=0)
    v = ((1 - wy) * ((1 - wx) * g[iy, ix] + wx * g[iy, ix + 1])
         + wy * ((1 - wx) * g[iy + 1, ix] + wx * g[iy + 1, ix + 1]))
    return np.exp(v)


def _check_table(xname: str, xs: list, yname: str, ys: list, grid: list[list[float]]) -> None:
    _check_axis(xname, xs)
    _check_axis(yname, ys)
    if len(grid) != len(ys) or any(len(r) != len(xs) for r in grid):
        raise ValueError(f"efficiency: expected {len(ys)} rows ({yname}) of {len(xs)} values ({xname})")
    for row in grid:
        _check_eff(row)


class GemmTable(Strict):
    """GEMM efficiency over tokens ``m`` and weight size ``n*k`` (elements); bilinear in log2, clamped.

    ``efficiency[i][j]`` is the fraction of the reference peak an (m x k) @ (k x n) product reaches at
    ``weight_elems[i]`` and ``tokens[j]``. Interpolation is on log efficiency.
    """

    tokens: list[PositiveFloat] = Field(min_length=1, description="Ascending token counts m.")
    weight_elems: list[PositiveFloat] = Field(min_length=1, description="Ascending weight sizes n*k.")
    efficiency: list[list[float]] = Field(description="[weight][tokens] efficiencies in (0, 1].")

    @model_validator(mode="after")
    def _check(self) -> GemmTable:
        _check_table("tokens", self.tokens, "weight_elems", self.weight_elems, self.efficiency)
        return self

    def lookup(self, m, weight_elems) -> np.ndarray:
        """Efficiency at tokens ``m`` (array) and weight size ``weight_elems`` (broadcasts)."""
        return _bilinear_log(self.tokens, self.weight_elems, self.efficiency, m, weight_elems)


class BytesCurve(Strict):
    """Memory efficiency vs bytes a streaming kernel moves (its working set: caches make small ones
    faster); linear in log2 bytes, log efficiency, clamped at the ends."""

    bytes: list[PositiveFloat] = Field(min_length=1, description="Ascending bytes moved (read + written).")
    efficiency: list[float] = Field(min_length=1, description="Fraction of reference bandwidth, in (0, 1].")

    @model_validator(mode="after")
    def _check(self) -> BytesCurve:
        _check_table("bytes", self.bytes, "row", [1.0], [self.efficiency])
        return self

    def lookup(self, nbytes) -> np.ndarray:
        """Efficiency at ``nbytes`` (array)."""
        return _bilinear_log(self.bytes, [1.0], [self.efficiency], nbytes, 1.0)


class AttentionTable(Strict):
    """Attention compute efficiency over query tokens and keys per sequence; bilinear in log2, clamped."""

    q_tokens: list[PositiveFloat] = Field(min_length=1, description="Ascending query tokens per sequence.")
    kv_tokens: list[PositiveFloat] = Field(min_length=1, description="Ascending keys per sequence (incl. the queries).")
    efficiency: list[list[float]] = Field(description="[kv][q] efficiencies in (0, 1].")

    @model_validator(mode="after")
    def _check(self) -> AttentionTable:
        _check_table("q_tokens", self.q_tokens, "kv_tokens", self.kv_tokens, self.efficiency)
        return self

    def lookup(self, q, kv) -> np.ndarray:
        """Efficiency at ``q`` queries over ``kv`` keys (arrays broadcast)."""
        return _bilinear_log(self.q_tokens, self.kv_tokens, self.efficiency, q, kv)


def _check_axis(name: str, axis: list[float]) -> None:
    if any(b <= a for a, b in pairwise(axis)):
        raise ValueError(f"{name}: must be strictly ascending")


def _check_eff(values: list[float]) -> None:
    bad = [v for v in values if not (0 < v <= 1.0) or not np.isfinite(v)]
    if bad:
        raise ValueError(f"efficiency = {bad[0]}: must be in (0, 1]")


def _check_positive(name: str, values) -> None:
    v = np.asarray(values, dtype=float)
    if v.size == 0 or not np.all(np.isfinite(v)) or np.any(v <= 0):
        raise ValueError(f"{name}: every value must be a positive number")


def time_along(nodes, values, x) -> np.ndarray:
    """Time at sizes ``x`` from times at ascending size ``nodes``: linear between nodes (a fixed cost
    plus a cost per unit holds between any two), the first node's time below it (launch floor),
    proportional to size past the last."""
    nodes, values, x = np.asarray(nodes, dtype=float), np.asarray(values, dtype=float), np.asarray(x, dtype=float)
    inside = np.interp(x, nodes, values)
    return np.where(x > nodes[-1], values[-1] * x / nodes[-1], inside)


class ElementCurve(Strict):
    """Time of an elementwise kernel vs the elements it writes (CPUs: transcendental math, not bytes,
    sets its pace); see ``time_along`` for how sizes between and beyond the nodes are priced."""

    elements: list[PositiveFloat] = Field(min_length=1, description="Ascending output elements per call.")
    us: list[PositiveFloat] = Field(min_length=1, description="Microseconds per call at each elements node.")

    @model_validator(mode="after")
    def _check(self) -> ElementCurve:
        _check_axis("elements", self.elements)
        if len(self.us) != len(self.elements):
            raise ValueError(f"us: expected {len(self.elements)} values, one per elements node")
        _check_positive("us", self.us)
        return self

    def seconds(self, elements) -> np.ndarray:
        """Seconds of one call writing ``elements`` (array); 0 for 0 elements."""
        n = np.asarray(elements, dtype=float)
        return np.where(n > 0, time_along(self.elements, self.us, n) * 1e-6, 0.0)


class RouterTable(Strict):
    """Router after its GEMM (softmax over E logits, top-k, renormalise) vs tokens, experts and top-k.

    ``us[i][j][l]``: microseconds per call at ``top_k[i]``, ``experts[j]``, ``tokens[l]``. Along
    tokens as ``time_along``; between expert nodes log time is linear in log2 experts, between
    top-k nodes time is linear in top-k; both clamp at their ends.
    """

    tokens: list[PositiveFloat] = Field(min_length=1, description="Ascending tokens per call.")
    experts: list[PositiveFloat] = Field(min_length=1, description="Ascending experts (logits per token).")
    top_k: list[PositiveFloat] = Field(min_length=1, description="Ascending experts picked per token.")
    us: list[list[list[float]]] = Field(description="[top_k][experts][tokens] microseconds per call.")

    @model_validator(mode="after")
    def _check(self) -> RouterTable:
        for name, axis in (("tokens", self.tokens), ("experts", self.experts), ("top_k", self.top_k)):
            _check_axis(name, axis)
        shape = (len(self.top_k), len(self.experts), len(self.tokens))
        if len(self.us) != shape[0] or any(len(p) != shape[1] for p in self.us) or any(
                len(row) != shape[2] for plane in self.us for row in plane):
            raise ValueError(f"us: expected {shape[0]} x {shape[1]} x {shape[2]} values (top_k, experts, tokens)")
        _check_positive("us", self.us)
        return self

    def seconds(self, tokens, experts: float, top_k: float) -> np.ndarray:
        """Seconds of one router call over ``tokens`` (array) with ``experts`` and ``top_k``."""
        t = np.asarray(tokens, dtype=float)

        def bracket(axis, x) -> tuple[int, int, float]:
            """Lower node, upper node and the upper node's weight of ``x`` on ``axis`` (clamped)."""
            i, w = _interp_index(np.asarray(axis, dtype=float), np.asarray(x, dtype=float))
            return int(i), min(int(i) + 1, len(axis) - 1), float(w)

        ki, kj, wk = bracket(self.top_k, top_k)
        ei, ej, we = bracket(safe_log2(self.experts), safe_log2(experts))

        def at(k: int) -> np.ndarray:
            lo, hi = (np.log(time_along(self.tokens, self.us[k][e], t)) for e in (ei, ej))
            return np.exp((1 - we) * lo + we * hi)

        us = (1 - wk) * at(ki) + wk * at(kj)
        return np.where(t > 0, us * 1e-6, 0.0)
