"""Invariants, determinism and numeric edge cases on real simulations (issue 7)."""

from __future__ import annotations

import pytest

from moesim import load_scenario, scenario_from_dict, simulate
from moesim.invariants import violations
from tests.conftest import SCENARIOS


def _small(path):
    """A shipped scenario shrunk so the whole set runs in seconds."""
    s = load_scenario(path)
    if s.is_training:
        return s
    return load_scenario(path, [f"workload.arrival.n_requests={min(s.workload.arrival.n_requests, 120)}"])


@pytest.mark.parametrize("path", SCENARIOS, ids=[p.stem for p in SCENARIOS])
def test_every_shipped_scenario_keeps_the_invariants(path):
    r = simulate(_small(path))
    assert violations(r) == []


def _files(r, tmp_path, name):
    out = tmp_path / name
    r.save(out)
    return {p.name: p.read_bytes() for p in sorted(out.iterdir())}


@pytest.mark.parametrize("stem", ["mixtral-8x7b-h100-train", "switch-base-128-serve"])
def test_same_seed_gives_byte_identical_files(stem, root, tmp_path):
    s = _small(root / "scenarios" / f"{stem}.yaml")
    a = _files(simulate(s, seed=7), tmp_path, "a")
    b = _files(simulate(s, seed=7), tmp_path, "b")
    assert a == b
    c = _files(simulate(s, seed=8), tmp_path, "c")
    assert c["summary.json"] != a["summary.json"]  # routing (and arrivals) are random


def _train(raw, **changes):
    for section, values in changes.items():
        raw[section].update(values)
    return simulate(scenario_from_dict(raw))


@pytest.mark.parametrize(
    "changes",
    [
        {"model": {"top_k": 8}},  # top_k = n_experts
        {"model": {"n_experts": 1, "top_k": 1}, "plan": {"ep": 1}},  # one expert (dense)
        {"plan": {"microbatches": 1}, "workload": {"global_batch_seqs": 8}},  # one microbatch
        {"plan": {"dp": 2, "pp": 4, "ep": 2}, "workload": {"global_batch_seqs": 4}},  # pp = layers
        {"routing": {"capacity_factor": 0.05}},  # capacity factor far below 1
    ],
    ids=["top_k=n_experts", "one-expert", "one-microbatch", "pp=layers", "cf=0.05"],
)
def test_training_edge_cases_are_sensible(raw, changes):
    r = _train(raw, **changes)
    assert violations(r) == []
    assert r.summary["step_time_s"] > 0 and r.summary["tokens_per_s"] > 0
    assert 0 <= r.summary["dropped_fraction"] <= 1
    if changes.get("routing", {}).get("capacity_factor") == 0.05:
        assert r.summary["dropped_fraction"] > 0.9


def test_one_device(raw):
    raw["hardware"]["node"] = {"devices_per_node": 1, "intra_bw_gbps": 450.0}
    raw["plan"].update(dp=1, ep=1)
    raw["model"]["n_layers"] = 2
    raw["workload"]["global_batch_seqs"] = 2
    r = simulate(scenario_from_dict(raw))
    assert violations(r) == [] and r.summary["devices"] == 1
    assert r.summary["alltoall_s"] == 0


@pytest.mark.parametrize("prompt", [1, 32768 - 16])
def test_serving_prompt_of_one_token_and_of_the_full_context(raw, prompt):
    raw["workload"] = {"kind": "serving", "arrival": {"process": "batch", "n_requests": 4},
                       "prompt_tokens": {"dist": "fixed", "value": prompt},
                       "output_tokens": {"dist": "fixed", "value": 16}, "max_batch_tokens": 8192}
    raw["plan"].update(dp=8, ep=1, microbatches=1)
    r = simulate(scenario_from_dict(raw))
    assert violations(r) == []
    assert r.summary["ttft_p50_s"] > 0 and r.summary["output_tokens_per_s"] > 0
