"""MXFP4 experts with MXFP8 activations (W4A8): TensorRT-LLM's gpt-oss MoE on Blackwell.

TensorRT-LLM's examples/models/core/gpt_oss/README.md: the MoE activations are bf16 on Hopper and mxfp8 on
Blackwell, whose block-scaled MMA multiplies the FP4 weights by FP8 activations at the FP8 rate; vLLM's and
SGLang's default Blackwell path (FlashInfer MXFP4 x BF16) keeps them 16-bit (``workload.mxfp4_activations``).
"""

from __future__ import annotations

import numpy as np
import pytest

from moesim.costmodel import build_cost_model
from moesim.costmodel.grouped_eff import padded_tokens
from moesim.engine.serving.decode_cost import IterationCost
from moesim.errors import InputError
from moesim.loader import scenario_from_dict
from moesim.precision import (
    MXFP4_MXFP8,
    expert_gemm_dtype,
    expert_precision,
    precision,
    summary_fields,
)

#: gpt-oss-120b's expert GEMMs on one GPU: gate and up fused (2 x 2880) over d_model 2880, 128 experts, top-4.
N, K, EXPERTS, TOP_K = 2 * 2880, 2880, 128, 4


def serve(preset: str = "b200", engine: str | None = "trtllm", activations: str = "auto"):
    return scenario_from_dict({
        "name": "w4a8", "model": {"preset": "gpt-oss-120b"},
        "hardware": {"preset": preset, "node": {"devices_per_node": 1}}, "plan": {"dp": 1, "tp": 1},
        "workload": {"kind": "serving", "engine": engine, "mxfp4_activations": activations,
                     "arrival": {"process": "batch", "n_requests": 4},
                     "prompt_tokens": {"dist": "fixed", "value": 256},
                     "output_tokens": {"dist": "fixed", "value": 32}}})


def test_w4a8_reads_mxfp4_weights_and_computes_at_the_fp8_peak_on_blackwell_only():
    b200, h100 = serve().hardware.device, serve("h100-sxm").hardware.device
    p = precision(MXFP4_MXFP8, b200)
    assert (p.compute_dtype, p.act_bytes, p.weight_only) == ("fp8", 1.0, False)
    assert p.weight_bytes == pytest.approx(4.25 / 8) and p.narrow_weights
    assert "mxfp8 activations" in p.note
    # no FP4-capable tensor cores: the weights are converted to 16-bit, as plain mxfp4 is
    assert precision(MXFP4_MXFP8, h100).compute_dtype == "bf16" and precision(MXFP4_MXFP8, h100).weight_only
    assert not precision("fp8", b200).narrow_weights and precision("mxfp4", b200).narrow_weights


@pytest.mark.parametrize(("preset", "engine", "activations", "expected"), [
    ("b200", "trtllm", "auto", MXFP4_MXFP8),   # TensorRT-LLM on Blackwell
    ("gb200-nvl72", "trtllm", "auto", MXFP4_MXFP8),
    ("b200", "vllm", "auto", "mxfp4"),         # FlashInfer MXFP4 x BF16, vLLM's default
    ("b200", None, "auto", "mxfp4"),
    ("h100-sxm", "trtllm", "auto", "mxfp4"),   # Hopper: bf16 activations (Triton / CUTLASS W4A16)
    ("b200", "vllm", "mxfp8", MXFP4_MXFP8),    # vLLM --quantization-config.moe.activation mxfp8
    ("b200", "trtllm", "bf16", "mxfp4"),
])
def test_the_engine_and_device_choose_the_activations(preset, engine, activations, expected):
    s = serve(preset, engine, activations)
    assert expert_gemm_dtype(s) == expected
    assert expert_precision(s).model_dtype == expected
    cost = IterationCost(s, build_cost_model(s.hardware), np.random.default_rng(0), max_tokens=64)
    assert cost.dtypes.expert_weights == expected  # what the serving iteration prices


def test_mxfp8_activations_need_fp4_tensor_cores():
    with pytest.raises(InputError, match=r"workload.mxfp4_activations = mxfp8: needs FP4-capable tensor cores"):
        serve("h100-sxm", "trtllm", "mxfp8")


def test_the_summary_says_how_the_experts_run():
    assert "mxfp8 activations at the fp8 peak" in summary_fields(serve())["precision_note"]
    assert "weight-only" in summary_fields(serve(engine="vllm"))["precision_note"]


def grouped_us(cm, tokens: int, dtype: str) -> float:
    per_expert = np.full(EXPERTS, tokens * TOP_K / EXPERTS)
    return float(np.sum(cm.grouped_gemm_s(per_expert, N, K, dtype))) * 1e6


def test_w4a8_streams_its_4_bit_weights_and_computes_at_the_fp8_rate():
    """Decode (a few rows per expert): the 4.25-bit weight stream sets the time, about half of MXFP8's 8.25 bits;
    a prompt chunk (128 rows per expert and more): FP8 math, as fast as the 8-bit kernel and well ahead of the
    BF16 math of W4A16."""
    cm = build_cost_model(serve().hardware)
    assert grouped_us(cm, 16, MXFP4_MXFP8) < 0.65 * grouped_us(cm, 16, "fp8")
    assert grouped_us(cm, 16, MXFP4_MXFP8) == pytest.approx(grouped_us(cm, 16, "mxfp4"), rel=0.15)
    big_w4a8, big_fp8, big_w4a16 = (grouped_us(cm, 16384, d) for d in (MXFP4_MXFP8, "fp8", "mxfp4"))
    assert big_w4a8 == pytest.approx(big_fp8, rel=0.05)
    assert big_w4a8 < 0.7 * big_w4a16


def test_w4a8_pads_each_expert_to_tensorrt_llms_row_tile():
    """TensorRT-LLM's block-scaled MoE kernels pick a row tile from the experts' mean rows (8-128), so a decode
    of ~2 rows per expert pads to 8 rows, not to the 64 of a Hopper warpgroup."""
    cm = build_cost_model(serve().hardware)
    p = precision(MXFP4_MXFP8, serve().hardware.device)
    assert float(np.ravel(cm.row_tile(np.full(EXPERTS, 2.0), p))[0]) == 8.0
    assert float(np.ravel(cm.row_tile(np.full(EXPERTS, 400.0), p))[0]) == 128.0
    assert cm.row_tile(np.full(EXPERTS, 2.0), precision("fp8", serve().hardware.device)) == 64


def test_padding_takes_a_tile_per_row_of_experts():
    tiles = np.array([[8.0], [64.0]])
    assert padded_tokens(np.array([[3.0, 0.0, 9.0], [3.0, 0.0, 9.0]]), tiles).tolist() == [[8, 0, 16], [64, 0, 64]]
    assert padded_tokens(np.array([2.5, 9.0]), 1).tolist() == [2.5, 9.0]  # a dense GEMM: expected rows unrounded


def test_the_datasheet_cost_model_pads_w4a8_to_the_same_tile():
    """A device priced by its datasheet roofline (no profile) takes TensorRT-LLM's MoE row tile for W4A8 too."""
    datasheet = _cost_with(default_profile="datasheet")
    profiled = build_cost_model(serve().hardware)
    assert type(datasheet).__name__ == "RooflineCostModel"
    p = precision(MXFP4_MXFP8, serve().hardware.device)
    decode = np.full(EXPERTS, 2.0)
    assert float(np.ravel(datasheet.row_tile(decode, p))[0]) == float(np.ravel(profiled.row_tile(decode, p))[0]) == 8.0
    # an 8-row tile wastes less of a 2-row expert's compute than the 64-row MMA tile would
    eight = datasheet.grouped_efficiency(decode, N, K, tile_m=datasheet.row_tile(decode, p))
    assert float(eight) > float(datasheet.grouped_efficiency(decode, N, K))


def _cost_with(**device):
    s = serve()
    hw = s.hardware.model_copy(update={"device": s.hardware.device.model_copy(update=device)})
    return build_cost_model(hw)


def test_an_unknown_activation_format_is_refused_in_one_line_naming_the_field_and_what_is_allowed():
    with pytest.raises(InputError) as err:
        serve(activations="fp4")
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith("workload.mxfp4_activations") and "'mxfp8'" in msg
