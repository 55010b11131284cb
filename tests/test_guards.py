"""Absurdly large simulations are refused up front with an estimate; big clusters are not."""

from __future__ import annotations

import pytest

from moesim.errors import InputError
from moesim.guards import check_size, estimate_work
from moesim.loader import scenario_from_dict
from moesim.simulate import simulate


def _serving(raw, n_requests, dp=8):
    raw["workload"] = {"kind": "serving", "arrival": {"process": "batch", "n_requests": n_requests},
                       "prompt_tokens": {"dist": "fixed", "value": 100},
                       "output_tokens": {"dist": "fixed", "value": 100}}
    raw["plan"].update(dp=dp, ep=1, microbatches=1)
    return raw


def test_a_billion_requests_is_refused_before_any_work(raw):
    s = scenario_from_dict(_serving(raw, 10**9))
    with pytest.raises(InputError, match=r"workload.arrival.n_requests = 1000000000: more than 2,000,000"):
        simulate(s)


def test_too_many_iterations_is_refused_with_an_estimate(raw):
    raw = _serving(raw, 1_000_000)
    raw["workload"]["output_tokens"] = {"dist": "fixed", "value": 1000}
    raw["workload"]["max_batch_seqs"] = 8
    raw["model"]["max_seq_len"] = 4096
    with pytest.raises(InputError, match=r"batching iterations to simulate"):
        check_size(scenario_from_dict(raw))


def test_prompts_through_a_tiny_token_budget_are_refused_naming_it(raw):
    """100,000 prompts of 16K tokens prefilled 64 tokens an iteration: ~2.6e7 iterations, which the
    decode-only estimate (~1.4e5) missed; the refusal names the budget, not the outputs."""
    raw = _serving(raw, 100_000)
    raw["workload"]["prompt_tokens"] = {"dist": "fixed", "value": 16_384}
    raw["workload"]["max_batch_tokens"] = 64
    raw["model"]["max_seq_len"] = 32_768
    s = scenario_from_dict(raw)
    est = estimate_work(s)
    assert est["prefill_bound"] and est["iterations"] == 100_000 * 16_384 // 64 + 100_000
    with pytest.raises(InputError, match=r"^workload.max_batch_tokens = 64: ~2.57e\+07 batching iterations to prefill"):
        check_size(s)
    raw["workload"]["max_batch_tokens"] = 8192  # the default budget: 2e5 iterations, accepted
    check_size(scenario_from_dict(raw))


def test_a_cached_prefix_is_not_prefilled_again(raw):
    raw = _serving(raw, 1000)
    raw["workload"].update(prompt_tokens={"dist": "fixed", "value": 8192}, max_batch_tokens=64)
    raw["model"]["max_seq_len"] = 16_384
    full = estimate_work(scenario_from_dict(raw))["iterations"]
    raw["workload"]["prefix_cache_hit"] = 0.75
    assert estimate_work(scenario_from_dict(raw))["iterations"] - 1000 == (full - 1000) // 4


def test_training_cost_does_not_grow_with_data_parallel_replicas(raw):
    small = estimate_work(scenario_from_dict(raw))
    raw["hardware"]["cluster"] = {"nodes": 1 << 20}  # 2^23 devices: the schema's most nodes of 8
    raw["plan"]["dp"] = 1 << 23
    raw["workload"]["global_batch_seqs"] = 2 << 23
    huge = scenario_from_dict(raw)
    assert estimate_work(huge) == small
    check_size(huge)  # accepted: replica symmetry


def test_a_trillion_devices_is_over_the_schema_bound(raw):
    raw["hardware"]["cluster"] = {"nodes": 125_000_000_000}
    with pytest.raises(InputError, match=r"hardware.cluster.nodes = 125000000000: must be <= 1048576 \("):
        scenario_from_dict(raw)


def test_routing_arrays_too_big_are_refused(raw):
    raw["model"].update(n_experts=1 << 20, n_layers=64)  # 64 MoE layers x 2^20 experts x 2 microbatches
    with pytest.raises(InputError, match=r"model.n_experts = 1048576: the expert-load arrays would hold ~1.34e\+08 cells"):
        check_size(scenario_from_dict(raw))


def test_serving_expert_tables_too_big_are_refused(raw):
    raw = _serving(raw, 100, dp=8)
    raw["model"]["n_experts"] = 1 << 16
    raw["workload"]["max_batch_tokens"] = 1 << 14
    raw["routing"] = {"distribution": "uniform", "overflow": "dropless"}
    # refused as the scenario is read, naming the budget and its most (schemas.request_limits)
    with pytest.raises(InputError, match=r"workload.max_batch_tokens = 16384: at most 1,023 with model.n_experts 65536"):
        check_size(scenario_from_dict(raw))


def test_int64_overflowing_assignments_are_refused(raw):
    raw["model"].update(max_seq_len=1 << 24, n_experts=64, top_k=64)
    raw["plan"].update(ep=8)
    raw["workload"].update(global_batch_seqs=1 << 32, seq_len=1 << 24)
    with pytest.raises(InputError, match=r"model.top_k = 64: one EP group would route ~.* token-expert assignments"):
        check_size(scenario_from_dict(raw))


def test_too_many_microbatches_is_refused(raw):
    raw["plan"]["microbatches"] = 10**6
    raw["workload"]["global_batch_seqs"] = 8 * 10**6
    with pytest.raises(InputError, match="plan.microbatches"):
        check_size(scenario_from_dict(raw))
