"""Fit the shipped A100/H100 default profiles from real Vidur measurements.

    python -m moesim.calibrate.fit_vidur [--data DIR] [--out DIR]

``--data`` defaults to ``../shared/measurements/gpu-kernels-vidur`` beside the checkout; ``--out`` to
``moesim/data/profiles``. Source: github microsoft/vidur ``data/profiling`` (commit 7d47513, MIT
licence; the attention file from commit 44bc599). One row in five (stable hash) is held out of every
fit; the profile records the error of the fitted cost model on those rows.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import sys
from pathlib import Path

import numpy as np
from moesim.calibrate.fit import (
    fit_error,
    fit_gemm_table,
    fit_launch_bandwidth,
    fit_relative_nnls,
    held_out,
    log2_nodes,
    round_sig,
)
from moesim.calibrate.vidur_data import (
    AttnRow,
    CollRow,
    GemmRow,
    MemRow,
    attention_rows,
    collective_rows,
    mlp_rows,
)

from moesim.costmodel import cost_model
from moesim.costmodel.attention_floor import HOPPER_ATTENTION_FIXED_US
from moesim.costmodel.comm import p2p_s, ring_allreduce_s
from moesim.costmodel.profile import (
    AttentionSpec,
    AttentionTable,
    CollectiveSpec,
    CollectivesSpec,
    FitError,
    LinkSpec,
    Profile,
    Reference,
    save_profile,
)
from moesim.costmodel.roofline import gemm_flops
from moesim.presets import HARDWARE
from moesim.schemas import HardwareSpec

BF16 = 2.0
SOURCE = "microsoft/vidur data/profiling @7d47513 (attention @44bc599), MIT licence; fit by calibrate.fit_vidur"
REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO_ROOT.parent / "shared" / "measurements" / "gpu-kernels-vidur"
DEFAULT_OUT = REPO_ROOT / "moesim" / "data" / "profiles"

#: device key -> (hardware preset the datasheet comes from, network folder)
DEVICES: dict[str, tuple[str, str]] = {"a100": ("a100-80gb", "a100_dgx"), "h100": ("h100-sxm", "h100_dgx")}
#: Training's flash attention per device: the published kernel table (costmodel/flash_attention.py) of the
#: kernel its training stacks run (FlashAttention-2 on Ampere; cuDNN, via Transformer Engine, on Hopper).
FLASH_ATTENTION: dict[str, str] = {"a100": "fa2-a100", "h100": "cudnn-h100"}
#: A device without Vidur attention timings: a serving attention call's fixed GPU time, us, published
#: elsewhere (moesim/costmodel/attention_floor.py).
ATTENTION_FIXED_US: dict[str, float] = {"h100": HOPPER_ATTENTION_FIXED_US}


def _split(rows):
    fit = [r for r in rows if not held_out(*r.key)]
    held = [r for r in rows if held_out(*r.key)]
    return fit, held


def fit_memory(rows: list[MemRow], ref_bw_gbps: float) -> tuple[float, float, FitError]:
    """(launch us, memory efficiency, held-out error) of ``t = launch + bytes / (bw * eff)``."""
    fit, held = _split(rows)
    launch_s, bw = fit_launch_bandwidth([r.bytes for r in fit], [r.time_s for r in fit])
    eff = min(bw / (ref_bw_gbps * 1e9), 1.0)
    pred = [launch_s + r.bytes / (ref_bw_gbps * 1e9 * eff) for r in held]
    return launch_s * 1e6, eff, fit_error(pred, [r.time_s for r in held], len(fit))


def gemm_efficiency_rows(rows: list[GemmRow], peak_flops: float, launch_s: float) -> np.ndarray:
    """Achieved fraction of peak per GEMM row, after taking off the launch overhead."""
    t = np.array([r.time_s for r in rows])
    work_s = np.maximum(t - launch_s, 0.2 * t)
    return np.array([gemm_flops(r.m, r.n, r.k) for r in rows]) / (peak_flops * work_s)


def gemm_table(rows: list[GemmRow], peak_flops: float, launch_s: float):
    """GEMM efficiency table on nodes every half octave of m and every octave of n*k.

    Finer nodes fit held-out rows of the same matrices slightly better but generalise worse to an
    unseen model's matrices (checked by ``unseen_model_error``).
    """
    eff = gemm_efficiency_rows(rows, peak_flops, launch_s)
    m = [r.m for r in rows]
    w = [r.n * r.k for r in rows]
    return fit_gemm_table(m, w, eff, log2_nodes(m, 0.5), log2_nodes(w, 1.0), smooth=0.3)


def gemm_streaming_efficiency(rows: list[GemmRow], ref_bw_gbps: float) -> float:
    """The largest bytes / (time * reference bandwidth) of any GEMM: the memory floor never binds on
    the device measured, and scales with bandwidth on a sibling device."""
    frac = [BF16 * (r.n * r.k + r.m * (r.n + r.k)) / (r.time_s * ref_bw_gbps * 1e9) for r in rows]
    return min(max(frac), 1.0)


def fit_gemm(rows: list[GemmRow], peak_flops: float, launch_s: float):
    """The GEMM efficiency table from the fit rows; returns (table, fit rows, held-out rows)."""
    fit, held = _split(rows)
    return gemm_table(fit, peak_flops, launch_s), fit, held


def unseen_model_error(profile: Profile, hw: HardwareSpec, rows: list[GemmRow], model: str) -> FitError:
    """Error on every GEMM of ``model`` when the table is fitted without that model's rows."""
    fit = [r for r in rows if r.key[0] != model]
    held = [r for r in rows if r.key[0] == model]
    table = gemm_table(fit, profile.reference.peak_flops("bf16"), profile.launch_overhead_us * 1e-6)
    cm = cost_model(hw, profile.model_copy(update={"gemm": table}))
    return fit_error([float(cm.gemm_s(r.m, r.n, r.k)) for r in held], [r.time_s for r in held], len(fit))


def fit_attention(rows: list[AttnRow], peak_flops: float, ref_bw: float) -> tuple[AttentionSpec, list, list]:
    """Decode: launch + KV bytes / (bw * eff); prefill: compute efficiency vs (chunk, keys)."""
    fit, held = _split(rows)
    dec = [r for r in fit if not r.prefill]
    kv_bytes = [2.0 * 2 * r.batch * r.kv * r.kv_heads * r.head_dim for r in dec]
    launch_s, bw = fit_launch_bandwidth(kv_bytes, [r.time_s for r in dec])
    pre = [r for r in fit if r.prefill]
    flops = np.array([4.0 * r.n_heads * r.head_dim * r.q * max(r.kv - r.q / 2, 1.0) for r in pre])
    t = np.array([r.time_s for r in pre])
    eff = flops / (peak_flops * np.maximum(t - launch_s, 0.2 * t))
    q, kv = [r.q for r in pre], [r.kv for r in pre]
    t = fit_gemm_table(q, kv, eff, log2_nodes(q, 0.5), log2_nodes(kv, 0.5))
    table = AttentionTable(q_tokens=t.tokens, kv_tokens=t.weight_elems, efficiency=t.efficiency)
    # Vidur profiles vLLM's attention (block_size 16 in the file): a paged-KV serving kernel, which
    # prices serving only (training runs flash attention over contiguous Q/K/V)
    spec = AttentionSpec(prefill_efficiency=table,
                         decode_memory_efficiency=round_sig(min(bw / ref_bw, 1.0)),
                         launch_overhead_us=round_sig(launch_s * 1e6), kernel="paged")
    return spec, fit, held


def fit_link(rows: list[CollRow], ring: bool) -> LinkSpec:
    """Alpha-beta of one link: ring all-reduce terms, or send/recv ``latency + bytes / bw``."""
    if ring:
        x = np.array([[2 * (r.n - 1) / r.n * r.size, 2 * (r.n - 1)] for r in rows])
    else:
        x = np.array([[r.size, 1.0] for r in rows])
    inv_bw, lat = fit_relative_nnls(x, np.array([r.time_s for r in rows]))
    return LinkSpec(bw_gbps=round_sig(1.0 / inv_bw / 1e9), latency_us=round_sig(lat * 1e6))


def _collective_pred(link: LinkSpec, r: CollRow, ring: bool) -> float:
    if ring:
        return float(ring_allreduce_s(r.size, r.n, link.bw_gbps, link.latency_us * 1e-6))
    return float(p2p_s(r.size, link.bw_gbps, link.latency_us * 1e-6))


def fit_collective(rows: list[CollRow], ring: bool) -> tuple[CollectiveSpec, dict[str, FitError]]:
    """Intra-node links (pooled and per group size) and the inter-node link, with held-out errors.

    Intra: all ranks in one node. Where several group sizes were measured, the held-out error is that
    of the per-size fits, which is what the cost model uses for those sizes.
    """
    spec: dict = {}
    errors: dict[str, FitError] = {}
    for kind, pick in (("intra", lambda r: r.per_node == r.n), ("inter", lambda r: r.per_node < r.n)):
        fit, held = _split([r for r in rows if pick(r)])
        if len(fit) < 2:
            continue
        spec[kind] = fit_link(fit, ring)
        sizes = sorted({r.n for r in fit})
        by_ranks = {n: fit_link([r for r in fit if r.n == n], ring) for n in sizes} if len(sizes) > 1 else {}
        spec[f"{kind}_by_ranks"] = by_ranks
        pred = [_collective_pred(by_ranks.get(r.n, spec[kind]), r, ring) for r in held]
        errors[kind] = fit_error(pred, [r.time_s for r in held], len(fit))
    return CollectiveSpec(**spec), errors


def fit_device(data: Path, device: str, created: str | None = None) -> Profile:
    """Fit one device's default profile from the Vidur files under ``data``."""
    preset, network = DEVICES[device]
    hw = HardwareSpec.model_validate(HARDWARE[preset])
    ref = Reference(peak_tflops=dict(hw.device.peak_tflops), mem_bw_gbps=hw.device.mem_bw_gbps)
    peak = ref.peak_flops("bf16")
    mlps = sorted((data / "compute" / device).glob("*/*/mlp.csv"))
    if not mlps:
        raise FileNotFoundError(f"{data / 'compute' / device}: no mlp.csv files")
    gemms: list[GemmRow] = []
    mems: list[MemRow] = []
    for path in mlps:
        g, m = mlp_rows(path)
        gemms += g
        mems += m
    errors: dict[str, FitError] = {}
    launch_us, mem_eff, errors["memory"] = fit_memory(mems, ref.mem_bw_gbps)
    table, gemm_fit, gemm_held = fit_gemm(gemms, peak, launch_us * 1e-6)

    attention = None
    attn_files = sorted((data / "compute" / device).glob("*/*/attention*.csv"))
    attn_rows = [r for p in attn_files for r in attention_rows(p)]
    if attn_rows:
        attention, attn_fit, attn_held = fit_attention(attn_rows, peak, ref.mem_bw_gbps * 1e9)

    coll: dict[str, CollectiveSpec] = {}
    for op, ring in (("all_reduce", True), ("send_recv", False)):
        path = data / "network" / network / f"{op}.csv"
        if path.is_file():
            coll[op], errs = fit_collective(collective_rows(path), ring)
            errors.update({f"{op}_{k}": e for k, e in errs.items()})

    profile = Profile(
        device=hw.device.name, platform="cuda", source=SOURCE,
        created=created or _dt.date.today().isoformat(),
        framework={"data": "vidur kernel timings (CUDA events / kineto), bf16"}, dtype="bf16",
        reference=ref, launch_overhead_us=round_sig(launch_us), memory_efficiency=round_sig(mem_eff),
        gemm=table, gemm_memory_efficiency=round_sig(gemm_streaming_efficiency(gemm_fit, ref.mem_bw_gbps)),
        attention=attention, flash_attention=FLASH_ATTENTION[device],
        collectives=CollectivesSpec(**coll, link_gbps=hw.node.intra_bw_gbps),
        notes=[(f"GEMM table fitted from {len(gemm_fit)} of {len(gemms)} GEMM rows of "
                f"{', '.join(p.parent.name for p in mlps)} (TP 1/2/4/8); fit_error.gemm: the other rows; "
                "fit_error.gemm_unseen_model: all GEMMs of the largest model, refitted without it"),
               "memory_efficiency and launch_overhead_us from the SwiGLU activation kernel (mlp_act)",
               "grouped expert GEMMs not measured: per-expert dense efficiency, one launch",
               ("collectives: ring all-reduce per group size inside a node, send/recv alpha-beta; inter-node "
                "links apply only when this profile is named explicitly (hardware.profile)")],
    )
    cm = cost_model(hw, profile)
    errors["gemm"] = fit_error([float(cm.gemm_s(r.m, r.n, r.k)) for r in gemm_held],
                               [r.time_s for r in gemm_held], len(gemm_fit))
    if len({r.key[0] for r in gemms}) > 1:
        largest = max(gemms, key=lambda r: r.n * r.k).key[0]
        errors["gemm_unseen_model"] = unseen_model_error(profile, hw, gemms, largest)
    if attention is not None:
        for kind, pick in (("attention_prefill", True), ("attention_decode", False)):
            held = [r for r in attn_held if r.prefill == pick]
            pred = [float(cm.attention_batch_s(np.full(r.batch, r.q), np.full(r.batch, r.kv), r.n_heads,
                                               r.head_dim, r.kv_heads)) for r in held]
            errors[kind] = fit_error(pred, [r.time_s for r in held], sum(1 for r in attn_fit if r.prefill == pick))
    else:
        note = "attention not measured for this device"
        fixed = ATTENTION_FIXED_US.get(device)
        if fixed is not None:
            note += ("; attention_fixed_us (a serving attention call's fixed GPU time) is costmodel/attention_floor.py's "
                     "HOPPER_ATTENTION_FIXED_US, from vLLM PR #43232's batch-1 decode timings")
        profile = profile.model_copy(update={"notes": profile.notes + [note], "attention_fixed_us": fixed})
    return profile.model_copy(update={"fit_error": errors})


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m moesim.calibrate.fit_vidur", description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA, help="gpu-kernels-vidur folder")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT, help="folder for a100.yaml and h100.yaml")
    ap.add_argument("--devices", nargs="+", default=list(DEVICES), choices=list(DEVICES))
    args = ap.parse_args(argv)
    if not args.data.is_dir():
        print(f"error: {args.data}: measurements folder not found", file=sys.stderr)
        return 2
    for device in args.devices:
        profile = fit_device(args.data, device)
        path = save_profile(profile, args.out / f"{device}.yaml")
        print(f"{path}: {profile.device}")
        for part, e in profile.fit_error.items():
            print(f"  {part:<18} held-out {e.rows_held_out:>5} rows  median {e.median_abs_pct:6.2f}%  "
                  f"p90 {e.p90_abs_pct:6.2f}%  max {e.max_abs_pct:7.2f}%")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
