"""The routed experts of a serving iteration: their loads, layout, drift and seconds.

:class:`RoutedExperts` is the part of :class:`~moesim.engine.serving.decode_cost.IterationCost`
that knows where tokens go: the expected uniform load (tabulated per batch size), the sampled
loads under skewed routing (a pool of ``SKEW_POOL`` draws per batch size, the busiest
``BUSIEST_RANKS`` ranks priced per layer), capacity and drops per source replica, and popularity
drift with periodic EPLB rebalancing (``serving.drift``). It prices the op graph's routed-expert
ops (``ops.expert_ops``) and nothing else; the rest of the iteration is ``decode_cost``'s.

The host class sets ``s``, ``cm``, ``dims``, ``dtypes``, ``ep_sources``, ``max_tokens`` and ``tbo``
(its two-batch overlap or None, whose load pool a routing change clears), calls
:meth:`_init_routing` before pricing anything, and builds the uniform tables ``_experts`` and
``_dropped`` (by batch size) from :meth:`uniform_experts_s`.
"""

from __future__ import annotations

import numpy as np

from moesim.engine import expert_load
from moesim.engine.ops import expert_ops, total_s
from moesim.engine.routing import capacity_per_expert, expected_source_drops
from moesim.engine.serving.drift import check_drift, drift_state
from moesim.engine.serving.layout import expert_layout
from moesim.engine.serving.pools import PoolStreams

SKEW_POOL = 8  # load samples kept per batch size under skewed routing
#: Ranks per layer priced under skew: the busiest by tokens (the slowest is among them; wide EP fast).
BUSIEST_RANKS = 8


class RoutedExperts:
    """Loads, layout, drift and seconds of one replica's routed experts (a mixin of ``IterationCost``)."""

    def _init_routing(self, rng: np.random.Generator) -> None:
        """Draw the popularity and layout (``serving.layout``), and set up drift and the skew pools.

        ``rng``: the routing generator (popularity, drift; the skew pools spawn from it)."""
        s = self.s
        m = s.model
        self.rng = rng
        self.routing = s.routing
        self.skewed = m.n_moe_layers > 0 and m.n_experts > 1 and s.routing.distribution != "uniform"
        check_drift(s)
        pop, inclusion, self.placement, self.layer_imbalance = expert_layout(s, rng)
        if self.skewed:
            self.inclusion = inclusion
        self._drift = drift_state(s, self.cm, pop, self.placement, rng) if self.skewed else None
        self._skew_pool: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        self.streams = PoolStreams(rng, SKEW_POOL)
        self.epoch = 0  # routing/layout changes so far (drift): keys the pools' generators

    # ------------------------------------------------------------ drift and rebalancing
    def advance(self, now_s: float, engine: int) -> float:
        """Move popularity and placement to simulated time ``now_s``; seconds ``engine`` must stall now.

        Call at the top of each engine iteration (``now_s`` never decreasing). Plays the drift steps
        and rebalances due by ``now_s`` (``serving.drift``), drops the cached expert-time samples
        when the routing or the layout changed, and returns the weight-move stall of every rebalance
        ``engine`` has not paid for yet (0.0 otherwise). Without drift or rebalancing: 0.0, no change.
        """
        d = self._drift
        if d is None:
            return 0.0
        if d.advance(now_s):
            self.inclusion, self.placement, self.layer_imbalance = d.inclusion, d.placement, d.layer_imbalance
            self._skew_pool.clear()
            self.epoch += 1
            if self.tbo is not None:
                self.tbo.pool.clear()
        return d.stall_s(engine)

    @property
    def drift_free(self) -> bool:
        """True when routing and layout never change during the run (no drift, no periodic EPLB)."""
        return self._drift is None

    @property
    def rebalances(self) -> int:
        """EPLB rebalances played so far."""
        return 0 if self._drift is None else self._drift.rebalances

    @property
    def rebalance_moved_gib(self) -> float:
        """GiB of expert weights copied between the ranks of one EP group by all rebalances so far."""
        return 0.0 if self._drift is None else self._drift.moved_bytes / 2**30

    @property
    def imbalance_samples(self) -> list[tuple[float, float]]:
        """(simulated s, mean over MoE layers of max/mean expected tokens per EP rank) at start and each step."""
        return [] if self._drift is None else self._drift.samples

    def mean_layer_imbalance(self) -> float:
        """Expected max/mean tokens per EP rank, mean over MoE layers (time-weighted under drift)."""
        if self._drift is not None:
            return self._drift.mean_imbalance()
        return float(self.layer_imbalance.mean()) if self.layer_imbalance.size else 1.0

    # ------------------------------------------------------------ expert loads
    def uniform_experts_s(self, tokens) -> tuple[np.ndarray, np.ndarray]:
        """(seconds, dropped tokens) of the routed experts at their expected uniform load, per ``tokens``."""
        m = self.s.model
        t = np.asarray(tokens, dtype=float)
        if m.n_moe_layers == 0 or m.n_experts == 1:
            return np.zeros_like(t), np.zeros_like(t)
        busy, routed = expert_load.uniform_busy(t, m.top_k, self.placement, self.ep_sources,
                                                busiest=self.dims.local_dispatch)
        dropped = np.zeros_like(t)
        if self.routing.overflow == "drop":  # each replica's busy experts over its capacity
            dropped = expert_load.uniform_dropped(t, m.top_k, m.n_experts, self.capacity(t))
        # By symmetry a rank's experts lose what one replica drops: they compute the rest.
        secs = self._uniform_gemms_s(busy, routed - dropped)
        return m.n_moe_layers * secs, m.n_moe_layers * dropped

    def capacity(self, tokens):
        """Slots each expert gives one replica's batch of ``tokens`` (int array): ``routing.capacity_per_expert``."""
        m, r = self.s.model, self.routing
        return capacity_per_expert(np.asarray(tokens, dtype=np.int64), m.top_k, m.n_experts,
                                   r.capacity_factor, r.min_capacity)

    def _uniform_gemms_s(self, busy: np.ndarray, routed: np.ndarray) -> np.ndarray:
        """Expert GEMM seconds of one layer at a fractional ``busy`` count (arrays ``(n,)``).

        Mixes ``floor(busy)`` and ``ceil(busy)`` busy experts sharing the ``routed`` tokens they
        keep equally, weighted by the fractional part. Rows hold only busy experts (one cost-model
        call per distinct count), so no idle expert is ever passed to the grouped GEMM.
        """
        e_local = self.placement.experts_per_rank
        lo = np.floor(busy + 1e-9)
        hi = np.minimum(lo + 1, e_local)
        frac = np.clip(busy - lo, 0.0, 1.0)
        secs = np.zeros_like(busy)
        for count, weight in ((lo, 1.0 - frac), (hi, frac)):
            for c in np.unique(count[(weight > 0) & (count > 0)]).astype(int).tolist():
                sel = (count == c) & (weight > 0)
                loads = np.repeat((routed[sel] / c)[:, None], c, axis=1)
                secs[sel] += weight[sel] * self._expert_gemms_s(loads)
        return secs

    def _expert_gemms_s(self, loads) -> np.ndarray:
        """The routed-expert ops of one rank (``ops.expert_ops``, with the fused layer's fixed latency):
        ``loads`` is ``(..., E_local)``."""
        return total_s(self.cm, expert_ops(self.dims, self.dtypes, loads))

    def sampled_experts_s(self, tokens: int, engine: int = 0) -> tuple[float, float]:
        """(seconds, dropped tokens) of the routed experts with loads sampled under skewed routing.

        Per batch size, a pool of ``SKEW_POOL`` independent load samples is drawn and timed in one
        vectorised call the first time that size occurs; each iteration of ``engine`` then picks one
        of them at random (the cost-model calls, not the sampling, dominate the engine's run time).
        Pools and picks have their own generators (``serving.pools``).
        """
        pool = self._skew_samples(tokens)
        j = int(self.streams.take(engine)[0])
        return float(pool[0][j]), float(pool[1][j])

    def _skew_samples(self, tokens: int) -> tuple[np.ndarray, np.ndarray]:
        """The pool of ``SKEW_POOL`` (seconds, dropped) samples at ``tokens``, drawn the first time."""
        pool = self._skew_pool.get(tokens)
        if pool is None:
            pool = self._skew_pool[tokens] = self.sample_expert_times(
                tokens, SKEW_POOL, rng=self.streams.pool_rng(self.epoch, tokens))
        return pool

    def sample_expert_times(self, tokens: int, n: int, per_layer: bool = False,
                            rng: np.random.Generator | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(seconds, dropped tokens), each ``(n,)``, of ``n`` independent draws of the expert loads.

        Samples the whole EP group's loads ``(n, layers, E)``, laid out on the ranks by the
        placement; the slowest rank sets each layer's time; layers add. Under ``drop`` each of the
        ``ep`` replicas keeps at most its capacity per expert (``routing.expected_source_drops``:
        the expected drops over how the group's loads split between the replicas); ``dropped`` is
        one replica's share of the group's drops. ``per_layer``: seconds ``(n, layers)`` instead.
        ``rng``: the generator to draw from (default the routing generator).
        """
        incl = np.broadcast_to(self.inclusion, (n,) + self.inclusion.shape)
        g = self.ep_sources
        loads = expert_load.sample_loads(incl, tokens * g, self.rng if rng is None else rng)
        lost = np.zeros(loads.shape)
        if self.routing.overflow == "drop":  # per replica (source rank): each draws ``tokens``
            lost = expected_source_drops(loads, self.capacity(tokens), tokens, g)
        dropped = lost.sum(axis=(1, 2)) / g
        ranks = expert_load.busiest_ranks(self.placement.split(loads - lost, layer_axis=1), BUSIEST_RANKS)
        secs = self._expert_gemms_s(expert_load.compact_loads(ranks)).max(axis=2)
        return (secs if per_layer else secs.sum(axis=1)), dropped

    def _experts_at(self, tokens: int, engine: int) -> tuple[float, float]:
        """(seconds, dropped tokens) of the routed experts at ``tokens``: a sampled load under skewed
        routing (``engine``'s stream of picks), else the expected uniform load (table, or direct)."""
        if self.skewed:
            return self.sampled_experts_s(tokens, engine)
        if tokens <= self.max_tokens:
            return self._experts[tokens], self._dropped[tokens]
        e, d = self.uniform_experts_s(np.array([tokens]))
        return float(e[0]), float(d[0])
