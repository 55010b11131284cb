"""Decode windows of a lock-step group: its settled ranks' iterations up to the first finish, as one event.

When every rank of an attention-DP group that has work is settled (``lockstep.settled``: each of its
sequences decodes, its queue admits nothing), every iteration until the first sequence finishes or
a request arrives runs the same batches, each sequence one token longer: nothing
becomes admissible while no sequence leaves (the batch limits hold, and the KV the decodes leave
only shrinks). :func:`plan_group_window` finds how many such iterations lie ahead, within every
rank's KV pool and at most ``MAX_WINDOW``; the group process prices them with the very call the
iteration-by-iteration loop makes (``IterationCost.group_time_s``, in the same order, so skew picks,
sums and clock readings come out the same), waits once, and :func:`commit_group_window` applies them
as that loop's ``Decodes.commit`` would. Pure numpy, no SimPy.

An arrival reads the ranks' loads (the attention-DP router balances KV tokens), so a window ends
before the next arrival (``Router.next_arrival_s``, known in advance: the arrival times are drawn
before the run; closed-loop runs, whose arrivals follow finishes, wait until every request is sent):
the iteration in progress when a request arrives is always the step loop's own.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from moesim.engine.serving.batching import EngineState, RequestBook, finish
from moesim.engine.serving.window import advance_decodes, kv_used_after, within_pool


@dataclass(slots=True)
class GroupWindow:
    """``k`` decode iterations of the settled ranks' running sets ``ids`` (one array a rank, in group
    order); ``kv_used``: each rank's KV slots reserved after each iteration's scheduling, ``(k,)``.
    Read-only by convention."""

    ids: list[np.ndarray]
    kv_used: list[np.ndarray]
    k: int
    to_finish: int  # iterations until the first sequence emits its last token (>= k)


def plan_group_window(engines: list[EngineState], book: RequestBook, max_k: int) -> GroupWindow | None:
    """The window of the settled ranks ``engines`` starting at their next iteration (the caller has
    checked that they are settled), or None where it would be a single iteration (the step loop
    plays that). ``k`` stops at the first iteration that finishes a sequence (included), at the
    first whose KV growth some rank's pool cannot give (excluded: that rank would schedule on its
    own, and may preempt), and at ``max_k``."""
    ids = [eng.running for eng in engines]
    every = np.concatenate(ids) if len(ids) > 1 else ids[0]
    to_finish = int(np.minimum.reduce(book.output[every] - book.generated[every]))
    k = min(to_finish, max_k)
    if k < 2:  # (a sequence finishing next iteration is common: spare the KV planning)
        return None
    used = []
    for eng, x in zip(engines, ids):
        u = within_pool(kv_used_after(eng.kv_used_tokens, book.ctx[x], book.kv[x], k, eng.kv_slots), eng.kv_capacity_tokens)
        used.append(u)
        k = min(k, u.size)
        if k < 2:
            return None
    return GroupWindow(ids, [u[:k] for u in used], k, to_finish)


def commit_group_window(engines: list[EngineState], book: RequestBook, win: GroupWindow, k: int,
                        end_s: float) -> None:
    """Apply the first ``k`` iterations of ``win`` to ``engines`` and ``book`` (the last ending at
    ``end_s``): contexts, KV and counts grow by ``k``; requests emitting their last token leave
    their rank."""
    for eng, ids, used in zip(engines, win.ids, win.kv_used):
        advance_decodes(eng, book, ids, k, int(used[k - 1]))
        if k == win.to_finish:
            finish(eng, book, ids, end_s)
