"""The serving engine's options a workload names: speculative decoding, disaggregated pools,
TensorRT-LLM's attention-DP balance and captured CUDA-graph sizes (``workload.*`` sections)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, NonNegativeInt, PositiveFloat, PositiveInt, model_validator

from moesim.schemas._base import BOUND_REASON, Strict, bounded
from moesim.schemas.model import ModelSpec
from moesim.schemas.placement import PlacementSpec
from moesim.schemas.plan import PlanSpec

_ACCEPT_WHY = "a probability; 1 would accept every draft token (infinite tokens per step)"
#: One acceptance rate: a probability below 1 (at 1 every draft would be accepted forever).
AcceptanceRate = Annotated[float, Field(ge=0.0, lt=1.0, json_schema_extra={BOUND_REASON: _ACCEPT_WHY})]


class SpeculativeSpec(Strict):
    """Speculative decoding: a draft model or MTP heads propose ``k`` tokens, the target verifies them."""

    method: Literal["draft", "mtp"] = Field(description="draft (a separate small model, `draft`) | mtp (k DeepSeek-style multi-token-prediction heads, one extra layer each).")
    k: PositiveInt = bounded(le=64, why="published drafts propose 1-8 tokens (Medusa/EAGLE trees up to ~60 nodes)",
                             description="Draft tokens proposed per decode step.")
    acceptance: float | None = bounded(None, ge=0.0, lt=1.0, why=_ACCEPT_WHY,
                                       description="Acceptance rate alpha in [0, 1) of every draft position.")
    acceptance_per_position: list[AcceptanceRate] | None = Field(None, description=(
        "Instead of acceptance: k rates in [0, 1), position i accepted given positions before it were."))
    draft: ModelSpec | None = Field(None, description="Draft model (method draft only): a model preset name, {preset: NAME, ...overrides}, or model fields.")

    @model_validator(mode="after")
    def _check(self) -> SpeculativeSpec:
        if (self.acceptance is None) == (self.acceptance_per_position is None):
            raise ValueError("acceptance: give one of acceptance (a rate in [0, 1)) or acceptance_per_position (k rates)")
        per = self.acceptance_per_position
        if per is not None and len(per) != self.k:
            raise ValueError(f"acceptance_per_position: needs k = {self.k} rates, got {len(per)}")
        if self.method == "draft" and self.draft is None:
            raise ValueError("draft: required when method is 'draft' (a model preset name or model fields)")
        if self.method == "mtp" and self.draft is not None:
            raise ValueError("draft: only for method 'draft'; method 'mtp' drafts with the target's own heads")
        return self

    @property
    def rates(self) -> list[float]:
        """Per-position acceptance rates, ``k`` of them."""
        per = self.acceptance_per_position
        return list(per) if per is not None else [float(self.acceptance)] * self.k

    @property
    def tokens_per_step(self) -> float:
        """Expected tokens one verify step emits: 1 + sum of cumulative products (scalar: (1-a^(k+1))/(1-a))."""
        out, p = 1.0, 1.0
        for a in self.rates:
            p *= a
            out += p
        return out


class PoolSpec(Strict):
    """One pool of a disaggregated deployment: its own parallelism plan and batch limits."""

    plan: PlanSpec = Field(description="The pool's parallelism plan; dp*tp*pp devices, whole nodes.")
    placement: PlacementSpec | None = Field(None, description="The pool's expert placement (redundant experts); null: the scenario's.")
    max_batch_seqs: PositiveInt | None = bounded(None, le=1 << 20, why="as workload.max_batch_seqs",
                                                 description="Most sequences per iteration per replica of this pool; null: the workload's.")
    max_batch_tokens: PositiveInt | None = bounded(None, le=1 << 22, why="as workload.max_batch_tokens",
                                                   description="Most tokens per iteration per replica of this pool; null: the workload's.")


class DisaggregationSpec(Strict):
    """Prefill and decode on separate pools of devices (DistServe, Splitwise, DeepSeek-V3 serving).

    A request is prefilled in the prefill pool, its KV cache is sent over the network to a decode
    replica, which streams every output token (the first one too, so TTFT includes the transfer).
    The pools' devices add up to the hardware's; each pool is whole nodes.
    """

    prefill: PoolSpec = Field(description="The prefill pool: prompts only (each request's first token).")
    decode: PoolSpec = Field(description="The decode pool: every decode step; its KV memory limits admission.")
    kv_transfer_gbps: PositiveFloat | None = bounded(
        None, le=1e6, why="1 PB/s per device: ~10,000x an 800 Gb/s NIC",
        description="GB/s each prefill device sends its KV shard at; null: hardware.cluster.nic_bw_gbps.")

    @property
    def n_devices(self) -> int:
        return self.prefill.plan.n_devices + self.decode.plan.n_devices


class DpAttentionBalance(Strict):
    """TensorRT-LLM's attention-DP balance (``attention_dp_config: {enable_balance: true, timeout_iters,
    batching_wait_iters}``, tech blog 10 "ADP Balance Strategy"): the ranks of a lock-step group hold
    their new prompts back until every rank has one to run, so that no rank prefills while the
    others wait on it with a few decodes each."""

    timeout_iters: NonNegativeInt = bounded(50, le=100_000, why="iterations a prompt may be held; TensorRT-LLM's default 50",
                                            description="Iterations a rank's prompts wait for every rank of the group to "
                                                        "have one before they run anyway (attention_dp_config.timeout_iters).")
    batching_wait_iters: NonNegativeInt = bounded(10, le=100_000, why="iterations of extra batching; TensorRT-LLM's default 10",
                                                  description="Once every rank has a prompt (and every rank decodes), iterations "
                                                              "they keep waiting so more prompts batch together "
                                                              "(attention_dp_config.batching_wait_iters).")


#: One captured CUDA-graph batch size (sequences).
GRAPH_WHY = "as max_batch_seqs: 1M sequences per iteration"
GraphBatch = Annotated[PositiveInt, Field(le=1 << 20, json_schema_extra={BOUND_REASON: GRAPH_WHY})]
