"""Host-side cost of one serving iteration: scheduler and input preparation, kernel launches, CUDA graphs.

A continuous-batching engine pays, per iteration (one forward pass over the batch), besides its
kernels' GPU time:

* **host time** (``iteration_host_s``): scheduling, input preparation, sampling bookkeeping and
  output processing on the CPU, a fixed part plus a part per scheduled sequence;
* **launch overhead** (``launch_terms``, ``launch_added_s``): each kernel launched eagerly costs the
  CPU a launch, which shows where the GPU runs out of queued work; a CUDA graph replays all of a
  decode step's kernels from one launch, with a small gap per node. Neither removes a kernel's own
  GPU time, including the fixed part a profile measures for even the smallest kernel;
* whether the host time **overlaps** the GPU (``exposed_host_s``): engines that schedule one step
  ahead (SGLang's overlap scheduler, vLLM's async scheduling) only expose the host time the GPU
  time does not cover.

CUDA graphs are captured for decode-only batches up to a batch-size limit (``uses_cuda_graph``);
prefill and mixed prefill/decode batches, and decode batches above the limit, run eagerly.

Units are in the names (``_s`` seconds, ``_us`` microseconds). The numbers live in a
:class:`~moesim.costmodel.profile.HostSpec` (a profile's optional ``host`` section); without one,
:func:`default_host_spec` gives the defaults below per device kind and :func:`host_spec_for` the
spec matching a cost model. Every default is one of: **measured** (a number someone timed),
**framework default** (a configuration value of vLLM / SGLang, not a measurement) or
**assumed** (ours, stated as such).

Sources (the numbers the defaults come from)
--------------------------------------------
Host (scheduler + input preparation) time per iteration, vLLM V1 on CUDA:

* ``iteration_fixed_us = 430`` (measured, lower bound): vLLM PR #42131 "Decode fast path for
  scheduler and model runner" (github.com/vllm-project/vllm/pull/42131, 2026-05-09, B200) times
  the general per-step path it bypasses: ``Scheduler.schedule`` 0.2 ms, the model runner's
  ``_update_states`` ~0.18 ms, ``_prepare_inputs`` ~0.05 ms saved ("~0.4 ms per step", ~30% of
  TPOT for ISL 34K / OSL 32). 0.20 + 0.18 + 0.05 ms = 430 us. The PR is open: released vLLM
  still runs this path on every step, prefill or decode.
* ``per_seq_us = 1.13`` (measured): vLLM PR #46112 "Reduce update_from_output CPU overhead for
  decode batches" (github.com/vllm-project/vllm/pull/46112, 2026-06-18, benchmark
  ``benchmarks/overheads/benchmark_scheduler_update_from_output.py``): the baseline per-step
  ``Scheduler.update_from_output`` takes 0.142 ms at batch 128 and 0.287 ms at batch 256, a slope
  of (0.287 - 0.142) ms / 128 = 1.13 us per sequence (intercept ~0). Only this loop's slope is
  measured; the other per-request loops are inside the fixed part at PR #42131's batch.
* For scale, the V0 engine was ~10x slower: vLLM's v0.6.0 blog (blog.vllm.ai/2024/09/05/
  perf-update.html; vllm-project/vllm-project.github.io ``_posts/2024-09-05-perf-update.md``
  @4577c6a) profiles Llama 3 8B on one H100: API server 33%, scheduling + input preparation 29%,
  GPU execution 38% of the time; the V1 blog (``_posts/2025-01-27-v1-alpha-release.md`` @8f9835f)
  puts that model's GPU step at ~5 ms, i.e. ~3.8 ms of scheduling per step; the multi-step RFC
  (github.com/vllm-project/vllm/issues/6854) shows "about 4 ms of GPU bubble" per decode step
  (5-13 ms in general). V0 numbers are not used as defaults.
* The V1 scheduler has no prefill/decode distinction ("treating user-given prompt tokens and
  model-generated output tokens uniformly", V1 blog above), so the host formula is the same for
  every phase; the phase decides overlap and CUDA graphs.

Overlap of host time with GPU work (framework defaults):

* ``overlap_decode = True``: SGLang v0.4's zero-overhead batch scheduler "runs one batch ahead
  and prepares all the metadata required for the next batch", on by default (lmsys.org/blog/
  2024-12-04-sglang-v0-4; lm-sys/lm-sys.github.io ``blog/2024-12-04-sglang-v0-4.md`` @44576d5;
  Nsight shows no GPU idle time between 5 decode batches). vLLM's async scheduling (PR #19970,
  "making the scheduler operate one step ahead") is on by default since PR #27614 (tracking issue
  #27679; vllm-project/vllm-gaudi PR #768 adapts to "use_async_scheduling default usage in
  #27614"); TensorRT-LLM's overlap scheduler is on by default (its docs
  ``docs/source/features/overlap-scheduler.md``).
* ``overlap_prefill = False``: "The current async scheduling implementation only optimizes the
  decode stage and has no effect on the prefill stage" (vLLM PR #27914, 2025-11-14 comment).
  SGLang also overlaps prefill batches; set ``overlap_prefill: true`` to model it.

Kernel launches and CUDA graphs:

* ``eager_launch_us = 5.0`` (measured range, low end): "Usually, the launch time on the CPU side
  is between 5-20 microseconds" (Meta's Holistic Trace Analysis docs, facebookresearch/
  HolisticTraceAnalysis ``docs/source/features/cuda_kernel_launch_stats.rst``); the floor for a
  null kernel is ~3 us with recent hardware and software (forums.developer.nvidia.com/t/
  too-much-time-for-kernel-launch-latency/233645/3). 5 us is also moesim's datasheet
  ``launch_overhead_us``, the CPU launch the datasheet roofline prices every kernel with;
  :func:`host_spec_for` takes the device's value there, so eager steps add nothing to a datasheet's.
* ``graph_launch_us = 8.0`` and ``graph_node_us = 0.875`` (measured, CUDA.jl docs,
  cuda.juliagpu.org/dev/usage/graphs/): a small MLP "takes about 50 us per evaluation when
  executed normally, but only 16 us when it is launched as a graph, with the CPU being busy for
  just 8 us"; "10 steps with RK4 (80 broadcast kernels) goes from 260 us to 70 us, with only
  3.5 us of CPU time". 8 us is the larger CPU launch; 70 us / 80 kernels = 0.875 us per node, an
  upper bound on the gap between two graph kernels (it includes the tiny kernels' own run time),
  against 260 / 80 = 3.25 us eager. moesim adds it per node on top of each kernel's priced GPU time,
  and the same gap between eager kernels (they are no closer than a graph's).
* What a graph does not remove: a shipped profile's ``launch_overhead_us`` (H100 1.67 us, A100
  2.04 us) is the intercept of kernel durations that Vidur measured with Kineto (GPU time: its H100
  SwiGLU, RoPE and residual-add kernels take 1-3 us at 1-56 tokens, ``shared/measurements``), so it
  stays in a graphed kernel's price (``CostModel.kernel_floor_s``); the datasheet's 5 us is the CPU
  launch, which a graph replaces by its node cost. Until 2026-12-01 a graph also removed a
  profile's floor, pricing a small kernel at ~0.9 us where Vidur measures 1-3 us plus the gap:
  batch-1 to batch-4 decode read 8-36 % fast (INF-24..26, INF-37).
  NVIDIA's CUDA 12.6 "constant time launch for straight-line graphs" (developer.nvidia.com/blog/
  constant-time-launch-for-straight-line-graphs-and-other-performance-enhancements/) makes the
  CPU launch independent of the node count.
* ``graph_max_batch = 512`` (framework default): vLLM's ``max_cudagraph_capture_size`` is
  ``min(max_num_seqs * 2, 512)``, capture sizes ``[1, 2, 4] + range(8, 256, 8) +
  range(256, max + 1, 16)`` (vllm-project/vllm ``vllm/config/compilation.py`` @002284d). vLLM pads
  a batch up to the next captured size; moesim does not (a graphed batch runs at its own size). SGLang's
  ``cuda_graph_max_bs`` is 256 (TP < 4) or 512 (TP >= 4) on H100/H200-class memory, 32/160 on
  A100-40GB, 160 when the memory is unknown (sgl-project/sglang
  ``python/sglang/srt/server_args.py``). vLLM V1's default mode ``FULL_AND_PIECEWISE`` also
  replays piecewise graphs (attention eager between them) for mixed batches of up to the same
  size in tokens; that refinement is not modelled here (mixed batches count as eager).
* Measured effect: full CUDA graphs over piecewise ones cut median TPOT by ~7% for small models
  (Qwen2.5-1.5B; Llama 8B 7.63 ms before, vLLM PR #16072).

Serving engines other than vLLM V1 (``workload.engine``, :func:`engine_host_spec`): the engine's host
numbers replace the host-time fields of whatever spec the device gives (launch costs stay the
device's). ``trtllm``: TensorRT-LLM's PyTorch backend (``PyExecutor``, one Python loop per rank):

* ``iteration_fixed_us ~ 2326`` and ``per_seq_us ~ 13.9`` (measured, a line through two points):
  TensorRT-LLM PR #10273 (github.com/NVIDIA/TensorRT-LLM/pull/10273, 2025-12-24; gpt-oss-120b on
  GB200, attention DP 2, ``max_batch_size`` 1536 with 3072 requests in flight: 1536 sequences per
  rank, 3072 in the group) logs an average ``host_step_time`` of 45.11 ms per iteration in a run it
  calls host-bound, so the loop period is the host's work; PR #14622 (2026-05-27; Llama-3.1-8B FP8 on
  B200, TP2, 1000/1000) reports 427 tokens/s/user at concurrency 1, a 2.34 ms step, an upper bound on
  the host's fixed part. (45.11 - 2.34) ms / 3071 = 13.9 us per sequence of the group, and 2.34 ms
  less one sequence's as the fixed part.
* ``per_seq_group = True``: under attention DP the per-sequence time counts the whole lock-step
  group's sequences (``decode_cost.group_time_s``). Why the group and not the rank: a step of B
  sequences takes at least B x per_seq_us, so a TP1 run making T output tokens/s bounds the slope at
  1/T whatever B is, and TensorRT-LLM's perf-overview runs gpt-oss-20b at 1024/1024 on one GPU at
  53,491 (B200) and 56,528 tokens/s (GB200, Grace), and its release/1.2 revision at 60,925 (B300) and
  53,604 (GB300): <= 16.4-18.7 us per sequence. Read per rank (1536), PR #10273's run gives 27.9 us,
  which those four runs rule out; read per group (3072), 13.9 us, which they allow. Which per-request
  work the loop does for the other ranks' sequences is not identified here. Checks, not fitted: the
  same PR's concurrency-64 step, 3.85 ms (the line: 3.2 ms of host, hidden), and issue #13957
  (2026-05-10; Llama-3.1-8B FP8, B200 TP1, concurrency 64), ~0.58 ms of host time exposed as GPU idle
  in a ~4.6 ms iteration. The host cost per sequence moved with the version (PRs #11704, #16047,
  #16313 trimmed it in 2026), the model and the CPU (Grace on GB200, x86 on B200): one line for every
  CPU. With it Qwen3-30B-A3B's large single-GPU batches read +23 to +60 % (INF-64/65, 74/75, 218):
  ~10 ms a step of GPU work at 1,800-2,600 sequences that moesim does not price, which the per-rank
  reading's steeper line had covered (docs/validation-misses.md).
* ``eager_launch_us ~ 11.67`` (measured): TensorRT-LLM's PyTorch modules reach their kernels through
  ``@torch.library.custom_op`` ops (``torch.ops.trtllm.*``), whose dispatch costs the CPU more than a
  plain launch: PR #13149 (github.com/NVIDIA/TensorRT-LLM/pull/13149, 2026-04-17; B200 host, PyTorch
  2.10) times one call of a minimal ``@custom_op`` (an ``x.clone()``) at 11.67 us, the same body as a
  plain Python function at 4.72 us. Check, not fitted: PR #18645 (2026-09-03, AMD EPYC 7313P) times the
  LLM path's tunable ops, still ``@custom_op`` then, at 9.32 us (1 argument), 10.79 (an FP8 GEMM),
  13.07 (all-reduce) and 27.94 us (``fused_moe``, 51 arguments). Eager (mixed) iterations pay it per kernel.
* ``overlap_decode = overlap_prefill = True`` (framework default): TensorRT-LLM's overlap scheduler
  is on by default and launches step n+1 before it processes step n on the host, for every
  iteration (``docs/source/features/overlap-scheduler.md``); the host work shows where it outlasts
  the GPU step.

The host CPU (``hardware.node.host_cpu``, :func:`host_cpu_spec`): a Grace host spends
``HOST_CPU_OP_FACTOR["grace"]`` ~ 2.75 times an x86 host's CPU time per PyTorch op (measured: TransformerEngine
issue #2053, 2025-08-11, times a ``torch.nn.Linear`` forward's CPU side at 37.1 us on a GB200 and 33.2 us
on a GH200 against 13.5 us on an H100 DGX's Xeon 8480C; check: PyTorch PR #178216 times a no-grad
``@custom_op`` call at 21.0 us on a GB200's Neoverse V2 where PyTorch issue #177109 reports 10.7 us), so
the CPU-side launch costs (eager kernels, a graph's launch) scale by it. The scheduler's line is one for
every CPU: its per-sequence slope was measured on a Grace host, its fixed part on an x86 one.

Apple MPS and CPU (PyTorch backends):

* MPS ``eager_launch_us = 10.0`` (assumed, between two measurements): on an M1 Pro an op
  implemented as a Metal shader dispatches in 1.2-1.4 us, one going through MPSGraph in
  19.2-20.7 us (pytorch/pytorch issue #148219). It applies to a calibrated MPS profile without
  a ``host`` section and no launch cost of its own; the Apple presets price llama.cpp's Metal graph
  instead (12.1 us per op-graph kernel, ``presets/apple_metal.py``). MPS has no graph capture
  (feature request pytorch/pytorch #180397): ``graph_max_batch = 0``.
* CPU ``eager_launch_us = 0.9`` (measured): the same issue times a 1-element op on the CPU at
  0.9 us. No graphs; host work shares the cores with the kernels: no overlap.
* MPS and CPU host time (assumed): the same scheduler code as on CUDA, so the CUDA host numbers;
  no overlap (no async scheduler measured there).

How the serving iteration uses it
---------------------------------
``IterationCost.host_s`` (``moesim/engine/serving/decode_cost.py``): a step adds
``launch_added_s(launch_terms(n_kernels, spec, cpu_priced_s), gpu_s, graphed)`` to its kernels'
priced time ``gpu_s`` (``n_kernels``: the op graph's compute ops; ``cpu_priced_s``: the CPU launch
already in each kernel's price, ``launch_s - kernel_floor_s``): a graph's launch and node gaps less
the CPU launches priced, or eagerly ``max(n * gap, n * eager_launch_us - gpu_s)``; then
``exposed_host_s(iteration_host_s(n_seqs, phase, spec) + cpu, gpu_s + launch, overlaps(phase, spec))``,
``cpu`` the CPU's own launches (``launch_cpu_s``) where the host overlaps (the thread that schedules
also launches, so the step lasts at least the two together), 0 where it runs serially.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

import numpy as np

from moesim.errors import InputError

from .train_host import TRAIN_MOE_LAYER_US, compiled_step

if TYPE_CHECKING:  # profile.py imports this module's constants
    from moesim.schemas import DeviceSpec

    from .profile import HostSpec, Profile

Phase = Literal["decode", "prefill", "mixed"]
PHASES: tuple[str, ...] = ("decode", "prefill", "mixed")
PLATFORMS: tuple[str, ...] = ("cuda", "mps", "cpu")

# ---------------------------------------------------------------- cited numbers (see the module docstring)
#: vLLM PR #42131: Scheduler.schedule 0.2 ms + _update_states 0.18 ms + _prepare_inputs 0.05 ms per step.
VLLM_STEP_PARTS_MS: tuple[float, float, float] = (0.20, 0.18, 0.05)
#: vLLM PR #46112: update_from_output at (batch, ms) before the PR.
VLLM_UPDATE_FROM_OUTPUT_MS: tuple[tuple[int, float], tuple[int, float]] = ((128, 0.142), (256, 0.287))
#: Meta HTA docs: CPU-side launch time "usually between 5-20 microseconds" (low end).
EAGER_LAUNCH_US = 5.0
#: CUDA.jl docs: MLP launched as a graph keeps the CPU busy 8 us; RK4 graph: 80 kernels in 70 us.
GRAPH_LAUNCH_US = 8.0
GRAPH_RK4_KERNELS, GRAPH_RK4_US, EAGER_RK4_US = 80, 70.0, 260.0
#: vLLM compilation.py: max_cudagraph_capture_size = min(2 * max_num_seqs, 512).
VLLM_GRAPH_MAX_BATCH = 512
#: SGLang server_args.py: cuda_graph_max_bs on H100/H200-class memory, by TP < 4 / TP >= 4.
SGLANG_GRAPH_MAX_BATCH = {"tp<4": 256, "tp>=4": 512}
#: pytorch/pytorch#148219 (M1 Pro): dispatch of a Metal-shader op / an MPSGraph op / a CPU op, us.
MPS_METAL_DISPATCH_US, MPS_GRAPH_DISPATCH_US, CPU_OP_US = 1.3, 20.7, 0.9
#: Assumed: PyTorch on MPS, between the two MPS dispatch costs.
MPS_EAGER_LAUNCH_US = 10.0

CUDA_ITERATION_FIXED_US = 1e3 * sum(VLLM_STEP_PARTS_MS)
CUDA_PER_SEQ_US = 1e3 * (VLLM_UPDATE_FROM_OUTPUT_MS[1][1] - VLLM_UPDATE_FROM_OUTPUT_MS[0][1]) / (
    VLLM_UPDATE_FROM_OUTPUT_MS[1][0] - VLLM_UPDATE_FROM_OUTPUT_MS[0][0])
GRAPH_NODE_US = GRAPH_RK4_US / GRAPH_RK4_KERNELS

#: The CUDA (vLLM V1-class engine) defaults, the ``HostSpec`` field defaults.
CUDA_HOST_DEFAULTS: dict[str, float | int | bool] = dict(
    iteration_fixed_us=CUDA_ITERATION_FIXED_US, per_seq_us=CUDA_PER_SEQ_US,
    eager_launch_us=EAGER_LAUNCH_US, graph_launch_us=GRAPH_LAUNCH_US, graph_node_us=GRAPH_NODE_US,
    graph_max_batch=VLLM_GRAPH_MAX_BATCH, overlap_decode=True, overlap_prefill=False,
    train_moe_layer_us=TRAIN_MOE_LAYER_US)
#: What differs from the CUDA defaults on the other device kinds.
PLATFORM_OVERRIDES: dict[str, dict[str, float | int | bool]] = {
    "cuda": {},
    "mps": dict(eager_launch_us=MPS_EAGER_LAUNCH_US, graph_max_batch=0, graph_node_us=0.0, overlap_decode=False,
                train_moe_layer_us=0.0),
    "cpu": dict(eager_launch_us=CPU_OP_US, graph_max_batch=0, graph_node_us=0.0, overlap_decode=False,
                train_moe_layer_us=0.0),
}

#: TensorRT-LLM PR #10273: host_step_time (ms) of a host-bound run (GB200, gpt-oss-120b, attention DP 2) with 3,072
#: sequences in flight over its two ranks (1,536 each): the slope counts the group's sequences (module docstring).
TRTLLM_HOST_STEP_MS: tuple[int, float] = (3072, 45.11)
#: TensorRT-LLM PR #14622: the PyTorch backend's step (ms) at concurrency 1 (Llama-3.1-8B FP8, B200 TP2).
TRTLLM_STEP_BATCH1_MS: tuple[int, float] = (1, 2.34)
TRTLLM_PER_SEQ_US = 1e3 * (TRTLLM_HOST_STEP_MS[1] - TRTLLM_STEP_BATCH1_MS[1]) / (
    TRTLLM_HOST_STEP_MS[0] - TRTLLM_STEP_BATCH1_MS[0])
TRTLLM_ITERATION_FIXED_US = 1e3 * TRTLLM_STEP_BATCH1_MS[1] - TRTLLM_PER_SEQ_US * TRTLLM_STEP_BATCH1_MS[0]

#: TensorRT-LLM PR #13149: one ``@torch.library.custom_op`` call of a minimal op on a B200's host, us.
TRTLLM_CUSTOM_OP_US = 11.67
#: TransformerEngine issue #2053: a torch.nn.Linear forward's CPU side, us, by host (GB200, GH200, DGX H100).
TE_LINEAR_CPU_US: dict[str, float] = {"gb200": 37.1, "gh200": 33.2, "dgx-h100-xeon-8480c": 13.5}
#: CPU time per PyTorch op on each ``hardware.node.host_cpu`` against an x86 host's.
HOST_CPU_OP_FACTOR: dict[str, float] = {"x86": 1.0, "grace": TE_LINEAR_CPU_US["gb200"] / TE_LINEAR_CPU_US["dgx-h100-xeon-8480c"]}

#: The host-time fields a serving engine sets (the rest of a spec is the device's).
ENGINE_FIELDS: tuple[str, ...] = ("iteration_fixed_us", "per_seq_us", "overlap_decode", "overlap_prefill")
#: Serving engines (``workload.engine``) and the host-time fields each sets; unset: the device's spec.
#: vLLM V1's are the CUDA defaults themselves.
ENGINE_HOST: dict[str, dict[str, float | bool]] = {
    "vllm": {k: CUDA_HOST_DEFAULTS[k] for k in ENGINE_FIELDS},
    "trtllm": dict(iteration_fixed_us=TRTLLM_ITERATION_FIXED_US, per_seq_us=TRTLLM_PER_SEQ_US, overlap_decode=True,
                   overlap_prefill=True, eager_launch_us=TRTLLM_CUSTOM_OP_US, per_seq_group=True),
}
ENGINES: tuple[str, ...] = tuple(ENGINE_HOST)


def _check_phase(phase: str) -> None:
    if phase not in PHASES:
        raise ValueError(f"phase {phase!r}: expected one of {', '.join(PHASES)}")


# ---------------------------------------------------------------- specs
def platform_of(device_name: str) -> str:
    """Device kind of a device name: 'mps' (Apple), 'cpu' (named CPUs), else 'cuda' (CUDA/HIP GPUs)."""
    name = device_name.lower()
    if "apple" in name:
        return "mps"
    if any(w in name.split() for w in ("cpu", "xeon", "epyc")):
        return "cpu"
    return "cuda"


def platform_text(device_name: str) -> str:
    """:func:`platform_of` ``device_name`` in words, saying that the name picked it (``moesim check``)."""
    kind = "TPU (a compiled step)" if compiled_step(device_name) else \
        {"mps": "Apple Metal", "cpu": "CPU"}.get(platform_of(device_name), "CUDA")
    return f"{kind} (from the device name {device_name!r})"


def default_host_spec(platform: str) -> HostSpec:
    """The cited defaults for a device kind: 'cuda', 'mps' or 'cpu'."""
    from .profile import HostSpec

    kind = platform.strip().lower()
    if kind not in PLATFORM_OVERRIDES:
        raise InputError(f"host spec: unknown platform {platform!r}; expected one of {', '.join(PLATFORMS)}")
    return HostSpec(**{**CUDA_HOST_DEFAULTS, **PLATFORM_OVERRIDES[kind]})


def engine_host_spec(spec: HostSpec, engine: str | None, device_name: str = "") -> HostSpec:
    """``spec`` with a serving engine's host time (``ENGINE_HOST``); ``engine`` None: ``spec`` itself.

    The scheduler's time and its overlap change, and TensorRT-LLM's eager launches (its custom ops'
    dispatch); graphs stay the device's. Both engines run on CUDA GPUs only, so a device of another
    kind is a one-line error.
    """
    if engine is None:
        return spec
    if engine not in ENGINE_HOST:
        raise InputError(f"workload.engine: unknown engine {engine!r}; allowed: {', '.join(ENGINES)}")
    if device_name and platform_of(device_name) != "cuda":
        raise InputError(f"workload.engine: {engine} runs on CUDA GPUs; {device_name} is not one (leave engine unset)")
    return spec.model_copy(update=ENGINE_HOST[engine])


def host_spec_for(profile: Profile | None = None, device: DeviceSpec | None = None) -> HostSpec:
    """The host spec a cost model implies: the profile's ``host`` section when it has one, else the
    defaults of its platform (of the device's name without a profile, CUDA without either).

    Without a profile (the datasheet roofline) the eager launch cost is the device's
    ``launch_overhead_us``, the CPU launch its kernels are already priced with, so eager iterations
    add nothing (``launch_added_s``). A profile's fixed cost per kernel is GPU time instead
    (``kernel_floor_s``), and its eager launches keep the platform's CPU cost.
    """
    if profile is not None and profile.host is not None:
        return profile.host
    if profile is not None:
        platform = profile.platform
    else:
        platform = platform_of(device.name) if device is not None else "cuda"
    spec = default_host_spec(platform if platform.strip().lower() in PLATFORMS else "cuda")
    if profile is None and device is not None:
        return spec.model_copy(update={"eager_launch_us": float(device.launch_overhead_us)})
    return spec


def host_cpu_spec(spec: HostSpec, host_cpu: str) -> HostSpec:
    """``spec`` on a node whose host CPU is ``host_cpu`` ('x86' or 'grace'): its CPU-side launch costs
    (``eager_launch_us``, ``graph_launch_us``) times :data:`HOST_CPU_OP_FACTOR`; x86 is the reference."""
    if host_cpu not in HOST_CPU_OP_FACTOR:
        raise InputError(f"hardware.node.host_cpu: unknown host {host_cpu!r}; allowed: {', '.join(HOST_CPU_OP_FACTOR)}")
    f = HOST_CPU_OP_FACTOR[host_cpu]
    if f == 1.0:
        return spec
    return spec.model_copy(update={"eager_launch_us": spec.eager_launch_us * f, "graph_launch_us": spec.graph_launch_us * f})


# ---------------------------------------------------------------- the costs
def iteration_host_s(n_seqs, phase: str, spec: HostSpec):
    """Host seconds of one iteration over ``n_seqs`` scheduled sequences (scalar or array).

    ``iteration_fixed_us + per_seq_us * n_seqs``; 0 for an empty batch (no iteration runs). The
    same for every ``phase`` ('decode', 'prefill', 'mixed'): vLLM V1 schedules both uniformly.
    """
    _check_phase(phase)
    n = np.asarray(n_seqs, dtype=float)
    if np.any(n < 0):
        raise ValueError("n_seqs must be >= 0")
    t = np.where(n > 0, (spec.iteration_fixed_us + spec.per_seq_us * n) * 1e-6, 0.0)
    return float(t) if t.ndim == 0 else t


def kernel_launch_s(n_kernels, cuda_graph: bool, spec: HostSpec):
    """Launch overhead of ``n_kernels`` kernels of one forward pass, seconds (scalar or array).

    Eager: ``n_kernels * eager_launch_us``. Graph replay: one ``graph_launch_us`` plus
    ``graph_node_us`` per node. No kernels, no launch.
    """
    n = np.asarray(n_kernels, dtype=float)
    if np.any(n < 0):
        raise ValueError("n_kernels must be >= 0")
    per_iter = spec.graph_launch_us + spec.graph_node_us * n if cuda_graph else spec.eager_launch_us * n
    t = np.where(n > 0, per_iter * 1e-6, 0.0)
    return float(t) if t.ndim == 0 else t


def launch_terms(n_kernels: int, spec: HostSpec, cpu_priced_s: float) -> tuple[float, float, float]:
    """(graph, eager gap, eager CPU) seconds of launching ``n_kernels`` kernels, for :func:`launch_added_s`.

    ``cpu_priced_s``: the CPU launch each kernel's price already holds (``launch_s - kernel_floor_s``
    of the cost model: the datasheet's whole fixed cost, none of a profile's). Graph replay: one
    ``graph_launch_us`` and ``graph_node_us`` per node between kernels, less the CPU launches priced
    (negative where a graph saves more than it costs). Eager: the same gap between kernels beyond what
    is priced, and the CPU's ``eager_launch_us`` per kernel, which shows where the GPU work is shorter.
    """
    n = float(n_kernels)
    graph = float(kernel_launch_s(n, True, spec)) - n * cpu_priced_s
    gap = max(0.0, n * (spec.graph_node_us * 1e-6 - cpu_priced_s))
    return graph, gap, float(kernel_launch_s(n, False, spec))


def launch_added_s(terms: tuple[float, float, float], gpu_s, cuda_graph: bool):
    """Seconds the launches of one forward pass add to its kernels' priced time ``gpu_s`` (float or array),
    from its :func:`launch_terms`: the graph's, or eager ``max(gap, cpu - gpu)`` (the kernels run back
    to back unless the CPU, issuing them one by one, falls behind)."""
    graph, gap, cpu = terms
    if cuda_graph:
        return graph
    if isinstance(gpu_s, float):
        return max(gap, cpu - gpu_s)
    return np.maximum(gap, cpu - np.asarray(gpu_s, dtype=float))


def launch_cpu_s(terms: tuple[float, float, float], cuda_graph: bool, spec: HostSpec) -> float:
    """CPU seconds launching one forward pass takes (from its :func:`launch_terms`): a graph's one
    ``graph_launch_us``, or every kernel's ``eager_launch_us``. The engine's Python thread that
    schedules also launches, so where the host work overlaps the GPU it hides only what is left of
    the step after these launches (:func:`exposed_host_s` of their sum)."""
    return spec.graph_launch_us * 1e-6 if cuda_graph else terms[2]


def uses_cuda_graph(batch_seqs, decode_only: bool, spec: HostSpec):
    """Whether an iteration replays a CUDA graph: decode-only batches of 1..``graph_max_batch``
    sequences (``graph_max_batch`` 0: never). Prefill and mixed batches run eagerly."""
    b = np.asarray(batch_seqs)
    ok = np.logical_and(b >= 1, b <= spec.graph_max_batch) & bool(decode_only)
    return bool(ok) if ok.ndim == 0 else ok


def graph_rows(batch_seqs, spec: HostSpec, captured: list[int] | None = None, padding: bool = True):
    """Rows the CUDA graph of a decode-only batch of ``batch_seqs`` sequences replays (int array; 0: eager).

    ``captured``: the batch sizes captured (sorted). With ``padding``, the smallest at or above the
    batch, its extra rows dummy requests (TensorRT-LLM ``cuda_graph_config.batch_sizes`` +
    ``enable_padding``, ``cuda_graph_runner._round_up_batch_size``; its tech blog 20 measures up to
    50 % of a doubling list's rows wasted this way), none: eager; without, only a batch of a captured
    size replays its graph (TensorRT-LLM's default, ``enable_padding: false``). None: every batch up
    to ``graph_max_batch`` replays a graph of its own size (:func:`uses_cuda_graph`).
    """
    b = np.asarray(batch_seqs, dtype=np.int64)
    if captured is None:
        return np.where(uses_cuda_graph(b, True, spec), b, 0)
    sizes = np.asarray(captured, dtype=np.int64)
    if sizes.size == 0:
        return np.zeros_like(b)
    i = np.searchsorted(sizes, b, side="left")
    up = np.where((b >= 1) & (i < sizes.size), sizes[np.minimum(i, sizes.size - 1)], 0)
    return up if padding else np.where(up == b, b, 0)


def overlaps(phase: str, spec: HostSpec) -> bool:
    """Whether the host work of an iteration of this phase overlaps the previous step's GPU work."""
    _check_phase(phase)
    return spec.overlap_decode if phase == "decode" else spec.overlap_prefill


def exposed_host_s(host_s, gpu_s, overlap: bool):
    """Host seconds an iteration adds to its GPU time: all of it when serial, ``max(0, host - gpu)``
    when the scheduler runs one step ahead (the host work hides behind the GPU work). Plain floats
    take a scalar path (the serving engine calls this once per iteration)."""
    if isinstance(host_s, float) and isinstance(gpu_s, float):
        return max(0.0, host_s - gpu_s) if overlap else host_s
    if isinstance(host_s, float) and isinstance(gpu_s, np.ndarray) and gpu_s.dtype == float:  # a decode window
        return np.maximum(0.0, host_s - gpu_s) if overlap else host_s
    h = np.asarray(host_s, dtype=float)
    t = np.maximum(0.0, h - np.asarray(gpu_s, dtype=float)) if overlap else h
    return float(t) if np.ndim(t) == 0 else t
