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


def test_training_cost_does_not_grow_with_data_parallel_replicas(raw):
    small = estimate_work(scenario_from_dict(raw))
    raw["hardware"]["cluster"] = {"nodes": 125_000_000_000}  # 10^12 devices
    raw["plan"]["dp"] = 10**12
    raw["workload"]["global_batch_seqs"] = 2 * 10**12
    huge = scenario_from_dict(raw)
    assert estimate_work(huge) == small
    check_size(huge)  # accepted: replica symmetry


def test_too_many_microbatches_is_refused(raw):
    raw["plan"]["microbatches"] = 10**6
    raw["workload"]["global_batch_seqs"] = 8 * 10**6
    with pytest.raises(InputError, match="plan.microbatches"):
        check_size(scenario_from_dict(raw))
