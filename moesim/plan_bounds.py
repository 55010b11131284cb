"""Bounds on what a plan can reach, known before simulating it (branch and bound's pruning). Pure functions.

* serving, output tokens/s per device (:meth:`ServingBounds.tokens_per_s_per_device`), from the
  scenario's own cost model (``IterationCost``, the serving engine's): iterations cost at least a
  line ``alpha + beta T`` in their tokens ``T`` (every layer, the experts at their expected load
  under uniform routing, none under skew; no host time), a slot needs at least one iteration per
  ``b`` decode tokens and computes ``r`` prompt tokens per output token, and each output token pays
  attention over the mean decode context and the head; per device over ``tp``. A lock-step
  (DP-attention) group per rank, without attention and the head. Not bounded (+inf) under
  speculative decoding, nor under two-batch overlap (it hides the dispatch behind compute).
* the SLO (:meth:`ServingBounds.slo_unreachable`): a plan whose TPOT at batch 1, or prefill of the
  25th-percentile prompt, already exceeds its limit can never hold.
* training (:func:`training_bound`): step time from the step's FLOPs (a fine-tune's: no frozen weight's
  gradient, no backward before its first trainable block) at the compute dtype's dense peak times
  the best efficiency any GEMM reaches in the cost model, with the schedule's analytic bubble,
  times ``TRAINING_SAFETY``.

Rates are multiplied by ``BOUND_SLACK`` for the sampling noise of the measured objective.
"""

from __future__ import annotations

import math
from typing import Any

from moesim.plan_space import Objective

#: Analytic rate bounds are multiplied by this margin for sampling noise in the measured objective.
BOUND_SLACK = 1.1
#: Training step-time bound times this (dropped expert tokens do no FLOPs).
TRAINING_SAFETY = 0.9


def price_per_device_s(s) -> float:
    return s.hardware.device.usd_per_hour / 3600.0


def rate_to_objective(objective: Objective, tokens_per_s_per_device: float, s) -> float:
    """A serving rate bound (output tokens/s per device) as a bound on ``objective``."""
    x = tokens_per_s_per_device
    if objective.name == "tokens_per_s_per_device":
        return x
    if x <= 0:
        return math.inf
    return price_per_device_s(s) / x * 1e6 if math.isfinite(x) else 0.0


def length_quantile(dist, q: float) -> float | None:
    """The ``q`` quantile of a length distribution (None for a trace)."""
    if dist.dist == "fixed":
        v = float(dist.value)
    elif dist.dist == "uniform":
        v = dist.low + q * (dist.high - dist.low)
    elif dist.dist == "lognormal":
        from statistics import NormalDist

        v = dist.median * math.exp(dist.sigma * NormalDist().inv_cdf(q))
    else:
        return None
    return max(1.0, min(v, dist.max) if dist.max is not None else v)


class ServingBounds:
    """Rate and latency bounds per (hardware, tp, pp, ep) layout, cached across batch limits."""

    def __init__(self) -> None:
        self._cache: dict[tuple, Any] = {}

    def _curves(self, s):
        import numpy as np

        from moesim.costmodel.model import build_cost_model
        from moesim.engine.serving.decode_cost import IterationCost

        w, m, p = s.workload, s.model, s.plan
        lengths = _lengths(w)
        key = (s.hardware.model_dump_json(), p.tp, p.pp, p.ep, w.max_batch_tokens, w.chunked_prefill,
               m.model_dump_json(), s.routing.model_dump_json(), s.placement.model_dump_json(), lengths,
               w.local_attention_mode, w.engine, p.dp_attention)
        if key in self._cache:
            return self._cache[key]
        cm = build_cost_model(s.hardware)
        longest = int(w.prompt_tokens.upper_bound_tokens() or m.max_seq_len)
        tmax = max(w.max_batch_tokens, 1024) + (0 if w.chunked_prefill else longest)
        ctx = lengths[2]
        cost = IterationCost(s, cm, np.random.default_rng(0), max_tokens=tmax, max_context=int(ctx) + 2)
        t = np.arange(1, tmax + 1, dtype=float)
        fixed = np.asarray(cost.fixed_s(t), dtype=float)
        # under skew the experts' time is left out (a batch may touch fewer)
        experts = np.zeros_like(t) if cost.skewed else np.asarray(cost.uniform_experts_s(t)[0], dtype=float)
        if p.dp_attention:  # a lock-step group's iteration, at ``t`` tokens per rank on average (see lockstep_floor)
            fixed = np.minimum.accumulate(fixed[::-1])[::-1]
        head = np.asarray(cost.head_s(t), dtype=float)
        out = (cost, t, fixed + experts, head, lengths)
        self._cache[key] = out
        return out

    def tokens_per_s_per_device(self, s) -> float:
        """Optimistic output tokens/s per device at any load.

        An engine slot makes ``O`` output tokens with ``r O`` prompt tokens in ``N`` iterations of
        ``T_i`` tokens (at most ``b`` decoding sequences, at most ``T_max`` tokens each), so
        ``N >= max(O / b, (1 + r) O / T_max)``. For any line ``alpha + beta T`` below the iteration
        time (``alpha >= 0``), the time is at least ``N alpha + beta (1 + r) O``; each output token
        also pays attention over the mean decode context and the head at batch ``b``. The best line
        gives the bound. ``b`` is the batch limit, or the KV pool over the mean decode context.

        A lock-step group (``plan.dp_attention``) is bounded per rank: an iteration lasts at least
        its busiest rank's own work at its tokens plus the experts at the group's mean tokens per
        rank (``IterationCost.group_time_s``), so at least ``F(t) + E(t)`` at the mean ``t``,
        ``F`` the rest's time made non-decreasing (the lowest at ``t`` or more tokens) and ``E``
        the experts'. Attention and the head are left out: the group is timed by two of its ranks,
        which need not be the ones whose attention and head are the mean's.
        """
        import numpy as np

        from moesim.engine.local_attention import slot_map
        from moesim.memory import kv_cache_capacity_tokens

        w, p = s.workload, s.plan
        if w.speculative is not None or (p.overlap_alltoall and p.ep > 1):
            return math.inf  # a verify step's tokens, or two-batch overlap hiding the dispatch: not priced here
        cost, t, base, head, (_, r, ctx) = self._curves(s)
        kv_engine = kv_cache_capacity_tokens(s) / p.pp
        slots = slot_map(s.model, w.local_attention_mode)  # local layers keeping only their window's KV
        held = max(ctx, 1.0) if slots is None else max(float(slots(int(ctx))), 1.0)
        b = int(max(1, min(w.max_batch_seqs, kv_engine // held, t.size)))
        per_token = 0.0 if p.dp_attention else (cost.attention_s(np.ones(b), np.full(b, int(ctx) + 1)) + head[b - 1]) / b
        beta = np.linspace(0.0, float(np.min(base / t)), 65)
        alpha = np.min(base[None, :] - beta[:, None] * t[None, :], axis=1)
        ok = alpha >= 0
        n_per_token = max(1.0 / b, (1 + r) / t.size)
        tau = float(np.max(alpha[ok] * n_per_token + beta[ok] * (1 + r))) + per_token
        return 1.0 / tau / p.tp * BOUND_SLACK

    def slo_unreachable(self, s, slo) -> str:
        """Why ``slo`` can never hold on ``s`` ("" when it may)."""
        _, t, base, head, _ = self._curves(s)
        w = s.workload
        tpot = float(base[0] + head[0])
        p = length_quantile(w.prompt_tokens, 0.25)
        o = length_quantile(w.output_tokens, 0.25)
        ttft = None if p is None else float(base[min(int(p), t.size) - 1] + head[0])
        why = []
        for key, limit in slo.limits.items():
            if key.endswith("_mean_s"):
                continue
            if key.startswith("tpot") and tpot > limit:
                why.append(f"{key.removesuffix('_s')} >= {tpot:.3g} s (one decode step at batch 1) > {limit:g} s")
            if key.startswith("ttft") and ttft is not None and ttft > limit:
                why.append(f"{key.removesuffix('_s')} >= {ttft:.3g} s (prefill of a {p:.0f}-token prompt) > {limit:g} s")
            if key.startswith("e2e") and ttft is not None and o is not None and ttft + (o - 1) * tpot > limit:
                why.append(f"{key.removesuffix('_s')} >= {ttft + (o - 1) * tpot:.3g} s > {limit:g} s")
        return "; ".join(why)

    def ttft_lower(self, s) -> float:
        """A lower bound on TTFT p50..p99: prefill of the 25th-percentile prompt alone."""
        _, t, base, head, _ = self._curves(s)
        p = length_quantile(s.workload.prompt_tokens, 0.25)
        return 0.0 if p is None else float(base[min(int(p), t.size) - 1] + head[0]) / BOUND_SLACK


def mean_output_tokens(units: dict[str, dict]) -> float | None:
    """Mean output tokens per request of the (shared) workload; None for a trace."""
    if not units:
        return None
    w = next(iter(units.values()))["scenario"].workload
    return w.output_tokens.mean_tokens(None) if w.output_tokens.dist != "trace" else None


def _lengths(w) -> tuple[float, float, float]:
    """(mean prompt, prompt tokens computed per output token, mean context of a decode step) of the
    workload's length distributions, from 20,000 draws of a fixed seed (traces: 1, 0, 1: no bound)."""
    import numpy as np

    if "trace" in (w.prompt_tokens.dist, w.output_tokens.dist):
        return 1.0, 0.0, 1.0
    rng = np.random.default_rng(0)
    p = w.prompt_tokens.sample(20_000, rng).astype(float)
    o = w.output_tokens.sample(20_000, rng).astype(float)
    ctx = float(np.sum(o * (p + (o - 1) / 2)) / np.sum(o))
    return float(p.mean()), float(p.sum() * (1 - w.prefix_cache_hit) / o.sum()), ctx


def peak_efficiency(s, dtype: str) -> float:
    """The largest fraction of ``dtype``'s dense peak any GEMM reaches in the scenario's cost model
    (a grid of shapes up to 64K): no op of a training step runs faster than this."""
    import numpy as np

    from moesim.costmodel.model import build_cost_model

    key = (s.hardware.model_dump_json(), dtype)
    if key not in _EFFICIENCY:
        cm = build_cost_model(s.hardware)
        m = np.array([1024, 2048, 4096, 8192, 16384, 32768, 65536], dtype=float)
        eff = max(float(np.max(2 * m * n * k / np.asarray(cm.gemm_s(m, int(n), int(k), dtype), dtype=float)))
                  for n in m for k in m) / s.hardware.device.peak_flops(dtype)
        _EFFICIENCY[key] = min(1.0, eff) if math.isfinite(eff) and eff > 0 else 1.0
    return _EFFICIENCY[key]


_EFFICIENCY: dict[tuple, float] = {}


def training_bound(s, objective: Objective) -> float:
    """Optimistic ``objective`` of a training plan: its FLOPs (recompute included) at the best GEMM
    efficiency of the cost model, stretched by the schedule's analytic bubble."""
    from moesim.engine.training.schedules import schedule_for
    from moesim.finetune import step_flops_per_token
    from moesim.packing import micro_batch_seqs, row_tokens
    from moesim.precision import scenario_precision

    m, p, w, hw = s.model, s.plan, s.workload, s.hardware
    devices = p.n_devices
    # computed tokens (padded rows included: at least the real ones, so the bound stays optimistic)
    row = row_tokens(w, micro_batch_seqs(w, p), p.cp)
    tokens = w.global_batch_seqs * row
    flops = tokens * step_flops_per_token(m, w.trainable, row, p.recompute, w.mtp_layers)  # fine-tuning: fewer
    dtype = scenario_precision(s).compute_dtype
    bubble = schedule_for(p).bubble_fraction(p.pp, p.microbatches, p.virtual_stages) if p.pp > 1 else 0.0
    step = flops / (devices * hw.device.peak_flops(dtype) * peak_efficiency(s, dtype)) / (1 - bubble)
    step *= TRAINING_SAFETY
    if objective.name == "step_time_s":
        return step
    if objective.name == "usd_per_mtok":
        return devices * hw.device.usd_per_hour / 3600 * step / tokens * 1e6
    if objective.name == "tokens_per_s":
        return tokens / step
    if objective.name == "tokens_per_s_per_device":
        return tokens / step / devices
    model_flops = tokens * step_flops_per_token(m, w.trainable, row, mtp_layers=w.mtp_layers)
    return model_flops / step / (devices * hw.device.peak_flops("bf16"))  # mfu
