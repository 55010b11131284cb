"""Serving building blocks: request sampling, the batching scheduler, expert touch counts."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from moesim.accounting import expected_experts_touched
from moesim.engine import expert_load
from moesim.engine.serving.batching import EngineState, RequestBook, commit, schedule
from moesim.engine.serving.requests import sample_requests
from moesim.schemas import LengthDist, ServingWorkload

ROOT = Path(__file__).resolve().parents[1]

TRACE = ROOT / "scenarios" / "traces" / "splitwise_conv.csv"


# ---------------------------------------------------------------- requests
def _workload(**kw) -> ServingWorkload:
    base = {"prompt_tokens": {"dist": "fixed", "value": 10}, "output_tokens": {"dist": "fixed", "value": 5}}
    return ServingWorkload.model_validate(base | kw)


def test_poisson_arrivals_have_the_rate_and_a_seed_fixes_them():
    w = _workload(arrival={"process": "poisson", "rate_per_s": 20.0, "n_requests": 20000})
    a = sample_requests(w, np.random.default_rng(0))
    gaps = np.diff(np.r_[0.0, a.arrival_s])
    assert gaps.mean() == pytest.approx(1 / 20.0, rel=0.03)
    assert gaps.std() == pytest.approx(1 / 20.0, rel=0.05)  # exponential: std = mean
    b = sample_requests(w, np.random.default_rng(0))
    assert np.array_equal(a.arrival_s, b.arrival_s)


def test_length_distributions():
    rng = np.random.default_rng(1)
    u = LengthDist(dist="uniform", low=5, high=9).sample(5000, rng)
    assert u.min() == 5 and u.max() == 9
    ln = LengthDist(dist="lognormal", median=300, sigma=0.8, max=2000).sample(20000, rng)
    assert np.median(ln) == pytest.approx(300, rel=0.05)
    assert ln.max() == 2000 and ln.min() >= 1
    assert np.all(LengthDist(dist="fixed", value=7).sample(3, rng) == 7)


def test_trace_arrivals_take_the_first_rows_in_order():
    w = _workload(arrival={"process": "trace", "n_requests": 5, "trace": str(TRACE)},
                  prompt_tokens={"dist": "trace"}, output_tokens={"dist": "trace", "max": 50})
    r = sample_requests(w, np.random.default_rng(0))
    assert r.arrival_s.tolist() == pytest.approx([0.0, 4.314579, 4.541877, 4.710427, r.arrival_s[4]])
    assert r.prompt_tokens[:4].tolist() == [374, 396, 879, 91]
    assert r.output_tokens[:4].tolist() == [44, 50, 50, 16]


def test_an_unsorted_trace_is_read_in_time_order_with_each_rows_lengths(tmp_path):
    """A log written by several workers: the rows are put in arrival order, each keeping its lengths, and
    the earliest (not the first row) arrives at 0."""
    trace = tmp_path / "t.csv"
    trace.write_text("arrived_at,num_prefill_tokens,num_decode_tokens\n0.5,100,20\n0.1,200,30\n0.3,300,40\n")
    w = _workload(arrival={"process": "trace", "n_requests": 2, "trace": str(trace)},
                  prompt_tokens={"dist": "trace"}, output_tokens={"dist": "trace"})
    r = sample_requests(w, np.random.default_rng(0))
    assert r.arrival_s.tolist() == pytest.approx([0.0, 0.2])
    assert r.prompt_tokens.tolist() == [200, 300] and r.output_tokens.tolist() == [30, 40]


def test_a_rate_scales_a_traces_arrival_times_keeping_its_order_and_bursts(tmp_path):
    """``rate_per_s`` beside a trace replays it at that mean rate (a load sweep over one's own trace); it was
    silently ignored. A trace whose rows arrive at one time has no rate to scale: one clear error."""
    from moesim.errors import InputError

    trace = tmp_path / "t.csv"
    trace.write_text("arrived_at,num_prefill_tokens,num_decode_tokens\n0.0,1,1\n0.1,1,1\n0.4,1,1\n0.9,1,1\n")
    arrival = {"process": "trace", "n_requests": 4, "trace": str(trace)}
    own = sample_requests(_workload(arrival=arrival), np.random.default_rng(0)).arrival_s
    fast = sample_requests(_workload(arrival=arrival | {"rate_per_s": 30.0}), np.random.default_rng(0)).arrival_s
    assert own.tolist() == pytest.approx([0.0, 0.1, 0.4, 0.9])
    assert fast.tolist() == pytest.approx(own * (3 / 0.9) / 30.0)  # mean gap 0.3 s -> 1/30 s
    trace.write_text("arrived_at,num_prefill_tokens,num_decode_tokens\n1.0,1,1\n1.0,1,1\n")
    with pytest.raises(InputError, match="workload.arrival.rate_per_s = 30: the trace's first 2 rows arrive at one"):
        sample_requests(_workload(arrival=arrival | {"rate_per_s": 30.0}), np.random.default_rng(0))


# ---------------------------------------------------------------- batching
def _engine(cap=1000, seqs=4, tokens=8, chunked=True) -> EngineState:
    return EngineState(cap, seqs, tokens, chunked)


def test_chunked_prefill_then_decode_event_log():
    book = RequestBook(np.array([10, 3]), np.array([2, 1]))
    eng = _engine()
    eng.waiting.extend([0, 1])
    log = []
    for t in (1.0, 2.0, 3.0):
        b = schedule(eng, book)
        log.append((b.ids.tolist(), b.q_tokens.tolist(), b.is_decode.tolist(), b.emits.tolist()))
        commit(eng, book, b, t)
    assert log == [
        ([0], [8], [False], [False]),  # request 0 takes the whole 8-token budget: a chunk
        ([0, 1], [2, 3], [False, False], [True, True]),  # its last 2 tokens + request 1's prompt
        ([0], [1], [True], [True]),  # request 0 decodes its second token; request 1 is done
    ]
    assert book.first_token_s.tolist() == [2.0, 2.0]
    assert book.finish_s.tolist() == [3.0, 2.0]
    assert eng.kv_used_tokens == 0 and eng.outstanding == 0


def test_without_chunked_prefill_a_prompt_waits_for_a_whole_budget():
    book = RequestBook(np.array([6, 6]), np.array([3, 3]))
    eng = _engine(chunked=False)
    eng.waiting.extend([0, 1])
    b = schedule(eng, book)
    assert b.ids.tolist() == [0] and b.q_tokens.tolist() == [6]  # 6 + 6 > 8: the second waits


def test_preemption_frees_kv_and_the_request_recomputes():
    book = RequestBook(np.array([5, 5]), np.array([10, 10]))
    eng = _engine(cap=14, tokens=100)
    eng.waiting.extend([0, 1])
    t, preempted = 0.0, 0
    while eng.outstanding:
        t += 1.0
        b = schedule(eng, book)
        assert eng.kv_used_tokens <= 14
        preempted += b.preempted
        commit(eng, book, b, t)
        assert t < 100
    assert preempted >= 1 and book.preemptions[1] >= 1 and book.preemptions[0] == 0
    assert np.all(book.generated == book.output)
    assert book.target[1] > book.prompt[1]  # recompute covers prompt + tokens generated before


def test_full_kv_admission_reserves_prompt_and_output_and_never_preempts():
    # Same pool and requests as the preemption test: 5 + 10 = 15 slots each, 14 in the pool.
    book = RequestBook(np.array([5, 5, 2]), np.array([10, 10, 3]))
    eng = EngineState(20, 4, 100, True, kv_admission="full")
    eng.waiting.extend([0, 1, 2])
    b = schedule(eng, book)
    assert b.ids.tolist() == [0] and book.kv[0] == 15 and eng.kv_used_tokens == 15  # 0 fits, 1 does not
    assert list(eng.waiting) == [1, 2]  # FCFS: 2 (5 slots) would fit but waits behind 1
    t, used = 0.0, []
    while eng.outstanding:
        commit(eng, book, b, t := t + 1.0)
        b = schedule(eng, book)
        assert b.preempted == 0 and eng.kv_used_tokens <= 20
        used.append((eng.kv_used_tokens, sorted(eng.running.tolist())))
        assert t < 100
    assert used[0] == (15, [0])  # decoding needs no new slot: the reservation already holds them
    assert (20, [1, 2]) in used  # once 0 finishes, 1 (15) and 2 (5) are admitted together
    assert np.all(book.generated == book.output) and not book.preemptions.any()


def test_prompt_admission_is_the_default():
    assert _workload().kv_admission == "prompt" and _engine().kv_admission == "prompt"


# ---------------------------------------------------------------- experts touched
def _monte_carlo_touched(popularity, top_k, tokens, trials, rng):
    """Mean distinct experts over ``trials`` batches: each token picks top_k distinct experts
    with probability proportional to popularity (Gumbel top-k = sampling without replacement)."""
    keys = np.log(popularity) + rng.gumbel(size=(trials, tokens, popularity.size))
    picks = np.argpartition(-keys, top_k - 1, axis=-1)[..., :top_k]
    hit = np.zeros((trials, popularity.size), bool)
    np.put_along_axis(hit, picks.reshape(trials, -1), True, axis=1)
    return hit.sum(axis=1).mean()


@pytest.mark.parametrize("n_experts,top_k,tokens", [(8, 2, 1), (8, 2, 3), (16, 2, 10), (128, 1, 40), (256, 8, 16)])
def test_distinct_experts_match_monte_carlo_uniform(n_experts, top_k, tokens):
    rng = np.random.default_rng(0)
    mc = _monte_carlo_touched(np.full(n_experts, 1 / n_experts), top_k, tokens, 4000, rng)
    formula = expected_experts_touched(n_experts, top_k, tokens)
    assert formula == pytest.approx(mc, rel=0.02)
    incl = expert_load.inclusion_probabilities(np.full((1, n_experts), 1 / n_experts), top_k)
    assert float(expert_load.expected_touched(incl, tokens)[0]) == pytest.approx(formula, rel=1e-9)
    sampled = expert_load.sample_loads(np.broadcast_to(incl, (4000, n_experts)), tokens, rng)
    assert (sampled > 0).sum(axis=1).mean() == pytest.approx(mc, rel=0.03)


@pytest.mark.parametrize("top_k,tol", [(1, 0.02), (2, 0.05)])
def test_distinct_experts_match_monte_carlo_under_skew(top_k, tol):
    rng = np.random.default_rng(2)
    p = np.arange(1, 33, dtype=float) ** -1.0
    p /= p.sum()
    incl = expert_load.inclusion_probabilities(p[None, :], top_k)
    assert incl.sum() == pytest.approx(top_k) and incl.max() <= 1
    for tokens in (2, 8, 32):
        mc = _monte_carlo_touched(p, top_k, tokens, 4000, rng)
        assert float(expert_load.expected_touched(incl, tokens)[0]) == pytest.approx(mc, rel=tol)


@pytest.mark.parametrize("text, words", [
    ("arrived_at,num_prefill_tokens,num_decode_tokens\n0.0,100,10\n0.5,200\n",
     ["data row 2 has 2 cells, fewer than the 3 columns"]),
    ("arrived_at,num_prefill_tokens,num_decode_tokens\n0.0,abc,10\n", ["data row 1: '0.0', 'abc', '10' are not all"]),
])
def test_a_bad_trace_row_is_named(tmp_path, text, words):
    from moesim.engine.serving.requests import read_trace
    from moesim.errors import InputError

    trace = tmp_path / "bad.csv"
    trace.write_text(text)
    with pytest.raises(InputError) as err:
        read_trace(trace)
    assert all(w in str(err.value) for w in words) and "\n" not in str(err.value)


@pytest.mark.parametrize("header", ["arrived_at, num_prefill_tokens, num_decode_tokens",
                                    "\ufeffarrived_at,num_prefill_tokens,num_decode_tokens"])
def test_a_header_as_spreadsheets_write_it_reads(tmp_path, header):
    from moesim.engine.serving.requests import read_trace

    trace = tmp_path / "t.csv"
    trace.write_text(f"{header}\n0.0, 100, 10\n0.5, 200, 20\n", encoding="utf-8")
    t, p, o = read_trace(trace)
    assert t.tolist() == [0.0, 0.5] and p.tolist() == [100, 200] and o.tolist() == [10, 20]


def test_a_relative_path_in_set_is_the_working_folders_first_then_the_scenarios(tmp_path, monkeypatch):
    from moesim.loader import load_scenario

    mine = tmp_path / "mine.csv"
    mine.write_text("arrived_at,num_prefill_tokens,num_decode_tokens\n0.0,100,10\n0.5,200,20\n")
    monkeypatch.chdir(tmp_path)
    s = load_scenario("llama-2-7b-a100-serve", ["workload.arrival.trace=mine.csv"])
    assert s.workload.arrival.trace == mine  # typed at the shell: the shell's folder
    s = load_scenario("llama-2-7b-a100-serve", ["workload.arrival={process: trace, trace: mine.csv}"])
    assert s.workload.arrival.trace == mine  # inside a mapping too
    s = load_scenario("llama-2-7b-a100-serve", ["workload.arrival.trace=traces/splitwise_conv.csv"])
    assert s.workload.arrival.trace == TRACE  # not here: the scenario's folder, as in its YAML


def test_trace_times_out_of_any_clocks_range_are_refused_and_epoch_seconds_read(tmp_path):
    from moesim.engine.serving.requests import read_trace
    from moesim.errors import InputError

    trace = tmp_path / "t.csv"
    trace.write_text("arrived_at,num_prefill_tokens,num_decode_tokens\n1e300,374,44\n0.5,396,109\n")
    with pytest.raises(InputError, match="data row 1: times must be finite, within"):
        read_trace(trace)
    trace.write_text("arrived_at,num_prefill_tokens,num_decode_tokens\n1764979200.5,374,44\n1764979200.0,396,109\n")
    assert read_trace(trace)[0].tolist() == [1764979200.0, 1764979200.5]
