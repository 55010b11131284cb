"""``CostModel``: seconds for GEMMs, expert GEMMs, attention, memory traffic and collectives.

Every method takes scalars or numpy arrays and returns seconds of the same shape.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from moesim.costmodel import comm
from moesim.costmodel.roofline import gemm_bytes, gemm_flops, roofline_s
from moesim.schemas import DTYPE_BYTES, HardwareSpec


@dataclass(frozen=True)
class CostModel:
    """Per-op timing for one hardware description (datasheet roofline with efficiency terms)."""

    hw: HardwareSpec

    # ------------------------------------------------------------ device-level
    @property
    def launch_s(self) -> float:
        return self.hw.device.launch_overhead_us * 1e-6

    def _peak(self, dtype: str) -> float:
        return self.hw.device.peak_flops(dtype)

    @property
    def _bw(self) -> float:
        return self.hw.device.mem_bw_gbps * 1e9

    def compute_efficiency(self, m, n: int, k: int):
        """Fraction of peak a GEMM of this shape reaches (datasheet: one constant)."""
        return np.full(np.shape(m), self.hw.device.compute_efficiency, dtype=float)

    def memory_efficiency(self):
        return self.hw.device.memory_efficiency

    def gemm_s(self, m, n: int, k: int, dtype: str = "bf16"):
        """(m x k) @ (k x n): ``m`` is tokens, ``n``/``k`` weight dims (already divided by tp)."""
        b = DTYPE_BYTES[dtype]
        return roofline_s(gemm_flops(m, n, k), gemm_bytes(m, n, k, b), self._peak(dtype), self._bw,
                          self.compute_efficiency(m, n, k), self.memory_efficiency(), self.launch_s)

    def grouped_gemm_s(self, tokens_per_expert, n: int, k: int, dtype: str = "bf16"):
        """One grouped GEMM over the experts of a rank: sums over the last axis (experts).

        ``tokens_per_expert`` has shape ``(..., experts_on_rank)``. Each expert with tokens reads its
        (k x n) weight once; the launch overhead is paid once per group, not per expert.
        """
        t = np.asarray(tokens_per_expert, dtype=float)
        b = DTYPE_BYTES[dtype]
        flops = gemm_flops(t, n, k).sum(axis=-1)
        moved = (gemm_bytes(t, n, k, b) * (t > 0)).sum(axis=-1)
        eff = self.grouped_efficiency(t, n, k)
        return roofline_s(flops, moved, self._peak(dtype), self._bw, eff,
                          self.memory_efficiency(), self.launch_s)

    def grouped_efficiency(self, tokens_per_expert, n: int, k: int):
        """Achieved fraction of peak of a grouped expert GEMM, from its mean tokens per busy expert."""
        t = np.asarray(tokens_per_expert, dtype=float)
        busy = np.maximum((t > 0).sum(axis=-1), 1)
        mean_tokens = t.sum(axis=-1) / busy
        return self.compute_efficiency(mean_tokens, n, k)

    def memory_s(self, nbytes):
        """A bandwidth-bound kernel moving ``nbytes`` (norms, activations, weight reads)."""
        return roofline_s(0.0, nbytes, self._peak("bf16"), self._bw, 1.0, self.memory_efficiency(), self.launch_s)

    def attention_s(self, q_tokens, kv_tokens, n_heads: int, head_dim: int, kv_heads: int,
                    dtype: str = "bf16", causal: bool = True):
        """Attention core (QK^T, softmax, AV) for ``q_tokens`` queries over ``kv_tokens`` keys per sequence.

        Arrays broadcast per sequence; heads are per device (already divided by tp). Reads Q, the
        KV cache and writes the output once (flash attention).
        """
        q = np.asarray(q_tokens, dtype=float)
        kv = np.asarray(kv_tokens, dtype=float)
        b = DTYPE_BYTES[dtype]
        span = kv - q / 2 if causal else kv  # a causal chunk sees on average half of itself
        flops = 4.0 * n_heads * head_dim * q * np.maximum(span, 1.0)
        moved = b * (2 * q * n_heads * head_dim + 2 * kv * kv_heads * head_dim)
        return roofline_s(flops, moved, self._peak(dtype), self._bw, self.attention_efficiency(q),
                          self.memory_efficiency(), self.launch_s)

    def attention_efficiency(self, q_tokens):
        return np.full(np.shape(q_tokens), self.hw.device.compute_efficiency * 0.8)

    # ------------------------------------------------------------ links
    def _link(self, group: int, stride: int) -> tuple[float, float]:
        """(GB/s, latency s) of a group of ``group`` ranks spaced ``stride`` apart in rank order."""
        node = self.hw.node
        if group * stride <= node.devices_per_node:
            return node.intra_bw_gbps, node.intra_latency_us * 1e-6
        c = self.hw.cluster
        return c.nic_bw_gbps, c.nic_latency_us * 1e-6

    def allreduce_s(self, nbytes, n: int, stride: int = 1):
        """Ring all-reduce over ``n`` ranks spaced ``stride`` apart (TP: stride 1; DP: stride tp*...)."""
        bw, lat = self._link(n, stride)
        return comm.ring_allreduce_s(nbytes, n, bw, lat)

    def p2p_s(self, nbytes, intra: bool):
        """A pipeline send/recv of ``nbytes``."""
        if intra:
            return comm.p2p_s(nbytes, self.hw.node.intra_bw_gbps, self.hw.node.intra_latency_us * 1e-6)
        return comm.p2p_s(nbytes, self.hw.cluster.nic_bw_gbps, self.hw.cluster.nic_latency_us * 1e-6)

    def alltoall_s(self, bytes_to_peers, ep: int, tp: int, algorithm: str = "flat"):
        """An EP all-to-all where each rank sends ``bytes_to_peers`` bytes in total to its peers."""
        n, c = self.hw.node, self.hw.cluster
        return comm.alltoall_s(bytes_to_peers, ep, tp, n.devices_per_node, n.intra_bw_gbps,
                               n.intra_latency_us * 1e-6, c.nic_bw_gbps, c.nic_latency_us * 1e-6, algorithm)

    def alltoall_split(self, bytes_to_peers, ep: int, tp: int) -> tuple[float, float]:
        """(NVLink bytes, NIC bytes) one rank sends in an all-to-all (flat)."""
        intra, inter = comm.ep_peer_split(ep, tp, self.hw.node.devices_per_node)
        peers = intra + inter
        if peers == 0:
            return 0.0, 0.0
        b = float(np.sum(bytes_to_peers))
        return b * intra / peers, b * inter / peers


def build_cost_model(hw: HardwareSpec) -> CostModel:
    """The cost model for ``hw``: from its calibration profile when it names one, else the datasheet."""
    return CostModel(hw)
