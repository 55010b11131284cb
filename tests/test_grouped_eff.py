"""Grouped-GEMM efficiency model (moesim.costmodel.grouped_eff) against the published points it cites."""

import numpy as np
import pytest

from moesim.costmodel import grouped_eff as ge

H100_BF16 = dict(peak_flops=989.4e12, mem_bw=3.35e12)
A100_BF16 = dict(peak_flops=312e12, mem_bw=2.039e12)
SHAPES = [(14336, 4096), (4096, 7168), (768, 2048)]  # Mixtral w1, DeepSeek-V3 w13 half, a small expert


@pytest.fixture(scope="module")
def pts():
    return ge.load_points()


def test_points_are_cited_and_consistent(pts):
    """Every row names its source and split; where a source gives both time and TFLOPS for exactly
    known rows, 2*G*m*n*k/time reproduces the TFLOPS (catches transcription slips)."""
    assert len(pts["n"]) >= 40
    assert all(s.strip() for s in pts["source"])
    assert set(pts["split"]) == {"fit", "holdout"}
    assert (pts["split"] == "holdout").sum() >= 10
    flops = 2 * pts["groups"] * pts["m_per_group"] * pts["n"] * pts["k"]
    timed = ~np.isnan(pts["time_us"])
    implied = flops / (np.where(timed, pts["time_us"], np.nan) * 1e-6) / 1e12
    exact = timed & (pts["m_exact"] == 1)
    assert exact.sum() >= 6
    np.testing.assert_allclose(implied[exact], pts["tflops"][exact], rtol=0.01)
    # rows with random(0.7, 1.3) x m tokens per group: the TFLOPS count the real rows
    rand = timed & (pts["m_exact"] == 0)
    np.testing.assert_allclose(implied[rand], pts["tflops"][rand], rtol=0.3)
    # a published dense TFLOPS of the same per-expert shape sits next to the grouped rows that have one
    assert (~np.isnan(pts["dense_tflops"])).sum() >= 2


def test_held_out_published_rows_within_tolerance(pts):
    """Rows the fit never saw (every H100 row, another thread's H20 rows, the H800 2/8-group rows):
    each within 20 % in time, median within 8 %."""
    held = pts["split"] == "holdout"
    err = np.abs(ge.relative_errors(pts))[held]
    assert err.max() < 0.20, err
    assert np.median(err) < 0.08


def test_grouped_over_dense_where_the_source_gives_both(pts):
    """The H800 README's 8-group contiguous rows against its dense GEMM of the same per-expert shape:
    published grouped/dense 1.04-1.06; the model's ratio (aligned rows, no per-group cost) within 0.1."""
    rows = np.flatnonzero(~np.isnan(pts["dense_tflops"]))
    for i in rows:
        published = pts["tflops"][i] / pts["dense_tflops"][i]
        model = ge.grouped_gemm_ratio(pts["m_per_group"][i], int(pts["n"][i]), int(pts["k"][i]),
                                      peak_flops=pts["peak_tflops"][i] * 1e12, mem_bw=pts["mem_bw_gbps"][i] * 1e9,
                                      weight_bytes=1.0, act_bytes=ge.FP8_ACT_BYTES, tile_m=pts["tile_m"][i],
                                      per_group_s=ge.PER_GROUP_US * 1e-6)
        assert abs(float(model) - published) < 0.1, (i, float(model), published)


def test_fit_rows_within_tolerance(pts):
    err = np.abs(ge.relative_errors(pts))[pts["split"] == "fit"]
    assert err.max() < 0.30 and np.median(err) < 0.10


def test_padding_granularity_is_what_the_data_show(pts):
    """Refit without padding (tile 1) or with 128-row padding: the held-out rows get clearly worse,
    worst on the H20 16..32-token rows that are pure padded compute."""
    held = pts["split"] == "holdout"
    base = np.abs(ge.relative_errors(pts))[held].max()
    for tile in (1.0, 128.0):
        params = ge.fit_points(pts, tile_m=tile)
        worse = np.abs(ge.relative_errors(pts, params, tile_m=tile))[held].max()
        assert worse > base + 0.1, (tile, worse, base)


def test_shipped_constants_reproduce_the_fit(pts):
    fitted = ge.fit_points(pts)
    for name, shipped in ge.SHIPPED.items():
        assert fitted[name] == pytest.approx(shipped, rel=0.02, abs=0.02), name


def test_padded_tokens_exact():
    assert ge.padded_tokens(0) == 0
    assert ge.padded_tokens(1, 64) == 64
    assert ge.padded_tokens(64, 64) == 64
    assert ge.padded_tokens(65, 64) == 128
    assert ge.padded_tokens(129, 128) == 256
    np.testing.assert_array_equal(ge.padded_tokens([3.0, 7.0], 1), [3.0, 7.0])


@pytest.mark.parametrize("tile", [16, 64, 128])
def test_padding_penalty_exact_one_row_past_a_tile(tile):
    """Compute-bound (bandwidth without limit): one row past a tile costs a whole tile, so the ratio
    is exactly (tile + 1) / (2 tile), for any shape."""
    for n, k in SHAPES:
        r = ge.grouped_gemm_ratio(tile + 1, n, k, peak_flops=1e15, mem_bw=1e30, tile_m=tile)
        assert float(r) == pytest.approx((tile + 1) / (2 * tile), rel=1e-9)
        assert float(ge.grouped_gemm_ratio(tile, n, k, peak_flops=1e15, mem_bw=1e30, tile_m=tile)) == pytest.approx(1.0)


def test_padding_hides_behind_the_weight_read():
    """Far below the ridge (weights stream for 10 000 tile-times) the padded rows cost nothing."""
    r = ge.grouped_gemm_ratio([1, 8, 33], 4096, 7168, peak_flops=1e18, mem_bw=1e9, tile_m=64)
    assert np.all(r > 0.999)


@pytest.mark.parametrize("dev", [H100_BF16, A100_BF16])
def test_grouped_time_is_monotonic_in_tokens(dev):
    t = np.arange(0, 2049, dtype=float)
    for n, k in SHAPES:
        s = ge.expert_gemm_s(t, n, k, **dev)
        assert s[0] == 0 and np.all(np.diff(s) >= 0)


@pytest.mark.parametrize("dev", [H100_BF16, A100_BF16])
def test_efficiency_envelope_rises_with_tokens(dev):
    """Useful FLOP/s at whole tiles never falls as tokens per expert grow (the sawtooth lies below it)."""
    t = np.arange(1, 65) * 64.0
    for n, k in SHAPES:
        rate = 2 * t * n * k / ge.expert_gemm_s(t, n, k, **dev)
        assert np.all(np.diff(rate) >= -1e-9 * rate[:-1])
        other = np.arange(1, 4097, dtype=float)
        rate_all = 2 * other * n * k / ge.expert_gemm_s(other, n, k, **dev)
        assert rate_all.max() <= rate.max() * (1 + 1e-12)


@pytest.mark.parametrize("dev", [H100_BF16, A100_BF16])
def test_ratio_bounds_and_large_m_limit(dev):
    t = np.arange(0, 5000, dtype=float)
    for n, k in SHAPES:
        r = ge.grouped_gemm_ratio(t, n, k, **dev)
        assert r[0] == 1.0 and np.all((r > 0) & (r <= 1 + 1e-12))
        assert np.all(r[64::64] == pytest.approx(1.0))  # whole tiles: no loss vs dense
        big = ge.grouped_gemm_ratio(1e5 + 1, n, k, **dev)
        assert float(big) > 0.999  # tends to the dense efficiency at large m
        # the worst case shrinks as m grows: one row past a tile hurts less with more tiles
        worst = [ge.grouped_gemm_ratio(j * 64 + 1, n, k, **dev) for j in (4, 16, 64)]
        assert worst[0] < worst[1] < worst[2]


def test_ratio_keeps_shape_and_idle_experts():
    t = np.array([[0, 5, 300, 64], [128, 0, 0, 1000]], dtype=float)
    r = ge.grouped_gemm_ratio(t, 4096, 7168, **H100_BF16)
    assert r.shape == t.shape
    assert r[0, 0] == 1.0 and r[1, 1] == 1.0 and r[1, 2] == 1.0


def test_per_group_overhead_and_latency_add_per_call():
    t = np.array([[10, 0, 10], [0, 0, 0]], dtype=float)
    base = ge.grouped_gemm_s(t, 4096, 7168, per_group_s=0, latency_s=0, **H100_BF16)
    more = ge.grouped_gemm_s(t, 4096, 7168, per_group_s=1e-6, latency_s=3e-6, **H100_BF16)
    assert more[0] - base[0] == pytest.approx(2e-6 + 3e-6)
    assert base[1] == more[1] == 0.0


def test_dense_reference_tile_credits_the_dense_kernels_own_padding():
    """With the dense reference padded like the grouped kernel, the ratio is 1 (only the per-group
    overhead is left)."""
    t = np.arange(1, 600, dtype=float)
    r = ge.grouped_gemm_ratio(t, 4096, 7168, dense_tile_m=64, **H100_BF16)
    np.testing.assert_allclose(r, 1.0)
    r2 = ge.grouped_gemm_ratio(t, 4096, 7168, dense_tile_m=64, per_group_s=1e-6, **H100_BF16)
    assert np.all(r2 < 1)


@pytest.mark.parametrize("dtype", ["bf16", "int8"])
def test_ampere_pads_expert_rows_to_its_16_row_mma(dtype):
    """A100 (mma.sync m16n8k16): a batch-1 decode's grouped expert GEMM streams its weights like the
    dense GEMV; the same device padded to Hopper's 64-row warpgroup pays for the padded MMAs, unless
    the weights run weight-only (int8): those kernels (Marlin) pad to 16 rows on Hopper too."""
    from moesim.costmodel import build_cost_model
    from moesim.presets import HARDWARE
    from moesim.schemas import HardwareSpec

    a100 = HardwareSpec.model_validate(HARDWARE["a100-80gb"])
    assert a100.device.mma_rows == 16
    assert HardwareSpec.model_validate(HARDWARE["h100-sxm"]).device.mma_rows == 64
    as_hopper = a100.model_copy(update={"device": a100.device.model_copy(update={"mma_rows": 64})})
    one_each = np.array([1.0, 0, 0, 0, 0, 0, 1.0, 0])  # Mixtral's two experts, one token each
    n, k = 2 * 14336, 4096
    cm, cm64 = build_cost_model(a100), build_cost_model(as_hopper)
    grouped, padded = float(cm.grouped_gemm_s(one_each, n, k, dtype)), float(cm64.grouped_gemm_s(one_each, n, k, dtype))
    dense = 2 * float(cm.gemm_s(1, n, k, dtype))
    assert grouped == pytest.approx(dense, rel=0.05)  # one launch instead of two, weights read alike
    if dtype == "int8":
        assert padded == pytest.approx(grouped)
    else:  # 64 rows cost what the measured dense table's 64-row GEMM does: ~10 % over 16 rows
        assert padded > 1.05 * grouped


@pytest.mark.parametrize("value", ["0", "257", "sixteen"])
def test_a_bad_mma_rows_is_one_clear_error(value):
    import moesim
    from moesim.errors import InputError

    with pytest.raises(InputError) as err:
        moesim.load_scenario("mixtral-8x7b-h100-serve", [f"hardware.device.mma_rows={value}"])
    msg = str(err.value)
    assert "hardware.device.mma_rows" in msg and "\n" not in msg.strip()


@pytest.mark.parametrize("dtype", ["bf16", "fp8"])
def test_a_grouped_expert_gemm_costs_the_same_across_a_tile_band(dtype):
    """An H100 grouped kernel computes each expert's rows in 64-row tiles: 65 and 128 rows run the same MMAs and
    differ only by their activations' bytes, so the time never falls as rows fill a tile (it fell ~5 % from 65
    to 128 rows when the dense table, measured at unaligned rows too, was read at the real rows and a padding
    ratio charged its padding again), and it rises where a tile is added."""
    from moesim.costmodel import build_cost_model
    from moesim.presets import HARDWARE
    from moesim.schemas import HardwareSpec

    cm = build_cost_model(HardwareSpec.model_validate(HARDWARE["h100-sxm"]))
    rows = np.arange(1, 300)
    t = np.array([float(cm.grouped_gemm_s(np.full(8, r, float), 2 * 14336, 4096, dtype)) for r in rows])
    assert np.all(np.diff(t) >= -1e-12 * t[1:])
    band = t[(rows > 64) & (rows <= 128)]
    assert band.max() - band.min() <= 0.01 * band.min()
    assert t[rows == 129][0] > 1.05 * t[rows == 128][0]
