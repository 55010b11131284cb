"""A serving attention call's fixed GPU time on Hopper (costmodel/attention_floor.py), where the H100
profile has no measured attention table."""

from __future__ import annotations

import numpy as np
import pytest

from moesim.costmodel import build_cost_model
from moesim.costmodel.attention_floor import HOPPER_ATTENTION_FIXED_US, VLLM_PR43232_Q1S1K_S
from moesim.costmodel.profile import load_default_profile
from moesim.presets.hardware import HARDWARE
from moesim.schemas import HardwareSpec


def _cm(preset: str):
    return build_cost_model(HardwareSpec.model_validate(HARDWARE[preset]))


def test_the_constant_is_the_mean_of_the_cited_timings():
    mean_us = 1e6 * np.mean([t for *_, t in VLLM_PR43232_Q1S1K_S])
    assert HOPPER_ATTENTION_FIXED_US == pytest.approx(mean_us, abs=0.05)
    # TileOPs PR #2084 / #2090 (H200 locked at 1,500 MHz): 9.5 (FlashInfer) to 16.2 us (FA3) a call
    assert 7.0 < HOPPER_ATTENTION_FIXED_US < 16.2


def test_the_h100_profile_carries_it_and_the_a100_keeps_its_fitted_table():
    assert load_default_profile("h100.yaml").attention_fixed_us == HOPPER_ATTENTION_FIXED_US
    a100 = load_default_profile("a100.yaml")
    assert a100.attention is not None and a100.attention_fixed_us is None
    assert _cm("a100-80gb").attention_launch_s == pytest.approx(a100.attention.launch_overhead_us * 1e-6)


@pytest.mark.parametrize("preset", ["h100-sxm", "h200", "b200"])
def test_a_short_decode_call_costs_the_fixed_time(preset):
    """One sequence at 1,024 tokens (8 KV heads of 128, BF16: 4 MB of KV): the fixed time, plus a read
    under a microsecond; the rebased Hopper and Blackwell profiles keep the latency."""
    cm = _cm(preset)
    assert cm.attention_launch_s == pytest.approx(HOPPER_ATTENTION_FIXED_US * 1e-6)
    t = float(cm.attention_batch_s(np.ones(1), np.full(1, 1024.0), 64, 128, 8))
    assert HOPPER_ATTENTION_FIXED_US * 1e-6 < t < (HOPPER_ATTENTION_FIXED_US + 5.0) * 1e-6


def test_without_it_a_profile_prices_the_kernel_floor():
    from moesim.costmodel import cost_model

    hw = HardwareSpec.model_validate(HARDWARE["h100-sxm"])
    bare = load_default_profile("h100.yaml").model_copy(update={"attention_fixed_us": None})
    cm = cost_model(hw, bare)
    assert cm.attention_launch_s == pytest.approx(bare.launch_overhead_us * 1e-6)
