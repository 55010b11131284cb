"""Decode windows: several iterations of one engine played as one event. Pure numpy.

While an engine's every running sequence is decoding, nothing queued can be admitted, the KV pool
can give each sequence its next slot and no sequence finishes, every iteration schedules the same
batch: each sequence emits one token over a context one longer than the iteration before. ``plan_window`` finds
how many such iterations lie ahead (the last may finish sequences); the engine prices them at once
(``IterationCost.decode_window``), waits once, and ``commit_window`` applies them, exactly as the
iteration-by-iteration loop (``batching.schedule`` / ``commit``) would.

A window may also open with the iteration that admits the queued requests (the usual iteration
after an arrival): when the KV pool and the batch limits take every one and each one's whole
prefill runs in that iteration, the batch is the running decodes plus those prefills
(``Admission``), and from the next iteration on they decode with the others. The engine prices that
first iteration as one step (``IterationCost.admission_step_s``) and the rest as decode rows.

A request routed to the engine mid-window cuts it at the first iteration that starts after the
arrival (the engine process does that). Batches that run a partial prefill, leave a request queued,
preempt, speculate or run in a pipeline or a lock-step group take the step-by-step path.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from moesim.engine.serving.batching import (
    EngineState,
    RequestBook,
    admissible,
    admission_of,
    finish,
)

#: Most iterations one window covers (bounds the work lost when an arrival cuts it short).
MAX_WINDOW = 256
_STEPS = np.arange(1, MAX_WINDOW + 1)  # iteration numbers 1..k of a window


@dataclass(slots=True)
class Admission:
    """A queued request a window's first iteration admits; its whole remaining prefill runs then
    (read-only by convention, as :class:`DecodeWindow`)."""

    id: int
    q_tokens: int  # tokens it runs in the first iteration (1 when its KV arrived whole: it decodes)
    kv_tokens: int  # its context after the first iteration (what attention reads)
    reserve: int  # KV slots its admission reserves
    ready: bool  # its KV arrived whole (disaggregated decode pool): the first iteration decodes it


@dataclass(slots=True)
class DecodeWindow:
    """``k`` iterations of the batch ``ids`` (the engine's running set in order, then the admitted
    requests). Read-only by convention (not frozen: one is made per arrival, and frozen ones cost more).

    Without ``admits`` every iteration decodes every sequence. With them, iteration 0 decodes the
    running sequences and runs the admitted requests' prefills; the ``k - 1`` decode rows follow.
    """

    ids: np.ndarray  # (n,) request ids
    context: np.ndarray  # (n,) context each sequence attends over in the first decode row
    kv_used: np.ndarray  # (k,) KV slots reserved in the pool after each iteration's scheduling
    k: int
    to_finish: int  # iterations until the first sequence finishes (may exceed ``k``)
    admits: tuple = ()  # the Admissions of iteration 0, in queue order
    queued: int = 0  # requests queued throughout (none can be admitted before the window ends)


def plan_window(eng: EngineState, book: RequestBook, max_k: int = MAX_WINDOW,
                decoding: bool = False) -> DecodeWindow | None:
    """The window starting at the engine's next iteration, or None where that iteration is not one
    (it prefills part of a prompt, admits part of the queue, preempts, or the KV pool is full).

    ``k`` stops at the first iteration that finishes a sequence (included), at the first whose KV
    growth the pool cannot give (excluded: it would preempt), and at ``max_k``. With requests queued
    the window opens with their admission when ``schedule`` would admit every one whole.
    ``decoding``: the caller knows every running sequence decodes (it committed a window since
    the last ``schedule``), which spares the check.
    """
    ids = eng.running
    n = ids.size
    queued = len(eng.waiting)
    if n > eng.max_batch_tokens or (n == 0 and not queued):
        return None
    # every sequence decodes one token a step (windows run without speculative decoding)
    if n and not decoding and np.logical_or.reduce(book.prefilled[ids] < book.target[ids]):
        return None
    if queued:
        win = _admission_window(eng, book, ids, max_k)
        if win is not _BLOCKED:
            return win
        if not n:
            return None
        # the queue's head cannot be admitted, nor can it be later in the window: the KV left only
        # shrinks as the decodes grow, and the batch limits hold until a sequence finishes
    to_finish = _to_finish(eng, book, ids)
    k = min(to_finish, max_k)
    ctx, kv = book.ctx[ids], book.kv[ids]
    used = within_pool(kv_used_after(eng.kv_used_tokens, ctx, kv, k, eng.kv_slots), eng.kv_capacity_tokens)
    if not used.size:  # the next iteration would preempt
        return None
    return DecodeWindow(ids, ctx + 1, used, used.size, to_finish, queued=queued)


def _to_finish(eng: EngineState, book: RequestBook, ids: np.ndarray) -> int:
    """Iterations until the first of the running ``ids`` emits its last token: what the last
    window left (``eng.window_left``) when the running set is still the one it left."""
    left = eng.window_left
    if left is not None and left[0] is ids:
        return left[1]
    return int(np.minimum.reduce(book.output[ids] - book.generated[ids]))


#: ``_admission_window``'s answer when ``schedule`` would admit nothing (the queue stays as it is).
_BLOCKED = object()


def kv_used_after(used_s: int, ctx: np.ndarray, kv: np.ndarray, k: int, slots=None) -> np.ndarray:
    """KV slots reserved after each of ``k`` decode iterations' scheduling (``used_s`` before them):
    each sequence holds ``max(kv, ctx + j)`` after iteration ``j`` (``j = 1..k``): its next slot
    reserved (prompt mode), or already (full mode reserved the output at admission). ``slots``: the
    engine's ``kv_slots`` (``max(kv, slots(ctx + j))``; None: one slot a token)."""
    gap = ctx - kv
    if slots is None and int(np.minimum.reduce(gap)) >= -1:  # no sequence holds slots ahead
        return _one_slot_a_step(used_s, int(np.add.reduce(gap)), ctx.size, k)
    after = ctx[None, :] + np.arange(1, k + 1)[:, None]
    held = np.maximum(kv[None, :], after if slots is None else slots(after))
    return used_s + (held - kv[None, :]).sum(axis=1)


def _one_slot_a_step(used_s: int, gap: int, n: int, k: int) -> np.ndarray:
    """:func:`kv_used_after` when each of the ``n`` sequences grows by one slot a step (none holds a slot
    ahead; ``gap``: their summed context - KV): ``used_s + gap + n j`` after iteration ``j = 1..k``
    (exact ints)."""
    return (used_s + gap) + n * (_STEPS[:k] if k <= MAX_WINDOW else np.arange(1, k + 1))


def within_pool(used: np.ndarray, capacity: int) -> np.ndarray:
    """``used`` up to the first iteration whose KV the pool cannot give (excluded: it would preempt;
    ``used`` never falls within a window)."""
    return used[:int(np.argmax(used > capacity))] if used[-1] > capacity else used


def _admission_window(eng: EngineState, book: RequestBook, ids: np.ndarray, max_k: int):
    """The window whose first iteration admits every queued request (running ``ids`` all decode),
    ``_BLOCKED`` when ``schedule`` would admit none, or None where it would do otherwise: preempt,
    admit some and leave others queued, or prefill only a chunk. Admission follows ``batching``
    (``admissible``), on ints for one request (this runs once per arrival)."""
    n, queued = ids.size, len(eng.waiting)
    ctx, kv = book.ctx[ids], book.kv[ids]
    f = eng.kv_slots
    short = (ctx + 1 if f is None else f(ctx + 1)) - kv  # slots each decode lacks for its next token
    holds_ahead = n and int(np.minimum.reduce(short)) < 0  # some decode holds slots ahead (full admission)
    need = int(np.add.reduce(np.maximum(short, 0) if holds_ahead else short))
    free = eng.kv_capacity_tokens - eng.kv_used_tokens - need
    budget = eng.max_batch_tokens - n
    if free < 0:  # schedule would preempt
        return None
    if budget <= 0 or eng.max_batch_seqs - n <= 0:
        return _BLOCKED
    # ``admissible``'s rules on ints for the queue's head: none is admitted when it is not
    fits = admission_of(eng, book, eng.waiting[0], budget, free, prefilling=False)
    if fits is None:
        return _BLOCKED
    if queued == 1:  # the usual arrival
        cands, takes, reserves = [int(eng.waiting[0])], [fits[0]], [fits[1]]
    else:
        cand, take, reserve = admissible(eng, book, eng.max_batch_seqs - n, budget, free, prefilling=False)
        if cand.size < queued:  # none admitted, or some left queued (the step path)
            return _BLOCKED if cand.size == 0 else None
        cands, takes, reserves = cand.tolist(), take.tolist(), reserve.tolist()
    admits, before, to_finish = [], 0, 1 << 62
    for c, take, reserve in zip(cands, takes, reserves):
        target, prefilled = int(book.target[c]), int(book.prefilled[c])
        ready = prefilled >= target  # its KV arrived whole (disaggregated decode pool): it decodes
        chunk = min(max(budget - before, 0), take) if eng.chunked_prefill else take  # ``_admission_chunks``
        if (ready and queued > 1) or (not ready and prefilled + chunk < target):
            return None  # one-token rows among prefills (the scheduler prices them), or a chunk goes on next iteration
        admits.append(Admission(c, chunk, int(book.ctx[c]) + chunk, reserve, ready))
        before += take
        # every sequence emits a token in iteration 0 (an admitted one its first, or a decode if ready)
        to_finish = min(to_finish, int(book.output[c]) - int(book.generated[c]))
    reserved = sum(reserves)
    if n:
        to_finish = min(to_finish, _to_finish(eng, book, ids))
    k = min(to_finish, max_k)
    a = len(admits)
    kv_adm = np.array([x.kv_tokens for x in admits]) if a > 1 else admits[0].kv_tokens
    res_adm = np.array([x.reserve for x in admits]) if a > 1 else admits[0].reserve
    used = np.empty(k, np.int64)
    used[0] = eng.kv_used_tokens + need + reserved
    # decode rows j = 1..k-1 from the state after iteration 0: a running sequence holds
    # max(kv, ctx + 1 + j), an admitted one max(reserve, kv_tokens + j) (``kv_used_after``)
    if k > 1:
        ahead = kv_adm - res_adm  # slots an admitted one lacks (< 0: holds ahead)
        ahead_min, ahead_sum = (ahead, ahead) if a == 1 else (int(ahead.min()), int(ahead.sum()))
        if f is None and (not holds_ahead or int(np.minimum.reduce(short)) >= -1) and ahead_min >= -1:
            # each grows by one a step
            gap = (int(np.add.reduce(np.minimum(short, 0))) if holds_ahead else 0) + ahead_sum
            used[1:] = _one_slot_a_step(int(used[0]), gap, n + a, k - 1)
        else:
            held = np.maximum(kv, ctx + 1 if f is None else f(ctx + 1))
            used[1:] = kv_used_after(int(used[0]), _extend(ctx + 1, kv_adm), _extend(held, res_adm), k - 1, f)
        used = within_pool(used, eng.kv_capacity_tokens)  # iteration 0's KV was checked: one iteration stays
        k = used.size
    context = _extend(ctx + 2, kv_adm + 1)  # of the first decode row
    new_ids = _extend(ids, np.array([x.id for x in admits]) if a > 1 else admits[0].id)
    return DecodeWindow(new_ids, context, used, k, to_finish, tuple(admits))


def _extend(a: np.ndarray, x) -> np.ndarray:
    """``a`` followed by ``x`` (an int or an array)."""
    return _append(a, x) if isinstance(x, int) else np.concatenate((a, x))


def _append(a: np.ndarray, x: int) -> np.ndarray:
    """``a`` with ``x`` after its last element (``np.append`` without its conversions)."""
    out = np.empty(a.size + 1, a.dtype)
    out[:-1] = a
    out[-1] = x
    return out


def commit_window(eng: EngineState, book: RequestBook, win: DecodeWindow, m: int,
                  first_end_s: float, end_s: float, start_s: float = np.nan) -> np.ndarray:
    """Apply the first ``m`` iterations of ``win`` (the first starting at ``start_s`` and ending at
    ``first_end_s``, the last ending at ``end_s``); returns the ids that finished. Mutates ``eng``
    and ``book`` as ``m`` rounds of ``schedule`` + ``commit`` would."""
    ids = win.ids
    for a in win.admits:  # iteration 0 admitted it: its prefill ran (ctx grew by the chunk, not by 1)
        eng.waiting.popleft()
        if not book.admitted_s[a.id] <= start_s:  # NaN (first admission) or later: a preempted request keeps its first
            book.admitted_s[a.id] = start_s
        book.kv[a.id] = a.reserve
        book.ctx[a.id] = a.kv_tokens - 1
        if not a.ready:
            book.prefilled[a.id] = book.target[a.id]
        # its first token (unless a preemption made it recompute): every other sequence of a window
        # has emitted one, in the iteration that completed its prefill
        if math.isnan(book.first_token_s[a.id]):
            book.first_token_s[a.id] = first_end_s
    if win.admits:
        eng.running = ids
    generated = advance_decodes(eng, book, ids, m, int(win.kv_used[m - 1]))
    if m < win.to_finish:  # none has emitted its last token
        eng.window_left = (eng.running, win.to_finish - m)
        return ids[:0]
    eng.window_left = None
    return finish(eng, book, ids, end_s, left=book.output[ids] - generated)


def advance_decodes(eng: EngineState, book: RequestBook, ids: np.ndarray, m: int, kv_used: int) -> np.ndarray:
    """Apply ``m`` decode iterations to ``ids`` of ``eng``: contexts and counts grow by ``m``, each
    sequence holds the KV slots of its new context (``eng.kv_slots``), the pool ``kv_used`` slots.
    Returns the tokens each has generated now. Finishing is the caller's."""
    ctx = book.ctx[ids] + m
    book.kv[ids] = np.maximum(book.kv[ids], ctx if eng.kv_slots is None else eng.kv_slots(ctx))
    book.ctx[ids] = ctx
    generated = book.generated[ids] + m
    book.generated[ids] = generated
    eng.kv_used_tokens = kv_used
    return generated


def exact_delay(now_s: float, target_s: float) -> float:
    """A delay ``d`` with ``now_s + d == target_s`` in floating point (SimPy adds delays to now)."""
    d = target_s - now_s
    while now_s + d < target_s:
        d = math.nextafter(d, math.inf)
    while now_s + d > target_s:
        d = math.nextafter(d, -math.inf)
    return d
