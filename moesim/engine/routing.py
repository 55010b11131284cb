"""Routing: expert popularity, sampled expert loads, capacity, drops and padding. Pure numpy.

Shapes: ``L`` MoE layers, ``M`` microbatches, ``E`` routed experts, ``ep`` expert-parallel ranks.
Loads count token-expert assignments (a token routed to ``top_k`` experts counts ``top_k`` times)
for one EP group in one microbatch: the ``ep`` data-parallel replicas of the group each bring their
microbatch, so the group routes ``ep * tokens_per_replica`` tokens. Which rank holds which expert is
a :class:`~moesim.engine.placement.Placement` (contiguous blocks of ``E / ep``, or EPLB's
``(E + N) / ep`` slots per rank with copies of the hottest experts: ``placement.redundant_experts``).

Capacity is per *source* rank, as GShard, DeepSpeed and Megatron-core apply it: each of the ``ep``
ranks gates its own tokens, gives every expert ``capacity_per_expert(tokens_per_rank, ...)`` slots
and drops what overflows them per (source rank, expert); an expert therefore computes ``ep`` times
that many slots. Serving (``decode_cost.py``) uses the same rule with a replica's batch as the
source rank's tokens.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from moesim.engine.placement import Placement
from moesim.errors import InputError
from moesim.schemas import RoutingSpec

#: A product within this of an integer is that integer (half of ``round(x, 9)``'s last digit), or
#: within 4 float spacings of it for products too large for 1e-9 to be above their float noise.
_SNAP = 5e-10


def capacity_per_expert(tokens, top_k: int, n_experts: int, capacity_factor: float,
                        min_capacity: int = 0):
    """Slots each expert gives one source rank: ``max(ceil(cf * tokens * top_k / E), min_capacity)``.

    ``tokens`` (int or int array, any shape) are one source rank's tokens: one EP rank's microbatch
    in training, one replica's batch in serving. Returns an int for a scalar, an int64 array of
    ``tokens``' shape otherwise. The product is snapped to the nearest integer when float noise is
    all that separates them (``1.1 * 400 / 8`` is 55.000000000000007 in floats: 55 slots, not 56).
    ``min_capacity`` is DeepSpeed's (``deepspeed.moe.layer.MoE(min_capacity=4)``, applied in
    ``sharded_moe._capacity`` by ``top1gating``/``top2gating``/``topkgating``) and Megatron-core's
    ``moe_utils.get_capacity(..., min_capacity)``: small batches keep a few slots per expert.
    """
    exact = capacity_factor * np.asarray(tokens, dtype=float) * top_k / n_experts
    nearest = np.rint(exact)
    snap = np.abs(exact - nearest) <= np.maximum(_SNAP, 4 * np.spacing(nearest))
    cap = np.maximum(np.where(snap, nearest, np.ceil(exact)), min_capacity).astype(np.int64)
    return int(cap) if cap.ndim == 0 else cap


def apply_capacity(loads, capacity) -> tuple[np.ndarray, np.ndarray]:
    """(kept, dropped) per expert: an expert keeps at most ``capacity`` of the tokens sent to it.

    ``loads`` has any shape ending in experts; ``capacity`` broadcasts against it. The kept tokens are
    the first ``capacity`` in token order (see :func:`keep_mask`); counts only depend on the loads.
    """
    loads = np.asarray(loads)
    kept = np.minimum(loads, capacity)
    return kept, loads - kept


def keep_mask(expert_ids, n_experts: int, capacity: int) -> np.ndarray:
    """Which assignments survive capacity, in token order: the reference for kernel tests.

    ``expert_ids``: int array ``[tokens, top_k]`` of the experts each token picked. Assignments are
    visited token by token (and slot by slot within a token); each expert keeps the first
    ``capacity`` it receives. Returns a bool array of the same shape. Per expert, the kept count
    equals ``apply_capacity(bincount(ids), capacity)[0]``.
    """
    ids = np.asarray(expert_ids)
    flat = ids.reshape(-1)
    if flat.size and (flat.min() < 0 or flat.max() >= n_experts):
        raise ValueError(f"expert_ids must lie in [0, {n_experts}); got {flat.min()}..{flat.max()}")
    order = np.argsort(flat, kind="stable")  # grouped by expert, token order kept within a group
    sorted_ids = flat[order]
    group_start = np.searchsorted(sorted_ids, sorted_ids, side="left")
    position = np.empty_like(flat)
    position[order] = np.arange(flat.size) - group_start
    return (position < capacity).reshape(ids.shape)


def apply_capacity_per_source(source_loads, capacity) -> tuple[np.ndarray, np.ndarray]:
    """(kept, dropped) per expert, ``[..., E]``, of source ranks that each fill their own slots.

    ``source_loads``: ``[sources, ..., E]`` assignments each source rank sends each expert.
    ``capacity``: slots per (source rank, expert) (:func:`capacity_per_expert` of one rank's
    tokens). Each source rank keeps at most ``capacity`` per expert; kept and dropped are summed
    over the sources, so an expert keeps at most ``sources * capacity``.
    """
    kept, dropped = apply_capacity(source_loads, capacity)
    return kept.sum(axis=0), dropped.sum(axis=0)


def cap_inclusion(popularity, top_k: int) -> np.ndarray:
    """Popularity ``[..., E]`` (sums to 1) reshaped so no expert takes more than 1/top_k of the picks.

    A token picks ``top_k`` distinct experts, so one expert can receive at most every token, i.e. a
    share ``1/top_k`` of the assignments. Shares above the cap are clipped and the excess spread over
    the others in proportion to their popularity (water-filling).
    """
    p = np.array(popularity, dtype=float)
    cap = 1.0 / top_k
    for _ in range(p.shape[-1]):
        over = p > cap * (1 + 1e-12)
        if not over.any():
            break
        clipped = np.where(over, cap, p)
        free = ~over & (p < cap)
        excess = 1.0 - clipped.sum(axis=-1, keepdims=True)
        free_mass = np.where(free, clipped, 0.0).sum(axis=-1, keepdims=True)
        scale = np.where(free_mass > 0, 1.0 + excess / np.where(free_mass > 0, free_mass, 1.0), 1.0)
        p = np.where(free, clipped * scale, clipped)
    return p


def expert_popularity(spec: RoutingSpec, n_layers: int, n_experts: int, top_k: int,
                      rng: np.random.Generator) -> np.ndarray:
    """Share of assignments each expert receives, per MoE layer: ``[n_layers, E]``, rows sum to 1.

    uniform: 1/E. zipf: rank r gets ``(r+1)^-s``, the ranks shuffled per layer. dirichlet: one draw
    per layer with concentration ``alpha``. trace: rows of the CSV, one per MoE layer, cycled when fewer.
    """
    E = n_experts
    if spec.distribution == "uniform" or E == 1:
        p = np.full((n_layers, E), 1.0 / E)
    elif spec.distribution == "zipf":
        weights = (np.arange(1, E + 1, dtype=float)) ** (-spec.zipf_s)
        perm = rng.permuted(np.broadcast_to(np.arange(E), (n_layers, E)), axis=1)
        p = weights[perm]
    elif spec.distribution == "dirichlet":
        p = rng.dirichlet(np.full(E, spec.dirichlet_alpha), size=n_layers)
    else:
        rows = read_popularity_trace(spec.trace, E)
        if len(rows) > n_layers:  # rows for every layer, dense ones too, would give the MoE layers the wrong rows
            raise InputError(f"routing.trace = {str(spec.trace)!r}: {len(rows)} rows for {n_layers} MoE layers; give "
                             "one row per MoE layer, in order (dense layers have none), or fewer rows, repeated")
        p = rows[np.arange(n_layers) % len(rows)]
    p = p / p.sum(axis=-1, keepdims=True)
    return cap_inclusion(p, top_k)


#: Largest routing trace CSV read (one row per layer, one column per expert: a few KiB in practice).
MAX_TRACE_BYTES = 16 << 20


def read_popularity_trace(path: str | Path, n_experts: int) -> np.ndarray:
    """Read a routing trace CSV: one row per layer, one column per expert, non-negative weights.

    An optional first row of column names is skipped. Errors name the file, row and problem.
    """
    from moesim.loader import read_csv_rows

    rows = [r for r in read_csv_rows(path, MAX_TRACE_BYTES, f"routing.trace = {str(path)!r}")
            if r and any(c.strip() for c in r)]
    out = []
    for i, row in enumerate(rows, start=1):
        try:
            vals = [float(c) for c in row]
        except ValueError:
            if i == 1:
                continue  # header
            raise InputError(f"routing.trace = {str(path)!r}: row {i} has a value that is not a number") from None
        if len(vals) != n_experts:
            raise InputError(f"routing.trace = {str(path)!r}: row {i} has {len(vals)} columns; "
                             f"expected one per expert ({n_experts})")
        if min(vals) < 0 or not 0 < sum(vals) < math.inf or not all(math.isfinite(v) for v in vals):
            raise InputError(f"routing.trace = {str(path)!r}: row {i} must be finite, non-negative "
                             "and not all zero")
        out.append(vals)
    if not out:
        raise InputError(f"routing.trace = {str(path)!r}: no rows of expert weights")
    return np.asarray(out, dtype=float)


def sample_loads(popularity, tokens: int, top_k: int, n_microbatches: int,
                 rng: np.random.Generator) -> np.ndarray:
    """Tokens routed to each expert, ``[L, M, E]`` ints, for each (layer, microbatch) of ``tokens`` tokens,
    each token sent to ``top_k`` distinct experts (the loads sum to ``tokens * top_k`` exactly).

    A router picks distinct experts, so expert ``e``'s load has the variance ``tokens q (1 - q)``, ``q = k p_e``
    (``p``: the layer's share of assignments ``[L, E]``, capped by :func:`cap_inclusion`). A multinomial of
    ``tokens * top_k`` draws, with replacement, has ``tokens k p (1 - p)``: ``(1 - p) / (1 - q)`` times as much
    (1.75x at top-4 of 8, which read ~20 % more dropped tokens than distinct picks). So the multinomial's
    deviations from the mean are shrunk by ``sqrt((1 - q) / (1 - p))`` (1 for ``top_k`` 1: exact there), which
    gives each load its distinct-pick variance, then rounded to whole tokens keeping the sum (the steps of the
    rounded running sum). Vectorised: one multinomial call for all layers and microbatches.
    """
    p = np.asarray(popularity, dtype=float)
    shape = (p.shape[0], n_microbatches, p.shape[1])
    total = int(tokens) * int(top_k)
    draws = rng.multinomial(total, np.broadcast_to(p[:, None, :], shape))
    k = min(int(top_k), p.shape[1])
    if k == 1:
        return draws
    q = np.minimum(k * p, 1.0)
    shrink = np.sqrt(np.divide(1.0 - q, 1.0 - p, out=np.zeros_like(p), where=p < 1.0))[:, None, :]
    mean = (total * p)[:, None, :]
    loads = draws.astype(float)  # in place from here: [L, M, E] arrays are the routing's largest
    loads -= mean
    loads *= shrink
    loads += mean
    if not np.allclose(shrink, shrink[:, :, :1]):  # skewed shares shrink unevenly: restore the sum
        loads += (total - loads.sum(axis=-1, keepdims=True)) * p[:, None, :]
    np.clip(loads, 0.0, float(tokens), out=loads)
    # whole tokens, the sum kept: round the running sum and take its steps (each within 1 of its load)
    np.cumsum(loads, axis=-1, out=loads)
    np.rint(loads, out=loads)
    return np.diff(loads, axis=-1, prepend=0.0).astype(np.int64)


def expected_source_drops(loads, capacity: int, per_source: int, ep: int) -> np.ndarray:
    """Expected drops per expert, ``[..., E]`` float, of ``ep`` source ranks each capped at ``capacity``.

    ``loads`` ``[..., E]`` are the group's sampled loads, pooled over its ``ep`` source ranks, each
    of which routed ``per_source`` draws (assignments ``tokens * top_k`` under the multinomial
    sampler, tokens under the per-expert binomial one). Given the pooled load ``X`` of an expert,
    the share one source sent it is hypergeometric, ``H ~ Hypergeom(ep * per_source, per_source,
    X)`` (the group's draws are exchangeable and each source owns ``per_source`` of them), so the
    group drops ``ep * E[max(H - capacity, 0)]`` there (:func:`hypergeom_excess`). This is the
    expectation of :func:`apply_capacity_per_source` over the split (not a sample of it), for the
    price of one pooled draw instead of one per source rank. ``ep == 1``: ``max(X - capacity, 0)``.
    """
    x = np.asarray(loads)
    if ep == 1:
        return np.maximum(x - capacity, 0).astype(float)
    out = np.zeros(x.shape)
    over = x > capacity  # below it no source can exceed its slots (often most loads, in serving)
    n = x[over]
    if n.size:
        floor = np.maximum(n - ep * capacity, 0)  # no source keeps more than its capacity
        out[over] = np.clip(ep * hypergeom_excess(n, capacity, per_source, ep * per_source), floor, n)
    return out


#: Bernstein cut: beyond ``mean +- (_CUT_SD * sd + _CUT_ABS)`` a hypergeometric's tail mass is < e^-30.
_CUT_SD, _CUT_ABS = 8.0, 20.0


def _log_choose(a: float, b: float) -> float:
    """``log C(a, b)`` (0 <= b <= a)."""
    return math.lgamma(a + 1.0) - math.lgamma(b + 1.0) - math.lgamma(a - b + 1.0)


def _draws_at_cut(threshold: float, p: float, sign: float) -> float:
    """Draws ``m`` where ``m p + sign (8 sd + 20) = threshold``, ``sd = sqrt(m p (1 - p))`` (0 if none)."""
    b = sign * _CUT_SD * math.sqrt(p * (1 - p))
    disc = b * b - 4 * p * (sign * _CUT_ABS - threshold)
    if disc < 0:
        return 0.0
    return max((-b + math.sqrt(disc)) / (2 * p), 0.0) ** 2


def hypergeom_excess(draws, threshold: int, successes: int, population: int) -> np.ndarray:
    """``E[max(H - t, 0)]`` for ``H ~ Hypergeom(population N, successes K, draws n)``: floats, shape of ``draws``.

    ``draws``: int array (any shape, values in ``[0, N]``); ``threshold`` ``t``: an int (slots, in
    the draws' unit: tokens or assignments). Computed as a function of ``n`` for all the draws at
    once, by a recursion over ``n`` rather than a sum over ``H``'s support for each of them. Adding
    one draw to ``H_n`` adds a success with chance ``(K - H_n) / (N - n)``, which gives, with
    ``G_n = E[K - H_n; H_n >= t] / (N - n)`` and ``p_n = P(H_n = t - 1)``:

        f(n + 1) = f(n) + G_n,    G_{n+1} = G_n + (K - t)(K - t + 1) p_n / ((N - n)(N - n - 1)),

    and ``p_{n+1} / p_n = (N - K - n + t - 1)(n + 1) / ((n + 2 - t)(N - n))``: two cumulative sums
    of positive terms (no cancellation). Only the band of ``n`` where ``t`` lies within ``8 sd + 20``
    of ``E[H_n] = n K / N`` is summed (``sd`` the with-replacement, binomial one; about ``(16
    sqrt(t) + 40) N / K`` draws wide): below it ``f = 0`` and above it ``f = n K / N - t``, since
    beyond the cut ``H_n``'s tail mass is below ``e^-30`` (Bernstein's inequality, which sampling
    without replacement obeys with the binomial variance: Hoeffding 1963, section 6). That cut
    changes the result by at most ``2 K e^-30`` (< ``2e-13 K``) in absolute value. Float rounding,
    chiefly the log-binomials' ``lgamma`` of ``N``-sized arguments, adds a relative error of about
    ``2e-16 N ln N`` (1e-9 at ``N = 5e5``; the old per-draw sum had the same). Work and memory are
    ``O(W)`` for a band of ``W`` draws, whatever the number of draws asked for.
    """
    n = np.asarray(draws, dtype=np.int64)
    N, K, t = int(population), int(successes), int(threshold)
    if n.size == 0 or t >= K or t >= n.max():  # H <= min(K, n): nothing above t
        return np.zeros(n.shape)
    if t <= 0:  # H >= 0 >= t
        return n * (K / N) - t
    p, j = K / N, t - 1
    lo = max(math.floor(_draws_at_cut(t, p, 1.0)), j)  # f(n <= lo) = 0: P(H_n >= t) < e^-30
    sat = min(math.ceil(_draws_at_cut(t, p, -1.0)), N - K + j)  # f(n >= sat) = n K / N - t
    hi = max(min(sat, int(n.max())), lo)
    f = np.zeros(hi - lo + 1)  # f(lo) .. f(hi)
    if hi - lo >= 2:
        m = np.arange(lo, hi - 1, dtype=float)  # terms m = lo .. hi - 2
        r = m[:-1]
        log_p = np.full(m.size, _log_choose(K, j) + _log_choose(N - K, lo - j) - _log_choose(N, lo))
        log_p[1:] += np.cumsum(np.log((N - K + j - r) * (r + 1) / ((r + 1 - j) * (N - r))))
        term = np.exp(log_p + math.log((K - t) * (K - t + 1)) - np.log((N - m) * (N - m - 1)))
        np.cumsum(np.cumsum(term), out=f[2:])  # G_lo ~ 0 (below the cut), so f(lo + 1) ~ 0 too
    out = f[np.clip(n, lo, hi) - lo]
    if hi < n.max():  # above the band
        np.copyto(out, n * p - t, where=n > hi)
    return out


@dataclass(frozen=True)
class RoutingSample:
    """Sampled routing of one EP group over one step. Token counts are assignments (token x top_k).

    ``loads``/``kept``/``dropped``: ``[L, M, E]``, summed over the group's ``ep`` source ranks
    (``kept``/``dropped`` floats: expected over how the loads split between the sources).
    ``capacity_per_source``: slots each expert gives each source rank per microbatch; ``capacity``
    (``ep`` times that) is what an expert computes under ``drop`` (the padded Switch/GShard layout).
    ``compute_tokens``: ``[L, M, ep, slots/ep]`` tokens each expert slot actually computes
    (``capacity`` under ``drop``; the real loads under ``dropless``), laid out by ``placement``; a
    replicated expert's tokens (and, under ``drop``, its padded slots) split evenly over its copies.
    """

    loads: np.ndarray
    kept: np.ndarray
    dropped: np.ndarray
    capacity_per_source: int
    placement: Placement
    padded: bool

    @property
    def ep(self) -> int:
        """Expert-parallel ranks of the group (also its source ranks)."""
        return self.placement.ep

    @property
    def capacity(self) -> int:
        """Slots per expert per microbatch over the EP group: ``ep * capacity_per_source``."""
        return self.ep * self.capacity_per_source

    @property
    def routed_per_layer(self) -> np.ndarray:
        """Assignments routed per layer, summed over experts and microbatches: ``[L]``."""
        return self.loads.sum(axis=(1, 2))

    @property
    def padding(self) -> np.ndarray:
        """Empty expert slots ``capacity * E - kept`` per (layer, microbatch): ``[L, M]`` (0 dropless).

        Equals DESIGN's ``capacity * n_experts - routed`` whenever nothing is dropped.
        """
        if not self.padded:
            return np.zeros(self.loads.shape[:2], dtype=np.int64)
        return self.capacity * self.loads.shape[-1] - self.kept.sum(axis=-1)

    @property
    def compute_tokens(self) -> np.ndarray:
        """Tokens each expert slot computes, by rank: ``[L, M, ep, slots/ep]``."""
        base = np.full(self.loads.shape, self.capacity, dtype=np.int64) if self.padded else self.loads
        return self.placement.split(base, layer_axis=0)

    @property
    def rank_tokens(self) -> np.ndarray:
        """Tokens each EP rank computes: ``[L, M, ep]``."""
        return self.compute_tokens.sum(axis=-1)

    @property
    def busiest_rank_expert_tokens(self) -> np.ndarray:
        """Tokens per expert slot of the EP rank with the most tokens: ``[L, M, slots/ep]``."""
        per_rank = self.compute_tokens
        busiest = self.rank_tokens.argmax(axis=-1)[..., None, None]
        return np.take_along_axis(per_rank, busiest, axis=-2)[..., 0, :]

    @property
    def balanced_expert_tokens(self) -> float:
        """Tokens per expert slot if routing were perfectly even (padded: the capacity, shared by the slots)."""
        slots = self.loads.shape[-1] + self.placement.redundant_experts
        if self.padded:  # every expert's capacity, spread over its slots
            return float(self.capacity) * self.loads.shape[-1] / slots
        return float(self.loads[0, 0].sum()) / slots

    def layer_table(self, layer_ids) -> dict[str, list]:
        """Per-layer stats averaged over microbatches (EP-group totals), for ``result.tables``."""
        routed = self.loads.sum(-1).mean(axis=1)
        kept = self.kept.sum(-1).mean(axis=1)
        dropped = self.dropped.sum(-1).mean(axis=1)
        padding = self.padding.mean(axis=1)
        busiest = self.rank_tokens.max(-1).mean(axis=1)
        avg_rank = self.rank_tokens.mean(-1).mean(axis=1)
        return {
            "layer": [int(x) for x in layer_ids],
            "routed": routed.tolist(), "kept": kept.tolist(), "dropped": dropped.tolist(),
            "padding": padding.tolist(),
            "capacity": [int(self.capacity)] * len(layer_ids),
            "dropped_fraction": (dropped / np.maximum(routed, 1)).tolist(),
            "busiest_rank_tokens": busiest.tolist(),
            "rank_imbalance": (busiest / np.maximum(avg_rank, 1e-12)).tolist(),
        }


def sample_routing(spec: RoutingSpec, n_layers: int, n_experts: int, top_k: int, ep: int,
                   tokens_per_group: int, n_microbatches: int,
                   rng: np.random.Generator, redundant_experts: int = 0) -> RoutingSample:
    """Popularity, loads, capacity and drops for ``n_layers`` MoE layers of one EP group.

    ``tokens_per_group``: tokens the EP group routes in one microbatch (``ep`` source ranks' worth,
    so a multiple of ``ep``). The group's loads are one multinomial draw (the sum of the sources'
    draws). Capacity is each source rank's (:func:`capacity_per_expert` of ``tokens_per_group /
    ep``, at least ``spec.min_capacity``) and ``drop`` drops per (source rank, expert): the
    expected drops over how the sampled loads split between the sources
    (:func:`expected_source_drops`), so ``kept`` and ``dropped`` are floats.
    ``redundant_experts`` > 0: the experts are laid out by EPLB from the layers' popularity
    (:meth:`Placement.balanced`); capacity and drops stay per expert.
    """
    placement = Placement.contiguous(n_experts, ep) if not redundant_experts else None
    if tokens_per_group % ep:
        raise ValueError(f"tokens_per_group = {tokens_per_group}: must be a multiple of ep ({ep})")
    tokens_per_rank = tokens_per_group // ep
    pop = expert_popularity(spec, n_layers, n_experts, top_k, rng)
    if placement is None:
        placement = Placement.balanced(pop, ep, redundant_experts)
    loads = sample_loads(pop, tokens_per_group, top_k, n_microbatches, rng)
    cap = capacity_per_expert(tokens_per_rank, top_k, n_experts, spec.capacity_factor, spec.min_capacity)
    if spec.overflow == "drop":
        dropped = expected_source_drops(loads, cap, tokens_per_rank, ep)  # a source's tokens: one slot each at most
    else:
        dropped = np.zeros(loads.shape)
    return RoutingSample(loads, loads - dropped, dropped, cap, placement, padded=spec.overflow == "drop")
