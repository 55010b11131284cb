"""Where experts live on the expert-parallel ranks: redundant copies of hot experts (EPLB), popularity
drift and periodic rebalancing (serving)."""

from __future__ import annotations

from moesim.schemas._base import MAX_EXPERTS, Strict, bounded

#: Longest rebalance period accepted: one year of simulated time, in seconds.
MAX_REBALANCE_S = 365 * 24 * 3600.0
#: Fastest popularity drift accepted, per hour: a correlation time of one second.
MAX_DRIFT_PER_HOUR = 3600.0


class PlacementSpec(Strict):
    """Expert placement over the ``plan.ep`` ranks of an expert-parallel group.

    By default each rank holds ``model.n_experts / plan.ep`` consecutive experts. With
    ``redundant_experts: N`` (DeepSeek-V3's redundant experts, its EPLB), N extra slots hold copies
    of the hottest experts of each MoE layer (from ``routing``'s popularity: each extra slot goes to
    the expert with the highest load per copy), packed so every rank gets ``(n_experts + N) / ep``
    slots and a similar load; a replicated expert's tokens split evenly over its copies. ``plan.ep``
    must then divide ``n_experts + N`` (256 + 32 over 144 ranks) instead of ``n_experts``.

    Serving only: ``popularity_drift_per_hour`` lets each layer's expert popularity change during
    the run and ``rebalance_every_s`` re-runs EPLB periodically from the popularity seen since the
    last rebalance, each engine stalling once per rebalance while the moved experts' weights are
    copied (``moesim.engine.serving.drift``). Both need skewed routing (``routing.distribution``
    zipf, dirichlet or trace); they do nothing for a model without routed experts.
    """

    redundant_experts: int = bounded(
        0, ge=0, le=MAX_EXPERTS, why="at most model.n_experts (at most 2^20): one extra copy of every expert",
        description="Extra expert slots holding copies of the hottest experts (EPLB), 0 to model.n_experts; "
                    "plan.ep must divide model.n_experts + redundant_experts.")
    rebalance_every_s: float | None = bounded(
        None, gt=0.0, le=MAX_REBALANCE_S,
        why="one year of simulated time; DeepSeek-V3 adjusts its redundant experts about every 10 minutes",
        description="Serving: re-run EPLB every this many seconds of simulated time from the expert "
                    "popularity averaged since the last rebalance (with redundant_experts 0 the experts are "
                    "re-packed without copies); each engine then stalls once while the experts that change "
                    "rank are copied (busiest device's bytes over NVLink inside a node, else the NIC). "
                    "null: placed once at start. Needs skewed routing.")
    popularity_drift_per_hour: float = bounded(
        0.0, ge=0.0, le=MAX_DRIFT_PER_HOUR,
        why="a correlation time of 1 s; faster changes are per-iteration noise, which routing sampling already draws",
        description="Serving: how fast each MoE layer's expert popularity changes, as 1 / its correlation time in "
                    "hours. Each expert carries a latent score following an Ornstein-Uhlenbeck process; the "
                    "layer's popularity values (its initial draw from routing) go to the experts in score order, "
                    "so the skew stays that of routing while which experts are hot drifts; stepped every 1/16 "
                    "of the correlation time. 0: static. Needs skewed routing.")
