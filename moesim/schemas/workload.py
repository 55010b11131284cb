"""Workloads: a training step, or a stream of serving requests. Also routing."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, PositiveFloat, PositiveInt, model_validator

from moesim.schemas._base import Strict


class TrainingWorkload(Strict):
    """One optimizer step (or several) of pre-training."""

    kind: Literal["training"] = "training"
    global_batch_seqs: PositiveInt = Field(description="Sequences per optimizer step, all replicas together.")
    seq_len: PositiveInt = Field(description="Tokens per sequence.")
    total_tokens: PositiveFloat | None = Field(None, description="Tokens in the whole run (e.g. 13e12), for run time and cost; null: per step only.")
    steps: PositiveInt = Field(1, description="Steps to simulate (routing is re-sampled each step).")

    @property
    def tokens_per_step(self) -> int:
        return self.global_batch_seqs * self.seq_len


class LengthDist(Strict):
    """A distribution of token counts (prompt or output length)."""

    dist: Literal["fixed", "uniform", "lognormal", "trace"] = Field("fixed", description="fixed | uniform | lognormal | trace (take the column from arrival.trace).")
    value: PositiveInt | None = Field(None, description="Tokens, for fixed.")
    low: PositiveInt | None = Field(None, description="Smallest tokens, for uniform.")
    high: PositiveInt | None = Field(None, description="Largest tokens, for uniform.")
    median: PositiveFloat | None = Field(None, description="Median tokens, for lognormal.")
    sigma: PositiveFloat | None = Field(None, description="Log-space standard deviation, for lognormal.")
    max: PositiveInt | None = Field(None, description="Clip samples to at most this many tokens.")

    @model_validator(mode="after")
    def _check(self) -> LengthDist:
        need = {"fixed": ("value",), "uniform": ("low", "high"), "lognormal": ("median", "sigma"), "trace": ()}[self.dist]
        for name in need:
            if getattr(self, name) is None:
                raise ValueError(f"{name}: required when dist is {self.dist!r}")
        if self.dist == "uniform" and self.low > self.high:
            raise ValueError(f"low = {self.low}: must be <= high ({self.high})")
        return self


class ArrivalSpec(Strict):
    """When requests arrive."""

    process: Literal["poisson", "batch", "trace"] = Field("batch", description="poisson (rate_per_s) | batch (all at t=0, offline) | trace (CSV file).")
    rate_per_s: PositiveFloat | None = Field(None, description="Mean arrival rate for poisson, requests/s.")
    n_requests: PositiveInt = Field(1000, description="Requests to simulate (trace: the first n rows).")
    trace: Path | None = Field(None, description="CSV with columns arrived_at (s), num_prefill_tokens, num_decode_tokens.")

    @model_validator(mode="after")
    def _check(self) -> ArrivalSpec:
        if self.process == "poisson" and self.rate_per_s is None:
            raise ValueError("rate_per_s: required when process is 'poisson'")
        if self.process == "trace" and self.trace is None:
            raise ValueError("trace: required when process is 'trace'")
        return self


class ServingWorkload(Strict):
    """A stream of inference requests served with continuous batching."""

    kind: Literal["serving"] = "serving"
    arrival: ArrivalSpec = ArrivalSpec()
    prompt_tokens: LengthDist = Field(description="Prompt length distribution.")
    output_tokens: LengthDist = Field(description="Output length distribution.")
    max_batch_seqs: PositiveInt = Field(256, description="Most sequences in one iteration per replica.")
    max_batch_tokens: PositiveInt = Field(8192, description="Most tokens (prefill + decode) in one iteration per replica.")
    chunked_prefill: bool = Field(True, description="Split long prompts across iterations to fit max_batch_tokens.")
    router: Literal["round_robin", "least_loaded"] = Field("least_loaded", description="How requests are spread over replicas.")
    kv_cache_fraction: float = Field(0.9, gt=0, le=1, description="Fraction of memory left after weights that holds the KV cache.")
    kv_admission: Literal["prompt", "full"] = Field("prompt", description="KV reserved when a request is admitted: prompt (vLLM: the prompt, one slot per decode step, newest preempted when full) | full (TensorRT-LLM GUARANTEED_NO_EVICT: prompt + all output tokens up front, never preempted).")


Workload = Annotated[TrainingWorkload | ServingWorkload, Field(discriminator="kind")]


class RoutingSpec(Strict):
    """How the router spreads tokens over experts, and what happens at capacity."""

    distribution: Literal["uniform", "zipf", "dirichlet", "trace"] = Field("uniform", description="Expert popularity per layer: uniform | zipf | dirichlet | trace.")
    zipf_s: float = Field(1.0, ge=0, description="Zipf exponent (0 = uniform).")
    dirichlet_alpha: PositiveFloat = Field(1.0, description="Dirichlet concentration (large = near uniform).")
    trace: Path | None = Field(None, description="CSV of expert popularity, one row per layer, one column per expert (trace only).")
    capacity_factor: PositiveFloat = Field(1.25, description="Expert capacity = ceil(cf * tokens * top_k / n_experts).")
    overflow: Literal["drop", "dropless"] = Field("drop", description="drop: tokens over capacity pass through the residual; dropless: all kept.")
    seed: int = Field(0, ge=0, description="Seed of the routing sampler.")

    @model_validator(mode="after")
    def _check(self) -> RoutingSpec:
        if self.distribution == "trace" and self.trace is None:
            raise ValueError("trace: required when distribution is 'trace'")
        return self
