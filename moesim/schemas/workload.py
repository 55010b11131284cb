"""Workloads: a training step, or a stream of serving requests (the serving engine's options in
``serving_options``, the router in ``routing``)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated, Literal

import numpy as np
from pydantic import (
    Field,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    field_validator,
    model_validator,
)

from moesim.errors import InputError
from moesim.schemas._base import BOUND_REASON, MAX_TOKENS, Strict, bounded
from moesim.schemas.routing import RoutingSpec  # noqa: F401 (re-exported: moesim.schemas.workload.RoutingSpec)
from moesim.schemas.serving_options import (
    GRAPH_WHY,
    DisaggregationSpec,
    DpAttentionBalance,
    GraphBatch,
    SpeculativeSpec,
)

_CONTEXT = "16.7M tokens: above the longest published context window (10M, Llama 4 Scout)"


#: Weight groups a LoRA adapter can target (``workload.trainable.targets``).
LoraTarget = Literal["attention", "experts", "router", "dense_ffn"]
_TRAINABLE_MODES = ("all", "experts", "non_experts", "lora")


class TrainableSpec(Strict):
    """Which weights a training run updates: all (pre-training, full fine-tuning), one part with
    the rest frozen, or low-rank adapters on frozen base weights (LoRA; QLoRA with ``base_dtype: nf4``).

    A scenario may write the mode alone (``trainable: experts``) or a mapping
    (``trainable: {mode: lora, rank: 16, targets: [attention, experts], base_dtype: nf4}``).
    """

    mode: Literal["all", "experts", "non_experts", "lora"] = Field("all", description=(
        "all (every weight) | experts (routed experts only; attention, router, shared experts, dense FFNs, "
        "embeddings frozen) | non_experts (everything but the routed experts) | lora (adapters only)."))
    rank: PositiveInt | None = bounded(None, le=1 << 16, why="65536 is wider than any published d_model; "
                                       "LoRA ranks in use are 4-256", description="LoRA rank r (lora only).")
    targets: list[LoraTarget] | None = Field(None, min_length=1, description=(
        "Weight groups given adapters (lora only): attention (Q, K, V, O), experts (every matrix of every "
        "routed expert), router, dense_ffn (dense FFN layers and shared experts). "
        "null: attention, experts, dense_ffn (every linear layer but the router, as the QLoRA paper does)."))
    base_dtype: Literal["bf16", "nf4"] | None = Field(None, description=(
        "Frozen base weights of a lora run: bf16 | nf4 (QLoRA: 4-bit NormalFloat, dequantised to bf16 for "
        "each GEMM). null: bf16."))
    dropout: float | None = Field(None, ge=0.0, lt=1.0, description=(
        "Dropout probability on each adapter's input (lora only; PEFT's lora_dropout, NeMo's LoRA dropout). Above "
        "0 each adapter keeps its own dropped-out copy of its input and the dropout's 1-byte mask for the "
        "backward (memory only). null: 0."))
    double_quant: bool = Field(True, description=(
        "nf4 only: quantise the block scales too (QLoRA's double quantisation: 4.127 bits per weight, else 4.5); "
        "read only when base_dtype is nf4 (kept when a variant switches base_dtype, so a bf16 run of a QLoRA "
        "scenario needs no edit)."))
    layers: PositiveInt | None = bounded(None, le=1 << 16, why="65536 blocks is deeper than any published model "
                                         "(the scenario checks it against model.n_layers)", description=(
        "Train only the last N transformer blocks (their weights or adapters, by mode); earlier blocks, the "
        "embedding, the final norm and the output head are frozen, and backward stops at the first trainable "
        "block, so the frozen blocks keep no activations (MLX's --num-layers, PEFT's layers_to_transform without "
        "enable_input_require_grads, LLaMA-Factory's freeze_trainable_layers). null: every block."))

    @model_validator(mode="before")
    @classmethod
    def _from_name(cls, data):
        if isinstance(data, str):
            if data not in _TRAINABLE_MODES:
                raise ValueError(f"trainable: {data!r} is not a mode; allowed all, experts, non_experts, or a mapping "
                                 "{mode: lora, rank: R, targets: [...], base_dtype: bf16|nf4}")
            return {"mode": data}
        return data

    @model_validator(mode="after")
    def _check(self) -> TrainableSpec:
        if self.mode == "lora":
            if self.rank is None:
                raise ValueError("rank: required when mode is 'lora' (e.g. 16)")
            if self.targets is not None and len(set(self.targets)) != len(self.targets):
                raise ValueError(f"targets = {self.targets}: each target at most once")
        else:
            for name in ("rank", "targets", "base_dtype", "dropout"):
                if getattr(self, name) is not None:
                    unset = "" if "mode" in self.model_fields_set else ", the default"
                    raise ValueError(f"{name}: only for mode 'lora' (mode {self.mode!r}{unset}, trains whole weights); "
                                     "for adapters set mode: lora")
        return self

    @property
    def lora_targets(self) -> tuple[str, ...]:
        """The adapted weight groups (lora), () otherwise."""
        if self.mode != "lora":
            return ()
        return tuple(self.targets) if self.targets is not None else ("attention", "experts", "dense_ffn")

    @property
    def quantized(self) -> bool:
        """True for QLoRA: frozen base weights stored in nf4."""
        return self.mode == "lora" and self.base_dtype == "nf4"

    @property
    def full(self) -> bool:
        """True when every weight trains (mode ``all`` over every block): pre-training's accounting."""
        return self.mode == "all" and self.layers is None


class TrainingWorkload(Strict):
    """One optimizer step (or several) of pre-training or fine-tuning."""

    kind: Literal["training"] = "training"
    global_batch_seqs: PositiveInt = bounded(
        le=1 << 32, why="4.3e9 sequences: ~10^5x the largest published batch (DeepSeek-V3: 15360)",
        description="Sequences per optimizer step, all replicas together.")
    seq_len: PositiveInt = bounded(le=MAX_TOKENS, why=_CONTEXT, description="Tokens per sequence.")
    total_tokens: PositiveFloat | None = bounded(
        None, le=1e16, why="1000x the largest published training run (~1.5e13 tokens)",
        description="Tokens in the whole run (e.g. 13e12), for run time and cost; null: per step only.")
    steps: PositiveInt = bounded(1, le=1 << 20, why="each step is simulated; 1M steps is a whole training run, "
                                 "use total_tokens for run time",
                                 description="Steps to simulate (routing is re-sampled each step).")
    trainable: TrainableSpec = Field(TrainableSpec(), description=(
        "Weights the run updates: all (default) | experts | non_experts | {mode: lora, rank, targets, base_dtype}; "
        "frozen weights keep no gradients or optimizer states and skip their weight-gradient GEMMs."))
    sample_tokens: LengthDist | None = Field(None, description=(
        "Lengths of the training samples (fixed | uniform | lognormal); null: every sample fills seq_len."))
    packing: bool = Field(True, description=(
        "true: samples are packed into seq_len-token rows (no padding); false: one sample per row, padded to "
        "seq_len (longer ones truncated): tokens_per_s and the run time count only the real tokens."))
    padding: Literal["max_length", "longest"] = Field("max_length", description=(
        "Unpacked rows (packing: false) with sample_tokens: max_length pads every row to seq_len (Megatron's fixed "
        "seq_length, Hugging Face padding='max_length'); longest pads each micro-batch's rows to its longest sample "
        "(Hugging Face's DataCollatorWithPadding, TRL, ms-swift), so a micro-batch of b samples computes b x E[the "
        "longest of b lengths] tokens (capped at seq_len; a micro-batch of one sample has no padding). Memory is "
        "taken at seq_len either way: the micro-batch holding the longest samples sets the peak."))
    mtp_layers: NonNegativeInt = bounded(0, le=8, why="DeepSeek-V3 trains 1 and studies 2", description=(
        "Multi-token-prediction modules trained with the model (DeepSeek-V3 report sec. 2.2: 1; Megatron-core "
        "--mtp-num-layers): each adds, on the stage that computes the loss, one more block of the model's last "
        "layer's kind, a 2d x d projection and another pass of the output head and loss, with their gradients "
        "and optimizer states, and keeps their activations beside the loss's logits; their FLOPs count in MFU. "
        "Pre-training only (trainable mode all)."))
    packed_attention: Literal["per_sample", "whole_row"] = Field("per_sample", description=(
        "Packed rows with sample_tokens: per_sample, each sample attends only to itself (varlen kernels: "
        "Megatron/NeMo packed SFT, TRL padding_free, ms-swift packing), so attention costs sum(L^2) over the "
        "samples, not seq_len^2; whole_row, causal attention over the whole row (pre-training-style "
        "concatenation). With context parallelism (plan.cp > 1) the row is priced whole either way."))

    @model_validator(mode="after")
    def _check_samples(self) -> TrainingWorkload:
        if self.sample_tokens is not None and self.sample_tokens.dist == "trace":
            raise ValueError("sample_tokens.dist: 'trace' reads a serving arrival trace; use fixed, uniform or lognormal")
        if self.mtp_layers and not self.trainable.full:
            raise ValueError(f"mtp_layers = {self.mtp_layers}: multi-token prediction trains with the whole model; "
                             "use trainable mode all without layers, or mtp_layers: 0")
        if self.padding == "longest" and self.packing:
            raise ValueError("padding = 'longest': padding applies to unpacked rows; set workload.packing: false "
                             "(packed rows have no padding)")
        return self


class LengthDist(Strict):
    """A distribution of token counts (prompt or output length)."""

    dist: Literal["fixed", "uniform", "lognormal", "trace"] = Field("fixed", description="fixed | uniform | lognormal | trace (take the column from arrival.trace).")
    value: PositiveInt | None = bounded(None, le=MAX_TOKENS, why=_CONTEXT, description="Tokens, for fixed.")
    low: PositiveInt | None = bounded(None, le=MAX_TOKENS, why=_CONTEXT, description="Smallest tokens, for uniform.")
    high: PositiveInt | None = bounded(None, le=MAX_TOKENS, why=_CONTEXT, description="Largest tokens, for uniform.")
    median: PositiveFloat | None = bounded(None, le=MAX_TOKENS, why=_CONTEXT, description="Median tokens, for lognormal.")
    sigma: PositiveFloat | None = bounded(
        None, le=10, why="sigma 10 already spreads lengths over e^+-30 around the median; measured traces have 0.5-2",
        description="Log-space standard deviation, for lognormal.")
    max: PositiveInt | None = bounded(None, le=MAX_TOKENS, why=_CONTEXT, description="Clip samples to at most this many tokens.")

    @model_validator(mode="after")
    def _check(self) -> LengthDist:
        need = {"fixed": ("value",), "uniform": ("low", "high"), "lognormal": ("median", "sigma"), "trace": ()}[self.dist]
        for name in need:
            if getattr(self, name) is None:
                raise ValueError(f"{name}: required when dist is {self.dist!r}")
        if self.dist == "uniform" and self.low > self.high:
            raise ValueError(f"low = {self.low}: must be <= high ({self.high})")
        return self

    def upper_bound_tokens(self) -> int:
        """Largest length this distribution can produce, or 0 when unbounded (lognormal without
        ``max``) or read from a trace."""
        if self.max is not None:
            return self.max
        if self.dist == "fixed":
            return self.value
        if self.dist == "uniform":
            return self.high
        return 0

    def sample(self, n: int, rng, trace_column=None):
        """``n`` token counts (int64 numpy array, >= 1, <= ``max``) drawn with ``rng`` (a numpy Generator).

        ``trace`` takes ``trace_column`` in order when it has at least ``n`` rows aligned with the
        arrivals, otherwise (arrivals not from the trace) resamples it with replacement.
        """
        if self.dist == "fixed":
            out = np.full(n, self.value, dtype=np.int64)
        elif self.dist == "uniform":
            out = rng.integers(self.low, self.high + 1, size=n, dtype=np.int64)
        elif self.dist == "lognormal":  # clipped before the cast so no draw overflows int64
            out = np.rint(np.minimum(self.median * np.exp(self.sigma * rng.standard_normal(n)), MAX_TOKENS)).astype(np.int64)
        else:
            if trace_column is None:
                raise InputError("workload: a length with dist 'trace' needs workload.arrival.trace")
            out = np.asarray(trace_column, dtype=np.int64)
            out = out[:n] if out.size >= n else rng.choice(out, size=n, replace=True)
        out = np.maximum(out, 1)
        if self.max is not None:
            out = np.minimum(out, self.max)
        return out

    def mean_tokens(self, fallback: float, trace_column=None) -> float:
        """Mean tokens: fixed, uniform, lognormal (clipped at ``max``: ``E[min(X, max)]``), or the
        mean of ``trace_column`` for ``trace`` (``fallback`` without one)."""
        if self.dist == "fixed":
            return float(self.value)
        if self.dist == "uniform":
            return (self.low + self.high) / 2
        if self.dist == "lognormal":
            mu, sigma = math.log(self.median), self.sigma
            mean = math.exp(mu + sigma**2 / 2)
            if self.max is None:
                return mean
            z = (math.log(self.max) - mu) / sigma
            cdf = lambda x: 0.5 * (1 + math.erf(x / math.sqrt(2)))
            return mean * cdf(z - sigma) + self.max * (1 - cdf(z))
        if trace_column is not None and len(trace_column):
            return float(sum(float(x) for x in trace_column) / len(trace_column))
        return fallback


TrainingWorkload.model_rebuild()  # resolve its sample_tokens: LengthDist, defined after it


class ArrivalSpec(Strict):
    """When requests arrive."""

    process: Literal["poisson", "batch", "trace", "closed"] = Field("batch", description="poisson (rate_per_s) | batch (all at t=0, offline) | trace (CSV file) | closed (closed loop: `concurrency` users, each sending its next request when its previous one finishes; concurrency 1 is single-stream, batch 1).")
    rate_per_s: PositiveFloat | None = bounded(
        None, le=1e7, why="10M requests/s is more than a whole public LLM API serves; one replica serves 1-1000/s",
        description="Mean arrival rate for poisson, requests/s; for a trace, the mean rate its arrival times are "
                    "scaled to (order and bursts kept; unset: the trace's own times).")
    n_requests: PositiveInt = bounded(1000, le=1 << 30, why="a simulation plays at most 2M requests (moesim.guards); "
                                      "2^30 keeps request counts far from integer overflow",
                                      description="Requests to simulate (trace: the first n rows in arrival order).")
    trace: Path | None = Field(None, description=(
        "CSV with columns arrived_at (s), num_prefill_tokens, num_decode_tokens; rows in any order (read "
        "sorted by arrived_at, each keeping its lengths). The token columns are "
        "used only where prompt_tokens / output_tokens say dist: trace; other dists keep the trace's "
        "arrival times and draw their own lengths."))
    concurrency: PositiveInt = bounded(1, le=1 << 20, why="as workload.max_batch_seqs: 1M requests in flight",
                                       description="Requests in flight for closed (the first arrive at t=0, each later one when "
                                                   "one finishes, with no think time); 1: one request at a time.")

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
    prompt_tokens: LengthDist = Field(description="Prompt length distribution. A request whose prompt + output "
        "tokens exceed model.max_seq_len is refused, as vLLM, SGLang and TensorRT-LLM refuse one over their max "
        "model length: the scenario up front when both lengths have an upper bound (fixed, uniform, max), else "
        "that request at arrival (lognormal without max, trace; counted in rejected_max_seq_len_requests).")
    output_tokens: LengthDist = Field(description="Output length distribution.")
    max_batch_seqs: PositiveInt = bounded(256, le=1 << 20, why="1M sequences per iteration: ~500x what any engine "
                                          "batches (vLLM default 256, TensorRT-LLM up to 2048)",
                                          description="Most sequences in one iteration per replica.")
    max_batch_tokens: PositiveInt = bounded(8192, le=1 << 22, why="4M tokens per iteration: 256x the usual 8192-16384 "
                                            "(the decode cost is tabulated per token up to it)",
                                            description="Most tokens (prefill + decode) in one iteration per replica. "
                                            "With routed experts under uniform routing (routing.distribution: "
                                            "uniform) the simulator tabulates the expected expert loads for every "
                                            "batch size up to it: max_batch_tokens + 1 times model.n_experts must "
                                            "stay within 2^26 cells (at most 524,287 tokens with 128 experts, "
                                            "262,143 with 256); the same holds for each disaggregated pool's own.")
    chunked_prefill: bool = Field(True, description="Split long prompts across iterations to fit max_batch_tokens. "
        "false: each prompt (less its cached prefix) is prefilled whole in one iteration, so max_batch_tokens must "
        "hold the longest; a scenario whose prompt_tokens has an upper bound over it is refused, and with no upper "
        "bound (lognormal without max, trace) the longer prompts are refused at arrival (counted in "
        "rejected_batch_tokens_requests).")
    mixed_batches: bool = Field(True, description="Prefill chunks ride in the decode iterations (vLLM V1, "
        "TensorRT-LLM). false: an iteration with prompt work runs only prefill and the decodes wait for it, as "
        "SGLang schedules by default (--enable-mixed-chunk off) and vLLM V0 did.")
    router: Literal["round_robin", "least_loaded"] = Field("least_loaded", description="How requests are spread over "
        "replicas. least_loaded: to the replica with the fewest outstanding requests; over the ranks of plan.dp_attention "
        "groups, to the rank holding the fewest tokens (KV plus queued prompts) under an even share of requests "
        "(TensorRT-LLM's attention-DP balancer).")
    kv_cache_fraction: float = bounded(0.9, gt=0, le=1, why="a fraction of the memory left after weights",
                                       description="Fraction of memory left after weights that holds the KV cache "
                                       "(TensorRT-LLM's kv_cache_config.free_gpu_memory_fraction); see memory_utilization. "
                                       "On CUDA devices what is left is of the total CUDA reports (~0.7 GiB under "
                                       "the capacity) less the CUDA context (0.77 GiB) and the communicators' buffers "
                                       "(1.8 GiB per doubling of the GPUs a replica spans), which are allocated first.")
    memory_utilization: float | None = bounded(
        None, gt=0, le=1, why="a share of the device's memory",
        description="vLLM's --gpu-memory-utilization (SGLang's --mem-fraction-static): the share of each device's "
        "memory the engine takes for weights, working activations and the KV pool, the pool getting what is left "
        "of it (vLLM's default 0.9); on CUDA devices a share of the total CUDA reports (~0.7 GiB under the "
        "capacity), the CUDA context and NCCL's buffers outside it. null: the pool is kv_cache_fraction of what "
        "weights and activations leave (TensorRT-LLM's way). Set one of the two.")
    kv_cache_dtype: Literal["auto", "bf16", "fp16", "fp8"] = Field(
        "auto", description="Dtype the KV cache is stored and read in (vLLM and SGLang --kv-cache-dtype, TensorRT-LLM "
        "kv_cache_config.dtype). auto: the width of the model's activations (an fp8 model on fp8 tensor cores keeps an "
        "fp8 cache, as TensorRT-LLM's ModelOpt checkpoints do; 16-bit and weight-only models a 16-bit one), except under "
        "engine vllm, whose auto is the model's 16-bit dtype (an fp8 checkpoint keeps a bf16 cache; SGLang's auto is "
        "the same: name bf16). fp8 halves a 16-bit model's KV bytes: twice the "
        "sequences in the pool and half the decode attention reads; bf16 doubles an fp8 model's.")
    tp_allreduce: Literal["custom", "nccl"] = Field(
        "custom", description="Kernels of the TP all-reduces inside an NVLink node. custom: the engine's own "
        "all-reduce (vLLM and SGLang custom all-reduce, TensorRT-LLM's AUTO strategy): one-shot or two-shot through "
        "peer memory where that beats NCCL's ring (small messages: decode), the ring past that. nccl: NCCL's ring only "
        "(vLLM --disable-custom-all-reduce, GPUs without NVLink peer access). A TP group spanning nodes runs the ring.")
    local_attention_mode: Literal["kv_window", "compute", "prefill"] = Field("kv_window", description="How the "
        "engine runs model.local_attention's layers. kv_window: prompt chunks and decodes attend within the window and "
        "those layers keep only the window's KV (vLLM's hybrid KV cache manager, SGLang's SWA pool; a chunked layer "
        "counted at one chunk); compute: they attend within the window, but the KV cache is allocated for the whole "
        "context on every layer (TensorRT-LLM's one pool at the largest window unless kv_cache_config.max_attention_window "
        "lists the layers' windows: gpt-oss and Llama 4 as its benchmarks run them, PR #18767); prefill: only prompt "
        "chunks attend within the window, decodes over the whole cache (an engine without a windowed decode kernel; "
        "TensorRT-LLM ran Llama 4's chunked layers so before 0.21, which added chunked attention to generation: "
        "compute).")
    kv_admission: Literal["prompt", "full"] = Field("prompt", description="KV reserved when a request is admitted: prompt (vLLM: the prompt, one slot per decode step, newest preempted when full) | full (TensorRT-LLM GUARANTEED_NO_EVICT: prompt + all output tokens up front, never preempted).")
    speculative: SpeculativeSpec | None = Field(None, description="Speculative decoding (draft model or MTP heads); null: plain decoding. Disaggregated: the decode pool's.")
    prefix_cache_hit: float = bounded(0.0, ge=0.0, lt=1.0, why="a fraction of each prompt; 1 would leave nothing to prefill",
                                      description="Fraction of each prompt whose KV is already cached (prefix caching): those tokens are "
                                                  "not recomputed but are attended over and held in KV.")
    disaggregation: DisaggregationSpec | None = Field(None, description="Separate prefill and decode pools (each with its own plan); null: one pool on plan.")
    dp_attention_balance: DpAttentionBalance | None = Field(
        None, description="With plan.dp_attention: hold each rank's new prompts until every rank of its lock-step group "
        "has one (TensorRT-LLM's attention_dp_config.enable_balance); null: a rank prefills as soon as its own scheduler "
        "admits a prompt (TensorRT-LLM's default, SGLang, vLLM).")
    cuda_graph_batch_sizes: list[GraphBatch] | None = Field(
        None, min_length=1, json_schema_extra={BOUND_REASON: GRAPH_WHY}, description="Decode batch sizes captured as CUDA graphs, padding on (TensorRT-LLM "
        "cuda_graph_config.batch_sizes with enable_padding): a decode-only batch replays the smallest size at or above its "
        "sequences, the extra rows dummy requests that run every op but attention (their tokens reach the experts too); "
        "a lock-step attention-DP group pads every rank to its largest rank's batch first. Larger batches run eagerly. "
        "Sizes above max_batch_seqs or max_batch_tokens are dropped, as TensorRT-LLM does. null: graphs for decode "
        "batches up to the host's graph_max_batch (512), each at its own size. CUDA devices only (Apple and CPU "
        "presets run no graphs).")

    engine: Literal["vllm", "trtllm"] | None = Field(
        None, description="Serving engine whose host (scheduler, input preparation, output handling) time per "
        "iteration to price: vllm (vLLM V1: ~0.43 ms + ~1.1 us per sequence, decode steps overlapped) or trtllm "
        "(TensorRT-LLM's PyTorch backend: ~2.3 ms + ~14 us per sequence, of the whole lock-step group under "
        "plan.dp_attention, every step overlapped), each "
        "cited in costmodel/host.py; the host time shows where it outlasts the GPU step. null: the device profile's "
        "host section, else its platform's defaults (vLLM V1-class on CUDA GPUs). CUDA devices only. The engine also "
        "resolves its own defaults: vllm keeps an fp8 checkpoint's KV cache in bf16 (kv_cache_dtype auto) and holds "
        "its sampler warm-up out of the KV pool (max_batch_seqs x vocabulary x 28 bytes, moesim/serving_reserve.py); "
        "trtllm runs MXFP4 experts on MXFP8 activations on FP4-capable devices (mxfp4_activations auto).")
    mxfp4_activations: Literal["auto", "bf16", "mxfp8"] = Field(
        "auto", description="Activations the MXFP4 expert GEMMs (model.expert_dtype: mxfp4, gpt-oss) multiply: bf16 "
        "(weights converted to BF16 in the kernel, the BF16 peak: Hopper, and vLLM's and SGLang's default on Blackwell) "
        "or mxfp8 (W4A8 on FP4-capable tensor cores at the FP8 peak: TensorRT-LLM on Blackwell, vLLM "
        "--quantization-config.moe.activation mxfp8; refused on a device without FP4 tensor cores). auto: mxfp8 when "
        "workload.engine is trtllm on a device with an fp4 peak, else bf16.")
    cuda_graph_padding: bool = Field(True, description="With cuda_graph_batch_sizes: a decode batch pads up to the "
        "next captured size (TensorRT-LLM enable_padding: true); false: only a batch of a captured size replays its "
        "graph, every other runs eagerly (TensorRT-LLM's default).")

    @field_validator("cuda_graph_batch_sizes")
    @classmethod
    def _sorted_sizes(cls, v: list[int] | None) -> list[int] | None:
        return None if v is None else sorted(set(v))

    @model_validator(mode="after")
    def _check(self) -> ServingWorkload:
        # the default written back by model_dump() is not a second choice
        default_fraction = type(self).model_fields["kv_cache_fraction"].default
        if self.memory_utilization is not None and self.kv_cache_fraction != default_fraction:
            raise ValueError("memory_utilization and kv_cache_fraction: set one (memory_utilization: vLLM's and "
                             "SGLang's share of the whole device; kv_cache_fraction: TensorRT-LLM's share of what the "
                             "weights leave)")
        if not self.cuda_graph_padding and self.cuda_graph_batch_sizes is None:
            raise ValueError("cuda_graph_padding: false needs workload.cuda_graph_batch_sizes (the sizes that replay "
                             "without padding)")
        # the pools are played one after the other, so a decode finish cannot release the next arrival
        if self.arrival.process == "closed" and self.disaggregation is not None:
            raise ValueError("arrival.process: 'closed' is not supported with disaggregation; use poisson or batch")
        return self


Workload = Annotated[TrainingWorkload | ServingWorkload, Field(discriminator="kind")]
