"""Fit a profile from the local microbenchmarks (``calibrate.microbench`` rows).

Order: memory (launch overhead, bandwidth) -> dense GEMM table -> the GEMM's row tile (GEMMs at
irregular token counts) -> grouped GEMM -> the effective
cache size (CPUs: grouped GEMMs at expert counts whose weights outgrow the cache) -> attention ->
activation and router top-k (``fit_elementwise``) -> the reference layer's dispatch
(``fit_dispatch``) -> MoE-layer host overhead (the residual of the whole-layer runs after every
kernel and the dispatch are priced).
One point in five (stable hash of its shape) is held out of each fit and scored afterwards through
the ``CostModel`` itself, so the recorded error is the cost model's.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from moesim.calibrate.collectives import fit_collectives, from_measurements
from moesim.calibrate.fit import (
    end_sizes,
    fit_error,
    fit_gemm_table,
    fit_launch_bandwidth,
    fit_nnls,
    held_out,
    log2_nodes,
    round_sig,
    split_held_out,
)
from moesim.calibrate.fit_dispatch import fit_dispatch
from moesim.calibrate.fit_elementwise import fit_elementwise
from moesim.calibrate.microbench import Measurement
from moesim.calibrate.predict import moe_layer_s

from moesim.costmodel import CostModel, cost_model
from moesim.costmodel.profile import (
    AttentionSpec,
    AttentionTable,
    BytesCurve,
    CollectivesSpec,
    FitError,
    GroupedSpec,
    MoEOverheadSpec,
    Profile,
    Reference,
    RowTileSpec,
)
from moesim.schemas import DTYPE_BYTES, HardwareSpec


@dataclass(frozen=True)
class DeviceInfo:
    """What the profile says about where it was measured."""

    name: str
    platform: str  # cuda | mps | cpu
    dtype: str
    framework: dict
    created: str
    source: str
    impl: str  # grouped expert implementation: loop | triton
    datasheet: Reference | None = None  # known peaks (a CUDA device named like a preset)
    cache_bytes: float | None = None  # nominal last-level cache (CPUs); the effective size is fitted


def hardware_for(profile: Profile) -> HardwareSpec:
    """A one-device HardwareSpec for the profile's device (timing fields only are meaningful)."""
    ref = profile.reference
    return HardwareSpec(name=profile.device, device={
        "name": profile.device, "peak_tflops": dict(ref.peak_tflops), "mem_bw_gbps": ref.mem_bw_gbps, "mem_gib": 1.0,
        "power_w": 1.0, "usd_per_hour": 0.0}, node={"devices_per_node": 1, "intra_bw_gbps": ref.mem_bw_gbps})


def _gemm_flops(r: Measurement) -> float:
    p = r.params
    return 2.0 * p.get("experts", 1) * p["m"] * p["n"] * p["k"]


def _reference(rows: list[Measurement], info: DeviceInfo, mem_bw_bytes_s: float) -> Reference:
    """The datasheet when known, else the best GEMM rate and the fitted copy bandwidth."""
    if info.datasheet is not None:
        return info.datasheet
    best = max(_gemm_flops(r) / r.time_s for r in rows if r.kind == "gemm")
    return Reference(peak_tflops={info.dtype: round_sig(best / 1e12 * 1.02, 3)},
                     mem_bw_gbps=round_sig(mem_bw_bytes_s / 1e9, 4))


def fit_memory_part(rows: list[Measurement], curve: bool) -> tuple[float, float, BytesCurve | None]:
    """(launch s, reference bytes/s, efficiency by bytes or None) from copies of growing size.

    ``launch + bytes / bw`` fitted over all copies gives the launch overhead. With ``curve`` (CPUs,
    whose caches make small copies faster) each copy's achieved rate after the launch, as a
    fraction of the best one (the reference), becomes a curve over bytes moved.
    """
    nbytes = np.array([r.params["bytes"] for r in rows], dtype=float)
    t = np.array([r.time_s for r in rows])
    launch_s, bw = fit_launch_bandwidth(nbytes, t)
    if not curve:
        return launch_s, bw, None
    rate = nbytes / np.maximum(t - launch_s, 0.2 * t)
    best = float(rate.max())
    table = fit_gemm_table(nbytes, np.ones_like(nbytes), rate / best, log2_nodes(nbytes, 0.5), [1.0], smooth=0.1)
    return launch_s, best, BytesCurve(bytes=table.tokens, efficiency=table.efficiency[0])


def _eff(flops: np.ndarray, t: np.ndarray, overhead_s, peak: float) -> np.ndarray:
    return flops / (peak * np.maximum(t - overhead_s, 0.2 * t))


def fit_gemm_part(rows: list[Measurement], peak: float, launch_s: float):
    fit, held = split_held_out([r for r in rows if r.kind == "gemm"], lambda r: ((r.params["n"], r.params["k"]), r.params["m"]))
    m = [r.params["m"] for r in fit]
    w = [r.params["n"] * r.params["k"] for r in fit]
    eff = _eff(np.array([_gemm_flops(r) for r in fit]), np.array([r.time_s for r in fit]), launch_s, peak)
    return fit_gemm_table(m, w, eff, log2_nodes(m, 1.0), log2_nodes(w, 1.0), smooth=0.2), fit, held


#: Row tiles tried by ``fit_row_tile``: 1 (no padding) and powers of 2 up to a GPU tile.
ROW_TILES = (1, 2, 4, 8, 16, 32, 64, 128)


def fit_row_tile(rows: list[Measurement], dense: CostModel, dtype: str) -> tuple[RowTileSpec | None, list, list]:
    """The GEMM kernel's row tile from GEMMs at irregular token counts (``gemm_tile`` rows).

    The dense table is measured at powers of 2, where the tile divides the rows. Each candidate
    (``ROW_TILES`` x ``ceil``/``binary`` remainders, ``RowTileSpec``) prices an irregular GEMM as
    the table's GEMM of its padded rows; the one with the least relative error over the fitted
    rows wins (ties: the smaller tile). Returns (spec or None without such rows, fitted, held out).
    """
    tile = [r for r in rows if r.kind == "gemm_tile"]
    if not tile:
        return None, [], []
    fit, held = split_held_out(tile, lambda r: ((r.params["n"], r.params["k"]), r.params["m"]))
    t = np.array([r.time_s for r in fit])

    def rel_err(spec: RowTileSpec) -> float:
        pred = np.array([float(dense.gemm_s(float(spec.padded(r.params["m"])), r.params["n"], r.params["k"], dtype))
                         for r in fit])
        return float(np.sum(((pred - t) / t) ** 2))

    specs = [RowTileSpec(rows=r, remainder=rule) for r in ROW_TILES for rule in ("ceil", "binary")]
    return min(specs, key=rel_err), fit, held


def tile_pred_s(cm: CostModel, r: Measurement, dtype: str) -> float:
    """The cost model's time of one irregular GEMM row (padded by the profile's row tile)."""
    spec = cm.profile.gemm_rows or RowTileSpec()
    return float(cm.gemm_s(float(spec.padded(r.params["m"])), r.params["n"], r.params["k"], dtype))


def fit_grouped_part(rows: list[Measurement], dense: CostModel, dtype: str, per_expert: bool
                     ) -> tuple[GroupedSpec, list, list]:
    """Grouped GEMM: the fewest experts measure hot weights, the most experts cold ones.

    Per-expert cost = (time - launch) / experts. Loop implementations pay per expert a fixed cost
    (slicing, the GEMM's own dispatch) and a copy of its m x n output into place: both are fitted
    to the excess of the hot cost over the dense GEMM of the same shape (its measured time, else
    the table's). The cold cost minus them gives the cold efficiency, measured only while the
    benchmark's activations stay below its weights (``Grid.grouped_points``); past the last cold
    token count a cold expert costs its hot time plus the extra time measured there (streaming the
    weights once costs the same at any token count).
    """
    few, most = expert_range(rows)
    cells: dict[tuple, dict[int, Measurement]] = {}
    for r in rows:
        if r.kind == "grouped" and r.params["experts"] in (few, most):
            cells.setdefault((r.params["m"], r.params["n"], r.params["k"]), {})[r.params["experts"]] = r
    launch_s, peak = dense.launch_s, dense.profile.reference.peak_flops(dtype)
    ends = end_sizes(((n, k), m) for (m, n, k) in cells)  # per weight shape, the fewest and most tokens
    held = {c for c, by_e in cells.items()
            if most in by_e and held_out("grouped", *c) and ((c[1], c[2]), c[0]) not in ends}
    if len(held) == sum(most in by_e for by_e in cells.values()):
        held = set()  # too few cold cells to hold any out

    def per_expert_s(r: Measurement) -> float:
        return max(r.time_s - launch_s, 1e-9) / r.params["experts"]

    # the dense GEMM of the same shape, measured when the grid has it (a table lookup carries the
    # table's few-percent error, as large as the overhead itself at mid token counts)
    twin = {(r.params["m"], r.params["n"], r.params["k"]): r.time_s for r in rows if r.kind == "gemm"}
    hot = [(c, by_e[few]) for c, by_e in cells.items() if few in by_e and c not in held]
    excess = np.array([per_expert_s(r) - twin.get(c, float(dense.gemm_s(*c, dtype)) - launch_s) for c, r in hot])
    o, copy_s = 0.0, 0.0
    if per_expert and hot:
        # fixed + per output element (the copy into place), relative to each expert's time: the big
        # cells' excess is a small difference of two large timings
        t = np.array([per_expert_s(r) for _, r in hot])
        feats = np.column_stack([np.ones(len(hot)), [c[0] * c[1] for c, _ in hot]])
        o, copy_s = (float(x) for x in fit_nnls(feats / t[:, None], excess / t))
    cold = {c: by_e[most] for c, by_e in cells.items() if most in by_e and c not in held}
    m, w, eff = [], [], []
    for (mm, n, k), r in sorted(cold.items()):
        s = per_expert_s(r)
        fixed = o + copy_s * mm * n
        m.append(mm)
        w.append(n * k)
        eff.append(2.0 * mm * n * k / (peak * max(s - fixed, 0.2 * s)))

    def hot_core_s(mm: float, n: int, k: int) -> float:
        return float(dense.gemm_s(mm, n, k, dtype)) - launch_s

    for n, k in sorted({(n, k) for (_, n, k) in cold}):
        last = max(mm for (mm, nn, kk) in cold if (nn, kk) == (n, k))
        # streaming the weights from memory costs about the same extra time at any token count
        extra_s = max(per_expert_s(cold[(last, n, k)]) - o - copy_s * last * n - hot_core_s(last, n, k), 0.0)
        for mm in (x for x in dense.profile.gemm.tokens if x > last):
            m.append(mm)
            w.append(n * k)
            eff.append(min(2.0 * mm * n * k / (peak * (hot_core_s(mm, n, k) + extra_s)), 1.0))
    table = fit_gemm_table(m, w, eff, log2_nodes(m, 1.0), log2_nodes(w, 1.0), smooth=0.2)
    spec = GroupedSpec(efficiency=table, launch_overhead_us=round_sig(launch_s * 1e6),
                       per_expert_overhead_us=round_sig(o * 1e6), copy_ns_per_element=round_sig(copy_s * 1e9))
    fit_rows = [r for c, by_e in cells.items() if c not in held for r in by_e.values()]
    return spec, fit_rows, [r for c in held for r in cells[c].values()]


def expert_range(rows: list[Measurement]) -> tuple[int, int]:
    """(fewest, most) experts of the grouped rows: the hot and the cold end of the grouped fit."""
    es = [r.params["experts"] for r in rows if r.kind == "grouped"]
    return min(es), max(es)


def grouped_bench_bytes(r: Measurement, b: float) -> float:
    """Bytes a grouped benchmark call touches: every expert's weights, its input rows and outputs."""
    p = r.params
    return b * p["experts"] * (p["n"] * p["k"] + p["m"] * (p["n"] + p["k"]))


def grouped_pred_s(cm: CostModel, r: Measurement, dtype: str, b: float) -> float:
    """The cost model's time of one grouped row, told the benchmark's working set."""
    p = r.params
    return float(cm.grouped_gemm_s([p["m"]] * p["experts"], p["n"], p["k"], dtype, grouped_bench_bytes(r, b)))


def fit_cache(rows: list[Measurement], profile: Profile, dtype: str) -> tuple[float | None, list, list]:
    """The effective cache size from grouped GEMMs between the fewest and the most experts.

    Their weights span the cache's edge: below it a grouped GEMM runs at the hot (dense) efficiency,
    above it at the cold (streaming) one, and ``Profile.cold_fraction`` blends the two by working
    set over cache size (``best_cache_bytes``). Returns (cache bytes, fitted rows, held-out rows);
    the nominal size and no rows without such points.
    """
    none = profile.cache_bytes, [], []
    if not any(r.kind == "grouped" for r in rows) or profile.cache_bytes is None or profile.grouped is None:
        return none
    few, most = expert_range(rows)
    mid = [r for r in rows if r.kind == "grouped" and few < r.params["experts"] < most]
    if not mid:
        return none
    fit, held = split_held_out(mid)
    return best_cache_bytes(fit, profile, dtype), fit, held


def best_cache_bytes(points: list[Measurement], profile: Profile, dtype: str) -> float:
    """The cache size that best prices ``points`` (grouped GEMMs at the cache's edge) with the
    profile's hot and cold efficiencies: searched in quarter-octave steps from 1/16 to 2x the
    profile's ``cache_bytes``; the least summed squared relative error wins."""
    b = DTYPE_BYTES[dtype]
    t = np.array([r.time_s for r in points])

    def rel_err(cache: float) -> float:
        trial = profile.model_copy(update={"cache_bytes": cache})
        cm = cost_model(hardware_for(trial), trial)
        pred = np.array([grouped_pred_s(cm, r, dtype, b) for r in points])
        return float(np.sum(((pred - t) / t) ** 2))

    nominal = profile.cache_bytes
    return min((round_sig(nominal * 2.0 ** (x / 4), 4) for x in range(-16, 5)), key=rel_err)


def fit_attention_part(rows: list[Measurement], peak: float, ref_bw: float, b: float,
                       curve: BytesCurve | None = None):
    """Prefill: a compute-efficiency table over (queries, keys). Decode: launch + KV bytes / bandwidth,
    the bandwidth relative to the memory ``curve`` at the batch's bytes when there is one (CPUs)."""
    fit, held = split_held_out([r for r in rows if r.kind.startswith("attn_")],
                       lambda r: ((r.kind, r.params["batch"]), r.params["kv"]))
    dec = [r for r in fit if r.kind == "attn_decode"]
    p = [r.params for r in dec]
    kv_bytes = np.array([b * x["batch"] * x["head_dim"] * x["heads"] * (2.0 * x["kv"] + 2.0) for x in p])
    # bytes over the curve's efficiency: the fitted bandwidth is then the curve's, scaled
    scaled = kv_bytes / (curve.lookup(kv_bytes) if curve is not None else 1.0)
    launch_s, bw = fit_launch_bandwidth(scaled, [r.time_s for r in dec])
    pre = [r for r in fit if r.kind == "attn_prefill"]
    q = np.array([r.params["q"] for r in pre], dtype=float)
    kv = np.array([r.params["kv"] for r in pre], dtype=float)
    flops = 4.0 * pre[0].params["heads"] * pre[0].params["head_dim"] * q * np.maximum(kv - q / 2, 1.0)
    eff = _eff(flops, np.array([r.time_s for r in pre]), launch_s, peak)
    t = fit_gemm_table(q, kv, eff, log2_nodes(q, 1.0), log2_nodes(kv, 1.0), smooth=0.3)
    spec = AttentionSpec(prefill_efficiency=AttentionTable(q_tokens=t.tokens, kv_tokens=t.weight_elems,
                                                           efficiency=t.efficiency),
                         decode_memory_efficiency=round_sig(min(bw / ref_bw, 1.0)),
                         launch_overhead_us=round_sig(launch_s * 1e6))
    return spec, fit, held


def layer_pred_s(cm: CostModel, r: Measurement, dtype: str, loop: bool = True) -> float:
    """The cost model's time of one measured layer point (through ``predict.moe_layer_s``)."""
    p = r.params
    return moe_layer_s(cm, p["tokens"], p["d_model"], p["ffn"], p["experts"], p["top_k"], p["counts"],
                       dtype=dtype, capacity=p["capacity_factor"] is not None, loop=loop)


def _fit_overhead(fit: list[Measurement], cm: CostModel, dtype: str, loop: bool) -> tuple[MoEOverheadSpec, float]:
    """NNLS of the residual on [1, busy experts, capacity enforced, computed assignments], relative
    to the layer time."""
    resid = np.array([r.time_s - layer_pred_s(cm, r, dtype, loop) for r in fit])
    busy = np.array([np.count_nonzero(r.params["counts"]) for r in fit], dtype=float)
    cap = np.array([r.params["capacity_factor"] is not None for r in fit], dtype=float)
    kept = np.array([np.sum(r.params["counts"]) for r in fit], dtype=float)
    t = np.array([r.time_s for r in fit])
    x = np.column_stack([np.ones_like(busy), busy, cap, kept]) / t[:, None]
    c = fit_nnls(x, resid / t)
    err = float(np.sum((x @ c - resid / t) ** 2))
    return MoEOverheadSpec(fixed_us=round_sig(c[0] * 1e6), per_busy_expert_us=round_sig(c[1] * 1e6),
                           capacity_us=round_sig(c[2] * 1e6), per_assignment_us=round_sig(c[3] * 1e6)), err


def fit_moe_overhead(rows: list[Measurement], profile: Profile, dtype: str, loop: bool = True,
                     search_cache: bool = True):
    """The layer's host overhead, and (with a cache and ``search_cache``) the effective cache size,
    from whole-layer runs.

    The whole layer costs more than its kernels and its dispatch timed alone: each of its many
    small ops runs after other ops' code and data rather than after itself. That is a fixed cost,
    one per busy expert (the loop's ops), one per computed assignment (the gathered and scattered
    rows run cold in place) and one more with a capacity (its extra ops, torch and numpy), fitted
    to the residual by relative NNLS. The effective cache is searched in
    half-octave steps from 1/16 to 2x the nominal size; each candidate gets its best overhead, and
    the pair with the least relative error wins. Without ``search_cache`` (the size already fitted
    by ``fit_cache``) only the overhead is fitted.
    """
    fit, held = split_held_out([r for r in rows if r.kind == "layer"])
    nominal = profile.cache_bytes
    candidates = [round_sig(nominal * 2.0 ** (x / 2), 4) for x in range(-8, 3)] if nominal and search_cache else [nominal]
    best = None
    for cache in candidates:
        trial = profile.model_copy(update={"cache_bytes": cache})
        spec, err = _fit_overhead(fit, cost_model(hardware_for(trial), trial), dtype, loop)
        if best is None or err < best[0]:
            best = (err, cache, spec)
    _, cache, spec = best
    return spec, cache, fit, held


def fit_profile(rows: list[Measurement], info: DeviceInfo) -> Profile:
    """Every fitted part, then the held-out error of each through the CostModel."""
    b = DTYPE_BYTES[info.dtype]
    copy_fit, copy_held = split_held_out([r for r in rows if r.kind == "copy"], lambda r: (None, r.params["bytes"]))
    launch_s, bw, mem_curve = fit_memory_part(copy_fit, curve=info.platform == "cpu")
    ref = _reference(rows, info, bw)
    peak, ref_bw = ref.peak_flops(info.dtype), ref.mem_bw_gbps * 1e9
    gemm, gemm_fit, gemm_held = fit_gemm_part(rows, peak, launch_s)
    profile = Profile(
        device=info.name, platform=info.platform, source=info.source, created=info.created,
        framework=info.framework, dtype=info.dtype, reference=ref, launch_overhead_us=round_sig(launch_s * 1e6),
        memory_efficiency=round_sig(min(bw / ref_bw, 1.0) if mem_curve is None else mem_curve.efficiency[-1]),
        memory_curve=mem_curve, gemm=gemm, cache_bytes=info.cache_bytes,
        gemm_memory_efficiency=None if info.platform == "cpu" else 1.0,
        notes=[f"grouped expert GEMM implementation: {info.impl}",
               ("moe_overhead: residual of whole-layer runs (kernels.moe_ref.moe_forward) after "
                "moesim.calibrate.predict.moe_layer_s prices every kernel and the measured dispatch")],
    )
    dense = cost_model(hardware_for(profile), profile)
    row_tile, tile_fit, tile_held = fit_row_tile(rows, dense, info.dtype)
    grouped, grp_fit, grp_held = fit_grouped_part(rows, dense, info.dtype, info.impl == "loop")
    profile = profile.model_copy(update={"grouped": grouped, "gemm_rows": row_tile})
    cache, mid_fit, mid_held = fit_cache(rows, profile, info.dtype)
    attention, att_fit, att_held = fit_attention_part(rows, peak, ref_bw, b, mem_curve)
    elementwise, elementwise_errors = fit_elementwise(rows)
    dispatch, dispatch_error = fit_dispatch(rows)
    profile = profile.model_copy(update={"attention": attention, "elementwise": elementwise, "cache_bytes": cache,
                                         "dispatch": dispatch})
    loop = info.impl == "loop"
    overhead, cache, lay_fit, lay_held = fit_moe_overhead(rows, profile, info.dtype, loop, search_cache=not mid_fit)
    profile = profile.model_copy(update={"moe_overhead": overhead, "cache_bytes": cache})
    cm = cost_model(hardware_for(profile), profile)
    errors: dict[str, FitError] = {
        "memory": fit_error([float(cm.memory_s(r.params["bytes"])) for r in copy_held],
                            [r.time_s for r in copy_held], len(copy_fit)),
        "gemm": fit_error([float(cm.gemm_s(r.params["m"], r.params["n"], r.params["k"], info.dtype)) for r in gemm_held],
                          [r.time_s for r in gemm_held], len(gemm_fit)),
        "grouped": fit_error([float(cm.grouped_gemm_s([r.params["m"]] * r.params["experts"], r.params["n"],
                                                      r.params["k"], info.dtype)) for r in grp_held]
                             + [grouped_pred_s(cm, r, info.dtype, b) for r in mid_held],
                             [r.time_s for r in grp_held + mid_held], len(grp_fit) + len(mid_fit)),
        "attention": fit_error([float(cm.attention_batch_s(np.full(r.params["batch"], r.params["q"]),
                                                           np.full(r.params["batch"], r.params["kv"]), r.params["heads"],
                                                           r.params["head_dim"], r.params["heads"], info.dtype,
                                                           causal=r.kind == "attn_prefill")) for r in att_held],
                               [r.time_s for r in att_held], len(att_fit)),
        **({"gemm_rows": fit_error([tile_pred_s(cm, r, info.dtype) for r in tile_held], [r.time_s for r in tile_held],
                                   len(tile_fit))} if tile_fit else {}),
        **elementwise_errors,
        **({"dispatch": dispatch_error} if dispatch_error is not None else {}),
        "moe_layer": fit_error([layer_pred_s(cm, r, info.dtype, loop) for r in lay_held], [r.time_s for r in lay_held],
                               len(lay_fit)),
    }
    coll = from_measurements(rows)
    if coll:
        ranks = sorted({r.ranks for r in coll})
        backend = "nccl" if info.platform == "cuda" else "gloo"
        try:
            specs, coll_errors = fit_collectives(coll)
        except ValueError as exc:
            profile = profile.model_copy(update={"notes": profile.notes + [f"collectives not fitted: {exc}"]})
        else:
            errors.update(coll_errors)
            note = (f"collectives: {', '.join(specs)} through torch.distributed {backend} over "
                    f"{'/'.join(map(str, ranks))} local processes (calibrate.collectives); all_to_all prices "
                    "intra-node EP all-to-all")
            profile = profile.model_copy(update={"collectives": CollectivesSpec(**specs),
                                                 "notes": profile.notes + [note]})
    return profile.model_copy(update={"fit_error": errors})
