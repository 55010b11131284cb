"""The serving summary's overload flag: the queue test, and finishes falling behind the arrivals."""

from __future__ import annotations

import numpy as np

from moesim.engine.serving.steady import overloaded, steady_window


def _table(arrival, finish):
    e2e = finish - arrival
    return {"arrival_s": arrival, "finish_s": finish, "rejected": np.zeros(arrival.size, bool), "ttft_s": e2e / 2,
            "tpot_s": e2e / 20, "e2e_s": e2e, "output_tokens": np.full(arrival.size, 10)}


def _fifo(arrival, service_s):
    """Finishes of one FIFO server taking ``service_s`` per request."""
    finish = np.empty_like(arrival)
    free = 0.0
    for i, a in enumerate(arrival):
        free = max(free, a) + service_s
        finish[i] = free
    return finish


def test_a_run_serving_a_fifth_of_its_offer_is_overloaded_though_its_queue_test_passes():
    """100 long requests offered at 0.5 req/s to a server of 0.1 req/s: the backlog is its own noise
    term (the mean queue), so only the finishes show it."""
    arrival = np.arange(100) * 2.0
    w = steady_window(_table(arrival, _fifo(arrival, 10.0) + 60.0))  # a minute of prefill, then 10 s each
    assert w.queue_growth <= w.growth_limit
    assert w.falls_behind and overloaded(w, "poisson")
    assert not overloaded(w, "batch") and not overloaded(w, "closed")  # their arrivals wait by design


def test_a_run_keeping_up_or_filling_its_batches_is_not():
    arrival = np.arange(100) * 2.0
    assert not steady_window(_table(arrival, arrival + 30.0)).falls_behind  # served as they come
    # the latency grows from 5 to 40 s over the first half, then holds: finishes lag, then keep pace
    e2e = 5.0 + np.clip(arrival, 0.0, 100.0) * 0.35
    w = steady_window(_table(arrival, arrival + e2e))
    assert not w.falls_behind and not overloaded(w, "poisson")


def test_a_run_short_by_less_than_the_noise_of_its_counts_is_not():
    """90 % served of 100 arrivals is within the noise of two counts of ~80: not flagged by the finishes."""
    arrival = np.arange(100) * 1.0
    w = steady_window(_table(arrival, _fifo(arrival, 1.0 / 0.9)))
    assert w.served_req_s < w.offered_req_s and not w.falls_behind
