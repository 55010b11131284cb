"""One capacity rule for training and serving: per source rank, float-residue safe, with a minimum."""

from __future__ import annotations

import math
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

import moesim
from moesim.costmodel import build_cost_model
from moesim.engine import expert_load, routing
from moesim.engine.routing import (
    apply_capacity,
    apply_capacity_per_source,
    capacity_per_expert,
    expected_source_drops,
    hypergeom_excess,
    sample_routing,
)
from moesim.engine.serving import routed_experts
from moesim.engine.serving.decode_cost import IterationCost
from moesim.errors import InputError
from moesim.resolve import deep_merge
from moesim.schemas import RoutingSpec

ROOT = Path(__file__).resolve().parents[1]
SWITCH_SERVE = moesim.load_scenario(ROOT / "scenarios" / "switch-base-128-serve.yaml")


def serving_cost(**sections) -> IterationCost:
    """The shipped Switch-Base-128 serving scenario with nested overrides, tabulated to 64 tokens."""
    raw = deep_merge(SWITCH_SERVE.model_dump(mode="json", exclude_none=True), sections)
    s = moesim.scenario_from_dict(raw)
    return IterationCost(s, build_cost_model(s.hardware), np.random.default_rng(0), 64)


# ---------------------------------------------------------------- one function, one rounding
def test_issue_case_400_tokens_top1_8_experts_cf_1_1_is_55_in_training_and_serving():
    assert 1.1 * 400 * 1 / 8 == 55.00000000000001  # the float residue that made serving say 56
    assert capacity_per_expert(400, 1, 8, 1.1) == 55
    spec = RoutingSpec(capacity_factor=1.1)
    train = sample_routing(spec, 1, 8, 1, 1, 400, 1, np.random.default_rng(0))
    serve = serving_cost(model={"n_experts": 8}, routing={"capacity_factor": 1.1})
    assert train.capacity_per_source == train.capacity == 55
    assert serve.capacity(400) == 55
    np.testing.assert_array_equal(serve.capacity(np.array([400, 800])), [55, 110])


def test_both_engines_call_the_same_function():
    assert routed_experts.capacity_per_expert is routing.capacity_per_expert
    assert not hasattr(expert_load, "capacity_per_expert")


def _exact(tokens: int, top_k: int, n_experts: int, cf: float, min_capacity: int) -> int:
    """The formula in rationals: the decimal capacity factor as written, no float anywhere."""
    return max(math.ceil(Fraction(str(cf)) * tokens * top_k / n_experts), min_capacity)


@pytest.mark.parametrize("cf", [0.05, 0.1, 0.3, 0.7, 1.0, 1.1, 1.2, 1.25, 1.3, 1.5, 2.0, 2.2, 3.3, 64.0])
def test_shared_function_equals_the_formula_on_a_grid(cf):
    tokens = np.arange(0, 5001, 7)
    for top_k in (1, 2, 6, 8):
        for n_experts in (1, 3, 8, 10, 60, 64, 128, 160, 256):
            if top_k > n_experts:
                continue
            for min_capacity in (0, 4):
                got = capacity_per_expert(tokens, top_k, n_experts, cf, min_capacity)
                assert got.dtype == np.int64 and got.shape == tokens.shape
                want = [_exact(int(t), top_k, n_experts, cf, min_capacity) for t in tokens]
                np.testing.assert_array_equal(got, want, err_msg=f"cf={cf} k={top_k} E={n_experts}")


def test_ints_in_ints_out_and_large_products_stay_exact():
    assert type(capacity_per_expert(4096, 2, 8, 1.25)) is int
    assert capacity_per_expert(np.int64(4096), 2, 8, 1.25) == 1280
    # 1.1 * 41997120 / 8 is 5774604.000000001 in floats: more noise than round(x, 9) forgives.
    assert math.ceil(round(1.1 * 41997120 / 8, 9)) == 5774605
    assert capacity_per_expert(41997120, 1, 8, 1.1) == 5774604
    assert capacity_per_expert(41997121, 1, 8, 1.1) == 5774605
    assert capacity_per_expert(1, 1, 128, 1.0, min_capacity=4) == 4
    assert capacity_per_expert(0, 1, 128, 1.0) == 0


# ---------------------------------------------------------------- per source rank
def test_two_source_ranks_with_skewed_loads_drop_what_per_rank_capacity_implies():
    # Two EP ranks of 6 tokens each, top-1 over 2 experts, cf 1: each rank gives each expert 3 slots.
    # Rank 0 sends all its tokens to expert 0, rank 1 all to expert 1.
    source_loads = np.array([[6, 0], [0, 6]])
    cap = capacity_per_expert(6, 1, 2, 1.0)
    assert cap == 3
    kept, dropped = apply_capacity_per_source(source_loads, cap)
    np.testing.assert_array_equal(kept, [3, 3])
    np.testing.assert_array_equal(dropped, [3, 3])
    # A pooled capacity (12 tokens -> 6 slots per expert) would have dropped nothing.
    pooled = apply_capacity(source_loads.sum(axis=0), capacity_per_expert(12, 1, 2, 1.0))[1]
    np.testing.assert_array_equal(pooled, [0, 0])


def test_expected_source_drops_match_splitting_the_loads_over_source_ranks():
    """The closed form equals Monte Carlo of the per-source rule on random splits of the pooled loads."""
    rng = np.random.default_rng(3)
    ep, per_source, cap = 4, 64, 10
    pooled = np.array([0, 10, 30, 40, 41, 55, 80, 256])
    got = expected_source_drops(pooled, cap, per_source, ep)
    for x, want in zip(pooled, got):
        # which source sent each of the expert's x draws: a uniform subset of the group's draws
        split = rng.multivariate_hypergeometric([per_source] * ep, int(x), size=40_000)  # [trials, ep]
        mc = np.maximum(split - cap, 0).sum(axis=1)
        assert want == pytest.approx(mc.mean(), abs=4 * mc.std() / np.sqrt(mc.size) + 1e-9), x
    assert got[0] == got[1] == 0  # no source can exceed 10 slots with 10 draws in all
    assert got[-1] == 256 - ep * cap  # every source sent all its 64 draws: each keeps 10
    pooled_rule = np.maximum(pooled - ep * cap, 0)
    assert (got >= pooled_rule).all() and got.sum() > pooled_rule.sum()


@pytest.mark.parametrize("threshold, successes, population, draws", [
    (3, 12, 48, range(0, 49)),  # decode-sized: 4 replicas of 12 tokens
    (0, 12, 24, range(0, 25)),
    (10, 64, 256, range(0, 257, 5)),
    (2048, 8192, 65536, range(14000, 20000, 1499)),  # training-sized: 8 sources of 8192 assignments
])
def test_hypergeom_excess_equals_scipy(threshold, successes, population, draws):
    from scipy.stats import hypergeom

    x = np.array(list(draws))
    # E[max(H - c, 0)] = E[H; H > c] - c P(H > c), and E[H; H > c] = (K n / N) P(H' >= c) with
    # H' ~ Hypergeom(N - 1, K - 1, n - 1).
    h_above = np.where(x > 0, successes * x / population
                       * hypergeom.sf(threshold - 1, population - 1, successes - 1, np.maximum(x - 1, 0)), 0.0)
    want = h_above - threshold * hypergeom.sf(threshold, population, successes, x)
    np.testing.assert_allclose(hypergeom_excess(x, threshold, successes, population), want, rtol=1e-9, atol=1e-12)


def test_one_source_rank_drops_exactly_what_is_over_capacity():
    loads = np.array([[3, 12, 7], [0, 9, 20]])
    np.testing.assert_array_equal(expected_source_drops(loads, 8, 1000, 1), np.maximum(loads - 8, 0))


def test_sample_routing_drops_per_source_rank():
    spec = RoutingSpec(distribution="zipf", zipf_s=1.0, capacity_factor=1.0, min_capacity=0)
    ep, tokens_per_rank, E, k, L, M = 4, 256, 16, 2, 3, 5
    r = sample_routing(spec, L, E, k, ep, ep * tokens_per_rank, M, np.random.default_rng(5))
    dropless = sample_routing(spec.model_copy(update={"overflow": "dropless"}), L, E, k, ep,
                              ep * tokens_per_rank, M, np.random.default_rng(5))
    np.testing.assert_array_equal(r.loads, dropless.loads)  # the same draw; only the drops differ
    cap = capacity_per_expert(tokens_per_rank, k, E, 1.0)
    assert r.capacity_per_source == cap == 32 and r.capacity == ep * cap
    np.testing.assert_allclose(r.dropped, expected_source_drops(r.loads, cap, tokens_per_rank, ep))  # a token: 1 slot
    np.testing.assert_allclose(r.kept + r.dropped, r.loads)
    pooled = np.maximum(r.loads - r.capacity, 0)
    assert r.dropped.sum() > pooled.sum()  # each rank's own noise overflows its own slots
    assert (r.kept <= r.capacity + 1e-9).all()


def test_group_tokens_must_split_evenly_over_source_ranks():
    with pytest.raises(ValueError, match="multiple of ep"):
        sample_routing(RoutingSpec(), 1, 8, 1, 4, 1001, 1, np.random.default_rng(0))


def test_serving_drops_are_per_replica_batch():
    """EP4 in serving: a replica's 64 tokens get capacity from 64 tokens, not from the group's 256."""
    one = serving_cost(routing={"distribution": "uniform", "capacity_factor": 1.0, "min_capacity": 0})
    four = serving_cost(plan={"dp": 4, "ep": 4}, hardware={"node": {"devices_per_node": 4}},
                        routing={"distribution": "uniform", "capacity_factor": 1.0, "min_capacity": 0})
    t = np.array([64])
    assert four.capacity(64) == one.capacity(64) == 1
    # Same per-replica batch, same per-source capacity: each replica drops the same whatever ep.
    np.testing.assert_allclose(four.uniform_experts_s(t)[1], one.uniform_experts_s(t)[1])
    want = one.s.model.n_moe_layers * expert_load.uniform_dropped(t, 1, 128, 1)
    np.testing.assert_allclose(one.uniform_experts_s(t)[1], want)
    assert want[0] > 0


# ---------------------------------------------------------------- minimum capacity
def test_switch_decode_batch_of_12_tokens_drops_nothing_at_min_capacity_4():
    t = np.array([12])
    before = serving_cost(routing={"distribution": "uniform", "min_capacity": 0})
    after = serving_cost(routing={"distribution": "uniform"})  # default min_capacity 4
    assert before.capacity(12) == 1 and after.capacity(12) == 4
    assert before.uniform_experts_s(t)[1][0] > 0
    assert after.uniform_experts_s(t)[1][0] == 0
    assert after.uniform_experts_s(t)[0][0] > before.uniform_experts_s(t)[0][0]  # kept tokens are computed


def test_switch_decode_under_the_shipped_skew_drops_far_less_at_min_capacity_4():
    before = serving_cost(routing={"min_capacity": 0}).sample_expert_times(12, 200)[1]
    after = serving_cost(routing={}).sample_expert_times(12, 200)[1]
    assert before.mean() > 0.1 * 12 * 12  # >10% of 12 MoE layers x 12 assignments
    assert after.mean() < before.mean() / 50


def test_min_capacity_field_default_and_bound():
    assert RoutingSpec().min_capacity == 4
    assert RoutingSpec(min_capacity=0).min_capacity == 0
    with pytest.raises(InputError, match="min_capacity"):
        moesim.scenario_from_dict(deep_merge(SWITCH_SERVE.model_dump(mode="json", exclude_none=True),
                                             {"routing": {"min_capacity": 2**25}}))


def test_min_capacity_pads_tiny_training_microbatches():
    spec = RoutingSpec(capacity_factor=1.0)
    r = sample_routing(spec, 1, 64, 1, 2, 2 * 8, 2, np.random.default_rng(0))  # 8 tokens per rank
    assert r.capacity_per_source == 4 and r.capacity == 8
    np.testing.assert_array_equal(r.compute_tokens, 8)
