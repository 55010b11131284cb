"""The steady state of a serving run: its window, its served rate, whether the plan kept up. Pure numpy.

Input is the ``requests`` table of a serving SimResult (``arrival_s``, ``finish_s``, ``rejected``,
``ttft_s``, ``tpot_s``, ``e2e_s``, ``output_tokens``; optional ``first_token_s``, ``prompt_tokens``;
NaN where a request was not served).

Window: requests arriving in ``[start_s, end_s)``. Warm-up: the first ``WARMUP_FRACTION`` of the
arrivals, or longer, until the first arrival + the run's e2e p90 (the requests in the system reach
their steady number only after about one request lifetime; a window opened earlier sees the queue
fill up and reads it as overload), but never past the median arrival. Drain: the last
``DRAIN_FRACTION`` of the arrivals (their latencies are measured while the load falls away).

Overload: ``Q(t)``, the requests arrived (not rejected) but not finished by ``t``, sampled over the
window and fitted with a line. The plan did not keep up when the fitted growth over the window
exceeds ``OVERLOAD_TOL`` of the window's arrivals plus the noise of a stable queue (3 sigma of the
difference of two Poisson-like counts around its mean, ``3 sqrt(2 mean Q)``). A run of one replica
that stands for ``replicas`` identical ones (``moesim plan`` plays one and scales it) is judged as
their sum would be: the sum's queue grows ``replicas`` times as fast while its noise grows only
``sqrt(replicas)`` times, so per replica the noise term is ``3 sqrt(2 mean Q / replicas)`` (without
it a one-replica probe serving 91% of its offered rate held on the plan of eight replicas whose whole
run failed at 83% of that rate). The capacity search
is stricter (``SERVED_TOL``, :func:`moesim.capacity.verdict`): a probe also fails when less than 90%
of its offered rate finishes in the window and in the window's second half, so a short probe serving
67 of 80 req/s, whose queue growth hides in the noise term, fails, while a short probe still filling
its batches (finishes lag arrivals early in the window, then catch up) holds. The summary's flag does not apply that test: while the batch and
the latency still grow (for a few request lifetimes) finishes lag arrivals by more than 10% in
runs that do keep up. It applies a looser one (``SteadyWindow.falls_behind``): the finishes short
of the arrivals by more than the noise of two counts, and the second half short too. The queue test
alone missed a long-prompt run serving 17 % of what it was offered (Qwen3-235B on 4 H100, 32K
median prompts at 0.5 req/s, 100 requests): its backlog was also its noise term.

Tokens per second in the window: the tokens generated in it, each request's first token at its
``first_token_s`` and the rest as the run's iterations decoded them (each iteration's decode tokens by
the share of its time inside the window); prompts count when their first token comes out. Without the
iterations, the rest of a request's tokens spread evenly up to its ``finish_s``, so a request that
straddles an edge counts in part: near enough where TPOT is near constant, but a lock-step group's
(attention DP) steps take ~1 s while prefills keep arriving and ~20 ms in the drain, and spreading
counted the drain's tokens into the window (4-5x the tokens an overloaded run made in it). Without
``first_token_s`` (tables built by hand): the tokens of the requests finishing in it.

The serving summary's headline figures are over :func:`headline_window`: this window for open
arrivals (Poisson, trace) and closed loops, none (the whole run) for an offline batch.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

WARMUP_FRACTION = 0.1
DRAIN_FRACTION = 0.1
#: Queue growth over the window, as a fraction of the window's arrivals, that counts as overload.
OVERLOAD_TOL = 0.05
#: A capacity probe whose served rate is below its offered rate by more than this share fails.
SERVED_TOL = 0.1
#: Points at which the queue is sampled for its trend.
_QUEUE_SAMPLES = 64
LATENCIES = ("ttft", "tpot", "e2e")
STATS = ("mean", "p50", "p90", "p99")


@dataclass(frozen=True)
class SteadyWindow:
    """The steady-state window of one run and what was served in it (times in s, rates in req/s)."""

    start_s: float
    end_s: float
    n_requests: int  # requests of the run
    n_window: int  # requests arriving in the window (the ones the SLO is judged on)
    offered_req_s: float  # arrivals in the window / its length
    served_req_s: float  # finishes in the window / its length
    served_late_req_s: float  # finishes in the window's second half / its length (a fill-up has caught up by then)
    queue_growth: float  # fitted growth of Q over the window (requests)
    growth_limit: float  # growth above which the run is overloaded
    output_tokens_per_s: float  # output tokens generated in the window / its length
    input_tokens_per_s: float  # prompt tokens whose first token came out in the window / its length
    rejected_fraction: float  # over the whole run
    warmup_by_latency: bool  # the warm-up was set by the e2e p90, not the first 10% of arrivals
    warmup_capped: bool  # ... and stopped at the median arrival: the run is short for its latency
    e2e_p90_s: float  # of the whole run (sets the warm-up)

    @property
    def duration_s(self) -> float:
        return self.end_s - self.start_s

    @property
    def overloaded(self) -> bool:
        return self.queue_growth > self.growth_limit

    @property
    def falls_behind(self) -> bool:
        """Fewer requests finished in the window than arrived in it, by more than the noise of two such
        counts (:func:`growth_limit` of a queue as long as the window's arrivals), and the window's
        second half still served under ``1 - SERVED_TOL`` of the offered rate (a run filling its
        batches catches up there). Catches the overload whose queue test drowns in its own backlog:
        the noise term grows with the mean queue, which an overloaded run keeps growing."""
        finished = self.served_req_s * self.duration_s
        return bool(finished < self.n_window - growth_limit(self.n_window, self.n_window)
                    and self.served_late_req_s < (1.0 - SERVED_TOL) * self.offered_req_s)

    def describe(self) -> str:
        """One line: which requests the window holds and why it starts where it does."""
        why = "one e2e p90 after the first arrival" if self.warmup_by_latency else f"the first {WARMUP_FRACTION:.0%}"
        if self.warmup_capped:
            why = "the first half (the e2e p90 is longer)"
        return (f"requests arriving {self.start_s:.4g}-{self.end_s:.4g} s ({self.n_window} of {self.n_requests}; "
                f"warm-up {why}, drain the last {DRAIN_FRACTION:.0%})")


def _col(req: Mapping[str, Sequence], name: str, dtype=float) -> np.ndarray:
    return np.asarray(req[name], dtype=dtype)


def steady_window(req: Mapping[str, Sequence], replicas: int = 1,
                  it: Mapping[str, Sequence] | None = None) -> SteadyWindow:
    """The steady-state window of a run's ``requests`` table (see the module docstring); ``replicas``:
    identical replicas the run stands for, which tighten its overload test's noise term; ``it``: the run's
    ``iterations`` table, whose decode tokens the window's token rates count (:func:`window_tokens`)."""
    if not (isinstance(replicas, int) and replicas >= 1):
        raise ValueError(f"steady_window: replicas = {replicas!r}, must be an integer >= 1")
    arrival = _col(req, "arrival_s")
    finish = _col(req, "finish_s")
    rejected = _col(req, "rejected", bool)
    n = arrival.size
    if n == 0:
        raise ValueError("steady_window: no requests")
    a = np.sort(arrival)
    e2e = _col(req, "e2e_s")
    e2e_p90 = float(np.percentile(e2e[np.isfinite(e2e)], 90)) if np.isfinite(e2e).any() else 0.0
    by_count = a[int(WARMUP_FRACTION * n)]
    by_latency = a[0] + e2e_p90
    start = min(max(by_count, by_latency), a[n // 2])
    # an arrival a rounding error before the edge opens the window (a closed loop's next arrival is the last one's
    # finish, a[0] + e2e: its float sum lands a hair either side of it, and k periods counted k - 1 arrivals)
    near = int(np.searchsorted(a, start - 1e-9 * max(abs(start), 1.0)))
    start = float(a[near]) if near < n and a[near] < start else start
    capped = bool(by_latency > a[n // 2])
    end = a[max(n - int(np.ceil(DRAIN_FRACTION * n)), 0)]
    if end <= start:  # (nearly) all at once: the whole run is the window, nothing is steady
        start, end = a[0], max(a[-1], a[0])
    length = end - start
    in_window = (arrival >= start) & (arrival < end)
    done = np.isfinite(finish)
    fin_window = done & (finish >= start) & (finish < end)
    n_window = int(in_window.sum())
    mid = start + length / 2
    fin_late = done & (finish >= mid) & (finish < end)
    ts = np.linspace(start, end, _QUEUE_SAMPLES)
    queue = (np.searchsorted(np.sort(arrival[~rejected]), ts, side="right")
             - np.searchsorted(np.sort(finish[done]), ts, side="right")).astype(float)
    slope = float(np.polyfit(ts, queue, 1)[0]) if length > 0 else 0.0
    out_tok, in_tok = window_tokens(req, float(start), float(end), it)
    per_s = (lambda x: x / length) if length > 0 else (lambda x: float("nan"))
    return SteadyWindow(
        start_s=float(start), end_s=float(end), n_requests=n, n_window=n_window,
        offered_req_s=per_s(n_window), served_req_s=per_s(int(fin_window.sum())),
        served_late_req_s=2.0 * per_s(int(fin_late.sum())),
        queue_growth=slope * length, growth_limit=growth_limit(n_window, float(queue.mean()), replicas),
        output_tokens_per_s=per_s(out_tok), input_tokens_per_s=per_s(in_tok), rejected_fraction=float(rejected.mean()),
        warmup_by_latency=bool(by_latency > by_count), warmup_capped=capped, e2e_p90_s=e2e_p90)


def growth_limit(n_window: int, mean_queue: float, replicas: int = 1) -> float:
    """Queue growth (requests) over a window of ``n_window`` arrivals above which a run is
    overloaded: ``OVERLOAD_TOL`` of the arrivals plus 3 sigma of a stable queue of ``mean_queue``
    requests, the sigma of the sum of ``replicas`` such runs shared out per replica."""
    return float(OVERLOAD_TOL * n_window + 3.0 * np.sqrt((2.0 * mean_queue + 1.0) / replicas))


def window_tokens(req: Mapping[str, Sequence], start_s: float, end_s: float,
                  it: Mapping[str, Sequence] | None = None) -> tuple[float, float]:
    """(output, input) tokens generated in ``[start_s, end_s)``: see the module docstring. ``it``: the run's
    ``iterations`` table (``start_s``, ``end_s``, ``decode_tokens``), whose decode tokens count instead of the
    requests' spread evenly (each iteration's by the share of it inside the window)."""
    out = _col(req, "output_tokens")
    finish = _col(req, "finish_s")
    if it is not None and "first_token_s" in req and len(it.get("decode_tokens", ())) > 0:
        first = _col(req, "first_token_s")
        first_in = np.isfinite(first) & (first >= start_s) & (first < end_s)
        t0, t1 = _col(it, "start_s"), _col(it, "end_s")
        inside = np.clip(np.minimum(t1, end_s) - np.maximum(t0, start_s), 0.0, None)
        share = np.where(t1 > t0, inside / np.where(t1 > t0, t1 - t0, 1.0), (t1 >= start_s) & (t1 < end_s))
        prompt = _col(req, "prompt_tokens")[first_in] if "prompt_tokens" in req else np.zeros(0)
        return float(first_in.sum() + (_col(it, "decode_tokens") * share).sum()), float(prompt.sum())
    if "first_token_s" not in req:
        fin = np.isfinite(finish) & (finish >= start_s) & (finish < end_s)
        return float(out[fin].sum()), float(_col(req, "prompt_tokens")[fin].sum()) if "prompt_tokens" in req else 0.0
    first = _col(req, "first_token_s")
    ok = np.isfinite(first) & np.isfinite(finish)
    first, finish, out = first[ok], finish[ok], out[ok]
    first_in = (first >= start_s) & (first < end_s)
    span = finish - first
    overlap = np.clip(np.minimum(finish, end_s) - np.maximum(first, start_s), 0.0, None)
    # the tokens after the first, spread evenly over [first, finish] (all at finish when that is 0 s)
    share = np.where(span > 0, overlap / np.where(span > 0, span, 1.0), (finish >= start_s) & (finish < end_s))
    gen = float(first_in.sum() + ((out - 1) * share).sum())
    prompt = _col(req, "prompt_tokens")[ok] if "prompt_tokens" in req else np.zeros(out.size)
    return gen, float(prompt[first_in].sum())


def window_latencies(req: Mapping[str, Sequence], window: SteadyWindow) -> dict[str, float]:
    """``{ttft,tpot,e2e}_{mean,p50,p90,p99}_s`` over the served requests arriving in ``window``
    (NaN where none has a value: TPOT needs more than one output token)."""
    arrival = _col(req, "arrival_s")
    return latency_stats(req, (arrival >= window.start_s) & (arrival < window.end_s))


def latency_stats(req: Mapping[str, Sequence], keep: np.ndarray | None = None,
                  names: Sequence[str] = LATENCIES, stats: Sequence[str] = STATS) -> dict[str, float]:
    """``{ttft,tpot,e2e}_{mean,p50,p90,p99}_s`` (or ``names`` x ``stats``) over the requests ``keep``
    selects (default all) that have a value (NaN where none has): the serving summary's latency keys."""
    out = {}
    for name in names:
        x = _col(req, f"{name}_s")
        x = x[keep] if keep is not None else x
        x = x[np.isfinite(x)]
        for stat in stats:
            if not x.size:
                v = float("nan")
            elif stat == "mean":
                v = float(x.mean())
            else:
                v = float(np.percentile(x, float(stat[1:])))
            out[f"{name}_{stat}_s"] = v
    return out


def completion_rate(req: Mapping[str, Sequence], central: float = 0.8) -> float:
    """Requests finished per second over the ``central`` share of the finishes (ramp-up and the
    last long requests left out): a run's sustained throughput, e.g. with all requests at t=0."""
    finish = np.sort(_col(req, "finish_s"))
    finish = finish[np.isfinite(finish)]
    if finish.size < 2:
        return float("nan")
    lo = int((1 - central) / 2 * finish.size)
    hi = max(finish.size - 1 - lo, lo + 1)
    span = finish[hi] - finish[lo]
    return float((hi - lo) / span) if span > 0 else float("inf")


def saturated_tokens_per_s(req: Mapping[str, Sequence], it: Mapping[str, Sequence]) -> float:
    """Output tokens generated per second while a run with every request at t=0 still held requests
    waiting: from the 10th percentile of the finishes to the last first token (before it the first
    batch's short requests leave and are replaced, so batches stay full; after it the drain runs
    ever smaller batches). ``it``: the run's ``iterations`` table (``end_s``, ``decode_tokens``).
    0 when the run is too short to tell (fewer than 10 finishes).

    At least the whole run's mean rate (every output token over the last finish), which ramp-up and
    drain only lower: requests of one length leave a batch together, and the window between the first
    finishes and the last first token is then the batches' refill, prefill alone (a fixed 128/128
    workload on eight H100s read 7.1k of its 80.6k tokens/s there)."""
    finish = np.sort(_col(req, "finish_s"))
    finish = finish[np.isfinite(finish)]
    first = _col(req, "first_token_s")
    if finish.size < 10 or not np.isfinite(first).any():
        return 0.0
    decoded = _col(it, "decode_tokens")
    whole_run = (float(decoded.sum()) + float(np.isfinite(first).sum())) / float(finish[-1]) if finish[-1] > 0 else 0.0
    a, b = finish[int(0.1 * finish.size)], float(np.nanmax(first))
    if b <= a:  # every request admitted before the 10th percentile finished: use the finishes
        b = finish[int(0.9 * finish.size) - 1]
    end = _col(it, "end_s")
    inside = (end > a) & (end <= b)
    tokens = float(decoded[inside].sum()) + float(((first > a) & (first <= b)).sum())
    return max(tokens / (b - a) if b > a else 0.0, whole_run)


def headline_window(req: Mapping[str, Sequence], process: str,
                    it: Mapping[str, Sequence] | None = None) -> SteadyWindow | None:
    """The window the serving summary's headline figures are over, or None for the whole run: an
    offline ``batch`` (every request at t=0: no steady state to find, throughput is the makespan's,
    as offline benchmarks report it), or a run whose window holds no time or no request."""
    if process == "batch" or len(req["arrival_s"]) == 0:
        return None
    w = steady_window(req, it=it)
    return w if w.duration_s > 0 and w.n_window > 0 else None


def overloaded(window: SteadyWindow | None, process: str) -> bool:
    """The plan did not keep up with open arrivals (Poisson, trace) over the steady window. An
    offline batch or a closed loop is never overloaded: their arrivals wait for the plan by design."""
    return window is not None and process not in ("batch", "closed") and (window.overloaded or window.falls_behind)


def headline_rates(req: Mapping[str, Sequence], window: SteadyWindow, keeps_up: bool) -> dict[str, float]:
    """``requests_per_s``, ``output_tokens_per_s``, ``input_tokens_per_s`` over ``window``.

    A plan that keeps up serves in steady state what is offered (flow conservation): the requests
    arriving in the window (rejected ones left out) and their tokens, per second of it. Counting
    what finishes in the window instead would read low in a short run, whose batch is still
    filling up. An overloaded plan serves what it can: the tokens generated in the window
    (:func:`window_tokens`), and as requests per second those tokens over a served request's mean
    output length; its finishes in the window would lag (none at all while a full batch of long
    requests decodes through it)."""
    if not keeps_up:
        out, done = _col(req, "output_tokens"), np.isfinite(_col(req, "finish_s"))
        mean_out = float(out[done].mean()) if done.any() else float("nan")
        return {"requests_per_s": window.output_tokens_per_s / mean_out,
                "output_tokens_per_s": window.output_tokens_per_s, "input_tokens_per_s": window.input_tokens_per_s}
    arrival = _col(req, "arrival_s")
    keep = (arrival >= window.start_s) & (arrival < window.end_s) & ~_col(req, "rejected", bool)
    per_s = 1.0 / window.duration_s
    return {"requests_per_s": float(keep.sum()) * per_s,
            "output_tokens_per_s": float(_col(req, "output_tokens")[keep].sum()) * per_s,
            "input_tokens_per_s": float(_col(req, "prompt_tokens")[keep].sum()) * per_s}
