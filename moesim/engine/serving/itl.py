"""Inter-token latency (ITL): the gap each generated token waits after the token before it.

TPOT (``tpot_*``) is per request: its decode time over its output tokens less one, so a request whose
decode steps were slowed by other requests' prefill chunks reads the mean of its gaps, and its p99 is the
p99 of those means. ITL is per token, as vLLM's and SGLang's serving benchmarks report it: every gap
between two tokens of a sequence counts, so the long steps that carry a prefill chunk (or a pipeline
round that waits for one) show in its tail even where every request's mean is short.

From the iterations table: the sequences an iteration decodes each get a token at its end, one gap after
the end of their engine slot's previous iteration (``replica``, ``slot``: a pipeline slot's iterations
follow one another; a decoding sequence keeps its slot busy, so that iteration ran its previous token,
or its prefill's first token). Each gap counts once per token it delivered (``decode_tokens``).
Percentiles are of that token-weighted distribution (the inverted CDF, no interpolation). Pure numpy.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

#: The statistics of ``itl_<stat>_s`` (the same as TTFT's and TPOT's).
ITL_STATS = ("mean", "p50", "p90", "p99")


def token_gaps(it: Mapping[str, Sequence]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(end s, gap s, tokens) of the tokens each decoding iteration delivered, as one or two entries per
    iteration (arrays of one length): the sequences that decoded in the slot's previous decoding iteration
    waited since its end, through any prefill-only iterations between (``workload.mixed_batches: false``);
    the ones whose prefill ran in those iterations (at most their ``batch_seqs``) since the last one's end.
    Without prefill-only iterations between, every token's gap is the time since the previous iteration."""
    end = np.asarray(it["end_s"], dtype=float)
    if end.size < 2:
        return np.zeros(0), np.zeros(0), np.zeros(0)
    slot = np.asarray(it["replica"], dtype=np.int64) * (int(np.max(it["slot"])) + 1) + np.asarray(it["slot"])
    order = np.lexsort((end, slot))  # slot by slot, each in time order
    end, slot = end[order], slot[order]
    tokens = np.asarray(it["decode_tokens"], dtype=float)[order]
    seqs = np.asarray(it["batch_seqs"], dtype=float)[order]
    n = end.size
    follows = np.r_[False, slot[1:] == slot[:-1]] & (tokens > 0)  # a decode with a previous iteration in its slot
    gap = np.r_[0.0, np.diff(end)]
    # the slot's last decoding iteration before each one (-1: none), and the prefill-only sequences since it
    decoding = np.where(tokens > 0, np.arange(n), -1)
    last = np.r_[-1, np.maximum.accumulate(decoding)[:-1]]
    last = np.where((last >= 0) & (slot[np.maximum(last, 0)] == slot), last, -1)
    prefilled = np.cumsum(np.where(tokens > 0, 0.0, seqs))
    since = np.r_[0.0, prefilled[:-1]] - np.where(last >= 0, prefilled[np.maximum(last, 0)], 0.0)
    new = np.where(last >= 0, np.minimum(tokens, since), tokens)  # no decode before: every token is a first
    waited = end - np.where(last >= 0, end[np.maximum(last, 0)], 0.0)
    ats = np.r_[end[follows], end[follows]]
    gaps = np.r_[gap[follows], waited[follows]]
    counts = np.r_[new[follows], (tokens - new)[follows]]
    keep = counts > 0
    return ats[keep], gaps[keep], counts[keep]


def itl_stats(it: Mapping[str, Sequence], start_s: float = -np.inf, end_s: float = np.inf) -> dict[str, float]:
    """``itl_{mean,p50,p90,p99}_s`` over the tokens delivered by iterations ending in ``[start_s, end_s)``
    (NaN when none)."""
    at, gap, tokens = token_gaps(it)
    keep = (at >= start_s) & (at < end_s) & np.isfinite(gap)
    gap, tokens = gap[keep], tokens[keep]
    if not gap.size or tokens.sum() <= 0:
        return {f"itl_{s}_s": float("nan") for s in ITL_STATS}
    order = np.argsort(gap, kind="stable")
    gap, cum = gap[order], np.cumsum(tokens[order])
    out = {"itl_mean_s": float((gap * tokens[order]).sum() / cum[-1])}
    for stat in ITL_STATS[1:]:
        q = float(stat[1:]) / 100.0
        out[f"itl_{stat}_s"] = float(gap[min(int(np.searchsorted(cum, q * cum[-1], side="left")), gap.size - 1)])
    return out
