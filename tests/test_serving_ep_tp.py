"""Serving with whole experts in EP over each replica's TP group (``plan.etp: 1``, ``ep = tp``).

vLLM's ``--enable-expert-parallel`` without DP and TensorRT-LLM's ``--tp N --ep N`` without attention
DP: the TP ranks all hold the batch after attention, so nothing is dispatched; each rank runs its
``E/ep`` experts and the TP all-reduce sums the outputs.
"""

from __future__ import annotations

import itertools
from math import comb

import numpy as np
import pytest

import moesim
from moesim.costmodel import build_cost_model
from moesim.engine import expert_load
from moesim.engine.ops import block_ops
from moesim.engine.serving.decode_cost import IterationCost
from moesim.errors import InputError
from moesim.memory import memory_report

TP8 = "mixtral-8x7b-h100-serve-tp8"  # Mixtral 8x7B FP8, 8 H100, TP8 (experts split 8 ways)
EP8 = ["plan.etp=1", "plan.ep=8"]


def cost(overrides=()):
    s = moesim.load_scenario(TP8, list(overrides))
    return s, IterationCost(s, build_cost_model(s.hardware), np.random.default_rng(0), 512)


def test_the_plan_is_accepted_only_in_its_own_shape():
    s = moesim.load_scenario(TP8, EP8)
    assert s.plan.ep_in_tp_group and s.plan.expert_tp == 1
    for bad, match in ((["plan.etp=2"], r"plan.etp = 2: serving splits each expert over tp"),
                       (["plan.etp=1", "plan.ep=4"], r"etp 1 with plan.ep = plan.tp = 8"),
                       (EP8 + ["plan.overlap_alltoall=true"], r"plan.overlap_alltoall: .* no all-to-all"),
                       (EP8 + ["plan.dp_attention=true"], r"plan.dp_attention: experts in EP over the TP group")):
        with pytest.raises(InputError, match=match):
            moesim.load_scenario(TP8, bad)


def test_nothing_is_dispatched_and_the_tp_all_reduce_combines():
    _, tp = cost()
    _, ep = cost(EP8)
    ops = block_ops(ep.dims, ep.dtypes, True, np.array([64.0]), np.ones(1), np.ones(1), expert_tokens=np.ones(1))
    assert not [op for op in ops if op.kind == "alltoall"]
    assert ops[-1].name.startswith("ffn_allreduce") and ep.dims.expert_w == ep.s.model.expert_width
    for t in (1, 64, 512):
        a, b = tp.fixed_by_stream(np.array([t])), ep.fixed_by_stream(np.array([t]))
        assert float(b["ep_comm"][0]) == 0.0
        assert float(b["tp_comm"][0]) == pytest.approx(float(a["tp_comm"][0]))


def test_the_busiest_rank_reads_a_whole_expert_at_batch_one():
    """Top-2 of 8 experts on 8 ranks: one token busies two ranks with one whole expert each, where
    TP8 reads an eighth of both experts on every rank."""
    _, tp = cost()
    _, ep = cost(EP8)
    busy, routed = expert_load.uniform_busy(np.array([1.0]), 2, ep.placement, 1, busiest=True)
    assert 0.85 < busy[0] <= 1.0 and routed[0] == pytest.approx(busy[0])  # one token per busy expert
    assert ep.uniform_experts_s(np.array([1]))[0][0] > 1.5 * tp.uniform_experts_s(np.array([1]))[0][0]
    busy, routed = expert_load.uniform_busy(np.array([4096.0]), 2, ep.placement, 1, busiest=True)
    assert busy[0] == pytest.approx(1.0) and routed[0] == pytest.approx(4096 * 2 / 8)


def test_memory_per_device_is_the_tp_plans():
    a, b = memory_report(moesim.load_scenario(TP8)), memory_report(moesim.load_scenario(TP8, EP8))
    assert b.weights_gib == pytest.approx(a.weights_gib)


def test_the_dp_carved_group_keeps_its_pooled_batch():
    """Default ``sources`` (ep replicas): the same numbers as before the option existed."""
    _, ep = cost(EP8)
    t = np.array([1.0, 16.0, 256.0])
    busy, routed = expert_load.uniform_busy(t, 2, ep.placement)
    assert busy == pytest.approx(1.0 - (1.0 - 2 / 8) ** (t * 8))
    assert routed == pytest.approx(t * 2)


@pytest.mark.parametrize("n,p,m", [(1, 0.25, 8), (2, 0.5, 2), (3, 0.2, 3), (2, 0.0, 4), (2, 1.0, 4)])
def test_expected_max_binomial_matches_enumeration(n, p, m):
    pmf = [comb(n, j) * p ** j * (1 - p) ** (n - j) for j in range(n + 1)]
    exact = sum(max(draw) * np.prod([pmf[d] for d in draw]) for draw in itertools.product(range(n + 1), repeat=m))
    assert float(expert_load.expected_max_binomial(n, np.array([p]), m)[0]) == pytest.approx(exact, abs=1e-12)


def test_a_run_serves_every_request_without_all_to_all():
    r = moesim.simulate(moesim.load_scenario(TP8, EP8)).summary
    assert r["served_requests"] == r["n_requests"] and r["alltoall_fraction"] == 0.0
