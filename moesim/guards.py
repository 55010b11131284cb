"""Refuse simulations that would be absurdly large, with an estimate and how to shrink them.

Training simulates one data-parallel replica in detail and the others through their collectives,
so its cost grows with pp x microbatches x layers x steps, never with dp. Serving simulates every
replica's iterations, so its cost grows with the requests and the output tokens they ask for.
Both sample expert loads in arrays of MoE layers x experts (x microbatches, x load samples), and
count token-expert assignments in int64: those are capped too, so every scenario the schema
accepts either runs in bounded memory or is refused here in one line.
"""

from __future__ import annotations

from moesim.engine.expert_tp import routing_group_tokens
from moesim.errors import InputError
from moesim.packing import micro_batch_seqs
from moesim.schemas import Scenario, ServingWorkload, TrainingWorkload
from moesim.schemas.request_limits import prefill_budget

#: Most spans (per-op records) one training simulation may produce (~100 bytes each).
MAX_TRAINING_SPANS = 5_000_000
#: Most requests one serving simulation may play.
MAX_REQUESTS = 2_000_000
#: Most batching iterations (over all replicas) one serving simulation may play.
MAX_ITERATIONS = 5_000_000
#: Most replicas a serving simulation plays one by one.
MAX_REPLICAS = 4096
#: Most cells of one step's sampled routing arrays (MoE layers x microbatches x experts; int64,
#: a few such arrays): 2^26 cells is ~512 MiB each, about a minute. DeepSeek-V3 training needs 1.9M.
MAX_ROUTING_CELLS = 1 << 26
#: Most token-expert assignments one EP group routes in one microbatch (the multinomial's int64
#: count; 2^53 keeps it exact in float64 too). Real runs route ~10^9.
MAX_ASSIGNMENTS = 1 << 53
_SPANS_PER_LAYER = 8  # attention, TP comm, router, dispatch, experts, combine, ... per pass
_SKEW_SAMPLES = 8  # load samples serving keeps per batch size under skewed routing (routed_experts.SKEW_POOL)


def estimate_work(s: Scenario) -> dict:
    """Rough size of a simulation: spans (training) or requests and iterations (serving)."""
    w = s.workload
    m, p = s.model, s.plan
    routed = m.n_moe_layers * m.n_experts if m.n_experts > 1 else 0
    if isinstance(w, TrainingWorkload):
        passes = 2 * p.microbatches * w.steps  # forward + backward per microbatch
        # one EP group's tokens (expert_tp.routing_group_tokens) of one CP rank's share
        group_tokens = routing_group_tokens(p, micro_batch_seqs(w, p) * w.seq_len // p.cp)
        return {"spans": passes * m.n_layers * _SPANS_PER_LAYER, "routing_cells": routed * p.microbatches,
                "routing_shape": "MoE layers x experts x microbatches",
                "assignments": group_tokens * m.top_k if routed else 0}
    assert isinstance(w, ServingWorkload)
    n = w.arrival.n_requests
    out = w.output_tokens.mean_tokens(256.0)
    # decodes: a replica's iteration decodes at most max_batch_seqs sequences, and no more than its
    # token budget; prompts: every prompt token not cached passes through some iteration's budget
    # (the prefill pool's, disaggregated), so tiny budgets under long prompts cost iterations too
    per_iter = max(1, min(w.max_batch_seqs, w.max_batch_tokens, n // max(p.dp, 1) or 1))
    budget_field, budget_tokens = prefill_budget(w)
    prompt = w.prompt_tokens.mean_tokens(0.0) * (1.0 - w.prefix_cache_hit)  # a trace's mean is not read here
    decode_iters, prefill_iters = n * out / per_iter, n * prompt / budget_tokens
    if not routed:
        cells, shape = 0, ""
    elif s.routing.distribution != "uniform":  # sampled loads per batch size
        cells, shape = routed * _SKEW_SAMPLES, f"MoE layers x experts x {_SKEW_SAMPLES} samples"
    else:  # expected expert loads (and drops) tabulated per batch size
        cells, shape = (w.max_batch_tokens + 1) * m.n_experts, "workload.max_batch_tokens x experts"
    return {"requests": n, "replicas": p.dp, "iterations": int(max(decode_iters, prefill_iters)) + n,
            "prefill_bound": prefill_iters > decode_iters, "prefill_budget": (budget_field, budget_tokens),
            "routing_cells": cells, "routing_shape": shape,
            "assignments": p.ep * w.max_batch_tokens * m.top_k if routed else 0}


def check_size(s: Scenario) -> None:
    """Raise InputError when ``s`` would take too long or too much memory to simulate."""
    est = estimate_work(s)
    if est["routing_cells"] > MAX_ROUTING_CELLS:
        raise InputError(
            f"model.n_experts = {s.model.n_experts}: the expert-load arrays would hold ~{est['routing_cells']:.2e} "
            f"cells ({est['routing_shape']}; limit {MAX_ROUTING_CELLS:.1e}); lower one of them"
        )
    if est["assignments"] > MAX_ASSIGNMENTS:
        raise InputError(
            f"model.top_k = {s.model.top_k}: one EP group would route ~{est['assignments']:.2e} token-expert "
            f"assignments per microbatch (limit 2^53 = {MAX_ASSIGNMENTS:.1e}); lower the tokens per step or top_k"
        )
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
            if est["prefill_bound"]:  # the prompts' tokens through a small token budget
                field, budget = est["prefill_budget"]
                raise InputError(
                    f"{field} = {budget}: ~{est['iterations']:.2e} batching iterations "
                    f"to prefill the prompts (limit {MAX_ITERATIONS:.0e}); raise it or lower "
                    "workload.arrival.n_requests or the prompt lengths"
                )
            raise InputError(
                f"workload: ~{est['iterations']:.2e} batching iterations to simulate (limit {MAX_ITERATIONS:.0e}); "
                "lower workload.arrival.n_requests or the output lengths"
            )
