"""Expert popularity drift and periodic EPLB rebalancing in serving (``engine/serving/drift.py``)."""

from __future__ import annotations

import json

import numpy as np
import pytest

import moesim
from moesim.accounting import expert_params
from moesim.costmodel import build_cost_model
from moesim.engine.placement import Placement
from moesim.engine.serving.decode_cost import IterationCost
from moesim.engine.serving.drift import (
    STEPS_PER_TAU,
    experts_fetched,
    initial_scores,
    match_ranks,
    ou_step,
    popularity_from_scores,
)
from moesim.precision import scenario_precision
from moesim.resolve import deep_merge
from tests.conftest import ROOT

ZIPF = {"distribution": "zipf", "zipf_s": 1.0, "overflow": "dropless"}


def _scenario(placement: dict | None = None, routing: dict | None = None, ep: int = 8,
              scenario: str = "mixtral-8x7b-h100-serve.yaml"):
    base = moesim.load_scenario(ROOT / "scenarios" / scenario)
    return moesim.scenario_from_dict(deep_merge(base.model_dump(mode="json", exclude_none=True),
                                                {"plan": {"dp": 8, "tp": 1, "ep": ep},
                                                 "placement": placement or {}, "routing": routing or ZIPF}))


def _cost(placement: dict | None = None, seed: int = 0, **kw) -> IterationCost:
    s = _scenario(placement, **kw)
    return IterationCost(s, build_cost_model(s.hardware), np.random.default_rng([seed, 1]), 256)


def _play(cost: IterationCost, times, engines=(0,)) -> list[float]:
    """Advance to each time, then price a decode iteration; returns the iteration times."""
    out = []
    for t in times:
        for e in engines:
            cost.advance(t, e)
        out.append(cost.time_s(np.ones(32, np.int64), np.full(32, 400, np.int64), 32)[0])
    return out


# ---------------------------------------------------------------- the drift model
def test_drift_keeps_each_layers_popularity_values_and_decorrelates_at_the_set_rate():
    rng = np.random.default_rng(0)
    pop = rng.dirichlet(np.full(64, 0.3), size=200)
    z = initial_scores(pop, rng)
    np.testing.assert_array_equal(popularity_from_scores(-np.sort(-pop, axis=-1), z), pop)  # t = 0 is the draw
    rho = np.exp(-1.0 / STEPS_PER_TAU)
    z1 = z.copy()
    for _ in range(STEPS_PER_TAU):  # one correlation time
        z1 = ou_step(z1, rho, rng)
    assert np.corrcoef(z.ravel(), z1.ravel())[0, 1] == pytest.approx(np.exp(-1.0), abs=0.03)
    assert z1.std() == pytest.approx(1.0, abs=0.03)  # stationary: unit variance
    moved = popularity_from_scores(-np.sort(-pop, axis=-1), z1)
    np.testing.assert_allclose(np.sort(moved, axis=-1), np.sort(pop, axis=-1))  # the skew never changes
    assert not np.array_equal(moved, pop)


def test_relabelled_ranks_move_only_what_the_new_balance_needs():
    old = np.array([[0, 1, 2, 3, 4, 5, 6, 7]])  # 4 ranks x 2 slots
    swapped = np.array([[6, 7, 4, 5, 2, 3, 0, 1]])  # the same rank sets, relabelled
    assert experts_fetched(old, swapped, 4).sum() == 8
    assert experts_fetched(old, match_ranks(old, swapped, 4, 8), 4).sum() == 0
    one_swap = np.array([[0, 2, 1, 3, 4, 5, 6, 7]])  # experts 1 and 2 trade ranks
    np.testing.assert_array_equal(experts_fetched(old, match_ranks(old, one_swap, 4, 8), 4), [[1, 1, 0, 0]])
    dup = np.array([[0, 0, 1, 2, 3, 4, 5, 6, 7, 7]])  # a second copy of an expert a rank holds: free
    assert experts_fetched(np.array([[0, 1, 2, 3, 4, 5, 6, 7, 7, 0]]), dup, 5)[0, 0] == 0


# ---------------------------------------------------------------- engine hooks
def test_without_drift_or_rebalancing_advance_changes_nothing():
    static, advanced = _cost({"redundant_experts": 8}), _cost({"redundant_experts": 8})
    times = np.linspace(0, 3600, 25)
    for t in times:
        assert advanced.advance(t, 0) == 0.0
    assert _play(static, times) == _play(advanced, times)  # bit-identical, rng untouched
    assert advanced.rebalances == 0 and advanced.rebalance_moved_gib == 0.0 and advanced.imbalance_samples == []
    assert advanced.mean_layer_imbalance() == float(static.layer_imbalance.mean())


def test_drift_unbalances_a_fixed_placement_on_average():
    rate = 360.0  # per hour: correlation time 10 s
    start, later = [], []
    for seed in range(6):
        cost = _cost({"redundant_experts": 8, "popularity_drift_per_hour": rate}, seed=seed)
        start.append(cost.layer_imbalance.mean())
        _play(cost, [5.0, 30.0, 60.0])
        later.append(cost.layer_imbalance.mean())
        samples = cost.imbalance_samples
        assert samples[0][0] == 0.0 and len(samples) == 1 + 60 * STEPS_PER_TAU // 10
        assert [t for t, _ in samples] == sorted(t for t, _ in samples)
    assert np.mean(later) > np.mean(start) + 0.2  # EPLB's layout was for the popularity at t = 0


def test_rebalancing_lowers_the_mean_imbalance_under_drift():
    drift = {"redundant_experts": 8, "popularity_drift_per_hour": 360.0}
    lower = 0
    for seed in range(4):
        fixed, rebal = _cost(drift, seed=seed), _cost({**drift, "rebalance_every_s": 5.0}, seed=seed)
        times = np.arange(0.0, 60.0, 0.5)
        _play(fixed, times)
        _play(rebal, times)
        # the same popularity path (the drift stream does not depend on the layout)
        np.testing.assert_array_equal(fixed.inclusion, rebal.inclusion)
        assert rebal.rebalances == 11
        lower += rebal.mean_layer_imbalance() < fixed.mean_layer_imbalance()
    assert lower == 4


def test_weight_moves_stall_once_per_engine_and_only_when_slots_change():
    # 8 experts on 4 ranks, contiguous at start; the first rebalance packs them by popularity
    cost = _cost({"rebalance_every_s": 10.0}, ep=4)
    assert [cost.advance(t, 0) for t in (0.0, 5.0, 9.99)] == [0.0, 0.0, 0.0]
    stall = cost.advance(10.0, 0)
    assert stall > 0 and cost.rebalances == 1
    assert cost.advance(10.5, 0) == 0.0  # paid
    assert cost.advance(11.0, 1) == stall and cost.advance(12.0, 1) == 0.0  # each engine once
    # the stall is the busiest device's expert bytes over NVLink (4 ranks in one node)
    s = cost.s
    expert_bytes = expert_params(s.model) * scenario_precision(s).weight_bytes
    fetched = experts_fetched(Placement.contiguous(8, 4).slot_map(32), cost.placement.slot_map(32), 4)
    assert stall == pytest.approx(float(cost.cm.p2p_s(fetched.sum(axis=0).max() * expert_bytes, True)))
    assert cost.rebalance_moved_gib == pytest.approx(fetched.sum() * expert_bytes / 2**30)
    # no drift: the next rebalance finds the same layout and moves nothing
    assert cost.advance(20.0, 0) == 0.0 and cost.advance(20.0, 1) == 0.0 and cost.rebalances == 2
    # EPLB's layout at start is already the one a rebalance picks without drift: nothing changes
    replicated = _cost({"redundant_experts": 8, "rebalance_every_s": 10.0})
    times = np.arange(0.0, 35.0, 2.5)
    assert _play(replicated, times) == _play(_cost({"redundant_experts": 8}), times)
    assert replicated.rebalances == 3 and replicated.rebalance_moved_gib == 0.0


def test_boundaries_crossed_while_idle_collapse_into_one_rebalance():
    cost = _cost({"rebalance_every_s": 10.0}, ep=4)
    stall = cost.advance(35.0, 0)
    assert cost.rebalances == 1 and stall > 0
    assert cost.advance(35.0, 1) == stall


def test_no_token_is_lost_across_rebalances():
    cost = _cost({"redundant_experts": 8, "popularity_drift_per_hour": 360.0, "rebalance_every_s": 4.0})
    rng = np.random.default_rng(3)
    for t in np.arange(0.0, 40.0, 1.0):
        cost.advance(t, 0)
        p = cost.placement
        assert (p.copies >= 1).all() and (p.copies.sum(axis=-1) == 16).all()
        loads = rng.binomial(512, cost.inclusion)
        np.testing.assert_allclose(p.split(loads, layer_axis=0).sum(axis=(-1, -2)), loads.sum(axis=-1))
        np.testing.assert_allclose(cost.inclusion.sum(axis=-1), cost.s.model.top_k)
        assert cost.time_s(np.ones(16, np.int64), np.full(16, 100, np.int64), 16)[1] == 0.0  # dropless
    assert cost.rebalances == 9 and set(cost._skew_pool) == {16}  # samples of the old routing dropped


def test_drift_is_seeded():
    spec = {"redundant_experts": 8, "popularity_drift_per_hour": 720.0, "rebalance_every_s": 3.0}
    times = np.arange(0.0, 20.0, 0.25)
    a, b, c = _cost(spec, seed=1), _cost(spec, seed=1), _cost(spec, seed=2)
    ta, tb, tc = _play(a, times, (0, 1)), _play(b, times, (0, 1)), _play(c, times, (0, 1))
    assert ta == tb and a.imbalance_samples == b.imbalance_samples
    assert a.rebalance_moved_gib == b.rebalance_moved_gib
    assert ta != tc


def test_drift_runs_in_a_serving_simulation_unchanged_when_off():
    """The engine does not call ``advance`` yet: a run with the fields at their defaults is today's."""
    s = _scenario({"redundant_experts": 8})
    s0 = _scenario({"redundant_experts": 8, "popularity_drift_per_hour": 0.0, "rebalance_every_s": None})
    same = [json.dumps(moesim.simulate(x, seed=0).summary, sort_keys=True, default=str) for x in (s, s0)]
    assert same[0] == same[1]


@pytest.mark.parametrize("field, value, match", [
    ("popularity_drift_per_hour", -1.0, r"placement\.popularity_drift_per_hour"),
    ("popularity_drift_per_hour", 1e9, r"placement\.popularity_drift_per_hour.*correlation time of 1 s"),
    ("rebalance_every_s", 0.0, r"placement\.rebalance_every_s"),
    ("rebalance_every_s", 1e12, r"placement\.rebalance_every_s.*one year"),
])
def test_bad_values_name_the_field(field, value, match):
    with pytest.raises(moesim.InputError, match=match) as err:
        _scenario({field: value})
    assert "\n" not in str(err.value).strip()


@pytest.mark.parametrize("field, value", [("popularity_drift_per_hour", 1.0), ("rebalance_every_s", 60.0)])
def test_drift_or_rebalancing_needs_skewed_routing(field, value):
    s = _scenario({field: value}, routing={"distribution": "uniform"})
    with pytest.raises(moesim.InputError, match=rf"placement\.{field} = .*: needs routing\.distribution "
                                                r"zipf \| dirichlet \| trace") as err:
        IterationCost(s, build_cost_model(s.hardware), np.random.default_rng(0), 16)
    assert "\n" not in str(err.value)


def test_drift_refreshes_the_two_batch_overlap_samples_too():
    s = _scenario({"redundant_experts": 8, "popularity_drift_per_hour": 3600.0})
    s = moesim.scenario_from_dict(deep_merge(s.model_dump(mode="json", exclude_none=True),
                                             {"plan": {"overlap_alltoall": True}}))
    cost = IterationCost(s, build_cost_model(s.hardware), np.random.default_rng([0, 1]), 256)
    q, kv = np.ones(64, np.int64), np.full(64, 300, np.int64)
    cost.time_s(q, kv, 64)
    assert set(cost.tbo.pool) == {64}
    cost.advance(0.5, 0)  # 8 drift steps of 1/16 s
    assert not cost.tbo.pool and not cost._skew_pool
    assert np.isfinite(cost.time_s(q, kv, 64)[0])
