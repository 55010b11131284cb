"""The CUDA side of the fit, on CPU: rows shaped like the GPU quick grid, timed by a known synthetic
device, go through the same ``fit_profile`` a CUDA calibration uses (Triton grouped GEMMs, bf16,
datasheet peaks). The fit must run, keep the Triton path's costs (no per-expert loop cost) and
give back the synthetic device's times."""

from __future__ import annotations

import pytest
from moesim.calibrate.fit_local import DeviceInfo, fit_profile, hardware_for
from moesim.calibrate.grids import grid_for
from moesim.calibrate.microbench import Measurement
from moesim.calibrate.predict import moe_layer_s
from moesim.calibrate.run import datasheet_for

from moesim.costmodel import cost_model

PEAK, BW, LAUNCH = 989e12, 3.35e12, 6e-6  # H100 SXM bf16 dense, HBM3, a kernel launch


def _gemm_s(m, n, k, experts=1):
    if m == 0:
        return 0.0
    eff = 0.75 * m / (m + 64.0)  # small token counts are memory-bound, large ones near 75 % of peak
    return experts * max(2.0 * m * n * k / (PEAK * eff), 2.0 * n * k / BW)


def _rows() -> list[Measurement]:
    g = grid_for("cuda", quick=True)
    rows = [Measurement("copy", {"bytes": 2 * b}, LAUNCH + 2 * b / (0.9 * BW)) for b in g.copy_bytes]
    rows += [Measurement("gemm", {"m": m, "n": n, "k": k}, LAUNCH + _gemm_s(m, n, k)) for m, n, k in g.gemm_points()]
    rows += [Measurement("grouped", {"experts": e, "m": m, "n": n, "k": k}, LAUNCH + _gemm_s(m, n, k, e))
             for e, m, n, k in g.grouped_points()]
    h, hd = g.attn_heads, g.attn_head_dim
    rows += [Measurement("attn_prefill", {"batch": 1, "q": q, "kv": q, "heads": h, "head_dim": hd},
                         LAUNCH + 4.0 * h * hd * q * q / 2 / (0.5 * PEAK)) for q in g.attn_prefill]
    rows += [Measurement("attn_decode", {"batch": b, "q": 1, "kv": kv, "heads": h, "head_dim": hd},
                         LAUNCH + 4.0 * b * kv * h * hd / (0.8 * BW)) for b, kv in g.attn_decode]
    rows += [Measurement("router", {"tokens": t, "experts": e, "top_k": k}, LAUNCH + t * e * 4 / BW)
             for t, e, k in g.router_points()]
    rows += [Measurement("activation", {"rows": r, "ffn": g.layer_ffn, "elements": r * g.layer_ffn},
                         LAUNCH + r * g.layer_ffn * 6 / BW) for r in g.act_rows]
    d, f = g.layer_d_model, g.layer_ffn
    for e, k, t, cf in g.layer_points:
        counts = [t * k // e + (i < t * k % e) for i in range(e)]
        rows.append(Measurement("layer", {"experts": e, "top_k": k, "tokens": t, "capacity_factor": cf,
                                          "d_model": d, "ffn": f, "counts": counts, "dropped": 0},
                                _layer_s(t, e, counts, d, f)))
    return rows


def _copy_s(nbytes):
    return LAUNCH + nbytes / (0.9 * BW)


def _layer_s(t, e, counts, d, f):
    """The synthetic device's reference layer on the Triton path, op by op, plus 20 us on the host."""
    n = sum(counts)
    return (LAUNCH + _gemm_s(t, e, d) + LAUNCH + t * e * 4 / BW + _copy_s(2 * n * d * 2)
            + LAUNCH + sum(_gemm_s(c, 2 * f, d) for c in counts) + LAUNCH + n * f * 6 / BW
            + LAUNCH + sum(_gemm_s(c, d, f) for c in counts)
            + _copy_s(t * d * 2) + _copy_s(2 * n * d * 2) + _copy_s(3 * n * d * 2) + 20e-6)


@pytest.fixture(scope="module")
def fitted():
    name = "NVIDIA H100 80GB HBM3"
    info = DeviceInfo(name=name, platform="cuda", dtype="bf16", framework={"torch": "synthetic"},
                      created="2026-11-25", source="synthetic rows shaped like the CUDA quick grid", impl="triton",
                      datasheet=datasheet_for(name))
    return fit_profile(_rows(), info)


def test_cuda_fit_runs_on_the_gpu_grid(fitted):
    assert fitted.platform == "cuda" and fitted.reference.peak_flops("bf16") == pytest.approx(PEAK, rel=0.01)
    assert fitted.cache_bytes is None and fitted.memory_curve is None  # GPUs: no cache model
    assert fitted.grouped.per_expert_overhead_us == 0 and fitted.grouped.copy_ns_per_element == 0  # one launch
    for part in ("memory", "gemm", "grouped", "attention", "activation", "router", "moe_layer"):
        assert fitted.fit_error[part].median_abs_pct < 5, part  # an exact device is fitted closely
    assert fitted.moe_overhead.fixed_us == pytest.approx(20, rel=0.3)  # the host time, recovered


def test_cuda_fit_gives_back_the_device(fitted):
    cm = cost_model(hardware_for(fitted), fitted)
    for m in (16, 256, 4096):
        assert float(cm.gemm_s(m, 8192, 2048, "bf16")) == pytest.approx(LAUNCH + _gemm_s(m, 8192, 2048), rel=0.1)
    assert float(cm.memory_s(1e9)) == pytest.approx(LAUNCH + 1e9 / (0.9 * BW), rel=0.1)
    g = grid_for("cuda", quick=True)
    counts = [64] * 16
    layer = moe_layer_s(cm, 512, g.layer_d_model, g.layer_ffn, 16, 2, counts, dtype="bf16", loop=False)
    assert layer == pytest.approx(_layer_s(512, 16, counts, g.layer_d_model, g.layer_ffn), rel=0.05)
