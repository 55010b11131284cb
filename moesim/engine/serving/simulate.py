"""Serving engine: requests played against model replicas with continuous batching, in SimPy.

Layout: ``plan.dp`` replicas of ``tp x pp`` devices each. A replica with ``pp > 1`` keeps ``pp``
micro-batches in flight, each an *engine* with its own scheduler, ``1/pp`` of the replica's KV
pool and the full ``max_batch_seqs`` / ``max_batch_tokens`` limits (vLLM's virtual engines); an
engine's iteration lasts the whole pipeline's latency (see ``decode_cost``) and starts only when
the replica's first stage is free, i.e. ``latency / pp`` after the previous micro-batch started.
With ``pp == 1`` an engine is a replica. Engines are numbered ``replica * pp + slot``.

Time passes in SimPy only: one router process wakes at each distinct arrival time and routes the
requests (round-robin, or least-loaded by outstanding requests) to engines; each engine process
yields one timeout per iteration. The per-iteration bookkeeping is numpy (``batching``) and the
iteration time comes from the cost model (``decode_cost``). Requests that can never be served
(prompt + output larger than an engine's KV pool, or a prompt over ``max_batch_tokens`` without
chunked prefill) are rejected at arrival.
"""

from __future__ import annotations

import heapq

import numpy as np
import simpy

from moesim.costmodel import build_cost_model
from moesim.engine.serving.batching import EngineState, RequestBook, commit, schedule
from moesim.engine.serving.decode_cost import IterationCost, knee_batch
from moesim.engine.serving.metrics import ITERATION_COLUMNS, build_result
from moesim.engine.serving.requests import Requests, sample_requests
from moesim.engine.serving.speculative import SpecCost
from moesim.errors import RunError
from moesim.memory import kv_cache_capacity_tokens
from moesim.results import SimResult
from moesim.schemas import Scenario, ServingWorkload


def simulate_serving(s: Scenario, seed: int = 0) -> SimResult:
    """Play the serving workload of ``s``; same ``seed``, same result."""
    w: ServingWorkload = s.workload  # type: ignore[assignment]
    rng = np.random.default_rng(seed)
    reqs = sample_requests(w, rng)
    routing_rng = np.random.default_rng([seed, 1])
    cm = build_cost_model(s.hardware)
    n_engines = s.plan.dp * s.plan.pp
    kv_per_engine = int(kv_cache_capacity_tokens(s) // s.plan.pp)
    longest = int((reqs.prompt_tokens + reqs.output_tokens).max()) if len(reqs) else 0
    max_tokens = w.max_batch_tokens + (0 if w.chunked_prefill else longest)
    if w.speculative is not None:  # the verify runs k more tokens per decoding sequence
        max_tokens += w.speculative.k * w.max_batch_seqs
    cost = IterationCost(s, cm, routing_rng, max_tokens=max(max_tokens, w.max_batch_seqs))
    spec = SpecCost(s, cost, np.random.default_rng([seed, 2]), len(reqs)) if w.speculative is not None else None
    book = RequestBook(reqs.prompt_tokens, reqs.output_tokens)
    book.rejected[:] = rejected_mask(reqs, kv_per_engine, w)
    engines = [EngineState(kv_per_engine, w.max_batch_seqs, w.max_batch_tokens, w.chunked_prefill,
                           w.kv_admission) for _ in range(n_engines)]
    records: list[tuple] = []
    run = _Run(s, reqs, book, engines, cost, records, spec)
    run.play()
    iterations = np.array(records, dtype=float).reshape(-1, len(ITERATION_COLUMNS))
    imbalance = float(cost.layer_imbalance.mean()) if cost.layer_imbalance.size else 1.0
    result = build_result(s, seed, reqs, book, iterations, kv_per_engine, knee_batch(cost), imbalance)
    result.summary.update(spec.summary() if spec is not None else
                          {"spec_tokens_per_step": 1.0, "spec_acceptance": 0.0})  # plain: 1 token, no drafts
    return result


def rejected_mask(reqs: Requests, kv_per_engine: int, w: ServingWorkload) -> np.ndarray:
    """Requests no engine can ever serve: ``(n,)`` bool."""
    bad = reqs.prompt_tokens + reqs.output_tokens > kv_per_engine
    if not w.chunked_prefill:
        bad |= reqs.prompt_tokens > w.max_batch_tokens
    return bad


class _Run:
    """The SimPy processes of one serving run (router + one process per engine)."""

    def __init__(self, s: Scenario, reqs: Requests, book: RequestBook, engines: list[EngineState],
                 cost: IterationCost, records: list[tuple], spec: SpecCost | None = None):
        self.s, self.reqs, self.book, self.engines, self.cost, self.records = s, reqs, book, engines, cost, records
        self.spec = spec
        self.env = simpy.Environment()
        self.wake: list[simpy.Event | None] = [None] * len(engines)
        self.w: ServingWorkload = s.workload  # type: ignore[assignment]
        self.rr_next = 0
        self.stage0_free_s = [0.0] * s.plan.dp  # when each replica's first pipeline stage frees up
        m = s.model
        self.routed_per_token = m.top_k * m.n_moe_layers if m.n_experts > 1 else 0  # expert slots

    def play(self) -> None:
        self.env.process(self.router())
        for e in range(len(self.engines)):
            self.env.process(self.engine(e))
        self.env.run()
        stuck = [i for i, eng in enumerate(self.engines) if eng.outstanding]
        if stuck:
            raise RunError(f"serving: engine {stuck[0]} stopped with {self.engines[stuck[0]].outstanding} "
                           "requests unfinished (scheduler could not make progress)")

    # ------------------------------------------------------------ router
    def router(self):
        """Wake at each distinct arrival time and route that group of requests."""
        arrival = self.reqs.arrival_s
        if arrival.size == 0:
            return
        starts = np.flatnonzero(np.r_[True, np.diff(arrival) > 0])
        ends = np.r_[starts[1:], arrival.size]
        for a, b in zip(starts.tolist(), ends.tolist()):
            delay = arrival[a] - self.env.now
            if delay > 0:
                yield self.env.timeout(delay)
            ids = np.arange(a, b)
            ids = ids[~self.book.rejected[ids]]
            touched = self.route(ids)
            for e in touched:
                ev = self.wake[e]
                if ev is not None and not ev.triggered:
                    ev.succeed()

    def route(self, ids: np.ndarray) -> set[int]:
        """Append ``ids`` to engines' queues; returns the engines that got work."""
        if ids.size == 0:
            return set()
        n = len(self.engines)
        dp, pp = self.s.plan.dp, self.s.plan.pp
        if self.w.router == "round_robin":
            k = self.rr_next + np.arange(ids.size)
            target = (k % dp) * pp + (k // dp) % pp
            self.rr_next += ids.size
        else:  # least outstanding requests; ties to the lowest replica, then slot (spreads replicas first)
            order = [(self.engines[e].outstanding, e % pp, e // pp, e) for e in range(n)]
            heapq.heapify(order)
            target = np.empty(ids.size, np.int64)
            for i in range(ids.size):
                load, slot, rep, e = order[0]
                target[i] = e
                heapq.heapreplace(order, (load + 1, slot, rep, e))
        self.book.engine[ids] = target
        for e in np.unique(target).tolist():
            self.engines[e].waiting.extend(ids[target == e].tolist())
        return set(np.unique(target).tolist())

    # ------------------------------------------------------------ engines
    def engine(self, e: int):
        """One engine: iterate while it has work, sleep until the router wakes it otherwise.

        With ``pp > 1`` a micro-batch enters the pipeline only once the previous one (of any slot
        of the replica) has left the first stage, ``latency / pp`` after it entered; later stages
        are assumed free by then. The span recorded is that turn on the first stage, so a
        replica's spans never overlap; the iterations table keeps the whole latency.
        """
        eng, book, cost, env = self.engines[e], self.book, self.cost, self.env
        pp = self.s.plan.pp
        replica, slot = divmod(e, pp)
        while True:
            if not eng.outstanding:
                self.wake[e] = env.event()
                yield self.wake[e]
                self.wake[e] = None
                continue
            if self.stage0_free_s[replica] > env.now:
                yield env.timeout(self.stage0_free_s[replica] - env.now)
                continue
            if self.spec is not None:
                self.spec.plan_steps(book, eng.running)
            batch = schedule(eng, book)
            if batch.ids.size == 0:
                raise RunError(f"serving: engine {e} has {eng.outstanding} requests but cannot schedule any")
            n_out, tokens = int(batch.emits.sum()), int(batch.q_tokens.sum())
            if self.spec is None:
                dt, dropped = cost.time_s(batch.q_tokens, batch.kv_tokens, n_out)
                stage0 = dt / pp
            else:
                dt, stage0, dropped = self.spec.time_s(batch.q_tokens, batch.kv_tokens, batch.is_decode, n_out)
            start = env.now
            self.stage0_free_s[replica] = start + stage0
            yield env.timeout(dt)
            commit(eng, book, batch, env.now)
            if self.spec is not None:
                self.spec.committed(book, batch)
            self.records.append((replica, slot, start, env.now, batch.ids.size, batch.prefill_tokens,
                                 batch.decode_tokens, batch.kv_used_tokens, batch.running, batch.queued,
                                 batch.preempted, dropped, tokens * self.routed_per_token,
                                 start + stage0, *cost.comm_s(tokens)))
