"""Steady-state serving figures, the overload flag and warning, queueing delay, closed-loop arrivals (issue 18),
and the strict served-vs-offered check of the capacity search (issue 15)."""

from __future__ import annotations

import re

import numpy as np
import pytest

from moesim import load_scenario
from moesim.capacity import parse_slo, verdict
from moesim.cli import main
from moesim.engine.serving.metrics import overload_warning
from moesim.errors import InputError
from moesim.metrics import METRICS
from moesim.simulate import simulate
from tests.conftest import ROOT

ONLINE = ROOT / "scenarios" / "mixtral-8x7b-h100-serve-online.yaml"
M2 = ROOT / "scenarios" / "mixtral-8x7b-m2-ultra-serve.yaml"
SERVING = sorted((ROOT / "scenarios").glob("*serve*.yaml"))
NEW_KEYS = ("steady_window_start_s", "steady_window_end_s", "steady_window_s", "steady_requests", "steady_note",
            "offered_requests_per_s", "queue_growth_requests", "overloaded", "queue_p50_s", "queue_p99_s",
            "whole_run_output_tokens_per_s", "whole_run_requests_per_s", "whole_run_usd_per_mtok",
            "whole_run_ttft_p99_s", "whole_run_queue_p99_s")


def _online(rate: float, n: int, *more: str):
    return simulate(load_scenario(ONLINE, [f"workload.arrival.rate_per_s={rate}",
                                           f"workload.arrival.n_requests={n}", *more])).summary


# ------------------------------------------------------------------ steady-state headline
def test_steady_cost_and_throughput_do_not_depend_on_how_many_requests_are_simulated():
    short, long = _online(50, 500), _online(50, 3000)
    # the whole run's figures move by 2x with the run length (ramp-up and drain) ...
    assert short["whole_run_usd_per_mtok"] > 1.6 * long["whole_run_usd_per_mtok"]
    # ... the steady-state headline does not
    assert short["usd_per_mtok"] == pytest.approx(long["usd_per_mtok"], rel=0.08)
    assert short["output_tokens_per_s"] == pytest.approx(long["output_tokens_per_s"], rel=0.08)
    for s in (short, long):  # a plan that keeps up serves what is offered: ~50 req/s, not the run's ~20-40
        assert not s["overloaded"] and s["requests_per_s"] == pytest.approx(50, rel=0.08)
        assert s["whole_run_requests_per_s"] < 0.8 * s["requests_per_s"]
        assert 0 < s["steady_window_start_s"] < s["steady_window_end_s"]
        assert s["steady_window_s"] == pytest.approx(s["steady_window_end_s"] - s["steady_window_start_s"])
        assert "requests arriving" in s["steady_note"]


def test_an_offline_batch_reports_its_whole_run_and_is_never_overloaded():
    s = simulate(load_scenario(ROOT / "scenarios" / "mixtral-8x7b-h100-serve.yaml",
                               ["workload.arrival.n_requests=400"])).summary
    assert not s["overloaded"] and "offline batch" in s["steady_note"] and "cannot be overloaded" in s["steady_note"]
    assert s["usd_per_mtok"] == pytest.approx(s["whole_run_usd_per_mtok"], rel=1e-12)
    assert s["requests_per_s"] == s["whole_run_requests_per_s"] and s["steady_window_s"] == s["makespan_s"]
    assert np.isnan(s["offered_requests_per_s"]) and overload_warning(s) == ""


# ------------------------------------------------------------------ overload
def test_overloaded_is_true_for_an_overloaded_run_and_false_for_a_light_one():
    heavy, light = _online(200, 3000), _online(20, 1500)
    assert heavy["overloaded"] and heavy["requests_per_s"] < 0.9 * heavy["offered_requests_per_s"]
    assert heavy["queue_growth_requests"] > 0
    assert not light["overloaded"] and light["requests_per_s"] == pytest.approx(light["offered_requests_per_s"])
    assert overload_warning(light) == ""


def test_the_warning_line_names_offered_and_served_rates():
    s = {"overloaded": True, "offered_requests_per_s": 15.8, "requests_per_s": 6.04}
    assert overload_warning(s) == ("offered 16 req/s, served 6.0 req/s: the queue grows; latencies depend on run length")
    assert overload_warning({**s, "overloaded": False}) == ""


def test_simulate_prints_the_warning_under_the_table(capsys):
    assert main(["simulate", str(ONLINE), "--set", "workload.arrival.rate_per_s=200",
                 "--set", "workload.arrival.n_requests=3000"]) == 0
    text = " ".join(capsys.readouterr().out.split())  # rich wraps long lines
    assert "steady state: requests arriving" in text
    assert re.search(r"warning: offered 19\d req/s, served \d+ req/s: the queue grows; latencies depend on run length",
                     text)


@pytest.mark.parametrize("path", SERVING, ids=lambda p: p.stem)
def test_no_shipped_serving_scenario_is_overloaded(path):
    s = simulate(load_scenario(path)).summary
    assert not s["overloaded"], f"{path.stem}: {overload_warning(s)}"


# ------------------------------------------------------------------ queueing delay, closed loop
def test_a_closed_loop_single_stream_has_no_queue_and_ttft_is_the_prefill():
    result = simulate(load_scenario(M2, ["workload.arrival.n_requests=6"]))
    s, req = result.summary, result.tables["requests"]
    assert s["queue_p50_s"] == 0 and s["queue_p99_s"] == 0 and s["whole_run_queue_p99_s"] == 0
    assert not s["overloaded"] and "closed loop" in s["steady_note"]
    # one request at a time: each arrives when the previous finishes ...
    assert req["arrival_s"][0] == 0 and np.array_equal(req["arrival_s"][1:], req["finish_s"][:-1])
    # ... so TTFT is its prefill alone: the first iteration (a whole 256-token prompt) of the run
    it = result.tables["iterations"]
    prefill_s = it["end_s"][0] - it["start_s"][0]
    assert it["prefill_tokens"][0] == 256 and it["decode_tokens"][0] == 0
    assert np.allclose(req["ttft_s"], prefill_s, rtol=1e-9) and s["ttft_p99_s"] == pytest.approx(prefill_s)


def test_closed_loop_keeps_concurrency_requests_in_flight():
    result = simulate(load_scenario(ONLINE, ["workload.arrival={process: closed, concurrency: 16, n_requests: 200}"]))
    req = result.tables["requests"]
    arrival, finish = np.asarray(req["arrival_s"]), np.asarray(req["finish_s"])
    in_flight = [int(((arrival <= t) & (finish > t)).sum()) for t in np.linspace(0, arrival.max(), 50)]
    assert max(in_flight) == 16 and (np.asarray(req["arrival_s"][:16]) == 0).all()
    assert result.summary["served_requests"] == 200 and not result.summary["overloaded"]


def test_queueing_delay_is_part_of_ttft_and_grows_when_requests_wait():
    result = simulate(load_scenario(M2, ["workload.arrival={process: batch, n_requests: 4}"]))
    req = result.tables["requests"]
    queue, ttft = np.asarray(req["queue_s"]), np.asarray(req["ttft_s"])
    assert queue[0] == 0 and (np.diff(queue) > 0).all() and (queue < ttft).all()  # batch 1: each waits for the last
    assert result.summary["queue_p99_s"] == pytest.approx(np.percentile(queue, 99))


@pytest.mark.parametrize("concurrency", [1, 8, 64])
def test_closed_loop_gives_the_same_run_with_and_without_decode_windows(concurrency):
    from tests.test_serving_windows import _assert_same_run

    s = load_scenario(ONLINE, [f"workload.arrival={{process: closed, concurrency: {concurrency}, n_requests: 300}}"])
    assert _assert_same_run(s).summary["served_requests"] == 300


def test_closed_loop_is_refused_with_disaggregation():
    with pytest.raises(InputError, match="closed"):
        load_scenario(ROOT / "scenarios" / "deepseek-v3-h800-serve-disagg.yaml",
                      ["workload.arrival={process: closed, n_requests: 10}"])


def test_new_summary_keys_are_registered():
    s = _online(40, 200)
    for key in NEW_KEYS:
        assert key in s and key in METRICS and "serving" in METRICS[key].kinds, key
    assert METRICS["overloaded"].direction == "min" and METRICS["queue_p99_s"].unit == "s"


# ------------------------------------------------------------------ capacity: the strict check (issue 15)
def _table(arrival, finish):
    e2e = finish - arrival
    return {"arrival_s": arrival, "finish_s": finish, "rejected": np.zeros(arrival.size, bool), "ttft_s": e2e / 2,
            "tpot_s": e2e / 20, "e2e_s": e2e, "output_tokens": np.full(arrival.size, 10)}


def test_a_probe_serving_67_of_80_requests_per_s_fails_the_capacity_check():
    arrival = np.arange(80 * 40) / 80.0  # 80 req/s offered for 40 s (a short probe: its warm-up is capped)
    finish = 20.0 + arrival * 80 / 67  # served at 67 req/s after 20 s: the backlog grows 13 req/s
    w, _, bad = verdict(_table(arrival, finish), parse_slo("e2e_p99=1000"))
    assert w.served_req_s == pytest.approx(67, rel=0.05) and w.offered_req_s == pytest.approx(80, rel=0.05)
    assert w.queue_growth <= w.growth_limit  # the queue-growth test alone let this probe through
    assert bad and bad[0].startswith("overloaded: offered 80")
    ok = _table(arrival, arrival + 20.0)  # the same arrivals, served as they come
    assert verdict(ok, parse_slo("e2e_p99=1000"))[2] == []


def test_a_short_probe_still_filling_its_batches_holds():
    """Finishes lag the arrivals early in the window (the batch and the latency still grow), then
    catch up: the window serves under 90% of what it is offered, its second half does not."""
    arrival = np.arange(80 * 12) / 80.0  # 80 req/s for 12 s
    e2e = 0.5 + np.clip(arrival - 1.0, 0.0, 1.0)  # latency grows from 0.5 to 1.5 s between 1 and 2 s, then holds
    w, _, bad = verdict(_table(arrival, arrival + e2e), parse_slo("e2e_p99=1000"))
    assert w.queue_growth <= w.growth_limit  # the queue-growth test does not flag it
    assert w.served_req_s < 0.9 * w.offered_req_s <= w.served_late_req_s
    assert bad == []


# ------------------------------------------------------------ one replica standing for many
def test_growth_limit_of_one_replica_standing_for_many_is_their_sums_share():
    from moesim.engine.serving.steady import OVERLOAD_TOL, growth_limit

    one, eight = growth_limit(1000, 390.0), growth_limit(1000, 390.0, replicas=8)
    assert one == pytest.approx(OVERLOAD_TOL * 1000 + 3 * np.sqrt(781))
    # the sum of 8 runs: tolerance x 8, noise x sqrt(8); per replica the noise term shrinks by sqrt(8)
    assert 8 * eight == pytest.approx(growth_limit(8000, 8 * 390.0), rel=1e-3)  # (the +1 of each queue aside)
    assert eight - OVERLOAD_TOL * 1000 == pytest.approx((one - OVERLOAD_TOL * 1000) / np.sqrt(8))


def test_a_replica_falling_9_percent_behind_holds_alone_and_fails_for_eight():
    """Served 91% of the offered 25 req/s: inside the 10% floor and, for one replica, inside its
    queue noise; the plan of eight such replicas (whose queues add up) is overloaded."""
    rng = np.random.default_rng(0)
    arrival = np.sort(rng.uniform(0.0, 100.0, 2500))  # 25 req/s for 100 s
    finish = arrival + 16.0 + 0.1 * arrival  # ~400 requests in the system, each waiting 0.1 s longer per s
    req = _table(arrival, finish)
    alone, _, bad_alone = verdict(req, parse_slo("e2e_p99=1000"))
    eight, _, bad_eight = verdict(req, parse_slo("e2e_p99=1000"), replicas=8)
    assert alone.queue_growth == eight.queue_growth and alone.served_req_s >= 0.9 * alone.offered_req_s
    assert bad_alone == [] and not alone.overloaded
    assert eight.overloaded and bad_eight and bad_eight[0].startswith("overloaded")


def test_steady_window_refuses_a_replica_count_below_one():
    arrival = np.arange(100) / 10.0
    with pytest.raises(ValueError, match="replicas = 0"):
        from moesim.engine.serving.steady import steady_window

        steady_window(_table(arrival, arrival + 1.0), replicas=0)


def test_a_run_shorter_than_two_e2e_p90s_is_flagged_short():
    """Near capacity a run's window can hold its fill-up: TTFT p99 read 0.175 s at 160 req/s with 4,000 requests
    and 2.24 s with 16,000, with no word of it unless the run was also overloaded. Such a run says it is short."""
    import moesim
    from moesim.engine.serving.metrics import short_run_warning

    near = moesim.simulate(moesim.load_scenario("mixtral-8x7b-h100-serve-online",
                                                ["workload.arrival.rate_per_s=140"]), seed=0).summary
    assert near["short_run"] and near["steady_window_s"] < 2 * near["e2e_p90_s"]
    assert (near["overloaded"] or "this run is short" in short_run_warning(near))
    calm = moesim.simulate(moesim.load_scenario("mixtral-8x7b-h100-serve-online"), seed=0).summary
    assert not calm["short_run"] and short_run_warning(calm) == ""
