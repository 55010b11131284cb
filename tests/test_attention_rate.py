"""Attention rates beyond the 16-bit table (costmodel/attention_rate.py): Blackwell Ultra's, carried by the
gb300-nvl72 preset, and FP8 attention's (plan.fp8_attention)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import moesim
from moesim.costmodel import build_cost_model
from moesim.costmodel.attention_rate import (
    FP8_ATTENTION_SPEEDUP,
    GB300_ATTENTION_RATE_SCALE,
    fitted_fp8_speedups,
    fitted_gb300_scale,
    fp8_attention_speedup,
    gb300_over_gb200_rates,
)
from moesim.engine.op_types import BlockDims, OpDtypes
from moesim.engine.ops import attention_ops, backward_s, op_s
from moesim.engine.training.fp8 import fp8_attention_ops
from moesim.errors import InputError
from moesim.loader import scenario_from_dict
from moesim.presets import HARDWARE
from moesim.simulate import simulate

#: Qwen3-30B-A3B's training scenario on 8 GB200 (FP8 as shipped in the validation folder).
QWEN3 = str(Path(__file__).resolve().parents[1] / "moesim" / "data" / "validation" / "qwen3-30b-a3b-h100-train.yaml")
#: gpt-oss-120b's training scenario (sliding windows of 128 keys on every other layer).
GPT_OSS_TRAIN = str(Path(__file__).resolve().parents[1] / "moesim" / "data" / "validation" / "gpt-oss-120b-h100-train.yaml")
GB200 = ["hardware.preset=gb200-nvl72", "hardware.node.devices_per_node=8", "hardware.cluster.nodes=1", "plan.dp=8",
         "plan.ep=8", "plan.microbatches=2", "workload.global_batch_seqs=16", "plan.moe_layer_host_us=0"]


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


def test_b300_preset_is_blackwell_ultra_at_the_hgx_b200s_peaks():
    d, b200 = HARDWARE["b300"]["device"], HARDWARE["b200"]["device"]
    assert d["peak_tflops"]["bf16"] == b200["peak_tflops"]["bf16"] and d["peak_tflops"]["fp8"] == b200["peak_tflops"]["fp8"]
    assert d["peak_tflops"]["fp4"] > 1.5 * b200["peak_tflops"]["fp4"]  # 14 against 9 PF dense NVFP4
    assert d["attention_rate_scale"] == GB300_ATTENTION_RATE_SCALE  # the GB300's doubled exponentials
    assert d["mem_gib"] > 1.35 * b200["mem_gib"] and HARDWARE["b300"]["node"]["devices_per_node"] == 8
    b300, hgx = _cm("b300"), _cm("b200", sustained_compute_fraction=1.0)  # the B200 before its power limit bites
    q = np.full(2, 4096.0)
    core = [cm.attention_batch_s(q, q, 128, 160, 128, paged=False) - cm.attention_launch_s for cm in (hgx, b300)]
    assert core[0] / core[1] == pytest.approx(GB300_ATTENTION_RATE_SCALE, rel=1e-6)


def test_training_attention_runs_the_scale_faster_and_decode_does_not_move():
    gb200, gb300 = _cm("gb200-nvl72", sustained_compute_fraction=1.0), _cm("gb300-nvl72")  # at the same clock
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


# ------------------------------------------------------------------ FP8 attention (plan.fp8_attention)

def test_the_shipped_fp8_speedups_are_the_medians_of_the_published_pairs():
    assert fitted_fp8_speedups() == FP8_ATTENTION_SPEEDUP
    fwd, bwd = FP8_ATTENTION_SPEEDUP[("hopper", "128")]
    assert fwd > 1.0 > bwd  # an H200's FP8 backward runs slower than its BF16 one
    assert all(f > 1.2 and b > 1.1 for (fam, _), (f, b) in FP8_ATTENTION_SPEEDUP.items() if fam != "hopper")


@pytest.mark.parametrize("name, head_dim, family_key", [
    ("NVIDIA B200 SXM 180GB", 128, ("blackwell", "128")), ("NVIDIA GB200 186GB", 160, ("blackwell", "wide")),
    ("NVIDIA GB300 288GB", 160, ("blackwell-ultra", "wide")), ("NVIDIA H100 SXM5 80GB", 64, ("hopper", "128"))])
def test_devices_and_head_widths_find_their_row(name, head_dim, family_key):
    assert fp8_attention_speedup(name, head_dim) == FP8_ATTENTION_SPEEDUP[family_key]


@pytest.mark.parametrize("name", ["NVIDIA H100 SXM5 80GB", "NVIDIA A100 SXM4 80GB", "Apple M2 Ultra"])
def test_unmeasured_or_unsupported_keeps_bf16_speed(name):
    assert fp8_attention_speedup(name, 160) == (1.0, 1.0)  # Hopper has no FP8 backward for 192-wide heads


def test_fp8_attention_op_runs_its_passes_at_the_measured_speedups():
    cm = _cm("gb200-nvl72")
    dims = BlockDims(d_model=2048, heads=32, head_dim=128, kv_heads=4, qkv_n=5120, o_k=4096)
    dt = OpDtypes(weights="fp8", gemm_in_bytes=1.0, act_bytes=2.0, act_dtype="bf16", attn_dtype="bf16", paged_kv=False)
    q = np.full(4, 4096.0)
    core = next(op for op in attention_ops(dims, dt, 4 * 4096.0, q, q) if op.name == "attn_core")
    (fast,) = fp8_attention_ops([core], (1.5, 1.7))
    base_f, fast_f = op_s(cm, core), op_s(cm, fast)
    assert base_f / fast_f == pytest.approx(1.5)
    assert backward_s(core, base_f) / backward_s(fast, fast_f) == pytest.approx(1.7)


def _step(**sets):
    s = moesim.load_scenario(QWEN3, [f"{k}={v}" for k, v in sets.items()] + GB200)
    return simulate(s).summary


def test_a_training_step_with_fp8_attention_is_faster_and_a_bf16_one_ignores_it():
    base, fast = _step(), _step(**{"plan.fp8_attention": "true"})
    assert fast["step_time_s"] < base["step_time_s"]
    assert fast["compute_s"] < base["compute_s"] and fast["alltoall_s"] == pytest.approx(base["alltoall_s"])
    bf16, bf16_flag = _step(**{"model.dtype": "bf16"}), _step(**{"model.dtype": "bf16", "plan.fp8_attention": "true"})
    assert bf16_flag["step_time_s"] == pytest.approx(bf16["step_time_s"], rel=1e-12)


def test_a_bad_fp8_attention_value_is_a_one_line_error():
    with pytest.raises(InputError) as e:
        moesim.load_scenario(QWEN3, ["plan.fp8_attention=maybe"])
    assert "plan.fp8_attention" in str(e.value) and "\n" not in str(e.value).strip()


def test_under_fp8_attention_a_sliding_window_layer_keeps_its_forward_saving_but_not_its_backwards():
    """cuDNN's FP8 backward does not skip the tiles outside the window (test_cudnn_sdpa.py): with
    plan.fp8_attention a gpt-oss local layer's backward attention costs a full layer's, its forward less."""
    from moesim.engine.training.layer_costs import ATT, layer_costs

    base = ["hardware.preset=gb200-nvl72", "hardware.node.devices_per_node=8", "hardware.cluster.nodes=1",
            "model.dtype=fp8", "plan.dp=8",
            "plan.pp=1", "plan.ep=8", "plan.microbatches=2", "workload.global_batch_seqs=16", "plan.recompute=none"]
    for fp8_attention in (True, False):
        s = moesim.load_scenario(GPT_OSS_TRAIN, [*base, f"plan.fp8_attention={str(fp8_attention).lower()}"])
        c = layer_costs(s, build_cost_model(s.hardware), None)
        local, full = (next(i for i in range(s.model.n_layers) if s.model.is_local_layer(i) == want) for want in (True, False))
        assert c.fwd_s[local, 0, ATT] < c.fwd_s[full, 0, ATT]
        if fp8_attention:
            assert c.bwd_s[local, 0, -1] == pytest.approx(c.bwd_s[full, 0, -1])
        else:
            assert c.bwd_s[local, 0, -1] < c.bwd_s[full, 0, -1]


@pytest.mark.parametrize("preset,family", [("h100-sxm", "hopper"), ("b200", "blackwell"), ("gb300-nvl72", "blackwell-ultra")])
def test_serving_fp8_attention_runs_a_prompt_at_the_measured_speedup_not_the_peaks(preset, family):
    """A prompt's attention over an FP8 KV cache (serving: dtype fp8, paged) is the BF16 kernel's time over
    cuDNN's measured FP8 forward speedup, not over the FP8/BF16 peak ratio (2x)."""
    cm = _cm(preset)
    q = np.full(4, 8192.0)  # long prompts: compute-bound
    bf16 = cm.attention_batch_s(q, q, 64, 128, 8) - cm.attention_launch_s
    fp8 = cm.attention_batch_s(q, q, 64, 128, 8, dtype="fp8", kv_bytes=1.0) - cm.attention_launch_s
    assert bf16 / fp8 == pytest.approx(FP8_ATTENTION_SPEEDUP[(family, "128")][0], rel=1e-6)
    assert bf16 / fp8 < 1.9


def test_serving_fp8_attention_keeps_the_fp8_peak_where_nothing_was_measured():
    """A device the benchmark did not time (an L40S) keeps the FP8 peak for FP8 attention: 2x the BF16 kernel."""
    cm = _cm("l40s")
    q = np.full(4, 8192.0)
    bf16 = cm.attention_batch_s(q, q, 64, 128, 8) - cm.attention_launch_s
    fp8 = cm.attention_batch_s(q, q, 64, 128, 8, dtype="fp8", kv_bytes=1.0) - cm.attention_launch_s
    peaks = cm.hw.device.peak_tflops["fp8"] / cm.hw.device.peak_tflops["bf16"]
    assert bf16 / fp8 == pytest.approx(peaks, rel=0.02)
