"""Pipeline schedules as orderings of work per stage: the order builder and its checker. Pure Python.

The schedules themselves (layout, per-stage order, bubble, activations in flight) are registered
objects in ``engine.training.schedules``; ``schedule`` and ``analytic_bubble_fraction`` here are the short
names for their orders and the equal-stage bubble. A schedule gives, for every pipeline stage, the
order in which that stage runs its (microbatch, local chunk, direction, part) units;
``combined_orders`` reshapes a 1F1B-family order into Megatron-core's combined 1F1B.
"""

from __future__ import annotations

from moesim.engine.training.schedules import (
    DEFAULT_LAYOUT,
    SCHEDULES,
    Entry,
    Schedule,
    Unit,
    get_schedule,
    units_of,
)

__all__ = ["Unit", "analytic_bubble_fraction", "check_orders", "combined_orders", "schedule"]


def schedule(kind: str, pp: int, m: int, v: int = 1) -> list[list[Entry]]:
    """Per-stage orders of the registered schedule ``kind`` (``engine.training.schedules.SCHEDULES``)."""
    return get_schedule(kind).orders(pp, m, v)


def analytic_bubble_fraction(pp: int, m: int, v: int = 1) -> float:
    """Idle fraction of a step with equal stages and ``v`` chunks per stage: ``(pp-1) / (v*m + pp-1)``
    (``Interleaved.bubble_fraction``; GPipe's and 1F1B's for ``v = 1``, see ``engine.training.schedules``)."""
    return SCHEDULES["interleaved"].bubble_fraction(pp, m, v)


def check_orders(orders: list[list[Entry]], m: int, v: int, layout: Schedule = DEFAULT_LAYOUT) -> None:
    """Raise ``ValueError`` unless every stage runs each unit of its chunks exactly once and the
    orders cannot deadlock.

    A stage's units: for every microbatch whose path (``layout.path``) crosses one of its ``v *
    layout.chunks_per_stage`` local chunks, one forward and either one whole backward or one ``B``
    and one ``W``. Dependencies: forward after the previous chunk's forward, backward (or ``B``)
    after the next chunk's (after its own forward on the path's last chunk), ``W`` after its ``B``;
    both units of a pair wait for what either needs.
    """
    pp = len(orders)
    local = v * layout.chunks_per_stage
    paths = [layout.path(i, pp, m, v) for i in range(m)]
    for s, order in enumerate(orders):
        got = [u for e in order for u in units_of(e)]
        seen = {(u.microbatch, u.chunk, u.kind) for u in got}
        want = set()
        for i in range(m):
            for c in range(local):
                if paths[i][0] <= layout.global_chunk(s, c, pp) <= paths[i][1]:
                    split = (i, c, "B") in seen or (i, c, "W") in seen
                    want |= {(i, c, "F")} | ({(i, c, "B"), (i, c, "W")} if split else {(i, c, "BW")})
        if len(got) != len(want) or seen != want:
            raise ValueError(f"stage {s}: order does not cover every unit exactly once")
    # Play the orders with unit durations to prove they finish (no cyclic waits).
    done: set[tuple[int, int, str]] = set()  # (microbatch, global chunk, "F" | "B" | "W"); "B" also for a whole backward

    def need(s: int, u: Unit) -> tuple[int, int, str] | None:
        g, (first, last) = layout.global_chunk(s, u.chunk, pp), paths[u.microbatch]
        if u.kind == "W":
            return (u.microbatch, g, "B")
        if not u.backward:
            return None if g == first else (u.microbatch, g - 1, "F")
        return (u.microbatch, g + 1, "B") if g < last else (u.microbatch, g, "F")

    pos = [0] * pp
    progressed = True
    while progressed:
        progressed = False
        for s in range(pp):
            while pos[s] < len(orders[s]):
                units = units_of(orders[s][pos[s]])
                if any(n is not None and n not in done for n in (need(s, u) for u in units)):
                    break
                done.update((u.microbatch, layout.global_chunk(s, u.chunk, pp), "B" if u.backward and u.kind != "W" else u.kind[0])
                            for u in units)
                pos[s] += 1
                progressed = True
    if any(pos[s] < len(orders[s]) for s in range(pp)):
        raise ValueError("schedule deadlocks: some stage waits on work that never runs")


def combined_orders(orders: list[list[Entry]]) -> list[list[Entry]]:
    """Megatron-core's combined 1F1B (``--overlap-moe-expert-parallel-comm``) on a 1F1B-family order.

    A stage's 1F1B (or interleaved) order is ``w`` warm-up forwards, then forward/backward
    alternating, then the remaining backwards. Combined 1F1B runs one more warm-up forward
    (Megatron adds 1 to the warm-up count), so the ``j``-th backward comes after forward
    ``w + 1 + j`` and the two run together as a pair: ``F_0 .. F_w, (F_{w+1}, B_0), (F_{w+2}, B_1),
    ..., B_{n-w-1} ..`` (pp = 1: ``F0, (F1, B0), (F2, B1), ..., B_{m-1}``, Megatron's
    ``combined_1f1b_schedule_for_no_pipelining``). A pair of the same microbatch (possible across
    chunks of the interleaved schedule) is played one after the other. Orders of another shape
    (GPipe: all forwards, then all backwards; split backwards; pairs already) are left as they are.
    """
    out = []
    for order in orders:
        if any(not isinstance(u, Unit) or u.part for u in order):
            out.append(list(order))
            continue
        fs = [u for u in order if not u.backward]
        bs = [u for u in order if u.backward]
        w = next((j for j, u in enumerate(order) if u.backward), len(order)) - 1  # F_w runs just before B_0
        n = len(fs) - w
        shaped = fs[:w] + [x for j in range(n) for x in (fs[w + j], bs[j])] + bs[n:]
        if shaped != list(order) or n <= 1:
            out.append(list(order))
            continue
        w += 1
        steps: list[Unit | tuple[Unit, Unit]] = list(fs[:w])
        for j in range(len(fs) - w):
            f, b = fs[w + j], bs[j]
            steps += [(f, b)] if f.microbatch != b.microbatch else [f, b]
        out.append(steps + bs[len(fs) - w:])
    return out
