"""Memory a serving engine keeps out of its KV pool beyond the weights and one iteration's activations. Pure functions.

**The engine's budget** (:func:`engine_budget_bytes`, CUDA devices). A process sees less than the device's capacity:
``cudaMemGetInfo`` reports 79.10-79.33 GiB on an 80 GB H100 (the example log in the FAQ of TensorRT-LLM's ``docs/source/reference/memory.md``;
vLLM PR #10511's and issue logs), 79.15 on an 80 GB A100, 39.39 on a 40 GB one, 44.31-44.39 on an L40S (45 here),
139.81 on an H200 (140 here): ~0.7 GiB short (:data:`CUDA_UNSEEN_GIB`), which both engines size from (vLLM's
``gpu_memory_utilization`` multiplies that total; TensorRT-LLM's ``free_gpu_memory_fraction`` takes a share of what is
free of it). What else an engine holds before its KV pool depends on how it reads its budget:

- TensorRT-LLM (``workload.kv_cache_fraction``) takes its share of the memory *free* once everything else is
  allocated, so the CUDA context and library handles (0.77 GiB: that H100 log, 79.10 - 70.48 GiB used
  less the 6,695 MiB engine, 1,134 MiB execution context, 43 MB runtime buffers and 180 MB decoder it lists:
  :data:`CUDA_CONTEXT_GIB`) and the communicators' buffers (:func:`comm_buffer_bytes`) are not in it.
- vLLM (``workload.memory_utilization``) multiplies the whole total and subtracts what grew since a snapshot that,
  since vLLM PR #25359 (2025-09, v0.11), is taken after NCCL's initialisation: neither the context nor NCCL's
  buffers come out of its budget (they sit in the share it leaves). SGLang's ``--mem-fraction-static`` reads free
  memory as TensorRT-LLM does; moesim prices it as vLLM's share (its buffers not held out, an optimistic pool).

NCCL's (and the custom all-reduce's) buffers grow with the GPUs a replica's collectives span: 1.79 GiB at TP2 on an
H100 (vLLM PR #10511's log, non-torch memory TP2 3.58 less TP1 1.79 GiB), "~4.5 GiB for tensor parallelism" on 80 GB
GPUs (PR #25359: 78.59 GiB free before NCCL's initialisation, 74.07 after) and 7.16 GiB of non-torch memory at TP8 on
an H200 (a DeepSeek-R1 vLLM v0.7 log); :data:`COMM_BUFFER_GIB_PER_DOUBLING` per doubling of the group (1.8, 3.6, 5.4
GiB at 2, 4, 8 GPUs) is within ~25 % of each. The group is ``max(tp, ep) x pp`` GPUs.

**vLLM's sampler warm-up.** vLLM sizes its KV pool from what a profile run leaves (``--gpu-memory-utilization`` of the device less the peak of a
dummy forward at ``max_num_batched_tokens`` and of a dummy sampler run), and that sampler run is large: vLLM V1's
``GPUModelRunner._dummy_sampler_run`` samples ``max_num_seqs`` dummy requests with temperature 0.5, top-p 0.9 and top-k
at the vocabulary less one ("CUDA out of memory occurred when warming up sampler with N dummy requests" is its error),
so the PyTorch-native top-k/top-p path, which vLLM takes unless ``VLLM_USE_FLASHINFER_SAMPLER`` is set, sorts every
row of the logits (``vllm/v1/sample/ops/topk_topp_sampler.py``, ``apply_top_k_top_p``). Bytes live at once per
vocabulary entry and request, counted from that code: the BF16 logits the model returned (2, still held by the caller),
their FP32 copy (4), the sorted values (4) and int64 indices (8), the top-k mask (1), the top-p softmax-cumsum (4) and
mask (1), and the scattered result (4, where the version scatters into a new tensor): **28 bytes**. The sort's own
scratch is left out (a lower bound). Logits are all-gathered on every TP rank in V1, so each rank pays it whatever the
TP degree.

Checked against two public startup logs whose reserve is the whole of what neither weights nor KV took (not fitted):
Qwen3-235B-A22B-FP8 at TP4 on H100, ~7.7 GiB (vllm-project/vllm issue #21348: "Available KV cache memory: 8.11 GiB"
of a 71.3 GiB budget with ~55.5 GiB of weights), where this term is 4.1 GiB; gpt-oss-120b on one H100, ~7.4 GiB (issue
#23278: 65.97 GiB of weights, "Available KV cache memory: -2.14 GiB"), where it is 5.4 GiB. The rest of #21348's, 3.6 GiB, is this
module's communicator term at TP4 (that vLLM, v0.9, predates PR #25359 and counted NCCL's buffers in its budget); the
rest of #23278's, ~2 GiB on one GPU (the forward's peak with the fused-MoE workspaces), is not priced here.
"""

from __future__ import annotations

import math
import re
from typing import NamedTuple

from moesim.accounting import GIB
from moesim.costmodel.host import platform_of
from moesim.costmodel.train_host import compiled_step
from moesim.presets.apple_metal import gpu_wired_limit_gib

#: GiB of a CUDA device's capacity that ``cudaMemGetInfo`` does not report as its total (see above).
CUDA_UNSEEN_GIB = 0.7
#: GiB a CUDA process holds for its context and library handles before its first tensor (TensorRT-LLM's log, above).
CUDA_CONTEXT_GIB = 0.77
#: GiB of NCCL and custom all-reduce buffers per doubling of the GPUs a replica's collectives span (see above).
COMM_BUFFER_GIB_PER_DOUBLING = 1.8
#: Bytes live per vocabulary entry and request while vLLM V1's sampler warm-up applies top-k and top-p (see above).
VLLM_SAMPLER_WARMUP_BYTES = 28.0


def runs_cuda(device_name: str) -> bool:
    """Whether a device runs CUDA (and NCCL): not Apple, a CPU or a TPU."""
    return platform_of(device_name) == "cuda" and not compiled_step(device_name)


def gpu_runtime(device_name: str) -> str:
    """The runtime a GPU's memory figures come from, for messages: 'ROCm' for an AMD GPU (named AMD, Instinct,
    Radeon or MI<digits>: HIP reports its memory as CUDA does), else 'CUDA'."""
    name = device_name.lower()
    amd = any(w in name for w in ("amd", "instinct", "radeon")) or re.search(r"\bmi\d{3}", name) is not None
    return "ROCm" if amd else "CUDA"


def cuda_reported_gib(mem_gib: float) -> float:
    """GiB ``cudaMemGetInfo`` reports as the total of a CUDA device of ``mem_gib``: less :data:`CUDA_UNSEEN_GIB`,
    never below 0."""
    return max(mem_gib - CUDA_UNSEEN_GIB, 0.0)


def visible_gib(device) -> float:
    """GiB a process sees of ``device`` (a ``DeviceSpec``) before it allocates anything: on CUDA what
    ``cudaMemGetInfo`` reports (:func:`cuda_reported_gib`), on Apple silicon what macOS lets the GPU wire
    (``presets.apple_metal.gpu_wired_limit_gib``), elsewhere (CPUs, TPUs) the capacity."""
    if platform_of(device.name) == "mps":
        return gpu_wired_limit_gib(device)
    return cuda_reported_gib(device.mem_gib) if runs_cuda(device.name) else device.mem_gib


def sampler_warmup_bytes(s) -> float:
    """Bytes per device vLLM's sampler warm-up holds at its peak: ``max_batch_seqs x vocab x 28`` under
    ``workload.engine: vllm``, else 0 (other engines' reserves are not priced)."""
    w = s.workload
    if getattr(w, "kind", None) != "serving" or getattr(w, "engine", None) != "vllm":
        return 0.0
    return float(w.max_batch_seqs) * s.model.vocab_size * VLLM_SAMPLER_WARMUP_BYTES


def comm_group_gpus(s) -> int:
    """GPUs one serving replica's collectives span: ``max(tp, ep) x pp`` (expert parallelism spans the attention
    data-parallel ranks when ``ep > tp``)."""
    p = s.plan
    return max(p.tp, p.ep) * p.pp


def comm_buffer_bytes(s) -> float:
    """Bytes per device of NCCL's and the custom all-reduce's buffers: :data:`COMM_BUFFER_GIB_PER_DOUBLING` per
    doubling of :func:`comm_group_gpus` (0 on one GPU or a non-CUDA device)."""
    if not runs_cuda(s.hardware.device.name):
        return 0.0
    return COMM_BUFFER_GIB_PER_DOUBLING * math.log2(comm_group_gpus(s)) * GIB


class _Budget(NamedTuple):
    """The parts of an engine's budget, GiB per device: ``seen`` (what the engine sizes from: the capacity, less
    :data:`CUDA_UNSEEN_GIB` on CUDA devices), ``share`` (``memory_utilization``, or None), ``held`` (taken out of
    ``seen`` first without a share: the CUDA context and communicator buffers), ``comm`` (the buffers' part of it)."""

    cuda: bool
    seen: float
    share: float | None
    held: float
    comm: float


def _budget(s) -> _Budget:
    share = getattr(s.workload, "memory_utilization", None)
    seen = visible_gib(s.hardware.device)  # a CUDA device smaller than the reserves has no budget
    if not runs_cuda(s.hardware.device.name):  # Apple, a CPU or a TPU: no CUDA context, no NCCL
        return _Budget(False, seen, share, 0.0, 0.0)
    comm = comm_buffer_bytes(s) / GIB
    return _Budget(True, seen, share, 0.0 if share is not None else CUDA_CONTEXT_GIB + comm, comm)


def engine_budget_bytes(s) -> float:
    """Bytes per device a serving engine may fill with weights, working activations and its KV pool.

    CUDA devices: ``cudaMemGetInfo``'s total (capacity less :data:`CUDA_UNSEEN_GIB`) times
    ``workload.memory_utilization`` (vLLM), or without it (TensorRT-LLM's share of free memory) that total less the
    CUDA context and the communicators' buffers the engine allocated first. Other devices: the capacity, times
    ``memory_utilization`` when set."""
    b = _budget(s)
    if b.share is not None:
        return b.share * b.seen * GIB
    return max(b.seen - b.held, 0.0) * GIB


def budget_words(s) -> str:
    """How :func:`engine_budget_bytes` came about, for a fits reason: e.g. ``(workload.memory_utilization 0.9 of
    the 79.3 GiB CUDA reports)``; empty where the budget is the device's capacity."""
    b = _budget(s)
    rt = gpu_runtime(s.hardware.device.name)
    of = f"the {b.seen:.1f} GiB {rt} reports" if b.cuda else f"{b.seen:.1f} GiB"
    if b.share is not None:
        return f" (workload.memory_utilization {b.share:g} of {of})"
    if platform_of(s.hardware.device.name) == "mps":  # the budget is macOS's wired limit, which a user may raise
        return f" (what macOS lets the GPU wire of {s.hardware.device.mem_gib:g} GiB: hardware.device.gpu_wired_limit_gib)"
    if not b.cuda:
        return ""
    what = f"the {rt} context and communication buffers" if b.comm else f"the {rt} context"
    return f" (of {of}, {b.held:.1f} GiB held by {what})"


def serving_fit(capacity_gib: float, fixed_gib: float, pool_gib: float, need_gib: float,
                slots: int = 1) -> tuple[bool, float]:
    """``(fits, headroom_gib)`` of a serving engine per device: ``fixed_gib`` (weights and working activations) within
    the budget ``capacity_gib``, and its KV pool ``pool_gib`` holding the longest request's KV ``need_gib``: the engine
    rejects a longer request however much of the budget sits outside the pool (``kv_cache_fraction`` < 1), so a
    budget that would hold weights + that KV is not enough. Fitting, the headroom is what the budget keeps beside
    weights, activations and the pool; short, it is minus what is missing: the KV the pool lacks, plus what weights
    and activations overflow the budget by (the pool is then empty). ``slots``: the engines sharing the pool, each
    with its part (a pipeline's ``pp`` micro-batch slots, as the serving engine splits it, ``replica_kv_tokens``): the
    request must fit one part, and what the pool lacks is counted for all of them."""
    total_gib = fixed_gib + pool_gib
    # a pool sized to fill the engine's share sums to it, up to rounding
    if pool_gib >= need_gib * slots and total_gib <= capacity_gib * (1 + 1e-12):
        return True, capacity_gib - total_gib
    return False, min(capacity_gib - fixed_gib, 0.0) + min(pool_gib - need_gib * slots, 0.0)
