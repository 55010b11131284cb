"""Hopper's 4-bit weight-only GEMMs bound by their in-loop conversion (costmodel/weight_only.py)."""

from __future__ import annotations

import numpy as np
import pytest

from moesim.costmodel import build_cost_model
from moesim.costmodel.weight_only import (
    A100_16BIT_TFLOPS,
    AMPERE_W4A16_PEAK_FRACTION,
    HOPPER_W4A16_PEAK_FRACTION,
    weight_only_floor_s,
)
from moesim.presets import HARDWARE
from moesim.schemas import HardwareSpec

H100_BF16 = 989.4e12
# gpt-oss-20b's experts: 32 of 2880 -> 2 x 2880 (gate and up) and 2880 -> 2880 (down)
D, FF, EXPERTS = 2880, 2880, 32


def _cost(preset: str, **device):
    data = dict(HARDWARE[preset])
    data["device"] = dict(data["device"], **device)
    return build_cost_model(HardwareSpec(**data))


def _tflops(cm, tokens_per_expert: float, dtype: str) -> float:
    t = np.full(EXPERTS, tokens_per_expert)
    seconds = float(cm.grouped_gemm_s(t, 2 * FF, D, dtype))
    return 2.0 * tokens_per_expert * EXPERTS * 2 * FF * D / seconds / 1e12


def test_the_hopper_and_ampere_presets_carry_the_measured_bounds_and_others_none():
    for preset in ("h100-sxm", "h200", "h800"):
        assert HARDWARE[preset]["device"]["weight_only_peak_fraction"] == HOPPER_W4A16_PEAK_FRACTION
    for preset in ("a100-40gb", "a100-80gb"):
        assert HARDWARE[preset]["device"]["weight_only_peak_fraction"] == AMPERE_W4A16_PEAK_FRACTION
    for preset in ("b200", "gb200-nvl72", "m2-ultra"):
        assert HARDWARE[preset]["device"].get("weight_only_peak_fraction") is None
    # SGLang PR #38884: 254 TFLOP/s measured on the H100's 989.4 TFLOP/s BF16 peak
    assert HOPPER_W4A16_PEAK_FRACTION * H100_BF16 == pytest.approx(254e12, rel=0.002)
    # vLLM PR #2497: Marlin's 141.4 TFLOP/s plateau on an A100 (312 TFLOP/s FP16/BF16, the presets' own peak)
    assert all(HARDWARE[p]["device"]["peak_tflops"]["bf16"] == A100_16BIT_TFLOPS for p in ("a100-40gb", "a100-80gb"))
    assert AMPERE_W4A16_PEAK_FRACTION * 312e12 == pytest.approx(141.4e12, rel=0.001)
    # the Hopper bound scaled by SMs and clock (an issue-bound loop) lands near the Ampere one
    assert 254.0 * (108 * 1.41) / (132 * 1.83) / 312.0 == pytest.approx(AMPERE_W4A16_PEAK_FRACTION, rel=0.15)


def test_a_large_mxfp4_grouped_gemm_on_an_a100_runs_at_marlins_plateau():
    bounded, free = _cost("a100-80gb"), _cost("a100-80gb", weight_only_peak_fraction=None)
    cap = AMPERE_W4A16_PEAK_FRACTION * 312.0
    for tokens in (512.0, 4096.0):
        assert _tflops(bounded, tokens, "mxfp4") == pytest.approx(cap, rel=0.05)
        assert _tflops(free, tokens, "mxfp4") > 1.2 * cap


@pytest.mark.parametrize("preset", ["h100-sxm", "h200"])
def test_a_large_mxfp4_grouped_gemm_runs_at_the_bound_not_the_bf16_speed(preset):
    bounded, free = _cost(preset), _cost(preset, weight_only_peak_fraction=None)
    cap = HOPPER_W4A16_PEAK_FRACTION * H100_BF16 / 1e12
    for tokens in (512.0, 4096.0):  # prefill: compute-bound
        assert _tflops(bounded, tokens, "mxfp4") <= cap * 1.0001
        assert _tflops(bounded, tokens, "mxfp4") == pytest.approx(cap, rel=0.05)  # launch and loop costs aside
        assert _tflops(free, tokens, "mxfp4") > 1.5 * cap  # without it: the BF16 kernels' fraction
        # BF16 weights are not converted: their GEMMs keep their speed
        assert _tflops(bounded, tokens, "bf16") == pytest.approx(_tflops(free, tokens, "bf16"))


def test_decode_batches_that_wait_on_weights_do_not_move():
    bounded, free = _cost("h100-sxm"), _cost("h100-sxm", weight_only_peak_fraction=None)
    for tokens in (1.0, 4.0):  # a few tokens per expert: reading 4-bit weights binds, not the conversion
        t = np.full(EXPERTS, tokens)
        assert float(bounded.grouped_gemm_s(t, 2 * FF, D, "mxfp4")) == pytest.approx(
            float(free.grouped_gemm_s(t, 2 * FF, D, "mxfp4")))


def test_the_bound_rises_with_tokens_until_it_binds():
    cm = _cost("h100-sxm")
    speeds = [_tflops(cm, t, "mxfp4") for t in (1.0, 8.0, 64.0, 512.0)]
    assert speeds == sorted(speeds)


def test_only_four_bit_weight_only_dtypes_are_bound():
    bounded, free = _cost("h100-sxm"), _cost("h100-sxm", weight_only_peak_fraction=None)
    for dtype in ("int4", "mxfp4"):
        assert float(bounded.gemm_s(8192, 4096, 4096, dtype)) > 1.5 * float(free.gemm_s(8192, 4096, 4096, dtype))
    for dtype in ("int8", "fp8", "bf16"):  # int8 converts cheaply; FP8 runs natively on Hopper
        assert float(bounded.gemm_s(8192, 4096, 4096, dtype)) == pytest.approx(float(free.gemm_s(8192, 4096, 4096, dtype)))
    assert not weight_only_floor_s(1e12, "mxfp4", False, H100_BF16, 0.257)  # a native FP4 path has no bound
    assert not weight_only_floor_s(1e12, "mxfp4", True, H100_BF16, None)


def test_the_datasheet_cost_model_applies_the_same_bound():
    cm = _cost("h100-sxm", default_profile="datasheet")
    m, n, k = 16384, 4096, 4096
    seconds = float(cm.gemm_s(m, n, k, "int4"))
    assert 2.0 * m * n * k / seconds <= HOPPER_W4A16_PEAK_FRACTION * H100_BF16 * 1.0001
    t = np.full(8, 2048.0)
    grouped = float(cm.grouped_gemm_s(t, n, k, "int4"))
    assert 2.0 * t.sum() * n * k / grouped <= HOPPER_W4A16_PEAK_FRACTION * H100_BF16 * 1.0001


def test_a_bad_fraction_is_a_one_line_error_naming_the_field():
    import moesim
    from moesim.errors import InputError

    with pytest.raises(InputError) as err:
        moesim.load_scenario("mixtral-8x7b-h100-serve", ["hardware.device.weight_only_peak_fraction=1.5"])
    msg = str(err.value)
    assert "\n" not in msg and "hardware.device.weight_only_peak_fraction" in msg
