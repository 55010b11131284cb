"""plan.fp8_output_proj (Megatron-core's fp8_output_proj): under FP8 training the output head's GEMM runs
at the FP8 rate, so the head op (and each MTP module's head pass) gets shorter by the GEMM's saving, the
last pipeline stage with it; a BF16 model ignores the field, as it ignores fp8_recipe."""

from __future__ import annotations

import pytest

import moesim
from moesim.costmodel.model import build_cost_model
from moesim.engine.training.layer_costs import layer_costs
from moesim.engine.training.step import simulate_training
from moesim.errors import InputError
from moesim.loader import load_scenario
from moesim.resolve import deep_merge
from tests.test_uneven_stages import LLAMA3

#: LLAMA3's shape in FP8 on one node of 8 H100, TP8 PP1: the 128,256-entry head is the largest GEMM
FP8 = deep_merge(LLAMA3, {"model": {"dtype": "fp8", "n_layers": 8}, "hardware": {"cluster": {"nodes": 1}},
                          "plan": {"pp": 1, "microbatches": 2}, "workload": {"global_batch_seqs": 2}})


def _scenario(base: dict, **plan) -> moesim.Scenario:
    return moesim.scenario_from_dict(deep_merge(base, {"plan": plan}))


def _head_s(s: moesim.Scenario) -> tuple[float, float]:
    return layer_costs(s, build_cost_model(s.hardware), None).head_s


def test_the_head_gemm_runs_at_the_fp8_rate():
    s_bf16, s_fp8 = _scenario(FP8), _scenario(FP8, fp8_output_proj=True)
    cm = build_cost_model(s_fp8.hardware)
    m, tp = s_fp8.model, s_fp8.plan.tp
    tokens = s_fp8.workload.seq_len  # one micro-batch of one sequence
    n = round(m.vocab_size / tp)
    saved = float(cm.gemm_s(tokens, n, m.d_model, "bf16")) - float(cm.gemm_s(tokens, n, m.d_model, "fp8"))
    assert saved > 0  # the FP8 GEMM is faster at this size
    (f0, b0), (f1, b1) = _head_s(s_bf16), _head_s(s_fp8)
    assert f0 - f1 == pytest.approx(saved, rel=1e-9)
    assert b0 - b1 == pytest.approx(2 * saved, rel=1e-9)  # backward: input and weight gradients


def test_an_fp8_head_shortens_the_step_and_nothing_else_moves():
    base = simulate_training(_scenario(FP8)).summary
    fast = simulate_training(_scenario(FP8, fp8_output_proj=True)).summary
    assert fast["step_time_s"] < base["step_time_s"]
    assert fast["alltoall_s"] == base["alltoall_s"] and fast["dp_sync_s"] == base["dp_sync_s"]


def test_each_mtp_module_runs_its_head_pass_in_fp8_too():
    mtp = deep_merge(FP8, {"workload": {"mtp_layers": 1}})
    (f0, _), (f1, _) = _head_s(_scenario(FP8)), _head_s(_scenario(FP8, fp8_output_proj=True))
    (g0, _), (g1, _) = _head_s(_scenario(mtp)), _head_s(_scenario(mtp, fp8_output_proj=True))
    assert g0 - g1 == pytest.approx(2 * (f0 - f1), rel=1e-9)  # the model's head and the module's


def test_a_bf16_model_ignores_the_field():
    bf16 = deep_merge(FP8, {"model": {"dtype": "bf16"}})
    assert _head_s(_scenario(bf16)) == _head_s(_scenario(bf16, fp8_output_proj=True))


@pytest.mark.parametrize("value", ["maybe", "3"])
def test_a_bad_value_is_one_line_naming_the_field(value):
    with pytest.raises(InputError) as info:
        load_scenario("mixtral-8x7b-h100-train", [f"plan.fp8_output_proj={value}"])
    msg = str(info.value)
    assert "\n" not in msg and "plan.fp8_output_proj" in msg and "boolean" in msg
