"""Quantized weights: int8/int4 weight-only, fp8 native or weight-only by device (moesim.precision)."""

from __future__ import annotations

import numpy as np
import pytest

import moesim
from moesim.accounting import GIB, decode_bytes_per_token, param_counts
from moesim.check import summary
from moesim.costmodel import build_cost_model, cost_model
from moesim.engine.serving.decode_cost import IterationCost
from moesim.errors import InputError
from moesim.loader import scenario_from_dict
from moesim.memory import memory_report
from moesim.precision import compute_dtype, precision, scenario_precision
from moesim.report import summary_table
from moesim.schemas import Scenario

DATASHEET = "Datasheet GPU"  # a renamed device without a shipped profile: the datasheet roofline


def serve(dtype: str, hw: str = "a100-80gb", model: str = "llama-2-7b", device_name: str | None = None,
          prompt: int = 512, output: int = 64) -> Scenario:
    """A one-device serving scenario of one request."""
    hardware = {"preset": hw, "node": {"devices_per_node": 1}}
    if device_name:
        hardware["device"] = {"name": device_name, "default_profile": "datasheet"}  # not the preset's
    return scenario_from_dict({
        "name": "quant", "model": {"preset": model, "dtype": dtype}, "hardware": hardware, "plan": {"dp": 1},
        "workload": {"kind": "serving", "arrival": {"process": "batch", "n_requests": 1},
                     "prompt_tokens": {"dist": "fixed", "value": prompt},
                     "output_tokens": {"dist": "fixed", "value": output}}})


def decode_step_s(s: Scenario, batch: int = 1, context: int = 513) -> float:
    """Seconds of one pure decode iteration of ``batch`` sequences with ``context`` cached tokens each."""
    cost = IterationCost(s, build_cost_model(s.hardware), np.random.default_rng(0), max_tokens=max(batch, 64))
    return cost.time_s(np.ones(batch, dtype=int), np.full(batch, context), batch)[0]


# ---------------------------------------------------------------- the rule and the bytes
@pytest.mark.parametrize("model_dtype,device_dtypes,expected", [
    ("int4", ("fp32", "bf16", "fp16"), "bf16"),
    ("int8", ("fp32", "fp16"), "fp16"),  # no bf16 peak: fp16 math
    ("fp8", ("fp32", "bf16", "fp16", "fp8"), "fp8"),
    ("fp8", ("fp32", "bf16", "fp16"), "bf16"),  # A100, M2: weight-only fp8
    ("fp16", ("fp32", "bf16"), "fp16"),  # native floats are never changed
])
def test_compute_dtype_rule(model_dtype, device_dtypes, expected):
    assert compute_dtype(model_dtype, device_dtypes) == expected


def test_presets_list_their_compute_dtypes():
    assert "fp8" in serve("bf16", "h100-sxm").hardware.device.compute_dtypes
    assert "fp8" in serve("bf16", "h200").hardware.device.compute_dtypes
    for hw in ("a100-80gb", "a100-40gb", "m2", "m2-ultra"):
        dev = serve("bf16", hw).hardware.device
        assert "fp8" not in dev.compute_dtypes and "bf16" in dev.compute_dtypes


def test_bits_per_weight_group128_on_cuda_q4_0_on_apple():
    m2u, a100 = scenario_precision(serve("int4", "m2-ultra")), scenario_precision(serve("int4", "a100-80gb"))
    assert m2u.weight_bytes == pytest.approx(4.5 / 8)  # llama.cpp block_q4_0: 18 bytes per 32 weights
    assert a100.weight_bytes == pytest.approx(4.125 / 8)  # 4 bits + one fp16 scale per 128
    assert scenario_precision(serve("int8", "m2-ultra")).weight_bytes == pytest.approx(8.5 / 8)  # block_q8_0
    assert scenario_precision(serve("int8", "h100-sxm")).weight_bytes == pytest.approx(8.125 / 8)
    for p in (m2u, a100):
        assert p.weight_only and p.compute_dtype == "bf16" and p.act_bytes == p.kv_bytes == 2.0
    # The accounting holds the weights at those bytes.
    s = serve("int4", "m2-ultra", "mixtral-8x7b")
    assert memory_report(s).weights_gib == pytest.approx(param_counts(s.model).total * 4.5 / 8 / GIB)


def test_weight_bits_override_and_unknown_key():
    def with_bits(bits: dict) -> Scenario:
        raw = serve("int4").model_dump(mode="json")
        raw["hardware"]["device"]["weight_bits"] = bits
        return scenario_from_dict(raw)

    s = with_bits({"int4": 4.25})
    assert scenario_precision(s).weight_bytes == pytest.approx(4.25 / 8)
    assert s.hardware.device.bits_per_weight("int8") == pytest.approx(8.125)  # the rest keep the default
    with pytest.raises(InputError, match="weight_bits.int3"):
        with_bits({"int3": 3})
    with pytest.raises(InputError, match="weight_bits.int4"):
        with_bits({"int4": 64})


def test_kv_cache_and_activations_stay_16bit_under_weight_only():
    fp16, int4 = summary(serve("fp16")), summary(serve("int4"))
    assert int4["kv_cache_bytes_per_token"] == fp16["kv_cache_bytes_per_token"]
    assert int4["memory"]["activations_gib"] == pytest.approx(fp16["memory"]["activations_gib"])
    assert int4["memory"]["weights_gib"] == pytest.approx(fp16["memory"]["weights_gib"] * 4.125 / 16)
    # fp8 on an H100 keeps its fp8 KV cache; on an A100 (weight-only) the cache is 16-bit.
    h100 = summary(serve("fp8", "h100-sxm"))["kv_cache_bytes_per_token"]
    assert summary(serve("fp8"))["kv_cache_bytes_per_token"] == 2 * h100 == fp16["kv_cache_bytes_per_token"]


# ---------------------------------------------------------------- decode and prefill speed
def test_batch1_decode_int8_about_half_int4_about_a_quarter_of_fp16_on_a100():
    fp16 = decode_step_s(serve("fp16"))  # the shipped A100 profile, as users get it
    r8, r4 = decode_step_s(serve("int8")) / fp16, decode_step_s(serve("int4")) / fp16
    # Bandwidth-bound: the weight bytes drop to 8.125/16 and 4.125/16; launches and the 16-bit KV
    # cache and activations do not shrink, so the ratios sit a little above the byte ratios.
    assert 8.125 / 16 < r8 <= 0.62
    assert 4.125 / 16 < r4 <= 0.38
    assert r4 < r8 < 1


def test_decode_time_saved_is_weight_bytes_saved_over_bandwidth():
    """Datasheet roofline at batch 1: every GEMM is memory-bound, so int4 saves exactly its bytes."""
    fp16, int4 = serve("fp16", device_name=DATASHEET), serve("int4", device_name=DATASHEET)
    dev = fp16.hardware.device
    saved_bytes = (decode_bytes_per_token(fp16.model, 513, prec=scenario_precision(fp16))
                   - decode_bytes_per_token(int4.model, 513, prec=scenario_precision(int4)))
    assert saved_bytes == pytest.approx(param_counts(fp16.model).total * (2 - 4.125 / 8), rel=0.03)
    saved_s = decode_step_s(fp16) - decode_step_s(int4)
    assert saved_s == pytest.approx(saved_bytes / (dev.mem_bw_gbps * 1e9 * dev.memory_efficiency), rel=1e-3)


@pytest.mark.parametrize("device_name", [None, DATASHEET])
def test_fp8_uses_the_fp8_peak_on_h100_only(device_name):
    h100, a100 = serve("fp8", "h100-sxm", device_name=device_name), serve("fp8", device_name=device_name)
    cm_h, cm_a = build_cost_model(h100.hardware), build_cost_model(a100.hardware)
    assert cm_h.precision("fp8").compute_dtype == "fp8" and not cm_h.precision("fp8").weight_only
    assert cm_a.precision("fp8").compute_dtype == "bf16" and cm_a.precision("fp8").weight_only
    assert "no fp8 tensor cores" in cm_a.precision("fp8").note
    prefill = (8192, 14336, 4096)  # a compute-bound GEMM
    assert cm_h.gemm_s(*prefill, "fp8") < 0.6 * cm_h.gemm_s(*prefill, "bf16")
    assert cm_a.gemm_s(*prefill, "fp8") == pytest.approx(cm_a.gemm_s(*prefill, "bf16"), rel=0.02)
    assert cm_a.gemm_s(1, 14336, 4096, "fp8") < 0.7 * cm_a.gemm_s(1, 14336, 4096, "bf16")  # weights at 1 byte


def test_weight_only_fp8_on_a100_never_slower_than_bf16():
    for batch, context in ((1, 513), (4, 513), (64, 600), (256, 600), (2048, 600)):
        bf16, fp8 = decode_step_s(serve("bf16"), batch, context), decode_step_s(serve("fp8"), batch, context)
        assert fp8 <= bf16 * (1 + 1e-9), batch
        if batch == 1:
            assert fp8 < 0.65 * bf16
        if batch >= 256:  # compute-bound: the same 16-bit math
            assert fp8 == pytest.approx(bf16, rel=0.03)


def test_datasheet_and_profile_gemms_agree_on_weight_only_savings():
    """Both cost-model paths on an A100: a batch-1 int4 GEMM is 3-4x faster than 16-bit; a large one is slower, held
    at Marlin's 141 TFLOP/s plateau, as vLLM PR #2497 measured it (0.60-0.66x the FP16 GEMM's speed at 1,024-4,000
    tokens: 1.5-1.7x its time). Without the bound it would take the 16-bit GEMM's time."""
    hw = serve("bf16").hardware
    for cm in (cost_model(hw), build_cost_model(hw)):
        one = cm.gemm_s(1, 11008, 4096, "int4") / cm.gemm_s(1, 11008, 4096, "bf16")
        big = cm.gemm_s(8192, 11008, 4096, "int4") / cm.gemm_s(8192, 11008, 4096, "bf16")
        assert 4.125 / 16 <= one < 0.35
        assert 1.4 < big < 1.8
    unbounded = hw.model_copy(update={"device": hw.device.model_copy(update={"weight_only_peak_fraction": None})})
    for cm in (cost_model(unbounded), build_cost_model(unbounded)):
        big = cm.gemm_s(8192, 11008, 4096, "int4") / cm.gemm_s(8192, 11008, 4096, "bf16")
        assert big == pytest.approx(1.0, rel=0.01)


# ---------------------------------------------------------------- memory and summaries
def test_mixtral_int4_fits_one_a100_80gb_and_fp16_does_not():
    assert memory_report(serve("int4", model="mixtral-8x7b")).fits
    assert not memory_report(serve("fp16", model="mixtral-8x7b")).fits


def test_summaries_name_the_compute_dtype_and_explain_weight_only():
    r = moesim.simulate(serve("int4", prompt=16, output=8))
    sm = r.summary
    assert sm["compute_dtype"] == "bf16" and sm["weight_bytes_per_param"] == pytest.approx(4.125 / 8)
    assert "weight-only" in sm["precision_note"] and "NVIDIA A100" in sm["precision_note"]
    native = moesim.simulate(serve("fp8", "h100-sxm", prompt=16, output=8)).summary
    assert native["compute_dtype"] == "fp8" and native["precision_note"] == ""
    acc = summary(serve("fp8"))
    assert acc["compute_dtype"] == "bf16" and "no fp8 tensor cores" in acc["precision_note"]
    # The tables render the new keys: bits next to bytes, the note as text, no empty note row.
    from rich.console import Console

    console = Console(width=200, record=True)
    console.print(summary_table("t", sm))
    console.print(summary_table("n", native))
    text = console.export_text()
    assert "4.125 bits" in text and "weight-only" in text and text.count("precision_note") == 1


def test_training_mfu_dtype_peak_is_against_the_compute_dtype_peak():
    """``mfu_dtype_peak`` divides by the compute dtype's peak; ``mfu`` by the bf16 peak (Megatron / NeMo)."""
    s = scenario_from_dict({
        "name": "fp8-train", "model": {"preset": "llama-2-7b", "dtype": "fp8", "n_layers": 2},
        "hardware": {"preset": "h100-sxm", "node": {"devices_per_node": 1}}, "plan": {"dp": 1},
        "workload": {"kind": "training", "global_batch_seqs": 1, "seq_len": 512, "steps": 1}})
    sm = moesim.simulate(s).summary
    assert sm["compute_dtype"] == "fp8"
    flops = sm["model_tflops_per_device"] * 1e12
    assert sm["mfu_dtype_peak"] == pytest.approx(flops / s.hardware.device.peak_flops("fp8"))
    assert sm["mfu"] == pytest.approx(flops / s.hardware.device.peak_flops("bf16"))


# ---------------------------------------------------------------- what is refused
def _train(dtype: str, hw: str) -> dict:
    return {"model": {"preset": "llama-2-7b", "dtype": dtype}, "hardware": {"preset": hw},
            "plan": {"dp": 8}, "workload": {"kind": "training", "global_batch_seqs": 8, "seq_len": 512}}


@pytest.mark.parametrize("dtype,hw,needle", [
    ("int4", "h100-sxm", "model.dtype = int4"),
    ("int8", "a100-80gb", "model.dtype = int8"),
    ("fp8", "a100-80gb", "fp8 tensor cores"),
    ("nvfp4", "h100-sxm", "fp4 tensor cores"),
    ("mxfp4", "b200", "model.dtype = mxfp4"),
])
def test_training_rejects_weight_only_dtypes(dtype, hw, needle):
    with pytest.raises(InputError) as exc:
        scenario_from_dict(_train(dtype, hw))
    msg = str(exc.value)
    assert needle in msg and "model.dtype" in msg and "allowed" in msg and "\n" not in msg


def test_training_accepts_fp8_where_the_device_has_it():
    assert scenario_from_dict(_train("fp8", "h100-sxm")).model.dtype == "fp8"


def test_json_schema_lists_int8_and_int4():
    dtype = Scenario.model_json_schema()["$defs"]["ModelSpec"]["properties"]["dtype"]
    assert {"int8", "int4"} <= set(dtype["enum"])


def test_device_free_accounting_assumes_native_fp8():
    """Functions given only a model (no device) keep today's fp8 bytes and add scales to int4."""
    s = serve("fp8", "h100-sxm")
    assert precision("fp8").kv_bytes == 1.0 and precision("int4").weight_bytes == pytest.approx(4.125 / 8)
    assert decode_bytes_per_token(s.model) == pytest.approx(decode_bytes_per_token(s.model, prec=scenario_precision(s)))
