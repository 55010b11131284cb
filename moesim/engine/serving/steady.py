"""The steady state of a serving run: its window, its served rate, whether the plan kept up. Pure numpy.

Input is the ``requests`` table of a serving SimResult (``arrival_s``, ``finish_s``, ``rejected``,
``ttft_s``, ``tpot_s``, ``e2e_s``, ``output_tokens``; NaN where a request was not served).

Window: requests arriving in ``[start_s, end_s)``. Warm-up: the first ``WARMUP_FRACTION`` of the
arrivals, or longer, until the first arrival + the run's e2e p90 (the requests in the system reach
their steady number only after about one request lifetime; a window opened earlier sees the queue
fill up and reads it as overload), but never past the median arrival. Drain: the last
``DRAIN_FRACTION`` of the arrivals (their latencies are measured while the load falls away).

Overload: ``Q(t)``, the requests arrived (not rejected) but not finished by ``t``, sampled over the
window and fitted with a line. The plan did not keep up when the fitted growth over the window
exceeds ``OVERLOAD_TOL`` of the window's arrivals plus the noise of a stable queue (3 sigma of the
difference of two Poisson-like counts around its mean, ``3 sqrt(2 mean Q)``). In a stable system the
finishes in the window equal its arrivals less that growth, so this is "served rate clearly below the
offered rate" and "queue growing across the window" at once.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

WARMUP_FRACTION = 0.1
DRAIN_FRACTION = 0.1
#: Queue growth over the window, as a fraction of the window's arrivals, that counts as overload.
OVERLOAD_TOL = 0.05
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
    queue_growth: float  # fitted growth of Q over the window (requests)
    growth_limit: float  # growth above which the run is overloaded
    output_tokens_per_s: float  # output tokens of the requests finishing in the window / its length
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

    def describe(self) -> str:
        """One line: which requests the window holds and why it starts where it does."""
        why = "one e2e p90 after the first arrival" if self.warmup_by_latency else f"the first {WARMUP_FRACTION:.0%}"
        if self.warmup_capped:
            why = "the first half (the e2e p90 is longer)"
        return (f"requests arriving {self.start_s:.4g}-{self.end_s:.4g} s ({self.n_window} of {self.n_requests}; "
                f"warm-up {why}, drain the last {DRAIN_FRACTION:.0%})")


def _col(req: Mapping[str, Sequence], name: str, dtype=float) -> np.ndarray:
    return np.asarray(req[name], dtype=dtype)


def steady_window(req: Mapping[str, Sequence]) -> SteadyWindow:
    """The steady-state window of a run's ``requests`` table (see the module docstring)."""
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
    capped = bool(by_latency > a[n // 2])
    end = a[max(n - int(np.ceil(DRAIN_FRACTION * n)), 0)]
    if end <= start:  # (nearly) all at once: the whole run is the window, nothing is steady
        start, end = a[0], max(a[-1], a[0])
    length = end - start
    in_window = (arrival >= start) & (arrival < end)
    done = np.isfinite(finish)
    fin_window = done & (finish >= start) & (finish < end)
    n_window = int(in_window.sum())
    ts = np.linspace(start, end, _QUEUE_SAMPLES)
    queue = (np.searchsorted(np.sort(arrival[~rejected]), ts, side="right")
             - np.searchsorted(np.sort(finish[done]), ts, side="right")).astype(float)
    slope = float(np.polyfit(ts, queue, 1)[0]) if length > 0 else 0.0
    out_tok = float(_col(req, "output_tokens")[fin_window].sum())
    per_s = (lambda x: x / length) if length > 0 else (lambda x: float("nan"))
    return SteadyWindow(
        start_s=float(start), end_s=float(end), n_requests=n, n_window=n_window,
        offered_req_s=per_s(n_window), served_req_s=per_s(int(fin_window.sum())),
        queue_growth=slope * length, growth_limit=float(OVERLOAD_TOL * n_window + 3.0 * np.sqrt(2.0 * queue.mean() + 1.0)),
        output_tokens_per_s=per_s(out_tok), rejected_fraction=float(rejected.mean()),
        warmup_by_latency=bool(by_latency > by_count), warmup_capped=capped, e2e_p90_s=e2e_p90)


def window_latencies(req: Mapping[str, Sequence], window: SteadyWindow) -> dict[str, float]:
    """``{ttft,tpot,e2e}_{mean,p50,p90,p99}_s`` over the served requests arriving in ``window``
    (NaN where none has a value: TPOT needs more than one output token)."""
    arrival = _col(req, "arrival_s")
    return latency_stats(req, (arrival >= window.start_s) & (arrival < window.end_s))


def latency_stats(req: Mapping[str, Sequence], keep: np.ndarray | None = None) -> dict[str, float]:
    """``{ttft,tpot,e2e}_{mean,p50,p90,p99}_s`` over the requests ``keep`` selects (default all)
    that have a value (NaN where none has): the serving summary's latency keys."""
    out = {}
    for name in LATENCIES:
        x = _col(req, f"{name}_s")
        x = x[keep] if keep is not None else x
        x = x[np.isfinite(x)]
        for stat in STATS:
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
