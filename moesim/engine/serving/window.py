"""Decode windows: several decode-only iterations of one engine played as one event. Pure numpy.

While an engine's every running sequence is decoding, nothing is queued, the KV pool can give each
sequence its next slot and no sequence finishes, every iteration schedules the same batch: each
sequence emits one token over a context one longer than the iteration before. ``plan_window`` finds
how many such iterations lie ahead (the last may finish sequences); the engine prices them at once
(``IterationCost.decode_window``), waits once, and ``commit_window`` applies them, exactly as the
iteration-by-iteration loop (``batching.schedule`` / ``commit``) would. A request routed to the
engine mid-window cuts it at the first iteration that starts after the arrival (the engine
process does that). Batches that prefill, admit, preempt, speculate or run in a pipeline or a
lock-step group take the step-by-step path.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from moesim.engine.serving.batching import EngineState, RequestBook, finish

#: Most iterations one window covers (bounds the work lost when an arrival cuts it short).
MAX_WINDOW = 256


@dataclass(frozen=True)
class DecodeWindow:
    """``k`` decode-only iterations of the batch ``ids`` (the engine's running set, in order)."""

    ids: np.ndarray  # (n,) request ids
    context: np.ndarray  # (n,) context each sequence attends over in the first iteration (ctx + 1)
    kv_used: np.ndarray  # (k,) KV slots reserved in the pool after each iteration's scheduling
    k: int


def plan_window(eng: EngineState, book: RequestBook, max_k: int = MAX_WINDOW, min_k: int = 2) -> DecodeWindow | None:
    """The decode window starting at the engine's next iteration, or None (fewer than ``min_k`` iterations).

    ``k`` stops at the first iteration that finishes a sequence (included), at the first whose KV
    growth the pool cannot give (excluded: it would preempt), and at ``max_k``.
    """
    ids = eng.running
    n = ids.size
    if eng.waiting or n == 0 or n > eng.max_batch_tokens:
        return None
    # every sequence decodes one token a step (windows run without speculative decoding)
    if (book.prefilled[ids] < book.target[ids]).any():
        return None
    k = min(int((book.output[ids] - book.generated[ids]).min()), max_k)
    if k < min_k:
        return None
    ctx, kv = book.ctx[ids], book.kv[ids]
    # KV each sequence holds after iteration j's scheduling (j = 1..k): its next slot reserved
    # (prompt mode), or already (full mode reserved the output at admission): max(kv, ctx + j)
    gap = ctx - kv
    if int(gap.min()) >= -1:  # no sequence holds slots ahead: each grows by one a step (exact ints)
        used = eng.kv_used_tokens + int(gap.sum()) + n * np.arange(1, k + 1)
    else:
        held = np.maximum(kv[None, :], ctx[None, :] + np.arange(1, k + 1)[:, None])
        used = eng.kv_used_tokens + (held - kv[None, :]).sum(axis=1)
    if used[-1] > eng.kv_capacity_tokens:  # ``used`` never falls: the first misfit ends the window
        k = int(np.argmax(used > eng.kv_capacity_tokens))
        if k < min_k:
            return None
        used = used[:k]
    return DecodeWindow(ids, ctx + 1, used, k)


def commit_window(eng: EngineState, book: RequestBook, win: DecodeWindow, m: int,
                  first_end_s: float, end_s: float) -> np.ndarray:
    """Apply the first ``m`` iterations of ``win`` (the last ending at ``end_s``, the first at
    ``first_end_s``); returns the ids that finished. Mutates ``eng`` and ``book`` as ``m`` rounds of
    ``schedule`` + ``commit`` would."""
    ids = win.ids
    book.kv[ids] = np.maximum(book.kv[ids], book.ctx[ids] + m)
    book.ctx[ids] += m
    book.generated[ids] += m
    eng.kv_used_tokens = int(win.kv_used[m - 1])
    first = ids[np.isnan(book.first_token_s[ids])]
    book.first_token_s[first] = first_end_s
    return finish(eng, book, ids, end_s)


def exact_delay(now_s: float, target_s: float) -> float:
    """A delay ``d`` with ``now_s + d == target_s`` in floating point (SimPy adds delays to now)."""
    d = target_s - now_s
    while now_s + d < target_s:
        d = float(np.nextafter(d, np.inf))
    while now_s + d > target_s:
        d = float(np.nextafter(d, -np.inf))
    return d
