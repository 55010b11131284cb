"""Continuous batching (vLLM / Sarathi style): the scheduler state of one engine, as numpy arrays.

Per iteration ``schedule`` picks the batch under a token budget (``max_batch_tokens``) and a
sequence limit (``max_batch_seqs``), mixing prefill and decode (``mixed_batches``; unmixed, as
SGLang schedules by default, an iteration with prompt work to do runs only that, steps 2-3 under
the whole budget, and the decodes wait for the next one):

1. every running sequence whose prompt is done decodes one token; each needs one more KV slot,
   and when the KV pool cannot grow the newest sequences are preempted (recompute: their KV is
   freed and they go back to the front of the queue to prefill prompt + generated tokens again);
2. running sequences part-way through a chunked prefill continue, in admission order;
3. queued requests are admitted first-come first-served while the sequence limit, the token
   budget and the KV pool allow. Admission reserves KV for the whole prefill (``kv_admission:
   prompt``, vLLM's block allocation; decode steps then grow it one slot at a time) or for the
   prefill plus every output token still to come (``full``, TensorRT-LLM's GUARANTEED_NO_EVICT
   capacity scheduler: decodes never need a new slot, so nothing is ever preempted); without
   chunked prefill a prompt must fit the remaining budget whole.

``commit`` applies the iteration at its end time: first tokens, generated tokens, finishes.
Token counts are int64; times in seconds. A request emits its first token when its prefill
completes, then one per decode iteration.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from itertools import islice

import numpy as np


class RequestBook:
    """Per-request state of the whole run, indexed by request id. Arrays are ``(n_requests,)``."""

    def __init__(self, prompt_tokens: np.ndarray, output_tokens: np.ndarray, cached_tokens=None):
        """``cached_tokens`` (n,): prompt tokens whose KV exists on arrival (a cached prefix, or the
        whole prompt prefilled elsewhere), counted as prefilled; their KV is reserved at admission."""
        n = prompt_tokens.size
        self.prompt = np.asarray(prompt_tokens, dtype=np.int64)
        self.output = np.asarray(output_tokens, dtype=np.int64)
        self.target = self.prompt.copy()  # tokens to prefill (prompt, + generated after a preemption)
        cached = np.zeros(n, np.int64) if cached_tokens is None else np.asarray(cached_tokens, dtype=np.int64)
        self.prefilled = cached.copy()  # of target, done in this attempt (a preemption recomputes all)
        self.ctx = cached.copy()  # tokens whose KV is computed
        self.kv = np.zeros(n, np.int64)  # KV slots reserved
        self.generated = np.zeros(n, np.int64)
        self.first_token_s = np.full(n, np.nan)
        self.finish_s = np.full(n, np.nan)
        self.preemptions = np.zeros(n, np.int64)
        self.engine = np.full(n, -1, np.int64)
        self.rank = np.full(n, -1, np.int64)  # the replica (a lock-step group's rank) that ran it: set after a run
        self.rejected = np.zeros(n, bool)
        self.reject_reason = np.zeros(n, np.int8)  # why each was refused (``serving.rejections`` codes; 0: not)
        self.step = np.ones(n, np.int64)  # tokens a decode step emits (speculative decoding: may be > 1)
        self.unit_steps = True  # every ``step`` is 1 (no speculative decoding): the faster paths hold
        self.admitted_s = np.full(n, np.nan)  # first admission (queueing delay = admitted_s - arrival)
        self.on_finish = None  # called as on_finish(ids, now_s) when requests finish (closed-loop arrivals)


@dataclass
class EngineState:
    """One engine's queue and running set. ``running`` is in admission order (oldest first)."""

    kv_capacity_tokens: int
    max_batch_seqs: int
    max_batch_tokens: int
    chunked_prefill: bool
    kv_admission: str = "prompt"  # "prompt" | "full": what admission reserves (module docstring)
    mixed_batches: bool = True  # False: an iteration with prompt work runs only prefill (module docstring)
    #: KV slots a sequence of ``ctx`` tokens holds (``local_attention.kv_slots``: local layers keep only
    #: their window); None: one slot a token
    kv_slots: Callable | None = None
    running: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    waiting: deque = field(default_factory=deque)
    kv_used_tokens: int = 0
    preemptions: int = 0
    #: (the running set a decode window left, iterations until its first sequence finishes): kept
    #: by ``window.commit_window`` so the next window need not recompute it; None once ``commit``
    #: (the step path) changes what the running sequences have generated
    window_left: tuple[np.ndarray, int] | None = None

    @property
    def outstanding(self) -> int:
        """Requests routed here and not finished (running + queued)."""
        return int(self.running.size) + len(self.waiting)


@dataclass(slots=True)
class Batch:
    """One iteration's work (read-only by convention). Arrays are per scheduled sequence, ``(n,)``."""

    ids: np.ndarray  # request ids
    q_tokens: np.ndarray  # new tokens this iteration (1 for a decode, the chunk for a prefill)
    kv_tokens: np.ndarray  # context after this iteration (what attention reads)
    is_decode: np.ndarray  # bool
    emits: np.ndarray  # bool: emits a token at the end (decode, or prefill completing)
    kv_used_tokens: int  # reserved KV in the pool after scheduling (the iteration's peak)
    running: int  # sequences holding KV after scheduling (scheduled or not)
    queued: int  # requests still waiting after scheduling
    preempted: int  # sequences preempted while scheduling
    tokens: int  # new tokens in all: q_tokens summed (counted once here, read on every iteration)
    decodes: int  # decoding sequences (one new token each)
    emitting: int  # sequences that emit a token: emits summed

    @property
    def prefill_tokens(self) -> int:
        return self.tokens - self.decodes  # a decode runs one token

    @property
    def decode_tokens(self) -> int:
        return self.decodes


def _preempt(eng: EngineState, book: RequestBook, victims: np.ndarray) -> None:
    """Free the victims' KV and requeue them at the front, to recompute prompt + generated tokens."""
    eng.kv_used_tokens -= int(book.kv[victims].sum())
    book.kv[victims] = 0
    book.ctx[victims] = 0
    book.prefilled[victims] = 0
    book.target[victims] = book.prompt[victims] + book.generated[victims]
    book.preemptions[victims] += 1
    eng.preemptions += victims.size
    eng.waiting.extendleft(victims[::-1].tolist())


def schedule(eng: EngineState, book: RequestBook, now_s: float = np.nan, contexts: bool = True) -> Batch:
    """Pick this iteration's batch and reserve its KV (mutates ``eng`` and ``book``); ``now_s``: the
    iteration's start, recorded as the first admission of the requests it admits. ``contexts``
    False holds every prefill back (no chunk of a running prefill, no admission): the decodes run
    alone (an attention-DP group waiting for its ranks' contexts to line up, ``serving.lockstep``)."""
    ids = eng.running
    dec = book.prefilled[ids] >= book.target[ids]
    all_dec = bool(np.logical_and.reduce(dec))  # (ufunc reductions on the paths run every iteration)
    # new KV slots each decode needs for the tokens it emits (1 per step, more under speculation)
    ctx, kv = book.ctx[ids], book.kv[ids]
    after = ctx + (1 if book.unit_steps else book.step[ids])
    grow = slots_to_grow(eng, after, kv)
    if not all_dec:
        grow[~dec] = 0
    free = eng.kv_capacity_tokens - eng.kv_used_tokens
    # unmixed: prompt work to do (a prefill part-way, or a queued request the whole budget admits)
    # takes the iteration alone; the decodes neither run nor grow
    prefill_only, queued = (_prompt_work(eng, book, ids.size, all_dec, free) if not eng.mixed_batches and contexts
                            else (False, None))
    if prefill_only:
        grow[:] = 0
    preempted = 0
    need = int(np.add.reduce(grow))
    if need > free:  # preempt the newest until the decodes' next KV slots fit
        kv_freed = np.cumsum(kv[::-1])
        need_left = need - np.cumsum(grow[::-1])
        j = int(np.argmax(need_left <= free + kv_freed)) + 1
        victims = ids[-j:]
        ids, dec, grow, ctx, kv = ids[:-j], dec[:-j], grow[:-j], ctx[:-j], kv[:-j]
        all_dec = bool(dec.all())
        _preempt(eng, book, victims)
        preempted = victims.size
        free = eng.kv_capacity_tokens - eng.kv_used_tokens
    budget = eng.max_batch_tokens
    part = np.zeros(0, np.int64) if all_dec else np.flatnonzero(~dec)
    # every running sequence decodes (the common case)
    decode_only = all_dec and ids.size <= budget and not prefill_only
    if decode_only:
        q = np.ones(ids.size, np.int64)
        budget -= ids.size
        book.kv[ids] = kv + grow
        grown_total = int(grow.sum()) if preempted else need
    else:
        q = np.zeros(ids.size, np.int64)
        dec_pos = np.zeros(0, np.int64) if prefill_only else np.flatnonzero(dec)[:budget]
        q[dec_pos] = 1
        budget -= dec_pos.size
        if part.size and budget > 0 and contexts:
            rem = book.target[ids[part]] - book.prefilled[ids[part]]
            before = rem.cumsum() - rem
            q[part] = np.minimum(np.maximum(budget - before, 0), rem)
            budget -= int(q[part].sum())
        grown = grow[dec_pos]
        book.kv[ids[dec_pos]] += grown
        grown_total = int(grown.sum())
    eng.kv_used_tokens += grown_total
    free -= grown_total
    # no admissions while out of KV, nor while prefills are held back
    slots = 0 if preempted or not contexts else eng.max_batch_seqs - ids.size
    adm, take, reserve = _admit(eng, book, slots, budget, free, prefilling=bool(part.size), found=queued)
    if adm.size:
        decode_only = False
        book.admitted_s[adm] = np.fmin(book.admitted_s[adm], now_s)  # a preempted request keeps its first
        ready = book.prefilled[adm] >= book.target[adm]  # KV arrived whole (disaggregated decode pool)
        q_adm = _admission_chunks(take, budget, eng.chunked_prefill)
        book.kv[adm] = reserve
        eng.kv_used_tokens += int(reserve.sum())
        ids = np.concatenate([ids, adm])
        q = np.concatenate([q, q_adm])
        dec = np.concatenate([dec, ready])
    eng.running = ids
    if decode_only:  # each sequence runs one token and emits it
        n = ids.size
        return Batch(ids, q, book.ctx[ids] + q, dec, dec, eng.kv_used_tokens, n, len(eng.waiting), preempted,
                     n, n, n)
    sched = q > 0
    if np.logical_and.reduce(sched):  # every running sequence runs (no masking needed)
        sid, qs, is_dec = ids, q, dec
    else:
        sid, qs, is_dec = ids[sched], q[sched], dec[sched]
    emits = is_dec | (book.prefilled[sid] + qs >= book.target[sid])  # decodes, and prefills that complete
    return Batch(sid, qs, book.ctx[sid] + qs, is_dec, emits,
                 eng.kv_used_tokens, int(ids.size), len(eng.waiting), preempted,
                 int(np.add.reduce(qs)), int(np.add.reduce(is_dec)), int(np.add.reduce(emits)))


def slots_to_grow(eng: EngineState, after: np.ndarray, kv: np.ndarray) -> np.ndarray:
    """KV slots each sequence of ``eng`` holding ``kv`` slots must add to hold ``after`` tokens (its
    context after this iteration's tokens): 0 where it holds them already (full admission reserved
    its output, or a local layer's window is full, ``eng.kv_slots``)."""
    return np.maximum((after if eng.kv_slots is None else eng.kv_slots(after)) - kv, 0)


def _prompt_work(eng: EngineState, book: RequestBook, running: int, all_decode: bool,
                 free_kv: int) -> tuple[bool, tuple | None]:
    """Whether an unmixed iteration has prompt work, and the queued requests it admits when that is
    known here. Prompt work: a running sequence part-way through its prefill (``all_decode`` False:
    ``(True, None)``), or a queued request with a prompt to prefill that an iteration of prefill
    alone admits (the whole token budget, ``free_kv`` KV slots, the ``running`` sequences' slots
    taken): ``(True, admissible(...))``, the very call ``schedule``'s admission then makes. A request
    whose KV arrived whole (a disaggregated decode pool's) only decodes, so it is no prompt work."""
    if not all_decode:
        return True, None
    found = admissible(eng, book, eng.max_batch_seqs - running, eng.max_batch_tokens, free_kv, False)
    adm = found[0]
    return (True, found) if np.any(book.prefilled[adm] < book.target[adm]) else (False, None)


def _admit(eng: EngineState, book: RequestBook, slots: int, budget: int, free_kv: int,
           prefilling: bool, found: tuple | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pop the queued requests admitted this iteration (FCFS, stops at the first misfit); returns
    (their ids, tokens each needs at most now, KV slots each reserves). ``found``: ``admissible``'s
    answer for these same arguments, already computed (an unmixed prefill iteration's)."""
    adm, take, reserve = admissible(eng, book, slots, budget, free_kv, prefilling) if found is None else found
    for _ in range(adm.size):
        eng.waiting.popleft()
    return adm, take, reserve


def admissible(eng: EngineState, book: RequestBook, slots: int, budget: int, free_kv: int,
               prefilling: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The queued requests an iteration admits, left in the queue: (their ids, tokens each needs at
    most now, KV slots each reserves). ``slots``: sequences the batch can still take, ``budget``
    tokens, ``free_kv`` KV slots; ``prefilling``: running sequences prefill in it."""
    none = np.zeros(0, np.int64)
    if slots <= 0 or budget <= 0 or not eng.waiting:
        return none, none, none
    if len(eng.waiting) == 1 or slots == 1:  # one candidate (the usual arrival): the same rules on ints
        c = eng.waiting[0]
        fits = admission_of(eng, book, c, budget, free_kv, prefilling)
        return (none, none, none) if fits is None else tuple(np.array([x], np.int64) for x in (c, *fits))
    cand = np.fromiter(islice(eng.waiting, min(slots, len(eng.waiting))), np.int64)
    take = _tokens_needed(book, cand)
    reserve = _reservation(eng, book, cand)
    kv_ok = reserve.cumsum() <= free_kv
    before = take.cumsum() - take
    if eng.chunked_prefill:
        tok_ok = before < budget
    else:
        tok_ok = before + take <= budget
        if not prefilling and budget == eng.max_batch_tokens:
            tok_ok[0] = True  # a recompute longer than the budget runs alone rather than never
    ok = kv_ok & tok_ok
    n = int(np.argmin(ok)) if not ok.all() else ok.size
    return cand[:n], take[:n], reserve[:n]


def admission_of(eng: EngineState, book: RequestBook, c: int, budget: int, free_kv: int,
                 prefilling: bool) -> tuple[int, int] | None:
    """Whether queued request ``c``, first in line, is admitted into an iteration with ``budget > 0``
    tokens and ``free_kv`` KV slots left (``prefilling``: running sequences prefill in it): (tokens
    it needs at most now, KV slots it reserves), or None. The rules of :func:`_admit` on ints."""
    target, prefilled = int(book.target[c]), int(book.prefilled[c])
    left = target - prefilled
    take = left if left > 0 else 1
    if eng.kv_admission == "full":
        reserve = target + int(book.output[c]) - int(book.generated[c])
    else:
        reserve = target + (int(book.step[c]) if prefilled >= target else 0)
    if eng.kv_slots is not None:
        reserve = int(eng.kv_slots(reserve))
    if eng.chunked_prefill:
        tok_ok = True  # nothing is admitted before it: 0 < budget
    else:
        tok_ok = take <= budget or (not prefilling and budget == eng.max_batch_tokens)
    if not (reserve <= free_kv and tok_ok):
        return None
    return take, reserve


def _tokens_needed(book: RequestBook, ids: np.ndarray) -> np.ndarray:
    """Tokens an admitted request runs in its first iteration at most: the prefill left (a cached
    prefix is not recomputed), or 1 when its KV arrived whole and it decodes at once."""
    left = book.target[ids] - book.prefilled[ids]
    return np.where(left > 0, left, 1)


def _reservation(eng: EngineState, book: RequestBook, ids: np.ndarray) -> np.ndarray:
    """KV slots admission reserves for ``ids``: the prefill, plus (``full``) the output still to come,
    or (``prompt``) the first decode step's slots of a request whose KV arrived whole."""
    if eng.kv_admission == "full":
        tokens = book.target[ids] + book.output[ids] - book.generated[ids]
    else:
        ready = book.prefilled[ids] >= book.target[ids]
        tokens = book.target[ids] + np.where(ready, book.step[ids], 0)
    return tokens if eng.kv_slots is None else eng.kv_slots(tokens)


def _admission_chunks(take: np.ndarray, budget: int, chunked: bool) -> np.ndarray:
    """Prefill tokens each admitted request runs now: whole prompts, the last one chunked if allowed."""
    if not chunked:
        return take.copy()
    before = take.cumsum() - take
    return np.minimum(np.maximum(budget - before, 0), take)


def finishes(book: RequestBook, batch: Batch) -> bool:
    """True when committing ``batch`` finishes a request (its last output token comes out)."""
    out = batch.ids[batch.emits]
    step = 1 if book.unit_steps else np.where(batch.is_decode[batch.emits], book.step[out], 1)
    return bool(np.logical_or.reduce(book.generated[out] + step >= book.output[out]))


def commit(eng: EngineState, book: RequestBook, batch: Batch, now_s: float) -> np.ndarray:
    """Apply ``batch`` at its end time ``now_s``; returns the ids of requests that finished."""
    eng.window_left = None
    ids, q = batch.ids, batch.q_tokens
    dec = batch.is_decode
    out = ids[batch.emits]
    if book.unit_steps:  # a decode runs (q = 1) and emits one token
        book.ctx[ids] += q
        pre = ~dec
        if np.logical_or.reduce(pre):
            book.prefilled[ids[pre]] += q[pre]
        book.generated[out] += 1
    else:
        book.ctx[ids] += np.where(dec, book.step[ids], q)  # a decode keeps the KV of the tokens it emits
        pre = ~dec
        book.prefilled[ids[pre]] += q[pre]
        book.generated[out] += np.where(dec[batch.emits], book.step[out], 1)
    first = out[np.isnan(book.first_token_s[out])]
    book.first_token_s[first] = now_s
    return finish(eng, book, out, now_s)


def finish(eng: EngineState, book: RequestBook, emitted: np.ndarray, now_s: float,
           left: np.ndarray | None = None) -> np.ndarray:
    """Finish, at ``now_s``, the requests of ``emitted`` whose every output token is out: their KV
    is freed and they leave the running set. Returns their ids. ``left``: the output tokens each
    of ``emitted`` still owes, where the caller has them and ``emitted`` is the running set (a
    decode window's batch)."""
    over = book.generated[emitted] >= book.output[emitted] if left is None else left <= 0
    done = emitted[over]
    if done.size:
        book.finish_s[done] = now_s
        eng.kv_used_tokens -= int(np.add.reduce(book.kv[done]))
        book.kv[done] = 0
        run = eng.running
        eng.running = run[book.generated[run] < book.output[run]] if left is None else emitted[~over]
        if book.on_finish is not None:
            book.on_finish(done, now_s)
    return done
