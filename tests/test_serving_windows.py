"""Decode windows (``serving.window``) give exactly the iteration-by-iteration engine's results."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

import moesim
from moesim.engine.serving.batching import EngineState, RequestBook
from moesim.engine.serving.pools import PoolStreams
from moesim.engine.serving.simulate import simulate_serving
from moesim.engine.serving.window import commit_window, exact_delay, plan_window
from moesim.resolve import deep_merge
from tests.conftest import engine_reserve_gib

ROOT = Path(__file__).resolve().parents[1]
SERVING = sorted(p.stem for p in (ROOT / "scenarios").glob("*serve*.yaml"))


def _scenario(name: str, n_requests: int = 150, **sections):
    base = moesim.load_scenario(ROOT / "scenarios" / f"{name}.yaml")
    w = base.workload
    base = base.model_copy(update={"workload": w.model_copy(update={
        "arrival": w.arrival.model_copy(update={"n_requests": n_requests})})})
    if not sections:
        return base
    return moesim.scenario_from_dict(deep_merge(base.model_dump(mode="json", exclude_none=True), sections))


def _same(a, b) -> bool:
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, np.ndarray | list | tuple):
        a, b = np.asarray(a), np.asarray(b)
        if a.dtype.kind == "f":
            return a.shape == b.shape and np.array_equal(a, b, equal_nan=True)
        return a.shape == b.shape and bool((a == b).all())
    if isinstance(a, float) and math.isnan(a):
        return isinstance(b, float) and math.isnan(b)
    return a == b


def _assert_same_run(s, seed: int = 0):
    fast, step = simulate_serving(s, seed, windows=True), simulate_serving(s, seed, windows=False)
    assert _same(fast.summary, step.summary)
    assert _same(fast.tables, step.tables)
    assert _same(fast.spans, step.spans)
    return fast


@pytest.mark.parametrize("name", SERVING)
def test_every_shipped_serving_scenario_is_identical_with_and_without_windows(name):
    result = _assert_same_run(_scenario(name))
    assert result.summary["served_requests"] > 0


@pytest.mark.parametrize("sections", [
    {"workload": {"router": "round_robin"}},
    {"workload": {"kv_admission": "full"}},
    {"routing": {"distribution": "zipf", "zipf_s": 1.2}, "plan": {"dp": 8, "ep": 8}},
    {"workload": {"arrival": {"process": "batch"}}},
    # local layers price decodes at min(context, window) and prompt chunks at their window's keys
    {"model": {"local_attention": {"kind": "sliding", "window": 300, "full_every": 2}}},
    {"model": {"local_attention": {"kind": "chunked", "window": 256}}, "workload": {"chunked_prefill": False}},
    {"model": {"local_attention": {"kind": "chunked", "window": 256, "full_every": 4}},
     "workload": {"local_attention_mode": "prefill"}},
    # decode batches padded to captured CUDA-graph sizes, also under skew with drops
    {"workload": {"cuda_graph_batch_sizes": [1, 2, 4, 8, 16, 32, 64, 128, 256]}},
    {"workload": {"cuda_graph_batch_sizes": [4, 16, 64]}, "routing": {"distribution": "zipf", "overflow": "drop"},
     "plan": {"dp": 8, "ep": 8}},
])
def test_windows_match_the_step_engine_across_routers_admission_skew_and_batch_arrivals(sections):
    _assert_same_run(_scenario("mixtral-8x7b-h100-serve-online", 300, **sections))


@pytest.mark.parametrize(("model", "mem_gib"), [({}, 46), ({"local_attention": {"window": 256, "full_every": 2}}, 45)])
def test_windows_match_when_the_kv_pool_runs_out_and_preempts(model, mem_gib):
    """Also with local layers keeping only their window's KV (a sequence's slots grow by 1 or 0 a token)."""
    s = _scenario("mixtral-8x7b-h100-serve-online", 300, workload={"arrival": {"process": "batch"}}, model=model)
    s = _scenario("mixtral-8x7b-h100-serve-online", 300, workload={"arrival": {"process": "batch"}}, model=model,
                  hardware={"device": {"mem_gib": mem_gib + engine_reserve_gib(s)}})  # an engine budget of mem_gib
    result = _assert_same_run(s)
    assert result.summary["preemptions"] > 0  # the case under test happened


def test_windows_match_with_local_kv_under_full_admission():
    local = {"local_attention": {"window": 256, "full_every": 2}}
    _assert_same_run(_scenario("mixtral-8x7b-h100-serve-online", 300, model=local,
                               workload={"arrival": {"process": "batch"}, "kv_admission": "full"},
                               hardware={"device": {"mem_gib": 45}}))


@pytest.mark.parametrize("seed", range(24))
def test_windows_match_the_step_engine_on_random_batch_limits_kv_pools_and_loads(seed):
    """Random small plans (batch limits, chunked or whole prefills, KV admission, a tight KV pool,
    prefix caching, arrival rate, router, local attention and how the engine runs it, padded CUDA
    graphs): windows on
    and off give the same run."""
    rng = np.random.default_rng(seed)

    def pick(options):
        return options[int(rng.integers(len(options)))]

    workload = {"max_batch_seqs": pick([4, 16, 64]), "max_batch_tokens": pick([1024, 2048, 4096]),
                "chunked_prefill": pick([True, False]), "kv_admission": pick(["prompt", "full"]),
                "prefix_cache_hit": pick([0.0, 0.5]), "router": pick(["least_loaded", "round_robin"]),
                "arrival": {"rate_per_s": pick([10.0, 80.0, 400.0])}}
    dp = pick([1, 2])
    window = pick([None, 64, 300])
    model = {} if window is None else {"local_attention": {"kind": pick(["sliding", "chunked"]), "window": window,
                                                            "full_every": pick([0, 2, 4])}}
    if window is not None:
        workload["local_attention_mode"] = pick(["kv_window", "compute", "prefill"])
    graphs = pick([None, [1, 2, 4, 8, 16, 32, 64], [4, 16]])
    if graphs is not None:
        workload["cuda_graph_batch_sizes"] = graphs
    if not workload["chunked_prefill"]:  # bounded prompts over the budget are refused up front: these, at arrival
        workload["prompt_tokens"] = {"max": None}
    s = _scenario("mixtral-8x7b-h100-serve-online", 120, workload=workload, plan={"dp": dp}, model=model,
                  hardware={"device": {"mem_gib": pick([47, 80])}, "node": {"devices_per_node": dp}})
    result = _assert_same_run(s, seed)
    assert result.summary["served_requests"] > 0


def _dep(n_requests: int, workload: dict, model: dict | None = None, routing: dict | None = None,
         plan: dict | None = None):
    """Mixtral (or ``model``) served as one DEP4 lock-step group (attention DP4 + EP4) on 4 H100."""
    w = {"kind": "serving", "arrival": {"process": "batch", "n_requests": n_requests},
         "prompt_tokens": {"dist": "uniform", "low": 32, "high": 600},
         "output_tokens": {"dist": "uniform", "low": 8, "high": 300},
         "max_batch_seqs": 24, "max_batch_tokens": 1024, **workload}
    d = {"model": model or {"preset": "mixtral-8x7b", "dtype": "fp8"},
         "hardware": {"preset": "h100-sxm", "node": {"devices_per_node": 4}},
         "plan": {"dp": 4, "ep": 4, "dp_attention": True, **(plan or {})}, "workload": w}
    if routing:
        d["routing"] = routing
    return moesim.scenario_from_dict(d)


GPT_OSS_SLIDING = {"preset": "gpt-oss-20b", "local_attention": {"kind": "sliding", "window": 64, "full_every": 2}}


@pytest.mark.parametrize(("workload", "model", "routing", "plan"), [
    ({}, None, None, None),
    ({"kv_admission": "full", "chunked_prefill": False}, GPT_OSS_SLIDING, None, None),  # windowed KV slots
    ({"cuda_graph_batch_sizes": [1, 2, 4, 8, 16, 32]}, None, {"distribution": "zipf", "zipf_s": 1.2}, None),
    ({"arrival": {"process": "poisson", "rate_per_s": 60.0, "n_requests": 300}}, None, None, None),  # between arrivals
    ({"arrival": {"process": "poisson", "rate_per_s": 200.0, "n_requests": 300}}, GPT_OSS_SLIDING,
     {"distribution": "zipf", "zipf_s": 1.1}, None),
    ({"arrival": {"process": "closed", "concurrency": 40, "n_requests": 300}}, None, None, None),  # after the last send
    # two-batch overlap (its own skew picks) between Poisson arrivals
    ({"arrival": {"process": "poisson", "rate_per_s": 100.0, "n_requests": 300}}, None,
     {"distribution": "zipf", "zipf_s": 1.2}, {"overlap_alltoall": True, "alltoall": "deepep_low_latency"}),
])
def test_group_windows_match_the_step_engine(monkeypatch, workload, model, routing, plan):
    """Lock-step groups play their settled decodes as windows that end before the next arrival
    (closed loops: once every request is sent), with the step engine's exact results."""
    from moesim.engine.serving import lockstep

    played, real = [], lockstep.plan_group_window

    def spy(engines, book, max_k):
        win = real(engines, book, max_k)
        played.append(0 if win is None else win.k)
        return win

    monkeypatch.setattr(lockstep, "plan_group_window", spy)
    result = _assert_same_run(_dep(300, workload, model, routing, plan))
    assert sum(k for k in played if k > 1) > 100  # iterations played in windows
    assert result.summary["served_requests"] == 300


def test_group_windows_stop_where_a_ranks_kv_pool_runs_out():
    """A tight KV pool with prompt admission: some rank preempts, which a window never plays."""
    s = _dep(300, {"max_batch_seqs": 64, "max_batch_tokens": 2048}, {"preset": "mixtral-8x7b", "dtype": "fp8"})
    budget = 13 + engine_reserve_gib(s)  # a 13 GiB engine budget
    s = moesim.scenario_from_dict(deep_merge(s.model_dump(mode="json", exclude_none=True),
                                             {"hardware": {"device": {"mem_gib": budget}}}))
    result = _assert_same_run(s)
    assert result.summary["preemptions"] > 0


# ---------------------------------------------------------------- the pieces
def _decoding_engine(ctx, left, kv=None, capacity=10_000):
    """An engine whose running sequences decode: contexts ``ctx``, ``left`` tokens still to emit."""
    ctx, left = np.asarray(ctx, np.int64), np.asarray(left, np.int64)
    n = ctx.size
    book = RequestBook(ctx.copy(), left + 1)
    book.prefilled[:] = book.ctx[:] = ctx
    book.generated[:] = 1
    book.first_token_s[:] = 0.0
    book.kv[:] = ctx if kv is None else kv
    eng = EngineState(capacity, 64, 4096, True)
    eng.running = np.arange(n)
    eng.kv_used_tokens = int(book.kv.sum())
    return eng, book


def test_window_stops_at_the_first_finish_and_commits_it():
    eng, book = _decoding_engine([10, 20, 30], [5, 3, 9])
    win = plan_window(eng, book)
    assert win.k == 3 and win.context.tolist() == [11, 21, 31]
    done = commit_window(eng, book, win, win.k, 0.1, 0.3)
    assert done.tolist() == [1] and book.finish_s[1] == 0.3 and eng.running.tolist() == [0, 2]
    assert book.ctx.tolist() == [13, 23, 33] and eng.kv_used_tokens == 13 + 33


def test_window_stops_before_the_iteration_that_would_preempt():
    eng, book = _decoding_engine([10, 10], [50, 50], capacity=25)  # 20 held: 2 slots per iteration
    assert plan_window(eng, book).k == 2 and plan_window(eng, book).kv_used.tolist() == [22, 24]


def _with_queue(prompts, outputs, running=3, queued=1, capacity=100_000, admission="prompt", chunked=True,
                budget=4096, ready=False):
    """An engine with the first ``running`` requests decoding and the last ``queued`` queued."""
    prompts, outputs = np.asarray(prompts, np.int64), np.asarray(outputs, np.int64)
    book = RequestBook(prompts, outputs, prompts if ready else None)
    run = np.arange(running)
    book.prefilled[run] = book.target[run]
    book.generated[run] = 1
    book.ctx[run] = book.target[run]
    book.kv[run] = book.ctx[run] + (outputs[run] - 1 if admission == "full" else 0)
    book.first_token_s[run] = 0.0
    eng = EngineState(capacity, 64, budget, chunked, admission)
    eng.running = run
    eng.kv_used_tokens = int(book.kv[run].sum())
    eng.waiting.extend(range(prompts.size - queued, prompts.size))
    return eng, book


def _state(eng, book):
    return (eng.running.tolist(), list(eng.waiting), eng.kv_used_tokens,
            *(getattr(book, f).tolist() for f in ("target", "prefilled", "ctx", "kv", "generated")),
            *(np.nan_to_num(getattr(book, f), nan=-1).tolist() for f in ("admitted_s", "first_token_s", "finish_s")))


PROMPTS, OUTPUTS = [40, 50, 60, 200, 300], [9, 7, 12, 6, 5]


@pytest.mark.parametrize("case", [
    {}, {"admission": "full"}, {"chunked": False}, {"ready": True}, {"running": 0}, {"queued": 2},
    {"queued": 2, "admission": "full", "chunked": False},
    {"capacity": 40 + 50 + 60 + 300 + 3 + 4},  # the KV pool fills up a few decode rows in
    {"capacity": 40 + 50 + 60 + 299, "queued": 1},  # no room for the prompt: it waits, the decodes go on
    {"capacity": 40 + 50 + 60 + 200 + 100, "queued": 2},  # room for the first only: the step path
])
def test_a_window_with_a_queue_applies_what_schedule_and_commit_do_iteration_by_iteration(case):
    """The iteration after an arrival (running decodes + the queued requests' whole prefills) and
    the decode rows after it, or decode rows while the queue's head cannot be admitted, leave the
    same engine and book as ``schedule`` + ``commit`` each round; where ``schedule`` would admit
    some of the queue and not all, there is no window."""
    import copy

    from moesim.engine.serving.batching import commit, schedule

    eng, book = _with_queue(PROMPTS, OUTPUTS, **case)
    queue = list(eng.waiting)
    win = plan_window(eng, book)
    probe = copy.deepcopy((eng, book))
    admitted = schedule(*probe, 0.0).ids.size - eng.running.size
    if 0 < admitted < len(queue):
        assert win is None
        return
    assert [a.id for a in win.admits] == queue[:admitted] and win.queued == len(queue) - admitted
    for m in range(1, win.k + 1):
        e1, b1 = copy.deepcopy((eng, book))
        ends = [0.5 * (j + 1) for j in range(m)]
        commit_window(e1, b1, win, m, ends[0], ends[-1], 0.0)
        e2, b2 = copy.deepcopy((eng, book))
        now = 0.0
        for j, end in enumerate(ends):
            batch = schedule(e2, b2, now)
            assert batch.kv_used_tokens == win.kv_used[j] and batch.queued == (win.queued if j or not admitted else 0)
            commit(e2, b2, batch, end)
            now = end
        assert _state(e1, b1) == _state(e2, b2)
    if "capacity" not in case:  # it runs to the first finish
        assert win.k == win.to_finish
    elif admitted:  # it stops before the decode row the pool cannot grow into (that one would preempt)
        assert win.k < win.to_finish and win.kv_used[-1] + win.ids.size > eng.kv_capacity_tokens


def test_no_window_admits_a_prompt_the_iteration_cannot_finish():
    eng, book = _with_queue([40, 50, 60, 5000], [9, 7, 12, 5], budget=1024)  # a chunked prefill
    assert plan_window(eng, book) is None


def test_exact_delay_lands_on_the_target_and_picks_come_back_after_a_cut():
    for now, target in ((0.1, 0.30000000000000004), (1e-9, 12345.678), (7.25, 7.25)):
        assert now + exact_delay(now, target) == target
    a, b = PoolStreams(np.random.default_rng(3), 8), PoolStreams(np.random.default_rng(3), 8)
    first = a.take(0, 600).tolist()
    a.give_back(0, 200)
    assert a.take(0, 250).tolist() == first[400:] + b.take(0, 650).tolist()[600:]


@pytest.mark.parametrize("name", ["mixtral-8x7b-h100-serve-online", "deepseek-v3-h200-serve"])
def test_tabulated_attention_equals_the_cost_models_batched_kernel(name):
    """Decode contexts looked up in a table (and MLA's two kernels) price what the op graph's
    attention op prices over the same batch; a window's rows equal its iterations priced one by one."""
    from moesim.costmodel import build_cost_model
    from moesim.engine.ops import op_s
    from moesim.engine.serving.decode_cost import IterationCost

    s = _scenario(name)
    cost = IterationCost(s, build_cost_model(s.hardware), np.random.default_rng(0), 512, max_context=5000)
    rng = np.random.default_rng(1)
    q = np.r_[np.ones(40, np.int64), rng.integers(2, 300, 3)]
    kv = np.r_[rng.integers(1, 4000, 40), q[40:] + rng.integers(0, 500, 3)]
    pre = q > 1
    ops = ((cost.attn.decode_op, ~pre), (cost.attn.prefill_op, pre)) if cost.attn.prefill_op else ((cost.attn.decode_op, q > 0),)
    direct = sum(float(op_s(cost.cm, op, q_tokens=q[sel], kv_tokens=kv[sel])) for op, sel in ops)
    assert cost.attn.batch_s(q, kv) == pytest.approx(direct, rel=1e-12)
    assert cost.attn.decode_table is not None  # the GPU profiles are separable: the table is used
    ctx = rng.integers(1, 4000, 64)
    rows = cost.attn.decode_window_s(ctx, 5)
    assert rows.tolist() == [cost.attn.batch_s(np.ones(64, np.int64), ctx + j) for j in range(5)]
    assert np.all(np.diff(rows) > 0)  # longer contexts read more KV
