"""Grouped-GEMM (MoE expert) efficiency vs tokens per expert and expert shape, from published kernels.

A routed-expert layer runs one grouped GEMM: expert ``e`` multiplies its ``t_e`` tokens,
``(t_e x k) @ (k x n)``. A grouped kernel loses against a dense GEMM of the same ``(t_e, n, k)``
mostly through **row padding**: every expert's rows are computed in whole MMA slices of ``tile_m``
rows, so ``ceil(t / tile_m) * tile_m`` rows of tensor-core work are paid for ``t`` useful ones.
While the expert's weight read dominates (few tokens) the padding hides behind it; once compute
dominates the loss is the padding fraction. This module prices that, per expert:

    pad(t)      = ceil(t / tile_m) * tile_m                                   rows
    T_c(rows)   = 2 * rows * n * k / (peak_flops * compute_fraction)          s
    T_m(t)      = (n*k*weight_bytes + t*k*act_bytes + t*n*out_bytes) / (mem_bw * memory_fraction)   s
    T_grouped   = smax(T_c(pad(t)), T_m(t)) + per_group_s                      s per busy expert
    T_dense     = smax(T_c(pad(t, dense_tile_m)), T_m(t))                      s (same expert, dense GEMM)
    smax(a, b)  = (a**q + b**q) ** (1/q)          (q = ``overlap``; q -> inf is the hard roofline max)

and ``grouped_gemm_ratio = T_dense / T_grouped`` in (0, 1]: multiply a *dense* per-expert efficiency
by it to get the grouped one. A kernel adds ``KERNEL_LATENCY_US`` once per launch (fit only; the cost
model's launch overhead plays that part).

Units: tokens are rows (float or int arrays, any shape; the last axis is experts where a sum is
taken), ``n``/``k`` elements, ``peak_flops`` FLOP/s of the compute dtype, ``mem_bw`` bytes/s,
``*_bytes`` bytes per element, times seconds.

Data: ``moesim/data/grouped_gemm.csv`` -- 44 published DeepGEMM SM90 FP8 points (H800 README
tables, dense and grouped; H100 and H20 masked-layout runs from DeepGEMM pull-request threads), each
row citing its source. ``fit_points`` refits the constants below on the rows marked ``fit`` (30);
the 14 ``holdout`` rows (every H100 row, the H20 rows of another thread, the H800 2- and 8-group rows)
are never seen by the fit: held-out |time error| median 5.8 %, p90 11 %, max 15 % (fit rows: median
7.7 %, p90 19 %, max 25 %, the worst being small dense GEMMs whose shape effects the dense table carries anyway).
The same fit without padding (``tile_m = 1``) misses the held-out H20 rows by up to 34 %, and with
``tile_m = 128`` by up to 57 %: the 64-row granularity is what the data show.

Datasheet figures in the CSV (``peak_tflops``, ``mem_bw_gbps``): H100 SXM5 FP8 dense 1978.9 TFLOPS,
3350 GB/s (https://glennklockwood.com/garden/processors/h100, as moesim/presets/hardware.py); H800
SXM5 taken equal to the H100 SXM5 (the same part with cut NVLink: an assumption, no H800 sheet was
at hand); H20 FP8 296 TFLOPS (its INT8 rate; Hopper's FP8 and INT8 rates are equal), 4000 GB/s,
78 SMs (https://willitrunai.com/es/gpus/h20-96gb, https://zangshuxian.com/new/674733024499207168).

What transfers to other devices and dtypes:
  * the padding arithmetic is exact and device-agnostic; ``tile_m`` is the kernel's row granularity
    (64 = one Hopper WGMMA warpgroup, which DeepGEMM computes in since PR #103 skips empty
    warpgroup slices; CUTLASS grouped and DeepGEMM contiguous layouts align experts to 128;
    Triton fused-MoE picks BLOCK_SIZE_M 16..128 per batch size);
  * where padding starts to show is the ridge ``peak * compute_fraction * weight_bytes /
    (2 * mem_bw * memory_fraction)`` tokens, taken from the *target* device and dtype (about 200 on
    H100 for both FP8 and BF16, about 100 on A100 BF16);
  * ``COMPUTE_FRACTION`` (0.63 of the H800/H100 FP8 datasheet peak; 0.80 of the H20's export-capped
    296 TFLOPS) is kernel- and chip-specific and does NOT transfer from H800 FP8 to A100 BF16: pass
    the target's saturated dense efficiency instead;
    ``MEMORY_FRACTION`` (0.92) happens to match the H100 profile's ``gemm_memory_efficiency``;
    ``OVERLAP`` (q = 2: compute and weight streaming overlap imperfectly near the ridge) comes from
    warp-specialised TMA kernels and may be harder (larger q) or softer on Ampere cp.async kernels;
  * no per-group overhead is resolved: the fit puts it at 0, and forcing 1 us (2 us) per group
    worsens the held-out rms log error from 0.072 to 0.086 (0.132) (DeepGEMM's persistent scheduler pays none visibly; looped or
    pointer-array kernels that rebuild TMA descriptors per group may, see ``PER_GROUP_US``).
  * the 8-group contiguous H800 rows ran 4-6 % *faster* than the same-source dense GEMM of the same
    per-expert shape (more tiles fill the 132 SMs better); the model says equal (ratio 1).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from moesim.costmodel.published import data_path, read_table

#: The published points (CSV with ``#`` comment lines above the header).
DATA_CSV = data_path("grouped_gemm.csv")

TILE_M = 64
"""Rows per MMA slice a grouped kernel computes in (default): one Hopper WGMMA warpgroup (m64).
DeepGEMM's SM90 heuristic picks CTA tiles of 64/128/256 rows, but since deepseek-ai/DeepGEMM PR #103
(commit 8dfa329, "skip useless computation for unaligned Ms") a warpgroup whose 64 rows are all
padding skips its MMAs; the H100 16 x ~160-token rows (229 us; 128-row padding would need 97 % of
the datasheet peak) and the fits with 1 or 128 (see above) confirm 64. Not fitted."""

#: Rows a weight-only grouped kernel pads each expert's tokens to, on any device: Marlin-family MoE
#: kernels dequantize in registers and run Ampere's mma.sync m16n8k16 (16 rows) on Hopper too;
#: vLLM's ``fused_marlin_moe`` sorts tokens into blocks of 8-64 rows, the smallest that holds an
#: expert's mean load (``for block_size_m in [8, 16, 32, 48, 64]``), so small decode loads pad to 16.
WEIGHT_ONLY_TILE_M = 16


def expert_tiles(tile_tokens: int | None, matvec_tokens: int, batch_tokens):
    """Rows each expert's tokens are padded to by a device's own grouped kernels, per batch (array
    of ``batch_tokens``'s shape), or None when the device has none (``tile_tokens`` None).

    Batches of at most ``matvec_tokens`` tokens run matrix-vector kernels: no padding (1). Larger ones
    run a matrix-matrix kernel whose token tile is ``min(tile_tokens, batch rounded up to 8)``:
    llama.cpp's CUDA MMQ picks ``mmq_x`` in steps of 8 up to 128 by the batch's tokens (``ncols_max``
    is the batch, ggml/src/ggml-cuda/mmq.cu and mmq.cuh ``mul_mat_q_case``) and walks each expert's
    rows in tiles of it; its Metal mul_mm_id computes 32-token tiles (``BLOCK_SIZE_N 32``) from 32
    tokens up (``ne21_mm_id_min``, ggml/src/ggml-metal/ggml-metal-ops.cpp).
    """
    if tile_tokens is None:
        return None
    b = np.asarray(batch_tokens, dtype=float)
    tile = np.minimum(float(tile_tokens), np.maximum(np.ceil(b / 8.0) * 8.0, 1.0))
    return np.where(b <= matvec_tokens, 1.0, tile)


def expected_padded_tokens(tokens_per_expert, batch_tokens, tiles) -> np.ndarray:
    """Rows each expert computes on average when its tokens are padded to its batch's tile.

    ``tokens_per_expert`` ``(..., experts)`` are expected loads of a batch of ``batch_tokens`` ``(...)``
    tokens that each pick an expert independently, so an expert's load is Binomial(batch, t / batch)
    and it computes ``E[ceil(X / T) * T] = T * sum_j P(X > j T)`` rows (``scipy.stats.binom``):
    more than its mean whenever loads scatter around a tile boundary (64 expected rows in 128-row
    tiles cost 128; 128 expected cost about 1.5 tiles). ``tiles`` ``(...)``: from :func:`expert_tiles`
    (1: no padding, the mean itself). 0 stays 0.
    """
    t = np.maximum(np.asarray(tokens_per_expert, dtype=float), 0.0)
    tile = np.broadcast_to(np.asarray(tiles, dtype=float)[..., None], t.shape)
    n = np.broadcast_to(np.rint(np.asarray(batch_tokens, dtype=float))[..., None], t.shape)
    tiled = (tile > 1) & (t > 0)
    if not tiled.any():
        return t
    if t.ndim and t.shape[-1] > 1 and np.all(t == t[..., :1]):  # a uniform table: one load per row
        return np.broadcast_to(expected_padded_tokens(t[..., :1], batch_tokens, tiles), t.shape).copy()
    out = t.copy()
    out[tiled] = _expected_padded(t[tiled], np.maximum(n[tiled], np.ceil(t[tiled])), tile[tiled])
    return out


def _expected_padded(mean, n, tile) -> np.ndarray:
    """``T * sum_j P(X > j T)`` for X ~ Binomial(n, mean / n), elementwise over 1-d arrays.

    Only the terms within 12 standard deviations of the mean are computed (below it each is 1, above
    it 0, to ~1e-30). Where the spread is at least a tile, the remainder mod T is uniform and the
    padding is ``mean + (T - 1) / 2`` (the exact sum agrees to well under 1 %)."""
    from scipy.stats import binom  # local: only devices with their own expert tiles need it

    p = np.clip(mean / np.maximum(n, 1.0), 0.0, 1.0)
    sd = np.sqrt(mean * (1.0 - p))
    out = mean + (tile - 1.0) / 2.0
    exact = sd < tile
    if exact.any():
        m, nn, pp, tt, ss = mean[exact], n[exact], p[exact], tile[exact], sd[exact]
        lo = np.floor(np.maximum(m - 12.0 * ss - 1.0, 0.0) / tt)
        hi = np.ceil(np.minimum(m + 12.0 * ss + 1.0, nn) / tt)
        j = lo + np.arange(int(np.max(hi - lo)) + 1, dtype=float)[:, None]
        terms = np.where(j <= hi, binom.sf(j * tt, nn, pp), 0.0)  # one vectorised call
        out[exact] = tt * (lo + terms.sum(axis=0))
    return out


def tile_rows(mma_rows: int, weight_only: bool) -> int:
    """Rows a grouped GEMM pads each expert to: the device's MMA rows (``hardware.device.mma_rows``),
    at most :data:`WEIGHT_ONLY_TILE_M` when the weights run weight-only."""
    return min(mma_rows, WEIGHT_ONLY_TILE_M) if weight_only else mma_rows


COMPUTE_FRACTION = 0.628
"""Fraction of the datasheet dense peak the MMA pipeline sustains at full tiles, H800/H100 FP8
(DeepGEMM, 1x128/128x128 block scales). Fitted on the H800 README rows; the H20 rows fit 0.801
(``H20_COMPUTE_FRACTION``). Chip- and kernel-specific: pass the target's saturated dense efficiency."""

H20_COMPUTE_FRACTION = 0.801
"""The H20's compute fraction of its 296 TFLOPS FP8 datasheet figure (fitted on DeepGEMM PR #192's
H20 rows); kept only to reproduce the fit."""

MEMORY_FRACTION = 0.919
"""Fraction of the datasheet HBM bandwidth the weight/activation stream sustains. Fitted (all chips)."""

OVERLAP = 1.99
"""Exponent q of the smooth roofline max ``(a**q + b**q)**(1/q)``: 2 means compute and memory time
overlap imperfectly near the ridge (the H800 1/2/4-group masked rows at a fixed 1024 tokens lose
up to 24 % of their TFLOPS as the weights read grow 4x). Fitted."""

KERNEL_LATENCY_US = 2.63
"""Fixed in-kernel time per launch (prologue, pipeline fill, epilogue), us, kineto-timed. Fitted;
used only to reproduce the published times -- not part of the ratio (the dense table and the cost
model's launch overhead already hold it)."""

PER_GROUP_US = 0.0
"""Extra time per busy expert (group) inside one grouped kernel, us. Fitted at its bound 0;
forcing 1 us or more clearly worsens the held-out rows. The cost model's
``GroupedSpec.per_expert_overhead_us`` is the place for a measured one (do not pass both)."""

FP8_ACT_BYTES = 1.0 + 4.0 / 128.0
"""FP8 activation bytes per element with one fp32 scale per 1x128 block (DeepGEMM's layout)."""


def padded_tokens(tokens, tile_m=TILE_M) -> np.ndarray:
    """Rows a grouped kernel computes for ``tokens`` rows: ``ceil(t / tile_m) * tile_m`` (0 stays 0;
    ``tile_m`` a number or an array broadcasting against ``tokens``; a tile of 1 or less pads nothing)."""
    t = np.maximum(np.asarray(tokens, dtype=float), 0.0)
    tile = np.asarray(tile_m, dtype=float)
    return np.where(tile > 1, np.ceil(t / np.maximum(tile, 1.0)) * tile, t)


def smooth_max(a, b, q: float = OVERLAP) -> np.ndarray:
    """``(a**q + b**q) ** (1/q)`` for non-negative ``a``, ``b``; the hard max as ``q`` grows."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    top = np.maximum(np.maximum(a, b), 1e-300)
    return top * ((a / top) ** q + (b / top) ** q) ** (1.0 / q)


def expert_gemm_s(tokens, n: int, k: int, *, peak_flops: float, mem_bw: float, tile_m: float = TILE_M,
                  weight_bytes: float = 2.0, act_bytes: float = 2.0, out_bytes: float = 2.0,
                  compute_fraction: float = COMPUTE_FRACTION, memory_fraction: float = MEMORY_FRACTION,
                  overlap: float = OVERLAP) -> np.ndarray:
    """Seconds one expert's ``(t x k) @ (k x n)`` takes inside a grouped kernel, rows padded to
    ``tile_m`` (``tile_m=1``: a dense GEMM). Same shape as ``tokens``; 0 where ``t <= 0``."""
    t = np.maximum(np.asarray(tokens, dtype=float), 0.0)
    compute = 2.0 * padded_tokens(t, tile_m) * float(n) * float(k) / (peak_flops * compute_fraction)
    moved = float(n) * float(k) * weight_bytes + t * (float(k) * act_bytes + float(n) * out_bytes)
    memory = moved / (mem_bw * memory_fraction)
    return np.where(t > 0, smooth_max(compute, memory, overlap), 0.0)


def grouped_gemm_s(tokens_per_expert, n: int, k: int, *, per_group_s: float = PER_GROUP_US * 1e-6,
                   latency_s: float = KERNEL_LATENCY_US * 1e-6, **kw) -> np.ndarray:
    """Seconds of one grouped GEMM over the last axis (experts) of ``tokens_per_expert`` (shape
    ``(..., E)`` -> ``(...)``): per-expert padded roofline summed, ``per_group_s`` per busy expert,
    ``latency_s`` once when any expert is busy. ``kw`` as for ``expert_gemm_s``."""
    t = np.asarray(tokens_per_expert, dtype=float)
    busy = (t > 0).sum(axis=-1)
    body = expert_gemm_s(t, n, k, **kw).sum(axis=-1) + busy * per_group_s
    return np.where(busy > 0, body + latency_s, 0.0)


def grouped_gemm_ratio(tokens_per_expert, n: int, k: int, *, peak_flops: float, mem_bw: float,
                       tile_m: float = TILE_M, dense_tile_m: float = 1.0, per_group_s: float = 0.0,
                       **kw) -> np.ndarray:
    """Grouped over dense efficiency of each expert's GEMM, in (0, 1]: dense time / grouped time.

    ``tokens_per_expert``: rows per expert, any shape (returned shape). ``n``, ``k``: the expert's
    output and reduction sizes. ``peak_flops`` (FLOP/s of the compute dtype) and ``mem_bw`` (bytes/s)
    of the target device set where padding stops hiding behind the weight read. ``dense_tile_m``: the
    row granularity credited to the dense reference (1 = none; a measured dense table already holds
    its own kernel's padding, averaged). ``per_group_s``: per-expert overhead to include (default 0,
    see ``PER_GROUP_US``). ``kw``: bytes per element and fitted fractions, as for ``expert_gemm_s``.
    Idle experts (``t <= 0``) get 1. Tends to 1 as ``t`` grows; exactly ``t / pad(t)`` when compute-bound.
    """
    t = np.asarray(tokens_per_expert, dtype=float)
    dense = expert_gemm_s(t, n, k, peak_flops=peak_flops, mem_bw=mem_bw, tile_m=dense_tile_m, **kw)
    grouped = expert_gemm_s(t, n, k, peak_flops=peak_flops, mem_bw=mem_bw, tile_m=tile_m, **kw) + per_group_s
    return np.where(t > 0, dense / np.where(t > 0, grouped, 1.0), 1.0)


# --- the published points and the fit --------------------------------------------------------------

_NUMERIC = ("num_sms", "peak_tflops", "mem_bw_gbps", "groups", "m_per_group", "m_exact", "n", "k", "tflops",
            "time_us", "gbps", "dense_tflops", "tile_m")


def load_points(path: Path | str = DATA_CSV) -> dict[str, np.ndarray]:
    """The CSV as column arrays (numeric columns float, blank -> nan; others str), plus
    ``time_s``: the published time, or ``2*groups*m*n*k / tflops`` where only TFLOPS were published."""
    rows = read_table(path)
    cols = {c: np.array([r[c] for r in rows]) for c in rows[0]}
    for c in _NUMERIC:
        cols[c] = np.array([float(v) if v.strip() else np.nan for v in cols[c]])
    derived = 2.0 * cols["groups"] * cols["m_per_group"] * cols["n"] * cols["k"] / (cols["tflops"] * 1e12)
    cols["time_s"] = np.where(np.isnan(cols["time_us"]), derived, cols["time_us"] * 1e-6)
    return cols


SHIPPED = dict(compute_fraction=COMPUTE_FRACTION, h20_compute_fraction=H20_COMPUTE_FRACTION,
               memory_fraction=MEMORY_FRACTION, overlap=OVERLAP, latency_us=KERNEL_LATENCY_US,
               per_group_us=PER_GROUP_US)
"""The fitted constants under the names ``predict_points``/``fit_points`` use."""


def predict_points(pts: dict[str, np.ndarray], params: dict[str, float] = SHIPPED,
                   tile_m: np.ndarray | float | None = None) -> np.ndarray:
    """Model seconds for each published point (``tile_m`` overrides the CSV's column)."""
    tile = pts["tile_m"] if tile_m is None else np.broadcast_to(np.asarray(tile_m, dtype=float), pts["n"].shape)
    frac = np.where(pts["device"] == "H20", params["h20_compute_fraction"], params["compute_fraction"])
    out = np.empty(pts["n"].shape)
    for i in range(out.size):
        act = FP8_ACT_BYTES if pts["dtype"][i].startswith("fp8") else 2.0
        wb = 1.0 if pts["dtype"][i].startswith("fp8") else 2.0
        tokens = np.full(int(pts["groups"][i]), pts["m_per_group"][i])
        out[i] = grouped_gemm_s(tokens, int(pts["n"][i]), int(pts["k"][i]), peak_flops=pts["peak_tflops"][i] * 1e12,
                                mem_bw=pts["mem_bw_gbps"][i] * 1e9, tile_m=float(tile[i]), weight_bytes=wb,
                                act_bytes=act, out_bytes=2.0, compute_fraction=float(frac[i]),
                                memory_fraction=params["memory_fraction"], overlap=params["overlap"],
                                per_group_s=params["per_group_us"] * 1e-6, latency_s=params["latency_us"] * 1e-6)
    return out


def relative_errors(pts: dict[str, np.ndarray], params: dict[str, float] = SHIPPED, tile_m=None) -> np.ndarray:
    """predicted / published time - 1, per point."""
    return predict_points(pts, params, tile_m) / pts["time_s"] - 1.0


def fit_points(pts: dict[str, np.ndarray] | None = None, tile_m=None) -> dict[str, float]:
    """Least-squares fit (in log time) of the constants on the rows whose ``split`` is ``fit``.

    Six parameters: compute fractions (H800/H100, H20), memory fraction, overlap exponent, kernel
    latency, per-group overhead; bounded to physical ranges. Uses scipy (imported here only).
    """
    from scipy.optimize import least_squares

    pts = load_points() if pts is None else pts
    mask = pts["split"] == "fit"
    sub = {c: v[mask] for c, v in pts.items()}
    names = ("compute_fraction", "h20_compute_fraction", "memory_fraction", "overlap", "latency_us", "per_group_us")

    def resid(x):
        return np.log(predict_points(sub, dict(zip(names, x, strict=True)), tile_m) / sub["time_s"])

    res = least_squares(resid, x0=[0.7, 0.8, 0.8, 3.0, 3.0, 0.5],
                        bounds=([0.05, 0.05, 0.05, 1.0, 0.0, 0.0], [1.0, 1.5, 1.0, 30.0, 50.0, 50.0]))
    return dict(zip(names, (float(v) for v in res.x), strict=True))
