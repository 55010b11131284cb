"""The Apple presets' memory efficiency and per-kernel cost come out of their source rows.

``moesim/presets/apple_metal.py`` fits them on llama.cpp's M2 Ultra llama-bench rows: PR #10238's
(Nov 2024, the presets) and PR #2917's (Aug 2023, pinned by the rows of 2023 builds); here each fit
is re-run against moesim's own bytes per token, the held-out row is checked, and the bottom-up
dispatch count is held to the 2023 fixed cost.
"""

from __future__ import annotations

from pathlib import Path

import pytest

import moesim
from moesim.presets import apple_metal
from moesim.presets.hardware import HARDWARE
from moesim.validation import DEFAULT_CSV, scenario_ref

APPLE = ("m2", "m2-max", "m2-ultra")
LLAMA_BENCH = scenario_ref("validation/llama-2-7b-apple-llama-bench.yaml", DEFAULT_CSV.parent)
LLAMA_32_3B = Path(__file__).parent / "data" / "llama-3.2-3b-apple-llama-bench.yaml"
#: The scenarios of the rows measured on 2023 llama.cpp builds (APL-01..12).
ROWS_2023 = ("validation/llama-2-7b-apple-llama-bench.yaml", "validation/mixtral-8x7b-apple-llama-bench.yaml")


def seconds_per_token(bits: float, efficiency: float, launch_us: float, scenario=LLAMA_BENCH) -> float:
    """moesim's batch-1 decode token of ``scenario`` (Llama-2-7B by default) on the M2 Ultra preset
    with weights stored at ``bits`` per weight (16: F16; over 6: int8, Q8_0 at 8.5; else int4) and the
    given efficiency and per-kernel cost."""
    dtype = "fp16" if bits == 16 else "int8" if bits > 6 else "int4"
    overrides = ["hardware.preset=m2-ultra", f"model.dtype={dtype}",
                 f"hardware.device.memory_efficiency={efficiency}",
                 f"hardware.device.launch_overhead_us={launch_us}"]
    if dtype != "fp16":
        overrides.append(f"hardware.device.weight_bits={{'{dtype}': {bits}}}")
    s = moesim.load_scenario(scenario, overrides)
    return 1.0 / moesim.simulate(s).summary["output_tokens_per_s"]


def stream_s(bits: float, scenario=LLAMA_BENCH) -> float:
    """Seconds the token's bytes take at full bandwidth: the part that scales with 1 / efficiency."""
    return seconds_per_token(bits, 0.5, 0.0, scenario) - seconds_per_token(bits, 1.0, 0.0, scenario)


def _fit(rows, scenario):
    (_, bits_a, tps_a), (_, bits_b, tps_b) = rows[:2]
    eff, fixed = apple_metal.fit_stream_and_fixed(1 / tps_a, 1 / tps_b, stream_s(bits_a, scenario),
                                                  stream_s(bits_b, scenario))
    host = seconds_per_token(bits_b, 1.0, 0.0, scenario) - stream_s(bits_b, scenario)  # no kernel cost
    kernels = (seconds_per_token(bits_b, 1.0, 10.0, scenario) - seconds_per_token(bits_b, 1.0, 0.0, scenario)) / 10e-6
    return eff, fixed, host, kernels


@pytest.fixture(scope="module")
def fitted():
    return _fit(apple_metal.SOURCE_ROWS_2023, LLAMA_BENCH)


def test_the_presets_carry_the_current_builds_fit():
    eff, fixed, host, kernels = _fit(apple_metal.SOURCE_ROWS, LLAMA_32_3B)
    assert round(kernels) == 253  # Llama-3.2-3B: 9 op-graph kernels in each of 28 layers and the head
    assert apple_metal.MEMORY_EFFICIENCY == pytest.approx(eff, abs=5e-4)
    assert apple_metal.LAUNCH_OVERHEAD_US == pytest.approx((fixed - host) / kernels * 1e6, abs=0.05)
    for name in APPLE:
        device = HARDWARE[name]["device"]
        assert device["memory_efficiency"] == apple_metal.MEMORY_EFFICIENCY
        assert device["launch_overhead_us"] == apple_metal.LAUNCH_OVERHEAD_US


def test_the_2023_rows_pin_the_2023_fit(fitted):
    eff, fixed, host, kernels = fitted
    assert round(kernels) == 289  # Llama-2-7B: 9 op-graph kernels a layer (RoPE/KV write included) and the head
    assert apple_metal.MEMORY_EFFICIENCY_2023 == pytest.approx(eff, abs=5e-4)
    assert apple_metal.LAUNCH_OVERHEAD_US_2023 == pytest.approx((fixed - host) / kernels * 1e6, abs=0.05)
    for ref in ROWS_2023:
        device = moesim.load_scenario(scenario_ref(ref, DEFAULT_CSV.parent)).hardware.device
        assert device.memory_efficiency == apple_metal.MEMORY_EFFICIENCY_2023
        assert device.launch_overhead_us == apple_metal.LAUNCH_OVERHEAD_US_2023
    # a later build is faster per kernel: the fits do not cross
    assert apple_metal.LAUNCH_OVERHEAD_US < apple_metal.LAUNCH_OVERHEAD_US_2023


def test_the_held_out_row_agrees():
    (_, bits, tokens_per_s), = [r for r in apple_metal.SOURCE_ROWS_2023 if r[0] == "Q4_1"]
    predicted = 1.0 / seconds_per_token(bits, apple_metal.MEMORY_EFFICIENCY_2023, apple_metal.LAUNCH_OVERHEAD_US_2023)
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
