"""Serving limits a scenario can break before any request arrives: prompts that no iteration can
prefill whole, and token budgets whose expert-load tables the simulator cannot hold.

Each check raises ValueError with one line naming the field and what it allows; ``Scenario`` calls
them. Requests of lengths without an upper bound (a lognormal without ``max``, a trace) are refused
one by one at arrival instead (``engine.serving.rejections``).
"""

from __future__ import annotations

import math

from moesim.schemas.model import ModelSpec
from moesim.schemas.routing import RoutingSpec
from moesim.schemas.workload import ServingWorkload


def longest_prefill_tokens(w: ServingWorkload) -> int:
    """Tokens the longest prompt of ``w`` leaves to prefill after its cached prefix (``prefix_cache_hit``),
    or 0 when the prompt length has no upper bound. ``L - floor(L * hit)`` never decreases with ``L``, so
    the longest prompt leaves the most."""
    longest = w.prompt_tokens.upper_bound_tokens()
    return longest - math.floor(longest * w.prefix_cache_hit) if longest else 0


def pool_budget(w: ServingWorkload, role: str | None) -> tuple[str, int]:
    """(field, tokens): the token budget of one iteration of the pool ``role`` ("prefill", "decode"; None
    without disaggregation), its own ``max_batch_tokens`` where set, else the workload's."""
    pool = getattr(w.disaggregation, role) if role is not None else None
    if pool is not None and pool.max_batch_tokens:
        return f"workload.disaggregation.{role}.max_batch_tokens", pool.max_batch_tokens
    return "workload.max_batch_tokens", w.max_batch_tokens


def prefill_budget(w: ServingWorkload) -> tuple[str, int]:
    """(field, tokens): the budget prompts are prefilled under (the prefill pool's when disaggregated)."""
    return pool_budget(w, "prefill" if w.disaggregation is not None else None)


def budgets(w: ServingWorkload) -> list[tuple[str, int]]:
    """(field, tokens) of every token budget some engine of ``w`` runs under, each once."""
    roles = ("prefill", "decode") if w.disaggregation is not None else (None,)
    return list(dict.fromkeys(pool_budget(w, role) for role in roles))


def check_whole_prompts(w: ServingWorkload) -> None:
    """Without chunked prefill a prompt is prefilled in one iteration, so the prefill budget must hold the
    longest one (vLLM refuses max_num_batched_tokens under max_model_len at startup for the same reason)."""
    need = longest_prefill_tokens(w)
    if w.chunked_prefill or not need:
        return
    field, budget = prefill_budget(w)
    if budget < need:
        cached = (f" ({need:,} of them left to prefill after workload.prefix_cache_hit {w.prefix_cache_hit:g})"
                  if w.prefix_cache_hit else "")
        raise ValueError(
            f"{field} = {budget}: with workload.chunked_prefill false each prompt is prefilled whole in one "
            f"iteration, and the longest prompt has {w.prompt_tokens.upper_bound_tokens():,} tokens{cached}; "
            f"allowed: {field} >= {need:,}, or workload.chunked_prefill: true")


def max_tabulated_batch_tokens(n_experts: int) -> int:
    """Largest ``max_batch_tokens`` whose expected expert loads the serving simulator can tabulate under
    uniform routing: one row per batch size 0..max_batch_tokens of ``n_experts`` cells each, at most
    ``guards.MAX_ROUTING_CELLS`` (2^26) cells in all (524,287 tokens for 128 experts)."""
    from moesim.guards import MAX_ROUTING_CELLS  # local: guards imports the schemas

    return MAX_ROUTING_CELLS // n_experts - 1


def check_expert_tables(m: ModelSpec, w: ServingWorkload, routing: RoutingSpec) -> None:
    """Each serving token budget must leave the uniform expert-load table within the simulator's limit
    (skewed routing samples loads instead, and a dense model has no experts to tabulate)."""
    if m.n_experts <= 1 or m.n_moe_layers == 0 or routing.distribution != "uniform":
        return
    most = max_tabulated_batch_tokens(m.n_experts)
    for field, tokens in budgets(w):
        if tokens > most:
            raise ValueError(
                f"{field} = {tokens}: at most {most:,} with model.n_experts {m.n_experts} under uniform routing "
                f"(the simulator tabulates the expected expert loads for every batch size up to it, "
                f"max_batch_tokens x n_experts cells, 2^26 at most)")
