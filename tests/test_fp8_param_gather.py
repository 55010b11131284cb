"""plan.fp8_param_gather (Megatron's --fp8-param-gather): under FP8 training the ZeRO parameter all-gathers move
the FP8 weights, 1 byte a parameter, instead of their 16-bit copies, and no layer casts a weight (FP8 primary
weights); the gradient syncs keep their width and a
BF16 model ignores the field, as it ignores fp8_recipe. The after-step gather of ZeRO-1/2 is priced from the
same per-block gathers its exposed part comes from, so it can never be shorter than that part."""

from __future__ import annotations

import pytest

import moesim
from moesim.costmodel.model import build_cost_model
from moesim.engine.training.layer_costs import layer_costs
from moesim.engine.training.step import simulate_training
from moesim.errors import InputError
from moesim.resolve import deep_merge
from tests.test_uneven_stages import LLAMA3

#: LLAMA3's shape in FP8 over 4 nodes of 8 H100 as DP32 (the gathers cross the NICs), one micro-batch a step
FP8 = deep_merge(LLAMA3, {"model": {"dtype": "fp8", "n_layers": 8}, "hardware": {"cluster": {"nodes": 4}},
                          "plan": {"tp": 1, "pp": 1, "dp": 32, "microbatches": 1, "zero_stage": 1},
                          "workload": {"global_batch_seqs": 32}})


def _scenario(base: dict, **plan) -> moesim.Scenario:
    return moesim.scenario_from_dict(deep_merge(base, {"plan": plan}))


def test_the_gathers_move_one_byte_a_parameter_and_the_syncs_keep_theirs():
    wide, narrow = _scenario(FP8), _scenario(FP8, fp8_param_gather=True)
    cw, cn = (layer_costs(s, build_cost_model(s.hardware), None) for s in (wide, narrow))
    assert cn.gather_layer_bytes is not None
    sync_bytes = cn.dp_dense_bytes + cn.dp_expert_bytes
    assert cn.gather_layer_bytes == pytest.approx(sync_bytes / 2)  # 1-byte weights against 2-byte gradients
    assert (cn.dp_dense_s == cw.dp_dense_s).all() and (cn.dp_expert_s == cw.dp_expert_s).all()
    assert (cn.gather_layer_s < cw.dp_dense_s + cw.dp_expert_s).all()


def test_an_fp8_gather_shortens_the_gather_the_weight_casts_and_the_step():
    """FP8 primary weights: a smaller gather, and no layer casts a weight (an H100 still transposes it), so the
    compute shrinks by less than the casts' share; the gradient sync does not move."""
    base = simulate_training(_scenario(FP8)).summary
    fast = simulate_training(_scenario(FP8, fp8_param_gather=True)).summary
    assert fast["zero_gather_s"] < base["zero_gather_s"]
    assert fast["zero_gather_exposed_s"] < base["zero_gather_exposed_s"]
    assert fast["step_time_s"] < base["step_time_s"]
    assert 0.9 * base["compute_s"] < fast["compute_s"] < base["compute_s"]
    assert fast["dp_sync_s"] == pytest.approx(base["dp_sync_s"])


@pytest.mark.parametrize("overlap", [True, False])
def test_the_after_step_gather_is_never_shorter_than_its_exposed_part(overlap):
    for fp8_gather in (False, True):
        summary = simulate_training(_scenario(FP8, fp8_param_gather=fp8_gather, overlap_dp_comm=overlap)).summary
        assert summary["zero_gather_s"] >= summary["zero_gather_exposed_s"] - 1e-12
        if not overlap:  # nothing hides it: all of it waits
            assert summary["zero_gather_exposed_s"] == pytest.approx(summary["zero_gather_s"])


def test_a_bf16_model_ignores_the_field():
    bf16 = deep_merge(FP8, {"model": {"dtype": "bf16"}})
    a = simulate_training(_scenario(bf16)).summary
    b = simulate_training(_scenario(bf16, fp8_param_gather=True)).summary
    assert a["step_time_s"] == b["step_time_s"] and a["zero_gather_s"] == b["zero_gather_s"]


def test_a_bad_value_is_refused_in_one_line_naming_the_field():
    with pytest.raises(InputError) as err:
        moesim.load_scenario("llama-2-7b-a100-train", ["plan.fp8_param_gather=sometimes"])
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith("plan.fp8_param_gather")
