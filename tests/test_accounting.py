"""Accounting formulas: FLOPs, KV bytes, distinct experts, memory per device."""

from __future__ import annotations

import numpy as np
import pytest

from moesim.accounting import (
    decode_bytes_per_token,
    expected_experts_touched,
    flops_per_token,
    kv_bytes_per_token,
    param_counts,
    training_flops_per_token,
)
from moesim.loader import scenario_from_dict
from moesim.memory import memory_report
from moesim.presets import MODELS
from moesim.schemas import ModelSpec

MIXTRAL = ModelSpec(**MODELS["mixtral-8x7b"])


def test_forward_flops_are_twice_active_matmul_weights_at_short_context():
    p = param_counts(MIXTRAL)
    f = flops_per_token(MIXTRAL, seq_len=1)
    # Short context: attention core is negligible; 2 FLOPs per active weight minus embedding gather.
    assert f == pytest.approx(2 * (p.active - p.norms - MIXTRAL.vocab_size * MIXTRAL.d_model), rel=1e-4)
    assert flops_per_token(MIXTRAL, seq_len=32768) > f


def test_gpt4_rumour_forward_flops_near_560_gflop():
    m = ModelSpec(**MODELS["gpt4-rumour"])
    assert 500e9 <= flops_per_token(m, 8192) <= 600e9


def test_training_flops_three_times_forward_four_with_full_recompute():
    assert training_flops_per_token(MIXTRAL, 4096) == pytest.approx(3 * flops_per_token(MIXTRAL, 4096))
    assert training_flops_per_token(MIXTRAL, 4096, "full") == pytest.approx(4 * flops_per_token(MIXTRAL, 4096))


def test_kv_bytes_per_token():
    # 2 (K and V) * 32 layers * 8 KV heads * 128 * 2 bytes = 128 KiB
    assert kv_bytes_per_token(MIXTRAL) == 2 * 32 * 8 * 128 * 2
    ds = ModelSpec(**MODELS["deepseek-v3"])
    assert kv_bytes_per_token(ds) == 61 * (512 + 64) * 2  # MLA caches the latent


def test_expected_experts_touched_matches_monte_carlo():
    rng = np.random.default_rng(0)
    e, k, b = 64, 2, 20
    draws = [len({x for _ in range(b) for x in rng.choice(e, k, replace=False)}) for _ in range(3000)]
    assert expected_experts_touched(e, k, b) == pytest.approx(np.mean(draws), rel=0.02)
    assert expected_experts_touched(8, 2, 1) == pytest.approx(2.0)
    assert expected_experts_touched(8, 2, 10_000) == pytest.approx(8.0)


def test_decode_bytes_fall_per_token_with_batch():
    one = decode_bytes_per_token(MIXTRAL, batch=1)
    many = decode_bytes_per_token(MIXTRAL, batch=64)
    assert many < one / 10
    # Batch 1 reads ~ active weights (top-2 experts) in bf16.
    assert one == pytest.approx(2 * param_counts(MIXTRAL).active, rel=0.05)


def test_memory_report_sharding_and_zero(raw):
    base = memory_report(scenario_from_dict(raw))
    raw["plan"]["zero_stage"] = 3
    z3 = memory_report(scenario_from_dict(raw))
    assert z3.weights_gib < base.weights_gib and z3.optimizer_gib <= base.optimizer_gib
    raw["plan"]["zero_stage"] = 1
    raw["routing"] = {}
    raw["plan"]["ep"] = 1
    no_ep = memory_report(scenario_from_dict(raw))
    assert no_ep.weights_gib > 4 * base.weights_gib  # experts replicated instead of 8-way sharded
    assert base.total_gib == pytest.approx(sum([base.weights_gib, base.gradients_gib, base.optimizer_gib,
                                                base.activations_gib, base.kv_cache_gib]))


def test_memory_over_capacity_is_a_verdict_not_a_crash(raw):
    raw["plan"].update(ep=1)
    raw["model"]["n_layers"] = 32
    raw["workload"]["seq_len"] = 4096
    rep = memory_report(scenario_from_dict(raw))
    assert not rep.fits and rep.headroom_gib < 0


def test_recompute_shrinks_activations(raw):
    sizes = []
    for mode in ("none", "selective", "full"):
        raw["plan"]["recompute"] = mode
        sizes.append(memory_report(scenario_from_dict(raw)).activations_gib)
    assert sizes[0] > sizes[1] > sizes[2] > 0
