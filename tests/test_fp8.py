"""FP8 GEMM efficiency scale and Transformer Engine cast spec (moesim.costmodel.fp8) against moesim/data/fp8_gemm.csv."""

import numpy as np
import pytest

from moesim.costmodel import fp8


@pytest.fixture(scope="module")
def rows():
    return fp8.load_points()


def test_rows_are_cited_and_consistent(rows):
    """Every row names its source, device, shape and split; where a source prints both TFLOPS and
    time, 2*m*n*k/time reproduces the TFLOPS (catches transcription slips)."""
    assert len(rows) >= 20
    for r in rows:
        assert r["source"].strip() and r["device"].strip(), r["id"]
        assert r["split"] in {"fit", "holdout", "cast_fit", "cast_holdout", "info"}, r["id"]
        assert all(np.isfinite(x) for shape in r["shape_list"] for x in shape), r["id"]
        assert r["peak_fp8_tflops"] == pytest.approx(2 * r["peak_bf16_tflops"], rel=0.002), r["id"]
        if r["split"] != "info":
            assert 0 < r["tolerance"] < 0.25, r["id"]
        for dt in ("bf16", "fp8"):
            tf, ms = r[f"{dt}_tflops"], r[f"{dt}_ms"]
            if np.isfinite(tf) and np.isfinite(ms):
                m, n, k = r["shape_list"][0]
                assert 2 * m * n * k / (ms * 1e-3) / 1e12 == pytest.approx(tf, rel=0.01), r["id"]
    assert sum(r["split"] == "holdout" for r in rows) >= 5
    assert sum(r["split"] == "fit" for r in rows) >= 4


def test_measured_scale_is_speedup_over_two(rows):
    fbg = next(r for r in rows if r["id"] == "FBG-1")
    assert fp8.measured_scale(fbg) == pytest.approx(1125.51 / 585.23 / 2, rel=1e-3)
    te = next(r for r in rows if r["id"] == "TE-F")
    assert fp8.measured_scale(te) == pytest.approx(10.632 / 5.577 / 2, rel=1e-3)


def test_fit_reproduces_the_shipped_constants(rows):
    s_compute, s_memory = fp8.fit_scale(rows)
    assert s_compute == pytest.approx(fp8.S_COMPUTE, abs=0.002)
    assert s_memory == pytest.approx(fp8.S_MEMORY, abs=0.002)
    assert fp8.fit_cast_fraction(rows) == pytest.approx(fp8.CAST_MEMORY_FRACTION, abs=0.002)


def test_scale_is_below_one_for_large_shapes():
    """FP8 GEMMs reach a smaller fraction of their peak than BF16 ones: the Llama-2-7B training GEMMs
    (4096 tokens) and a square 8192 GEMM all scale by 0.95-0.99, never 1."""
    for m, n, k in [(4096, 12288, 4096), (4096, 4096, 4096), (4096, 22016, 4096), (4096, 4096, 11008),
                    (8192, 8192, 8192), (65536, 8192, 7168)]:
        s = float(fp8.fp8_efficiency_scale(m, n, k))
        assert 0.95 < s < 1.0, (m, n, k, s)


def test_scale_regimes():
    """Bandwidth-bound (decode) shapes get S_MEMORY, compute-bound ones tend to S_COMPUTE, in between
    monotone in the tokens; the ridge moves the transition (a device with more bandwidth per FLOP is
    compute-bound at fewer tokens)."""
    m = np.array([1, 8, 64, 256, 1024, 4096, 65536], dtype=float)
    s = fp8.fp8_efficiency_scale(m, 14336, 4096)
    assert s[0] == pytest.approx(fp8.S_MEMORY, abs=1e-3)
    assert s[-1] > s[-2] > fp8.S_MEMORY + 0.9 * (fp8.S_COMPUTE - fp8.S_MEMORY)
    assert float(fp8.fp8_efficiency_scale(1e6, 1e5, 1e5)) == pytest.approx(fp8.S_COMPUTE, abs=1e-3)
    assert np.all(np.diff(s) >= 0)
    h200 = fp8.fp8_efficiency_scale(256, 14336, 4096, ridge_flop_per_byte=1978.9e12 / 4.8e12)
    assert h200 > s[3]


def test_held_out_scale_rows_within_their_tolerance(rows):
    """The rows the fit never saw (other sources, H200 and GH200, the MAMF best-shape table) are
    reproduced within the tolerance each row states in the CSV; the fit rows likewise."""
    for split in ("holdout", "fit"):
        errs = fp8.scale_errors(rows, split)
        assert errs
        tol = {r["id"]: r["tolerance"] for r in rows}
        for rid, e in errs.items():
            assert abs(e) <= tol[rid], (rid, e)
    held = np.abs(list(fp8.scale_errors(rows, "holdout").values()))
    assert np.median(held) < 0.05


def test_block_scaled_rows_are_not_fitted(rows):
    """Block-scaled kernels (0.67-0.86 of the BF16 fraction here) are a different family: recorded,
    never part of the per-tensor fit, and all below the per-tensor model."""
    ids = {r["id"] for r in fp8.scale_rows(rows)}
    blocks = [r for r in rows if r["kind"] == "block"]
    assert blocks and not ids & {r["id"] for r in blocks}
    for r in blocks:
        assert fp8.measured_scale(r) < fp8.predict_scale(r)


def test_cast_bytes_te_linear_delayed_hand_count():
    """te.Linear (Megatron's proj / FC2) under delayed scaling, 4096 tokens, 11008 -> 4096, weight cast
    once per 16-microbatch step: forward cast+transpose of x (read 2 + write 1 + 1 = 4 B/elem), backward
    cast+transpose of dy (4 B/elem), weight cast+transpose (4 B/elem) / 16; one kernel each."""
    t, fin, fout = 4096, 11008, 4096
    b = fp8.fp8_cast_bytes(t, fin, fout, recipe="delayed", norm_fused=False, weight_casts_per_microbatch=1 / 16)
    assert float(b["fwd_bytes"]) == 4 * t * fin == 180_355_072
    assert float(b["bwd_bytes"]) == 4 * t * fout == 67_108_864
    assert float(b["weight_bytes"]) == pytest.approx(4 * fin * fout / 16)
    assert (float(b["fwd_kernels"]), float(b["bwd_kernels"]), float(b["weight_kernels"])) == (1, 1, 1 / 16)


def test_cast_bytes_layernorm_linear_delayed_hand_count():
    """LayerNormLinear (QKV / FC1): the norm writes fp8 (1 B instead of 2: saves t*in bytes, no kernel),
    backward transposes the fp8 norm output for wgrad (1 + 1 B) and casts+transposes dy (4 B)."""
    t, fin, fout = 4096, 4096, 12288
    b = fp8.fp8_cast_bytes(t, fin, fout, recipe="delayed", norm_fused=True)
    assert float(b["fwd_bytes"]) == -t * fin
    assert float(b["fwd_kernels"]) == 0
    assert float(b["bwd_bytes"]) == 2 * t * fin + 4 * t * fout == 234_881_024
    assert float(b["bwd_kernels"]) == 2
    assert float(b["weight_bytes"]) == 4 * fin * fout


def test_current_scaling_adds_an_amax_read_per_tensor():
    """Current scaling reads every cast tensor once more for its amax and launches two more kernels
    (amax, scale); the fused-norm path writes bf16 first, then casts (4 B/elem, 2 kernels)."""
    t, fin, fout = np.array([1024.0, 4096.0]), 4096, 4096
    d = fp8.fp8_cast_bytes(t, fin, fout, recipe="delayed")
    c = fp8.fp8_cast_bytes(t, fin, fout, recipe="current")
    np.testing.assert_allclose(c["fwd_bytes"] - d["fwd_bytes"], 2 * t * fin)
    np.testing.assert_allclose(c["bwd_bytes"] - d["bwd_bytes"], 2 * t * fout)
    np.testing.assert_allclose(c["weight_bytes"] - d["weight_bytes"], 2 * fin * fout)
    np.testing.assert_allclose(c["fwd_kernels"] - d["fwd_kernels"], 2)
    n = fp8.fp8_cast_bytes(t, fin, fout, recipe="current", norm_fused=True)
    np.testing.assert_allclose(n["fwd_bytes"], 4 * t * fin)
    np.testing.assert_allclose(n["fwd_kernels"], 2)


def test_cast_time_and_saving_sign():
    bw = 3350e9
    assert float(fp8.cast_time_s(1e9, 1, bw, 2e-6)) == pytest.approx(1e9 / (bw * fp8.CAST_MEMORY_FRACTION) + 2e-6)
    assert float(fp8.cast_time_s(-1e6, 0, bw)) < 0


def test_cast_rows_within_their_tolerance(rows):
    """The TE H200 autocast overheads: fitted on the current-scaling rows, the delayed-scaling ones
    (other byte counts: no amax pass) held out, each within its stated tolerance."""
    for split in ("cast_fit", "cast_holdout"):
        errs = fp8.cast_errors(rows, split)
        assert len(errs) == 3
        tol = {r["id"]: r["tolerance"] for r in rows}
        for rid, e in errs.items():
            assert abs(e) <= tol[rid], (rid, e)
    # the cast kernels stream far faster than the profile's SwiGLU kernel (0.576 of the bandwidth)
    assert 0.7 < fp8.CAST_MEMORY_FRACTION < 1.0


def test_unknown_recipe_raises():
    with pytest.raises(ValueError, match="recipe"):
        fp8.fp8_cast_bytes(1, 1, 1, recipe="mxfp4")
