"""Requests a serving run refuses at arrival, and why. Pure numpy.

An engine refuses a request it can never serve instead of queueing it forever, checking in this
order (the first reason that applies is the one counted):

1. ``max_seq_len``: prompt + output tokens over ``model.max_seq_len`` (vLLM's, SGLang's and
   TensorRT-LLM's max_model_len / max_seq_len check: the request fails with an error);
2. ``batch_tokens``: without chunked prefill, a prompt (what is left to prefill after a cached
   prefix) over ``workload.max_batch_tokens``: no iteration can hold it whole;
3. ``kv_cache``: prompt + output over the KV cache one engine holds.

Lengths whose upper bound the scenario states are checked up front (``schemas.request_limits``);
these are the requests of unbounded lengths (a lognormal without ``max``, a trace).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

#: ``RequestBook.reject_reason`` codes: 0 served (or not yet refused); lower codes win (checked first).
NOT_REJECTED, OVER_MAX_SEQ_LEN, OVER_BATCH_TOKENS, OVER_KV_CACHE = 0, 1, 2, 3
#: The summary key counting each reason's requests.
REASON_KEYS = {OVER_MAX_SEQ_LEN: "rejected_max_seq_len_requests",
               OVER_BATCH_TOKENS: "rejected_batch_tokens_requests",
               OVER_KV_CACHE: "rejected_kv_cache_requests"}


@dataclass(frozen=True)
class RequestLimits:
    """What a request must fit, in tokens: ``max_seq_len`` (prompt + output), ``prefill_budget_tokens``
    (a whole prompt's prefill, without chunked prefill; None with it) and ``kv_engine_tokens`` (prompt +
    output in one engine's KV cache, in KV slots where local layers keep only their window)."""

    max_seq_len: int
    prefill_budget_tokens: int | None
    kv_engine_tokens: int


def reject_reasons(prompt_tokens: np.ndarray, output_tokens: np.ndarray, prefill_tokens: np.ndarray,
                   limits: RequestLimits, slots: Callable | None = None) -> np.ndarray:
    """Each request's refusal code (``(n,)`` int8, :data:`NOT_REJECTED` for one that can be served).

    ``prefill_tokens``: what each must prefill (the prompt less a cached prefix); ``slots``: KV slots a
    sequence of that many tokens holds (None: one a token)."""
    total = np.asarray(prompt_tokens, np.int64) + np.asarray(output_tokens, np.int64)
    reason = np.zeros(total.size, np.int8)
    # assigned from the last checked to the first, so the first that applies is the one kept
    reason[(total if slots is None else slots(total)) > limits.kv_engine_tokens] = OVER_KV_CACHE
    if limits.prefill_budget_tokens is not None:
        reason[np.asarray(prefill_tokens) > limits.prefill_budget_tokens] = OVER_BATCH_TOKENS
    reason[total > limits.max_seq_len] = OVER_MAX_SEQ_LEN
    return reason


def mark_rejected(book, reason: np.ndarray) -> None:
    """Record ``reason`` (``(n,)`` codes) in ``book`` (a ``RequestBook``): ``rejected`` and, where a
    request is refused for two reasons by two checks, the one checked first."""
    new = reason != NOT_REJECTED
    old = book.reject_reason
    book.reject_reason = np.where(new & ((old == NOT_REJECTED) | (reason < old)), reason, old).astype(np.int8)
    book.rejected |= new


def rejection_keys(reason: np.ndarray, limits: RequestLimits) -> dict:
    """The summary's count per reason (:data:`REASON_KEYS`) and ``rejected_note``, one line saying how
    many were refused and why ("" when none was)."""
    counts = {key: int(np.count_nonzero(reason == code)) for code, key in REASON_KEYS.items()}
    return {**counts, "rejected_note": rejection_note(counts, limits)}


def rejection_note(counts: dict[str, int], limits: RequestLimits) -> str:
    """"12 requests rejected: prompt + output over model.max_seq_len (131,328 tokens)"; with several
    reasons each one's count ("15 requests rejected: 12 prompt + output over ...; 3 ...")."""
    why = {"rejected_max_seq_len_requests": f"prompt + output over model.max_seq_len ({limits.max_seq_len:,} tokens)",
           "rejected_batch_tokens_requests": (
               f"prompt over workload.max_batch_tokens ({limits.prefill_budget_tokens or 0:,} tokens) with "
               "workload.chunked_prefill false"),
           "rejected_kv_cache_requests": (
               f"prompt + output over the KV cache of one engine ({limits.kv_engine_tokens:,} tokens)")}
    parts = [(n, why[key]) for key, n in counts.items() if n]
    total = sum(n for n, _ in parts)
    if not total:
        return ""
    head = f"{total:,} request{'s' if total != 1 else ''} rejected at arrival, never served: "
    return head + (parts[0][1] if len(parts) == 1 else "; ".join(f"{n:,} {text}" for n, text in parts))


def rejected_line(summary: dict) -> str:
    """The line printed under a serving run's table when it refused requests ("" when none): its
    ``rejected_note``, or for a result saved before the reasons were kept, the count alone."""
    if summary.get("rejected_note"):
        return str(summary["rejected_note"])
    n = summary.get("rejected_requests") or 0
    return f"{n:,} request{'s' if n != 1 else ''} rejected at arrival, never served" if n else ""
