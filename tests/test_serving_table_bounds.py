"""A serving run's cost tables cover the largest iteration that can happen, not the batch limits as written: a
sequence limit far above the requests (``max_batch_seqs: 1048576`` to mean "no limit") prices the same run as one
at the number of requests, without tables a million rows long (a fuzzed case took 78 s instead of 1.4 s)."""

from __future__ import annotations

import pytest

import moesim.engine.serving.simulate as serving
from moesim.loader import load_scenario
from moesim.simulate import simulate

N = 64  # requests of 128 prompt tokens each (the shipped offline batch's lengths)
BASE = ["workload.arrival.n_requests=64"]


@pytest.fixture
def table_sizes(monkeypatch):
    sizes = []
    real = serving.IterationCost

    def spy(*args, **kwargs):
        sizes.append(kwargs["max_tokens"])
        return real(*args, **kwargs)

    monkeypatch.setattr(serving, "IterationCost", spy)
    return sizes


def test_an_unbounded_batch_limit_prices_the_run_the_requests_allow(table_sizes):
    huge = simulate(load_scenario("mixtral-8x7b-h100-serve", [*BASE, "workload.max_batch_seqs=1048576"]), None).summary
    exact = simulate(load_scenario("mixtral-8x7b-h100-serve", [*BASE, f"workload.max_batch_seqs={N}"]), None).summary
    assert huge["served_requests"] == N
    for key in ("output_tokens_per_s", "ttft_p99_s", "tpot_p99_s", "usd_per_mtok"):
        assert huge[key] == exact[key], key
    # every prompt at once plus a decode token each is the most one iteration can hold
    assert max(table_sizes) <= N * 128 + N


def test_a_binding_limit_keeps_its_table(table_sizes):
    simulate(load_scenario("mixtral-8x7b-h100-serve", [*BASE, "workload.max_batch_seqs=8",
                                                       "workload.max_batch_tokens=512"]), None)
    assert table_sizes and all(size >= 512 for size in table_sizes)
