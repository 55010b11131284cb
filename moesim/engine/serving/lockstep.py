"""Attention-DP groups: the ranks of an expert-parallel group iterating in lock-step.

Under ``plan.dp_attention`` each rank of an EP group runs attention (and the dense layers and the
head) over its own sequences, and every MoE layer's dispatch and combine synchronise the group
(SGLang ``--enable-dp-attention``, TensorRT-LLM ``enable_attention_dp``, vLLM's DP ranks with
expert parallelism). So:

* each rank keeps the requests the router places on it, with its own scheduler, KV pool and
  batch limits (TensorRT-LLM spreads new requests over the ranks by their active tokens, SGLang
  round-robin, vLLM to the least loaded: ``workload.router``); a request never moves;
* an iteration lasts as long as its slowest rank's own work plus the experts, which serve the
  whole group's tokens (each EP rank receives its share of every rank's tokens). A rank with a
  prompt to prefill holds the others, which wait with their few decodes: TensorRT-LLM's tech
  blog 10 ("ADP Balance Strategy", docs/source/blogs/tech_blog/blog10_ADP_Balance_Strategy.md)
  measures 35 % of DeepSeek-V3's throughput lost this way on 8 GB200 (balance ratio 54 %);
* CUDA graphs replay only when every rank decodes (TensorRT-LLM agrees on graph use over the
  group), so one rank's prompt makes the whole group's step eager;
* optionally (``workload.dp_attention_balance``) the ranks hold new prompts back until every rank
  has one: TensorRT-LLM's ``attention_dp_config.enable_balance``, whose rule :class:`ContextBalance`
  follows (``PyExecutor._balance_adp_requests``, tensorrt_llm/_torch/pyexecutor/py_executor.py).
  The blog measures it taking the same run from 25,664 to 34,140 tokens/s (balance ratio 88 %).

The group's SimPy process (:class:`LockstepGroups`, a mixin of ``simulate._Run``) schedules each
rank, prices the iteration (``IterationCost.group_time_s``) and commits every rank's batch at its
end. Without ``dp_attention`` a group is one replica and none of this runs.
"""

from __future__ import annotations

import numpy as np

from moesim.engine.serving.batching import (
    Batch,
    EngineState,
    RequestBook,
    admission_of,
    commit,
    finish,
    schedule,
    slots_to_grow,
)
from moesim.engine.serving.group_window import GroupWindow, commit_group_window, plan_group_window
from moesim.engine.serving.window import MAX_WINDOW, exact_delay
from moesim.errors import RunError
from moesim.schemas import Scenario


def lockstep_group(s: Scenario) -> int:
    """Replicas that run as one lock-step engine: the EP group under ``plan.dp_attention``, else 1."""
    return s.plan.ep if s.plan.dp_attention else 1


def group_of(engine: int, group: int, pp: int) -> int:
    """The lock-step process (group replica * pp + slot) that runs rank engine ``engine`` (replica * pp + slot)."""
    replica, slot = divmod(engine, pp)
    return replica // group * pp + slot


def decoding(eng: EngineState, book: RequestBook) -> int:
    """Running sequences of ``eng`` whose prefill is done (they decode this iteration)."""
    ids = eng.running
    return int(np.count_nonzero(book.prefilled[ids] >= book.target[ids])) if ids.size else 0


def has_context(eng: EngineState, book: RequestBook) -> bool:
    """Whether ``eng``'s scheduler would run a prefill this iteration: a running prompt not yet
    prefilled, or a queued request it could admit (the head of its queue, with the slots, tokens and
    KV the decodes leave)."""
    ids = eng.running
    if ids.size and bool(np.any(book.prefilled[ids] < book.target[ids])):
        return True
    if not eng.waiting or ids.size >= eng.max_batch_seqs:
        return False
    budget = eng.max_batch_tokens - ids.size
    if budget <= 0:
        return False
    free = eng.kv_capacity_tokens - eng.kv_used_tokens - ids.size  # each decode's next slot, at most
    return admission_of(eng, book, eng.waiting[0], budget, free, prefilling=False) is not None


class ContextBalance:
    """TensorRT-LLM's attention-DP balance for one group: whether the ranks' prompts run this iteration.

    Every iteration (the ranks agree: they all-gather their scheduled context and generation counts):
    when every rank has a free slot and a prompt to run, the prompts run, unless every rank also
    decodes and fewer than ``batching_wait_iters`` iterations were spent batching since the last
    release, in which case they wait one more (more prompts batch together); otherwise they wait,
    and run anyway after ``timeout_iters`` iterations of waiting, or at once when some rank has
    nothing to decode (no rank waits on a prompt with an empty batch). The waiting count runs on in
    iterations with no prompt anywhere, as TensorRT-LLM's does.
    """

    def __init__(self, timeout_iters: int, batching_wait_iters: int):
        self.timeout_iters, self.batching_wait_iters = int(timeout_iters), int(batching_wait_iters)
        self.waited = 0  # iterations the prompts have waited for every rank to have one
        self.batched = 0  # iterations spent batching once every rank has one

    def allow(self, ranks: list[EngineState], book: RequestBook) -> bool:
        """Whether the prompts of ``ranks`` run this iteration (updates the counts)."""
        gen = [decoding(eng, book) for eng in ranks]
        all_free = all(n < eng.max_batch_seqs for n, eng in zip(gen, ranks))
        all_gen = all(n > 0 for n in gen)
        if all_free and all(has_context(eng, book) for eng in ranks):
            self.waited = 0
            if not all_gen:
                return True
            if self.batched < self.batching_wait_iters:
                self.batched += 1
                return False
            self.batched = 0
            return True
        self.waited += 1
        if self.waited >= self.timeout_iters or not all_gen:
            self.waited = 0
            return True
        return False


class Decodes:
    """The decode step of a group's *settled* ranks, as array operations over all of them at once.

    A rank is settled when every running sequence decodes, its queue admits nothing this iteration
    and its pool has a slot for each decode's next token (:func:`settled`): its batch is then its
    whole running set, one token each, exactly what ``batching.schedule`` would pick, so the group
    need not call it (nor ``commit``) rank by rank. Building it reserves what schedule would (each
    decode's next KV slot, by the ranks' ``kv_slots`` where local layers keep only their window);
    :meth:`commit` is commit's. ``ranks`` lists the settled ranks' indices in the group.
    """

    def __init__(self, ranks: list[int], engines: list[EngineState], book: RequestBook):
        runs = [engines[r].running for r in ranks]
        self.ranks, self.engines = ranks, [engines[r] for r in ranks]
        self.sizes = [x.size for x in runs]
        self.ids = np.concatenate(runs)
        self.starts = np.zeros(len(runs), np.int64)
        np.cumsum(self.sizes[:-1], out=self.starts[1:])
        ctx, kv = book.ctx[self.ids], book.kv[self.ids]
        grow = slots_to_grow(self.engines[0], ctx + 1, kv)  # the ranks of a group share the model's slot map
        if np.logical_or.reduce(grow):
            book.kv[self.ids] = kv + grow
            for eng, need in zip(self.engines, np.add.reduceat(grow, self.starts).tolist()):
                eng.kv_used_tokens += need
        self.kv = ctx + 1  # context after this iteration
        self.pairs = np.add.reduceat(self.kv, self.starts).tolist()  # (query, key) pairs per rank

    def batch(self, j: int) -> tuple[np.ndarray, np.ndarray, int]:
        """(q_tokens, kv_tokens, sequences emitting) of the ``j``-th settled rank."""
        n, s = self.sizes[j], int(self.starts[j])
        return np.ones(n, np.int64), self.kv[s:s + n], n

    def commit(self, book: RequestBook, now_s: float) -> None:
        """Every settled sequence's token is out at ``now_s``: contexts and counts grow, finished
        requests leave their rank (``batching.commit`` of each rank's decode batch)."""
        ids = self.ids
        book.ctx[ids] += 1
        book.generated[ids] += 1
        over = book.generated[ids] >= book.output[ids]
        if np.logical_or.reduce(over):
            done = np.add.reduceat(over, self.starts)
            for eng, n in zip(self.engines, done.tolist()):
                if n:
                    finish(eng, book, eng.running, now_s)


def settled(eng: EngineState, book: RequestBook, all_decode: bool, prompts: bool = True) -> bool:
    """Whether ``eng``'s batch is its whole running set, one token each (:class:`Decodes`).
    ``all_decode``: known that every running sequence decodes; ``prompts``: the group lets prompts in
    this iteration (False: ``schedule`` admits nothing).

    A queue does not unsettle a rank whose scheduler admits nothing from it this iteration, as in an
    offline run whose batch or KV pool is full: no sequence slot or token left, or the head of the
    queue (FCFS stops there) not admitted with the KV the decodes leave (``batching.admission_of``
    on the slots ``batching.slots_to_grow`` takes). Unmixed batches (``mixed_batches`` false) look at the
    queue their own way, so they settle only with an empty queue."""
    n = eng.running.size
    if not (all_decode and n > 0 and book.unit_steps and n <= eng.max_batch_tokens
            and eng.kv_capacity_tokens - eng.kv_used_tokens >= n):  # each decode takes 1 slot at most
        return False
    if not eng.waiting or not prompts:
        return True
    if not eng.mixed_batches:
        return False
    budget = eng.max_batch_tokens - n
    if eng.max_batch_seqs <= n or budget <= 0:
        return True
    ids = eng.running
    need = int(np.add.reduce(slots_to_grow(eng, book.ctx[ids] + 1, book.kv[ids])))
    free = eng.kv_capacity_tokens - eng.kv_used_tokens - need
    return admission_of(eng, book, eng.waiting[0], budget, free, prefilling=False) is None


class LockstepGroups:
    """The SimPy process of one lock-step group (a mixin of ``simulate._Run``, which holds ``env``,
    ``engines``, ``book``, ``cost``, ``spec``, ``log``, ``stage0_free_s``, ``group``, ``w``, the
    waits ``held`` and ``stalled``, ``group_windows`` (play decode windows, ``serving.group_window``)
    and the router's ``next_arrival_s``)."""

    #: settled ranks decode as one array step (:class:`Decodes`); False schedules every rank on its
    #: own (the same run: tests compare the two)
    settled_fast_path = True

    def group_engine(self, k: int):
        """Lock-step group process ``k`` (group replica * pp + slot): iterate while any of its ranks
        has work, sleep until the router wakes it otherwise."""
        env, book, cost = self.env, self.book, self.cost
        pp, g = self.s.plan.pp, self.group
        grp, slot = divmod(k, pp)
        ranks = [self.engines[(grp * g + r) * pp + slot] for r in range(g)]
        b = self.w.dp_attention_balance
        balance = ContextBalance(b.timeout_iters, b.batching_wait_iters) if b is not None else None
        fast = self.settled_fast_path and self.spec is None
        windows = fast and self.group_windows and balance is None and pp == 1
        all_decode = [False] * g  # known: every running sequence of the rank decodes
        while True:
            busy = any(eng.running.size or eng.waiting for eng in ranks)  # ``outstanding``, inlined
            if (yield from self.held(k, grp, busy)) or (yield from self.stalled(grp)):
                continue
            prompts = True if balance is None else balance.allow(ranks, book)
            if self.spec is not None:
                for eng in ranks:
                    self.spec.plan_steps(book, eng.running)
            calm, busy = [], []  # settled ranks; the other ranks with work
            for r, eng in enumerate(ranks):
                if fast and settled(eng, book, all_decode[r], prompts):
                    calm.append(r)
                elif eng.running.size or eng.waiting:
                    busy.append(r)
            until = self.next_arrival_s  # +inf once every request is routed
            if windows and calm and not busy and until > env.now:
                win = plan_group_window([ranks[r] for r in calm], book, MAX_WINDOW)
                if win is not None and (yield from self._play_group_window(k, ranks, calm, win, until)):
                    continue
            dec = Decodes(calm, ranks, book) if calm else None
            # every other rank with work schedules on its own: (rank, batch)
            own = [(r, bt) for r in busy if (bt := schedule(ranks[r], book, env.now, prompts)).ids.size]
            self.rank_loads = None  # the router reads the ranks' loads afresh
            n_dec = 0 if dec is None else len(dec.ranks)
            if not own and not n_dec:
                n = sum(eng.outstanding for eng in ranks)
                raise RunError(f"serving: lock-step group {k} has {n} requests but cannot schedule any")
            dt, stage0, dropped = self._price_group(own, dec, grp)
            comm = cost.last_comm_s
            start = env.now
            self.stage0_free_s[grp] = start + stage0
            settled_seqs = 0 if dec is None else int(dec.ids.size)
            decodes = settled_seqs + sum(bt.decode_tokens for _, bt in own)
            seqs = settled_seqs + sum(bt.ids.size for _, bt in own)
            tokens = settled_seqs + sum(bt.tokens for _, bt in own)
            group_tokens = tokens + (self.spec.k * decodes if self.spec else 0)
            kv_used = running = queued = 0
            for eng in ranks:
                kv_used += eng.kv_used_tokens
                running += eng.running.size
                queued += len(eng.waiting)
            record = (grp, slot, start, start + dt, seqs, tokens - decodes, decodes, kv_used, running, queued,
                      sum(bt.preempted for _, bt in own), dropped * g,
                      group_tokens * self.routed_per_token, start + stage0, *comm)
            yield env.timeout(dt)
            self.rank_loads = None
            if dec is not None:
                dec.commit(book, env.now)
            for r, bt in own:
                eng = ranks[r]
                commit(eng, book, bt, env.now)
                if self.spec is not None:
                    self.spec.committed(book, bt)
                all_decode[r] = decoding(eng, book) == eng.running.size
            self.log.add(k, record)

    def _play_group_window(self, k: int, ranks: list[EngineState], calm: list[int], win: GroupWindow,
                           until_s: float):
        """Play ``win`` of group process ``k`` (``pp == 1``, every rank with work settled) up to the
        next arrival, ``until_s``: price its iterations as the step loop does (``_price_group`` of
        the settled decodes, iteration by iteration) while they end before it, wait once for the
        last, then commit and record them as that loop would. The iteration that would end at or
        after the arrival is left to the step loop (its skew pick given back), so the router reads
        the ranks as the step loop leaves them. Returns whether any iteration was played."""
        env, book, cost, g = self.env, self.book, self.cost, self.group
        sizes = [x.size for x in win.ids]
        kv = [book.ctx[x] + 1 for x in win.ids]  # each sequence's context after the window's first iteration
        pairs = [int(np.add.reduce(c)) for c in kv]
        ones = [np.ones(n, np.int64) for n in sizes]
        expert_tokens = -(-sum(sizes) // g)
        ends, drops, comms = [env.now], [], []  # ends: where SimPy's clock reads after each iteration
        picks = cost.streams.taken  # skew (and two-batch overlap) picks each engine has taken
        for j in range(win.k):
            before = picks.get(k, 0)
            dt, dropped = cost.group_time_s(sizes, [float(p + n * j) for p, n in zip(pairs, sizes)],
                                            lambda i, j=j: (ones[i], kv[i] + j, sizes[i]), expert_tokens, True, k)
            if ends[-1] + dt >= until_s:
                cost.streams.give_back(k, picks.get(k, 0) - before)
                break
            ends.append(ends[-1] + dt)
            drops.append(dropped)
            comms.append(cost.last_comm_s)
        m = len(drops)
        if not m:
            return False
        seqs = sum(sizes)
        idle_kv = sum(eng.kv_used_tokens for r, eng in enumerate(ranks) if r not in calm)
        running = sum(eng.running.size for eng in ranks)
        queued = sum(len(eng.waiting) for eng in ranks)
        kv_used = np.add.reduce(win.kv_used, axis=0) + idle_kv
        self.stage0_free_s[k] = ends[m]
        yield env.timeout(exact_delay(env.now, ends[m]))
        self.rank_loads = None
        commit_group_window([ranks[r] for r in calm], book, win, m, env.now)
        for j in range(m):
            self.log.add(k, (k, 0, ends[j], ends[j + 1], seqs, 0, seqs, int(kv_used[j]), running, queued, 0,
                             drops[j] * g, seqs * self.routed_per_token, ends[j + 1], *comms[j]))
        return True

    def _price_group(self, own: list[tuple[int, Batch]], dec: Decodes | None, grp: int) -> tuple[float, float, float]:
        """(seconds, first-stage seconds, dropped expert tokens per rank) of one group iteration: the
        ranks' own non-empty batches ``own`` and the settled ranks' decodes ``dec``."""
        pp, g = self.s.plan.pp, self.group
        if self.spec is not None:  # the verify of the rank with the most tokens (its experts at its own load)
            bt = max((bt for _, bt in own), key=lambda x: x.tokens)
            return self.spec.time_s(bt.q_tokens, bt.kv_tokens, bt.is_decode, bt.emitting)
        # the ranks in group order: (rank, new tokens, (query, key) pairs, its batch or settled index)
        rows = [(r, bt.tokens, float(np.dot(bt.q_tokens, bt.kv_tokens)), bt) for r, bt in own]
        if dec is not None:
            rows += [(r, dec.sizes[j], float(dec.pairs[j]), j) for j, r in enumerate(dec.ranks)]
            rows.sort(key=lambda x: x[0])
        decode = all(isinstance(x[3], int) or x[3].tokens == x[3].q_tokens.size for x in rows)  # graphs: all decode

        def batch(i: int) -> tuple[np.ndarray, np.ndarray, int]:
            x = rows[i][3]
            return dec.batch(x) if isinstance(x, int) else (x.q_tokens, x.kv_tokens, x.emitting)

        expert_tokens = -(-sum(x[1] for x in rows) // g)  # the group's tokens, per EP rank's source
        dt, dropped = self.cost.group_time_s([x[1] for x in rows], [x[2] for x in rows], batch,
                                             expert_tokens, decode, grp)
        return dt, dt / pp, dropped
