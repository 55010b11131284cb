"""plan.defer_head_wgrad (Megatron's defer_embedding_wgrad_compute + wgrad_deferral_limit): the output head's
weight-gradient GEMM of the held micro-batches leaves their backward and runs on the last stage after its last
unit. The work is moved, not removed; the step gets no longer; schedules that split the backward ignore it."""

from __future__ import annotations

import pytest

import moesim
from moesim.costmodel.model import build_cost_model
from moesim.engine.training.deferred_head import held_microbatches
from moesim.engine.training.layer_costs import layer_costs
from moesim.engine.training.step import simulate_training
from moesim.errors import InputError
from moesim.resolve import deep_merge
from tests.test_uneven_stages import LLAMA3

#: Llama 3 70B's shape on 8 H100 as TP2 PP4, 8 micro-batches: a 128K-vocabulary head on the last stage
BASE = deep_merge(LLAMA3, {"model": {"n_layers": 16}, "hardware": {"cluster": {"nodes": 1}},
                           "plan": {"tp": 2, "pp": 4, "microbatches": 8},
                           "workload": {"global_batch_seqs": 8, "seq_len": 4096}})


def _run(defer=None, **plan):
    s = moesim.scenario_from_dict(deep_merge(BASE, {"plan": {"defer_head_wgrad": defer, **plan}}))
    return s, simulate_training(s)


def _tail_s(result) -> float:
    spans = result.spans
    return float(sum(e - b for k, b, e in zip(spans["kind"], spans["start_s"], spans["end_s"])
                     if k == "lm_head_wgrad_deferred"))


def test_held_microbatches_follow_the_limit():
    assert held_microbatches(0, 8) == 8
    assert held_microbatches(3, 8) == 3
    assert held_microbatches(22, 8) == 8


@pytest.mark.parametrize("limit", [0, 3])
def test_the_held_wgrad_moves_to_the_last_stage_tail_and_the_step_does_not_grow(limit):
    s, plain = _run()
    _, held = _run(limit)
    head_wgrad = layer_costs(s, build_cost_model(s.hardware), None).head_wgrad_s
    assert head_wgrad > 0
    assert _tail_s(held) == pytest.approx(held_microbatches(limit, 8) * head_wgrad, rel=1e-9)
    assert _tail_s(plain) == 0.0
    assert held.summary["compute_s"] == pytest.approx(plain.summary["compute_s"], rel=1e-9)  # moved, not removed
    assert held.summary["step_time_s"] < plain.summary["step_time_s"]


def test_every_held_microbatch_saves_more_than_a_few():
    _, few = _run(2)
    _, every = _run(0)
    assert every.summary["step_time_s"] < few.summary["step_time_s"]


def test_a_split_backward_schedule_ignores_it():
    _, plain = _run(schedule="zb-h1")
    _, held = _run(0, schedule="zb-h1")
    assert held.summary["step_time_s"] == plain.summary["step_time_s"]
    assert _tail_s(held) == 0.0


def test_a_negative_limit_is_refused_in_one_line_naming_the_field():
    with pytest.raises(InputError) as err:
        moesim.load_scenario("llama-2-7b-a100-train", ["plan.defer_head_wgrad=-2"])
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith("plan.defer_head_wgrad")


def test_the_held_buffers_count_in_the_loss_stage_memory():
    """Each held micro-batch keeps its head input and logit gradient until the drain: tokens x (d + vocab/tp)
    x 2 bytes on the stage that computes the loss, which can become the busiest; nothing when off."""
    from moesim.accounting import GIB
    from moesim.engine.training.deferred_head import held_bytes
    from moesim.memory import memory_report

    s_off, _ = _run()
    s_on = moesim.scenario_from_dict(deep_merge(BASE, {"plan": {"defer_head_wgrad": 0}}))
    s_zb = moesim.scenario_from_dict(deep_merge(BASE, {"plan": {"defer_head_wgrad": 0, "schedule": "zb-h1"}}))
    per_mb = 4096 * (8192 + 128256 / 2) * 2  # one micro-batch of one 4096-token sequence, TP2, BF16
    assert held_bytes(s_on.plan, 8192, 128256, 4096, 2.0) == pytest.approx(8 * per_mb)
    assert held_bytes(s_zb.plan, 8192, 128256, 4096, 2.0) == 0.0
    assert held_bytes(s_off.plan, 8192, 128256, 4096, 2.0) == 0.0
    off, on = memory_report(s_off), memory_report(s_on)
    assert off.total_gib < on.total_gib <= off.total_gib + 8 * per_mb / GIB + 1e-9
