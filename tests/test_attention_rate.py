"""Blackwell Ultra's attention rate (costmodel/attention_rate.py) and the gb300-nvl72 preset that carries it."""

from __future__ import annotations

import numpy as np
import pytest

from moesim.costmodel import build_cost_model
from moesim.costmodel.attention_rate import (
    GB300_ATTENTION_RATE_SCALE,
    fitted_gb300_scale,
    gb300_over_gb200_rates,
)
from moesim.errors import InputError
from moesim.loader import scenario_from_dict
from moesim.presets import HARDWARE


def _cm(preset: str, **device):
    hw = {"preset": preset, "node": {"devices_per_node": 1}}
    if device:
        hw["device"] = device
    s = scenario_from_dict({"name": "a", "model": {"preset": "mixtral-8x7b"}, "hardware": hw,
                            "workload": {"kind": "training", "global_batch_seqs": 8, "seq_len": 512}})
    return build_cost_model(s.hardware)


def test_the_shipped_scale_is_the_median_of_the_published_pairs():
    rates = gb300_over_gb200_rates()
    assert len(rates) == 15  # three models x five lengths, forward and backward both timed
    assert all(1.05 < r < 1.25 for r in rates)  # every shape runs faster on the GB300
    assert fitted_gb300_scale() == GB300_ATTENTION_RATE_SCALE


def test_gb300_preset_has_blackwell_ultras_figures():
    d = HARDWARE["gb300-nvl72"]["device"]
    gb200 = HARDWARE["gb200-nvl72"]["device"]
    assert d["peak_tflops"]["fp4"] == 1.5 * gb200["peak_tflops"]["fp4"]  # 15 against 10 PF dense NVFP4
    assert d["peak_tflops"]["bf16"] == gb200["peak_tflops"]["bf16"] and d["peak_tflops"]["fp8"] == gb200["peak_tflops"]["fp8"]
    assert d["mem_gib"] > 1.35 * gb200["mem_gib"] and d["mem_bw_gbps"] == gb200["mem_bw_gbps"]
    assert HARDWARE["gb300-nvl72"]["cluster"]["nic_bw_gbps"] == 2 * HARDWARE["gb200-nvl72"]["cluster"]["nic_bw_gbps"]
    assert HARDWARE["gb300-nvl72"]["node"]["devices_per_node"] == 72


def test_training_attention_runs_the_scale_faster_and_decode_does_not_move():
    gb200, gb300 = _cm("gb200-nvl72"), _cm("gb300-nvl72")
    q = np.full(2, 4096.0)
    core = [cm.attention_batch_s(q, q, 128, 160, 128, paged=False) - cm.attention_launch_s for cm in (gb200, gb300)]
    assert core[0] / core[1] == pytest.approx(GB300_ATTENTION_RATE_SCALE, rel=1e-6)
    ctx, one = np.full(64, 4096.0), np.ones(64)  # a decode batch: bound by reading the KV cache
    assert gb300.attention_batch_s(one, ctx, 64, 128, 8) == pytest.approx(gb200.attention_batch_s(one, ctx, 64, 128, 8))


def test_the_scale_never_lifts_attention_past_the_peak():
    fast = _cm("gb200-nvl72", attention_rate_scale=4.0)
    q = np.full(1, 32768.0)
    flops = 4.0 * 128 * 128 * q * (q - q / 2)
    t = fast.attention_batch_s(q, q, 128, 128, 128, paged=False) - fast.attention_launch_s
    assert t >= flops.sum() / (fast.hw.device.peak_tflops["bf16"] * 1e12) * (1 - 1e-9)


@pytest.mark.parametrize("value", [0, 5.0])
def test_a_bad_scale_is_a_one_line_error(value):
    with pytest.raises(InputError) as e:
        _cm("gb300-nvl72", attention_rate_scale=value)
    assert "attention_rate_scale" in str(e.value) and "\n" not in str(e.value).strip()
