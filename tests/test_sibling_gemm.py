"""B200 GEMMs priced from the H100 profile and XLA's measured B200/H100 ratio (costmodel/sibling_gemm.py)."""

from __future__ import annotations

import numpy as np
import pytest

from moesim.costmodel import build_cost_model
from moesim.costmodel.sibling_gemm import (
    gemm_ratio,
    mamf_fraction,
    mamf_scale,
    ratio_curve,
    shape_ratios,
)
from moesim.presets import HARDWARE
from moesim.schemas import HardwareSpec

B200_BF16_FLOPS = 2250e12


def _cost(preset: str, **device):
    data = dict(HARDWARE[preset])
    data["device"] = dict(data["device"], **device)
    return build_cost_model(HardwareSpec(**data))


def _burst(preset: str, **device):
    """The preset as a short kernel benchmark times it: the tables and held-out GEMM timings here run kernels for
    milliseconds, before a power limit holds the clocks down (``hardware.device.sustained_compute_fraction``, 1)."""
    return _cost(preset, sustained_compute_fraction=1.0, **device)


def test_the_table_holds_both_devices_at_the_same_shapes():
    flops, ratio = shape_ratios()
    assert flops.size == 375 and np.all(ratio > 0)
    # a B200 fits its roofline at most about as well as an H100 (no shape beats it by 10 %), at worst a fifth as well
    assert 0.2 < ratio.min() and ratio.max() < 1.1


def test_the_ratio_rises_with_gemm_size():
    xs, ys = ratio_curve()
    assert np.all(np.diff(xs) > 0)
    small, large = float(gemm_ratio(1e8, "b200-vs-h100")), float(gemm_ratio(2e11, "b200-vs-h100"))
    assert small < 0.5 < 0.75 < large < 0.85
    # clamped at the table's ends, and 1 for no GEMM or no ratio
    assert gemm_ratio(1e15, "b200-vs-h100") == pytest.approx(ys[-1])
    assert gemm_ratio(0.0, "b200-vs-h100") == 1.0 and gemm_ratio(1e12, None) == 1.0


@pytest.mark.parametrize("n, measured", [(4096, 0.627), (6144, 0.646), (8192, 0.631)])
def test_large_b200_gemms_within_12_percent_of_a_held_out_measurement(n, measured):
    """pytorch/ao PR #2427 (benchmarks/float8/bench_matmul.py on a B200): BF16 n^3 GEMMs at these fractions
    of the 2,250 TFLOP/s peak. Not used to build the ratio (XLA's tables are)."""
    t = float(_burst("b200").gemm_s(n, n, n, "bf16"))
    frac = 2.0 * n**3 / t / B200_BF16_FLOPS
    assert frac == pytest.approx(measured, rel=0.12)


def test_without_the_ratio_the_rebase_was_optimistic_for_every_gemm():
    with_ratio, without = _cost("b200"), _cost("b200", profile_gemm_ratio=None)
    for m in (64, 1024, 8192):
        slow, fast = float(with_ratio.gemm_s(m, 7168, 2048)), float(without.gemm_s(m, 7168, 2048))
        assert slow > fast
    # a small GEMM gains about nothing from the B200's peak: close to the H100's own time
    h100 = _cost("h100-sxm")
    small = (1024, 1024, 512)
    assert float(with_ratio.gemm_s(*small)) == pytest.approx(float(h100.gemm_s(*small)), rel=0.25)


def test_grouped_gemms_take_the_ratio_of_the_whole_call():
    with_ratio, without = _cost("b200"), _cost("b200", profile_gemm_ratio=None)
    tokens = np.full(32, 1024.0)  # 32 busy experts of 1024 tokens: one call of 32 x 2 x 1024 x 4096 x 7168 FLOPs
    t, t0 = float(with_ratio.grouped_gemm_s(tokens, 4096, 7168)), float(without.grouped_gemm_s(tokens, 4096, 7168))
    call = 32 * 2.0 * 1024 * 4096 * 7168
    assert t0 / t == pytest.approx(float(gemm_ratio(call, "b200-vs-h100")), rel=0.05)


def test_same_die_siblings_keep_the_rebase():
    for preset in ("h200", "h800", "h100-sxm"):
        assert HARDWARE[preset]["device"].get("profile_gemm_ratio") is None
    for preset in ("b200", "b300"):
        assert HARDWARE[preset]["device"]["profile_gemm_ratio"] == "b200-vs-h100"
    for preset in ("gb200-nvl72", "gb300-nvl72"):
        assert HARDWARE[preset]["device"]["profile_gemm_ratio"] == "gb200-vs-h100"


def test_the_gb200_ratio_is_the_b200_curve_times_their_measured_best_gemm_fractions():
    """stas00/ml-engineering's MAMF table: a GB200 reaches 1,822 of its 2,500 BF16 TFLOP/s, a B200 1,745 of
    2,250; the B200's curve scaled by the quotient of those fractions (0.94), not by the datasheets."""
    scale = mamf_scale("gb200-vs-h100")
    assert scale == pytest.approx((1822.0 / 2500.0) / (1745.0 / 2250.0))
    assert 0.9 < scale < 1.0 and mamf_scale("b200-vs-h100") == 1.0
    # held out: the FP8 rows of the same table give the same quotient within 2 %
    assert mamf_fraction("gb200", "fp8") / mamf_fraction("b200", "fp8") == pytest.approx(scale, rel=0.02)
    for flops in (1e8, 1e10, 1e13):
        assert float(gemm_ratio(flops, "gb200-vs-h100")) == pytest.approx(scale * float(gemm_ratio(flops, "b200-vs-h100")))


def test_a_large_gb200_gemm_runs_as_much_faster_than_a_b200_as_their_best_gemms_not_their_datasheets():
    n = 16384
    b200, gb200 = float(_burst("b200").gemm_s(n, n, n, "bf16")), float(_burst("gb200-nvl72").gemm_s(n, n, n, "bf16"))
    measured = 1822.0 / 1745.0  # MAMF, GB200 over B200: 1.04, where the datasheets say 2500 / 2250 = 1.11
    assert b200 / gb200 == pytest.approx(measured, rel=0.01)


def test_an_unknown_ratio_table_is_a_one_line_error_naming_the_field():
    import moesim
    from moesim.errors import InputError

    with pytest.raises(InputError) as err:
        moesim.load_scenario("mixtral-8x7b-h100-serve", ["hardware.preset=b200",
                                                         "hardware.device.profile_gemm_ratio=b300-vs-h100"])
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith("hardware.device.profile_gemm_ratio = 'b300-vs-h100'")
    assert "b200-vs-h100" in msg  # what is allowed


@pytest.mark.parametrize("n, k, measured_us", [(2048, 7168, 1671.2), (7168, 2048, 1683.4)])
def test_b200_grouped_fp8_gemms_within_15_percent_of_a_held_out_measurement(n, k, measured_us):
    """Held out: torchao's MXFP8 grouped GEMM on a B200 at 1,000 W (pytorch/ao
    torchao/prototype/moe_training/README.md, PR #3566, 2026-01-02; kernel-only times) at DeepSeek-V3
    shapes, 131,072 tokens over 8 experts: forward 1671.2 us (7168 -> 2048), input gradient 1683.4 us
    (2048 -> 7168). moesim prices FP8 per-tensor GEMMs; MXFP8's 1x32 scales run in the same tensor-core
    instruction on a B200. Its weight gradient (2103.3 us, K-grouped) runs 20 % slower than the forward,
    where moesim prices every grouped GEMM of a pass alike (no Hopper pair to tell whether that holds there)."""
    cm = _cost("b200")
    priced = float(cm.grouped_gemm_s(np.full(8, 131072 / 8), n, k, "fp8")) * 1e6
    assert priced == pytest.approx(measured_us, rel=0.15)


@pytest.mark.parametrize("dtype", ["bf16", "fp8"])
def test_a_b300_takes_the_b200_ratio_because_its_best_gemm_is_a_b200s(dtype):
    """The b300 preset has the HGX B200's dense peaks and its GEMM ratio: the MAMF table's B300 reaches the
    B200's fraction of that peak within 2.5 % in both dtypes (BF16 +1.4 %, FP8 -2.3 %)."""
    assert mamf_fraction("b300", dtype) == pytest.approx(mamf_fraction("b200", dtype), rel=0.025)
    b200, b300 = HARDWARE["b200"]["device"], HARDWARE["b300"]["device"]
    assert b300["peak_tflops"][dtype] == b200["peak_tflops"][dtype]
    n = 8192
    assert float(_burst("b300").gemm_s(n, n, n, dtype)) == pytest.approx(float(_burst("b200").gemm_s(n, n, n, dtype)))
