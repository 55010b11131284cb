"""The analytic rate bound of a lock-step (DP-attention) group: finite, and above what the group serves."""

import math

import pytest

from moesim.loader import scenario_from_dict
from moesim.plan_bounds import ServingBounds
from moesim.plan_runs import saturation_runner

BASE = {
    "name": "lockstep-bound",
    "model": {"preset": "mixtral-8x7b", "dtype": "fp8", "n_layers": 4},
    "hardware": {"preset": "h100-sxm"},
    "plan": {"dp": 2, "tp": 1, "pp": 1, "ep": 2, "dp_attention": True},
    "workload": {"kind": "serving", "arrival": {"process": "poisson", "rate_per_s": 50.0, "n_requests": 120},
                 "prompt_tokens": {"dist": "uniform", "low": 16, "high": 256},
                 "output_tokens": {"dist": "uniform", "low": 2, "high": 64},
                 "max_batch_seqs": 8, "max_batch_tokens": 512},
    "routing": {"distribution": "uniform", "overflow": "dropless"},
}


def _scenario(**plan_and_workload):
    raw = {k: dict(v) if isinstance(v, dict) else v for k, v in BASE.items()}
    for key, value in plan_and_workload.items():
        section, field = key.split("__")
        raw[section][field] = value
    p = raw["plan"]
    raw["hardware"] = {**raw["hardware"], "node": {"devices_per_node": p["dp"] * p["tp"] * p["pp"]}}
    return scenario_from_dict(raw)


@pytest.mark.parametrize("changes", [{}, {"workload__max_batch_seqs": 64}, {"plan__tp": 2},
                                     {"plan__dp": 4, "plan__ep": 4}, {"plan__pp": 2},
                                     {"routing__distribution": "zipf"}])
def test_the_bound_is_finite_and_above_the_saturated_rate(changes):
    s = _scenario(**changes)
    bound = ServingBounds().tokens_per_s_per_device(s)
    served = saturation_runner(s, 0).summary["sat_output_tokens_per_s_per_device"]
    assert math.isfinite(bound) and served > 0
    assert bound >= served, (changes, bound, served)


def test_two_batch_overlap_is_not_bounded():
    """TBO hides the dispatch behind the other micro-batch's compute: the sum of parts is no bound."""
    assert ServingBounds().tokens_per_s_per_device(_scenario(plan__overlap_alltoall=True)) == math.inf


def test_the_group_bound_is_the_ranks_without_attention_and_head():
    """A lock-step group's bound leaves out attention and the head, so it is at least the bound of the
    same plan whose ranks run on their own (which counts them); it stays within a few times of it."""
    group = _scenario()
    alone = _scenario(plan__dp_attention=False)
    b_group, b_alone = ServingBounds().tokens_per_s_per_device(group), ServingBounds().tokens_per_s_per_device(alone)
    assert b_alone <= b_group < 4 * b_alone
