"""Multi-token prediction in training (``workload.mtp_layers``) and per-chunk pipeline layouts
(``plan.pipeline_layout``): the FLOPs against Megatron-core's own count, the MTP module's place and
price on the loss's stage, the layout's chunks, and the one-line errors."""

from __future__ import annotations

import numpy as np
import pytest

import moesim
from moesim.accounting import flops_per_token, mtp_flops_per_token
from moesim.engine.training.layer_costs import layer_costs
from moesim.engine.training.layer_split import layout_counts
from moesim.engine.training.schedules import schedule_for
from moesim.engine.training.step import simulate_training
from moesim.errors import InputError
from moesim.finetune import step_flops_per_token
from moesim.loader import load_scenario
from moesim.resolve import deep_merge
from moesim.schemas.plan import PlanSpec
from moesim.serving_reserve import CUDA_UNSEEN_GIB
from moesim.train_reserve import held_gib
from tests.test_uneven_stages import MOE, scenario

#: Megatron-Bridge prints 259.6 model GFLOP per token for its DeepSeek-V3 runs at sequence 4096 with
#: one MTP module (the TRN-26 row's conversion, moesim/data/validation.csv).
MEGATRON_DSV3_GFLOP = 259.6


def moe_with(**workload) -> moesim.Scenario:
    return moesim.scenario_from_dict(deep_merge(MOE, {"workload": workload}))


def test_deepseek_v3_flops_with_one_mtp_module_match_megatrons_count():
    s = load_scenario("deepseek-v3-h800-train")
    m = s.model
    with_mtp = step_flops_per_token(m, s.workload.trainable, 4096, mtp_layers=1) / 1e9
    assert with_mtp == pytest.approx(MEGATRON_DSV3_GFLOP, rel=0.01)
    assert mtp_flops_per_token(m, 4096, 0) == 0.0
    # the module is one MoE block, a projection and a head pass: ~4 % of the model's forward
    assert 0.03 < mtp_flops_per_token(m, 4096, 1) / flops_per_token(m, 4096) < 0.05
    assert mtp_flops_per_token(m, 4096, 2) == pytest.approx(2 * mtp_flops_per_token(m, 4096, 1))


def test_mtp_joins_the_head_op_with_the_last_layers_price():
    """The head op grows by the last layer's forward (backward) plus another head pass and the
    projection; the layers' own costs do not move."""
    base, mtp = moe_with(), moe_with(mtp_layers=1)
    routing = None
    a = layer_costs(base, moesim.costmodel.build_cost_model(base.hardware), routing)
    b = layer_costs(mtp, moesim.costmodel.build_cost_model(mtp.hardware), routing)
    assert np.array_equal(a.fwd_s, b.fwd_s) and np.array_equal(a.bwd_s, b.bwd_s)
    last = a.fwd_s.shape[0] - 1
    block_f = float(np.mean(a.fwd_s[last].sum(axis=-1) + a.straggler_fwd_s[last]))
    extra_f = b.head_s[0] - a.head_s[0]
    assert extra_f > a.head_s[0] + block_f  # the head again, the block and a projection GEMM
    assert extra_f < 1.5 * (a.head_s[0] + block_f)
    assert b.head_s[1] - a.head_s[1] > a.head_s[1]
    assert b.head_opt_params > a.head_opt_params and b.head_dp_bytes > a.head_dp_bytes


def test_mtp_slows_the_step_and_counts_in_mfu():
    a, b = simulate_training(moe_with()).summary, simulate_training(moe_with(mtp_layers=1)).summary
    assert b["step_time_s"] > a["step_time_s"]
    # MFU counts the module's FLOPs: model FLOPs per second grow by more than the step shrank them
    assert b["model_tflops_per_device"] * b["step_time_s"] > a["model_tflops_per_device"] * a["step_time_s"]


def test_mtp_is_for_pre_training_only():
    with pytest.raises(InputError) as info:
        moe_with(mtp_layers=1, trainable={"mode": "lora", "rank": 8})
    assert "\n" not in str(info.value) and "workload.mtp_layers" in str(info.value)


# ---------------------------------------------------------------- plan.pipeline_layout


def test_layout_sets_every_chunk_and_an_even_one_simulates_as_unset():
    even = scenario(MOE, schedule="interleaved", virtual_stages=2)
    same = scenario(MOE, schedule="interleaved", virtual_stages=2, pipeline_layout=[2, 2, 2, 2, 1, 1, 1, 1])
    sizes = [len(c) for c in schedule_for(same.plan).chunk_layers(12, 4, 2)]
    assert sizes == [2, 2, 2, 2, 1, 1, 1, 1]
    assert sizes == [len(c) for c in schedule_for(even.plan).chunk_layers(12, 4, 2)]  # array_split's own
    assert simulate_training(even).summary == simulate_training(same).summary


def test_an_empty_last_chunk_holds_only_the_head_and_every_layer_runs_once():
    """Megatron's 'Et|(tt|)*30mL' ends in a chunk of no layers (the MTP module and the loss)."""
    s = scenario(MOE, pipeline_layout=[4, 4, 4, 0])
    r = simulate_training(s)
    spans = r.spans
    kind, layer, stage = (np.asarray(spans[k]) for k in ("kind", "layer", "stage"))
    fwd = kind.astype(str) == "attention_fwd"
    assert set(layer[fwd].tolist()) == set(range(12))
    assert 3 not in set(stage[fwd].tolist())  # no layer on the last stage
    assert 3 in set(stage[kind.astype(str) == "lm_head_fwd"].tolist())


def test_a_layout_may_hold_more_chunks_than_layers_when_the_end_chunks_are_empty():
    """Megatron's embedding and loss counted in the split at one layer a chunk (Llama 3.1 405B as PP16 x VP8 over
    126 layers: 128 chunks, the first holding only the embedding, the last only the loss); without a layout
    pp x virtual_stages must stay within the layers."""
    s = scenario(MOE, schedule="interleaved", virtual_stages=4, pipeline_layout=[0] + [1] * 12 + [0, 0, 0])
    assert s.plan.pp * s.plan.virtual_stages > s.model.n_layers
    spans = simulate_training(s).spans
    kind, layer, stage = (np.asarray(spans[k]) for k in ("kind", "layer", "stage"))
    fwd = kind.astype(str) == "attention_fwd"
    assert set(layer[fwd].tolist()) == set(range(12))
    assert 3 in set(stage[kind.astype(str) == "lm_head_fwd"].tolist())
    with pytest.raises(InputError, match=r"plan.pp = 4: pp \* virtual_stages \(16\) must be <= model.n_layers \(12\)"):
        scenario(MOE, schedule="interleaved", virtual_stages=4)


@pytest.mark.parametrize("plan, words", [
    (dict(pipeline_layout=[3, 3, 3]), "plan.pipeline_layout has 3 entries: schedule 1f1b needs one per model chunk, plan.pp = 4"),
    (dict(pipeline_layout=[3, 3, 3], schedule="interleaved", virtual_stages=2),
     "plan.pipeline_layout has 3 entries: schedule interleaved needs one per model chunk, plan.pp x plan.virtual_stages = 8"),
    (dict(pipeline_layout=[3, 3, 3, 4]), "plan.pipeline_layout sums to 13 layers: must be model.n_layers (12)"),
    (dict(pipeline_layout=[3, 3, 3, 3], last_stage_layers=3), "leave plan.first_stage_layers and plan.last_stage_layers unset"),
    (dict(pipeline_layout=[2, 2, 2, 2, 1, 1, 1, 1], schedule="dualpipe"),
     "plan.pipeline_layout has 8 entries: schedule dualpipe needs one per model chunk, plan.pp = 4"),
    (dict(last_stage_layers=2, schedule="dualpipe"), "give every chunk's layers with plan.pipeline_layout instead"),
    (dict(pipeline_layout=[12], pp=1, dp=8), "needs plan.pp >= 2"),
])
def test_layout_errors_are_one_line(plan, words):
    with pytest.raises(InputError) as info:
        scenario(MOE, **plan)
    assert "\n" not in str(info.value) and words in str(info.value)


def test_serving_refuses_a_layout():
    serve = load_scenario("mixtral-8x7b-h100-serve").model_dump(mode="json")
    serve["plan"] |= {"pp": 2, "dp": 4, "pipeline_layout": [16, 16]}
    with pytest.raises(InputError, match="pipeline_layout"):
        moesim.scenario_from_dict(serve)


@pytest.mark.parametrize("plan", [{"pipeline_layout": [4, 4, 4, 0]}, {"last_stage_layers": 2}])
def test_fit_advice_for_more_stages_splits_the_layers_afresh(plan):
    """A plan that does not fit is advised more stages, tried with the layers split evenly: a layout or
    stage count given for 4 stages does not describe 8 (the what-if had crashed on both)."""
    big = deep_merge(MOE, {"plan": plan, "workload": {"global_batch_seqs": 4096, "seq_len": 1024},
                           "hardware": {"device": {"mem_gib": 4}}})
    summary = simulate_training(moesim.scenario_from_dict(big)).summary
    assert summary["fits"] is False and summary["fits_advice"]
    weights_bound = deep_merge(big, {"model": {"n_layers": 64}, "plan": {"pipeline_layout": None, "last_stage_layers": None},
                                     "workload": {"global_batch_seqs": 16, "seq_len": 128},
                                     "hardware": {"device": {"mem_gib": 1}}})
    weights_bound["plan"] |= {"pipeline_layout": [16, 16, 16, 16]} if "pipeline_layout" in plan else {"last_stage_layers": 8}
    # 1 GiB for the tensors beside what CUDA and NCCL hold (moesim.train_reserve)
    weights_bound["hardware"]["device"]["mem_gib"] = 1 + CUDA_UNSEEN_GIB + held_gib(moesim.scenario_from_dict(weights_bound))
    advice = simulate_training(moesim.scenario_from_dict(weights_bound)).summary["fits_advice"]
    assert "plan.pp 4 -> " in advice and "the layers split evenly" in advice


def test_mtp_modules_add_their_parameters_and_activations_to_the_loss_stage():
    """On an even split the loss's stage holds the most already; the modules add one last layer's
    parameters (with their gradients and Adam states) and activations each, and a projection."""
    from moesim.memory import memory_report

    plain, two = memory_report(moe_with()), memory_report(moe_with(mtp_layers=2))
    assert two.stage == plain.stage == 3
    assert two.weights_gib > plain.weights_gib and two.optimizer_gib > plain.optimizer_gib
    assert two.activations_gib > plain.activations_gib
    one = memory_report(moe_with(mtp_layers=1))
    assert two.weights_gib - one.weights_gib == pytest.approx(one.weights_gib - plain.weights_gib)


def test_dualpipe_takes_a_layout_of_pp_chunks_each_held_once_per_direction():
    """DualPipe's model chunk s runs on stage s one way and on stage pp-1-s the other: an even layout
    is the unset split, step and memory alike; a layout moving layers off the end stages (which hold
    both heads) shortens the step once they carry MTP modules too."""
    from moesim.memory import memory_report

    base = scenario(MOE, schedule="dualpipe")
    even = scenario(MOE, schedule="dualpipe", pipeline_layout=[3, 3, 3, 3])
    sched = schedule_for(even.plan)
    assert [len(c) for c in sched.chunk_layers(12, 4)] == [3] * 8
    assert simulate_training(base).summary == simulate_training(even).summary
    assert memory_report(base) == memory_report(even)
    with_mtp = {"workload": {"mtp_layers": 2}}
    flat = moesim.scenario_from_dict(deep_merge(MOE, {"plan": {"schedule": "dualpipe"}, **with_mtp}))
    lighter_ends = moesim.scenario_from_dict(deep_merge(MOE, {"plan": {"schedule": "dualpipe", "pipeline_layout": [2, 4, 4, 2]},
                                                              **with_mtp}))
    assert [len(c) for c in schedule_for(lighter_ends.plan).chunk_layers(12, 4)] == [2, 4, 4, 2] * 2
    assert simulate_training(lighter_ends).summary["step_time_s"] < simulate_training(flat).summary["step_time_s"]


@pytest.mark.parametrize("text, counts", [
    ("Et|(tt|)*30mL", [1] + [2] * 30 + [0]),  # Megatron-Bridge's DeepSeek-V3 H100 recipe (PP8 VP4)
    ("Et*4|(tttt|)*14tmL", [4] * 15 + [1]),  # its (16,1), (8,2), (4,4) layouts
    ("Et*4|(t*4|)*14tmL", [4] * 15 + [1]),  # Megatron-LM's GB300 PP2 VP8 recipe
    ("E t t | t t t L", [2, 3]),
])
def test_a_megatron_layout_string_reads_as_its_chunk_counts(text, counts):
    assert layout_counts(text) == counts
    plan = PlanSpec(pp=len(counts), dp=1, pipeline_layout=text)
    assert plan.pipeline_layout == counts


@pytest.mark.parametrize("text, words", [
    ("Et|mt|L", "the MTP modules (m) and the loss (L) on the last"),
    ("Et|tE", "the embedding (E) on the first chunk"),
    ("Ex|t", "made of E, t, m, L"),
    ("(t|)*99999", "repeats at most 1024 times"),
])
def test_a_bad_layout_string_is_one_line_naming_the_field(text, words):
    with pytest.raises(InputError) as info:
        scenario(MOE, pipeline_layout=text)
    msg = str(info.value)
    assert "\n" not in msg and "plan.pipeline_layout" in msg and words in msg


@pytest.mark.parametrize("workload, words", [
    ({"mtp_layers": 9}, "workload.mtp_layers = 9: must be <= 8 (DeepSeek-V3 trains 1 and studies 2)"),
    ({"mtp_layers": -1}, "workload.mtp_layers = -1:"),
])
def test_a_bad_mtp_count_is_one_line_naming_the_field(workload, words):
    with pytest.raises(InputError) as info:
        moe_with(**workload)
    msg = str(info.value)
    assert "\n" not in msg and msg.startswith(words)


@pytest.mark.parametrize("layout, words", [
    ([4, 4, 5, -1], "plan.pipeline_layout.3 = -1:"),
    ([4, 4, 4, 2000], "plan.pipeline_layout.3 = 2000:"),
])
def test_a_bad_layout_entry_is_one_line_naming_its_place(layout, words):
    with pytest.raises(InputError) as info:
        scenario(MOE, pipeline_layout=layout)
    msg = str(info.value)
    assert "\n" not in msg and msg.startswith(words)
