"""NVFP4 on Blackwell: 4.5-bit weights, GEMMs at the FP4 peak through a kernel model fitted on
published timings (costmodel/fp4.py), an FP8 KV cache; weight-only elsewhere; serving only."""

from __future__ import annotations

from pathlib import Path

import pytest

import moesim
from moesim.costmodel import build_cost_model
from moesim.costmodel.fp4 import (
    AO_B200_BW,
    AO_B200_NVFP4_S,
    AO_B200_PEAK_FLOPS,
    FP4_COMPUTE_EFFICIENCY,
    FP4_FIXED_S,
    FP4_GROUPED_COMPUTE_EFFICIENCY,
    NVFP4_BYTES,
    OUT_BYTES,
    fp4_gemm_s,
    moe_tile_rows,
)
from moesim.costmodel.sustained import B200_SUSTAINED_COMPUTE_FRACTION
from moesim.errors import InputError
from moesim.precision import precision
from moesim.presets import HARDWARE
from moesim.schemas import DeviceSpec, HardwareSpec

ROOT = Path(__file__).resolve().parents[1]
QWEN = ROOT / "moesim" / "data" / "validation" / "qwen3-30b-a3b-b200-fp4-offline.yaml"


def _cost(preset: str):
    return build_cost_model(HardwareSpec(**HARDWARE[preset]))


def test_on_blackwell_weights_and_gemm_inputs_are_fp4_and_the_kv_cache_fp8():
    p = precision("nvfp4", DeviceSpec(**HARDWARE["b200"]["device"]))
    assert (p.compute_dtype, p.weight_bytes, p.act_bytes, p.kv_bytes) == ("fp4", 4.5 / 8, 0.5, 1.0)
    assert not p.weight_only and p.note == "" and p.act_dtype == "bf16"


def test_without_fp4_tensor_cores_nvfp4_runs_weight_only():
    p = precision("nvfp4", DeviceSpec(**HARDWARE["h100-sxm"]["device"]))
    assert p.weight_only and p.compute_dtype == "bf16" and p.weight_bytes == 4.5 / 8 and p.kv_bytes == 2.0
    assert "no fp4 tensor cores" in p.note


def test_the_kernel_model_reproduces_the_published_timings_within_16_percent():
    assert 4e-6 < FP4_FIXED_S < 7e-6 and 0.5 < FP4_COMPUTE_EFFICIENCY < 0.7
    for n, measured in AO_B200_NVFP4_S:
        t = float(fp4_gemm_s(2.0 * n**3, n * n * (2 * NVFP4_BYTES + OUT_BYTES), AO_B200_PEAK_FLOPS, AO_B200_BW, 1e9))
        assert t == pytest.approx(measured, rel=0.16)


def test_fp4_gemms_read_a_quarter_of_bf16_bytes_and_run_faster_than_fp8():
    b200 = _cost("b200")
    n, k = 57344, 8192  # Llama 70B's gate+up projection
    for m in (1, 64, 512, 4096):
        fp4, fp8 = float(b200.gemm_s(m, n, k, "nvfp4")), float(b200.gemm_s(m, n, k, "fp8"))
        assert fp4 < fp8
    # a decode GEMM is bound by its 4.5-bit weights: about their bytes at the streaming efficiency
    bw = HARDWARE["b200"]["device"]["mem_bw_gbps"] * 1e9
    weights_s = n * k * NVFP4_BYTES / bw
    assert weights_s < float(b200.gemm_s(1, n, k, "nvfp4")) < 2.0 * weights_s + FP4_FIXED_S
    # grouped: one fixed latency per call, the busy experts' bytes streamed, then their rows padded to the
    # call's tile computed at the grouped fraction of the FP4 peak (costmodel.fp4.fp4_grouped_gemm_s)
    assert float(b200.grouped_gemm_s([0.0, 0.0], 1536, 2048, "nvfp4")) == 0.0
    one = float(b200.grouped_gemm_s([200.0, 0.0], 1536, 2048, "nvfp4"))
    two = float(b200.grouped_gemm_s([200.0, 200.0], 1536, 2048, "nvfp4"))
    mem = b200.profile.gemm_memory_efficiency
    act_bytes = precision("nvfp4", DeviceSpec(**HARDWARE["b200"]["device"])).act_bytes
    stream = (200 * (1536 + 2048) * act_bytes + 1536 * 2048 * NVFP4_BYTES) / (bw * mem)
    # one busy expert of two: mean rows 100 -> 130 -> a 128-row tile, so 200 rows pad to 256
    assert moe_tile_rows(100.0) == 128.0 and moe_tile_rows(200.0) == 128.0 and moe_tile_rows(2.0) == 8.0
    # at the FP4 peak the B200 sustains under load (costmodel/sustained.py)
    compute = 2.0 * 256 * 1536 * 2048 / (9000e12 * B200_SUSTAINED_COMPUTE_FRACTION * FP4_GROUPED_COMPUTE_EFFICIENCY)
    assert one == pytest.approx(FP4_FIXED_S + stream + compute, rel=1e-9)
    assert two - one == pytest.approx(stream + compute, rel=1e-9)


def test_serving_nvfp4_on_a_b200_runs_and_training_needs_fp4_tensor_cores():
    s = moesim.load_scenario(QWEN, ["workload.arrival.n_requests=200"])
    r = moesim.simulate(s)
    assert r.summary["compute_dtype"] == "fp4" and r.summary["output_tokens_per_s"] > 0
    train = ROOT / "scenarios" / "mixtral-8x7b-h100-train.yaml"
    with pytest.raises(InputError, match=r"model.dtype = nvfp4: training in nvfp4 needs fp4 tensor cores; NVIDIA H100"):
        moesim.load_scenario(train, ["model.dtype=nvfp4"])
    assert moesim.load_scenario(train, ["model.dtype=nvfp4", "hardware.preset=b200"]).model.dtype == "nvfp4"


def test_attention_runs_at_the_fp8_peak_not_fp4s():
    """No FP4 attention kernel: an NVFP4 model's prompt attention costs what an FP8 model's does
    (same FP8 KV cache, QK^T and PV at the FP8 peak), while its GEMMs run at FP4."""
    import numpy as np

    from moesim.engine.serving.decode_cost import IterationCost

    assert precision("nvfp4", DeviceSpec(**HARDWARE["b200"]["device"])).attention_dtype == "fp8"
    assert precision("mxfp4", DeviceSpec(**HARDWARE["h100-sxm"]["device"])).attention_dtype == "mxfp4"  # bf16 math

    def attention(dtype: str) -> float:
        s = moesim.load_scenario(QWEN, [f"model.dtype={dtype}"])
        cost = IterationCost(s, build_cost_model(s.hardware), np.random.default_rng(0), max_tokens=64)
        return cost.attention_s(np.array([8192]), np.array([8192]))

    assert attention("nvfp4") == pytest.approx(attention("fp8"), rel=1e-12)


def test_attention_over_a_16_bit_cache_runs_at_the_16_bit_peak():
    """An FP8 model whose KV cache is BF16 (SGLang's default for FP8 checkpoints) multiplies 16-bit K
    and V: its prompt attention costs what a BF16 model's does, and more than over an FP8 cache."""
    import numpy as np

    from moesim.engine.serving.decode_cost import IterationCost

    fp8 = DeviceSpec(**HARDWARE["h100-sxm"]["device"])
    assert precision("fp8", fp8).attention_dtype == "fp8"

    def attention(*overrides: str) -> float:
        s = moesim.load_scenario(QWEN, ["hardware.preset=h100-sxm", *overrides])
        cost = IterationCost(s, build_cost_model(s.hardware), np.random.default_rng(0), max_tokens=64)
        return cost.attention_s(np.array([8192]), np.array([8192]))

    over_bf16 = attention("model.dtype=fp8", "workload.kv_cache_dtype=bf16")
    assert over_bf16 == pytest.approx(attention("model.dtype=bf16"), rel=1e-12)
    assert over_bf16 > 1.3 * attention("model.dtype=fp8", "workload.kv_cache_dtype=fp8")
