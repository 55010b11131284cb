"""What every cost model shares: precisions, links and collectives, and the attention kernel's plumbing.

``RooflineCostModel`` (``datasheet.py``) and ``ProfiledCostModel`` (``profiled.py``) subclass
``CostModelBase`` and supply the device terms: peaks, launch overhead, efficiencies, and (profiles
only) measured links through ``_measured_link``. Nothing here reads a profile.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from moesim.costmodel import comm
from moesim.costmodel.attention_rate import fp8_attention_speedup
from moesim.costmodel.custom_allreduce import ALLREDUCE_ALGORITHMS, custom_allreduce_s
from moesim.costmodel.fp4 import moe_tile_rows
from moesim.costmodel.fp8 import cast_time_s as fp8_cast_time_s
from moesim.costmodel.fp8 import fp8_efficiency_scale
from moesim.costmodel.grouped_eff import tile_rows
from moesim.costmodel.profile import LinkSpec
from moesim.costmodel.roofline import roofline_s
from moesim.costmodel.weight_only import weight_only_floor_s
from moesim.precision import MXFP4_MXFP8, Precision, precision
from moesim.schemas import HardwareSpec


@dataclass(frozen=True)
class CostModelBase:
    """Per-op timing for one hardware description; subclasses give the device terms."""

    hw: HardwareSpec
    _precisions: dict = field(default_factory=dict, init=False, repr=False, compare=False, hash=False)

    def precision(self, dtype: str) -> Precision:
        """Bytes and compute dtype of weights stored as ``dtype`` on this device (cached per dtype)."""
        p = self._precisions.get(dtype)
        if p is None:
            p = self._precisions[dtype] = precision(dtype, self.hw.device)
        return p

    # ------------------------------------------------------------ device terms (subclasses)
    @property
    def launch_s(self) -> float:
        """Fixed cost per kernel, seconds."""
        raise NotImplementedError

    def _peak(self, dtype: str) -> float:
        """Peak FLOP/s the efficiencies are fractions of, as the device sustains it under load (the datasheet
        peak times ``hardware.device.sustained_fraction(dtype)``)."""
        raise NotImplementedError

    @property
    def _bw(self) -> float:
        """Memory bandwidth (bytes/s) the memory efficiencies are fractions of."""
        raise NotImplementedError

    def memory_efficiency(self):
        """Fraction of peak bandwidth a streaming kernel reaches."""
        raise NotImplementedError

    def _dtype_scale(self, m, n: int, k: int, compute_dtype: str):
        """Factor on a GEMM's 16-bit efficiency for its compute dtype: FP8 GEMMs reach a smaller
        fraction of their (2x) peak than BF16 ones of the same shape (``fp8.fp8_efficiency_scale``,
        from published same-device BF16/FP8 pairs); 1 for every other dtype (FP4 GEMMs have a kernel
        model of their own, ``fp4.fp4_gemm_s``)."""
        if compute_dtype != "fp8":
            return 1.0
        return fp8_efficiency_scale(m, n, k, ridge_flop_per_byte=self._peak("fp8") / self._bw)

    def _weight_only_floor_s(self, flops, p: Precision):
        """Least time of a GEMM of ``flops`` in precision ``p``: a 4-bit weight-only kernel's conversion
        bound on devices that set ``weight_only_peak_fraction`` (``costmodel/weight_only.py``), else 0."""
        return weight_only_floor_s(flops, p.model_dtype, p.weight_only, self._peak(p.compute_dtype),
                                   self.hw.device.weight_only_peak_fraction)

    def row_tile(self, tokens_per_expert, p: Precision):
        """Rows a grouped expert kernel in precision ``p`` pads each expert's rows to: W4A8 (TensorRT-LLM's
        block-scaled MoE kernels) by the experts' mean rows (``fp4.moe_tile_rows``), as its NVFP4 kernels do;
        else the device's MMA rows, fewer for weight-only kernels (``grouped_eff.tile_rows``)."""
        if p.model_dtype == MXFP4_MXFP8:
            return moe_tile_rows(np.asarray(tokens_per_expert, dtype=float).mean(axis=-1, keepdims=True))
        return tile_rows(self.hw.device.mma_rows, p.weight_only)

    def fp8_cast_s(self, nbytes, kernels):
        """FP8 training's cast / cast-transpose / amax kernels moving ``nbytes`` in ``kernels``
        launches: they stream at ``fp8.CAST_MEMORY_FRACTION`` of the bandwidth (measured)."""
        return np.where(np.asarray(nbytes) != 0, fp8_cast_time_s(nbytes, kernels, self._bw, self.launch_s), 0.0)

    def attention_efficiency(self, q_tokens, kv_tokens=None, paged: bool = True, head_dim: int = 128,
                             causal: bool = True):
        """Fraction of peak attention reaches at ``q_tokens`` queries over ``kv_tokens`` keys (default q):
        the datasheet's large-GEMM efficiency times 0.8 (subclasses with a measured table override).
        ``paged``: a serving kernel reading a paged KV cache, else training's contiguous Q/K/V;
        ``head_dim`` and ``causal`` matter only to a measured flash-attention table."""
        shape = np.broadcast_shapes(np.shape(q_tokens), np.shape(kv_tokens if kv_tokens is not None else q_tokens))
        return np.full(shape, self.hw.device.compute_efficiency * 0.8)

    def _attention_memory_efficiency(self, working_set_bytes):
        """Fraction of bandwidth attention's KV read reaches (a kernel moving ``working_set_bytes``)."""
        return self.memory_efficiency()

    @property
    def _attention_launch_overhead_s(self) -> float:
        """Fixed cost per attention kernel, seconds."""
        return self.launch_s

    def _measured_link(self, collective: str, intra: bool, ranks: int | None = None) -> LinkSpec | None:
        """A measured link for ``collective`` (None: use the datasheet's node and cluster sections)."""
        return None

    # ------------------------------------------------------------ attention
    def attention_s(self, q_tokens, kv_tokens, n_heads: int, head_dim: int, kv_heads: int,
                    dtype: str = "bf16", causal: bool = True):
        """Attention core (QK^T, softmax, AV) for ``q_tokens`` queries over ``kv_tokens`` keys per sequence.

        Arrays broadcast per sequence; heads are per device (already divided by tp). Reads Q, the
        KV cache and writes the output once (flash attention).
        """
        return self._attention_core_s(q_tokens, kv_tokens, n_heads, head_dim, kv_heads, dtype, causal) \
            + self._attention_launch_s(q_tokens)

    def attention_batch_s(self, q_tokens, kv_tokens, n_heads: int, head_dim: int, kv_heads: int,
                          dtype: str = "bf16", causal: bool = True, kv_bytes: float | None = None,
                          paged: bool = True):
        """One batched attention kernel over sequences on the last axis (one launch, summed work).
        ``kv_bytes``: bytes per element of the KV cache (and Q, output) it reads; default ``dtype``'s.
        ``paged``: a serving engine's kernel over a paged KV cache (False: training's flash attention
        over contiguous Q/K/V, see :meth:`attention_efficiency`)."""
        q = np.atleast_1d(np.asarray(q_tokens, dtype=float))
        kv = np.atleast_1d(np.asarray(kv_tokens, dtype=float))
        moved = self._attention_bytes(q, kv, n_heads, head_dim, kv_heads, dtype, kv_bytes)
        core = self._attention_core_s(q, kv, n_heads, head_dim, kv_heads, dtype, causal,
                                      moved.sum(axis=-1, keepdims=True), moved, paged)
        total = core.sum(axis=-1)
        return np.where(total > 0, total + self._attention_launch_s(1.0), 0.0)

    def attention_seq_s(self, q_tokens, kv_tokens, n_heads: int, head_dim: int, kv_heads: int,
                        dtype: str = "bf16", causal: bool = True, kv_bytes: float | None = None):
        """Per-sequence seconds of a batched attention kernel without its launch, or None where one
        sequence's time depends on the rest of the batch (a cache-aware KV read, see
        ``_attention_memory_efficiency``). Where not None, ``attention_batch_s`` is the sum of these
        plus ``attention_launch_s``: the serving engine tabulates decode sequences by context."""
        if self._attention_batch_coupled:
            return None
        moved = self._attention_bytes(q_tokens, kv_tokens, n_heads, head_dim, kv_heads, dtype, kv_bytes)
        return self._attention_core_s(q_tokens, kv_tokens, n_heads, head_dim, kv_heads, dtype, causal, moved=moved)

    @property
    def _attention_batch_coupled(self) -> bool:
        """True when the KV read's efficiency depends on the whole kernel's working set."""
        return False

    @property
    def attention_launch_s(self) -> float:
        """Fixed cost of one attention kernel launch, seconds."""
        return float(self._attention_launch_overhead_s)

    def _attention_bytes(self, q, kv, n_heads, head_dim, kv_heads, dtype, kv_bytes: float | None = None):
        """Bytes one sequence's attention moves: Q read and output written, the KV cache read once
        (all at ``kv_bytes`` per element, default ``dtype``'s KV bytes: 16-bit for weight-only dtypes)."""
        q, kv = np.asarray(q, dtype=float), np.asarray(kv, dtype=float)
        b = self.precision(dtype).kv_bytes if kv_bytes is None else kv_bytes
        return b * (2 * q * n_heads * head_dim + 2 * kv * kv_heads * head_dim)

    def _attention_core_s(self, q_tokens, kv_tokens, n_heads, head_dim, kv_heads, dtype, causal,
                          working_set_bytes=None, moved=None, paged: bool = True):
        """Attention roofline without the launch overhead, per sequence.

        The KV read's efficiency may depend on the whole kernel's working set
        (``working_set_bytes``, default this sequence's bytes): see ``_attention_memory_efficiency``.
        """
        q = np.asarray(q_tokens, dtype=float)
        kv = np.asarray(kv_tokens, dtype=float)
        span = kv - q / 2 if causal else kv  # a causal chunk sees on average half of itself
        flops = 4.0 * n_heads * head_dim * q * np.maximum(span, 1.0)
        if moved is None:  # bytes per sequence (attention_batch_s passes them in)
            moved = self._attention_bytes(q, kv, n_heads, head_dim, kv_heads, dtype)
        eff_mem = self._attention_memory_efficiency(moved if working_set_bytes is None else working_set_bytes)
        peak = self._attention_peak(dtype, head_dim)
        # a device with faster softmax exponentials at the same tensor peak (Blackwell Ultra) reaches a
        # larger fraction of it (costmodel/attention_rate.py)
        eff = np.minimum(self.attention_efficiency(q, kv, paged, head_dim, causal) * self.hw.device.attention_rate_scale, 1.0)
        return roofline_s(flops, moved, peak, self._bw, eff, eff_mem, 0.0)

    def _attention_peak(self, dtype: str, head_dim: float) -> float:
        """FLOP/s the attention kernel's efficiency is a fraction of (the flash tables are fractions of the
        16-bit peak). An FP8 attention kernel (serving over an FP8 KV cache) is not twice as fast as the
        16-bit one: where cuDNN's SDPA benchmark timed both on the device's family, the 16-bit peak times
        that measured forward speedup (1.50x on Hopper, 1.29x on Blackwell, 1.58x on Blackwell Ultra at
        128-wide heads; ``attention_rate.fp8_attention_speedup``), the speed training's FP8 attention takes
        too; elsewhere the FP8 peak."""
        compute = self.precision(dtype).compute_dtype
        if compute == "fp8":
            forward, _ = fp8_attention_speedup(self.hw.device.name, head_dim)
            if forward != 1.0:
                return self._peak("bf16") * forward
        return self._peak(compute)

    def _attention_launch_s(self, q_tokens):
        q = np.asarray(q_tokens, dtype=float)
        return np.where(q > 0, self._attention_launch_overhead_s, 0.0)

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
            bw, lat = self._link_kind(True, collective, group)
            return self._ring_capped(bw, group), lat
        measured = self._measured_link(collective, False, group)
        if measured is not None:
            return measured.bw_gbps, measured.latency_us * 1e-6
        members = min(group, max(1, per_node // max(stride, 1)))
        intra_bw, _ = self._link_kind(True, collective, members)
        intra_bw = self._ring_capped(intra_bw, members)
        nic_bw, nic_lat = self._link_kind(False, collective)
        return comm.ring_bus_gbps(members, intra_bw, nic_bw), nic_lat

    def _ring_capped(self, bw: float, ranks: int) -> float:
        """``bw`` (GB/s) of a ring over ``ranks`` devices of one node, capped by the node's measured ring
        bandwidth for the largest group size listed that the ring reaches (``hardware.node.ring_busbw_gbps``:
        PCIe servers, whose rings cross the host's switches and sockets)."""
        measured = self.hw.node.ring_busbw_gbps
        reached = [n for n in measured if n <= ranks]
        return min(bw, measured[max(reached)]) if reached else bw

    def _link_kind(self, intra: bool, collective: str, ranks: int | None = None) -> tuple[float, float]:
        """(GB/s, latency s) of an intra- or inter-node link; measured values win over the datasheet."""
        measured = self._measured_link(collective, intra, ranks)
        if measured is not None:
            return measured.bw_gbps, measured.latency_us * 1e-6
        if intra:
            return self.hw.node.intra_bw_gbps, self.hw.node.intra_latency_us * 1e-6
        return self.hw.cluster.nic_bw_gbps, self.hw.cluster.nic_latency_us * 1e-6

    def allreduce_s(self, nbytes, n: int, stride: int = 1, algorithm: str = "nccl"):
        """All-reduce over ``n`` ranks spaced ``stride`` apart (TP: stride 1; DP: stride tp*...).

        ``algorithm``: ``nccl`` (NCCL's ring, what training frameworks run) or ``custom`` (an
        inference engine's custom all-reduce: the fastest of one-shot, two-shot and the ring,
        ``custom_allreduce.custom_allreduce_s``; a group spanning nodes still runs the ring).
        """
        bw, lat = self._link(n, stride)
        ring = comm.ring_allreduce_s(nbytes, n, bw, lat)
        if algorithm not in ALLREDUCE_ALGORITHMS:
            raise ValueError(f"all-reduce algorithm {algorithm!r}: expected one of {', '.join(ALLREDUCE_ALGORITHMS)}")
        if algorithm == "nccl" or n <= 1 or n * stride > self.hw.node.devices_per_node:
            return ring
        # one-shot and two-shot cross the same host fabric as the ring: the same cap
        return custom_allreduce_s(nbytes, n, self._ring_capped(self.hw.node.intra_bw_gbps, n), ring)

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

    def alltoall_s(self, bytes_to_peers, ep: int, tp: int, algorithm: str = "flat", top_k: int = 1,
                   n_experts: int = 0, max_nodes: int | None = None):
        """An EP all-to-all where each rank sends ``bytes_to_peers`` bytes in total to its peers.

        Links: a measured all-to-all (``profile.collectives.all_to_all``, fitted as a latency per
        peer plus bandwidth, for the group of ranks inside one node) where the profile has one, else
        send/recv's link, whose one-message latency is paid once (peers are sent to concurrently).
        ``top_k`` / ``n_experts``: the routing, for ``hierarchical``'s per-node deduplication of
        NIC bytes (``comm.distinct_node_fraction``; ``top_k = 1`` deduplicates nothing); ``max_nodes``:
        node-limited routing (``routing.max_nodes_per_token``) caps the distinct nodes per token.
        ``deepep_normal`` / ``deepep_low_latency``: DeepEP's kernels on the same links, at the
        fitted link fractions and per-pass cost of ``comm._deepep_s``. ``allgather``: the tokens
        all-gathered (dispatch) or their outputs reduce-scattered (combine) over the EP group as a
        ring (:meth:`allgather_s`, the same price either way), every peer's tokens whole
        (``comm.gathered_bytes``).
        """
        if algorithm == "allgather":  # a ring all-gather (dispatch) or reduce-scatter (combine) of the tokens
            gathered = comm.gathered_bytes(bytes_to_peers, ep, top_k)
            return self.allgather_s(gathered * ep / max(ep - 1, 1), ep, tp)
        intra_peers, _ = comm.ep_peer_split(ep, tp, self.hw.node.devices_per_node)
        intra_bw, intra_lat, intra_peer = self._alltoall_link(True, intra_peers + 1)
        inter_bw, inter_lat, inter_peer = self._alltoall_link(False, ep)
        return comm.alltoall_s(bytes_to_peers, ep, tp, self.hw.node.devices_per_node, intra_bw, intra_lat,
                               inter_bw, inter_lat, algorithm, intra_peer, inter_peer, top_k, n_experts, max_nodes)

    def _alltoall_link(self, intra: bool, ranks: int) -> tuple[float, float, float]:
        """(GB/s, latency s once, latency s per peer) of an all-to-all link: a measured all-to-all
        (its fitted latency is per peer), else send/recv's link (one message latency, once)."""
        measured = self._measured_link("all_to_all", intra, ranks)
        if measured is not None:
            return measured.bw_gbps, 0.0, measured.latency_us * 1e-6
        bw, lat = self._link_kind(intra, "send_recv")
        return bw, lat, 0.0

    def alltoall_split(self, bytes_to_peers, ep: int, tp: int, algorithm: str = "flat", top_k: int = 1,
                       n_experts: int = 0, max_nodes: int | None = None) -> tuple[float, float]:
        """(NVLink bytes, NIC bytes) one rank moves in the all-to-all(s) of ``bytes_to_peers`` (summed):
        the bytes :meth:`alltoall_s` prices (``comm.alltoall_link_bytes``; hierarchical: every byte
        over NVLink, the NIC bytes deduplicated per remote node)."""
        nvl, nic = comm.alltoall_link_bytes(float(np.sum(bytes_to_peers)), ep, tp, self.hw.node.devices_per_node,
                                            algorithm, top_k, n_experts, max_nodes)
        return float(nvl), float(nic)
