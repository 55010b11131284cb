"""Which EP rank holds which expert: one object for every engine. Pure numpy.

Shapes: ``E`` routed experts, ``ep`` expert-parallel ranks. Loads are arrays ``[..., E]`` (any
leading axes: layers, microbatches, samples); per-rank views are ``[..., ep]`` (sums) or
``[..., ep, experts_per_rank]`` (the experts each rank computes, in slot order).

By default every engine uses the contiguous layout of Megatron-core and DeepSpeed: rank ``r`` holds
experts ``r*E/ep .. (r+1)*E/ep - 1`` (``Placement.contiguous``).

A replicated layout (EPLB, DeepSeek-V3's redundant experts; ``Placement.balanced``) has
``E + N`` slots, ``(E + N) / ep`` per rank, per MoE layer: ``slot_expert`` (``[L, E + N]``, rank
``r``'s slots are columns ``r*S/ep .. (r+1)*S/ep - 1``) maps each slot to the expert it holds, and
an expert's tokens split evenly over its copies (``copies``). ``experts_per_rank`` is then the slots
per rank, ``split`` gathers each slot's share of its expert's load (the load divided by the
expert's copies) into ``[..., ep, slots_per_rank]`` and ``per_rank`` sums that. Callers read only
these methods, never ``E / ep``. With per-layer maps (``L > 1``) ``split`` needs the loads' layer
axis (``layer_axis``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class Placement:
    """Experts on EP ranks. Build it with :meth:`contiguous` (``ep`` divides ``n_experts``) or
    :meth:`balanced` (EPLB: ``ep`` divides ``n_experts + redundant_experts``)."""

    n_experts: int
    ep: int
    #: ``[L, E + N]`` expert id held by each slot (rank-major), or None: contiguous, no replicas.
    slot_expert: np.ndarray | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        if int(self.n_experts) < 1:
            raise ValueError(f"n_experts = {self.n_experts}: must be at least 1")
        if self.slot_expert is None:
            if int(self.ep) < 1 or self.n_experts % self.ep:
                raise ValueError(f"ep = {self.ep}: must be a positive divisor of n_experts ({self.n_experts})")
            return
        se = np.asarray(self.slot_expert)
        if se.ndim != 2 or se.shape[1] < self.n_experts:
            raise ValueError(f"slot_expert has shape {se.shape}; expected [layers, n_experts + redundant]")
        if int(self.ep) < 1 or se.shape[1] % self.ep:
            raise ValueError(f"ep = {self.ep}: must be a positive divisor of n_experts + redundant experts "
                             f"({se.shape[1]})")
        if se.min() < 0 or se.max() >= self.n_experts:
            raise ValueError(f"slot_expert ids must lie in [0, {self.n_experts})")
        counts = np.stack([np.bincount(row, minlength=self.n_experts) for row in se])
        if (counts == 0).any():
            raise ValueError("slot_expert leaves an expert without a slot")
        object.__setattr__(self, "slot_expert", se.astype(np.int64))
        object.__setattr__(self, "_copies", counts)

    @classmethod
    def contiguous(cls, n_experts: int, ep: int) -> Placement:
        """Rank ``r`` holds the ``n_experts / ep`` consecutive experts starting at ``r * n_experts / ep``."""
        return cls(int(n_experts), int(ep))

    @classmethod
    def balanced(cls, popularity, ep: int, redundant_experts: int, pack: bool = False) -> Placement:
        """EPLB: ``redundant_experts`` extra slots copy the hottest experts, then slots are packed on ranks.

        ``popularity`` ``[L, E]`` (or ``[E]``): each expert's expected load per MoE layer. Per layer,
        as DeepSeek's EPLB (``eplb.py``: ``replicate_experts`` then ``balanced_packing``): each extra
        slot goes to the expert with the highest load per copy; then the copies, heaviest share
        first, each go to the least-loaded rank that still has a free slot, so every rank holds
        ``(E + N) / ep`` slots. ``redundant_experts = 0`` gives :meth:`contiguous`, unless ``pack``:
        then the ``E`` experts themselves are packed (EPLB without replicas, as a periodic rebalance
        does: ``serving.drift``).
        """
        n_red = int(redundant_experts)
        pop = np.atleast_2d(np.asarray(popularity, dtype=float))
        n_layers, n_experts = pop.shape
        if n_red == 0 and not pack:
            return cls.contiguous(n_experts, ep)
        if n_red < 0 or n_red > n_experts:
            raise ValueError(f"redundant_experts = {n_red}: must lie in [0, n_experts ({n_experts})]")
        n_slots = n_experts + n_red
        if int(ep) < 1 or n_slots % ep:
            raise ValueError(f"ep = {ep}: must be a positive divisor of n_experts + redundant experts ({n_slots})")
        rows = np.arange(n_layers)
        copies = np.ones((n_layers, n_experts), dtype=np.int64)
        for _ in range(n_red):  # replicate_experts: the highest load per copy gets one more copy
            copies[rows, np.argmax(pop / copies, axis=-1)] += 1
        slot_ids = np.stack([np.repeat(np.arange(n_experts), c) for c in copies])  # [L, S]
        share = np.take_along_axis(pop / copies, slot_ids, axis=-1)
        order = np.argsort(-share, axis=-1, kind="stable")  # balanced_packing: heaviest copy first
        per_rank = n_slots // ep
        rank_load = np.zeros((n_layers, ep))
        filled = np.zeros((n_layers, ep), dtype=np.int64)
        out = np.empty((n_layers, n_slots), dtype=np.int64)
        for i in range(n_slots):
            j = order[:, i]
            r = np.argmin(np.where(filled < per_rank, rank_load, np.inf), axis=-1)
            out[rows, r * per_rank + filled[rows, r]] = slot_ids[rows, j]
            rank_load[rows, r] += share[rows, j]
            filled[rows, r] += 1
        return cls(n_experts, int(ep), out)

    def slot_map(self, n_layers: int = 1) -> np.ndarray:
        """Expert id of every slot, ``[L, E + N]`` (rank-major); the contiguous layout as ``arange(E)`` rows."""
        if self.slot_expert is None:
            return np.broadcast_to(np.arange(self.n_experts), (int(n_layers), self.n_experts))
        return self.slot_expert

    @property
    def redundant_experts(self) -> int:
        """Extra slots holding copies (0: contiguous)."""
        return 0 if self.slot_expert is None else self.slot_expert.shape[1] - self.n_experts

    @property
    def experts_per_rank(self) -> int:
        """Expert slots on each EP rank (``(E + N) / ep``; ``E / ep`` without replicas)."""
        return self.slots_per_rank(self.n_experts, self.ep, self.redundant_experts)

    @staticmethod
    def slots_per_rank(n_experts: int, ep: int, redundant_experts: int = 0) -> int:
        """Expert slots each of ``ep`` ranks holds, ``(E + N) / ep``, before any layout is chosen."""
        return (int(n_experts) + int(redundant_experts)) // int(ep)

    @property
    def copies(self) -> np.ndarray:
        """Copies of each expert per layer: ``[L, E]`` ints (``[1, E]`` of ones without replicas)."""
        if self.slot_expert is None:
            return np.ones((1, self.n_experts), dtype=np.int64)
        return self._copies  # type: ignore[attr-defined]

    def rank_of(self, experts=None, layer: int = 0) -> np.ndarray:
        """EP rank of each expert id in ``experts`` (int array, any shape; default all ``E`` experts).

        With replicas: the rank of the expert's first copy in MoE layer ``layer``.
        """
        ids = np.arange(self.n_experts) if experts is None else np.asarray(experts)
        if ids.size and (ids.min() < 0 or ids.max() >= self.n_experts):
            raise ValueError(f"expert ids must lie in [0, {self.n_experts}); got {ids.min()}..{ids.max()}")
        if self.slot_expert is None:
            return ids // self.experts_per_rank
        row = self.slot_expert[layer]
        first = np.full(self.n_experts, row.size)
        np.minimum.at(first, row, np.arange(row.size))
        return first[ids] // self.experts_per_rank

    def split(self, loads, layer_axis: int | None = None) -> np.ndarray:
        """Loads ``[..., E]`` as each rank's experts: ``[..., ep, experts_per_rank]``.

        Contiguous: a view. With replicas each slot gets its expert's load over the expert's copies
        (floats; the slots' sum is the loads' sum); per-layer maps need ``layer_axis``, the axis of
        ``loads`` that runs over the MoE layers (its length the map's layers).
        """
        a = np.asarray(loads)
        if a.shape[-1:] != (self.n_experts,):
            raise ValueError(f"loads end in {a.shape[-1:]}; expected one entry per expert ({self.n_experts})")
        if self.slot_expert is None:
            return a.reshape(*a.shape[:-1], self.ep, self.experts_per_rank)
        se = self.slot_expert
        share = 1.0 / np.take_along_axis(self.copies, se, axis=-1)  # [L, S]
        if se.shape[0] == 1:
            out = a[..., se[0]] * share[0]
        else:
            if layer_axis is None:
                raise ValueError("a per-layer placement needs the loads' layer_axis")
            ax = layer_axis % a.ndim
            if ax == a.ndim - 1 or a.shape[ax] != se.shape[0]:
                raise ValueError(f"loads' axis {layer_axis} has {a.shape[ax]} entries; expected one per "
                                 f"MoE layer ({se.shape[0]})")
            moved = np.moveaxis(a, ax, -2)  # [..., L, E]
            idx = np.broadcast_to(se, moved.shape[:-1] + se.shape[-1:])
            out = np.moveaxis(np.take_along_axis(moved, idx, axis=-1) * share, -2, ax)
        return out.reshape(*out.shape[:-1], self.ep, self.experts_per_rank)

    def per_rank(self, loads, layer_axis: int | None = None) -> np.ndarray:
        """Tokens landing on each EP rank: ``[..., E] -> [..., ep]``."""
        return self.split(loads, layer_axis).sum(axis=-1)

    def imbalance(self, loads, layer_axis: int | None = None) -> np.ndarray:
        """Max over mean tokens per EP rank, ``[..., E] -> [...]`` (1 where nothing is routed)."""
        r = self.per_rank(loads, layer_axis)
        mean = r.mean(axis=-1)
        return np.where(mean > 0, r.max(axis=-1) / np.where(mean > 0, mean, 1.0), 1.0)
