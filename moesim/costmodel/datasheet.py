"""``RooflineCostModel``: every kernel priced from the datasheet (``DeviceSpec`` peaks and efficiencies).

A GEMM or streaming kernel takes ``max(flops / (peak * compute_efficiency), bytes / (bw *
memory_efficiency)) + launch_overhead`` (``roofline.py``); elementwise kernels are memory streams,
and there are no host-side or per-expert overheads. Links come from the node and cluster sections.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from moesim.costmodel.base import CostModelBase
from moesim.costmodel.grouped_eff import (
    expected_padded_tokens,
    expert_tiles,
    grouped_gemm_ratio,
    tile_rows,
)
from moesim.costmodel.roofline import gemm_bytes, gemm_flops, roofline_s


@dataclass(frozen=True)
class RooflineCostModel(CostModelBase):
    """Datasheet roofline: ``hw.device``'s peaks and efficiency constants."""

    profile: ClassVar[None] = None  # no calibration profile (callers may read ``cm.profile``)

    @property
    def basis(self) -> str:
        """Where the efficiencies come from."""
        return "datasheet"

    @property
    def launch_s(self) -> float:
        """Fixed cost per kernel, seconds."""
        return self.hw.device.launch_overhead_us * 1e-6

    @property
    def kernel_floor_s(self) -> float:
        """None of ``launch_s``: the datasheet's fixed cost per kernel is the CPU launch (5 us by default,
        Meta HTA's low end, ``costmodel/host.py``), which a CUDA graph replaces by its node cost."""
        return 0.0

    def _peak(self, dtype: str) -> float:
        return self.hw.device.peak_flops(dtype) * self.hw.device.sustained_fraction(dtype)

    @property
    def _bw(self) -> float:
        return self.hw.device.mem_bw_gbps * 1e9

    def compute_efficiency(self, m, n: int, k: int):
        """Fraction of peak a GEMM of this shape reaches: the datasheet constant for every shape."""
        return np.full(np.shape(m), self.hw.device.compute_efficiency, dtype=float)

    def memory_efficiency(self):
        """Fraction of peak bandwidth a streaming kernel reaches."""
        return self.hw.device.memory_efficiency

    def gemm_s(self, m, n: int, k: int, dtype: str = "bf16"):
        """(m x k) @ (k x n): ``m`` is tokens, ``n``/``k`` weight dims (already divided by tp).

        The weight is read at ``dtype``'s bytes per parameter (quantized weights move fewer bytes),
        A and C move in the compute dtype, FLOPs run at the compute dtype's peak.
        """
        p = self.precision(dtype)
        flops, moved = gemm_flops(m, n, k), gemm_bytes(m, n, k, p.act_bytes, p.weight_bytes)
        eff = self.compute_efficiency(m, n, k) * self._dtype_scale(m, n, k, p.compute_dtype)
        t = roofline_s(flops, moved, self._peak(p.compute_dtype), self._bw, eff, self.memory_efficiency(), 0.0)
        t = np.maximum(t, self._weight_only_floor_s(flops, p))
        return np.where(t > 0, t + self.launch_s, 0.0)

    def grouped_gemm_s(self, tokens_per_expert, n: int, k: int, dtype: str = "bf16", working_set_bytes=None,
                       batch_tokens=None):
        """One grouped GEMM over the experts of a rank: sums over the last axis (experts).

        ``tokens_per_expert`` has shape ``(..., experts_on_rank)``. Each expert with tokens reads its
        (k x n) weight once; the launch overhead is paid once per group, not per expert.
        ``working_set_bytes`` is accepted for the protocol and unused (no cache model). On a device
        whose own kernels tile each expert's tokens (``hardware.device.expert_tile_tokens``), the
        rows they compute on average (the loads taken as expected counts of independent picks,
        ``grouped_eff.expected_padded_tokens``; tiles by ``batch_tokens``, default the routed rows)
        run at the dense efficiency; otherwise padding follows ``grouped_efficiency``.
        """
        t = np.asarray(tokens_per_expert, dtype=float)
        p = self.precision(dtype)
        moved = (gemm_bytes(t, n, k, p.act_bytes, p.weight_bytes) * (t > 0)).sum(axis=-1)
        mean = t.sum(axis=-1) / np.maximum((t > 0).sum(axis=-1), 1)  # tokens per busy expert
        scale = self._dtype_scale(mean, n, k, p.compute_dtype)
        dev = self.hw.device
        batch = t.sum(axis=-1) if batch_tokens is None else np.asarray(batch_tokens, dtype=float)
        tiles = expert_tiles(dev.expert_tile_tokens, dev.expert_matvec_tokens, batch)
        if tiles is None:
            flops = gemm_flops(t, n, k).sum(axis=-1)
            eff = self.grouped_efficiency(t, n, k, p.weight_only, tile_m=self.row_tile(t, p)) * scale
        else:
            flops = gemm_flops(expected_padded_tokens(t, batch, tiles), n, k).sum(axis=-1)
            eff = self.compute_efficiency(mean, n, k) * scale
        time = roofline_s(flops, moved, self._peak(p.compute_dtype), self._bw, eff, self.memory_efficiency(), 0.0)
        time = np.maximum(time, self._weight_only_floor_s(gemm_flops(t, n, k).sum(axis=-1), p))
        return np.where(time > 0, time + self.launch_s, 0.0)

    def grouped_loop_s(self, tokens_per_expert, n: int):
        """Beyond the GEMMs a loop implementation pays nothing on the datasheet: zeros per group."""
        t = np.asarray(tokens_per_expert, dtype=float)
        return np.zeros(t.shape[:-1])

    def grouped_efficiency(self, tokens_per_expert, n: int, k: int, weight_only: bool = False, tile_m=None):
        """Achieved fraction of peak of a grouped expert GEMM: the dense efficiency at its mean tokens
        per busy expert, times the share of its FLOPs not lost to tile padding
        (``grouped_eff.grouped_gemm_ratio`` per expert, FLOP-weighted; weight-only kernels pad to
        fewer rows, ``grouped_eff.tile_rows``; ``tile_m``: the kernel's own tile, ``CostModelBase.row_tile``)."""
        t = np.asarray(tokens_per_expert, dtype=float)
        busy = np.maximum((t > 0).sum(axis=-1), 1)
        tile = tile_rows(self.hw.device.mma_rows, weight_only) if tile_m is None else tile_m
        ratio = grouped_gemm_ratio(t, n, k, peak_flops=self._peak("bf16"), mem_bw=self._bw, tile_m=tile)
        useful = np.maximum(t.sum(axis=-1), 1e-30)
        return self.compute_efficiency(t.sum(axis=-1) / busy, n, k) * useful / np.maximum((t / ratio).sum(axis=-1), 1e-30)

    def moe_overhead_s(self, busy_experts, capacity: bool = False, assignments=0.0):
        """Host-side cost of one MoE layer beyond its kernels: 0 from the datasheet."""
        return np.zeros_like(np.asarray(busy_experts, dtype=float))

    def activation_s(self, out_elements, gated: bool, act_bytes: float):
        """The FFN activation writing ``out_elements`` (tokens x hidden): one memory stream reading
        2 (gated: silu(gate) * up) or 1 inputs and writing 1 output per element."""
        return self.memory_s(np.asarray(out_elements, dtype=float) * (3 if gated else 2) * act_bytes)

    def router_topk_s(self, tokens, n_experts: int, top_k: int):
        """Router after its GEMM (softmax, top-k, renormalise): one memory stream over the fp32 logits."""
        return self.memory_s(np.asarray(tokens, dtype=float) * n_experts * 4.0)

    def memory_s(self, nbytes):
        """A bandwidth-bound kernel moving ``nbytes`` (norms, activations, weight reads)."""
        return roofline_s(0.0, nbytes, self._peak("bf16"), self._bw, 1.0, self.memory_efficiency(), self.launch_s)
