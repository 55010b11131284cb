"""Expert popularity drift and periodic EPLB rebalancing during a serving run. Pure numpy.

Shapes: ``L`` MoE layers, ``E`` routed experts, ``ep`` EP ranks, ``S = E + N`` slots per layer.

**Drift model** (``placement.popularity_drift_per_hour``, a rate ``r`` in 1/hour). Each layer
keeps the multiset of popularity values of its initial draw from ``routing`` (zipf, dirichlet or
trace: ``routing.expert_popularity``) and hands them to its experts in the order of a latent score
per expert, ``z_e(t)``, the largest value to the highest score (a Gaussian copula on ranks). Each
score is an Ornstein-Uhlenbeck process with stationary law N(0, 1) and correlation time
``tau = 1/r`` hours, stepped exactly every ``tau / 16`` (:data:`STEPS_PER_TAU`):
``z <- rho z + sqrt(1 - rho^2) xi``, ``rho = exp(-dt / tau)``, ``xi ~ N(0, 1)``. So

* the skew never changes (zipf stays zipf with the same exponent: only which expert holds which
  rank moves), since the ranks of i.i.d. scores are a uniformly random permutation at any time;
* the scores' correlation between ``t`` and ``t + dt`` is ``rho = exp(-dt / tau)`` (the popularity
  ranks' Spearman correlation ``(6/pi) asin(rho/2)``, within 5 % of it);
* the initial scores are sorted normals placed in the order of the initial popularity, a draw of
  the stationary law given that order, so ``t = 0`` reproduces the static run's popularity.

Popularity is piecewise constant between steps (the iteration sampler reads it as the routing).

**Rebalancing** (``placement.rebalance_every_s``, ``K``). At every multiple of ``K`` EPLB is re-run
(:meth:`Placement.balanced`, packing the experts even without redundant slots) from the popularity
averaged over time since the last rebalance (the expected counts an EPLB recorder would collect,
without their sampling noise). Boundaries crossed while no engine iterated collapse into one
rebalance at the last of them, from the average since the previous one. The new packing's ranks
are relabelled per layer to keep the most experts in place (ranks are interchangeable for balance:
:func:`match_ranks`); each EP rank then loads the experts it did not hold before (a reorder within
a rank, or a second copy of an expert it holds, costs nothing). The stall is the busiest device's
bytes over one link, ``cm.p2p_s(bytes, intra)``: NVLink when the EP group's ``ep * tp`` devices fit
in a node, else the NIC. As SGLang's EPLB (``--enable-eplb``) moves weights between forward passes
on every rank, each engine pays each rebalance's stall once, at its first iteration after it
(:meth:`ExpertDrift.stall_s`); a rebalance that changes no slot costs nothing.
"""

from __future__ import annotations

import math

import numpy as np

from moesim.accounting import ffn_params
from moesim.engine import expert_load
from moesim.engine.placement import Placement
from moesim.errors import InputError
from moesim.precision import expert_precision

#: Drift steps per correlation time: popularity moves at most ``1 - exp(-1/16)`` (~6 %) of its
#: correlation per step, fine enough that a rebalance period of a few steps still sees it move.
STEPS_PER_TAU = 16


def check_drift(s) -> None:
    """One-line InputError if ``s.placement`` asks for drift or rebalancing the routing cannot give.

    Both need skewed routing (uniform popularity has nothing to drift or balance). A model without
    routed experts is left alone (a speculative decoder's dense drafter inherits the target's
    placement), as is ``ep == 1`` (one rank: rebalancing moves nothing).
    """
    pl, m = s.placement, s.model
    moe = m.n_moe_layers > 0 and m.n_experts > 1
    if not moe or s.routing.distribution != "uniform":
        return
    if pl.popularity_drift_per_hour > 0:
        raise InputError(f"placement.popularity_drift_per_hour = {pl.popularity_drift_per_hour}: needs "
                         "routing.distribution zipf | dirichlet | trace (uniform popularity cannot drift)")
    if pl.rebalance_every_s is not None:
        raise InputError(f"placement.rebalance_every_s = {pl.rebalance_every_s}: needs "
                         "routing.distribution zipf | dirichlet | trace (uniform popularity is already balanced)")


def drift_state(s, cm, popularity: np.ndarray, placement: Placement, rng: np.random.Generator):
    """The :class:`ExpertDrift` of a serving replica when ``s.placement`` asks for drift or rebalancing,
    else None. ``popularity`` ``[L, E]``: the routing's initial draw; ``placement``: the initial layout.

    An expert's bytes are its parameters (``accounting.ffn_params``) at the model's weight bytes
    (``precision``); weights move over NVLink when the EP group's ``ep * tp`` devices fit in a node,
    else over the NIC, priced as one pipeline send (``cm.p2p_s``). The drift draws from a child of
    ``rng`` (``Generator.spawn``), so the routing generator's own draws stay those of a static run.
    """
    pl, m = s.placement, s.model
    if pl.popularity_drift_per_hour <= 0 and pl.rebalance_every_s is None:
        return None
    expert_bytes = ffn_params(m.d_model, m.expert_width, m.gated_ffn) * expert_precision(s).weight_bytes
    group = s.plan.tp if s.plan.ep_in_tp_group else s.plan.ep * s.plan.tp  # devices of one EP group
    intra = group <= s.hardware.node.devices_per_node

    def move_s(nbytes: float) -> float:
        return float(cm.p2p_s(nbytes, intra))

    return ExpertDrift(pl, popularity, m.top_k, placement, rng.spawn(1)[0], expert_bytes, s.plan.tp, move_s)


def correlation(dt_s: float, per_hour: float) -> float:
    """``rho = exp(-dt / tau)`` of the latent scores over ``dt_s`` seconds at drift rate ``per_hour``."""
    return math.exp(-float(per_hour) * float(dt_s) / 3600.0)


def initial_scores(popularity: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Latent scores ``[L, E]`` whose order reproduces ``popularity``'s (ties: lower expert id first).

    Sorted standard normals placed so the most popular expert holds the largest: a draw of the
    stationary law conditioned on the initial ranking.
    """
    p = np.asarray(popularity, dtype=float)
    normals = np.sort(rng.standard_normal(p.shape), axis=-1)  # ascending
    order = np.argsort(-p, axis=-1, kind="stable")  # most popular first
    z = np.empty_like(p)
    np.put_along_axis(z, order, normals[..., ::-1], axis=-1)
    return z


def ou_step(z: np.ndarray, rho: float, rng: np.random.Generator) -> np.ndarray:
    """One exact Ornstein-Uhlenbeck step of unit stationary variance: ``rho z + sqrt(1 - rho^2) xi``."""
    return rho * z + math.sqrt(max(1.0 - rho * rho, 0.0)) * rng.standard_normal(z.shape)


def popularity_from_scores(values_desc: np.ndarray, z: np.ndarray) -> np.ndarray:
    """Popularity ``[L, E]``: each layer's values (sorted descending) handed out in descending score order."""
    order = np.argsort(-z, axis=-1, kind="stable")
    p = np.empty_like(values_desc)
    np.put_along_axis(p, order, values_desc, axis=-1)
    return p


def holds(slots: np.ndarray, ep: int, n_experts: int) -> np.ndarray:
    """Whether each rank holds each expert: ``[L, ep, E]`` bools from a slot map ``[L, S]`` (rank-major)."""
    a = np.asarray(slots).reshape(slots.shape[0], ep, -1)
    out = np.zeros((a.shape[0], ep, n_experts), dtype=bool)
    np.put_along_axis(out, a, True, axis=-1)
    return out


def match_ranks(old: np.ndarray, new: np.ndarray, ep: int, n_experts: int) -> np.ndarray:
    """``new``'s slot map ``[L, S]`` with its ranks relabelled per layer to keep the most experts in place.

    EP ranks are interchangeable for balance, so each layer's new rank sets are assigned to the old
    ranks maximising the experts that stay (an assignment problem, ``scipy``'s Hungarian solver):
    a rebalance moves only what the new balance needs, not a relabelling of the ranks.
    """
    from scipy.optimize import linear_sum_assignment

    a = np.asarray(new).reshape(new.shape[0], ep, -1)
    h_new, h_old = holds(new, ep, n_experts).astype(np.int64), holds(old, ep, n_experts).astype(np.int64)
    kept = np.einsum("lne,loe->lno", h_new, h_old)  # experts new rank n would keep on old rank o
    out = np.empty_like(a)
    for layer in range(a.shape[0]):
        rows, cols = linear_sum_assignment(kept[layer], maximize=True)
        out[layer, cols] = a[layer, rows]
    return out.reshape(new.shape)


def experts_fetched(old: np.ndarray, new: np.ndarray, ep: int) -> np.ndarray:
    """Experts each rank must load per layer when its slots go from ``old`` to ``new``: ``[L, ep]`` ints.

    ``old``/``new``: slot maps ``[L, S_old]`` / ``[L, S_new]`` (rank-major, ``Placement.slot_map``).
    An expert counts once per (layer, rank) it arrives on, and only if that rank held no copy of it.
    """
    n_experts = int(max(np.max(old), np.max(new))) + 1
    return (holds(new, ep, n_experts) & ~holds(old, ep, n_experts)).sum(axis=-1)


class ExpertDrift:
    """Popularity, placement and rebalance bookkeeping of one serving run, advanced in simulated time.

    ``popularity``: the initial ``[L, E]`` shares (rows sum to 1, capped at ``1/top_k``);
    ``placement`` the initial layout; ``expert_bytes``: one whole expert's weight bytes, sharded over
    the ``tp`` devices of an EP rank; ``move_s(nbytes)``: seconds to receive ``nbytes`` on one
    device. Read by the engine: ``popularity``, ``inclusion`` ``[L, E]``, ``placement``,
    ``layer_imbalance`` ``[L]``; reporting: ``rebalances``, ``moved_bytes`` (whole experts copied
    in one EP group), ``stall_s_each`` (per rebalance), ``samples`` ((time s, mean over layers of
    max/mean expected tokens per rank) at start and after each step).
    """

    def __init__(self, spec, popularity: np.ndarray, top_k: int, placement: Placement, rng: np.random.Generator,
                 expert_bytes: float, tp: int, move_s):
        self.rate = float(spec.popularity_drift_per_hour)
        self.every_s = spec.rebalance_every_s
        self.n_red = int(spec.redundant_experts)
        self.top_k, self.rng = int(top_k), rng
        self.expert_bytes, self.tp, self.move_s = float(expert_bytes), int(tp), move_s
        self.popularity = np.asarray(popularity, dtype=float)
        self.values = -np.sort(-self.popularity, axis=-1)
        self.z = initial_scores(self.popularity, rng) if self.rate > 0 else None
        self.step_s = 3600.0 / self.rate / STEPS_PER_TAU if self.rate > 0 else math.inf
        self.rho = correlation(self.step_s, self.rate) if self.rate > 0 else 1.0
        self.placement = placement
        self.inclusion = expert_load.inclusion_probabilities(self.popularity, self.top_k)
        self.layer_imbalance = placement.imbalance(self.inclusion, layer_axis=0)
        self.now_s, self.steps, self.rebalances = 0.0, 0, 0
        self.seen_s = 0.0  # start of the popularity average the next rebalance uses
        self.acc = np.zeros_like(self.popularity)  # popularity x seconds since then
        self.moved_bytes = 0.0
        self.stall_s_each: list[float] = []
        self.paid: dict[int, int] = {}  # engine -> rebalances it has paid for
        self.samples: list[tuple[float, float]] = [(0.0, float(self.layer_imbalance.mean()))]

    def advance(self, now_s: float) -> bool:
        """Play drift steps and rebalances up to ``now_s``; True if popularity or placement changed."""
        now_s = float(now_s)
        changed = False
        while now_s >= self.now_s:
            t_step = (self.steps + 1) * self.step_s
            t_bal = math.inf
            if self.every_s is not None:
                t_bal = self.every_s * math.floor(now_s / self.every_s)  # collapse crossed boundaries
                t_bal = t_bal if t_bal > self.seen_s else math.inf
            t = min(t_step, t_bal)
            if t > now_s:
                break
            self._observe(t)
            if t == t_step:
                self.steps += 1
                self.z = ou_step(self.z, self.rho, self.rng)
                self.popularity = popularity_from_scores(self.values, self.z)
                self.inclusion = expert_load.inclusion_probabilities(self.popularity, self.top_k)
            moved = self._rebalance(t) if t == t_bal else False
            self.layer_imbalance = self.placement.imbalance(self.inclusion, layer_axis=0)
            self.samples.append((t, float(self.layer_imbalance.mean())))
            changed = changed or moved or t == t_step
        self._observe(max(now_s, self.now_s))
        return changed

    def _observe(self, t: float) -> None:
        """Add the current popularity over ``[now_s, t]`` to the rebalance average."""
        self.acc += self.popularity * (t - self.now_s)
        self.now_s = t

    def _rebalance(self, t: float) -> bool:
        """EPLB from the popularity averaged since the last rebalance; True if any rank's slots changed."""
        span = t - self.seen_s
        avg = self.acc / span if span > 0 else self.popularity
        n_layers = avg.shape[0]
        ep, n_experts, old = self.placement.ep, self.placement.n_experts, self.placement.slot_map(n_layers)
        packed = Placement.balanced(avg, ep, self.n_red, pack=True).slot_map(n_layers)
        new_map = match_ranks(old, packed, ep, n_experts)
        same = np.array_equal(np.sort(old.reshape(n_layers, ep, -1), axis=-1),
                              np.sort(new_map.reshape(n_layers, ep, -1), axis=-1))
        new = self.placement if same else Placement(n_experts, ep, new_map)  # unchanged: keep the samples
        fetched = experts_fetched(old, new.slot_map(n_layers), ep)
        per_rank = fetched.sum(axis=0) * self.expert_bytes  # whole experts' bytes each rank receives
        busiest = float(per_rank.max()) / self.tp if per_rank.size else 0.0  # each device loads its shard
        self.moved_bytes += float(per_rank.sum())
        self.stall_s_each.append(float(self.move_s(busiest)) if busiest > 0 else 0.0)
        self.placement, self.rebalances = new, self.rebalances + 1
        self.seen_s, self.acc = t, np.zeros_like(self.acc)
        return not same

    def stall_s(self, engine: int) -> float:
        """Seconds ``engine`` stalls now: the weight moves of the rebalances it has not paid for yet."""
        done = self.paid.get(engine, 0)
        if done == self.rebalances:
            return 0.0
        self.paid[engine] = self.rebalances
        return float(sum(self.stall_s_each[done:]))

    def mean_imbalance(self) -> float:
        """Time-weighted mean of the samples' imbalance up to the last advance (the last sample held)."""
        t = np.array([x[0] for x in self.samples] + [self.now_s])
        v = np.array([x[1] for x in self.samples])
        w = np.diff(t)
        return float((v * w).sum() / w.sum()) if w.sum() > 0 else float(v[-1])
