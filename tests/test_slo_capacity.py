"""Capacity under an SLO (moesim.capacity, `simulate --slo`): parsing, the steady-state window, the search."""

from __future__ import annotations

import json
import math
from dataclasses import replace

import numpy as np
import pytest

from moesim import capacity, load_scenario
from moesim.capacity import Slo, max_goodput, measure, parse_slo
from moesim.engine.serving.requests import sample_requests
from moesim.engine.serving.steady import completion_rate, steady_window, window_latencies
from moesim.errors import InputError
from moesim.metrics import METRICS
from moesim.saturation import saturate, saturated_rate
from moesim.simulate import simulate
from tests.conftest import ROOT

ONLINE = ROOT / "scenarios" / "mixtral-8x7b-h100-serve-online.yaml"
#: Short requests, so that a probe (even near zero load, one request at a time) plays in well under a second.
SMALL = ["workload.prompt_tokens={dist: lognormal, median: 128, sigma: 0.5, max: 512}",
         "workload.output_tokens={dist: lognormal, median: 24, sigma: 0.5, max: 96}"]
N = 200  # requests per probe in these tests


@pytest.fixture(scope="module")
def small():
    return load_scenario(ONLINE, SMALL)


@pytest.fixture(scope="module")
def found(small):
    """One search, shared: a TPOT limit the plan meets at low load and misses well before it saturates."""
    return max_goodput(small, parse_slo("tpot_p99=0.015"), rel_tol=0.1, n_requests=N)


# ------------------------------------------------------------------ parse_slo
def test_parse_slo_reads_limits_in_seconds():
    slo = parse_slo("ttft_p99=2,tpot_p99=0.2")
    assert slo.limits == {"ttft_p99_s": 2.0, "tpot_p99_s": 0.2}
    assert (slo.ttft_p99_s, slo.tpot_p99_s, slo.e2e_p99_s) == (2.0, 0.2, None)
    assert slo.text == "ttft_p99=2,tpot_p99=0.2" and parse_slo(slo.text) == slo
    assert parse_slo(" e2e_p90 = 1500ms , ttft_mean=2s,tpot_p50_s=0.05 ").limits == {
        "e2e_p90_s": 1.5, "ttft_mean_s": 2.0, "tpot_p50_s": 0.05}


@pytest.mark.parametrize("text, words", [
    ("ttft_p98=2", ["unknown metric 'ttft_p98'", "allowed: ttft_mean, ttft_p50, ttft_p90, ttft_p99, tpot_mean"]),
    ("ttft_p99=abc", ["'ttft_p99=abc' is not a number of seconds"]),
    ("ttft_p99=2,tpot_p99=x", ["'tpot_p99=x' is not a number"]),
    ("ttft_p99=0", ["'ttft_p99=0'", "positive"]),
    ("ttft_p99=-1", ["'ttft_p99=-1'", "positive"]),
    ("ttft_p99=nan", ["'ttft_p99=nan'", "finite"]),
    ("ttft_p99=inf", ["'ttft_p99=inf'", "finite"]),
    ("ttft_p99", ["'ttft_p99' is not metric=seconds"]),
    ("=2", ["'=2' is not metric=seconds"]),
    ("", ["no limit given"]),
    (" , ", ["no limit given"]),
    ("ttft_p99=1,ttft_p99=2", ["ttft_p99 given twice"]),
])
def test_parse_slo_rejects_with_one_line_naming_the_item(text, words):
    with pytest.raises(InputError) as info:
        parse_slo(text)
    msg = str(info.value)
    assert msg.startswith("--slo: ") and "\n" not in msg
    for w in words:
        assert w in msg


def test_slo_built_directly_is_checked_too():
    with pytest.raises(InputError, match="unknown metric 'ttft_p99'"):
        Slo({"ttft_p99": 1.0})  # summary names end in _s
    with pytest.raises(InputError, match="positive"):
        Slo({"ttft_p99_s": 0.0})
    assert Slo({"ttft_p99_s": 2}).violations({"ttft_p99_s": 3.1}) == ["ttft_p99 3.1 s > 2 s"]
    # a value just over its limit is printed with the digits that show it over, not rounded onto it
    assert Slo({"tpot_p99_s": 0.2}).violations({"tpot_p99_s": 0.20021}) == ["tpot_p99 0.2002 s > 0.2 s"]
    assert Slo({"tpot_p99_s": 0.2}).violations({"tpot_p99_s": 0.2}) == []
    assert Slo({"tpot_p99_s": 2}).violations({"tpot_p99_s": math.nan}) == []  # nothing to judge


# ------------------------------------------------------------------ steady-state window (pure)
def _table(arrival, finish, rejected=None, output=None):
    arrival, finish = np.asarray(arrival, float), np.asarray(finish, float)
    rejected = np.zeros(arrival.size, bool) if rejected is None else np.asarray(rejected)
    e2e = finish - arrival
    return {"arrival_s": arrival, "finish_s": finish, "rejected": rejected, "ttft_s": e2e / 2,
            "tpot_s": e2e / 20, "e2e_s": e2e, "output_tokens": np.full(arrival.size, 10) if output is None else output}


def test_a_plan_that_keeps_up_is_steady_and_the_window_drops_warm_up_and_drain():
    arrival = np.arange(1000) / 10.0  # 10 requests/s for 100 s, each served in 1 s
    w = steady_window(_table(arrival, arrival + 1.0))
    assert (w.start_s, w.end_s) == (10.0, 90.0)  # first and last 10% of the arrivals left out
    assert w.n_window == 800 and not w.warmup_by_latency and not w.overloaded
    assert w.offered_req_s == pytest.approx(10.0) and w.served_req_s == pytest.approx(10.0)
    assert abs(w.queue_growth) < 1 and w.output_tokens_per_s == pytest.approx(100.0)
    assert "requests arriving 10-90 s (800 of 1000" in w.describe()
    lat = window_latencies(_table(arrival, arrival + 1.0), w)
    assert lat["e2e_p99_s"] == pytest.approx(1.0) and lat["ttft_p50_s"] == pytest.approx(0.5)


def test_a_queue_growing_across_the_window_is_overload():
    arrival = np.arange(1000) / 10.0  # 10 requests/s offered, served one after another at 5/s
    finish = np.arange(1, 1001) / 5.0
    w = steady_window(_table(arrival, finish))
    assert w.overloaded and w.queue_growth > w.growth_limit
    assert w.served_req_s == pytest.approx(5.0, rel=0.05) and w.offered_req_s == pytest.approx(10.0, rel=0.01)
    assert w.warmup_by_latency and w.warmup_capped  # its latency grows with the run: the warm-up stops at half


def test_warm_up_lasts_one_e2e_p90_when_requests_live_longer_than_10_percent_of_the_run():
    arrival = np.arange(1000) / 10.0
    w = steady_window(_table(arrival, arrival + 20.0))  # 20 s in the system: 2x the first 10% of arrivals
    assert w.start_s == pytest.approx(20.0) and w.warmup_by_latency and not w.warmup_capped
    assert not w.overloaded and "one e2e p90" in w.describe()


def test_rejected_requests_are_counted_and_never_served():
    arrival = np.arange(200) / 10.0
    rejected = np.arange(200) % 20 == 0  # 5%
    finish = np.where(rejected, np.nan, arrival + 1.0)
    w = steady_window(_table(arrival, finish, rejected))
    assert w.rejected_fraction == pytest.approx(0.05) and not w.overloaded


def test_completion_rate_reads_the_central_finishes():
    assert completion_rate({"finish_s": np.r_[np.arange(100) / 4.0, np.nan]}) == pytest.approx(4.0, rel=0.02)


# ------------------------------------------------------------------ probes on a real scenario
def test_an_overloaded_probe_fails_as_overloaded(small):
    slo = parse_slo("e2e_p99=1000")  # a latency limit nothing reaches: only overload can fail it
    p = measure(small, 5000.0, slo, n_requests=N)
    assert not p.holds and p.reason.startswith("overloaded: offered")
    assert p.served_req_s < 0.5 * p.window.offered_req_s and p.window.queue_growth > p.window.growth_limit
    assert p.n_requests == N and p.arrivals == "Poisson arrivals at the probe rate"
    assert set(p.row()) >= {"rate_req_s", "holds", "reason", "e2e_p99_s", "served_req_s"}


def test_the_search_brackets_the_capacity_monotonically(small, found):
    slo = found.slo
    rate = found.max_goodput_req_s
    assert rate > 0 and found.probe.holds and found.probe.rate_req_s == rate
    assert 2 <= len(found.probes) <= capacity.MAX_PROBES
    held = [p.rate_req_s for p in found.probes if p.holds]
    failed = [p.rate_req_s for p in found.probes if not p.holds]
    assert max(held) == rate and failed and min(failed) > rate  # every probe above the capacity failed
    assert (min(failed) - rate) / min(failed) < 0.1  # stopped within rel_tol
    assert "tpot_p99" in found.limit and f"{min(failed):.4g} req/s" in found.limit
    # played again at that rate (same seed, same requests) it holds; 20% above it fails
    assert measure(small, rate, slo, n_requests=N).holds
    assert not measure(small, rate * 1.2, slo, n_requests=N).holds


def test_capacity_keys_and_the_run_at_capacity(found):
    keys = found.summary_keys()
    assert list(keys)[:5] == ["max_goodput_req_s", "usd_per_mtok_at_capacity", "tokens_per_s_per_device_at_capacity",
                              "slo", "capacity_probes"]
    assert keys["slo"] == "tpot_p99=0.015" and keys["capacity_probes"] == len(found.probes)
    assert keys["usd_per_mtok_at_capacity"] > 0 and keys["tokens_per_s_per_device_at_capacity"] > 0
    # cost at capacity: the cluster's dollars per second over the steady output tokens per second
    devices_usd_per_s = 8 * 2.99 / 3600  # 8 H100 at the preset's price
    tok = keys["tokens_per_s_per_device_at_capacity"] * 8
    assert keys["usd_per_mtok_at_capacity"] == pytest.approx(devices_usd_per_s / tok * 1e6, rel=1e-6)
    assert "Poisson arrivals" in keys["capacity_note"] and "steady state" in keys["capacity_note"]
    run = found.result
    assert run.summary["max_goodput_req_s"] == found.max_goodput_req_s and run.summary["n_requests"] == N
    table = run.tables["capacity_probes"]
    assert table["rate_req_s"] == [p.rate_req_s for p in found.probes] and "tpot_p99_s" in table
    assert all(p.result is None for p in found.probes)  # only the run at capacity keeps its tables


def test_a_plan_that_holds_to_saturation_is_found_from_its_first_guess(small):
    # only overload can fail this SLO: the capacity is near the saturated rate, where the search
    # guesses first, so low load, the guess and one step bracket it
    cap = max_goodput(small, parse_slo("e2e_p99=1000"), n_requests=N)
    assert cap.probes[1].rate_req_s == pytest.approx(capacity.GUESS_FACTOR * cap.saturation_req_s)
    assert len(cap.probes) <= 4
    assert 0.85 * cap.saturation_req_s <= cap.max_goodput_req_s <= 1.1 * cap.saturation_req_s


def test_the_saturated_rate_reads_full_batches_not_the_first_finishes():
    s = load_scenario(ONLINE, SMALL + ["plan.dp=1", "plan.tp=8", "workload.max_batch_seqs=128"])
    runs = {}
    for n in (256, 2048):  # two batches' worth of requests (what max_goodput plays), and eight times that
        a = s.workload.arrival.model_copy(update={"process": "batch", "n_requests": n})
        runs[n] = simulate(s.model_copy(update={"workload": s.workload.model_copy(update={"arrival": a})}), seed=0)
    assert saturated_rate(runs[256]) == pytest.approx(saturated_rate(runs[2048]), rel=0.03)
    sat = saturate(s)  # 2 x 128 slots, raised to the probes' floor
    assert sat.n_requests == capacity.MIN_REQUESTS
    assert sat.rate_req_s == pytest.approx(saturated_rate(runs[2048]), rel=0.03) and sat.decode_p90_s > 0
    # completions over the central finishes read the short run too high: its first finishers are short
    assert completion_rate(runs[256].tables["requests"]) > 1.15 * completion_rate(runs[2048].tables["requests"])


def test_a_probe_standing_for_replicas_spans_the_time_their_sum_would(small):
    n1 = capacity.probe_requests(small, 100.0, 50.0)  # 25,000 wanted: capped
    n8 = capacity.probe_requests(small, 100.0 / 8, 50.0, replicas=8)
    assert n1 == capacity.MAX_REQUESTS and n8 == capacity.MAX_REQUESTS // 8
    assert n8 / (100.0 / 8) == pytest.approx(n1 / 100.0)  # the same seconds of arrivals
    assert capacity.probe_requests(small, 1.0, 1.0, replicas=64) == capacity.MIN_REQUESTS  # never below the floor


def test_an_impossible_slo_has_capacity_zero(small):
    seen = []
    cap = max_goodput(small, parse_slo("ttft_p99=1e-6"), n_requests=N, on_probe=seen.append)
    assert cap.max_goodput_req_s == 0 and len(cap.probes) == 1 and len(seen) == 1
    assert seen[0].rate_req_s == cap.probes[0].rate_req_s == cap.probe.rate_req_s and not cap.probe.holds
    assert "near zero load" in cap.limit and "ttft_p99" in cap.limit and "> 1e-06 s" in cap.limit
    keys = cap.summary_keys()
    assert math.isnan(keys["usd_per_mtok_at_capacity"]) and keys["tokens_per_s_per_device_at_capacity"] == 0


def test_rejected_requests_fail_the_slo(small):
    # unbounded prompts (no max), every one over the budget: refused at arrival (a bounded one is refused up front)
    s = load_scenario(ONLINE, SMALL + ["workload.prompt_tokens={dist: lognormal, median: 5000, sigma: 0.01}",
                                       "workload.max_batch_tokens=4096", "workload.chunked_prefill=false"])
    p = measure(s, 1.0, parse_slo("e2e_p99=1000"), n_requests=20)
    assert not p.holds and p.reason.startswith("rejected: 100.0% of requests")


def test_training_scenarios_are_refused(small):
    train = load_scenario(ROOT / "scenarios" / "mixtral-8x7b-h100-train.yaml")
    for call in (lambda: max_goodput(train, parse_slo("ttft_p99=2")), lambda: measure(train, 1.0, parse_slo("ttft_p99=2"))):
        with pytest.raises(InputError, match="--slo applies to serving scenarios; mixtral-8x7b-h100-train is a training"):
            call()
    with pytest.raises(InputError, match="rate 0"):
        measure(small, 0, parse_slo("ttft_p99=2"))


def test_a_disaggregated_scenario_is_probed_through_simulate():
    s = load_scenario(ROOT / "scenarios" / "deepseek-v3-h800-serve-disagg.yaml")
    p = measure(s, 100.0, parse_slo("ttft_p99=2,tpot_p99=0.1"), n_requests=60)
    assert p.summary["decode_devices"] == 144 and p.n_requests == 60  # the disaggregated engine ran
    assert p.holds == (p.latencies["ttft_p99_s"] <= 2 and p.latencies["tpot_p99_s"] <= 0.1
                       and not p.window.overloaded and p.window.rejected_fraction <= 0.01
                       and p.window.served_req_s >= 0.9 * p.window.offered_req_s)  # strict: issue 15's 67-of-80 probe


# ------------------------------------------------------------------ arrivals of a probe
def test_a_trace_keeps_its_order_with_times_scaled_to_the_probe_rate(tmp_path):
    s = load_scenario(ROOT / "scenarios" / "llama-2-7b-a100-serve.yaml")
    probe_s, note = capacity._with_arrivals(s, 2.5, 300, tmp_path)
    got = sample_requests(probe_s.workload, np.random.default_rng(0))
    base = sample_requests(s.workload.model_copy(update={"arrival": s.workload.arrival.model_copy(
        update={"n_requests": 300})}), np.random.default_rng(0))
    assert len(got) == 300 and (len(got) - 1) / (got.arrival_s[-1] - got.arrival_s[0]) == pytest.approx(2.5)
    np.testing.assert_allclose(got.arrival_s / got.arrival_s[-1], base.arrival_s / base.arrival_s[-1], rtol=1e-9)
    np.testing.assert_array_equal(got.prompt_tokens, base.prompt_tokens)
    assert note.startswith("trace arrival times scaled by") and "(first 300 rows)" in note


def test_batch_arrivals_become_poisson_at_the_probe_rate(tmp_path):
    s = load_scenario(ROOT / "scenarios" / "mixtral-8x7b-h100-serve.yaml")
    assert s.workload.arrival.process == "batch"
    probe_s, note = capacity._with_arrivals(s, 40.0, 500, tmp_path)
    a = probe_s.workload.arrival
    assert (a.process, a.rate_per_s, a.n_requests) == ("poisson", 40.0, 500)
    assert "batch arrivals replaced" in note and s.workload.arrival.process == "batch"  # the original is untouched


def test_probe_requests_rule(small):
    assert capacity.probe_requests(small, 10.0) == 4000  # the scenario's own count (>= 1000)
    assert capacity.probe_requests(small, 10.0, e2e_p90_s=2.0) == 1000  # 5 x 2 s x 10/s = 100, floored
    assert capacity.probe_requests(small, 100.0, e2e_p90_s=3.0) == 1500
    assert capacity.probe_requests(small, 1e4, e2e_p90_s=30.0) == capacity.MAX_REQUESTS


# ------------------------------------------------------------------ registry and CLI
def test_capacity_keys_are_registered(found):
    keys = set(found.summary_keys())
    assert keys == {m.name for m in METRICS.values() if "capacity" in m.kinds}
    assert METRICS["max_goodput_req_s"].direction == "max" and METRICS["usd_per_mtok_at_capacity"].direction == "min"


def test_the_readme_capacity_table_is_generated_where_its_block_is():
    from moesim.metrics import markdown_table, readme_with_tables

    text = "<!-- metrics:training -->\n<!-- /metrics:training -->\n<!-- metrics:serving -->\n<!-- /metrics:serving -->\n"
    assert "max_goodput_req_s" not in readme_with_tables(text)  # the capacity block is optional
    filled = readme_with_tables(text + "<!-- metrics:capacity -->\n<!-- /metrics:capacity -->\n")
    assert markdown_table("capacity") in filled and "| **`max_goodput_req_s`** | requests/s |" in filled
    assert (ROOT / "README.md").read_text().count("| **`max_goodput_req_s`** |") == 1


@pytest.fixture
def fast_cli(monkeypatch):
    """The CLI sizes its own runs; keep them small here."""
    monkeypatch.setattr(capacity, "MAX_REQUESTS", N)
    monkeypatch.setattr(capacity, "MIN_REQUESTS", N)
    monkeypatch.setattr(capacity, "LOW_LOAD_REQUESTS", 50)
    return [str(ONLINE), *[a for item in SMALL for a in ("--set", item)]]


def test_cli_simulate_slo_prints_the_capacity(fast_cli, capsys):
    from moesim.cli import main

    assert main(["simulate", *fast_cli, "--slo", "tpot_p99=0.02", "--json"]) == 0
    captured = capsys.readouterr()
    data = json.loads(captured.out)
    assert data["max_goodput_req_s"] > 0 and data["slo"] == "tpot_p99=0.02" and data["capacity_probes"] >= 2
    assert data["kind"] == "serving" and "ttft_p99_s" in data and "probe 1:" in captured.err
    assert main(["simulate", *fast_cli, "--slo", "tpot_p99=0.02"]) == 0
    text = " ".join(capsys.readouterr().out.split())  # the title wraps at the terminal's width
    assert "at capacity under tpot_p99=0.02:" in text and "req/s (seed 0)" in text
    assert "max_goodput_req_s" in text and "limit: at " in text and "note: Poisson arrivals" in text


def test_cli_writes_the_probes_table(fast_cli, tmp_path, capsys):
    from moesim.cli import main

    assert main(["simulate", *fast_cli, "--slo", "ttft_p99=1e-6", "--out", str(tmp_path)]) == 0
    assert "capacity 0 under ttft_p99=1e-06 (the run at" in " ".join(capsys.readouterr().out.split())
    head = (tmp_path / "capacity_probes.csv").read_text().splitlines()[0]
    assert head.startswith("probe,rate_req_s,holds,reason,ttft_p99_s,served_req_s")


@pytest.mark.parametrize("argv, words", [
    (["--slo", "ttft_p98=2"], "--slo: unknown metric 'ttft_p98'"),
    (["--slo", "ttft_p99=abc"], "is not a number of seconds"),
])
def test_cli_bad_slo_is_one_line_exit_2(argv, words, capsys):
    from moesim.cli import main

    assert main(["simulate", str(ONLINE), *argv]) == 2
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and words in lines[0] and "Traceback" not in err


def test_cli_slo_on_a_training_scenario_is_one_line_exit_2(capsys):
    from moesim.cli import main

    assert main(["simulate", "mixtral-8x7b-h100-train", "--slo", "ttft_p99=2"]) == 2
    lines = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert lines == ["error: --slo applies to serving scenarios; mixtral-8x7b-h100-train is a training scenario"]


def test_a_failing_probe_just_over_its_limit_is_named_fragile():
    """_over_by: how far a probe that failed on latency alone is over its limits; None for any other failure."""
    from types import SimpleNamespace

    from moesim.capacity import NEAR_LIMIT, _over_by

    slo = parse_slo("ttft_p99=5,tpot_p99=0.2")
    lat = {"ttft_p99_s": 2.0, "tpot_p99_s": 0.20021}
    just = SimpleNamespace(holds=False, slo=slo, latencies=lat, reason="; ".join(slo.violations(lat)))
    assert just.reason == "tpot_p99 0.2002 s > 0.2 s"
    assert _over_by(just) == pytest.approx(0.00105) and _over_by(just) < NEAR_LIMIT
    far = SimpleNamespace(holds=False, slo=slo, latencies={**lat, "ttft_p99_s": 7.5},
                          reason="ttft_p99 7.5 s > 5 s; tpot_p99 0.2002 s > 0.2 s")
    assert _over_by(far) == pytest.approx(0.5)  # the worst limit decides
    overloaded = SimpleNamespace(holds=False, slo=slo, latencies=lat,
                                 reason="overloaded: offered 2 req/s, served 1.5 req/s (queue +90 requests over the "
                                        "window); tpot_p99 0.2002 s > 0.2 s")
    assert _over_by(overloaded) is None
    assert _over_by(SimpleNamespace(holds=True, slo=slo, latencies=lat, reason="holds: ...")) is None


def test_requests_of_one_length_saturate_at_least_at_the_whole_runs_rate():
    """Fixed 128/128 requests leave their batch together: the window between the first finishes and the
    last first token is the batches' refill. The saturated rate is never below the whole run's mean (it had
    read 7.1k of 80.6k tokens/s for eight TP1 replicas, and the plan search pruned the best plan by it)."""
    s = load_scenario(ROOT / "scenarios" / "mixtral-8x7b-h100-serve.yaml", ["plan.ep=1"])
    assert s.workload.prompt_tokens.dist == s.workload.output_tokens.dist == "fixed"
    sat = saturate(s)
    a = s.workload.arrival.model_copy(update={"process": "batch", "n_requests": sat.n_requests})
    run = simulate(s.model_copy(update={"workload": s.workload.model_copy(update={"arrival": a})}), seed=0)
    assert sat.output_tokens_per_s >= 0.99 * run.summary["output_tokens_per_s"]


def test_a_search_above_a_saturated_rate_that_read_low_steps_up_freely(small, monkeypatch):
    """Held above r_sat, the saturated run read low: steps up double (log scale) instead of 5 % a probe, so
    the search still brackets the capacity within its probes."""
    slo = parse_slo("tpot_p99=0.015")
    truth = max_goodput(small, slo, rel_tol=0.1, n_requests=N)
    real = capacity.saturate

    def low(*args, **kwargs):  # a saturated rate a tenth of the real one
        sat = real(*args, **kwargs)
        return replace(sat, rate_req_s=sat.rate_req_s / 10, output_tokens_per_s=sat.output_tokens_per_s / 10)

    monkeypatch.setattr(capacity, "saturate", low)
    found = max_goodput(small, slo, rel_tol=0.1, n_requests=N)
    assert not found.limit.startswith("held at every rate probed")
    assert found.max_goodput_req_s == pytest.approx(truth.max_goodput_req_s, rel=0.2)


def test_a_probe_longer_than_its_trace_replays_the_trace_at_the_same_mean_rate(tmp_path):
    trace = tmp_path / "t.csv"  # 50 rows, uneven gaps
    gaps = np.tile([0.1, 0.3, 0.2, 0.4], 13)[:49]
    times = np.r_[0.0, np.cumsum(gaps)]
    trace.write_text("arrived_at,num_prefill_tokens,num_decode_tokens\n"
                     + "".join(f"{t},{100 + i},{10 + i}\n" for i, t in enumerate(times)))
    s = load_scenario(ROOT / "scenarios" / "llama-2-7b-a100-serve.yaml", [f"workload.arrival.trace={trace}",
                                                                          "workload.arrival.n_requests=50"])
    probe_s, note = capacity._with_arrivals(s, 4.0, 175, tmp_path)
    got = sample_requests(probe_s.workload, np.random.default_rng(0))
    assert len(got) == 175 and "its 50 rows played 4 times" in note
    assert got.arrival_s[50] - got.arrival_s[49] == pytest.approx(1 / 4.0)  # the seam: one mean gap
    assert np.mean(np.diff(got.arrival_s[:150])) == pytest.approx(1 / 4.0)  # three whole passes at the rate
    np.testing.assert_array_equal(got.prompt_tokens[50:100], got.prompt_tokens[:50])  # the rows again, in order
    # the probe's length follows its latency, as a Poisson probe's does, not the trace's rows
    assert capacity.probe_requests(s, 100.0, e2e_p90_s=3.0) == 1500
