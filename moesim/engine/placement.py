"""Which EP rank holds which expert: one object for every engine. Pure numpy.

Shapes: ``E`` routed experts, ``ep`` expert-parallel ranks. Loads are arrays ``[..., E]`` (any
leading axes: layers, microbatches, samples); per-rank views are ``[..., ep]`` (sums) or
``[..., ep, experts_per_rank]`` (the experts each rank computes, in slot order).

Today every engine uses the contiguous layout of Megatron-core and DeepSpeed: rank ``r`` holds
experts ``r*E/ep .. (r+1)*E/ep - 1`` (``Placement.contiguous``).

A replicated layout (EPLB / DeepSeek-V3 redundant experts: ``ep * slots_per_rank > E`` slots, a
slot -> expert map, an expert's tokens split over its replicas) fits behind the same methods: it
would hold the map (``slot_expert``, ``[ep, slots_per_rank]``), ``experts_per_rank`` would be the
slots per rank, ``split`` would gather each slot's share of its expert's load (load divided by the
expert's replica count) into ``[..., ep, slots_per_rank]``, ``per_rank`` would sum that, and
``rank_of`` would give each expert's replica ranks. Callers read only these methods, never ``E / ep``,
so they keep working unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Placement:
    """Experts on EP ranks. Build it with :meth:`contiguous`; ``ep`` must divide ``n_experts``."""

    n_experts: int
    ep: int

    def __post_init__(self) -> None:
        if int(self.n_experts) < 1:
            raise ValueError(f"n_experts = {self.n_experts}: must be at least 1")
        if int(self.ep) < 1 or self.n_experts % self.ep:
            raise ValueError(f"ep = {self.ep}: must be a positive divisor of n_experts ({self.n_experts})")

    @classmethod
    def contiguous(cls, n_experts: int, ep: int) -> Placement:
        """Rank ``r`` holds the ``n_experts / ep`` consecutive experts starting at ``r * n_experts / ep``."""
        return cls(int(n_experts), int(ep))

    @property
    def experts_per_rank(self) -> int:
        """Expert slots on each EP rank (``E / ep``)."""
        return self.n_experts // self.ep

    def rank_of(self, experts=None) -> np.ndarray:
        """EP rank of each expert id in ``experts`` (int array, any shape; default all ``E`` experts)."""
        ids = np.arange(self.n_experts) if experts is None else np.asarray(experts)
        if ids.size and (ids.min() < 0 or ids.max() >= self.n_experts):
            raise ValueError(f"expert ids must lie in [0, {self.n_experts}); got {ids.min()}..{ids.max()}")
        return ids // self.experts_per_rank

    def split(self, loads) -> np.ndarray:
        """Loads ``[..., E]`` as each rank's experts: ``[..., ep, experts_per_rank]`` (a view)."""
        a = np.asarray(loads)
        if a.shape[-1:] != (self.n_experts,):
            raise ValueError(f"loads end in {a.shape[-1:]}; expected one entry per expert ({self.n_experts})")
        return a.reshape(*a.shape[:-1], self.ep, self.experts_per_rank)

    def per_rank(self, loads) -> np.ndarray:
        """Tokens landing on each EP rank: ``[..., E] -> [..., ep]``."""
        return self.split(loads).sum(axis=-1)
