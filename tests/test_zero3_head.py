"""ZeRO-3 holds the output head whole while the loss runs (memory.zero3_head_bytes)."""

from __future__ import annotations

from pathlib import Path

import pytest

import moesim
from moesim.activations import zero3_head_bytes
from moesim.finetune import embeddings_trainable
from moesim.memory import memory_report
from moesim.precision import scenario_precision

ROOT = Path(__file__).resolve().parents[1]
DENSE = ROOT / "moesim" / "data" / "validation" / "qwen2.5-14b-sft-8xa800-deepspeed.yaml"
GIB = 1 << 30


def _scenario(*overrides: str):
    return moesim.load_scenario(DENSE, ["plan.zero_stage=3", *overrides])


def _head(s, weight_bytes: float, grad_bytes: float) -> float:
    p = s.plan
    return zero3_head_bytes(s.model, p.tp, p.zero_stage, embeddings_trainable(s.workload.trainable), weight_bytes, grad_bytes)


def test_the_gathered_head_is_its_weights_and_gradient_by_hand():
    s = _scenario()
    m = s.model
    b = scenario_precision(s).weight_bytes  # bf16: 2 B
    head = m.vocab_size * m.d_model  # untied, tp 1
    assert _head(s, 2.0, 2.0) == pytest.approx(head * 4.0)
    assert b == 2.0


def test_below_zero3_every_rank_holds_the_head_already():
    for stage in (0, 1, 2):
        s = moesim.load_scenario(DENSE, [f"plan.zero_stage={stage}"])
        assert _head(s, 2.0, 2.0) == 0.0


def test_a_frozen_head_gathers_its_weights_only():
    s = _scenario("workload.trainable={mode: lora, rank: 16, targets: [attention]}")
    m = s.model
    assert _head(s, 2.0, 4.0) == pytest.approx(m.vocab_size * m.d_model * 2.0)


def test_the_loss_peak_grows_by_the_gathered_head():
    """The loss's logits set this run's peak (tp 1, 8192 tokens, a 152k vocabulary), so the head's
    gathered weights and gradient add to the activations one for one."""
    s, stage2 = _scenario(), moesim.load_scenario(DENSE, ["plan.zero_stage=2"])
    m = s.model
    expected = m.vocab_size * m.d_model * 4.0 / GIB  # bf16 weights + bf16 gradient, 2.9 GiB
    assert memory_report(s).activations_gib - memory_report(stage2).activations_gib == pytest.approx(expected, rel=1e-9)
