"""The loss's time: its passes over the logits, by implementation (``plan.loss_impl``), beside the output head's
GEMMs (``activations.LOSS_PASS_BYTES_PER_LOGIT``)."""

from __future__ import annotations

import pytest

from moesim.activations import LOSS_PASS_BYTES_PER_LOGIT
from moesim.costmodel.model import build_cost_model
from moesim.engine.training.layer_costs import layer_costs
from moesim.loader import load_scenario
from moesim.simulate import simulate
from moesim.validation import DEFAULT_CSV

SCENARIO = DEFAULT_CSV.parent / "validation" / "llama3-8b-flagperf-megatron.yaml"  # Llama 3 8B, PP2 DP4, seq 8192


def _head(impl: str, *extra: str):
    s = load_scenario(SCENARIO, [f"plan.loss_impl={impl}", *extra])
    cm = build_cost_model(s.hardware)
    return s, cm, layer_costs(s, cm, None)


def test_each_pass_over_the_logits_is_priced_as_memory_traffic():
    s, cm, c = _head("inplace")
    tokens = 8192  # one micro-batch of one sequence
    logits = tokens * s.model.vocab_size
    gemm = float(cm.gemm_s(tokens, s.model.vocab_size, s.model.d_model, "bf16"))
    fwd, bwd = LOSS_PASS_BYTES_PER_LOGIT["inplace"]
    assert (fwd, bwd) == (38.0, 14.0)  # Megatron's eager cross entropy: six passes forward, two backward
    assert c.head_s[0] == pytest.approx(gemm + float(cm.memory_s(logits * fwd)))
    assert c.head_s[1] == pytest.approx(2 * gemm + float(cm.memory_s(logits * bwd)))


def test_the_eager_loss_costs_more_than_the_compiled_one_and_the_step_shows_it():
    _, _, eager = _head("inplace")
    _, _, fused = _head("fused")
    assert eager.head_s[0] > fused.head_s[0] and eager.head_s[1] == pytest.approx(fused.head_s[1])
    slow = simulate(load_scenario(SCENARIO, ["plan.loss_impl=inplace"]), None).summary["step_time_s"]
    fast = simulate(load_scenario(SCENARIO, ["plan.loss_impl=fused"]), None).summary["step_time_s"]
    assert slow > fast


def test_transformers_loss_works_on_the_whole_vocabulary_under_tp():
    """Hugging Face's loss sees every rank's whole vocabulary (its TP plans replicate the head's output), so its
    passes do not shrink with TP; Megatron's vocab-parallel ones do."""
    _, cm, hf = _head("transformers", "plan.tp=2", "plan.dp=2", "plan.microbatches=256")
    _, _, mg = _head("inplace", "plan.tp=2", "plan.dp=2", "plan.microbatches=256")
    s = load_scenario(SCENARIO)
    gemm = float(cm.gemm_s(8192, s.model.vocab_size // 2, s.model.d_model, "bf16"))
    whole, half = 8192 * s.model.vocab_size, 8192 * s.model.vocab_size / 2
    assert hf.head_s[0] == pytest.approx(gemm + float(cm.memory_s(whole * 18.0)))
    assert mg.head_s[0] == pytest.approx(gemm + float(cm.memory_s(half * 38.0)))
