"""Why a scenario does not fit in device memory, and what would make it fit. Pure functions.

``fit_explanation`` returns two one-line strings for the summaries of ``check`` and ``simulate``:

* ``fits_reason``: the memory terms that add up past the capacity, e.g. ``weights 87.2 GiB +
  KV for the longest request 0.5 GiB + activations 0.3 GiB = 88.0 GiB > capacity 80.0 GiB per device``;
* ``fits_advice``: the smallest changes that fit, each tried by re-running the same memory
  accounting on a modified copy of the scenario (more TP or PP, a higher ZeRO stage, FP8 training's cached
  weight casts dropped (``plan.fp8_weight_cache``), Adam's moments in BF16 (``plan.moments_dtype``), recompute of
  the MoE blocks or full recompute, a fine-tune's 4-bit base weights or fewer trained blocks, a serving engine's
  memory share raised to 0.95 (``workload.memory_utilization``), a smaller dtype, a bigger device preset). Changes that alter the device count say so.

Both are empty strings when the scenario fits, but for a training run whose live tensors fit while
PyTorch's caching allocator would reserve more than the device holds (``moesim.allocator``): its
advice then says how to keep the allocator from stranding memory.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from pydantic import ValidationError

from moesim.accounting import GIB
from moesim.allocator import reserved_gib
from moesim.costmodel.host import platform_of
from moesim.engine.training.recompute import MOE_RECOMPUTE_MODULES, moe_recompute_applies
from moesim.memory import (
    MemoryReport,
    kv_bytes_per_token_per_device,
    kv_cache_capacity_tokens,
    memory_report,
    stranded_fraction,
    weight_params_per_device,
)
from moesim.schemas import Scenario, TrainingWorkload
from moesim.schemas.plan import LAYER_SPLIT_FIELDS
from moesim.serving_reserve import budget_words
from moesim.train_bytes import fp8_weight_cache_bytes
from moesim.train_reserve import capacity_words

#: Largest multiple of tp or pp (and most doublings) the advice tries.
_MAX_FACTOR = 64

#: Intra-node bandwidth per direction (GB/s) at and above which a node counts as NVLink-connected: the
#: slowest NVLink preset (A100, 300 GB/s) is far above PCIe 5.0 x16 (63 GB/s).
NVLINK_MIN_GBPS = 100.0


def fit_explanation(s: Scenario, mem: MemoryReport | None = None) -> tuple[str, str]:
    """``(fits_reason, fits_advice)`` for ``s`` (both "" when it fits, but for the advice when only the
    allocator's reserve would overflow). ``mem``: its memory report."""
    mem = mem or memory_report(s)
    if mem.fits:
        return "", _reserve_advice(s, mem)
    return _reason(s, mem), _advice(s)


def _reserve_advice(s: Scenario, mem: MemoryReport) -> str:
    """When the live tensors fit but PyTorch's caching allocator would strand more around them than
    the device has left (``moesim.allocator``): how to keep it from doing so. "" otherwise."""
    wanted = reserved_gib(mem.total_gib, stranded_fraction(s))
    if wanted <= mem.capacity_gib:
        return ""
    advice = (f"the live tensors ({_gib(mem.total_gib)}) fit, but PyTorch's caching allocator would reserve about "
              f"{_gib(wanted)} > capacity {_gib(mem.capacity_gib)} (peak_reserved_gib stops at the capacity: short of "
              "memory it frees its cache and retries) and may fail on a fragmented pool: run with "
              "PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True (plan.allocator: expandable_segments)")
    uncached = _without_fp8_cache(s)
    if uncached is not None:
        lean = memory_report(uncached)
        if reserved_gib(lean.total_gib, stranded_fraction(uncached)) <= mem.capacity_gib:
            advice += (f", or {_FP8_CACHE_OFF}, which frees {_gib(mem.total_gib - lean.total_gib)} (every microbatch "
                       "then casts its weights again)")
    return advice


#: The advice that drops the FP8 weight casts Transformer Engine keeps through a step.
_FP8_CACHE_OFF = "plan.fp8_weight_cache: false"


def _without_fp8_cache(s: Scenario) -> Scenario | None:
    """``s`` with ``plan.fp8_weight_cache`` off when that frees memory (FP8 training keeping the casts), else None."""
    if not isinstance(s.workload, TrainingWorkload) or not s.plan.fp8_weight_cache:
        return None
    if fp8_weight_cache_bytes(s, *weight_params_per_device(s.model, s.plan)) <= 0:
        return None
    return _with_plan(s, fp8_weight_cache=False)


#: Memory switches the advice tries, each alone, with what each does: FP8 training's stores (a switch that changes
#: nothing, its GEMMs not FP8, leaves the plan as short of memory as it was) and torchtune's single-device ways
#: (``_with_plan`` gives None where the plan cannot take one: several micro-batches, a pipeline, ZeRO, no full
#: recompute).
_SWITCHES = (("fp8_act_input", "SwiGLU inputs kept in FP8, Megatron-core's activation_func_fp8_input_store"),
             ("fp8_param_gather", "FP8 primary weights, Transformer Engine's fp8_model_init"),
             ("optimizer_in_backward", "each gradient freed once its Adam step ran, torchtune's optimizer_in_bwd"),
             ("activation_offload", "layer inputs in host memory, torchtune's enable_activation_offloading"))


def _switch_advice(s: Scenario) -> list[str]:
    """The :data:`_SWITCHES` that are off and make the plan fit alone."""
    return [f"plan.{field}: true ({what})" for field, what in _SWITCHES
            if not getattr(s.plan, field) and _fits(_with_plan(s, **{field: True}))]


def _reason(s: Scenario, mem: MemoryReport) -> str:
    if not isinstance(s.workload, TrainingWorkload):
        return _serving_reason(s, mem)
    terms = [("weights", mem.weights_gib), ("gradients", mem.gradients_gib),
             ("optimizer", mem.optimizer_gib), ("activations", mem.activations_gib)]
    parts = " + ".join(f"{name} {_gib(gib)}" for name, gib in terms if gib > 0)
    return f"{parts} = {_gib(mem.total_gib)} > capacity {_gib(mem.capacity_gib)}{capacity_words(s)} per device"


def _serving_reason(s: Scenario, mem: MemoryReport) -> str:
    """Why a serving plan does not fit, against the KV pool the engine gets (what ``kv_cache_capacity_tokens``
    counts), not the whole budget: the engine rejects a request longer than its pool, so the shortfall is the pool's."""
    fixed = mem.weights_gib + mem.activations_gib
    held = f"weights {_gib(mem.weights_gib)} + activations {_gib(mem.activations_gib)}"
    need = mem.longest_request_kv_gib
    if fixed > mem.capacity_gib:  # nothing left for a pool
        return (f"{held} = {_gib(fixed)} > capacity {_gib(mem.capacity_gib)}{budget_words(s)} per device, leaving "
                f"no KV pool for the longest request's {_gib(need)} of KV")
    per_token = kv_bytes_per_token_per_device(s) / GIB
    share = ("all of" if getattr(s.workload, "memory_utilization", None) is not None
             else f"workload.kv_cache_fraction {s.workload.kv_cache_fraction:g} of")
    pp = s.plan.pp  # the engine splits the pool over its pipeline's micro-batch slots (replica_kv_tokens)
    pool = (f"KV pool {_gib(mem.kv_cache_gib)} ({int(kv_cache_capacity_tokens(s)):,} tokens)" if pp == 1 else
            f"a pipeline slot's 1/{pp} of the KV pool {_gib(mem.kv_cache_gib)} "
            f"({int(kv_cache_capacity_tokens(s) // pp):,} tokens)")
    return (f"KV for the longest request {_gib(need)} ({need / per_token:,.0f} tokens) > {pool}, "
            f"{_gib(need * pp - mem.kv_cache_gib)} short per device: the pool is {share} the "
            f"{_gib(mem.capacity_gib - fixed)} that {held} leave of capacity {_gib(mem.capacity_gib)}{budget_words(s)}")


def _gib(x: float) -> str:
    return f"{x:.1f} GiB" if x >= 1 else f"{x:.2g} GiB"


def _fits(s: Scenario | None) -> bool:
    """Whether a candidate fits; None (a change the plan's own rules reject) never does."""
    return s is not None and memory_report(s).fits


def _with_plan(s: Scenario, **changes) -> Scenario | None:
    """``s`` with the plan fields changed, or None when the new plan breaks the plan's own rules (e.g. an
    interleaved schedule's micro-batches no longer a multiple of a doubled plan.pp). Only the plan is
    validated: the copy feeds the memory accounting alone, and a change of the device count is the advice."""
    try:
        plan = s.plan.validated_copy(**changes)
    except ValidationError:
        return None
    return s.model_copy(update={"plan": plan})


def _too_many_stages(s: Scenario, field: str, value: int) -> bool:
    """Whether ``plan.<field> = value`` asks for more pipeline chunks than the model has layers (a rule of the
    scenario, not of the plan alone, so ``_with_plan`` does not catch it)."""
    return field == "pp" and value * s.plan.virtual_stages > s.model.n_layers


def _smallest_factor(s: Scenario, make: Callable[[int], Scenario]) -> int | None:
    """Smallest power of two f (2.._MAX_FACTOR) for which ``make(f)`` fits, or None."""
    f = 2
    while f <= _MAX_FACTOR:
        if _fits(make(f)):
            return f
        f *= 2
    return None


def _advice(s: Scenario) -> str:
    """What would make ``s`` fit: a list of alternatives joined by '; ', or why nothing simple does."""
    p, options = s.plan, []
    # more stages re-split the layers: a given split (first/last stage, per-chunk layout) is for the old count
    resplit = dict.fromkeys(LAYER_SPLIT_FIELDS)
    apple = platform_of(s.hardware.device.name) == "mps"
    widest_tp = _widest_node(s)
    for field in ("tp", "pp"):
        if field == "tp" and apple:  # one GPU a Mac: tensor parallelism has no second GPU in the node to split over
            continue
        value = getattr(p, field)
        extra = resplit if field == "pp" else {}
        # a TP group all-reduces every layer over NVLink: no wider than a node of this device can be
        f = _smallest_factor(s, lambda k, field=field, value=value, extra=extra: None if _too_many_stages(
            s, field, value * k) or (field == "tp" and value * k > widest_tp)
            else _with_plan(s, **{field: value * k}, **extra))
        if f is not None:
            # the same devices: dp / f, and f x the micro-batches to keep each one's size (and the global batch)
            same = None if p.dp % f else _with_plan(s, **{field: value * f}, dp=p.dp // f,
                                                     microbatches=p.microbatches * f, **extra)
            fewer_dp = f", or plan.dp / {f} with plan.microbatches x {f} on these devices" if _fits(same) else ""
            even = ", the layers split evenly" if field == "pp" and p.splits_layers else ""
            per_node = s.hardware.node.devices_per_node
            # a TP group wider than this node would all-reduce over the network: say what keeps it in one (a node
            # of this device that size exists: _widest_node)
            node = (f", within a node of hardware.node.devices_per_node >= {value * f}"
                    if field == "tp" and value * f > per_node else "")
            options.append(f"plan.{field} {value} -> {value * f} ({f}x the devices{fewer_dp}{even}{node})")
    options += _expert_parallel_advice(s)
    if isinstance(s.workload, TrainingWorkload):
        if p.zero_stage < 3 and _fits(_with_plan(s, zero_stage=3)):
            options.append("plan.zero_stage: 3")
        if _fits(_without_fp8_cache(s)):
            options.append(f"{_FP8_CACHE_OFF} (every microbatch casts its weights again)")
        if p.moments_dtype == "fp32" and _fits(_with_plan(s, moments_dtype="bf16")):
            options.append("plan.moments_dtype: bf16 (Adam's moments in BF16, as DeepSeek-V3 trained)")
        elif p.moments_dtype != "int8" and _fits(_with_plan(s, moments_dtype="int8")):
            options.append("plan.moments_dtype: int8 (bitsandbytes' 8-bit Adam)")
        options += _switch_advice(s)
        options += _accumulation_advice(s)
        moe_rc = dict(recompute="selective", recompute_modules=list(MOE_RECOMPUTE_MODULES))
        if p.recompute != "full" and moe_recompute_applies(s) and _fits(_with_plan(s, **moe_rc)):
            options.append(f"plan.recompute_modules: [{', '.join(MOE_RECOMPUTE_MODULES)}] (recompute: selective)")
        if p.recompute != "full" and _fits(_with_plan(s, recompute="full")):
            options.append("plan.recompute: full")
        options += _fine_tune_advice(s)
    share = getattr(s.workload, "memory_utilization", None)
    if share is not None and share < _MAX_UTILIZATION and _fits(_with_workload(s, memory_utilization=_MAX_UTILIZATION)):
        options.append(f"workload.memory_utilization {share:g} -> {_MAX_UTILIZATION:g} (vLLM --gpu-memory-utilization)")
    smaller = _smaller_dtypes(s)
    for dtype in smaller:
        if _fits(s.model_copy(update={"model": s.model.model_copy(update={"dtype": dtype})})):
            options.append(f"model.dtype: {dtype}")
            break
    if apple and (wired := _wired_limit_advice(s)):
        options.append(wired)
    bigger = _bigger_device(s)
    if bigger:
        options.append(bigger)
    if not options:
        return (f"no single change tried fits (more tp within a node of {widest_tp}, more pp or ep up to 64x, ZeRO-3, "
                "recompute of the MoE blocks or full recompute, a smaller dtype, a bigger device)")
    return "; ".join(options)


def _widest_node(s: Scenario) -> int:
    """The most devices a node of this scenario's device holds where a board fixes it: an NVLink domain (HGX H100:
    8; GB200 NVL72: 72), this scenario's node or a hardware preset's with the same device, whichever is more. A
    TP group all-reduces every layer, so advice widens it no further. PCIe cards (a server takes what its slots
    hold), desktop chips, TPUs (their interconnect spans the slice) and devices no preset has (the user's to
    describe) have no known limit."""
    from moesim.presets import HARDWARE
    from moesim.presets.hardware import is_desktop_device

    here, name = s.hardware.node.devices_per_node, s.hardware.device.name
    boards = [data["node"]["devices_per_node"] for data in HARDWARE.values() if data["device"]["name"] == name
              and data["node"]["intra_bw_gbps"] >= NVLINK_MIN_GBPS]
    if not boards or is_desktop_device(name) or "TPU" in name:
        return _MAX_FACTOR * s.plan.tp
    return max(here, *boards)


def _expert_parallel_advice(s: Scenario) -> list[str]:
    """The routed experts spread over more ranks (EP), the fewest that fit: on these devices where ``plan.ep`` x k still
    divides the data-parallel ranks, else with ``plan.dp`` x k too (k x the devices, each replica's attention its own:
    wide EP across nodes, as DeepSeek serves), never a wider TP group than a node holds."""
    m, p = s.model, s.plan
    experts = m.n_experts + s.placement.redundant_experts
    if m.n_experts <= 1:
        return []

    def wider(k: int, dp_factor: int) -> Scenario | None:
        if experts % (p.ep * k):  # each EP rank holds whole experts
            return None
        w = s.workload
        if isinstance(w, TrainingWorkload) and w.global_batch_seqs % (p.dp * dp_factor * p.microbatches):
            return None  # the global batch no longer splits into whole micro-batches
        return _with_plan(s, ep=p.ep * k, dp=p.dp * dp_factor)

    same = _smallest_factor(s, lambda k: wider(k, 1))
    if same is not None:
        return [f"plan.ep {p.ep} -> {p.ep * same} (the same devices)"]
    more = _smallest_factor(s, lambda k: wider(k, k))
    if more is None:
        return []
    return [f"plan.dp {p.dp} -> {p.dp * more} with plan.ep {p.ep} -> {p.ep * more} ({more}x the devices, the experts "
            "spread over them)"]


def _accumulation_advice(s: Scenario) -> list[str]:
    """More micro-batches of the same global batch (gradient accumulation): smaller micro-batches keep
    fewer activations; the fewest (a power-of-two factor) that fit, where the batch still divides."""
    p, seqs = s.plan, s.workload.global_batch_seqs

    def more(k: int) -> Scenario | None:
        if seqs % (p.dp * p.microbatches * k):  # each micro-batch keeps whole sequences
            return None
        return _with_plan(s, microbatches=p.microbatches * k)

    f = _smallest_factor(s, more)
    if f is None:
        return []
    n = seqs // (p.dp * p.microbatches * f)
    return [f"plan.microbatches {p.microbatches} -> {p.microbatches * f} (gradient accumulation: micro-batches of "
            f"{n} sequence{'' if n == 1 else 's'}, the same global batch)"]


#: The largest engine share of device memory the advice suggests (assumed: it leaves 4 GiB of an 80 GiB GPU to
#: the CUDA context, NCCL's buffers and CUDA graphs, which the pool's accounting does not hold).
_MAX_UTILIZATION = 0.95


def _with_workload(s: Scenario, **changes) -> Scenario:
    return s.model_copy(update={"workload": s.workload.model_copy(update=changes)})


def _with_trainable(s: Scenario, **changes) -> Scenario:
    w = s.workload
    return s.model_copy(update={"workload": w.model_copy(update={"trainable": w.trainable.model_copy(update=changes)})})


def _fine_tune_advice(s: Scenario) -> list[str]:
    """A fine-tune's own ways to fit (MLX's LoRA guide lists both): QLoRA's 4-bit base weights, and
    training fewer of the last blocks (the most that fit: memory grows with them, so a bisection)."""
    spec, n_layers = s.workload.trainable, s.model.n_layers
    if spec.mode == "all":  # pre-training or a full fine-tune: what trains is the job, not a plan
        return []
    out = []
    if spec.mode == "lora" and not spec.quantized and _fits(_with_trainable(s, base_dtype="nf4")):
        out.append("workload.trainable.base_dtype: nf4 (QLoRA)")
    if spec.mode == "lora" and spec.rank > 1:  # the adapters' gradients and Adam states grow with the rank
        ranks = [r for r in (2 ** k for k in range(spec.rank.bit_length(), -1, -1)) if r < spec.rank]
        rank = next((r for r in ranks if _fits(_with_trainable(s, rank=r))), None)
        if rank is not None:
            out.append(f"workload.trainable.rank: {rank} (the largest power of two below {spec.rank} that fits)")
    now = spec.layers or n_layers
    if now > 1 and _fits(_with_trainable(s, layers=1)):
        lo, hi = 1, now - 1  # the most blocks that fit lies in [lo, hi]
        while lo < hi:
            mid = (lo + hi + 1) // 2
            lo, hi = (mid, hi) if _fits(_with_trainable(s, layers=mid)) else (lo, mid - 1)
        out.append(f"workload.trainable.layers: {lo} (train only the last {lo} of {n_layers} blocks)")
    return out


def _smaller_dtypes(s: Scenario) -> list[str]:
    """Dtypes the schema allows with fewer bytes per weight than the model's, largest first."""
    from typing import get_args

    from moesim.schemas.model import DTYPE_BYTES, Dtype

    now = DTYPE_BYTES[s.model.dtype]
    allowed = [d for d in get_args(Dtype) if DTYPE_BYTES[d] < now]
    if isinstance(s.workload, TrainingWorkload):
        allowed = [d for d in allowed if DTYPE_BYTES[d] >= 2]  # training keeps 16-bit weights at least
    return sorted(allowed, key=lambda d: -DTYPE_BYTES[d])


#: GiB of unified memory the wired-limit advice leaves to macOS and the apps beside the model (an assumption:
#: users raising ``iogpu.wired_limit_mb`` commonly keep 4-8 GiB).
_MACOS_KEEPS_GIB = 4.0


def _wired_limit_advice(s: Scenario) -> str:
    """On Apple silicon: the smallest whole GiB of ``hardware.device.gpu_wired_limit_gib`` (macOS's ``sysctl
    iogpu.wired_limit_mb``) above today's that fits, leaving :data:`_MACOS_KEEPS_GIB` to the OS; "" when none does."""
    from moesim.presets.apple_metal import gpu_wired_limit_gib

    device = s.hardware.device
    now, most = gpu_wired_limit_gib(device), device.mem_gib - _MACOS_KEEPS_GIB
    limit = float(math.floor(now) + 1)
    while limit <= most:
        hw = s.hardware.model_copy(update={"device": device.model_copy(update={"gpu_wired_limit_gib": limit})})
        if _fits(s.model_copy(update={"hardware": hw})):
            return (f"hardware.device.gpu_wired_limit_gib {now:.1f} -> {limit:g} (sudo sysctl iogpu.wired_limit_mb="
                    f"{int(limit * 1024)}; macOS keeps the rest)")
        limit += 1.0
    return ""


def _bigger_device(s: Scenario) -> str:
    """The hardware preset with the least memory that fits the same plan, if any."""
    from moesim.presets import HARDWARE
    from moesim.presets.hardware import DESKTOP_PRESETS, is_desktop_device
    from moesim.schemas import DeviceSpec

    here, desktop = s.hardware.device.mem_gib, is_desktop_device(s.hardware.device.name)
    linked = s.hardware.node.intra_bw_gbps >= NVLINK_MIN_GBPS
    per_node = s.hardware.node.devices_per_node

    def same_family(name: str, data: dict) -> bool:
        # a datacenter plan is not advised onto a desktop machine, nor the reverse; nor an NVLink
        # plan onto a PCIe server (the RTX PRO 6000's 63 GB/s), whose collectives it never priced
        if (name in DESKTOP_PRESETS) != desktop:
            return False
        # nor onto a node with fewer devices than the plan puts in one (a GH200 superchip for an 8-GPU node)
        return desktop or ((data["node"]["intra_bw_gbps"] >= NVLINK_MIN_GBPS) == linked
                           and data["node"]["devices_per_node"] >= per_node)

    candidates = sorted(((data["device"]["mem_gib"], name, data) for name, data in HARDWARE.items()
                         if data["device"]["mem_gib"] > here and same_family(name, data)), key=lambda c: c[0])
    for gib, name, data in candidates:
        device = DeviceSpec(**data["device"])
        hw = s.hardware.model_copy(update={"device": device})
        if _fits(s.model_copy(update={"hardware": hw})):
            return f"hardware: {name} ({gib:.0f} GiB per device)"
    return ""
