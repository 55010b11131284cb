"""The Apple presets' memory efficiency and per-kernel cost come out of their source rows.

``moesim/presets/apple_metal.py`` fits them on llama.cpp PR #2917's M2 Ultra llama-bench rows; here
the fit is re-run against moesim's own bytes per token, the held-out row is checked, and the
bottom-up dispatch count is held to the fitted fixed cost.
"""

from __future__ import annotations

import pytest

import moesim
from moesim.presets import apple_metal
from moesim.presets.hardware import HARDWARE
from moesim.validation import DEFAULT_CSV, scenario_ref

APPLE = ("m2", "m2-max", "m2-ultra")
LLAMA_BENCH = scenario_ref("validation/llama-2-7b-apple-llama-bench.yaml", DEFAULT_CSV.parent)


def seconds_per_token(bits: float, efficiency: float, launch_us: float) -> float:
    """moesim's batch-1 Llama-2-7B decode token on the M2 Ultra preset with int4 weights stored at
    ``bits`` per weight (Q8_0 is int8 at 8.5) and the given efficiency and per-kernel cost."""
    dtype = "int8" if bits > 6 else "int4"
    overrides = ["hardware.preset=m2-ultra", f"model.dtype={dtype}",
                 f"hardware.device.weight_bits={{'{dtype}': {bits}}}",
                 f"hardware.device.memory_efficiency={efficiency}",
                 f"hardware.device.launch_overhead_us={launch_us}"]
    s = moesim.load_scenario(LLAMA_BENCH, overrides)
    return 1.0 / moesim.simulate(s).summary["output_tokens_per_s"]


def stream_s(bits: float) -> float:
    """Seconds the token's bytes take at full bandwidth: the part that scales with 1 / efficiency."""
    return seconds_per_token(bits, 0.5, 0.0) - seconds_per_token(bits, 1.0, 0.0)


@pytest.fixture(scope="module")
def fitted():
    (_, bits_a, tps_a), (_, bits_b, tps_b), _ = apple_metal.SOURCE_ROWS
    eff, fixed = apple_metal.fit_stream_and_fixed(1 / tps_a, 1 / tps_b, stream_s(bits_a), stream_s(bits_b))
    host = seconds_per_token(bits_b, 1.0, 0.0) - stream_s(bits_b)  # what stays with no kernel cost
    kernels = (seconds_per_token(bits_b, 1.0, 10.0) - seconds_per_token(bits_b, 1.0, 0.0)) / 10e-6
    return eff, fixed, host, kernels


def test_the_presets_carry_the_fitted_constants(fitted):
    eff, fixed, host, kernels = fitted
    assert round(kernels) == 289  # Llama-2-7B: 9 op-graph kernels a layer (RoPE/KV write included) and the head
    assert apple_metal.MEMORY_EFFICIENCY == pytest.approx(eff, abs=5e-4)
    assert apple_metal.LAUNCH_OVERHEAD_US == pytest.approx((fixed - host) / kernels * 1e6, abs=0.05)
    for name in APPLE:
        device = HARDWARE[name]["device"]
        assert device["memory_efficiency"] == apple_metal.MEMORY_EFFICIENCY
        assert device["launch_overhead_us"] == apple_metal.LAUNCH_OVERHEAD_US


def test_the_held_out_row_agrees():
    (_, bits, tokens_per_s), = [r for r in apple_metal.SOURCE_ROWS if r[0] == "Q4_1"]
    predicted = 1.0 / seconds_per_token(bits, apple_metal.MEMORY_EFFICIENCY, apple_metal.LAUNCH_OVERHEAD_US)
    assert predicted == pytest.approx(tokens_per_s, rel=0.01)


def test_dispatch_count_explains_most_of_the_fixed_cost(fitted):
    """804 Metal dispatches at the measured 5.16 us each, plus the host: 60-100 % of the fitted cost."""
    _, fixed, host, _ = fitted
    bottom_up = apple_metal.DISPATCHES_LLAMA2_7B * apple_metal.GPU_US_PER_DISPATCH * 1e-6 + host
    assert 0.6 * fixed < bottom_up < fixed


def test_fit_needs_two_different_rows():
    with pytest.raises(ValueError, match="different bytes"):
        apple_metal.fit_stream_and_fixed(0.01, 0.02, 0.005, 0.005)
    eff, fixed = apple_metal.fit_stream_and_fixed(0.0116, 0.0066, 0.008, 0.004)
    assert eff == pytest.approx(0.8) and fixed == pytest.approx(0.0016)
