"""``microbatch_busy_s``: a stage's busy time per micro-batch, what a profile of a steady-state stretch
shows (the DeepSeek-V3 profile row, TRN-35, compares with it)."""

from __future__ import annotations

import pytest

import moesim
from moesim.loader import load_scenario
from moesim.shipped import resolve_scenario


def _run(microbatches: int, pp: int = 4):
    # the micro-batch stays 4 sequences of 4,096 tokens: the global batch grows with the micro-batches
    s = load_scenario(resolve_scenario("mixtral-8x7b-h100-train"), [
        f"plan.pp={pp}", f"plan.dp={64 // pp}", "plan.ep=8", f"plan.microbatches={microbatches}",
        f"workload.global_batch_seqs={4 * microbatches * 64 // pp}", "routing.distribution=uniform",
        "routing.overflow=dropless"])
    return moesim.simulate(s).summary


def test_it_is_the_pipeline_less_its_bubble_per_micro_batch():
    r = _run(8)
    assert r["microbatch_busy_s"] * 8 == pytest.approx(r["pipeline_s"] - r["bubble_s"], rel=1e-12)


def test_it_does_not_depend_on_how_many_micro_batches_a_step_runs_the_step_time_does():
    few, many = _run(8), _run(32)
    assert many["bubble_fraction"] < few["bubble_fraction"]
    assert many["step_time_s"] > 3 * few["step_time_s"]
    assert many["microbatch_busy_s"] == pytest.approx(few["microbatch_busy_s"], rel=0.03)
