"""A serving plan fits only when its KV pool (what ``kv_cache_capacity_tokens`` counts) holds the longest request:
the engine rejects a longer one however much of the budget ``kv_cache_fraction`` keeps outside the pool. check
and simulate give that verdict, the reason states the shortfall against the pool, ``memory.kv_cache_gib`` is the
pool in every case, and check refuses a trace length without a trace as simulate does."""

from __future__ import annotations

import subprocess
import sys

import pytest

from moesim.accounting import GIB
from moesim.check import summary
from moesim.errors import InputError
from moesim.loader import load_scenario
from moesim.memory import (
    kv_bytes_per_token_per_device,
    kv_cache_capacity_tokens,
    memory_report,
    serving_kv_pool_bytes,
)
from moesim.serving_reserve import serving_fit
from moesim.simulate import simulate
from tests.conftest import ROOT

#: The newcomer's scenario: Qwen3-235B FP8 at TP4 on four H100s, one 850K-token prompt at a time, TensorRT-LLM-style
#: pool (kv_cache_fraction 0.9 of what weights and activations leave).
LONG_CONTEXT = """\
name: q235-tp4-850k
model: {preset: qwen3-235b-a22b, dtype: fp8, max_seq_len: 1048576}
hardware: {preset: h100-sxm, cluster: {nodes: 1}, node: {devices_per_node: 4}}
plan: {dp: 1, tp: 4, pp: 1, ep: 1}
workload:
  kind: serving
  arrival: {process: poisson, rate_per_s: 0.05, n_requests: 2}
  prompt_tokens: {dist: fixed, value: 850000}
  output_tokens: {dist: fixed, value: 64}
  max_batch_seqs: 16
  max_batch_tokens: 16384
routing: {distribution: uniform, overflow: dropless, seed: 0}
"""
OUTPUT_TOKENS = 64


@pytest.fixture(scope="module")
def scenario_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("longctx") / "q235-tp4-850k.yaml"
    path.write_text(LONG_CONTEXT)
    return path


def _prompt(path, tokens: int, *sets: str):
    return load_scenario(path, [f"workload.prompt_tokens.value={tokens}", *sets])


def test_a_request_longer_than_the_pool_does_not_fit_though_the_budget_holds_its_kv(scenario_file):
    s = _prompt(scenario_file, 850_000)
    mem = memory_report(s)
    need_gib = (850_000 + OUTPUT_TOKENS) * kv_bytes_per_token_per_device(s) / GIB
    assert mem.longest_request_kv_gib == pytest.approx(need_gib)
    assert mem.kv_cache_gib < need_gib  # the pool is short of the request ...
    assert mem.weights_gib + mem.activations_gib + need_gib <= mem.capacity_gib  # ... the budget is not (the old rule)
    assert not mem.fits
    assert mem.headroom_gib == pytest.approx(mem.kv_cache_gib - need_gib)  # minus the pool's shortfall


def test_the_verdict_turns_where_the_pool_holds_the_longest_request(scenario_file):
    pool_tokens = int(kv_cache_capacity_tokens(_prompt(scenario_file, 1000)))
    just_fits = pool_tokens - OUTPUT_TOKENS
    assert memory_report(_prompt(scenario_file, just_fits)).fits
    assert not memory_report(_prompt(scenario_file, just_fits + 2)).fits


def test_check_states_the_shortfall_against_the_pool(scenario_file):
    """900K prompts: 2.1 GiB short of the pool (the old reason compared with the whole budget: 0.135 GiB)."""
    acc = summary(_prompt(scenario_file, 900_000))
    mem = acc["memory"]
    assert acc["fits"] is False and mem["fits"] is False
    short = (900_000 + OUTPUT_TOKENS) * kv_bytes_per_token_per_device(_prompt(scenario_file, 900_000)) / GIB \
        - mem["kv_cache_gib"]
    assert 1.9 < short < 2.3
    reason = acc["fits_reason"]
    assert f"{short:.1f} GiB short per device" in reason
    assert f"KV pool {mem['kv_cache_gib']:.1f} GiB ({acc['kv_cache_capacity_tokens']:,} tokens)" in reason
    assert "(900,064 tokens)" in reason and "workload.kv_cache_fraction 0.9 of" in reason
    assert acc["headroom_gib"] == pytest.approx(-short)


def test_under_memory_utilization_the_pool_is_all_that_is_left(scenario_file):
    acc = summary(_prompt(scenario_file, 900_000, "workload.memory_utilization=0.9"))
    assert acc["fits"] is False and "the pool is all of the" in acc["fits_reason"]


def test_weights_past_the_budget_leave_no_pool(scenario_file):
    s = _prompt(scenario_file, 1000, "hardware.device.mem_gib=50")
    mem = memory_report(s)
    assert mem.kv_cache_gib == 0.0 and not mem.fits
    fixed = mem.weights_gib + mem.activations_gib
    assert mem.headroom_gib == pytest.approx(mem.capacity_gib - fixed - mem.longest_request_kv_gib)
    assert "leaving no KV pool for the longest request's" in summary(s)["fits_reason"]


@pytest.mark.parametrize("prompt", [1000, 850_000])
def test_kv_cache_gib_is_the_pool_whether_or_not_it_fits(scenario_file, prompt):
    s = _prompt(scenario_file, prompt)
    mem = memory_report(s)
    assert mem.kv_cache_gib == pytest.approx(serving_kv_pool_bytes(s) / GIB)
    assert mem.total_gib == pytest.approx(mem.weights_gib + mem.activations_gib + mem.kv_cache_gib)
    assert "longest_request_kv_gib" not in mem.as_dict()  # saved results keep their registered keys


def test_simulate_agrees_with_check(scenario_file):
    """The plan check calls short of memory is the one whose requests the engine rejects, and the reverse."""
    short = simulate(_prompt(scenario_file, 850_000)).summary
    assert short["fits"] is False and short["rejected_fraction"] == 1.0 and "short per device" in short["fits_reason"]
    held = simulate(_prompt(scenario_file, 700_000)).summary
    assert held["fits"] is True and held["rejected_fraction"] == 0.0 and held["fits_reason"] == ""


def test_serving_fit_alone():
    assert serving_fit(75.0, 55.0, 18.0, 17.0) == (True, pytest.approx(2.0))
    assert serving_fit(75.0, 55.0, 18.0, 20.0) == (False, pytest.approx(-2.0))  # the budget's 2 GiB spare do not help
    assert serving_fit(75.0, 80.0, 0.0, 4.0) == (False, pytest.approx(-9.0))  # 5 over the budget, 4 of KV
    assert serving_fit(75.0, 55.0, 20.0, 20.0)[0]  # a pool exactly the request's size holds it


def test_training_keeps_capacity_minus_total():
    mem = memory_report(load_scenario("mixtral-8x7b-h100-train"))
    assert mem.kv_cache_gib == 0.0 and mem.longest_request_kv_gib == 0.0
    assert mem.headroom_gib == pytest.approx(mem.capacity_gib - mem.total_gib)
    assert mem.fits == (mem.total_gib <= mem.capacity_gib)


TRACE_WITHOUT_FILE = "workload.prompt_tokens={dist: trace}"
SIMULATE_WORDS = "workload: a length with dist 'trace' needs workload.arrival.trace"


def test_check_refuses_a_trace_length_without_a_trace_as_simulate_does(scenario_file):
    s = load_scenario(scenario_file, [TRACE_WITHOUT_FILE])
    with pytest.raises(InputError, match="needs workload.arrival.trace") as checked:
        summary(s)
    with pytest.raises(InputError) as simulated:
        simulate(s)
    assert str(checked.value) == str(simulated.value) == SIMULATE_WORDS


def test_the_cli_check_says_one_line_and_exits_2(scenario_file):
    run = subprocess.run([sys.executable, "-m", "moesim.cli", "check", str(scenario_file), "--set", TRACE_WITHOUT_FILE],
                         capture_output=True, text=True, cwd=ROOT)
    assert run.returncode == 2, run.stderr
    assert run.stderr.strip() == f"error: {SIMULATE_WORDS}" and "Traceback" not in run.stderr


def test_a_trace_length_with_its_trace_still_checks(tmp_path):
    trace = tmp_path / "tr.csv"
    trace.write_text("arrived_at,num_prefill_tokens,num_decode_tokens\n0,1000,100\n1,2000,50\n")
    s = load_scenario("qwen3-30b-a3b-h100-serve", [f"workload.arrival.trace={trace}", TRACE_WITHOUT_FILE])
    assert summary(s)["fits"] is True


def test_a_pipeline_slot_holds_its_share_of_the_pool(scenario_file):
    """With pp 2 the engine gives each micro-batch slot half the pool (``replica_kv_tokens``): a request that the
    whole pool would hold but half does not is rejected by simulate, and check says it does not fit, and why."""
    sets = ("plan.tp=2", "plan.pp=2")
    pool_tokens = int(kv_cache_capacity_tokens(_prompt(scenario_file, 1000, *sets)))
    between = int(0.75 * pool_tokens)  # under the pool, over its half
    s = _prompt(scenario_file, between, *sets)
    mem = memory_report(s)
    assert mem.kv_cache_gib > mem.longest_request_kv_gib and not mem.fits
    assert mem.headroom_gib == pytest.approx(mem.kv_cache_gib - 2 * mem.longest_request_kv_gib)
    run = simulate(s).summary
    assert run["fits"] is False and run["rejected_fraction"] == 1.0
    assert "a pipeline slot's 1/2 of the KV pool" in run["fits_reason"]
    assert memory_report(_prompt(scenario_file, int(0.45 * pool_tokens), *sets)).fits
    assert serving_fit(75.0, 55.0, 18.0, 10.0, slots=2) == (False, pytest.approx(-2.0))
