"""Memory a CUDA training process holds outside PyTorch's caching allocator: the CUDA context and NCCL's
communicator buffers. Pure functions.

A training rank can give PyTorch less than its device's capacity. ``cudaMemGetInfo`` reports ~0.7 GiB less than
the card holds (``serving_reserve.CUDA_UNSEEN_GIB``), the CUDA context and library handles take ~0.77 GiB before
the first tensor (``serving_reserve.CUDA_CONTEXT_GIB``), and every NCCL communicator the rank runs a collective
on allocates its own per-channel buffers. ``nvidia-smi`` shows all of it as used; ``torch.cuda.
max_memory_reserved`` (what Megatron-LM and ms-swift log) shows none of it.

**One communicator's buffers** (:data:`COMMUNICATOR_GIB_PAIR`, :data:`COMMUNICATOR_GIB`): NVIDIA/nccl issue #964
(2023-08) timed it with PyTorch on four NVLink-connected A100s, one 4 MB all-reduce on every possible group: 544 MB
a rank for a group of two GPUs, 688 MB for three or four. They are per communicator, not per byte moved:
"more communicators = more memory used", linear in the channels, a ring keeping "only 2 connections regardless of
the scale" and no growth "beyond 2 nodes" (NCCL's maintainer, issue #864, quoted in #986). SGLang PR #35538 (2026-08)
measured the same order on an RTX 3060: 470 MiB for the world group, 388 MiB for each further one-rank group.

**An all-to-all's direct connections** (:data:`ALLTOALL_GIB_PER_PEER`): NVIDIA/nccl issue #1685 (2025-04), eight
H100s in one node: NCCL held 1.06 GB a rank before the first ``all_to_all_single`` and 4.34 GB after it, 32
channels opened to each of the seven peers (buffers of 10 and 2 MiB a channel): ~0.47 GB a peer. Only peers in the
rank's node are counted: across nodes NCCL opens two channels a network peer (``NCCL_NCHANNELS_PER_NET_PEER``),
megabytes each. DeepEP's dispatchers (``plan.alltoall: deepep_*``) bring their own NVSHMEM buffers instead; they are
not counted (a lower bound there).

**The communicators of a rank** (:func:`communicator_groups`), as Megatron-style training builds them and uses them
each step: the world group (its start-up barrier), tensor parallelism, context parallelism, data parallelism (the
gradient sync), pipeline parallelism (its sends and receives), the model-parallel group (TP x PP, the gradient norm),
expert parallelism and the experts' data-parallel group. A group of one GPU runs no collective and costs nothing.

Checked (not fitted) against FlagPerf's Megatron runs, whose memory column is ``nvidia-smi``'s (TRN-110..134): the
runs without TP agree within a few per cent once this is counted. Runs with TP hold more still; what is not located.
"""

from __future__ import annotations

from moesim.costmodel.host import platform_of
from moesim.engine.expert_tp import expert_dp_group
from moesim.serving_reserve import (
    CUDA_CONTEXT_GIB,
    cuda_reported_gib,
    gpu_runtime,
    runs_cuda,
    visible_gib,
)

_MB = 1e6 / 2**30  # GiB per MB
#: GiB a rank holds for one NCCL communicator of two GPUs after its first all-reduce (NCCL issue #964, A100 NVLink).
COMMUNICATOR_GIB_PAIR = 544 * _MB
#: The same for a communicator of three or more GPUs (issue #964).
COMMUNICATOR_GIB = 688 * _MB
#: GiB a rank holds per peer in its node once it has run an all-to-all (NCCL issue #1685: 3.28 GB over 7 H100 peers).
ALLTOALL_GIB_PER_PEER = (4.34 - 1.06) / 7 * 1e3 * _MB


def communicator_groups(plan) -> dict[str, int]:
    """GPUs in each communicator a training rank runs collectives on, by name, groups of one GPU left out:
    ``world``, ``tp``, ``cp``, ``dp`` (x cp: the gradient sync), ``pp``, ``model`` (tp x pp), ``ep`` and
    ``expert_dp``, of the scenario's ``plan`` (its world: ``plan.n_devices``)."""
    groups = {"world": plan.n_devices, "tp": plan.tp, "cp": plan.cp, "dp": plan.dp * plan.cp, "pp": plan.pp,
              "model": plan.tp * plan.pp, "ep": plan.ep, "expert_dp": expert_dp_group(plan)[0] if plan.ep > 1 else 1}
    return {name: gpus for name, gpus in groups.items() if gpus > 1}


def alltoall_peers(plan, devices_per_node: int) -> int:
    """Peers in a rank's node its NCCL all-to-all connects to directly: the EP group's other ranks there
    (EP ranks sit ``etp`` apart, so ``devices_per_node / etp`` of them share a node). 0 without EP, and under
    DeepEP (``plan.alltoall: deepep_*``) or the all-gather dispatcher, which open no all-to-all connections."""
    if plan.ep <= 1 or plan.alltoall.startswith("deepep") or plan.alltoall == "allgather":
        return 0
    return min(plan.ep, max(devices_per_node // plan.expert_tp, 1)) - 1


def comm_buffer_gib(s) -> float:
    """GiB a training rank holds in NCCL's buffers: one communicator per group of :func:`communicator_groups`
    plus the all-to-all's direct connections (:func:`alltoall_peers`); 0 off CUDA."""
    if not runs_cuda(s.hardware.device.name):
        return 0.0
    groups = communicator_groups(s.plan)
    per_comm = sum(COMMUNICATOR_GIB_PAIR if gpus == 2 else COMMUNICATOR_GIB for gpus in groups.values())
    return per_comm + ALLTOALL_GIB_PER_PEER * alltoall_peers(s.plan, s.hardware.node.devices_per_node)


def held_gib(s) -> float:
    """GiB a training rank's device holds outside PyTorch's allocator: the CUDA context and NCCL's buffers."""
    return CUDA_CONTEXT_GIB + comm_buffer_gib(s) if runs_cuda(s.hardware.device.name) else 0.0


def allocatable_gib(s) -> float:
    """GiB PyTorch may allocate on a training rank: what the process sees of the device
    (``serving_reserve.visible_gib``: on CUDA less what ``cudaMemGetInfo`` does not report, on Apple silicon what
    macOS lets the GPU wire) less :func:`held_gib` (0 off CUDA), never below 0."""
    return max(visible_gib(s.hardware.device) - held_gib(s), 0.0)


def capacity_words(s) -> str:
    """How :func:`allocatable_gib` came about, for a fits reason: e.g. ``(of the 79.3 GiB CUDA reports, 4.5 GiB
    held by the CUDA context and NCCL's buffers)``, or on Apple silicon the wired limit's; empty elsewhere, where
    the capacity is the device's."""
    if platform_of(s.hardware.device.name) == "mps":
        return f" (what macOS lets the GPU wire of {s.hardware.device.mem_gib:g} GiB: hardware.device.gpu_wired_limit_gib)"
    if not runs_cuda(s.hardware.device.name):
        return ""
    rt = gpu_runtime(s.hardware.device.name)
    what = f"the {rt} context and {'RCCL' if rt == 'ROCm' else 'NCCL'}'s buffers" if comm_buffer_gib(s) else f"the {rt} context"
    seen = cuda_reported_gib(s.hardware.device.mem_gib)
    return f" (of the {seen:.1f} GiB {rt} reports, {held_gib(s):.1f} GiB held by {what})"
