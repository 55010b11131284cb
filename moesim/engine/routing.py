"""Routing: expert popularity, sampled expert loads, capacity, drops and padding. Pure numpy.

Shapes: ``L`` MoE layers, ``M`` microbatches, ``E`` routed experts, ``ep`` expert-parallel ranks.
Loads count token-expert assignments (a token routed to ``top_k`` experts counts ``top_k`` times)
for one EP group in one microbatch: the ``ep`` data-parallel replicas of the group each bring their
microbatch, so the group routes ``ep * tokens_per_replica`` tokens. Experts sit on EP ranks in
contiguous blocks of ``E / ep`` (rank ``r`` holds experts ``r*E/ep .. (r+1)*E/ep - 1``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from moesim.errors import InputError
from moesim.schemas import RoutingSpec


def capacity_per_expert(tokens: int, top_k: int, n_experts: int, capacity_factor: float) -> int:
    """Slots per expert: ``ceil(capacity_factor * tokens * top_k / n_experts)`` (Switch/GShard).

    ``tokens`` are the tokens routed together (one EP group, one microbatch). The product is rounded
    to 9 decimals first so float noise (1.1 * 100 = 110.00000000000001) does not add a slot.
    """
    return math.ceil(round(capacity_factor * tokens * top_k / n_experts, 9))


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


def rank_loads(expert_loads, ep: int) -> np.ndarray:
    """Tokens landing on each EP rank: ``[..., E] -> [..., ep]``, summing each rank's block of experts."""
    a = np.asarray(expert_loads)
    return a.reshape(*a.shape[:-1], ep, a.shape[-1] // ep).sum(axis=-1)


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
    per layer with concentration ``alpha``. trace: rows of the CSV, cycled over the layers.
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
    """Assignments per expert, ``[L, M, E]`` ints, each (layer, microbatch) a multinomial draw.

    ``tokens * top_k`` assignments per draw are spread by the layer's popularity ``[L, E]``.
    Vectorised: one numpy call for all layers and microbatches.
    """
    p = np.asarray(popularity, dtype=float)
    pv = np.broadcast_to(p[:, None, :], (p.shape[0], n_microbatches, p.shape[1]))
    return rng.multinomial(tokens * top_k, pv)


@dataclass(frozen=True)
class RoutingSample:
    """Sampled routing of one EP group over one step. Token counts are assignments (token x top_k).

    ``loads``/``kept``/``dropped``: ``[L, M, E]``. ``capacity``: slots per expert per microbatch.
    ``compute_tokens``: ``[L, M, ep, E/ep]`` tokens each expert actually computes (padded to
    ``capacity`` under ``drop``: the Switch/GShard layout; the real loads under ``dropless``).
    """

    loads: np.ndarray
    kept: np.ndarray
    dropped: np.ndarray
    capacity: int
    ep: int
    padded: bool

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
        if self.padded:
            L, M, E = self.loads.shape
            return np.full((L, M, self.ep, E // self.ep), self.capacity, dtype=np.int64)
        L, M, E = self.loads.shape
        return self.loads.reshape(L, M, self.ep, E // self.ep)

    @property
    def rank_tokens(self) -> np.ndarray:
        """Tokens each EP rank computes: ``[L, M, ep]``."""
        return self.compute_tokens.sum(axis=-1)

    @property
    def busiest_rank_expert_tokens(self) -> np.ndarray:
        """Tokens per expert of the EP rank with the most tokens: ``[L, M, E/ep]``."""
        per_rank = self.compute_tokens
        busiest = self.rank_tokens.argmax(axis=-1)[..., None, None]
        return np.take_along_axis(per_rank, busiest, axis=-2)[..., 0, :]

    @property
    def balanced_expert_tokens(self) -> float:
        """Tokens per expert if routing were perfectly even (padded: the capacity)."""
        if self.padded:
            return float(self.capacity)
        return float(self.loads[0, 0].sum()) / self.loads.shape[-1]

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
                   rng: np.random.Generator) -> RoutingSample:
    """Popularity, loads, capacity and drops for ``n_layers`` MoE layers of one EP group.

    ``tokens_per_group``: tokens the EP group routes in one microbatch (``ep`` replicas' worth).
    """
    pop = expert_popularity(spec, n_layers, n_experts, top_k, rng)
    loads = sample_loads(pop, tokens_per_group, top_k, n_microbatches, rng)
    cap = capacity_per_expert(tokens_per_group, top_k, n_experts, spec.capacity_factor)
    if spec.overflow == "drop":
        kept, dropped = apply_capacity(loads, cap)
    else:
        kept, dropped = loads, np.zeros_like(loads)
    return RoutingSample(loads, kept, dropped, cap, ep, padded=spec.overflow == "drop")
