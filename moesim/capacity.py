"""Capacity of one serving plan under an SLO: the highest Poisson arrival rate at which it holds.

``max_goodput(scenario, parse_slo("ttft_p99=2,tpot_p99=0.2"))`` plays the scenario at a sequence of
arrival rates (probes, each a whole :func:`moesim.simulate.simulate` run) and returns the highest
rate at which every SLO limit held, the run at that rate and every probe.

A probe holds when, over its steady-state window (:mod:`moesim.engine.serving.steady`: warm-up and
drain left out), the plan kept up (the queue did not grow, and at least 90% of the offered rate
finished in the window or in its second half, ``steady.SERVED_TOL``, however short the run), at most ``REJECT_LIMIT`` of the requests
were rejected (never servable: over max_seq_len, the token budget or the KV pool), and every SLO percentile is within its limit.

Arrivals of a probe: Poisson at the probe rate (a ``batch`` scenario's arrivals too: its requests are
spread out, the result says so); a ``trace`` keeps its order and burstiness, its times scaled so that
its first ``n`` rows arrive at the probe rate. Requests per probe: :func:`probe_requests`.

Search: one run with every request at t=0 gives the plan's saturated throughput ``r_sat``
(:mod:`moesim.saturation`: the output tokens/s of its full batches over the mean output tokens, in
requests/s); a probe at ``r_sat / 64`` with 100 requests checks the SLO can hold at all (if not:
capacity 0, with that probe's reason); then a first guess at ``GUESS_FACTOR r_sat``, stepped up
while it holds and down while it fails, each step twice the last in log scale (the first ``0.95
rel_tol``, so that a guess within it needs no third probe; up to ``r_sat`` at most while below it, freely once
a probe above it held: the saturated run then read low), and bisection once a holding and a
failing rate bracket the capacity. It stops when ``(hi - lo) / hi < rel_tol`` or after
``max_probes`` probes, and returns ``lo``. The bisection plays the same number of requests at every
rate: with the same seed they have the same lengths and the same arrival gaps scaled by the rate
(common random numbers), so its verdicts differ by the load alone.
"""

from __future__ import annotations

import math
import tempfile
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from moesim.engine.serving.itl import itl_stats
from moesim.engine.serving.steady import SERVED_TOL, SteadyWindow, steady_window, window_latencies
from moesim.errors import InputError
from moesim.results import SimResult
from moesim.saturation import MAX_REQUESTS, MIN_REQUESTS, Saturation, saturate
from moesim.schemas import Scenario
from moesim.slo import SLO_METRICS, Slo, parse_slo

#: Largest fraction of rejected requests (never servable: over max_seq_len, the token budget or the KV pool) a probe may hold with.
REJECT_LIMIT = 0.01
#: Requests per probe (see probe_requests) are between ``MIN_REQUESTS`` and ``MAX_REQUESTS``
#: (moesim.saturation). The floor keeps ~800 in the window: a p99 over 8 tail requests, and a queue
#: growing by 5% of the window's arrivals shows above its noise.
#: A probe's arrivals span this many e2e p90 latencies (warm-up ~1, window >= 3, drain).
SPAN_E2E = 5.0
LOW_LOAD_DIVISOR, LOW_LOAD_REQUESTS, MAX_PROBES = 64.0, 100, 12
#: First guess of the capacity, as a fraction of the saturated rate: 16 of 17 Mixtral replica shapes
#: held ttft_p99=2,tpot_p99=0.2 to 0.95-1.10 of it, one to 0.79 (bench/bench_capacity.py).
GUESS_FACTOR = 0.95
MAX_RATE = 1e7  # the schema's bound on workload.arrival.rate_per_s
#: A failing probe whose latencies exceed their limits by less than this fraction says the capacity is fragile:
#: the percentile sits on the limit over a range of rates, and a tiny change to the plan moves the answer a probe.
NEAR_LIMIT = 0.01


@dataclass(frozen=True)
class Probe:
    """One run at ``rate_req_s`` judged against ``slo`` over its steady-state window."""

    rate_req_s: float
    holds: bool
    reason: str
    slo: Slo
    latencies: dict[str, float]  # {ttft,tpot,e2e}_{mean,p50,p90,p99}_s over the window
    window: SteadyWindow
    n_requests: int
    arrivals: str  # how the arrivals were made (Poisson, scaled trace, ...)
    summary: dict = field(repr=False)  # the run's whole summary
    result: SimResult | None = field(default=None, repr=False, compare=False)

    @property
    def served_req_s(self) -> float:
        return self.window.served_req_s

    def row(self) -> dict:
        """The probe's row of ``tables["capacity_probes"]``."""
        w = self.window
        return {"rate_req_s": self.rate_req_s, "holds": self.holds, "reason": self.reason,
                **{k: self.latencies[k] for k in self.slo.limits}, "served_req_s": w.served_req_s,
                "offered_req_s": w.offered_req_s, "queue_growth": w.queue_growth, "n_requests": self.n_requests,
                "window_start_s": w.start_s, "window_end_s": w.end_s}


@dataclass(frozen=True)
class Capacity:
    """The highest rate at which ``slo`` held (0 when it fails near zero load) and how it was found."""

    slo: Slo
    max_goodput_req_s: float
    probe: Probe  # the probe at capacity (at capacity 0: the near-zero-load probe that failed)
    probes: tuple[Probe, ...]
    saturation_req_s: float  # requests/s with every request at t=0 (saturated_rate)
    limit: str  # why not more: the lowest failing probe's rate and reason
    result: SimResult  # the run at capacity, with the capacity keys and tables["capacity_probes"]

    def summary_keys(self) -> dict:
        """The keys ``simulate --slo`` adds to the summary (registered in :mod:`moesim.metrics`, kind
        "capacity"). Cost and throughput are the run's steady-state headline figures (the summary's
        ``output_tokens_per_s``: the plan keeps up, so the output tokens offered in the window per
        second of it), the cluster's $/s over them: the run's own ``usd_per_mtok``."""
        p, w = self.probe, self.probe.window
        ok = self.max_goodput_req_s > 0
        usd_per_s = p.summary["run_cost_usd"] / p.summary["makespan_s"] if p.summary["makespan_s"] > 0 else math.nan
        tok = p.summary["output_tokens_per_s"] if ok else 0.0
        return {"max_goodput_req_s": float(self.max_goodput_req_s),
                "usd_per_mtok_at_capacity": float(usd_per_s / tok * 1e6) if ok and tok > 0 else math.nan,
                "tokens_per_s_per_device_at_capacity": float(tok / p.summary["devices"]),
                "slo": self.slo.text, "capacity_probes": len(self.probes), "capacity_limit": self.limit,
                "capacity_note": f"{p.arrivals}; steady state: {w.describe()}; saturated throughput "
                                 f"{self.saturation_req_s:.4g} req/s (all requests at t=0)"}

    def probes_table(self) -> dict[str, list]:
        """``tables["capacity_probes"]``: one row per probe, in the order played."""
        rows = [{"probe": i + 1, **p.row()} for i, p in enumerate(self.probes)]
        return {k: [r[k] for r in rows] for k in rows[0]}


def check_serving(s: Scenario, n_requests: int | None = None) -> None:
    """InputError (one line) unless ``s`` is a serving scenario (and ``n_requests``, when given, a whole number of
    requests of at least 2: a steady window needs arrivals)."""
    if not isinstance(s, Scenario):
        raise InputError(f"scenario is a {type(s).__name__}; pass a Scenario (moesim.load_scenario)")
    if n_requests is not None and (isinstance(n_requests, bool) or not isinstance(n_requests, int) or n_requests < 2):
        raise InputError(f"n_requests = {n_requests!r}: a whole number of requests, at least 2")
    if s.is_training:
        raise InputError(f"--slo applies to serving scenarios; {s.name} is a training scenario")


def probe_requests(s: Scenario, rate: float, e2e_p90_s: float | None = None, replicas: int = 1) -> int:
    """Requests of a probe at ``rate``: enough arrivals to span ``SPAN_E2E`` e2e p90 latencies (a
    previous probe's), within ``[MIN_REQUESTS, MAX_REQUESTS / replicas]``. Without a latency: the
    scenario's ``n_requests``, within the same bounds (a trace's rows are replayed from the start when it
    has fewer: :func:`_trace_rows`). ``replicas``: identical replicas the run
    stands for (``moesim plan`` plays one): its probe spans the time their sum's would, so that one
    replica and the whole plan are judged over windows of the same length (near capacity a longer
    window sees less of the queue still filling up, and holds at higher rates)."""
    if e2e_p90_s is None or not math.isfinite(e2e_p90_s):
        n = s.workload.arrival.n_requests
    else:
        n = math.ceil(rate * SPAN_E2E * e2e_p90_s)
    return int(min(max(n, MIN_REQUESTS), max(MAX_REQUESTS // max(1, replicas), MIN_REQUESTS)))


def _with_arrivals(s: Scenario, rate: float, n: int, folder: Path) -> tuple[Scenario, str]:
    """``s`` with ``n`` requests at ``rate``; a trace is rewritten in ``folder``."""

    a = s.workload.arrival
    if a.process == "trace":
        t, p, o, text = _trace_rows(a.trace, rate, n)
        path = folder / f"trace-{uuid.uuid4().hex}.csv"
        lines = ["arrived_at,num_prefill_tokens,num_decode_tokens"]
        lines += [f"{x!r},{i},{j}" for x, i, j in zip(t.tolist(), p.tolist(), o.tolist())]
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
        new = a.model_copy(update={"trace": path, "n_requests": int(t.size), "rate_per_s": None})  # scaled here
    else:
        new = a.model_copy(update={"process": "poisson", "rate_per_s": float(rate), "n_requests": n})
        text = "Poisson arrivals at the probe rate" + (f" (the scenario's {a.process} arrivals replaced)"
                                                        if a.process in ("batch", "closed") else "")
    w = s.workload.model_copy(update={"arrival": new})
    return s.model_copy(update={"workload": w}), text


def _trace_rows(trace, rate: float, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, str]:
    """A probe's ``n`` requests from a trace at ``rate`` req/s: (arrival s, prompt, output tokens, how).

    The trace's times are scaled so that its rows arrive at ``rate`` (its order and burstiness kept); a
    probe longer than the trace replays it from the start, each pass one mean gap after the last, so that a
    short trace is judged over a window as long as a Poisson probe's (its length is what the verdict needs,
    not the trace's)."""
    from moesim.engine.serving.requests import read_trace

    t, p, o = read_trace(trace)
    rows = t.size
    if n <= rows:
        t, p, o = t[:n], p[:n], o[:n]
    span = float(t[-1] - t[0]) if t.size else 0.0
    if t.size < 2 or span <= 0:
        raise InputError(f"workload.arrival.trace = {str(trace)!r}: its first {t.size} rows arrive at one time; "
                         "--slo scales a trace's arrival times to each probe rate and needs them spread out")
    gap = span / (t.size - 1)  # the mean gap, which becomes 1 / rate
    passes = -(-n // t.size)
    if passes > 1:
        t = np.concatenate([t - t[0] + k * (span + gap) for k in range(passes)])[:n]
        p, o = np.tile(p, passes)[:n], np.tile(o, passes)[:n]
    factor = 1.0 / gap / rate
    how = f"trace arrival times scaled by {factor:.4g} to the probe rate" + (
        f" (its {rows:,} rows played {passes} times)" if passes > 1 else f" (first {t.size} rows)")
    return (t - t[0]) * factor, p, o, how


def _play(s: Scenario, rate: float, n: int, seed: int) -> tuple[SimResult, str]:
    from moesim.simulate import simulate

    with tempfile.TemporaryDirectory(prefix="moesim-slo-") as folder:
        probe_s, text = _with_arrivals(s, rate, n, Path(folder))
        return simulate(probe_s, seed=seed), text


def verdict(req: dict, slo: Slo, replicas: int = 1, it: dict | None = None) -> tuple[SteadyWindow, dict[str, float],
                                                                                     list[str]]:
    """Judge a run's ``requests`` table against ``slo`` over its steady window: (the window, its
    latencies, what failed: rejections, overload (queue growth, or served below 90% of offered),
    SLO limits; empty when the probe holds). ``replicas``: identical replicas the run stands for
    (:func:`moesim.engine.serving.steady.growth_limit`)."""
    w = steady_window(req, replicas, it)
    lat = window_latencies(req, w)
    if it is not None:  # the run's iterations: its per-token gaps (ITL) over the same window
        lat.update(itl_stats(it, w.start_s, w.end_s))
    elif any(k.startswith("itl_") for k in slo.limits):
        raise ValueError("an ITL limit needs the run's iterations")
    bad = []
    if w.rejected_fraction > REJECT_LIMIT:
        bad.append(f"rejected: {w.rejected_fraction:.1%} of requests can never be served (limit {REJECT_LIMIT:.0%})")
    # strict: served below 90% of offered fails too (the summary's overloaded flag does not judge it, see
    # steady.py): a probe serving 67 of 80 req/s whose queue growth hides in the noise never holds. Only
    # when the window's second half also falls short: a short probe's batches may still be filling early
    # in the window (finishes lag, then catch up), which is no overload.
    floor = (1.0 - SERVED_TOL) * w.offered_req_s
    if w.overloaded or (w.served_req_s < floor and w.served_late_req_s < floor):
        bad.append(f"overloaded: offered {w.offered_req_s:.3g} req/s, served {w.served_req_s:.3g} req/s "
                   f"(queue +{w.queue_growth:.0f} requests over the window)")
    return w, lat, bad + slo.violations(lat)


def _judge(s: Scenario, rate: float, slo: Slo, seed: int, n: int, replicas: int = 1) -> Probe:
    result, arrivals = _play(s, rate, n, seed)
    req = result.tables["requests"]
    w, lat, bad = verdict(req, slo, replicas, result.tables.get("iterations"))
    reason = "; ".join(bad) or "holds: " + ", ".join(f"{k.removesuffix('_s')} {lat[k]:.3g} s" for k in slo.limits)
    return Probe(float(rate), not bad, reason, slo, lat, w, int(len(req["arrival_s"])), arrivals,
                 dict(result.summary), result)


def measure(s: Scenario, rate_req_s: float, slo: Slo | str, seed: int = 0, n_requests: int | None = None,
            e2e_p90_s: float | None = None, replicas: int = 1) -> Probe:
    """Play ``s`` at ``rate_req_s`` requests/s and judge ``slo`` on the steady state.

    ``n_requests``: fixed requests (default :func:`probe_requests` with ``e2e_p90_s``, a latency
    seen at a lower rate); with the default, a run too short for its own latency (its e2e p90 longer
    than half its arrivals' span: the queue may still be filling up) is played once more with
    ``SPAN_E2E`` e2e p90 worth of arrivals. ``replicas``: identical replicas the run of ``s`` stands
    for (``moesim plan`` plays one replica of a plan): its overload test is the sum's, per replica.
    """
    check_serving(s, n_requests)
    slo = parse_slo(slo) if isinstance(slo, str) else slo
    if not (isinstance(rate_req_s, (int, float)) and math.isfinite(rate_req_s) and 0 < rate_req_s <= MAX_RATE):
        raise InputError(f"rate {rate_req_s!r} req/s: must be a positive number up to {MAX_RATE:g}")
    n = probe_requests(s, rate_req_s, e2e_p90_s, replicas) if n_requests is None else int(n_requests)
    probe = _judge(s, rate_req_s, slo, seed, n, replicas)
    if n_requests is None and probe.window.warmup_capped and probe.n_requests == n:  # (a trace may have fewer rows)
        more = probe_requests(s, rate_req_s, probe.window.e2e_p90_s, replicas)
        if more > n:
            probe = _judge(s, rate_req_s, slo, seed, more, replicas)
    return probe


def max_goodput(s: Scenario, slo: Slo | str, seed: int = 0, rel_tol: float = 0.05,
                on_probe: Callable[[Probe], None] | None = None, max_probes: int = MAX_PROBES,
                n_requests: int | None = None, replicas: int = 1, saturation: Saturation | None = None) -> Capacity:
    """The highest arrival rate (req/s) at which ``slo`` holds on ``s`` (see the module docstring).

    ``on_probe(probe)`` is called after each probe; ``n_requests`` fixes the requests of every run
    (default: :func:`probe_requests`, the saturation run ``2 x`` the plan's batch slots);
    ``replicas``: identical replicas the run of ``s`` stands for (see :func:`measure`);
    ``saturation``: the run with every request at t=0 (:func:`moesim.saturation.saturate` of ``s``
    with ``seed``), when the caller played it already.
    """
    check_serving(s, n_requests)
    slo = parse_slo(slo) if isinstance(slo, str) else slo
    if not 0 < rel_tol < 1:
        raise InputError(f"rel_tol = {rel_tol!r}: must be between 0 and 1")
    if max_probes < 2:
        raise InputError(f"max_probes = {max_probes!r}: at least 2 (one near zero load, one above it)")
    if saturation is None:
        saturation = saturate(s, seed, n_requests)
    r_sat, busy_e2e_s = saturation.rate_req_s, saturation.decode_p90_s
    probes: list[Probe] = []

    def run(rate: float, n: int | None, e2e: float | None) -> Probe:
        p = measure(s, min(rate, MAX_RATE), slo, seed, n, e2e, replicas)
        probes.append(replace(p, result=None))  # only ``lo``, the highest probe that held, keeps its run
        if on_probe is not None:
            on_probe(p)
        return p

    lo, hi = run(r_sat / LOW_LOAD_DIVISOR, n_requests or LOW_LOAD_REQUESTS, None), None
    low = lo

    def loaded_e2e_s(rate: float) -> float:
        """The e2e p90 a probe at ``rate`` is sized for: from low load's towards the saturated run's
        decode time in proportion to the rate (a batch, and its decode time, grow with the load; a
        low-load probe's e2e alone sizes a probe near saturation too short to see past its batches
        filling), and at least that of ``lo``, the highest probe that held."""
        e0 = low.window.e2e_p90_s
        return max(lo.window.e2e_p90_s, e0 + max(0.0, busy_e2e_s - e0) * min(1.0, rate / r_sat))

    if not lo.holds:
        return _capacity(slo, 0.0, lo, probes, r_sat, f"at {lo.rate_req_s:.4g} req/s (near zero load): {lo.reason}")
    rate = first_guess_req_s(r_sat)
    fixed = n_requests
    streak, last = 0, None  # probes in a row on one side of the capacity: each step twice the last (log scale)
    while len(probes) < max_probes:
        if fixed is None and hi is not None and hi.rate_req_s <= 2 * lo.rate_req_s:
            # bisection: the same requests at every rate (their gaps scaled), sized for the top rate
            fixed = probe_requests(s, hi.rate_req_s, loaded_e2e_s(hi.rate_req_s), replicas)
        p = run(rate, fixed, loaded_e2e_s(rate))
        streak = streak + 1 if p.holds == last else 0
        last = p.holds
        if p.holds:
            lo = p
        else:
            hi = probes[-1]  # without its run
        if hi is None:
            if lo.rate_req_s >= MAX_RATE:
                break
            # steps up grow, but not past the saturated rate while below it: no plan keeps up with more;
            # past it (held above r_sat: the saturated run read low) they grow freely, not 5 % a probe
            up = lo.rate_req_s / _step(rel_tol, streak)
            rate = up if lo.rate_req_s >= r_sat else min(up, max(r_sat, lo.rate_req_s / _step(rel_tol, 0)))
            continue
        if (hi.rate_req_s - lo.rate_req_s) / hi.rate_req_s < rel_tol:
            break
        rate = (lo.rate_req_s + hi.rate_req_s) / 2  # bisection
        if lo is low:  # nothing held above low load yet: step down from the lowest failing rate
            rate = max(rate, hi.rate_req_s * _step(rel_tol, streak))
    if hi is None:
        limit = f"held at every rate probed, up to {lo.rate_req_s:.4g} req/s"
    else:
        limit = f"at {hi.rate_req_s:.4g} req/s: {hi.reason}"
        if (hi.rate_req_s - lo.rate_req_s) / hi.rate_req_s >= rel_tol:
            limit += f" (stopped after {len(probes)} probes, before rel_tol {rel_tol:g})"
        over = _over_by(hi)
        if over is not None and over < NEAR_LIMIT:
            limit += (f"; {over:.1%} over its limit: the latency sits on the limit near capacity, so a small "
                      "change to the scenario can move the capacity by a probe")
    return _capacity(slo, lo.rate_req_s, lo, probes, r_sat, limit)


def _over_by(p: Probe) -> float | None:
    """How far the probe's latencies exceed their limits (the largest ``value / limit - 1``), or None when
    it held or failed for anything else too (overload, rejections): its reason is then more than the SLO's
    violations (``_judge`` joins both)."""
    latency = p.slo.violations(p.latencies)
    if p.holds or not latency or p.reason != "; ".join(latency):
        return None
    return max(p.latencies[k] / v - 1.0 for k, v in p.slo.limits.items() if p.latencies[k] > v)


def first_guess_req_s(r_sat: float) -> float:
    """Rate of the search's first probe at load, after the low-load probe at ``r_sat / LOW_LOAD_DIVISOR``:
    ``GUESS_FACTOR`` of the saturated rate ``r_sat``, and at least twice the low-load rate."""
    return max(GUESS_FACTOR * r_sat, 2 * r_sat / LOW_LOAD_DIVISOR)


def _step(rel_tol: float, streak: int) -> float:
    """The factor (< 1) of a step below a failing rate, or the inverse above a holding one, after
    ``streak`` steps on that side: ``(1 - 0.95 rel_tol) ** 2**streak`` (0.9525, 0.907, 0.823, ... at 5%)."""
    return (1.0 - 0.95 * rel_tol) ** (2 ** min(streak, 6))


def _capacity(slo: Slo, rate: float, probe: Probe, probes: list[Probe], r_sat: float, limit: str) -> Capacity:
    cap = Capacity(slo, rate, replace(probe, result=None), tuple(probes), r_sat, limit, probe.result)
    result = probe.result
    result.summary.update(cap.summary_keys())
    result.tables["capacity_probes"] = cap.probes_table()
    return cap


__all__ = ["Capacity", "MAX_REQUESTS", "MIN_REQUESTS", "Probe", "SLO_METRICS", "Saturation", "Slo", "check_serving",
           "first_guess_req_s", "max_goodput", "measure", "parse_slo", "probe_requests", "saturate", "verdict"]
