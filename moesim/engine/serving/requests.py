"""Request streams for the serving engine: arrival times and token lengths. Pure numpy.

Everything is drawn from one ``numpy.random.Generator`` so a seed fixes the whole stream.
Shapes: every array is ``(n_requests,)``; times in seconds, lengths in tokens (int64).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from moesim.errors import InputError
from moesim.loader import one_line, read_csv_rows
from moesim.schemas import ServingWorkload
from moesim.schemas._base import MAX_TOKENS

#: Columns a request trace CSV must have (Splitwise / Vidur format).
TRACE_COLUMNS = ("arrived_at", "num_prefill_tokens", "num_decode_tokens")


@dataclass(frozen=True)
class Requests:
    """A stream of requests, sorted by arrival time."""

    arrival_s: np.ndarray  # (n,) float64, non-decreasing
    prompt_tokens: np.ndarray  # (n,) int64, >= 1
    output_tokens: np.ndarray  # (n,) int64, >= 1

    def __len__(self) -> int:
        return int(self.arrival_s.size)


#: Largest |arrival time| of a trace row, s: Unix epoch seconds until the year 2286 (a log's own clock reads;
#: the run starts at its first row). Far larger times overflow the steady-state window's fits.
MAX_ARRIVAL_S = 1e10
#: Largest request trace CSV read: ~2M rows, the most requests one simulation plays (moesim.guards).
MAX_TRACE_BYTES = 64 << 20


@lru_cache(maxsize=8)
def _read_trace_cached(path: str, stamp: tuple[int, int] | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The trace at ``path``; ``stamp`` (its modification time and size) keys the cache, so a file
    rewritten between two runs of one process (a notebook) is read again."""
    label = f"workload.arrival.trace = {path!r}"
    rows = read_csv_rows(path, MAX_TRACE_BYTES, label)
    if not rows:
        raise InputError(f"{label}: empty file")
    # names as a spreadsheet writes them: spaces after the commas, a byte-order mark before the first
    header = [c.strip().lstrip("\ufeff").strip() for c in rows[0]]
    missing = [c for c in TRACE_COLUMNS if c not in header]
    if missing:
        found = ", ".join(repr(c) for c in header if c) or "none"
        raise InputError(f"{label}: missing column(s) {missing}; expected {list(TRACE_COLUMNS)} in its first row "
                         f"(found: {found})")
    cols = [header.index(c) for c in TRACE_COLUMNS]
    data = np.array([_trace_row(row, cols, n, label) for n, row in enumerate(rows[1:], 1) if row],
                    dtype=float).reshape(-1, 3)
    if data.shape[0] == 0:
        raise InputError(f"{label}: no rows")
    bad = (~np.isfinite(data).all(axis=1) | (np.abs(data[:, 0]) > MAX_ARRIVAL_S) | (data[:, 1:] < 0).any(axis=1)
           | (data[:, 1:] > MAX_TOKENS).any(axis=1))
    if bad.any():
        raise InputError(f"{label}: data row {int(np.argmax(bad)) + 1}: times must be finite, within "
                         f"±{MAX_ARRIVAL_S:.0e} s, and token counts between 0 and {MAX_TOKENS:,}")
    # rows in time order, each keeping its lengths: a log written by several workers need not be sorted,
    # and "the first n rows" are then the first n requests to arrive
    data = data[np.argsort(data[:, 0], kind="stable")]
    return data[:, 0], data[:, 1].astype(np.int64), data[:, 2].astype(np.int64)


def _trace_row(row: list[str], cols: list[int], n: int, label: str) -> list[float]:
    """The three numbers of data row ``n`` (1-based) of a trace; InputError naming the row otherwise."""
    if len(row) <= max(cols):
        raise InputError(f"{label}: data row {n} has {len(row)} cell{'s' if len(row) != 1 else ''}, fewer than the "
                         f"{max(cols) + 1} columns its header needs ({', '.join(TRACE_COLUMNS)})")
    try:
        return [float(row[c]) for c in cols]
    except ValueError:
        cells = ", ".join(repr(row[c]) for c in cols)
        raise InputError(one_line(f"{label}: data row {n}: {cells} are not all numbers")) from None


def read_trace(path: str | Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(arrived_at_s, prompt_tokens, output_tokens) columns of a trace CSV, its rows sorted by arrival time
    (cached by path)."""
    try:
        st = Path(path).stat()
        stamp = (st.st_mtime_ns, st.st_size)
    except (OSError, ValueError):  # unreadable: the reader's own error names it
        stamp = None
    arr, p, o = _read_trace_cached(str(path), stamp)
    return arr.copy(), p.copy(), o.copy()


def sample_requests(w: ServingWorkload, rng: np.random.Generator) -> Requests:
    """The request stream of workload ``w``: arrivals, then prompt and output lengths.

    poisson: exponential gaps at ``rate_per_s`` (first arrival after one gap); batch: all at t=0;
    trace: the first ``n_requests`` rows in time order, times shifted so the first arrival is at 0 (and scaled to
    ``rate_per_s`` on average where it is set); closed: the
    first ``concurrency`` at t=0, the others NaN until the run sets them (:class:`ClosedLoop`).
    """
    a = w.arrival
    n = a.n_requests
    trace = read_trace(a.trace) if a.trace is not None else None
    if a.process == "poisson":
        arrival = np.cumsum(rng.exponential(1.0 / a.rate_per_s, size=n))
    elif a.process == "batch":
        arrival = np.zeros(n)
    elif a.process == "closed":
        arrival = np.where(np.arange(n) < a.concurrency, 0.0, np.nan)
    else:
        arrival = trace[0][:n]
        n = arrival.size
        arrival = arrival - arrival[0]  # sorted by read_trace: the earliest at 0
        if a.rate_per_s is not None:
            arrival = arrival * _trace_rate_factor(arrival, a.rate_per_s)
    from_trace = a.process == "trace"
    p_col = trace[1] if trace is not None else None
    o_col = trace[2] if trace is not None else None
    if trace is not None and not from_trace:  # resample the trace's lengths, not its order
        p_col, o_col = _resample_pairs(p_col, o_col, n, rng)
    prompt = w.prompt_tokens.sample(n, rng, p_col)
    output = w.output_tokens.sample(n, rng, o_col)
    return Requests(arrival.astype(float), prompt, output)


def _trace_rate_factor(arrival: np.ndarray, rate_per_s: float) -> float:
    """What a trace's arrival times (``(n,)`` s, from 0, ascending) are multiplied by to arrive at ``rate_per_s``
    on average, order and burstiness kept: its mean gap made ``1 / rate_per_s``."""
    span = float(arrival[-1]) if arrival.size else 0.0
    if arrival.size < 2 or span <= 0:
        raise InputError(f"workload.arrival.rate_per_s = {rate_per_s:g}: the trace's first {arrival.size} rows "
                         "arrive at one time, so there is no rate to scale; leave rate_per_s unset")
    return (arrival.size - 1) / span / rate_per_s


def _resample_pairs(p: np.ndarray, o: np.ndarray, n: int, rng: np.random.Generator):
    """Draw ``n`` (prompt, output) rows of a trace with replacement, keeping pairs together."""
    idx = rng.integers(0, p.size, size=n)
    return p[idx], o[idx]


class ClosedLoop:
    """Closed-loop arrivals: ``concurrency`` users, each sending its next request the moment its
    previous one finishes (no think time), so at most ``concurrency`` requests are in flight and
    the arrival rate is whatever the plan serves: never overloaded. With concurrency 1 a request
    meets an idle engine: TTFT is its prefill alone (single-stream, batch 1).

    Requests are sent in id order; a rejected request (never served) counts as finished at once.
    ``play`` is the serving run's router process: it fills ``reqs.arrival_s`` in place.
    """

    def __init__(self, concurrency: int, reqs: Requests, book):
        self.concurrency = int(concurrency)
        self.arrival_s = reqs.arrival_s  # (n,) filled as requests are sent
        self.book = book
        self.finished = 0  # finishes not yet answered by a new request
        self.wake = None  # the router's pending event

    def _on_finish(self, ids: np.ndarray, now_s: float) -> None:
        self.finished += int(ids.size)
        if self.wake is not None and not self.wake.triggered:
            self.wake.succeed()

    def play(self, run):
        """SimPy process: send ``concurrency`` requests at t=0, then one per finish. ``run`` routes
        (``run.deliver(ids)``) and owns the clock (``run.env``)."""
        env, n = run.env, self.arrival_s.size
        self.book.on_finish = self._on_finish
        sent, release = 0, self.concurrency
        while sent < n:
            ids = np.arange(sent, min(sent + release, n))
            sent += ids.size
            self.arrival_s[ids] = env.now
            run.deliver(ids)
            release = int(self.book.rejected[ids].sum())  # never served: its user sends the next at once
            if release or sent >= n:
                continue
            if not self.finished:
                self.wake = env.event()
                yield self.wake
                self.wake = None
            release, self.finished = self.finished, 0


def closed_loop(w: ServingWorkload, reqs: Requests, book) -> ClosedLoop | None:
    """The closed-loop arrival process of ``w``, or None for open arrivals (times known up front)."""
    return ClosedLoop(w.arrival.concurrency, reqs, book) if w.arrival.process == "closed" else None


def trace_length_notes(w: ServingWorkload, n: int) -> list[str]:
    """What a run with trace arrivals did with the trace's lengths, for the steady-state note: not used (a
    length whose ``dist`` is not ``trace``), or clipped to ``max`` / raised to 1 token in ``n`` rows played."""
    if w.arrival.process != "trace":
        return []
    _, prompt, output = read_trace(w.arrival.trace)
    lengths = (("prompt_tokens", w.prompt_tokens, prompt[:n]), ("output_tokens", w.output_tokens, output[:n]))
    drawn = [f"{name} (dist {d.dist})" for name, d, _ in lengths if d.dist != "trace"]
    notes = [f"{' and '.join(drawn)} drawn, not taken from the trace (dist: trace takes its column)"] if drawn else []
    for name, d, col in lengths:
        if d.dist == "trace":
            over, zero = (int((col > d.max).sum()) if d.max is not None else 0), int((col < 1).sum())
            notes += [f"{over:,} trace {name} above {name}.max {d.max:,} clipped to it"] if over else []
            notes += [f"{zero:,} trace {name} of 0 counted as 1"] if zero else []
    return notes
