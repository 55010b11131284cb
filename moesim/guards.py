"""Refuse simulations that would be absurdly large, with an estimate and how to shrink them.

Training simulates one data-parallel replica in detail and the others through their collectives,
so its cost grows with pp x microbatches x layers x steps, never with dp. Serving simulates every
replica's iterations, so its cost grows with the requests and the output tokens they ask for.
"""

from __future__ import annotations

from moesim.errors import InputError
from moesim.schemas import Scenario, ServingWorkload, TrainingWorkload

#: Most spans (per-op records) one training simulation may produce (~100 bytes each).
MAX_TRAINING_SPANS = 5_000_000
#: Most requests one serving simulation may play.
MAX_REQUESTS = 2_000_000
#: Most batching iterations (over all replicas) one serving simulation may play.
MAX_ITERATIONS = 5_000_000
#: Most replicas a serving simulation plays one by one.
MAX_REPLICAS = 4096
_SPANS_PER_LAYER = 8  # attention, TP comm, router, dispatch, experts, combine, ... per pass


def _mean_length(dist, fallback: float) -> float:
    if dist.dist == "fixed":
        return float(dist.value)
    if dist.dist == "uniform":
        return (dist.low + dist.high) / 2
    if dist.dist == "lognormal":
        return float(dist.median) if dist.max is None else min(float(dist.median) * 2, dist.max)
    return fallback


def estimate_work(s: Scenario) -> dict:
    """Rough size of a simulation: spans (training) or requests and iterations (serving)."""
    w = s.workload
    if isinstance(w, TrainingWorkload):
        passes = 2 * s.plan.microbatches * w.steps  # forward + backward per microbatch
        return {"spans": passes * s.model.n_layers * _SPANS_PER_LAYER}
    assert isinstance(w, ServingWorkload)
    n = w.arrival.n_requests
    out = _mean_length(w.output_tokens, 256.0)
    per_iter = max(1, min(w.max_batch_seqs, n // max(s.plan.dp, 1) or 1))
    return {"requests": n, "replicas": s.plan.dp, "iterations": int(n * out / per_iter) + n}


def check_size(s: Scenario) -> None:
    """Raise InputError when ``s`` would take too long or too much memory to simulate."""
    est = estimate_work(s)
    if "spans" in est and est["spans"] > MAX_TRAINING_SPANS:
        raise InputError(
            f"workload.steps / plan.microbatches: one simulation would record ~{est['spans']:.2e} spans "
            f"(limit {MAX_TRAINING_SPANS:.0e}); lower workload.steps or plan.microbatches"
        )
    if "requests" in est:
        if est["requests"] > MAX_REQUESTS:
            raise InputError(
                f"workload.arrival.n_requests = {est['requests']}: more than {MAX_REQUESTS:,} requests; "
                "simulate a representative sample (throughput and latency percentiles converge well before)"
            )
        if est["replicas"] > MAX_REPLICAS:
            raise InputError(
                f"plan.dp = {est['replicas']}: serving simulates every replica (limit {MAX_REPLICAS}); "
                "replicas are independent, so simulate fewer and scale throughput by the ratio"
            )
        if est["iterations"] > MAX_ITERATIONS:
            raise InputError(
                f"workload: ~{est['iterations']:.2e} batching iterations to simulate (limit {MAX_ITERATIONS:.0e}); "
                "lower workload.arrival.n_requests or the output lengths"
            )
