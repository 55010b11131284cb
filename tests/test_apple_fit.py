"""A Mac that is short of memory: the advice is the wired limit macOS lets a user raise, not a second GPU, and the
reason names that limit; a short closed loop of one user reads the rate every request ran at."""

from __future__ import annotations

import pytest

from moesim import scenario_from_dict, simulate
from moesim.check import summary

MAC = {
    "name": "mixtral-q4-mac",
    "model": {"preset": "mixtral-8x7b", "dtype": "int4", "max_seq_len": 32768},
    "hardware": {"preset": "m2-max", "device": {"mem_gib": 32}},
    "plan": {"dp": 1, "tp": 1, "pp": 1, "ep": 1},
    "workload": {"kind": "serving", "arrival": {"process": "closed", "concurrency": 1, "n_requests": 8},
                 "prompt_tokens": {"dist": "fixed", "value": 512}, "output_tokens": {"dist": "fixed", "value": 128},
                 "max_batch_seqs": 1, "max_batch_tokens": 2048},
}


def test_a_mac_short_of_memory_is_advised_its_wired_limit_not_tensor_parallelism():
    acc = summary(scenario_from_dict(MAC))
    assert acc["fits"] is False
    assert "hardware.device.gpu_wired_limit_gib" in acc["fits_reason"]  # the 21.3 GiB is macOS's share of 32
    assert "plan.tp" not in acc["fits_advice"]
    advice = next(a for a in acc["fits_advice"].split("; ") if a.startswith("hardware.device.gpu_wired_limit_gib"))
    limit = float(advice.split("-> ")[1].split()[0])
    assert limit <= 32 - 4
    raised = dict(MAC, hardware={"preset": "m2-max", "device": {"mem_gib": 32, "gpu_wired_limit_gib": limit}})
    assert summary(scenario_from_dict(raised))["fits"] is True  # the advice, followed, fits
    lower = dict(MAC, hardware={"preset": "m2-max", "device": {"mem_gib": 32, "gpu_wired_limit_gib": limit - 1}})
    assert summary(scenario_from_dict(lower))["fits"] is False  # and it is the smallest whole GiB that does


@pytest.mark.parametrize("n", [4, 8, 12])
def test_a_short_closed_loop_of_identical_requests_reads_their_own_rate(n):
    fits = dict(MAC, hardware="m2-ultra")
    fits["workload"] = dict(MAC["workload"], arrival={"process": "closed", "concurrency": 1, "n_requests": n})
    r = simulate(scenario_from_dict(fits), seed=0)
    assert r.summary["output_tokens_per_s"] == pytest.approx(r.summary["whole_run_output_tokens_per_s"], rel=1e-6)
