"""``CostModel``: seconds for GEMMs, expert GEMMs, attention, memory traffic and collectives.

Every method takes scalars or numpy arrays and returns seconds of the same shape.

Without a profile every term comes from the datasheet (``DeviceSpec`` efficiencies). With a
calibration profile (``profile.py``) the peaks are the profile's ``reference``, GEMM efficiency is a
table over tokens and weight size, grouped expert GEMMs pay one launch plus a cost per busy expert,
attention and collectives use their measured terms where the profile has them.

A ``dtype`` argument is the weights' dtype (``model.dtype``); ``precision`` resolves it on this
device: weights are read at their bytes per parameter (quantization scales included), GEMM inputs,
outputs and the KV cache move in the compute dtype, and FLOPs run at the compute dtype's peak
(int8/int4, and fp8 without fp8 tensor cores, run weight-only in bf16/fp16).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np

from moesim.costmodel import comm
from moesim.costmodel.profile import Profile, check_device, default_profile_for, load_profile
from moesim.costmodel.roofline import gemm_bytes, gemm_flops, roofline_ratio, roofline_s
from moesim.precision import Precision, precision
from moesim.schemas import HardwareSpec


@dataclass(frozen=True)
class CostModel:
    """Per-op timing for one hardware description (roofline with datasheet or profiled efficiencies)."""

    hw: HardwareSpec
    profile: Profile | None = field(default=None, hash=False)
    _precisions: dict = field(default_factory=dict, init=False, repr=False, compare=False, hash=False)

    def precision(self, dtype: str) -> Precision:
        """Bytes and compute dtype of weights stored as ``dtype`` on this device (cached per dtype)."""
        p = self._precisions.get(dtype)
        if p is None:
            p = self._precisions[dtype] = precision(dtype, self.hw.device)
        return p

    @property
    def basis(self) -> str:
        """Where the efficiencies come from: 'datasheet' or 'profile: <device> (<source>)'."""
        return "datasheet" if self.profile is None else f"profile: {self.profile.device} ({self.profile.source})"

    # ------------------------------------------------------------ device-level
    @property
    def launch_s(self) -> float:
        """Fixed cost per kernel, seconds."""
        us = self.profile.launch_overhead_us if self.profile else self.hw.device.launch_overhead_us
        return us * 1e-6

    def _peak(self, dtype: str) -> float:
        if self.profile is not None:
            return self.profile.reference.peak_flops(dtype)
        return self.hw.device.peak_flops(dtype)

    @property
    def _bw(self) -> float:
        if self.profile is not None:
            return self.profile.reference.mem_bw_gbps * 1e9
        return self.hw.device.mem_bw_gbps * 1e9

    def compute_efficiency(self, m, n: int, k: int):
        """Fraction of peak a GEMM of this shape reaches (datasheet: one constant; profile: a table)."""
        if self.profile is not None:
            return self.profile.gemm.lookup(m, float(n) * float(k))
        return np.full(np.shape(m), self.hw.device.compute_efficiency, dtype=float)

    def memory_efficiency(self):
        """Fraction of peak bandwidth a streaming kernel reaches."""
        return self.profile.memory_efficiency if self.profile else self.hw.device.memory_efficiency

    def _gemm_memory_efficiency(self):
        """Memory term of a GEMM. A profile's table already holds the measured weight-streaming speed,
        so its memory term is only a floor (``gemm_memory_efficiency``), or absent (inf) when unset."""
        if self.profile is None:
            return self.memory_efficiency()
        return self.profile.gemm_memory_efficiency or np.inf

    def gemm_s(self, m, n: int, k: int, dtype: str = "bf16"):
        """(m x k) @ (k x n): ``m`` is tokens, ``n``/``k`` weight dims (already divided by tp).

        The weight is read at ``dtype``'s bytes per parameter, A and C move in the compute dtype.
        A profile's tables time 16-bit weights: weight-only dtypes scale that time by
        ``_weight_only_scale`` (the datasheet roofline sees the quantized bytes directly).
        """
        p = self.precision(dtype)
        dtype = p.compute_dtype
        flops, moved = gemm_flops(m, n, k), gemm_bytes(m, n, k, p.act_bytes, p.weight_bytes)
        eff = self.compute_efficiency(m, n, k)
        if self.profile is None:
            return roofline_s(flops, moved, self._peak(dtype), self._bw, eff, self.memory_efficiency(), self.launch_s)
        full = gemm_bytes(m, n, k, p.act_bytes) if p.weight_only else moved
        scale = self._weight_only_scale(flops, moved, full, dtype) if p.weight_only else 1.0
        ref = self.profile.measured_reference
        if ref is None:
            t = roofline_s(flops, full, self._peak(dtype), self._bw, eff, self._gemm_memory_efficiency(), 0.0)
            return np.where((flops > 0) | (full > 0), t * scale + self.launch_s, 0.0)
        t = roofline_s(flops, full, ref.peak_flops(dtype), ref.mem_bw_gbps * 1e9, eff,
                       self._gemm_memory_efficiency(), 0.0)
        return np.where(t > 0, t * self._sibling_scale(flops, full, dtype) * scale + self.launch_s, 0.0)

    def _weight_only_scale(self, flops, moved, full, compute_dtype: str):
        """Roofline time with quantized weights (``moved`` bytes) over 16-bit weights (``full``): <= 1.

        A measured 16-bit GEMM keeps its fraction of the roofline when only its weight reads shrink:
        bandwidth-bound shapes (decode) speed up by the bytes saved, compute-bound ones not at all.
        """
        peak = self._peak(compute_dtype)
        return roofline_ratio(flops, moved, peak, self._bw, full, peak, self._bw)

    def _sibling_scale(self, flops, moved, dtype: str):
        """This device's roofline time over the measured sibling's (1 without a rebased profile).

        A profile rebased on a sibling (A100 40GB from 80GB, H200 from H100) keeps each kernel's
        measured fraction of the roofline, so memory-bound kernels speed up with bandwidth and
        compute-bound ones with peak FLOP/s.
        """
        ref = self.profile.measured_reference if self.profile is not None else None
        if ref is None:
            return 1.0
        return roofline_ratio(flops, moved, self._peak(dtype), self._bw,
                              moved, ref.peak_flops(dtype), ref.mem_bw_gbps * 1e9)

    def grouped_gemm_s(self, tokens_per_expert, n: int, k: int, dtype: str = "bf16", working_set_bytes=None):
        """One grouped GEMM over the experts of a rank: sums over the last axis (experts).

        ``tokens_per_expert`` has shape ``(..., experts_on_rank)``. Each expert with tokens reads its
        (k x n) weight once; the launch overhead is paid once per group, not per expert.
        ``working_set_bytes`` (profiles with a cache only): bytes the surrounding layer touches per
        call, which decides whether expert weights stay in cache; default this call's busy weights.
        """
        t = np.asarray(tokens_per_expert, dtype=float)
        p = self.precision(dtype)
        if self.profile is not None:
            return self._grouped_profiled_s(t, n, k, dtype, working_set_bytes)
        flops = gemm_flops(t, n, k).sum(axis=-1)
        moved = (gemm_bytes(t, n, k, p.act_bytes, p.weight_bytes) * (t > 0)).sum(axis=-1)
        eff = self.grouped_efficiency(t, n, k)
        return roofline_s(flops, moved, self._peak(p.compute_dtype), self._bw, eff,
                          self.memory_efficiency(), self.launch_s)

    def _grouped_profiled_s(self, t: np.ndarray, n: int, k: int, dtype: str, working_set_bytes=None):
        """Profiled grouped GEMM: per-expert roofline summed, one launch, a cost per busy expert.

        Per-expert efficiency is the grouped (cold-weight) table, blended towards the dense (hot)
        table when the busy experts' weights fit in the profile's cache.
        """
        g = self.profile.grouped
        p = self.precision(dtype)
        dtype = p.compute_dtype
        w, m = float(n) * float(k), np.maximum(t, 1.0)
        busy = (t > 0).sum(axis=-1)
        eff = self.profile.gemm.lookup(m, w)
        if g is not None:
            ws = busy * w * p.weight_bytes if working_set_bytes is None else working_set_bytes
            cold = np.asarray(self.profile.cold_fraction(ws))[..., None]
            eff = eff ** (1.0 - cold) * g.efficiency.lookup(m, w) ** cold
        flops, moved = gemm_flops(t, n, k), gemm_bytes(t, n, k, p.act_bytes, p.weight_bytes)
        full = gemm_bytes(t, n, k, p.act_bytes) if p.weight_only else moved
        ref = self.profile.measured_reference
        peak, bw = (ref.peak_flops(dtype), ref.mem_bw_gbps * 1e9) if ref else (self._peak(dtype), self._bw)
        per_expert = roofline_s(flops, full, peak, bw, eff, self._gemm_memory_efficiency(), 0.0) * (t > 0)  # idle: no read
        per_expert = per_expert * self._sibling_scale(flops, full, dtype)
        if p.weight_only:
            per_expert = per_expert * self._weight_only_scale(flops, moved, full, dtype)
        launch_s = (g.launch_overhead_us if g else self.profile.launch_overhead_us) * 1e-6
        fixed_s = launch_s + self.grouped_loop_s(t, n)
        return np.where(busy > 0, per_expert.sum(axis=-1) + fixed_s, 0.0)

    def grouped_loop_s(self, tokens_per_expert, n: int):
        """What a loop implementation of one grouped call pays beyond the GEMMs: a fixed cost per busy
        expert and the copy of each expert's ``tokens x n`` output into place (0 without a profile)."""
        g = self.profile.grouped if self.profile else None
        t = np.asarray(tokens_per_expert, dtype=float)
        if g is None:
            return np.zeros(t.shape[:-1])
        return ((t > 0).sum(axis=-1) * g.per_expert_overhead_us * 1e-6
                + t.sum(axis=-1) * n * g.copy_ns_per_element * 1e-9)

    def grouped_efficiency(self, tokens_per_expert, n: int, k: int):
        """Achieved fraction of peak of a grouped expert GEMM, from its mean tokens per busy expert."""
        t = np.asarray(tokens_per_expert, dtype=float)
        busy = np.maximum((t > 0).sum(axis=-1), 1)
        mean_tokens = t.sum(axis=-1) / busy
        if self.profile is not None and self.profile.grouped is not None:
            return self.profile.grouped.efficiency.lookup(np.maximum(mean_tokens, 1.0), float(n) * float(k))
        return self.compute_efficiency(mean_tokens, n, k)

    def moe_overhead_s(self, busy_experts, capacity: bool = False):
        """Host-side cost of one MoE layer beyond its kernels (profiled; 0 from the datasheet)."""
        busy = np.asarray(busy_experts, dtype=float)
        o = self.profile.moe_overhead if self.profile else None
        if o is None:
            return np.zeros_like(busy)
        return (o.fixed_us + o.per_busy_expert_us * busy + (o.capacity_us if capacity else 0.0)) * 1e-6

    def activation_s(self, out_elements, gated: bool, act_bytes: float):
        """The FFN activation writing ``out_elements`` (tokens x hidden): silu(gate) * up when gated.

        A profile with a measured activation curve prices it by elements (on a CPU the exp, not the
        bytes, sets the pace; a non-gated GELU is priced like the gated kernel); otherwise it is one
        memory stream reading 2 (gated) or 1 inputs and writing 1 output per element.
        """
        e = self.profile.elementwise if self.profile else None
        if e is not None and e.activation is not None:
            return e.activation.seconds(out_elements)
        return self.memory_s(np.asarray(out_elements, dtype=float) * (3 if gated else 2) * act_bytes)

    def router_topk_s(self, tokens, n_experts: int, top_k: int):
        """Router after its GEMM over ``tokens`` x ``n_experts`` fp32 logits: softmax, top-k, renormalise.

        Measured table when the profile has one; otherwise one memory stream over the logits.
        """
        e = self.profile.elementwise if self.profile else None
        if e is not None and e.router is not None:
            return e.router.seconds(tokens, n_experts, top_k)
        return self.memory_s(np.asarray(tokens, dtype=float) * n_experts * 4.0)

    def memory_s(self, nbytes):
        """A bandwidth-bound kernel moving ``nbytes`` (norms, activations, weight reads).

        With a profile that has a cache, the bandwidth depends on the bytes moved (the working set).
        """
        eff = self.profile.streaming_efficiency(nbytes) if self.profile else self.memory_efficiency()
        return roofline_s(0.0, nbytes, self._peak("bf16"), self._bw, 1.0, eff, self.launch_s)

    def attention_s(self, q_tokens, kv_tokens, n_heads: int, head_dim: int, kv_heads: int,
                    dtype: str = "bf16", causal: bool = True):
        """Attention core (QK^T, softmax, AV) for ``q_tokens`` queries over ``kv_tokens`` keys per sequence.

        Arrays broadcast per sequence; heads are per device (already divided by tp). Reads Q, the
        KV cache and writes the output once (flash attention).
        """
        return self._attention_core_s(q_tokens, kv_tokens, n_heads, head_dim, kv_heads, dtype, causal) \
            + self._attention_launch_s(q_tokens)

    def attention_batch_s(self, q_tokens, kv_tokens, n_heads: int, head_dim: int, kv_heads: int,
                          dtype: str = "bf16", causal: bool = True):
        """One batched attention kernel over sequences on the last axis (one launch, summed work)."""
        q, kv = np.atleast_1d(q_tokens), np.atleast_1d(kv_tokens)
        batch_bytes = self._attention_bytes(q, kv, n_heads, head_dim, kv_heads, dtype).sum(axis=-1, keepdims=True)
        core = self._attention_core_s(q, kv, n_heads, head_dim, kv_heads, dtype, causal, batch_bytes)
        total = core.sum(axis=-1)
        return np.where(total > 0, total + self._attention_launch_s(1.0), 0.0)

    def _attention_bytes(self, q, kv, n_heads, head_dim, kv_heads, dtype):
        """Bytes one sequence's attention moves: Q read and output written, the KV cache read once
        (all at ``dtype``'s KV bytes: 16-bit for weight-only dtypes)."""
        q, kv = np.asarray(q, dtype=float), np.asarray(kv, dtype=float)
        return self.precision(dtype).kv_bytes * (2 * q * n_heads * head_dim + 2 * kv * kv_heads * head_dim)

    def _attention_core_s(self, q_tokens, kv_tokens, n_heads, head_dim, kv_heads, dtype, causal,
                          working_set_bytes=None):
        """Attention roofline without the launch overhead, per sequence.

        With a cache-aware profile (``memory_curve``, CPUs) the KV read runs at the curve's rate for
        the whole kernel's working set (``working_set_bytes``, default this sequence's bytes) times
        the profile's decode efficiency: a batch whose KV outgrows the cache reads it more slowly.
        """
        q = np.asarray(q_tokens, dtype=float)
        kv = np.asarray(kv_tokens, dtype=float)
        span = kv - q / 2 if causal else kv  # a causal chunk sees on average half of itself
        flops = 4.0 * n_heads * head_dim * q * np.maximum(span, 1.0)
        moved = self._attention_bytes(q, kv, n_heads, head_dim, kv_heads, dtype)
        a = self.profile.attention if self.profile else None
        eff_mem = a.decode_memory_efficiency if a else self.memory_efficiency()
        if a is not None and self.profile.memory_curve is not None:
            eff_mem = eff_mem * self.profile.streaming_efficiency(moved if working_set_bytes is None else working_set_bytes)
        peak = self._peak(self.precision(dtype).compute_dtype)
        return roofline_s(flops, moved, peak, self._bw, self.attention_efficiency(q, kv), eff_mem, 0.0)

    def _attention_launch_s(self, q_tokens):
        a = self.profile.attention if self.profile else None
        us = a.launch_overhead_us * 1e-6 if a else self.launch_s
        q = np.asarray(q_tokens, dtype=float)
        return np.where(q > 0, us, 0.0)

    def attention_efficiency(self, q_tokens, kv_tokens=None):
        """Fraction of peak attention reaches at ``q_tokens`` queries over ``kv_tokens`` keys (default q)."""
        if self.profile is not None and self.profile.attention is not None:
            kv = q_tokens if kv_tokens is None else kv_tokens
            return self.profile.attention.prefill_efficiency.lookup(np.maximum(q_tokens, 1.0), np.maximum(kv, 1.0))
        shape = np.broadcast_shapes(np.shape(q_tokens), np.shape(kv_tokens if kv_tokens is not None else q_tokens))
        return np.full(shape, self.hw.device.compute_efficiency * 0.8)

    # ------------------------------------------------------------ links
    def _link(self, group: int, stride: int, collective: str = "all_reduce") -> tuple[float, float]:
        """(GB/s bus bandwidth per rank, latency s) of a ring over ``group`` ranks spaced ``stride``
        apart in rank order.

        Inside a node: the NVLink link. Across nodes: a measured inter-node link as measured, else
        the datasheet NIC per rank times the group's members on each node, capped by NVLink
        (``comm.ring_bus_gbps``: NCCL runs one ring per NIC, each member's NIC is its own rail).
        """
        per_node = self.hw.node.devices_per_node
        if group * stride <= per_node:
            return self._link_kind(True, collective, group)
        coll = getattr(self.profile.collectives, collective, None) if self.profile and self.profile.collectives else None
        measured = coll.link(False, group) if coll else None
        if measured is not None:
            return measured.bw_gbps, measured.latency_us * 1e-6
        members = min(group, max(1, per_node // max(stride, 1)))
        intra_bw, _ = self._link_kind(True, collective, members)
        nic_bw, nic_lat = self._link_kind(False, collective)
        return comm.ring_bus_gbps(members, intra_bw, nic_bw), nic_lat

    def _link_kind(self, intra: bool, collective: str, ranks: int | None = None) -> tuple[float, float]:
        """(GB/s, latency s) of an intra- or inter-node link; measured values win over the datasheet."""
        coll = getattr(self.profile.collectives, collective, None) if self.profile and self.profile.collectives else None
        measured = coll.link(intra, ranks) if coll else None
        if measured is not None:
            return measured.bw_gbps, measured.latency_us * 1e-6
        if intra:
            return self.hw.node.intra_bw_gbps, self.hw.node.intra_latency_us * 1e-6
        return self.hw.cluster.nic_bw_gbps, self.hw.cluster.nic_latency_us * 1e-6

    def allreduce_s(self, nbytes, n: int, stride: int = 1):
        """Ring all-reduce over ``n`` ranks spaced ``stride`` apart (TP: stride 1; DP: stride tp*...)."""
        bw, lat = self._link(n, stride)
        return comm.ring_allreduce_s(nbytes, n, bw, lat)

    def reduce_scatter_s(self, nbytes, n: int, stride: int = 1):
        """Ring reduce-scatter of an ``nbytes`` buffer over ``n`` ranks: half an all-reduce."""
        bw, lat = self._link(n, stride)
        return comm.ring_reduce_scatter_s(nbytes, n, bw, lat)

    def allgather_s(self, nbytes, n: int, stride: int = 1):
        """Ring all-gather into an ``nbytes`` buffer over ``n`` ranks: half an all-reduce."""
        bw, lat = self._link(n, stride)
        return comm.ring_allgather_s(nbytes, n, bw, lat)

    def p2p_s(self, nbytes, intra: bool):
        """A pipeline send/recv of ``nbytes``."""
        bw, lat = self._link_kind(intra, "send_recv")
        return comm.p2p_s(nbytes, bw, lat)

    def alltoall_s(self, bytes_to_peers, ep: int, tp: int, algorithm: str = "flat"):
        """An EP all-to-all where each rank sends ``bytes_to_peers`` bytes in total to its peers.

        Links: a measured all-to-all (``profile.collectives.all_to_all``, fitted as a latency per
        peer plus bandwidth, for the group of ranks inside one node) where the profile has one, else
        send/recv's link, whose one-message latency is paid once (peers are sent to concurrently).
        """
        intra_peers, _ = comm.ep_peer_split(ep, tp, self.hw.node.devices_per_node)
        intra_bw, intra_lat, intra_peer = self._alltoall_link(True, intra_peers + 1)
        inter_bw, inter_lat, inter_peer = self._alltoall_link(False, ep)
        return comm.alltoall_s(bytes_to_peers, ep, tp, self.hw.node.devices_per_node, intra_bw, intra_lat,
                               inter_bw, inter_lat, algorithm, intra_peer, inter_peer)

    def _alltoall_link(self, intra: bool, ranks: int) -> tuple[float, float, float]:
        """(GB/s, latency s once, latency s per peer) of an all-to-all link: a measured all-to-all
        (its fitted latency is per peer), else send/recv's link (one message latency, once)."""
        coll = self.profile.collectives.all_to_all if self.profile and self.profile.collectives else None
        measured = coll.link(intra, ranks) if coll else None
        if measured is not None:
            return measured.bw_gbps, 0.0, measured.latency_us * 1e-6
        bw, lat = self._link_kind(intra, "send_recv")
        return bw, lat, 0.0

    def alltoall_split(self, bytes_to_peers, ep: int, tp: int) -> tuple[float, float]:
        """(NVLink bytes, NIC bytes) one rank sends in an all-to-all (flat)."""
        intra, inter = comm.ep_peer_split(ep, tp, self.hw.node.devices_per_node)
        peers = intra + inter
        if peers == 0:
            return 0.0, 0.0
        b = float(np.sum(bytes_to_peers))
        return b * intra / peers, b * inter / peers


def build_cost_model(hw: HardwareSpec, force_profile: bool | None = None) -> CostModel:
    """The cost model for ``hw``.

    Order: the profile ``hw.profile`` names (its device must match ``hw.device.name`` unless
    ``force_profile``, ``hw.force_profile`` or the environment variable ``MOESIM_FORCE_PROFILE=1``); else the shipped
    default for A100/H100 devices, rebased on the device's datasheet peaks; else the datasheet.
    """
    if force_profile is None:
        force_profile = hw.force_profile or os.environ.get("MOESIM_FORCE_PROFILE", "").strip().lower() in {"1", "true", "yes"}
    if hw.profile is not None:
        profile = _load_cached(Path(hw.profile))
        check_device(profile, hw.device.name, force=force_profile)
        return CostModel(hw, profile)
    return CostModel(hw, default_profile_for(hw.device))


def _load_cached(path: Path) -> Profile:
    """Load a profile once per (path, size, mtime): sweeps build many cost models from one file."""
    try:
        st = path.stat()
    except OSError:
        return load_profile(path)  # raises the one-line "not found" InputError
    return _load_keyed(str(path.resolve()), st.st_size, st.st_mtime_ns)


@lru_cache(maxsize=32)
def _load_keyed(path: str, size: int, mtime_ns: int) -> Profile:
    return load_profile(path)
