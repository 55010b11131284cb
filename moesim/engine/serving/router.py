"""The serving engine's router: when requests arrive, which engine queues each, and waking it.

A mixin of the engine's SimPy run (``simulate._Run``), which holds the state it reads: ``env``,
``reqs``, ``book``, ``engines``, ``w`` (the workload), ``s.plan``, ``n_replicas``, ``closed``,
``wake`` (an idle engine's event), ``in_window`` and ``procs`` (an engine waiting out a decode
window is interrupted), ``rr_next``, ``proc_of`` (the process that runs each engine: None when
each runs its own; the ranks of a lock-step group share one, ``serving.lockstep``).
"""

from __future__ import annotations

import heapq
import math

import numpy as np


class Router:
    """One SimPy process that wakes at each distinct arrival time and routes that group of requests
    (round-robin, or least-loaded: by outstanding requests, or over the ranks of lock-step groups by
    tokens, :meth:`by_tokens`)."""

    def router(self):
        """Wake at each distinct arrival time and route that group of requests."""
        yield from self._route_all()
        self.next_arrival_s = math.inf  # every request is routed: nothing reads the engines' loads any more

    def _route_all(self):
        """:meth:`router`'s loop: returns once the last request is routed."""
        arrival = self.reqs.arrival_s
        if arrival.size == 0:
            return
        if self.closed is not None:
            yield from self.closed.play(self)
            return
        starts = np.flatnonzero(np.r_[True, np.diff(arrival) > 0])
        ends = np.r_[starts[1:], arrival.size]
        times = arrival[starts].tolist()  # Python floats: the clock's arithmetic stays off numpy scalars
        rejected = self.book.rejected.tolist()
        for t, a, b in zip(times, starts.tolist(), ends.tolist()):
            delay = t - self.env.now
            if delay > 0:
                self.next_arrival_s = t  # lock-step groups play decode windows up to it
                yield self.env.timeout(delay)
            if b - a > 1:
                self.deliver(np.arange(a, b))
            elif not rejected[a]:  # one request (Poisson): no arrays
                self.wake_up(self.route_one(a))

    def deliver(self, ids: np.ndarray) -> None:
        """Route the requests ``ids`` arriving now (rejected ones dropped); wake the engines that got work."""
        ids = ids[~self.book.rejected[ids]]
        for e in self.route(ids):
            self.wake_up(e)

    def wake_up(self, e: int) -> None:
        """Engine ``e`` got work: wake it (its lock-step group's process) if idle, or cut the window it waits out."""
        if self.proc_of is not None:
            e = self.proc_of[e]
        ev = self.wake[e]
        if ev is not None and not ev.triggered:
            ev.succeed()
        elif self.in_window[e]:
            self.in_window[e] = False
            self.procs[e].interrupt()

    def route_one(self, i: int) -> int:
        """Append request ``i`` to an engine's queue (:meth:`route` of one request); returns the engine."""
        if self.w.router == "round_robin" or self.proc_of is not None:
            return next(iter(self.route(np.array([i]))))
        loads = [eng.running.size + len(eng.waiting) for eng in self.engines]  # ``outstanding``, inlined
        pp = self.s.plan.pp
        if pp == 1:  # least outstanding; ties to the lowest engine (the heap's first pick)
            e = loads.index(min(loads))
        else:  # ties to the lowest replica, then slot
            e = min(range(len(loads)), key=lambda j: (loads[j], j % pp, j // pp))
        self.book.engine[i] = e
        self.engines[e].waiting.append(i)
        return e

    def route(self, ids: np.ndarray) -> set[int]:
        """Append ``ids`` to engines' queues; returns the engines that got work."""
        if ids.size == 0:
            return set()
        n = len(self.engines)
        lockstep = self.proc_of is not None
        if ids.size == 1 and self.w.router != "round_robin" and not lockstep:  # one arrival: the heap's first pick
            return {self.route_one(int(ids[0]))}
        dp, pp = self.n_replicas, self.s.plan.pp
        if lockstep and self.w.router != "round_robin":
            target = self.by_tokens(ids)
        elif self.w.router == "round_robin":
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

    def by_tokens(self, ids: np.ndarray) -> np.ndarray:
        """Targets of ``ids`` over the ranks of lock-step groups, balancing tokens (TensorRT-LLM's
        attention-DP balancer, ``ExecutorRequestQueue._balance_requests_across_ranks``; DeepSeek's
        decode balancer evens out KV use and requests per rank likewise): the new requests, longest
        first, each go to the rank holding the fewest tokens (KV reserved plus queued contexts) among
        those under the even share of requests, ``ceil(outstanding / ranks)``. Ties: fewer requests,
        then the lowest slot, then rank.

        The ranks' loads are read once per group iteration (``rank_loads``, dropped by the groups
        when they schedule or commit) and kept up to date here as requests are placed."""
        if self.rank_loads is None:
            self.rank_loads = self._read_loads()
        tokens, counts = self.rank_loads
        cap = -(-(int(counts.sum()) + ids.size) // counts.size)
        weight = self.book.target[ids]
        target = np.empty(ids.size, np.int64)
        order = self.rank_order  # (slot, rank) tie-break order of the engines
        for j in np.argsort(-weight, kind="stable").tolist():
            ok = np.flatnonzero(counts < cap)
            e = int(ok[np.lexsort((order[ok], counts[ok], tokens[ok]))[0]])
            target[j] = e
            tokens[e] += weight[j]
            counts[e] += 1
        return target

    def _read_loads(self) -> tuple[np.ndarray, np.ndarray]:
        """(tokens, requests) per engine: KV reserved plus queued contexts, and requests outstanding."""
        tgt = self.book.target
        tokens = np.array([eng.kv_used_tokens + (int(tgt[list(eng.waiting)].sum()) if eng.waiting else 0)
                           for eng in self.engines], np.int64)
        counts = np.array([eng.running.size + len(eng.waiting) for eng in self.engines], np.int64)
        return tokens, counts
