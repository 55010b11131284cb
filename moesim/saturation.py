"""A serving plan's saturated throughput: one run with every request at t=0.

The capacity search (:func:`moesim.capacity.max_goodput`) starts from it, and ``moesim plan`` bounds a
plan shape by it before any capacity search (:func:`moesim.plan_runs.saturation_runner`); both play
the same run (:func:`saturation_requests` requests, the scenario's seed), so the plan search hands its
measurement to the capacity search instead of playing it twice.

The rate is read from the full batches, not from the finishes: the output tokens generated per second
while requests still wait (:func:`moesim.engine.serving.steady.saturated_tokens_per_s`) over the mean
output tokens of a request. Completions per second over the central finishes of a run of two batches'
worth of requests read 20-60 % high for large batches: the first requests to finish are the short
ones.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from moesim.engine.serving.steady import completion_rate, saturated_tokens_per_s
from moesim.results import SimResult
from moesim.schemas import Scenario

#: Requests of a probe (moesim.capacity) and of the saturation run: between these.
MIN_REQUESTS, MAX_REQUESTS = 1000, 20_000


@dataclass(frozen=True)
class Saturation:
    """What a run with every request at t=0 tells about a plan (whole run, all its replicas)."""

    n_requests: int
    output_tokens_per_s: float  # while the batches stay full (0: the run could not tell)
    rate_req_s: float  # requests/s at saturation (output tokens/s over the mean output tokens)
    decode_p90_s: float  # 90th percentile of first token to finish: a loaded run's latency, roughly


def saturation_requests(s: Scenario) -> int:
    """Requests of the all-at-t=0 run: twice the plan's batch slots (a pipeline's ``pp`` micro-batches
    each; the decode pool's when disaggregated), so every engine runs full batches, within the probe
    limits."""
    from moesim.schemas.scenario import pool_scenario

    pool = pool_scenario(s, "decode") if s.workload.disaggregation is not None else s
    slots = pool.plan.dp * pool.plan.pp * pool.workload.max_batch_seqs
    return int(min(max(2 * slots, MIN_REQUESTS), MAX_REQUESTS))


def saturate(s: Scenario, seed: int = 0, n_requests: int | None = None) -> Saturation:
    """Play ``s`` with ``n_requests`` (default :func:`saturation_requests`) all at t=0 and read it."""
    from moesim.simulate import simulate

    n = int(n_requests or saturation_requests(s))
    arrival = s.workload.arrival.model_copy(update={"process": "batch", "n_requests": n})
    run = simulate(s.model_copy(update={"workload": s.workload.model_copy(update={"arrival": arrival})}), seed=seed)
    req = run.tables["requests"]
    tok = saturated_tokens_per_s(req, run.tables["iterations"])
    rate = _rate(req, tok)
    if not (np.isfinite(rate) and rate > 0):
        rate = run.summary["requests_per_s"] if run.summary["requests_per_s"] > 0 else 1.0
    d = np.asarray(req["finish_s"], dtype=float) - np.asarray(req["first_token_s"], dtype=float)
    d = d[np.isfinite(d)]
    return Saturation(n, float(tok), float(rate), float(np.quantile(d, 0.9)) if d.size else 0.0)


def saturated_rate(run: SimResult) -> float:
    """Requests/s of a run with every request at t=0: the output tokens per second of its full batches
    over the mean output tokens of its served requests, or, when that cannot tell (too few finishes),
    its completions/s over the central finishes."""
    req = run.tables["requests"]
    return _rate(req, saturated_tokens_per_s(req, run.tables["iterations"]))


def _rate(req, tokens_per_s: float) -> float:
    """:func:`saturated_rate` of a run's ``requests`` table whose full batches made ``tokens_per_s``."""
    out = np.asarray(req["output_tokens"], dtype=float)
    served = np.isfinite(np.asarray(req["finish_s"], dtype=float))
    if tokens_per_s > 0 and served.any():
        return tokens_per_s / float(out[served].mean())
    return completion_rate(req)
