"""DualPipe's per-stage order (DeepSeek-V3 report, arXiv:2412.19437 sec. 3.2.1; deepseek-ai/DualPipe).

The reference implementation (``DualPipe.step``) plays, on rank ``r`` of ``p`` (``p`` even) with
``n = m/2`` microbatches per direction, half-rank ``h = min(r, p-1-r)`` and ``H = p/2``, eight
steps. Its "phase 0" is the direction entering at the rank's own end of the pipeline (direction
0 on the first half of the ranks, direction 1 on the second half), "phase 1" the other:

1. ``2(H-h-1)`` forwards of phase 0;
2. ``h+1`` times: forward phase 0, forward phase 1;
3. ``H-h-1`` times: B of phase 1 (weight gradients held back), its W, forward phase 1;
4. ``n-p+h+1`` times: the pair (forward phase 0, backward phase 1), then the pair (forward
   phase 1, backward phase 0); on the two middle ranks the first pair is played one after the
   other ("we don't overlap these two chunks to further reduce bubble size");
5. ``H-h-1`` times: backward phase 1, then the pair (forward phase 1, backward phase 0);
6. ``h+1`` times: backward phase 1, backward phase 0, the second half of them (from the middle
   one, phase 1 first when ``h`` is odd) split into B and a held-back W;
7. ``H-h-1`` times: a held-back W, then B of phase 0 (its W held back);
8. ``h+1`` held-back W's.

Held-back W's run first in, first out (the reference's ``WeightGradStore`` queue). Here a
microbatch's units are numbered globally: direction 0 carries microbatches ``0..n-1`` through
local chunk 0 (global chunk ``r``), direction 1 carries ``n..2n-1`` through local chunk 1 (global
chunk ``2p-1-r``); within a direction microbatches run in order. Paired units are a
(forward, whole backward) tuple, the engine's combined unit (``timeline.combine_units``).
"""

from __future__ import annotations

from collections import deque

from moesim.engine.training.schedules import Entry, Unit


def dualpipe_order(stage: int, pp: int, m: int) -> list[Entry]:
    """The units stage ``stage`` of a ``pp``-stage DualPipe plays for ``m`` microbatches (both
    directions); ``ValueError`` unless ``pp`` is even and ``m`` even with ``m >= 2 * pp``."""
    if pp % 2 or m % 2 or m < 2 * pp:
        raise ValueError(f"dualpipe schedule: needs pp even ({pp}) and microbatches even and >= 2 * pp ({m})")
    half, n = pp // 2, m // 2
    h = min(stage, pp - 1 - stage)
    second = int(stage >= half)
    fwd, bwd = [0, 0], [0, 0]  # next microbatch (within its direction) per direction
    held: deque[Unit] = deque()  # W's held back, first in, first out

    def F(phase: int) -> Unit:
        d = phase ^ second
        fwd[d] += 1
        return Unit(d * n + fwd[d] - 1, d, False)

    def B(phase: int, split: bool = False) -> Unit:
        d = phase ^ second
        bwd[d] += 1
        i = d * n + bwd[d] - 1
        if split:
            held.append(Unit(i, d, True, "W"))
        return Unit(i, d, True, "B" if split else "")

    def pair(f_phase: int, b_phase: int) -> tuple[Unit, Unit]:
        return F(f_phase), B(b_phase)

    out: list[Entry] = [F(0) for _ in range(2 * (half - h - 1))]
    for _ in range(h + 1):
        out += [F(0), F(1)]
    for _ in range(half - h - 1):
        out.append(B(1, split=True))
        out += [held.popleft(), F(1)]
    for i in range(n - pp + h + 1):
        if i == 0 and h == half - 1:  # a middle rank
            out += [F(0), B(1)]
        else:
            out.append(pair(0, 1))
        out.append(pair(1, 0))
    for _ in range(half - h - 1):
        out += [B(1), pair(1, 0)]
    split = False
    for i in range(h + 1):
        if i == (h + 1) // 2 and h % 2 == 1:
            split = True
        out.append(B(1, split))
        if i == (h + 1) // 2 and h % 2 == 0:
            split = True
        out.append(B(0, split))
    for _ in range(half - h - 1):
        out.append(held.popleft())
        out.append(B(0, split=True))
    out += list(held)
    return out
