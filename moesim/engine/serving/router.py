"""The serving engine's router: when requests arrive, which engine queues each, and waking it.

A mixin of the engine's SimPy run (``simulate._Run``), which holds the state it reads: ``env``,
``reqs``, ``book``, ``engines``, ``w`` (the workload), ``s.plan``, ``n_replicas``, ``closed``,
``wake`` (an idle engine's event), ``in_window`` and ``procs`` (an engine waiting out a decode
window is interrupted), ``rr_next``.
"""

from __future__ import annotations

import heapq

import numpy as np


class Router:
    """One SimPy process that wakes at each distinct arrival time and routes that group of requests
    (round-robin, or least-loaded by outstanding requests)."""

    def router(self):
        """Wake at each distinct arrival time and route that group of requests."""
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
        """Engine ``e`` got work: wake it if idle, or cut the window it waits out."""
        ev = self.wake[e]
        if ev is not None and not ev.triggered:
            ev.succeed()
        elif self.in_window[e]:
            self.in_window[e] = False
            self.procs[e].interrupt()

    def route_one(self, i: int) -> int:
        """Append request ``i`` to an engine's queue (:meth:`route` of one request); returns the engine."""
        if self.w.router == "round_robin":
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
        if ids.size == 1 and self.w.router != "round_robin":  # one arrival: the heap's first pick
            return {self.route_one(int(ids[0]))}
        dp, pp = self.n_replicas, self.s.plan.pp
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
