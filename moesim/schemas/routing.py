"""How the router spreads tokens over experts (the scenario's ``routing`` section)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, PositiveFloat, PositiveInt, model_validator

from moesim.schemas._base import MAX_SEED, MAX_TOKENS, SEED_WHY, Strict, bounded


class RoutingSpec(Strict):
    """How the router spreads tokens over experts, and what happens at capacity."""

    distribution: Literal["uniform", "zipf", "dirichlet", "trace"] = Field("uniform", description=(
        "Expert popularity per layer: uniform | zipf | dirichlet | trace. The weights, normalised to sum to 1, are each "
        "expert's share of all top_k assignments (not Plackett-Luce weights from which a token draws its top_k distinct "
        "experts one after another), so with top_k > 1 expert e receives top_k x its share of the tokens; a share above "
        "1/top_k (more than every token) is capped at 1/top_k and the excess spread over the other experts in "
        "proportion to their shares."))
    zipf_s: float = bounded(1.0, ge=0, le=16, why="at s = 16 the top expert already takes 99.998% of the traffic "
                            "(rank 2 gets 2^-16 of it); measured routers fit s < 2",
                            description="Zipf exponent (0 = uniform).")
    dirichlet_alpha: PositiveFloat = bounded(1.0, le=1e6, why="at alpha 1e6 the draw is uniform to 0.1%: use "
                                             "distribution: uniform", description="Dirichlet concentration (large = near uniform).")
    trace: Path | None = Field(None, description="CSV of expert popularity, one row per MoE layer in order (dense layers have none; fewer rows "
                               "repeat), one column per expert (trace only).")
    capacity_factor: PositiveFloat = bounded(
        1.25, le=64, why="beyond 64 is far past any capacity factor in use (1 to 2, a few at most); at cf >= "
        "n_experts / top_k every expert can already hold every token, which is what overflow: dropless models",
        description="Expert capacity per source rank = max(ceil(cf * tokens * top_k / n_experts), min_capacity): the slots "
                    "each expert gives one source rank, whose overflow is dropped. Training: tokens are one EP rank's "
                    "micro-batch as its TP group holds it: global_batch_seqs / (dp * microbatches) rows of seq_len tokens split over "
                    "cp, not divided by tp (with plan.etp < tp, etp / tp of it); serving: one replica's batch.")
    min_capacity: int = bounded(4, ge=0, le=MAX_TOKENS, why="an expert receives at most every token of a source rank's batch "
                                "(<= 2^24 tokens): beyond that use overflow: dropless",
                                description="Fewest slots each expert gives one source rank under overflow: drop (DeepSpeed MoE's "
                                            "min_capacity, default 4): small decode batches do not drop.")
    overflow: Literal["drop", "dropless"] = Field("drop", description="drop: tokens over capacity pass through the residual; dropless: all kept.")
    max_nodes_per_token: PositiveInt | None = bounded(
        None, le=1 << 20, why="as hardware.cluster.nodes (1M nodes); a value at or above the EP group's nodes limits nothing",
        description="Node-limited routing: each token's top_k experts lie on at most this many nodes of its EP group "
                    "(DeepSeek-V3: 4, arXiv:2412.19437 sec. 2.1.2; DeepSeek's topk_group of n_group). Caps the NIC "
                    "copies of hierarchical and deepep_normal all-to-alls (each token reaches min(M, N) * "
                    "(1 - C((M - 1) e, k) / C(M e, k)) nodes, e experts per node); flat and deepep_low_latency move "
                    "the same bytes. null: unlimited.")
    seed: int = bounded(0, ge=0, le=MAX_SEED, why=SEED_WHY,
                        description="Seed of the routing sampler.")

    @model_validator(mode="after")
    def _check(self) -> RoutingSpec:
        if self.distribution == "trace" and self.trace is None:
            raise ValueError("trace: required when distribution is 'trace'")
        return self
