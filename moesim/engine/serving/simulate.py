"""Serving engine: requests played against model replicas with continuous batching, in SimPy.

Layout: ``plan.dp`` replicas of ``tp x pp`` devices each. A replica with ``pp > 1`` keeps ``pp``
micro-batches in flight, each an *engine* with its own scheduler, ``1/pp`` of the replica's KV
pool and the full ``max_batch_seqs`` / ``max_batch_tokens`` limits (vLLM's virtual engines); an
engine's iteration lasts the whole pipeline's latency (see ``decode_cost``) and starts only when
the replica's first stage is free, i.e. ``latency / pp`` after the previous micro-batch started.
With ``pp == 1`` an engine is a replica. Engines are numbered ``replica * pp + slot``. Under
``plan.dp_attention`` the engines of an expert-parallel group's ranks iterate together in one
process (``serving.lockstep``), and their iterations and requests are recorded under the group.

Time passes in SimPy only: one router process wakes at each distinct arrival time and routes the
requests (round-robin, or least-loaded by outstanding requests) to engines; each engine process
yields one timeout per iteration. The per-iteration bookkeeping is numpy (``batching``) and the
iteration time comes from the cost model (``decode_cost``). Requests that can never be served
(prompt + output over ``model.max_seq_len`` or an engine's KV pool, or a prompt over
``max_batch_tokens`` without chunked prefill) are rejected at arrival (``serving.rejections``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import simpy

from moesim.costmodel import build_cost_model
from moesim.engine.local_attention import slot_map
from moesim.engine.run_loop import run_reporting
from moesim.engine.serving.anatomy import decode_step_keys, decode_step_table
from moesim.engine.serving.batching import EngineState, RequestBook, commit, finishes, schedule
from moesim.engine.serving.decode_cost import IterationCost
from moesim.engine.serving.knee import knee_batch
from moesim.engine.serving.lockstep import LockstepGroups, group_of, lockstep_group
from moesim.engine.serving.metrics import build_result
from moesim.engine.serving.records import IterationLog
from moesim.engine.serving.rejections import (
    RequestLimits,
    mark_rejected,
    reject_reasons,
    rejection_keys,
)
from moesim.engine.serving.requests import Requests, closed_loop, sample_requests
from moesim.engine.serving.router import Router
from moesim.engine.serving.speculative import SpecCost
from moesim.engine.serving.window import MAX_WINDOW, commit_window, exact_delay, plan_window
from moesim.errors import RunError
from moesim.memory import kv_cache_capacity_tokens
from moesim.results import SimResult
from moesim.schemas import Scenario, ServingWorkload

#: ``progress(done, total, what)``: requests finished (or refused) of ``total`` in the pool ``what``.
Progress = Callable[[int, int, str], None]


def simulate_serving(s: Scenario, seed: int = 0, windows: bool = True, progress: Progress | None = None) -> SimResult:
    """Play the serving workload of ``s``; same ``seed``, same result. ``windows``: play runs of
    decode-only iterations as one event (the same result as False, faster; ``serving.window``).
    ``progress(done, total, what)``: called every quarter second of wall clock while the run plays, with
    the requests finished or refused so far (``what``: ``"requests"``, or the pool's, disaggregated)."""
    w: ServingWorkload = s.workload  # type: ignore[assignment]
    if w.disaggregation is not None:
        from moesim.engine.serving.disagg import simulate_disaggregated

        return simulate_disaggregated(s, seed, windows, progress)
    reqs = sample_requests(w, np.random.default_rng(seed))
    book = RequestBook(reqs.prompt_tokens, reqs.output_tokens, cached_prefix_tokens(reqs, w))
    run = play_pool(s, reqs, book, seed, windows=windows, progress=progress)
    result = build_result(s, seed, reqs, book, run.iterations, run.kv_per_engine, knee_batch(run.cost),
                          rejection_keys(book.reject_reason, run.limits), run.imbalance)
    result.summary.update(run.spec_summary())
    result.tables["expert_layers"] = run.layer_table()
    step = decode_step_table(s, run.cost, run.iterations, reqs.prompt_tokens, reqs.output_tokens)
    if step is not None:
        result.tables["decode_step"] = step
        result.summary.update(decode_step_keys(step))
    return result


def cached_prefix_tokens(reqs: Requests, w: ServingWorkload) -> np.ndarray:
    """Prompt tokens per request found in the prefix cache (``workload.prefix_cache_hit``): ``(n,)``."""
    return np.floor(reqs.prompt_tokens * w.prefix_cache_hit).astype(np.int64)


@dataclass
class PoolRun:
    """What one pool's run leaves: its iteration records ``(iterations, len(ITERATION_COLUMNS))``,
    the cost models and the KV tokens each engine holds."""

    iterations: np.ndarray
    cost: IterationCost
    spec: SpecCost | None
    kv_per_engine: int
    eplb_stall_s: float = 0.0
    limits: RequestLimits | None = None  # what a request had to fit (``serving.rejections``)

    @property
    def imbalance(self) -> float:
        """Expected max/mean tokens per EP rank, mean over MoE layers (time-weighted under drift)."""
        return float(self.cost.mean_layer_imbalance())

    def layer_table(self, pool: str = "") -> dict[str, list]:
        """Per MoE layer: expected max/mean tokens per EP rank at the end of the run (``pool``: a
        column naming the pool, for disaggregated runs)."""
        imb = np.asarray(self.cost.layer_imbalance, dtype=float)
        out = {"moe_layer": list(range(imb.size)), "expert_load_imbalance": imb.tolist()}
        return {"pool": [pool] * imb.size, **out} if pool else out

    def spec_summary(self) -> dict:
        """Speculative decoding's and EPLB's summary keys."""
        out = self.spec.summary() if self.spec is not None else {"spec_tokens_per_step": 1.0, "spec_acceptance": 0.0}
        out.update(eplb_rebalances=int(self.cost.rebalances), eplb_moved_gib=float(self.cost.rebalance_moved_gib),
                   eplb_stall_s=float(self.eplb_stall_s))
        return out


def play_pool(s: Scenario, reqs: Requests, book: RequestBook, seed: int, stream: tuple[int, ...] = (),
              windows: bool = True, progress: Progress | None = None, what: str = "requests") -> PoolRun:
    """Play ``reqs`` (arrival order) on the replicas of ``s.plan``, filling ``book`` in place.

    Marks the requests no engine can serve in ``book.rejected``. ``stream`` extends the seeds of the
    routing and speculative generators (``[seed, 1, *stream]``), so two pools draw independently.
    ``windows``: play runs of decode-only iterations as one event (``serving.window``; the result
    is the same with False, which plays every iteration as its own event). ``progress``: as
    :func:`simulate_serving`'s, reporting this pool's requests as ``what``.
    """
    w: ServingWorkload = s.workload  # type: ignore[assignment]
    cm = build_cost_model(s.hardware)
    g = lockstep_group(s)
    kv_per_replica = replica_kv_tokens(s)
    longest = int((reqs.prompt_tokens + reqs.output_tokens).max()) if len(reqs) else 0
    max_tokens = w.max_batch_tokens + (0 if w.chunked_prefill else longest)
    if w.speculative is not None:  # the verify runs k more tokens per decoding sequence
        max_tokens += w.speculative.k * w.max_batch_seqs
    spec_k = w.speculative.k if w.speculative is not None else 0
    # the cost tables cover the largest iteration that can happen: no batch holds more sequences than there are
    # requests, nor more tokens than all their prompts plus a decode (and draft) token each, however high the limits
    seqs_cap = min(w.max_batch_seqs, max(len(reqs), 1))
    tokens_cap = int(reqs.prompt_tokens.sum()) + len(reqs) * (1 + spec_k) if len(reqs) else 1
    cost = IterationCost(s, cm, np.random.default_rng([seed, 1, *stream]),
                         max_tokens=max(min(max_tokens, tokens_cap), seqs_cap), max_context=longest + spec_k + 1)
    spec = (SpecCost(s, cost, np.random.default_rng([seed, 2, *stream]), len(reqs))
            if w.speculative is not None else None)
    slots = slot_map(s.model, w.local_attention_mode)  # local layers keeping only their window's KV
    limits = request_limits(s, kv_per_replica)
    mark_rejected(book, reject_reasons(reqs.prompt_tokens, reqs.output_tokens, book.prompt - book.prefilled,
                                       limits, slots))
    # one engine per replica and pipeline slot; a lock-step group's ranks keep their own (serving.lockstep)
    engines = [EngineState(kv_per_replica, w.max_batch_seqs, w.max_batch_tokens, w.chunked_prefill,
                           w.kv_admission, w.mixed_batches, kv_slots=slots) for _ in range(s.plan.dp * s.plan.pp)]
    log = IterationLog(s.plan.dp // g * s.plan.pp)  # a lock-step group's iterations are recorded once
    run = _Run(s, reqs, book, engines, cost, log, spec)
    # windows price admissions as mixed steps, so unmixed batching plays every iteration
    run.windows = windows and spec is None and s.plan.pp == 1 and g == 1 and cost.drift_free and w.mixed_batches
    run.group_windows = windows and g > 1 and cost.drift_free and w.mixed_batches
    run.play(None if progress is None else lambda: progress(finished_count(book), len(reqs), what))
    book.rank = np.where(book.engine >= 0, book.engine // s.plan.pp, -1)
    if g > 1:  # requests are counted to the lock-step engine that ran them, as the iterations are
        book.engine = np.where(book.engine >= 0, group_of(book.engine, g, s.plan.pp), -1)
    # by replica, slot, start whatever the order of the events that recorded them (sums over the
    # rows are then the same bit for bit with windows on or off); a group's KV: its ranks' pools
    return PoolRun(log.array(), cost, spec, kv_per_replica * g, run.eplb_stall_s, limits)


def finished_count(book: RequestBook) -> int:
    """Requests of ``book`` that finished or were refused."""
    return int(np.count_nonzero(np.isfinite(book.finish_s) | book.rejected))


def replica_kv_tokens(s: Scenario) -> int:
    """KV tokens one replica's engine holds (a pipeline slot's share with ``pp > 1``): the most
    prompt + output tokens a request may have to be served by ``s``."""
    return int(kv_cache_capacity_tokens(s) // s.plan.pp)


def request_limits(s: Scenario, kv_per_engine: int) -> RequestLimits:
    """What a request must fit to be served by ``s``'s engines, each holding ``kv_per_engine`` KV tokens."""
    w: ServingWorkload = s.workload  # type: ignore[assignment]
    return RequestLimits(s.model.max_seq_len, None if w.chunked_prefill else w.max_batch_tokens, kv_per_engine)


class _Run(Router, LockstepGroups):
    """The SimPy processes of one serving run (router + one process per engine, or per lock-step
    group of engines under ``plan.dp_attention``)."""

    def __init__(self, s: Scenario, reqs: Requests, book: RequestBook, engines: list[EngineState],
                 cost: IterationCost, log: IterationLog, spec: SpecCost | None = None):
        self.s, self.reqs, self.book, self.engines, self.cost, self.log = s, reqs, book, engines, cost, log
        self.spec = spec
        self.env = simpy.Environment()
        self.w: ServingWorkload = s.workload  # type: ignore[assignment]
        self.rr_next = 0
        self.group = g = lockstep_group(s)
        self.n_replicas = s.plan.dp  # engines per pipeline slot: the router's targets
        pp = s.plan.pp
        # the SimPy process that runs each engine: itself, or its lock-step group's
        self.proc_of = None if g == 1 else [group_of(e, g, pp) for e in range(len(engines))]
        # the router's (tokens, requests) per engine while no group iterates (``Router.by_tokens``)
        self.rank_loads: tuple[np.ndarray, np.ndarray] | None = None
        e = np.arange(len(engines))
        self.rank_order = None if g == 1 else np.argsort(np.lexsort((e // pp, e % pp)))  # (slot, rank) order
        n_procs = len(engines) // g
        self.wake: list[simpy.Event | None] = [None] * n_procs
        self.procs: list[simpy.Process] = []
        self.in_window = [False] * n_procs  # engine waits out a decode window: an arrival interrupts it
        self.stage0_free_s = [0.0] * (s.plan.dp // g)  # when each replica's (group's) first pipeline stage frees up
        self.eplb_stall_s = 0.0  # engine-seconds stalled moving expert weights at EPLB rebalances
        m = s.model
        self.routed_per_token = m.top_k * m.n_moe_layers if m.n_experts > 1 else 0  # expert slots
        self.windows = False  # play decode windows as one event (play_pool decides)
        self.group_windows = False  # lock-step groups play theirs (``serving.group_window``; play_pool decides)
        self.next_arrival_s = -math.inf  # the router's next arrival (+inf: all routed; -inf: unknown)
        self.closed = closed_loop(self.w, reqs, book)  # closed-loop arrivals: sent as requests finish

    def play(self, report: Callable[[], None] | None = None) -> None:
        """Run to the end (``report()`` every quarter second of wall clock: ``engine.run_loop``)."""
        self.env.process(self.router())
        body = self.engine if self.group == 1 else self.group_engine
        self.procs = [self.env.process(body(k)) for k in range(len(self.wake))]
        run_reporting(self.env, report)
        stuck = [i for i, eng in enumerate(self.engines) if eng.outstanding]
        if stuck:
            raise RunError(f"serving: engine {stuck[0]} stopped with {self.engines[stuck[0]].outstanding} "
                           "requests unfinished (scheduler could not make progress)")

    # ------------------------------------------------------------ engines
    def held(self, k: int, replica: int, busy: bool):
        """What process ``k`` waits for before an iteration: work (it sleeps until the router wakes
        it) and its replica's first pipeline stage. Returns True when it waited (look again)."""
        env = self.env
        if not busy:
            self.wake[k] = env.event()
            yield self.wake[k]
            self.wake[k] = None
            return True
        if self.stage0_free_s[replica] > env.now:
            yield env.timeout(self.stage0_free_s[replica] - env.now)
            return True
        return False

    def stalled(self, replica: int):
        """Popularity drift and EPLB's weight moves before an iteration of ``replica`` (nothing when
        off): returns True when the replica stalled moving expert weights (look again)."""
        env = self.env
        stall = self.cost.advance(env.now, replica)
        if stall > 0:
            self.stage0_free_s[replica] = env.now + stall
            self.eplb_stall_s += stall
            yield env.timeout(stall)
            return True
        return False

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
        decoding = False  # known: every running sequence decodes (plan_window need not check)
        while True:
            if (yield from self.held(e, replica, eng.outstanding)):
                continue
            if self.windows:
                win = plan_window(eng, book, MAX_WINDOW, decoding=decoding)
                if win is not None:
                    yield from self.windows_from(e, win)
                    decoding = True  # a window leaves every running sequence decoding
                    continue
            decoding = False
            if (yield from self.stalled(replica)):
                continue
            if self.spec is not None:
                self.spec.plan_steps(book, eng.running)
            batch = schedule(eng, book, env.now)
            if batch.ids.size == 0:
                raise RunError(f"serving: engine {e} has {eng.outstanding} requests but cannot schedule any")
            q, kv = batch.q_tokens, batch.kv_tokens
            if self.spec is None:
                tokens = batch.tokens
                dt, dropped = cost.time_s(q, kv, batch.emitting, e, tokens, bool(tokens == q.size))
                stage0 = dt / pp
            else:  # the verify runs (and communicates) k + 1 tokens per decode: in cost.last_comm_s
                dt, stage0, dropped = self.spec.time_s(q, kv, batch.is_decode, batch.emitting)
            group_tokens = batch.tokens + (self.spec.k * batch.decode_tokens if self.spec else 0)
            comm = cost.last_comm_s  # this iteration's (exposed) communication, read before other engines price
            start = env.now
            end = start + dt  # what SimPy's clock reads after the timeout
            self.stage0_free_s[replica] = start + stage0
            record = (replica, slot, start, end, batch.ids.size, batch.prefill_tokens, batch.decode_tokens,
                      batch.kv_used_tokens, batch.running, batch.queued, batch.preempted, dropped,
                      group_tokens * self.routed_per_token, start + stage0, *comm)
            if self.windows and not finishes(book, batch):
                # nothing another process sees changes at its end (no finish): commit now, and play the
                # decode window that follows in the same event
                commit(eng, book, batch, end)
                self.log.add(e, record)
                win = plan_window(eng, book, MAX_WINDOW)
                if win is None:
                    yield env.timeout(dt)
                else:
                    yield from self.windows_from(e, win, end)
                    decoding = True
                continue
            yield env.timeout(dt)
            commit(eng, book, batch, env.now)
            if self.spec is not None:
                self.spec.committed(book, batch)
            self.log.add(e, record)

    def windows_from(self, e: int, win, lead_end_s: float | None = None):
        """Play window ``win`` of engine ``e`` (from ``lead_end_s``, or now) and, while an arrival cuts
        one short during an iteration that finishes nothing, the window that follows that iteration
        (planned at once, as it starts when the iteration ends). Returns at the time the engine
        loop goes on."""
        while True:
            lead_end_s = yield from self.decode_window(e, win, lead_end_s)
            if lead_end_s is None:
                return
            win = plan_window(self.engines[e], self.book, MAX_WINDOW, decoding=True)
            if win is None:
                yield self.env.timeout(exact_delay(self.env.now, lead_end_s))
                return

    def decode_window(self, e: int, win, lead_end_s: float | None = None):
        """Play the window ``win`` of engine ``e`` (``pp == 1``): price its iterations at once, wait
        for its end or for a request routed here (the router interrupts it), then commit the
        iterations that started before that arrival. Same records and state as one event per
        iteration. ``lead_end_s``: the window starts when an iteration already committed (and
        recorded) ends, which runs whatever arrives. Returns None, or the end of the iteration that
        runs when an arrival cuts the window, if nothing finishes by then: its iterations are
        committed and the next one starts then (``windows_from`` plans it now)."""
        env, cost = self.env, self.cost
        start = env.now if lead_end_s is None else lead_end_s
        adm = win.admits
        # each iteration ends where SimPy's clock would read after it: sequential float additions
        ends = np.empty(win.k + 1)
        ends[0] = start
        comm0 = None
        if not adm:
            ends[1:], drops, comm = cost.decode_window(win.context, win.k, e)
        else:  # iteration 0 admits requests: priced as one step (its skew pick first), then the decode rows
            running = win.ids.size - len(adm)
            q, kv = ((adm[0].q_tokens, adm[0].kv_tokens) if len(adm) == 1 else
                     (np.array([x.q_tokens for x in adm]), np.array([x.kv_tokens for x in adm])))
            ends[1], drop0, comm0 = cost.admission_step_s(win.context[:running] - 1, q, kv, e)
            drops, comm = [drop0], comm0
            if win.k > 1:
                ends[2:], rest, comm = cost.decode_window(win.context, win.k - 1, e)
                drops += rest
        ends = np.add.accumulate(ends)[1:]
        self.in_window[e] = True
        try:
            yield env.timeout(exact_delay(env.now, float(ends[-1])))
        except simpy.Interrupt:
            pass
        self.in_window[e] = False
        m = win.k
        if env.now < ends[-1]:  # cut by an arrival: the iterations that started before it ran
            m = int(ends[:-1].searchsorted(env.now)) + (start < env.now)  # starts before now
            m = m if lead_end_s is not None else max(1, m)
            cost.unprice(e, win.k - m)
            last = float(ends[m - 1]) if m else start
            if m and last > env.now and m < win.to_finish:
                # nothing anyone sees changes at its end (no finish): commit now, go on from ``last``
                self._commit_window(e, win, m, ends[:m], start, drops, comm, comm0)
                return last
            if last > env.now:
                yield env.timeout(exact_delay(env.now, last))
            if m == 0:
                return None
        self._commit_window(e, win, m, ends[:m], start, drops, comm, comm0)
        return None

    def _commit_window(self, e: int, win, m: int, ends_s: np.ndarray, start: float, drops, comm, comm0) -> None:
        """Commit the first ``m`` iterations of ``win`` (ending at ``ends_s``, ``(m,)``) and record them."""
        adm = win.admits
        first, last = float(ends_s[0]), float(ends_s[-1])
        commit_window(self.engines[e], self.book, win, m, first, last, start)
        n = win.ids.size
        if adm:  # the admission step's record, as the step-by-step engine writes it
            ready = sum(x.ready for x in adm)
            q = sum(x.q_tokens for x in adm)
            n0 = n - len(adm)
            self.log.add(e, (e, 0, start, first, n, q - ready, n0 + ready, int(win.kv_used[0]), n, 0, 0, drops[0],
                             (n0 + q) * self.routed_per_token, first, *comm0))
        j = bool(adm)
        if m > j:  # the decode rows (start, end, KV and drops filled per iteration)
            self.log.add_window(e, (e, 0, 0.0, 0.0, n, 0, n, 0, n, win.queued, 0, 0.0, n * self.routed_per_token,
                                    0.0, *comm), first if j else start, ends_s[j:], win.kv_used[j:m], drops[j:m])
        self.stage0_free_s[e] = last
