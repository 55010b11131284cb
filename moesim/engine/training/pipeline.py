"""Pipeline schedules as orderings of work per stage: the order builder and its checker. Pure Python.

The schedules themselves (layout, per-stage order, bubble, activations in flight) are registered
objects in ``engine.training.schedules``; ``schedule`` and ``analytic_bubble_fraction`` here are the short
names for their orders and the equal-stage bubble. A schedule gives, for every pipeline stage, the
order in which that stage runs its (microbatch, local chunk, direction) units.
"""

from __future__ import annotations

from moesim.engine.training.schedules import DEFAULT_LAYOUT, SCHEDULES, Schedule, Unit, get_schedule

__all__ = ["Unit", "analytic_bubble_fraction", "check_orders", "schedule"]


def schedule(kind: str, pp: int, m: int, v: int = 1) -> list[list[Unit]]:
    """Per-stage orders of the registered schedule ``kind`` (``engine.training.schedules.SCHEDULES``)."""
    return get_schedule(kind).orders(pp, m, v)


def analytic_bubble_fraction(pp: int, m: int, v: int = 1) -> float:
    """Idle fraction of a step with equal stages and ``v`` chunks per stage: ``(pp-1) / (v*m + pp-1)``
    (``Interleaved.bubble_fraction``; GPipe's and 1F1B's for ``v = 1``, see ``engine.training.schedules``)."""
    return SCHEDULES["interleaved"].bubble_fraction(pp, m, v)


def check_orders(orders: list[list[Unit]], m: int, v: int, layout: Schedule = DEFAULT_LAYOUT) -> None:
    """Raise ``ValueError`` unless every stage runs each (microbatch, chunk, direction) exactly once
    and never a backward before its own forward, and the orders cannot deadlock."""
    pp = len(orders)
    want = {(i, c, b) for i in range(m) for c in range(v) for b in (False, True)}
    for s, order in enumerate(orders):
        got = [tuple(u) for u in order]
        if len(got) != len(want) or set(got) != want:
            raise ValueError(f"stage {s}: order does not cover every unit exactly once")
    # Play the orders with unit durations to prove they finish (no cyclic waits).
    done: set[tuple[int, int, bool]] = set()  # (microbatch, global chunk, backward)
    pos = [0] * pp
    last = pp * v - 1
    progressed = True
    while progressed:
        progressed = False
        for s in range(pp):
            while pos[s] < len(orders[s]):
                i, c, b = orders[s][pos[s]]
                g = layout.global_chunk(s, c, pp)
                need = (i, g + 1, True) if b and g < last else (i, g, False) if b else (i, g - 1, False)
                if g == 0 and not b or need in done:
                    done.add((i, g, b))
                    pos[s] += 1
                    progressed = True
                else:
                    break
    if any(pos[s] < len(orders[s]) for s in range(pp)):
        raise ValueError("schedule deadlocks: some stage waits on work that never runs")
