"""Pipeline schedules as orderings of work per stage, and their analytic bubbles. Pure Python.

A schedule gives, for every pipeline stage, the order in which that stage runs its
(microbatch, local chunk, direction) units. With ``v`` virtual stages, stage ``s`` holds model
chunks ``s, s + pp, s + 2*pp, ...`` (global chunk ``c = local * pp + s``); without interleaving
``v = 1`` and the local chunk is always 0. Forward of chunk ``c`` needs forward of ``c - 1``;
backward of ``c`` needs backward of ``c + 1`` (and, on the last chunk, its own forward).
"""

from __future__ import annotations

from typing import NamedTuple


class Unit(NamedTuple):
    """One unit of pipeline work: a microbatch through one local chunk, forward or backward."""

    microbatch: int
    chunk: int  # local chunk index on its stage, 0..v-1
    backward: bool


def gpipe(pp: int, m: int) -> list[list[Unit]]:
    """GPipe (fill-drain): every stage runs all forwards, then all backwards, microbatch order."""
    return [[Unit(i, 0, False) for i in range(m)] + [Unit(i, 0, True) for i in range(m)]
            for _ in range(pp)]


def one_f_one_b(pp: int, m: int) -> list[list[Unit]]:
    """1F1B (PipeDream-flush / Megatron): ``pp - s - 1`` warm-up forwards, then alternate, then drain."""
    orders = []
    for s in range(pp):
        warm = min(pp - s - 1, m)
        order = [Unit(i, 0, False) for i in range(warm)]
        for i in range(m - warm):
            order += [Unit(warm + i, 0, False), Unit(i, 0, True)]
        order += [Unit(i, 0, True) for i in range(m - warm, m)]
        orders.append(order)
    return orders


def interleaved(pp: int, m: int, v: int) -> list[list[Unit]]:
    """Interleaved 1F1B (Megatron-LM, Narayanan et al. 2021) with ``v`` chunks per stage.

    Virtual microbatch ``k`` (0..m*v-1) runs chunk ``(k mod pp*v) // pp`` (reversed for backward)
    on microbatch ``(k // (pp*v)) * pp + k mod pp``; stage ``s`` warms up with
    ``2*(pp - s - 1) + (v - 1)*pp`` forwards. Needs ``m`` to be a multiple of ``pp``.
    """
    if v == 1:
        return one_f_one_b(pp, m)
    if m % pp:
        raise ValueError(f"interleaved schedule: microbatches ({m}) must be a multiple of pp ({pp})")
    total = m * v

    def unit(k: int, backward: bool) -> Unit:
        chunk = (k % (pp * v)) // pp
        return Unit((k // (pp * v)) * pp + k % pp, v - 1 - chunk if backward else chunk, backward)

    orders = []
    for s in range(pp):
        warm = min(2 * (pp - s - 1) + (v - 1) * pp, total)
        order = [unit(k, False) for k in range(warm)]
        for i in range(total - warm):
            order += [unit(warm + i, False), unit(i, True)]
        order += [unit(k, True) for k in range(total - warm, total)]
        orders.append(order)
    return orders


def schedule(kind: str, pp: int, m: int, v: int = 1) -> list[list[Unit]]:
    """Per-stage orders for ``kind`` in ``gpipe | 1f1b | interleaved``."""
    if kind == "gpipe":
        return gpipe(pp, m)
    if kind == "1f1b":
        return one_f_one_b(pp, m)
    if kind == "interleaved":
        return interleaved(pp, m, v)
    raise ValueError(f"schedule = {kind!r}: allowed gpipe, 1f1b, interleaved")


def analytic_bubble_fraction(pp: int, m: int, v: int = 1) -> float:
    """Idle fraction of a step with equal stages: ``(pp-1) / (v*m + pp-1)``.

    For ``v = 1`` this is DESIGN's ``(pp-1)/(m+pp-1)`` (GPipe and 1F1B alike). Interleaving cuts the
    fill/drain time by ``v`` (each unit is 1/v of a stage), so the bubble time is
    ``(pp-1)/v`` stage-units against ``m`` of work: Megatron's "bubble / ideal = (pp-1)/(v*m)".
    """
    return (pp - 1) / (v * m + pp - 1)


def check_orders(orders: list[list[Unit]], m: int, v: int) -> None:
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
                g = c * pp + s
                need = (i, g + 1, True) if b and g < last else (i, g, False) if b else (i, g - 1, False)
                if g == 0 and not b or need in done:
                    done.add((i, g, b))
                    pos[s] += 1
                    progressed = True
                else:
                    break
    if any(pos[s] < len(orders[s]) for s in range(pp)):
        raise ValueError("schedule deadlocks: some stage waits on work that never runs")
