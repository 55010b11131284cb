"""Which parameters each pipeline stage holds: its own layers, the embedding with the first model chunk and
the output head with the last (Megatron-core's pre_process / post_process), not an average over stages."""

from __future__ import annotations

import pytest

from moesim.accounting import param_counts
from moesim.loader import load_scenario
from moesim.memory import memory_report, weight_params_per_device
from moesim.stage_memory import stage_params

LLAMA = "moesim/data/validation/llama3-8b-flagperf-megatron.yaml"  # Llama 3 8B, 32 layers, untied


def _plan(*sets: str):
    return load_scenario(LLAMA, list(sets))


@pytest.mark.parametrize("pp, tp", [(2, 1), (4, 1), (8, 1), (4, 2)])
def test_the_stages_add_up_to_the_model_and_the_ends_hold_the_tables(pp, tp):
    s = _plan(f"plan.pp={pp}", f"plan.tp={tp}", f"plan.dp={8 // (pp * tp)}", f"plan.microbatches={4 * pp}")
    m = s.model
    p = param_counts(m)
    per_stage = [stage_params(m, s.plan, st)[0] for st in range(pp)]
    assert sum(per_stage) == pytest.approx(p.dense / tp, rel=1e-12)  # standard attention: every weight split over tp
    table = m.vocab_size * m.d_model / tp
    layers = (p.dense - p.embedding - m.d_model) / tp / pp  # 32 alike layers, even split
    assert per_stage[0] == pytest.approx(layers + table, rel=1e-12)
    assert per_stage[-1] == pytest.approx(layers + table + m.d_model / tp, rel=1e-12)  # the head and final norm
    assert all(x == pytest.approx(layers, rel=1e-12) for x in per_stage[1:-1])
    assert weight_params_per_device(m, s.plan, stage=0)[0] == per_stage[0]


def test_one_stage_holds_everything_and_tied_tables_are_copied_to_the_last_stage():
    one = _plan("plan.pp=1", "plan.dp=8", "plan.microbatches=64")
    assert weight_params_per_device(one.model, one.plan)[0] == pytest.approx(param_counts(one.model).dense, rel=1e-12)
    tied = _plan("plan.pp=4", "plan.dp=2", "plan.microbatches=16", "model.tied_embeddings=true")
    m = tied.model
    table = m.vocab_size * m.d_model
    first, last = stage_params(m, tied.plan, 0)[0], stage_params(m, tied.plan, 3)[0]
    assert last - first == pytest.approx(m.d_model, rel=1e-9)  # both hold a table; the last its final norm too
    assert sum(stage_params(m, tied.plan, st)[0] for st in range(4)) == pytest.approx(
        param_counts(m).dense + table, rel=1e-12)  # one more copy of the table than the model has


def test_an_empty_first_chunk_still_holds_the_embedding():
    """Megatron's layout string can give the embedding a chunk of its own: the stage still holds the table."""
    s = _plan("plan.pp=4", "plan.dp=2", "plan.microbatches=16", "plan.pipeline_layout=[0, 11, 11, 10]")
    m = s.model
    first = stage_params(m, s.plan, 0)[0]
    assert first == pytest.approx(m.vocab_size * m.d_model, rel=1e-12)


def test_stage_0s_memory_counts_the_embedding():
    """Llama 3 8B on PP8: stage 0 holds 4 layers and the 0.53B-parameter embedding, not 1/8 of both tables."""
    s = _plan("plan.pp=8", "plan.dp=1", "plan.microbatches=512")
    mem = memory_report(s)
    m = s.model
    p = param_counts(m)
    own = (p.dense - p.embedding - m.d_model) / 8 + m.vocab_size * m.d_model
    assert mem.stage == 0
    assert mem.weights_gib * 2**30 == pytest.approx(own * 2, rel=1e-9)  # bf16 weights, ZeRO over dp 1
