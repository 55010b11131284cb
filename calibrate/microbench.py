"""Microbenchmarks on the local device: each grid becomes timed points, measured interleaved.

Every benchmark turns a grid into ``Point`` s (kind, shape, and a ``build`` that makes the inputs
and returns the call to time); ``measure_points`` times them all in rounds through
``kernels.timing.measure_interleaved`` (shapes interleaved, each point until its median is known to
the grid's precision or a cap) and returns one ``Measurement`` per point: the median, its spread,
its samples. Inputs are random with fixed seeds, so a rerun measures the same routing; they are
kept between rounds in an ``InputCache`` (bounded in bytes). Callers run under
``torch.inference_mode()`` (as ``calibrate.run`` does): no autograd bookkeeping is timed.
"""

from __future__ import annotations

import ast
import csv
import json
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from moesim.calibrate.grids import Grid
from moesim.kernels.moe_ref import (
    capacity,
    dispatch,
    grouped_gemm_loop,
    init_moe_weights,
    moe_forward,
    swiglu_activation,
    topk_weights,
)
from moesim.kernels.timing import Interleaved, PrecisionRule, measure_interleaved, time_fn

from moesim.fileio import atomic_open

Tick = Callable[[str], None]
TORCH_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
#: Blocks of calls per sample (CPU): each round's sample is the median block; the rounds' samples
#: give the point's median and its confidence interval.
BLOCKS = 3


@dataclass(frozen=True)
class Measurement:
    """One timed point: ``kind`` (gemm, gemm_tile, grouped, copy, attn_prefill, attn_decode, router,
    activation, dispatch, layer, validate), its shape, the median seconds, and how well it is known: ``spread``
    (IQR / median of the samples kept), ``ci`` (relative half-width of the median's ~95 % interval,
    0 when unknown), ``samples`` kept and ``outliers`` set aside and re-measured."""

    kind: str
    params: dict = field(default_factory=dict)
    time_s: float = 0.0
    spread: float = 0.0
    ci: float = 0.0
    samples: int = 1
    outliers: int = 0


@dataclass
class Point:
    """A point to time: ``build()`` makes its inputs (once; the cache keeps them) and returns the call."""

    kind: str
    params: dict
    build: Callable[[], Callable[[], object]]
    label: str
    _fn: Callable[[], object] | None = None

    def fn(self) -> Callable[[], object]:
        if self._fn is None:
            self._fn = self.build()
        return self._fn

    def drop(self) -> None:
        """Forget the built call (its inputs stay in the cache while they fit)."""
        self._fn = None


class InputCache:
    """Input tensors by key, least recently used dropped past ``budget_bytes`` (a rebuilt input is
    identical: fixed seeds)."""

    def __init__(self, budget_bytes: float = 2 * 1024 ** 3):
        self.budget = budget_bytes
        self._items: OrderedDict = OrderedDict()
        self._bytes = 0

    def get(self, key, make: Callable[[], object]):
        if key in self._items:
            self._items.move_to_end(key)
            return self._items[key][0]
        value = make()
        size = _nbytes(value)
        self._items[key] = (value, size)
        self._bytes += size
        while self._bytes > self.budget and len(self._items) > 1:
            _, (_, dropped) = self._items.popitem(last=False)
            self._bytes -= dropped
        return value

    def rand(self, *shape: int, dtype, device, seed: int) -> torch.Tensor:
        return self.get(("rand", shape, dtype, device, seed), lambda: _rand(*shape, dtype=dtype, device=device, seed=seed))


def _nbytes(value) -> int:
    if isinstance(value, torch.Tensor):
        return value.numel() * value.element_size()
    if isinstance(value, (tuple, list)):
        return sum(_nbytes(v) for v in value)
    if hasattr(value, "__dataclass_fields__"):
        return sum(_nbytes(getattr(value, f)) for f in value.__dataclass_fields__)
    return 0


def cache_budget(device: str) -> float:
    """Bytes of inputs kept between rounds: 2 GiB (CPU), 1 GiB (MPS), a quarter of a CUDA device's memory."""
    if device == "cuda":
        return 0.25 * torch.cuda.get_device_properties(0).total_memory
    return 1024 ** 3 if device == "mps" else 2 * 1024 ** 3


def expert_fn_for(device: str) -> tuple[str, Callable | None]:
    """('triton', the Triton expert FFN) on CUDA with triton, else ('loop', None: the default loop)."""
    if device == "cuda":
        from moesim.kernels.triton_moe import expert_ffn_triton, triton_available

        if triton_available():
            return "triton", expert_ffn_triton
    return "loop", None


def grouped_fn_for(impl: str) -> Callable:
    if impl == "triton":
        from moesim.kernels.triton_moe import grouped_gemm

        return grouped_gemm
    return grouped_gemm_loop


def _rand(*shape: int, dtype, device, seed: int) -> torch.Tensor:
    g = torch.Generator(device="cpu").manual_seed(seed)
    return torch.randn(*shape, generator=g).to(dtype=dtype, device=device)


def gemm_points(grid: Grid, device: str, dtype: str, cache: InputCache) -> list[Point]:
    """Dense (m x k) @ (k x n) over the grid."""
    return _dense_gemm_points("gemm", grid.gemm_points(), "dense GEMM", device, dtype, cache)


def gemm_tile_points(grid: Grid, device: str, dtype: str, cache: InputCache) -> list[Point]:
    """Dense GEMMs of the layer's expert weight shapes at irregular token counts (``gemm_tile``)."""
    return _dense_gemm_points("gemm_tile", grid.gemm_tile_points(), "GEMM row tile", device, dtype, cache)


def _dense_gemm_points(kind: str, shapes, label: str, device: str, dtype: str, cache: InputCache) -> list[Point]:
    """One ``kind`` point per ``(m, n, k)`` of ``shapes``: a dense (m x k) @ (k x n) product."""
    dt = TORCH_DTYPES[dtype]

    def build(m, n, k):
        a, b = cache.rand(m, k, dtype=dt, device=device, seed=1), cache.rand(k, n, dtype=dt, device=device, seed=2)
        return lambda: a @ b

    return [Point(kind, {"m": m, "n": n, "k": k}, lambda m=m, n=n, k=k: build(m, n, k), label) for m, n, k in shapes]


def grouped_points(grid: Grid, device: str, dtype: str, impl: str, cache: InputCache) -> list[Point]:
    """Grouped expert GEMM: E experts with m tokens each, weights (E, k, n)."""
    return grouped_points_at(grid.grouped_points(), device, dtype, impl, cache)


def grouped_points_at(shapes, device: str, dtype: str, impl: str, cache: InputCache,
                      kind: str = "grouped") -> list[Point]:
    """The grouped expert GEMM at each (experts, m, n, k) of ``shapes``."""
    dt = TORCH_DTYPES[dtype]
    fn = grouped_fn_for(impl)

    def build(e, m, n, k):
        xs = cache.rand(e * m, k, dtype=dt, device=device, seed=3)
        w = cache.rand(e, k, n, dtype=dt, device=device, seed=4)
        counts = [m] * e
        return lambda: fn(xs, counts, w)

    return [Point(kind, {"experts": e, "m": m, "n": n, "k": k}, lambda e=e, m=m, n=n, k=k: build(e, m, n, k),
                  "grouped expert GEMM") for e, m, n, k in shapes]


def copy_points(grid: Grid, device: str, cache: InputCache) -> list[Point]:
    """Device-memory copies of growing size; ``bytes`` counts the read and the write."""
    def build(nbytes):
        src, dst = cache.get(("copy", nbytes, device), lambda: (
            torch.ones(nbytes // 4, dtype=torch.float32, device=device),
            torch.empty(nbytes // 4, dtype=torch.float32, device=device)))
        return lambda: dst.copy_(src)

    return [Point("copy", {"bytes": 2 * nbytes}, lambda nb=nbytes: build(nb), "memory bandwidth")
            for nbytes in grid.copy_bytes]


def attention_points(grid: Grid, device: str, dtype: str, cache: InputCache) -> list[Point]:
    """Causal prefill (q == kv) and decode (one query over kv keys, a batch) with SDPA."""
    dt = TORCH_DTYPES[dtype]
    h, hd = grid.attn_heads, grid.attn_head_dim

    def prefill(q):
        x = cache.rand(1, h, q, hd, dtype=dt, device=device, seed=5)
        return lambda: F.scaled_dot_product_attention(x, x, x, is_causal=True)

    def decode(b, kv):
        qx = cache.rand(b, h, 1, hd, dtype=dt, device=device, seed=6)
        kx = cache.rand(b, h, kv, hd, dtype=dt, device=device, seed=7)
        return lambda: F.scaled_dot_product_attention(qx, kx, kx)

    out = [Point("attn_prefill", {"batch": 1, "q": q, "kv": q, "heads": h, "head_dim": hd}, lambda q=q: prefill(q),
                 "attention prefill") for q in grid.attn_prefill]
    return out + [Point("attn_decode", {"batch": b, "q": 1, "kv": kv, "heads": h, "head_dim": hd},
                        lambda b=b, kv=kv: decode(b, kv), "attention decode") for b, kv in grid.attn_decode]


def router_points(grid: Grid, device: str, cache: InputCache) -> list[Point]:
    """The reference layer's router after its GEMM (``topk_weights``) on (tokens, experts) fp32 logits."""
    def build(t, e, k):
        logits = cache.rand(t, e, dtype=torch.float32, device=device, seed=8)
        return lambda: topk_weights(logits, k)

    return [Point("router", {"tokens": t, "experts": e, "top_k": k}, lambda t=t, e=e, k=k: build(t, e, k), "router top-k")
            for t, e, k in grid.router_points()]


def activation_points(grid: Grid, device: str, dtype: str, cache: InputCache) -> list[Point]:
    """The reference layer's SwiGLU activation (``swiglu_activation``) on (rows, 2f) gate/up outputs."""
    dt, f = TORCH_DTYPES[dtype], grid.layer_ffn

    def build(rows):
        h = cache.rand(rows, 2 * f, dtype=dt, device=device, seed=9)
        return lambda: swiglu_activation(h)

    return [Point("activation", {"rows": rows, "ffn": f, "elements": rows * f}, lambda r=rows: build(r), "activation")
            for rows in grid.act_rows]


def dispatch_points(grid: Grid, device: str, cache: InputCache) -> list[Point]:
    """The reference layer's dispatch (``kernels.moe_ref.dispatch``: sort the tokens x top_k
    assignments by expert, count them, drop those over capacity, read the counts back to the host)
    on random routings, dropless and with a capacity."""
    def build(t, e, k, cf):
        def make():
            g = torch.Generator(device="cpu").manual_seed(13 + t + e + k)
            experts = torch.stack([torch.randperm(e, generator=g)[:k] for _ in range(t)]).to(device)
            return experts, torch.full((t, k), 1.0 / k, device=device)

        experts, weights = cache.get(("route", t, e, k, device), make)
        cap = None if cf is None else capacity(t, k, e, cf)
        return lambda: dispatch(experts, weights, e, cap)

    return [Point("dispatch", {"tokens": t, "experts": e, "top_k": k, "capacity_factor": cf},
                  lambda t=t, e=e, k=k, cf=cf: build(t, e, k, cf), "dispatch") for t, e, k, cf in grid.dispatch_points()]


def layer_input(tokens: int, d_model: int, dtype, device, seed: int = 11) -> torch.Tensor:
    """The layer input for ``tokens`` tokens (fixed seed: the routing is reproducible)."""
    return _rand(tokens, d_model, dtype=dtype, device=device, seed=seed + tokens)


def layer_points(points, d_model: int, ffn: int, device: str, dtype: str, impl: str, cache: InputCache,
                 kind: str = "layer") -> list[Point]:
    """``moe_forward`` at each (experts, top_k, tokens, capacity factor); its first build runs the
    layer once and records the kept assignments per expert (``counts``) and the ``dropped`` ones."""
    dt = TORCH_DTYPES[dtype]
    expert_fn = expert_fn_for(device)[1] if impl == "triton" else None

    def build(params):
        e, k, t, cf = params["experts"], params["top_k"], params["tokens"], params["capacity_factor"]
        w = cache.get(("moe", d_model, ffn, e, dt, device),
                      lambda: init_moe_weights(d_model, ffn, e, dtype=dt, device=device, seed=e))
        x = cache.get(("layer_x", t, d_model, dt, device), lambda: layer_input(t, d_model, dt, device))
        if "counts" not in params:
            res = moe_forward(x, w, k, cf, expert_fn)
            params["counts"], params["dropped"] = res.dispatch.counts, res.dispatch.dropped
        return lambda: moe_forward(x, w, k, cf, expert_fn)

    out = []
    for e, k, t, cf in points:
        params = {"experts": e, "top_k": k, "tokens": t, "capacity_factor": cf, "d_model": d_model, "ffn": ffn}
        out.append(Point(kind, params, lambda params=params: build(params), "MoE layer" if kind == "layer" else "validation"))
    return out


def measure_points(points: list[Point], device: str, min_time_s: float, rule: PrecisionRule,
                   budget_s: float = float("inf"), tick: Tick = lambda _: None, pairs: bool = False,
                   on_round: Callable[[int, int], None] | None = None,
                   guaranteed: int | None = None) -> tuple[list[Measurement], Interleaved]:
    """Time every point interleaved (``kernels.timing.measure_interleaved``): one sample per point per
    round (the median of ``BLOCKS`` blocks of about ``min_time_s`` in all, after one warm-up call),
    until its median is known to ``rule`` or capped; past ``budget_s`` only the ``guaranteed``
    first rounds run. Returns one Measurement per point, in order."""
    def sample(i: int) -> float:
        t = time_fn(points[i].fn(), device, min_time_s, warmup=1, blocks=BLOCKS).median_s
        tick(points[i].label)
        return t

    run = measure_interleaved(len(points), sample, rule, budget_s, pairs=pairs, on_round=on_round,
                              guaranteed=guaranteed)
    rows = []
    for pt, st in zip(points, run.points):
        ci = st.ci(rule)
        rows.append(Measurement(pt.kind, pt.params, st.median(rule), spread=st.spread(rule),
                                ci=ci if ci != float("inf") else 0.0, samples=len(st.kept(rule)),
                                outliers=st.outliers(rule)))
        pt.drop()
    return rows, run


def shape_label(params: dict) -> str:
    """A point's shape as one short string: ``m=1 n=4 k=256`` (routing counts left out)."""
    return " ".join(f"{k}={v}" for k, v in params.items() if k not in ("counts", "dropped"))


def parse_shape(label: str) -> dict:
    """The params of a ``shape_label`` string back (numbers and None as such, anything else as text)."""
    out: dict = {}
    for item in label.split():
        key, _, text = item.partition("=")
        try:
            out[key] = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            out[key] = text
    return out


def write_measurements(rows: list[Measurement], path: str | Path) -> None:
    """Write rows as CSV (kind, params as JSON, time_s, spread, ci, samples, outliers), atomically."""
    with atomic_open(path, "w") as fh:
        wr = csv.writer(fh)
        wr.writerow(["kind", "params", "time_s", "spread", "ci", "samples", "outliers"])
        for r in rows:
            wr.writerow([r.kind, json.dumps(r.params, sort_keys=True), f"{r.time_s:.9g}", f"{r.spread:.4g}",
                         f"{r.ci:.4g}", r.samples, r.outliers])


def read_measurements(path: str | Path) -> list[Measurement]:
    """Rows written by ``write_measurements`` (older files without the spread columns read too)."""
    with open(path, newline="", encoding="utf-8") as fh:
        return [Measurement(r["kind"], json.loads(r["params"]), float(r["time_s"]), spread=float(r.get("spread") or 0),
                            ci=float(r.get("ci") or 0), samples=int(r.get("samples") or 1),
                            outliers=int(r.get("outliers") or 0)) for r in csv.DictReader(fh)]
