"""The metric registry: unit, direction, label and meaning of every summary key. Pure data.

One :class:`Metric` per key of the summaries of ``moesim.simulate`` (training and serving) and of
``moesim.check.summary`` (what ``moesim check`` prints, its nested ``memory`` dict as
``memory.<key>``). Everything that needs to know about a metric reads it here: the report's number
formatting (:mod:`moesim.formatting`), ``sweep --best``'s direction (:mod:`moesim.sweep`), plot axis
labels (:mod:`moesim.plots`) and the README's tables of summary keys, which are generated::

    python -m moesim.metrics                  # list the metrics
    python -m moesim.metrics --write-readme   # refresh the tables in README.md
    python -m moesim.metrics --check-readme   # exit 1 when README.md is out of date

Adding a key to a summary: add one ``_add(...)`` line below (a test fails until you do), then
``--write-readme``. Names that are not registered (sweep columns such as ``sim_wall_s``) fall back
to :func:`guess_unit` / :func:`guess_direction`, which read the unit from the name's suffix.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

__all__ = ["FAMILIES", "KINDS", "METRICS", "README_KINDS", "Metric", "direction_of", "guess_direction",
           "guess_unit", "label_of", "markdown_table", "metric", "readme_with_tables", "unit_of", "write_readme"]

#: Summaries that carry metrics: ``simulate`` of a training or serving scenario, ``check``, and the
#: keys ``simulate --slo`` adds to the serving summary of the run at capacity (``moesim.capacity``).
KINDS = ("training", "serving", "check", "capacity")


@dataclass(frozen=True)
class Metric:
    """One summary key.

    ``unit``: short unit ("s", "tokens/s", "GiB", "USD", "fraction", "bool", "text", "count", ...);
    ``direction``: "max" or "min" when larger or smaller is better, None when neither (devices,
    names, notes); ``label``: axis label with the unit; ``description``: one sentence (the README's
    meaning); ``kinds``: summaries that carry the key; ``stable``: the kinds whose summary promises
    the key (README bold: scripts may rely on it); ``by_kind``: (kind, sentence) pairs that replace
    ``description`` for that kind where the key means something more specific there; ``family``:
    keys that differ only by a statistic (``ttft_p50_s``, ``ttft_p99_s``...) share one (one README row).
    """

    name: str
    unit: str
    direction: str | None
    label: str
    description: str
    kinds: tuple[str, ...]
    stable: tuple[str, ...] = ()
    by_kind: tuple[tuple[str, str], ...] = ()
    family: str = ""

    def describe(self, kind: str | None = None) -> str:
        """The meaning of the key in ``kind``'s summary (the general description otherwise)."""
        return dict(self.by_kind).get(kind, self.description) if kind else self.description

    def is_stable(self, kind: str) -> bool:
        return kind in self.stable


METRICS: dict[str, Metric] = {}
T, S, C, CAP = ("training",), ("serving",), ("check",), ("capacity",)
TS, SC, TSC = T + S, S + C, T + S + C


#: One sentence per family of keys (the README's row for all of them).
FAMILIES: dict[str, str] = {}


def _add(name: str, unit: str, direction: str | None, label: str, description: str,
         kinds: tuple[str, ...], stable: tuple[str, ...] = (), family: str = "", **by_kind: str) -> None:
    assert name not in METRICS and direction in ("max", "min", None), name
    assert set(kinds) <= set(KINDS) and set(stable) <= set(kinds) and set(by_kind) <= set(kinds), name
    assert not family or family in FAMILIES, name
    METRICS[name] = Metric(name, unit, direction, label, description, kinds, stable,
                           tuple(by_kind.items()), family)


# ------------------------------------------------------------------ training (simulate)
_add("step_time_s", "s", "min", "step time (s)",
     "one optimizer step: pipeline + exposed data-parallel sync + optimizer (+ exposed parameter "
     "all-gather under ZeRO-1/2)", T, T)
_add("tokens_per_s", "tokens/s", "max", "throughput (tokens/s)",
     "tokens per step / step time, whole cluster", T, T)
_add("mfu", "fraction", "max", "MFU (fraction of peak)",
     "model FLOPs (6 x active params-style, no recompute; fine-tuning: forward, input gradients, the trainable "
     "weights' gradients and LoRA adapters) per second / (devices x dense bf16 peak, "
     "whatever the compute dtype: the Megatron / NeMo convention; fp16 peak where a device has no bf16)", T, T)
_add("mfu_dtype_peak", "fraction", "max", "MFU vs the compute dtype's peak (fraction)",
     "as `mfu`, against the dense peak of the compute dtype (`compute_dtype`: half of `mfu` for fp8 "
     "on an H100)", T)
# --------------------------------------------------------- context and precision (all summaries)
_add("scenario", "text", None, "scenario", "the scenario's name", C)
_add("model", "text", None, "model", "the model's name (what ran)", SC)
_add("hardware", "text", None, "hardware", "the hardware preset's name (what ran)", SC)
_add("devices", "count", None, "devices", "devices of the cluster (what ran)", TSC,
     training="devices in the plan")
_add("replicas", "count", None, "replicas", "data-parallel serving replicas (`plan.dp`)", S)
_add("platform", "text", None, "platform",
     "what the device's name picked: Apple Metal ('Apple'), a CPU ('CPU', 'Xeon', 'EPYC'), a TPU's compiled step "
     "('TPU') or CUDA; it sets host costs and memory limits (hardware.device.name)", C)
_add("cost_model", "text", None, "cost model",
     "what prices the kernels: a calibration profile (hardware.profile) as measured, a shipped profile rebased on "
     "the device's datasheet (hardware.device.default_profile, or matched on the device name), or the datasheet "
     "roofline", C)
_add("compute_dtype", "text", None, "compute dtype",
     "dtype the GEMMs run in", TSC, training="dtype the GEMMs run in (`mfu_dtype_peak`'s peak)")
_add("weight_bytes_per_param", "bytes/param", None, "weight bytes per parameter (B)",
     "bytes read per weight including quantization scales (int4 on an A100: 0.516 = 4.125 bits; QLoRA: the mean of "
     "its nf4 and 16-bit base weights; model.expert_dtype: the mean over all weights)", TSC)
_add("kv_cache_dtype", "text", None, "KV cache dtype",
     "dtype the serving KV cache is stored and read in: `workload.kv_cache_dtype`, its auto resolved (the model's "
     "activation width; under `workload.engine: vllm` an FP8 checkpoint's cache stays 16-bit, as vLLM's is)", SC)
_add("precision_note", "text", None, "precision note",
     "empty unless the weights run weight-only (int8/int4/mxfp4 anywhere, fp8 or nvfp4 on a device without "
     "fp8 or fp4 tensor cores) or MXFP4 experts multiply MXFP8 activations (`workload.mxfp4_activations`): then a "
     "note saying so", TSC)
_add("sustained_compute_fraction", "fraction", None, "sustained compute (fraction)",
     "share of its benchmarked compute rate the device keeps under sustained load at its power limit, at which "
     "this run's compute-bound kernels were priced, for its compute dtype (`hardware.device.sustained_compute_fraction`; "
     "b200 and gb200-nvl72 0.853, FlashInfer PR #2899; FP4 on gb300-nvl72 0.664 and b300 0.603, "
     "`sustained_fp4_fraction`, power-bound; 1 where not measured or not throttled)", TSC)
# ----------------------------------------------------------------------- training, continued
_add("bubble_fraction", "fraction", "min", "pipeline bubble (fraction)",
     "idle time of the pipeline (mean over stages) / pipeline time", T, T)
_add("dropped_fraction", "fraction", "min", "dropped tokens (fraction)",
     "expert token-slots dropped at capacity (0 when dropless or dense)", TS, TS,
     training="routed token-slots over expert capacity (drop policy), all MoE layers")
_add("peak_memory_gib", "GiB", "min", "peak memory per device (GiB)",
     "memory of the busiest device (see `moesim check`)", TS, T,
     serving="weights + KV pool per device (see `moesim check`)")
_add("peak_reserved_gib", "GiB", "min", "peak reserved memory per device (GiB)",
     "what PyTorch's caching allocator reserves at that peak, as torch.cuda.max_memory_reserved and training "
     "logs report it: `peak_memory_gib` over 1 - the share no tensor uses (`plan.allocator`; 24 % with "
     "full recompute or LoRA under the default allocator, 4 % without, 0 with expandable segments, under XLA "
     "and under MLX on Apple silicon: moesim/allocator.py, memory.stranded_fraction), at most what the device gives the tensors (`memory_capacity_gib`) when they fit (the "
     "allocator frees its cache before it fails)", T)
_add("peak_device_gib", "GiB", "min", "peak device memory used (GiB)",
     "what the device has in use at that peak, as nvidia-smi shows it: `peak_reserved_gib` plus the CUDA context and "
     "NCCL's communicator buffers beside PyTorch (`memory.held_gib`, moesim/train_reserve.py)", T)
_add("fits", "bool", None, "fits in memory", "peak memory within the device's capacity", TSC, T,
     check="memory per device within the device's capacity")
_add("fits_reason", "text", None, "why it does not fit",
     "empty when it fits; else the memory terms that exceed the capacity, or (serving) the longest request's KV "
     "against the KV pool (printed under the table)", TSC,
     training="empty when it fits; else the memory terms that exceed the capacity (`weights 87.0 GiB + "
              "gradients ... = 730.9 GiB > capacity 77.2 GiB (of the 79.3 GiB CUDA reports, 2.1 GiB held by the CUDA "
              "context and NCCL's buffers) per device`, printed under the table)",
     serving="empty when it fits; else weights + activations + the KV of the longest request against "
             "the capacity (printed under the table)")
_add("fits_advice", "text", None, "what would make it fit",
     "empty when it fits; else the smallest changes that fit, each checked by the same accounting "
     "(printed under the table)", TSC,
     training="empty when it fits; else the smallest changes that fit (more TP or PP, ZeRO-3, smaller optimizer "
              "states, more micro-batches of the same global batch, recompute, QLoRA or fewer trained blocks for a "
              "fine-tune, a bigger device), each checked by the same accounting; "
              "when it fits but `peak_reserved_gib` exceeds the capacity, the allocator setting that avoids it "
              "(printed under the table as `tight:`)",
     serving="empty when it fits; else the smallest changes that fit (more TP or PP, a smaller dtype "
             "such as `int4`, a bigger device), each checked by the same accounting")
_add("usd_per_mtok", "USD/1M tokens", "min", "cost ($ per 1M tokens)",
     "cost of 1M tokens at the hardware's $/hour for every device", TS, TS,
     training="cost of 1M trained tokens at the hardware's $/hour for every device",
     serving="cost of 1M output tokens in steady state: every device's $/hour over the output tokens per second "
             "over the steady-state window (`steady_window_*`; the whole run for an offline batch)")
_add("gpu_hours_per_trillion_tokens", "device-hours", "min", "device-hours per 1T tokens",
     "devices x step time / tokens per step x 1e12 / 3600: the device-hours of a trillion training tokens "
     "(DeepSeek-V3's report: 180K H800 GPU-hours)", T)
_add("run_tokens", "tokens", None, "tokens of the run",
     "`workload.total_tokens`, the tokens `run_time_days` and `run_cost_usd` are for (NaN, JSON null, when no "
     "token budget is given)", T)
_add("run_time_days", "days", "min", "run time (days)",
     "`workload.total_tokens` / tokens_per_s (NaN, JSON null, when no token budget is given)", T, T)
_add("usd_per_device_hour", "USD/device-hour", None, "price ($ per device-hour)",
     "the price every cost figure rests on: hardware.device.usd_per_hour (a preset's rent, or yours with --set "
     "hardware.device.usd_per_hour=2.0)", TS)
_add("run_cost_usd", "USD", "min", "run cost (USD)", "devices x $/hour x run time", TS, T,
     serving="the whole simulated run: devices x $/hour x makespan")
_add("analytic_bubble_fraction", "fraction", "min", "analytic bubble (fraction)",
     "the schedule's formula with equal forward, input-gradient and weight-gradient times: (pp-1)/(m+pp-1), "
     "interleaved (pp-1)/(v*m+pp-1); zb-h1 (pp-1)/(3m+pp-1); dualpipe (pp-2)/(3m+pp-2)", T)
_add("excess_bubble_s", "s", "min", "excess bubble (s)",
     "bubble beyond the formula: stages of unequal work (uneven layer counts, the embedding and output head "
     "on the end stages, stragglers) and passes of unequal length (the formula's equal forward, input- and "
     "weight-gradient times: an exposed all-to-all lengthens one pass, not the others)", T)
_add("usd_per_step", "USD", "min", "cost per step (USD)", "one step, whole cluster", T)
_add("padding_waste_fraction", "fraction", "min", "padding waste (fraction)",
     "empty expert slots: (capacity x experts - kept) / (capacity x experts)", T)
_add("tokens_per_step", "tokens", None, "tokens per step",
     "tokens in one optimizer step (global batch x sequence length; padded samples: their real tokens only)", T)
_add("tokens_per_s_per_device", "tokens/s", "max", "throughput per device (tokens/s)",
     "tokens_per_s / devices", T)
_add("model_tflops_per_device", "TFLOP/s", "max", "model TFLOP/s per device",
     "model FLOPs per second per device", T)
_add("steps", "count", None, "steps", "steps simulated", T)
_add("alltoall_nvlink_bytes", "bytes", "min", "all-to-all bytes over NVLink per step",
     "all-to-all bytes per step over NVLink of the busiest EP rank, the one that sets each collective's time (its "
     "dispatch received and combine sent: under skewed dropless routing more than an even rank's; under "
     "`overflow: drop` padded to capacity)", T)
_add("alltoall_nic_bytes", "bytes", "min", "all-to-all bytes over the NIC per step",
     "as `alltoall_nvlink_bytes`, over the busiest EP rank's NIC", T)
_add("expert_load_imbalance", "ratio", "min", "expert load imbalance (max/mean per EP rank)",
     "tokens on the busiest EP rank over the mean rank, averaged over MoE layers (1 = even; "
     "placement.redundant_experts lowers it)", TS,
     training="tokens the busiest EP rank computes over the mean rank's, per MoE layer and microbatch of the "
              "sampled loads, averaged (1 = even; per layer: the layers table's rank_imbalance); under "
              "`overflow: drop` every rank computes its padded capacity, so 1 whatever the skew, which shows in "
              "`dropped_fraction` instead",
     serving="expected tokens on the busiest EP rank over the mean rank from the routing popularity, averaged "
             "over MoE layers (1 = even)")
_add("sequence_padding_fraction", "fraction", "min", "sequence padding (fraction)",
     "padding tokens over computed tokens when `workload.sample_tokens` is set: 0 with `packing: true`, "
     "1 - E[min(length, seq_len)] / seq_len padded to `seq_len`, 1 - E[min(length, seq_len)] / E[longest of a "
     "micro-batch] with `padding: longest` (tokens_per_s counts real tokens only)", T)
_add("trainable_params", "count", None, "trainable parameters",
     "parameters the optimizer updates (LoRA: the adapters' r x (d_in + d_out) per adapted matrix); "
     "only when `workload.trainable` is not `all` over every block (a mode or `layers`)", T + C)
_add("trainable_fraction", "fraction", None, "trainable fraction of parameters",
     "trainable_params / the model's parameters (LoRA adapters over the base model); only when "
     "`workload.trainable` is not `all` over every block (a mode or `layers`)", T + C)
_PART = " (mean over stages; part of `pipeline_s`)"
_add("compute_s", "s", "min", "compute (s)",
     "GEMMs, attention, experts, norms, recompute, embedding and head" + _PART, T)
for _part, _what in (("attention", "the attention blocks: their norms, QKV and output projections, RoPE and attention core"),
                     ("router", "the MoE layers' router GEMM, top-k and token permute"),
                     ("experts", "the routed experts' grouped GEMMs and activation, the un-permute and the shared "
                                 "experts (host_wait_s included)"),
                     ("dense_ffn", "the FFNs of dense layers"),
                     ("embedding_head", "the input embedding, the final norm, output head and loss"),
                     ("recompute", "activation recompute re-running the forward in the backward")):
    _add(f"compute_{_part}_s", "s", "min", f"{_part.replace('_', ' ')} compute (s)",
         f"of compute_s, {_what}, forward and backward (weight-gradient halves included); the compute rows of "
         "`train_step.csv`, which sum to compute_s" + _PART, T)
_add("alltoall_s", "s", "min", "all-to-all (s)", "expert-parallel all-to-alls, hidden or not (they block the "
     "compute stream unless `plan.overlap_alltoall`; recompute's re-run included: full, or the moe / mlp modules; mean over stages)", T)
_add("alltoall_exposed_s", "s", "min", "exposed all-to-all (s)",
     "the part of `alltoall_s` on the critical path, while the compute stream waits for it: all of it "
     "unless `plan.overlap_alltoall` (Megatron's combined 1F1B) hides some behind another microbatch's "
     "compute" + _PART, T)
_add("tp_comm_s", "s", "min", "TP communication (s)", "tensor-parallel all-reduces (they block the compute "
     "stream; recompute's re-run included: full, or the moe / mlp modules)" + _PART, T)
_add("pp_comm_s", "s", "min", "PP communication (s)", "waits caused by pipeline transfers in flight" + _PART, T)
_add("bubble_s", "s", "min", "pipeline bubble (s)",
     "the rest of the idle time until the last stage finishes its backward" + _PART, T)
_add("dp_sync_exposed_s", "s", "min", "exposed DP sync (s)",
     "the part of the data-parallel gradient sync not hidden behind backward", T)
_add("straggler_wait_s", "s", "min", "straggler wait (s)",
     "time the busiest expert-parallel rank adds over perfectly even routing (within compute_s + alltoall_s)", T)
_add("host_wait_s", "s", "min", "host wait (s)",
     "time the GPU waits for the host to issue an MoE layer's kernels, per step (within compute_s; "
     "plan.moe_layer_host_us)", T)
_add("optimizer_s", "s", "min", "optimizer (s)", "the optimizer update after the gradient sync", T)
_add("dp_sync_s", "s", "min", "DP gradient sync (s)",
     "data-parallel gradient sync, total (hidden or not): all-reduces, or ZeRO's reduce-scatters "
     "(every microbatch from ZeRO-2)", T)
_add("zero_gather_s", "s", "min", "ZeRO parameter all-gather (s)",
     "ZeRO parameter all-gathers of one step, hidden or not (mean over stages): after the optimizer "
     "for ZeRO-1/2, before every layer's forward and backward for ZeRO-3; 0 for ZeRO-0", T)
_add("zero_gather_exposed_s", "s", "min", "exposed ZeRO parameter all-gather (s)",
     "the part of `zero_gather_s` compute cannot hide: ZeRO-3's waits before layers (part of "
     "`pipeline_s`), or what the next step's first forward cannot hide of ZeRO-1/2's gather (added "
     "to the step after the optimizer)", T)
_add("pipeline_s", "s", "min", "pipeline (s)", "the forward+backward pipeline: compute_s + alltoall_exposed_s + tp_comm_s + cp_comm_s + pp_comm_s + bubble_s on every stage "
     "(+ zero_gather_exposed_s under ZeRO-3)", T)
_add("microbatch_busy_s", "s", "min", "stage busy time per micro-batch (s)",
     "(pipeline_s - bubble_s) / plan.microbatches: a stage's forward and backward of one micro-batch with the "
     "communication they leave exposed, idle time left out (DualPipe: one overlapped forward-backward pair), "
     "what a profile of a steady-state stretch measures (mean over stages)", T)
_add("cp_comm_s", "s", "min", "exposed CP attention exchange (s)",
     "context parallelism's ring exchange of K/V (and dK/dV in backward) that the attention compute does not "
     "hide, or all of Ulysses' Q/K/V and output all-to-alls (`plan.cp_comm: a2a`), recompute's re-run "
     "included; 0 when `plan.cp` is 1" + _PART, T)
# ------------------------------------------------------------------ serving (simulate)
_add("n_requests", "count", None, "requests", "requests in the workload", S)
_add("served_requests", "count", "max", "served requests", "requests that finished", S)
_add("rejected_requests", "count", "min", "rejected requests",
     "requests refused at arrival and never served, whatever the reason (the three rejected_*_requests keys "
     "count each reason, rejected_note says them)", S)
_add("rejected_fraction", "fraction", "min", "rejected requests (fraction)", "rejected_requests / n_requests", S)
_add("rejected_max_seq_len_requests", "count", "min", "rejected requests (over max_seq_len)",
     "requests refused because prompt + output tokens exceed `model.max_seq_len` (as vLLM, SGLang and TensorRT-LLM "
     "refuse a request over their max model length; lengths without an upper bound: a lognormal without `max`, a "
     "trace)", S)
_add("rejected_batch_tokens_requests", "count", "min", "rejected requests (prompt over max_batch_tokens)",
     "requests refused because, with `workload.chunked_prefill` false, the prompt left to prefill exceeds "
     "`workload.max_batch_tokens` (no iteration can take it whole)", S)
_add("rejected_kv_cache_requests", "count", "min", "rejected requests (over the KV cache)",
     "requests refused because prompt + output tokens could never fit the KV cache of one engine", S)
_add("rejected_note", "text", None, "rejected requests", "how many requests were refused and why, one line "
     "(printed under the table; empty when none was)", S)
_add("makespan_s", "s", "min", "makespan (s)", "first arrival to last finish", S)
_add("output_tokens_per_s", "tokens/s", "max", "output throughput (tokens/s)",
     "generated tokens per second over the steady-state window (`steady_window_*`; the whole run for an offline batch), whole cluster: the output tokens of the requests arriving in it while "
     "the plan keeps up (it serves what is offered), the tokens generated in it when overloaded", S, S)
_add("input_tokens_per_s", "tokens/s", "max", "input throughput (tokens/s)",
     "prompt tokens per second over the steady-state window (`steady_window_*`; the whole run for an offline batch), whole cluster (as output_tokens_per_s)", S, S)
_add("requests_per_s", "requests/s", "max", "served requests (requests/s)",
     "served requests per second over the steady-state window (`steady_window_*`; the whole run for an offline batch): the requests arriving in it (rejected ones left out) while the plan "
     "keeps up; when overloaded, the output tokens generated in it over a served request's mean output length "
     "(its finishes lag)", S)
_add("output_tokens_per_s_per_device", "tokens/s", "max", "output throughput per device (tokens/s)",
     "output_tokens_per_s / devices", S)
_add("steady_window_start_s", "s", None, "steady window start (s)",
     "first arrival time of the steady-state window the headline figures are over (warm-up left out)", S)
_add("steady_window_end_s", "s", None, "steady window end (s)",
     "end of the steady-state window (drain left out; an offline batch: the last finish)", S)
_add("steady_window_s", "s", None, "steady window (s)", "length of the steady-state window", S)
_add("steady_requests", "count", None, "requests in the steady window", "requests arriving in the steady-state window", S)
_add("steady_note", "text", None, "steady-state window", "which requests the steady-state window covers and why it "
     "starts where it does (printed under the table)", S)
_add("offered_requests_per_s", "requests/s", None, "offered rate (requests/s)",
     "requests arriving in the steady-state window per second of it (NaN, JSON null, for an offline batch)", S)
_add("queue_growth_requests", "count", "min", "queue growth over the steady window (requests)",
     "growth of the requests in the system (arrived, not finished) across the steady-state window, a fitted line", S)
_add("overloaded", "bool", "min", "overloaded",
     "the plan did not keep up with open arrivals (Poisson, trace): the requests in the system grew across the "
     "steady window beyond noise (a fitted line; a run shorter than twice its e2e p90 may read its fill-up so); "
     "latencies then depend on the run length. Never for an offline batch or a closed loop (their arrivals wait for the plan)", S)
_add("short_run", "bool", "min", "short run",
     "open arrivals whose steady window lasts under two e2e p90s: the batch may still be filling, so its tail "
     "latencies read low and its overload verdict is unsure; run more requests (workload.arrival.n_requests). "
     "Never for an offline batch or a closed loop", S)
_add("whole_run_output_tokens_per_s", "tokens/s", "max", "output throughput, whole run (tokens/s)",
     "generated tokens over the makespan (ramp-up and drain included), whole cluster", S)
_add("whole_run_requests_per_s", "requests/s", "max", "served requests, whole run (requests/s)",
     "served requests over the makespan (ramp-up and drain included)", S)
_LATENCY = {"ttft": ("TTFT", "time to first token: first token - arrival"),
            "tpot": ("TPOT", "time per output token after the first: (finish - first token) / "
                             "(output tokens - 1), requests with more than one output token"),
            "e2e": ("end-to-end latency", "end-to-end latency: finish - arrival")}
_STATS = {"mean": "mean", "p50": "median", "p90": "90th percentile", "p99": "99th percentile"}
for _name, (_short, _meaning) in _LATENCY.items():  # summary order: mean, p50, p90, p99
    FAMILIES[_name] = (f"{_meaning}; mean, median (p50), 90th and 99th percentile over the served requests arriving "
                       "in the steady-state window")
    for _stat, _words in _STATS.items():
        _add(f"{_name}_{_stat}_s", "s", "min", f"{_short} {_stat} (s)",
             f"{_meaning}; {_words} over the served requests arriving in the steady-state window",
             S, S if _stat in ("p50", "p99") else (), family=_name)
FAMILIES["itl"] = ("inter-token latency (ITL): the gap each generated token waited after the one before it, as vLLM's "
                   "and SGLang's serving benchmarks report it; mean, median (p50), 90th and 99th percentile over the "
                   "tokens of the iterations ending in the steady-state window (moesim/engine/serving/itl.py). Per "
                   "token, where TPOT is per request: a step slowed by a prefill chunk shows in ITL's tail")
for _stat, _words in _STATS.items():
    _add(f"itl_{_stat}_s", "s", "min", f"ITL {_stat} (s)",
         f"inter-token latency, {_words} over the tokens generated in the steady-state window (each weighted once)",
         S, family="itl")
FAMILIES["queue"] = ("queueing delay, part of TTFT: first admission to a batch - arrival (disaggregated: to the "
                     "prefill pool's); median and 99th percentile over the requests arriving in the steady-state window")
for _stat, _words in (("p50", "median"), ("p99", "99th percentile")):
    _add(f"queue_{_stat}_s", "s", "min", f"queueing delay {_stat} (s)",
         f"first admission - arrival; {_words} over the requests arriving in the steady-state window", S, family="queue")
FAMILIES["whole_run_latency"] = ("TTFT, TPOT, end-to-end latency and queueing delay, median and 99th percentile over "
                                 "every served request of the run (ramp-up and drain included)")
for _name in ("ttft", "tpot", "e2e", "queue"):
    for _stat in ("p50", "p99"):
        _add(f"whole_run_{_name}_{_stat}_s", "s", "min", f"{_name} {_stat}, whole run (s)",
             f"{_name} {_stat} over every served request of the run", S, family="whole_run_latency")
_add("iterations", "count", None, "iterations", "continuous-batching iterations, all replicas", S)
_add("mean_batch_seqs", "count", None, "mean batch (sequences)",
     "sequences per continuous-batching iteration, mean weighted by iteration time", S)
_add("mean_decode_batch", "count", None, "mean decode batch (sequences)",
     "decoding sequences per iteration, mean weighted by iteration time", S)
_add("kv_utilisation_mean", "fraction", None, "KV cache utilisation, mean (fraction)",
     "KV tokens held / KV capacity, mean over iterations weighted by their time", S)
_add("kv_utilisation_max", "fraction", None, "KV cache utilisation, max (fraction)",
     "KV tokens held / KV capacity, largest over iterations", S)
_add("tp_comm_fraction", "fraction", "min", "TP all-reduce share of iteration time",
     "seconds in the iterations' TP all-reduces (2 per layer) / iteration seconds", S)
_add("alltoall_fraction", "fraction", "min", "EP all-to-all share of iteration time",
     "seconds in the iterations' EP dispatch and combine / iteration seconds", S)
_add("kv_cache_capacity_tokens", "tokens", "max", "KV cache capacity (tokens)",
     "KV capacity of one replica: its KV pool over the KV bytes per token per device", SC,
     check="KV capacity of one replica: its KV pool over the KV bytes per token per device (serving only)")
_add("kv_sequences_at_max_seq_len", "count", "max", "max-length sequences the KV cache holds",
     "sequences of model.max_seq_len tokens one replica's KV pool holds at once (local-attention layers keep only "
     "their window's KV under workload.local_attention_mode kv_window; serving only)", C)
_add("preemptions", "count", "min", "preemptions",
     "sequences evicted when the KV cache ran out (recomputed later)", S)
_add("preempted_requests", "count", "min", "preempted requests", "requests evicted at least once", S)
_add("memory_capacity_gib", "GiB", None, "memory capacity (GiB)", "what one device gives the run's tensors (training "
     "on CUDA: the total CUDA reports less the CUDA context and NCCL's buffers, moesim/train_reserve.py; serving: the "
     "engine's budget, the total CUDA reports times workload.memory_utilization, or less the CUDA context and "
     "communicator buffers)", TS)
_add("knee_batch", "sequences", None, "knee batch (sequences)",
     "decode batch where memory-bound turns compute-bound: the smallest whose doubling makes the step 1.5x as long "
     "(attention's KV reads left out; from the cost model, not the run)", S)
_STEP = "the run's mean decode step (the `decode_step` table printed under the summary)"
_add("decode_step_s", "s", "min", "mean decode step (s)",
     f"{_STEP}: one decode-only iteration at the run's mean decode batch per rank and mean context, priced part "
     "by part (the decode pool's, disaggregated); absent where no decode-only iteration ran", S)
for _part, _what in (("attention", "attention over the KV cache"), ("routed_experts", "the routed experts' GEMMs "
                     "and activation"), ("other_kernels", "projections, norms, router and other kernels"),
                     ("tp_comm", "tensor-parallel all-reduces"), ("ep_comm", "expert dispatch and combine"),
                     ("pp_comm", "pipeline hand-offs"),
                     ("output_head", "the output head: its GEMM, the logits' all-gather over TP and a greedy "
                                     "sampler's passes"),
                     ("two_batch_overlap", "two-batch overlap, net (+ costs, - saves)"),
                     ("host_and_launch", "host and kernel launches, exposed, net: a CUDA graph's replay less the "
                                         "per-kernel launch a datasheet profile prices into each kernel (- where "
                                         "the graph saves more than the host exposes)")):
    _add(f"decode_{_part}_s", "s", "min",
         f"decode step: {_part.replace('_', ' ')} (s)",
         f"of decode_step_s, {_what}: a row of `decode_step.csv` (0 where the step spends nothing on it)", S)
_add("decode_batch_seqs", "sequences", None, "decode batch priced (sequences per rank)",
     f"the batch of {_STEP}: the duration-weighted mean decode batch per rank of the decode-only iterations", S)
_add("decode_context_tokens", "tokens", None, "decode context priced (tokens)",
     f"the context of {_STEP}: the mean over the decoded tokens of prompt plus the tokens before it", S)
_add("spec_tokens_per_step", "tokens/step", "max", "tokens per decode step (per sequence)",
     "tokens emitted per sequence per decode step, mean over the run: 1 without speculative decoding, "
     "(1-a^(k+1))/(1-a) expected with it (less where outputs end)", S)
_add("spec_acceptance", "fraction", "max", "draft tokens accepted (fraction)",
     "accepted draft tokens / drafted tokens, (tokens per step - 1) / k; 0 without speculative decoding", S)
_add("eplb_rebalances", "count", None, "EPLB rebalances",
     "times the expert placement was recomputed (`placement.rebalance_every_s`; 0 when placed once)", S)
_add("eplb_moved_gib", "GiB", "min", "expert weights moved (GiB)",
     "expert weights copied to new slots at the rebalances, within one EP group, summed over them", S)
_add("eplb_stall_s", "s", "min", "EPLB weight-move stall (s)",
     "seconds the engines stalled while expert weights moved at rebalances, summed over engines", S)
_add("prefill_devices", "count", None, "prefill pool devices",
     "devices of the prefill pool (disaggregated serving only)", S)
_add("decode_devices", "count", None, "decode pool devices",
     "devices of the decode pool (disaggregated serving only)", S)
_add("prefill_utilisation", "fraction", "max", "prefill pool busy (fraction)",
     "seconds the prefill replicas iterate / (replicas x makespan) (disaggregated serving only)", S)
_add("decode_utilisation", "fraction", "max", "decode pool busy (fraction)",
     "seconds the decode replicas iterate / (replicas x makespan) (disaggregated serving only)", S)
_add("prefill_input_tokens_per_s_per_node", "tokens/s", "max", "prefill input tokens/s per node",
     "prompt tokens (cached prefix included, as DeepSeek counts them) per second per prefill node, over the "
     "window in which the pool computed the central 80% of its prefill tokens (disaggregated serving only)", S)
_add("decode_output_tokens_per_s_per_node", "tokens/s", "max", "decode output tokens/s per node",
     "tokens the decode pool generates per second per decode node, over the window of the central 80% of "
     "them (ramp-up and the last long requests left out; disaggregated serving only)", S)
_add("kv_transfer_mean_s", "s", "min", "KV transfer (s, mean)",
     "prefill-to-decode KV transfer: NIC latency + KV bytes / the prefill replica's NIC bandwidth, "
     "without the wait for the link (disaggregated serving only)", S)
_add("kv_transfer_p99_s", "s", "min", "KV transfer (s, p99)", "99th percentile of the per-request KV transfer "
     "time (disaggregated serving only)", S)
_add("kv_transfer_gib", "GiB", None, "KV moved (GiB)",
     "KV cache bytes sent from the prefill to the decode pool over the run (disaggregated serving only)", S)
_add("usd_per_day", "USD", "min", "cost per day (USD)",
     "every device of the cluster for 24 hours at its $/hour (disaggregated serving only)", S)
_add("energy_j_per_token", "J/token", "min", "energy (J per output token)",
     "board power of every device / output_tokens_per_s (steady state)", S)
_add("usd_per_1k_output_tokens", "USD/1K tokens", "min", "cost ($ per 1K output tokens)",
     "cost of 1K output tokens in steady state (every device's $/hour over output_tokens_per_s)", S)
_add("usd_per_1k_tokens", "USD/1K tokens", "min", "cost ($ per 1K tokens)",
     "cost of 1K input+output tokens in steady state (every device's $/hour over input + output tokens/s)", S)
_add("whole_run_usd_per_mtok", "USD/1M tokens", "min", "cost, whole run ($ per 1M output tokens)",
     "run_cost_usd / output tokens of the run x 1e6: every device charged for the makespan, ramp-up and drain "
     "included", S)
# ------------------------------------------------------------------ capacity (simulate --slo)
_add("max_goodput_req_s", "requests/s", "max", "capacity under the SLO (requests/s)",
     "highest Poisson arrival rate probed at which every SLO limit held in steady state, the plan kept up and "
     "at most 1% of requests were rejected (0 when the SLO fails near zero load)", CAP, CAP)
_add("usd_per_mtok_at_capacity", "USD/1M tokens", "min", "cost at capacity ($ per 1M output tokens)",
     "every device's $/hour over the output tokens per second of the steady-state window at capacity, the run's "
     "`usd_per_mtok` (NaN, JSON null, at capacity 0)", CAP, CAP)
_add("tokens_per_s_per_device_at_capacity", "tokens/s", "max", "output tokens/s per device at capacity",
     "the run at capacity's steady-state `output_tokens_per_s` per device of the cluster",
     CAP, CAP)
_add("slo", "text", None, "SLO", "the limits searched under, as --slo takes them", CAP, CAP)
_add("capacity_probes", "count", None, "capacity probes",
     "runs at one rate each that the search played (table `capacity_probes.csv`), besides the run with every "
     "request at t=0 that sets the first guess", CAP)
_add("capacity_limit", "text", None, "what limits the capacity",
     "the lowest rate probed that failed and why (an SLO percentile over its limit, overloaded, rejected "
     "requests; printed under the table), and, where its percentiles were under 1 % over their limits, that "
     "the capacity is fragile (a small change to the scenario can move it a probe)", CAP)
_add("capacity_note", "text", None, "how the capacity was measured",
     "how the probes' arrivals were made, the steady-state window of the run at capacity and the plan's "
     "saturated throughput (printed under the table)", CAP)
# ------------------------------------------------------------------ accounting (check)
_add("total_params", "params", None, "total parameters", "all weights: embeddings, attention, FFNs, every expert", C)
_add("active_params", "params", None, "active parameters",
     "weights one token passes through (top_k of the routed experts)", C)
_add("routed_expert_params", "params", None, "routed expert parameters", "weights of all routed experts", C)
_add("flops_per_token", "FLOP", None, "forward FLOPs per token",
     "forward FLOPs per token: 2 x active matmul weights + attention over a causal context (training: "
     "`seq_len`; serving: the workload's mean context, mean prompt + half the mean output)", C)
_add("training_flops_per_token", "FLOP", None, "training FLOPs per token",
     "forward + backward FLOPs per token (3x forward; full recompute adds another forward; fine-tuning: the "
     "forward, the input gradients through the trained blocks, the trainable weights' gradients and adapters)", C)
_add("micro_batch_seqs", "count", None, "sequences per micro-batch",
     "training: sequences one data-parallel rank computes per micro-batch, global_batch_seqs / (plan.dp x "
     "plan.microbatches): what plan.dp and plan.microbatches change in the activations", C)
_add("tokens_per_microbatch", "tokens", None, "tokens per micro-batch and device",
     "training: one micro-batch's tokens on one device, micro_batch_seqs rows (of seq_len, or of the padded "
     "length of variable-length samples) / plan.cp", C)
_add("pipeline_note", "text", None, "uneven pipeline split",
     "training, only when it applies: the layer counts of pipeline chunks that model.n_layers does not split "
     "evenly and the plan does not place (printed under the table)", C)
_add("kv_cache_bytes_per_token", "bytes/token", "min", "KV cache bytes per token",
     "serving: KV cache bytes one token adds across all layers (whole model, before any sharding)", C)
_add("decode_bytes_per_token_batch1", "bytes/token", "min", "decode bytes per token at batch 1",
     "bytes read from memory per decode step of one sequence at batch 1, whole model (before any sharding): the "
     "weights its token touches and its KV cache at the workload's mean context (serving only)", C)
_add("memory_per_device_gib", "GiB", "min", "memory per device (GiB)",
     "memory of the busiest device: the sum of the memory terms", C)
_add("memory", "GiB", None, "memory per device by term (GiB)",
     "memory of the busiest device by term (the memory.* rows)", C)
for _term, _what in (("weights", "weights held by the device"),
                     ("gradients", "gradients (training; sharded by ZeRO stage)"),
                     ("optimizer", "Adam states (training; sharded by ZeRO stage)"),
                     ("activations", "activations kept for backward, plus the loss's logits or one layer's recompute "
                                     "working set, whichever is more (training), or of one iteration (serving)"),
                     ("kv_cache", "KV cache pool (serving)")):
    _add(f"memory.{_term}_gib", "GiB", "min", f"{_term.replace('_', ' ')} memory (GiB)",
         f"{_what}, per device", C)
_add("memory.total_gib", "GiB", "min", "memory per device (GiB)", "sum of the memory terms", C)
_add("memory.capacity_gib", "GiB", None, "memory capacity (GiB)", "what one device gives the tensors (training on "
     "CUDA: the total CUDA reports less `memory.held_gib`; serving: the engine's budget)", C)
_add("memory.held_gib", "GiB", None, "memory held beside PyTorch (GiB)",
     "training on CUDA: the CUDA context and NCCL's communicator buffers, outside PyTorch's allocator and so not in "
     "the total (moesim/train_reserve.py); 0 otherwise", C)
_add("memory.fits", "bool", None, "fits in memory",
     "total within the capacity (serving: and the KV pool holds the longest request's KV)", C)
_add("memory.reserved_gib", "GiB", "min", "reserved memory (GiB)",
     "what PyTorch's caching allocator reserves around the total (training; see `peak_reserved_gib`)", C)
_add("memory.headroom_gib", "GiB", "max", "memory headroom (GiB)",
     "capacity - total; negative when it does not fit (serving: minus the KV the pool lacks for the longest request, "
     "plus what weights and activations overflow the capacity by)", C)
_add("memory.stage", "index", None, "pipeline stage of the memory figures",
     "the pipeline stage these memory terms are of: the one holding the most (0 unless an uneven layer split, the last "
     "stage's logits or DualPipe's two chunks per stage put more on another; serving: 0, every stage alike)", C)
_add("headroom_gib", "GiB", "max", "memory headroom (GiB)",
     "capacity - memory per device; negative when it does not fit (serving: minus the KV the pool lacks for the "
     "longest request, plus any overflow of weights and activations)", C)
del _name, _short, _meaning, _stat, _words, _term, _what


# ------------------------------------------------------------------ look-ups
def metric(name: str) -> Metric | None:
    """The registered metric ``name`` (None when unregistered)."""
    return METRICS.get(name)


#: Unit by the end of a name, for unregistered names (checked in order).
_SUFFIX_UNITS = (("_per_s", "/s"), ("_gib", "GiB"), ("_s", "s"), ("_usd", "USD"), ("_days", "days"),
                 ("_gbps", "GB/s"), ("_j_per_token", "J/token"), ("usd_per_mtok", "USD/1M tokens"),
                 ("usd_per_1k_tokens", "USD/1K tokens"), ("usd_per_step", "USD"), ("_w", "W"))
#: Name patterns whose best value is the largest (checked before the "min" ones).
_MAX_HINTS = ("per_s", "throughput", "mfu", "hfu", "goodput")
#: Name patterns whose best value is the smallest (a leading "_" means: the name ends so).
_MIN_HINTS = ("usd", "cost", "_s", "_ms", "_us", "_days", "fraction", "_gib", "_bytes", "latency",
              "ttft", "tpot", "e2e", "bubble", "dropped", "energy", "joules")


def guess_unit(name: str) -> str:
    """Unit read from an unregistered name ("" when the name says nothing)."""
    if name.endswith("params"):
        return "params"
    if "tflops" in name:
        return "TFLOP/s"
    if "flops" in name:
        return "FLOP"
    if name.endswith("bytes_per_param"):
        return "bytes/param"
    if name.endswith("_bytes") or "bytes_per" in name:
        return "bytes"
    if name.endswith("fraction") or name == "mfu" or name.endswith("utilisation"):
        return "fraction"
    return next((u for s, u in _SUFFIX_UNITS if name.endswith(s)), "")


def guess_direction(name: str) -> str | None:
    """"max" for throughput-like names, "min" for costs, times and fractions, None otherwise."""
    low = name.lower()
    if any(h in low for h in _MAX_HINTS):
        return "max"
    if any(low.endswith(h) if h.startswith("_") else h in low for h in _MIN_HINTS):
        return "min"
    return None


def unit_of(name: str) -> str:
    """The registered unit, else the one the name suggests."""
    m = METRICS.get(name)
    return m.unit if m else guess_unit(name)


def direction_of(name: str) -> str | None:
    """The registered direction (None: neither), else the one the name suggests."""
    m = METRICS.get(name)
    return m.direction if m else guess_direction(name)


def label_of(name: str) -> str:
    """Axis label: the registered one, else the name with its unit in brackets."""
    m = METRICS.get(name)
    if m:
        return m.label
    unit = guess_unit(name)
    return f"{name} ({unit})" if unit else name


# ------------------------------------------------------------------ README tables
def markdown_table(kind: str) -> str:
    """The README's table of ``kind``'s summary keys, one row per key or family of keys.

    Stable keys (bold) first, those of ``kind`` alone before shared ones; then the rest in
    registry order. A family's row sits where its first member would.
    """
    if kind not in KINDS:
        raise ValueError(f"kind {kind!r}: one of {', '.join(KINDS)}")
    members = [m for m in METRICS.values() if kind in m.kinds]
    stable = [m for m in members if m.is_stable(kind)]
    order = ([m for m in stable if set(m.kinds) - {"check"} == {kind}]
             + [m for m in stable if set(m.kinds) - {"check"} != {kind}]
             + [m for m in members if not m.is_stable(kind)])
    lines = ["| key | unit | meaning |", "|---|---|---|"]
    done: set[str] = set()
    for m in order:
        if m.name in done:
            continue
        group = [x for x in order if x.family == m.family] if m.family else [m]
        keys = ", ".join(f"**`{x.name}`**" if x.is_stable(kind) else f"`{x.name}`" for x in group)
        meaning = FAMILIES[m.family] if m.family else m.describe(kind)
        lines.append(f"| {keys} | {m.unit} | {meaning.replace('|', '&#124;')} |")
        done.update(x.name for x in group)
    return "\n".join(lines) + "\n"


README_KINDS = ("training", "serving")
#: Kinds whose README table is refreshed where the README has its block (none is required).
README_OPTIONAL_KINDS = ("capacity",)
_README = Path(__file__).resolve().parent.parent / "README.md"


def readme_with_tables(text: str) -> str:
    """``text`` (a README) with every metrics block replaced by the generated table (``doc_blocks``)."""
    from moesim.doc_blocks import has_block, replace_between

    for kind in README_KINDS + README_OPTIONAL_KINDS:
        begin, end = f"<!-- metrics:{kind} -->", f"<!-- /metrics:{kind} -->"
        if not has_block(text, begin, end):
            if kind in README_OPTIONAL_KINDS:
                continue
            raise ValueError(f"README has no {begin} ... {end} block")
        text = replace_between(text, begin, end, markdown_table(kind).removesuffix("\n"))
    return text


def write_readme(path: str | Path = _README, check: bool = False) -> bool:
    """Refresh the metric tables of the README at ``path``; True when it was already up to date.

    ``check``: only compare, write nothing.
    """
    path = Path(path)
    old = path.read_text(encoding="utf-8")
    new = readme_with_tables(old)
    if new != old and not check:
        path.write_text(new, encoding="utf-8")
    return new == old


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    readme = Path(args[args.index("--readme") + 1]) if "--readme" in args else _README
    if "--write-readme" in args:
        same = write_readme(readme)
        print(f"{readme}: {'up to date' if same else 'metric tables rewritten'}")
        return 0
    if "--check-readme" in args:
        same = write_readme(readme, check=True)
        print(f"{readme}: {'up to date' if same else 'out of date: run python -m moesim.metrics --write-readme'}")
        return 0 if same else 1
    for m in METRICS.values():
        print(f"{m.name:34} {m.unit:14} {m.direction or '-':4} {','.join(m.kinds)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
