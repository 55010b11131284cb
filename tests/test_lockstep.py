"""Attention-DP lock-step groups: ranks keep their requests, the slowest rank paces the group,
TensorRT-LLM's balance rule, the token-balancing router, and the settled-rank fast path."""

from __future__ import annotations

import copy
from collections import deque

import numpy as np
import pytest

import moesim
from moesim.engine.serving import lockstep
from moesim.engine.serving.batching import EngineState, RequestBook
from moesim.engine.serving.lockstep import ContextBalance, LockstepGroups, has_context
from moesim.engine.serving.records import IterationLog
from moesim.engine.serving.requests import Requests
from moesim.engine.serving.simulate import _Run
from moesim.errors import InputError
from moesim.loader import scenario_from_dict


def _group(n_requests=64, prompt=None, output=None, **workload) -> dict:
    """Mixtral FP8 on 8 H100 as one DEP8 lock-step group."""
    w = {"kind": "serving", "arrival": {"process": "batch", "n_requests": n_requests},
         "prompt_tokens": prompt or {"dist": "fixed", "value": 256},
         "output_tokens": output or {"dist": "fixed", "value": 32}, **workload}
    return {"model": {"preset": "mixtral-8x7b", "dtype": "fp8"}, "hardware": "h100-sxm",
            "plan": {"dp": 8, "ep": 8, "dp_attention": True}, "workload": w}


def _run(d: dict):
    return moesim.simulate(scenario_from_dict(d))


def test_each_rank_runs_its_own_token_budget():
    # 1000-token prompts, 1500 tokens per rank: each rank prefills one prompt per iteration (a pooled
    # scheduler with the group's 8 x 1500 tokens would have packed 12 into the first iteration)
    d = _group(16, prompt={"dist": "fixed", "value": 1000}, output={"dist": "fixed", "value": 4},
               max_batch_tokens=1500, chunked_prefill=False)
    it = _run(d).tables["iterations"]
    assert it["prefill_tokens"][0] == 8 * 1000
    assert max(it["prefill_tokens"]) == 8 * 1000
    assert sum(it["prefill_tokens"]) == 16 * 1000


def test_a_long_prompt_on_one_rank_holds_the_decoding_ranks():
    d = _group(64, prompt={"dist": "uniform", "low": 16, "high": 6000}, output={"dist": "fixed", "value": 64},
               max_batch_tokens=8192)
    it = _run(d).tables["iterations"]
    dt = np.asarray(it["end_s"]) - np.asarray(it["start_s"])
    pre = np.asarray(it["prefill_tokens"]) > 0
    # iterations with a prompt anywhere in the group are the slow ones for every rank
    assert dt[pre].mean() > 2 * dt[~pre].mean()


def test_balance_lines_prompts_up_and_raises_throughput():
    # variable prompts and outputs, every request queued at t=0: without the balance each rank admits
    # a prompt whenever one of its own requests finishes, so most iterations wait on some rank's
    # prefill; holding prompts until every rank has one makes fewer, fuller prefill iterations
    d = _group(600, prompt={"dist": "lognormal", "median": 600, "sigma": 0.7, "max": 4096},
               output={"dist": "lognormal", "median": 200, "sigma": 1.0, "max": 2048},
               max_batch_seqs=32, max_batch_tokens=4096, chunked_prefill=False)
    off = _run(d)
    on = copy.deepcopy(d)
    on["workload"]["dp_attention_balance"] = {"timeout_iters": 50, "batching_wait_iters": 10}
    on = _run(on)
    pre_off = int(np.count_nonzero(off.tables["iterations"]["prefill_tokens"]))
    pre_on = int(np.count_nonzero(on.tables["iterations"]["prefill_tokens"]))
    assert pre_on < pre_off / 2
    assert on.summary["served_requests"] == off.summary["served_requests"] == 600
    assert on.summary["output_tokens_per_s"] > off.summary["output_tokens_per_s"]


def test_settled_fast_path_gives_the_same_run(monkeypatch):
    d = _group(300, prompt={"dist": "uniform", "low": 32, "high": 2000},
               output={"dist": "uniform", "low": 1, "high": 300}, max_batch_seqs=16, max_batch_tokens=2048)
    d["workload"]["arrival"] = {"process": "poisson", "rate_per_s": 40.0, "n_requests": 300}
    d["workload"]["dp_attention_balance"] = {"timeout_iters": 8, "batching_wait_iters": 2}
    fast = _run(d)
    monkeypatch.setattr(LockstepGroups, "settled_fast_path", False)
    slow = _run(d)
    for table in ("iterations", "requests"):
        for col, values in fast.tables[table].items():
            np.testing.assert_array_equal(np.asarray(values), np.asarray(slow.tables[table][col]), err_msg=col)


@pytest.mark.parametrize("model", ["mixtral", "sliding"])
def test_settled_ranks_with_a_blocked_queue_give_the_same_run(monkeypatch, model):
    # offline batch: every request queued at t=0, each rank's batch full most of the run, so its queue
    # waits while its decodes run (settled with a queue); "sliding": gpt-oss-style windowed layers
    # whose KV slots stop growing past the window (settled with local-attention slots)
    d = _group(400, prompt={"dist": "uniform", "low": 32, "high": 600},
               output={"dist": "uniform", "low": 8, "high": 200}, max_batch_seqs=12, max_batch_tokens=1024,
               chunked_prefill=False, kv_admission="full")
    d["model"] = {"preset": "gpt-oss-20b"} if model == "sliding" else d["model"]
    d["plan"] = {"dp": 4, "ep": 4, "dp_attention": True}
    d["hardware"] = {"preset": "h100-sxm", "node": {"devices_per_node": 4}}
    if model == "sliding":
        d["model"]["local_attention"] = {"kind": "sliding", "window": 64, "full_every": 2}
    seen, real = [], lockstep.settled  # (queued, windowed slots) of every rank the fast path took

    def spy(eng, book, all_decode, prompts=True):
        ok = real(eng, book, all_decode, prompts)
        if ok:
            seen.append((len(eng.waiting) > 0, eng.kv_slots is not None))
        return ok

    with monkeypatch.context() as m:
        m.setattr(lockstep, "settled", spy)
        fast = _run(d)
    assert sum(q for q, _ in seen) > 100  # ranks decoded on the fast path with requests queued
    assert all(w == (model == "sliding") for _, w in seen)
    monkeypatch.setattr(LockstepGroups, "settled_fast_path", False)
    slow = _run(d)
    assert fast.summary["served_requests"] == 400
    for table in ("iterations", "requests"):
        for col, values in fast.tables[table].items():
            np.testing.assert_array_equal(np.asarray(values), np.asarray(slow.tables[table][col]), err_msg=col)


def test_router_evens_tokens_and_requests_over_the_ranks():
    lengths = np.random.default_rng(3).integers(16, 4000, 800)
    d = _group(800, prompt={"dist": "uniform", "low": 16, "high": 4000}, output={"dist": "fixed", "value": 1})
    s = scenario_from_dict(d)
    n = lengths.size
    reqs = Requests(np.zeros(n), lengths.astype(np.int64), np.ones(n, np.int64))
    book = RequestBook(reqs.prompt_tokens, reqs.output_tokens)
    engines = [EngineState(10 ** 9, 256, 8192, True) for _ in range(8)]
    run = _Run(s, reqs, book, engines, cost=None, log=IterationLog(1))
    run.route(np.arange(n))
    tokens = np.array([int(book.target[list(e.waiting)].sum()) for e in engines])
    counts = np.array([len(e.waiting) for e in engines])
    assert counts.max() - counts.min() <= 1
    assert tokens.max() - tokens.min() <= lengths.max()
    # round-robin spreads requests but not tokens as evenly
    rr = [EngineState(10 ** 9, 256, 8192, True) for _ in range(8)]
    for i, e in enumerate(np.arange(n) % 8):
        rr[e].waiting.append(i)
    rr_tokens = np.array([int(book.target[list(e.waiting)].sum()) for e in rr])
    assert tokens.max() - tokens.min() < rr_tokens.max() - rr_tokens.min()


def _ranks(book, waiting, decoding, max_seqs=8):
    """Engines with ``waiting[r]`` queued requests and ``decoding[r]`` decoding sequences."""
    out, nxt = [], 0
    for w, n in zip(waiting, decoding):
        eng = EngineState(10 ** 6, max_seqs, 4096, True)
        eng.running = np.arange(nxt, nxt + n, dtype=np.int64)
        book.prefilled[eng.running] = book.target[eng.running]
        nxt += n
        eng.waiting = deque(range(nxt, nxt + w))
        nxt += w
        out.append(eng)
    return out


def test_context_balance_follows_tensorrt_llm_rule():
    book = RequestBook(np.full(100, 100, np.int64), np.full(100, 10, np.int64))
    bal = ContextBalance(timeout_iters=3, batching_wait_iters=2)
    lone = _ranks(book, waiting=[1, 0], decoding=[2, 2])
    assert has_context(lone[0], book) and not has_context(lone[1], book)
    # one rank has a prompt, every rank decodes: it waits, then runs at the timeout
    assert [bal.allow(lone, book) for _ in range(4)] == [False, False, True, False]
    # every rank has a prompt and decodes: batching waits twice, then runs
    bal = ContextBalance(timeout_iters=3, batching_wait_iters=2)
    both = _ranks(book, waiting=[1, 1], decoding=[2, 2])
    assert [bal.allow(both, book) for _ in range(4)] == [False, False, True, False]
    # a rank with nothing to decode never waits on the others
    idle = _ranks(book, waiting=[1, 0], decoding=[2, 0])
    assert ContextBalance(50, 10).allow(idle, book)
    # a rank without a free slot: the prompts wait (up to the timeout)
    full = _ranks(book, waiting=[1, 1], decoding=[8, 2])
    assert not ContextBalance(50, 0).allow(full, book)


def test_balance_needs_dp_attention():
    d = _group()
    d["plan"]["dp_attention"] = False
    d["workload"]["dp_attention_balance"] = {"timeout_iters": 60}
    with pytest.raises(InputError, match=r"^workload.dp_attention_balance: needs plan.dp_attention: true"):
        scenario_from_dict(d)


@pytest.mark.parametrize("balance, field", [
    ({"timeout_iters": -1}, "timeout_iters"),
    ({"batching_wait_iters": 100_001}, "batching_wait_iters"),
    ({"timeout_iters": 60, "wait": 3}, "wait"),
])
def test_bad_balance_values_name_the_field_in_one_line(balance, field):
    d = _group()
    d["workload"]["dp_attention_balance"] = balance
    with pytest.raises(InputError) as err:
        scenario_from_dict(d)
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith(f"workload.dp_attention_balance.{field}")
