"""Microbenchmarks on the local device: each turns a grid into ``Measurement`` rows (seconds).

Every function takes a ``tick`` callback called once per timed point (drives the progress bar).
Inputs are random with fixed seeds, so a rerun measures the same routing. Callers run these under
``torch.inference_mode()`` (as ``calibrate.run`` does): no autograd bookkeeping is timed.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from moesim.calibrate.grids import Grid
from moesim.kernels.moe_ref import (
    grouped_gemm_loop,
    init_moe_weights,
    moe_forward,
    swiglu_activation,
    topk_weights,
)
from moesim.kernels.timing import time_fn

from moesim.fileio import atomic_open

Tick = Callable[[str], None]
TORCH_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass(frozen=True)
class Measurement:
    """One timed point: ``kind`` (gemm, grouped, copy, attn_prefill, attn_decode, router, activation,
    layer), its shape."""

    kind: str
    params: dict = field(default_factory=dict)
    time_s: float = 0.0


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


def bench_gemm(grid: Grid, device: str, dtype: str, tick: Tick) -> list[Measurement]:
    """Dense (m x k) @ (k x n) over the grid."""
    dt = TORCH_DTYPES[dtype]
    out = []
    for m, n, k in grid.gemm_points():
        a, b = _rand(m, k, dtype=dt, device=device, seed=1), _rand(k, n, dtype=dt, device=device, seed=2)
        t = time_fn(lambda a=a, b=b: a @ b, device, grid.min_time_s).median_s
        out.append(Measurement("gemm", {"m": m, "n": n, "k": k}, t))
        tick("dense GEMM")
    return out


def bench_grouped(grid: Grid, device: str, dtype: str, impl: str, tick: Tick) -> list[Measurement]:
    """Grouped expert GEMM: E experts with m tokens each, weights (E, k, n)."""
    dt = TORCH_DTYPES[dtype]
    fn = grouped_fn_for(impl)
    out = []
    for e, m, n, k in grid.grouped_points():
        xs = _rand(e * m, k, dtype=dt, device=device, seed=3)
        w = _rand(e, k, n, dtype=dt, device=device, seed=4)
        counts = [m] * e
        t = time_fn(lambda xs=xs, counts=counts, w=w: fn(xs, counts, w), device, grid.min_time_s).median_s
        out.append(Measurement("grouped", {"experts": e, "m": m, "n": n, "k": k}, t))
        tick("grouped expert GEMM")
    return out


def bench_copy(grid: Grid, device: str, tick: Tick) -> list[Measurement]:
    """Device-memory copies of growing size; ``bytes`` counts the read and the write."""
    out = []
    for nbytes in grid.copy_bytes:
        src = torch.ones(nbytes // 4, dtype=torch.float32, device=device)
        dst = torch.empty_like(src)
        t = time_fn(lambda dst=dst, src=src: dst.copy_(src), device, grid.min_time_s).median_s
        out.append(Measurement("copy", {"bytes": 2 * nbytes}, t))
        tick("memory bandwidth")
    return out


def bench_attention(grid: Grid, device: str, dtype: str, tick: Tick) -> list[Measurement]:
    """Causal prefill (q == kv) and decode (one query over kv keys, a batch) with SDPA."""
    dt = TORCH_DTYPES[dtype]
    h, hd = grid.attn_heads, grid.attn_head_dim
    out = []
    for q in grid.attn_prefill:
        x = _rand(1, h, q, hd, dtype=dt, device=device, seed=5)
        t = time_fn(lambda x=x: F.scaled_dot_product_attention(x, x, x, is_causal=True), device, grid.min_time_s).median_s
        out.append(Measurement("attn_prefill", {"batch": 1, "q": q, "kv": q, "heads": h, "head_dim": hd}, t))
        tick("attention prefill")
    for b, kv in grid.attn_decode:
        qx = _rand(b, h, 1, hd, dtype=dt, device=device, seed=6)
        kx = _rand(b, h, kv, hd, dtype=dt, device=device, seed=7)
        t = time_fn(lambda qx=qx, kx=kx: F.scaled_dot_product_attention(qx, kx, kx), device, grid.min_time_s).median_s
        out.append(Measurement("attn_decode", {"batch": b, "q": 1, "kv": kv, "heads": h, "head_dim": hd}, t))
        tick("attention decode")
    return out


def bench_router(grid: Grid, device: str, tick: Tick) -> list[Measurement]:
    """The reference layer's router after its GEMM (``topk_weights``) on (tokens, experts) fp32 logits."""
    out = []
    for t, e, k in grid.router_points():
        logits = _rand(t, e, dtype=torch.float32, device=device, seed=8)
        secs = time_fn(lambda logits=logits, k=k: topk_weights(logits, k), device, grid.min_time_s).median_s
        out.append(Measurement("router", {"tokens": t, "experts": e, "top_k": k}, secs))
        tick("router top-k")
    return out


def bench_activation(grid: Grid, device: str, dtype: str, tick: Tick) -> list[Measurement]:
    """The reference layer's SwiGLU activation (``swiglu_activation``) on (rows, 2f) gate/up outputs."""
    dt, f = TORCH_DTYPES[dtype], grid.layer_ffn
    out = []
    for rows in grid.act_rows:
        h = _rand(rows, 2 * f, dtype=dt, device=device, seed=9)
        secs = time_fn(lambda h=h: swiglu_activation(h), device, grid.min_time_s).median_s
        out.append(Measurement("activation", {"rows": rows, "ffn": f, "elements": rows * f}, secs))
        tick("activation")
    return out


def layer_input(tokens: int, d_model: int, dtype, device, seed: int = 11) -> torch.Tensor:
    """The layer input for ``tokens`` tokens (fixed seed: the routing is reproducible)."""
    return _rand(tokens, d_model, dtype=dtype, device=device, seed=seed + tokens)


def time_layer(points, d_model: int, ffn: int, device: str, dtype: str, impl: str, min_time_s: float,
               tick: Tick, kind: str = "layer") -> list[Measurement]:
    """Time ``moe_forward`` at each (experts, top_k, tokens, capacity factor); record kept counts."""
    dt = TORCH_DTYPES[dtype]
    expert_fn = expert_fn_for(device)[1] if impl == "triton" else None
    weights: dict[int, object] = {}
    out = []
    for e, k, t, cf in points:
        w = weights.setdefault(e, init_moe_weights(d_model, ffn, e, dtype=dt, device=device, seed=e))
        x = layer_input(t, d_model, dt, device)
        res = moe_forward(x, w, k, cf, expert_fn)
        secs = time_fn(lambda x=x, w=w, k=k, cf=cf: moe_forward(x, w, k, cf, expert_fn), device, min_time_s).median_s
        params = {"experts": e, "top_k": k, "tokens": t, "capacity_factor": cf, "d_model": d_model, "ffn": ffn,
                      "counts": res.dispatch.counts, "dropped": res.dispatch.dropped}
        out.append(Measurement(kind, params, secs))
        tick("MoE layer" if kind == "layer" else "validation")
    return out


def write_measurements(rows: list[Measurement], path: str | Path) -> None:
    """Write rows as CSV (kind, params as JSON, time_s), atomically."""
    with atomic_open(path, "w") as fh:
        wr = csv.writer(fh)
        wr.writerow(["kind", "params", "time_s"])
        for r in rows:
            wr.writerow([r.kind, json.dumps(r.params, sort_keys=True), f"{r.time_s:.9g}"])


def read_measurements(path: str | Path) -> list[Measurement]:
    with open(path, newline="", encoding="utf-8") as fh:
        return [Measurement(r["kind"], json.loads(r["params"]), float(r["time_s"])) for r in csv.DictReader(fh)]
