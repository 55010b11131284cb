"""``ProfiledCostModel``: kernels priced from a fitted calibration profile (``profile.py``).

The peaks are the profile's ``reference``; GEMM efficiency is a table over tokens and weight size;
grouped expert GEMMs pay one launch plus a cost per busy expert; attention, elementwise kernels,
the MoE layer's host overhead and collectives use their measured terms where the profile has them,
and the datasheet's where it has not.

A profile's tables time weights at their compute dtype's width: narrower weights (weight-only int8/int4/mxfp4,
fp8 without fp8 tensor cores; MXFP4 weights under FP8 math) scale that time by ``_narrow_weight_scale``. A profile rebased on a sibling device
(``measured_reference`` set) keeps each kernel's measured fraction of the roofline
(``_sibling_scale``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from moesim.costmodel.base import CostModelBase
from moesim.costmodel.flash_attention import efficiency as flash_efficiency
from moesim.costmodel.fp4 import fp4_gemm_s, fp4_grouped_gemm_s
from moesim.costmodel.grouped_eff import padded_tokens
from moesim.costmodel.profile import LinkSpec, Profile
from moesim.costmodel.roofline import gemm_bytes, gemm_flops, roofline_ratio, roofline_s
from moesim.costmodel.sibling_gemm import gemm_ratio


@dataclass(frozen=True)
class ProfiledCostModel(CostModelBase):
    """Roofline with a calibration profile's peaks, efficiency tables and measured overheads."""

    profile: Profile = field(hash=False)

    def __post_init__(self) -> None:
        if not isinstance(self.profile, Profile):
            raise TypeError("ProfiledCostModel needs a Profile; use RooflineCostModel(hw) for the datasheet")

    @property
    def basis(self) -> str:
        """Where the efficiencies come from: 'profile: <device> (<source>)'."""
        return f"profile: {self.profile.device} ({self.profile.source})"

    # ------------------------------------------------------------ device terms
    @property
    def launch_s(self) -> float:
        """Fixed cost per kernel, seconds."""
        return self.profile.launch_overhead_us * 1e-6

    @property
    def kernel_floor_s(self) -> float:
        """All of ``launch_s``: a profile's fixed cost per kernel is the intercept of measured kernel
        durations (Vidur's Kineto traces, or back-to-back calls timed on the device), GPU time that a
        CUDA graph does not remove."""
        return self.launch_s

    def _peak(self, dtype: str) -> float:
        return self.profile.reference.peak_flops(dtype) * self.hw.device.sustained_fraction(dtype)

    @property
    def _bw(self) -> float:
        return self.profile.reference.mem_bw_gbps * 1e9

    def compute_efficiency(self, m, n: int, k: int):
        """Fraction of peak a GEMM of this shape reaches: the profile's table."""
        return self.profile.gemm.lookup(m, float(n) * float(k))

    def memory_efficiency(self):
        """Fraction of reference bandwidth a streaming kernel reaches."""
        return self.profile.memory_efficiency

    def _fp4_memory_efficiency(self) -> float:
        """Fraction of the bandwidth an FP4 GEMM streams its weights at: the profile's fastest
        weight-streaming GEMMs (``gemm_memory_efficiency``), else its streaming kernels'."""
        return self.profile.gemm_memory_efficiency or self.profile.memory_efficiency

    def _gemm_memory_efficiency(self):
        """Memory term of a GEMM. The table already holds the measured weight-streaming speed, so its
        memory term is only a floor (``gemm_memory_efficiency``), or absent (inf) when unset."""
        return self.profile.gemm_memory_efficiency or np.inf

    def _measured_link(self, collective: str, intra: bool, ranks: int | None = None) -> LinkSpec | None:
        coll = getattr(self.profile.collectives, collective, None) if self.profile.collectives else None
        return coll.link(intra, ranks) if coll else None

    # ------------------------------------------------------------ GEMMs
    def gemm_s(self, m, n: int, k: int, dtype: str = "bf16"):
        """(m x k) @ (k x n): ``m`` is tokens, ``n``/``k`` weight dims (already divided by tp).

        The weight is read at ``dtype``'s bytes per parameter, A and C move in the compute dtype.
        """
        p = self.precision(dtype)
        dtype = p.compute_dtype
        flops, moved = gemm_flops(m, n, k), gemm_bytes(m, n, k, p.act_bytes, p.weight_bytes)
        if dtype == "fp4":  # NVFP4 on Blackwell: its own fitted kernel model, not the BF16 table
            return fp4_gemm_s(flops, moved, self._peak("fp4"), self._bw, self._fp4_memory_efficiency())
        eff = self.compute_efficiency(m, n, k) * self._dtype_scale(m, n, k, dtype)
        full = gemm_bytes(m, n, k, p.act_bytes) if p.narrow_weights else moved
        scale = self._narrow_weight_scale(flops, moved, full, dtype) if p.narrow_weights else 1.0
        ref = self.profile.measured_reference
        if ref is None:
            t = roofline_s(flops, full, self._peak(dtype), self._bw, eff, self._gemm_memory_efficiency(), 0.0)
            return np.where((flops > 0) | (full > 0), t * scale + self.launch_s, 0.0)
        t = roofline_s(flops, full, ref.peak_flops(dtype), ref.mem_bw_gbps * 1e9, eff,
                       self._gemm_memory_efficiency(), 0.0)
        t = t * self._sibling_scale(flops, full, dtype) / self._sibling_gemm_ratio(flops, full, dtype)
        t = np.maximum(t * scale, self._weight_only_floor_s(flops, p))
        return np.where(t > 0, t + self.launch_s, 0.0)

    def _narrow_weight_scale(self, flops, moved, full, compute_dtype: str):
        """Roofline time with the weights at their stored bytes (``moved``) over the same GEMM with weights at
        the compute dtype's width (``full``, what the tables time): <= 1.

        A measured GEMM keeps its fraction of the roofline when only its weight reads shrink:
        bandwidth-bound shapes (decode) speed up by the bytes saved, compute-bound ones not at all.
        """
        peak = self._peak(compute_dtype)
        return roofline_ratio(flops, moved, peak, self._bw, full, peak, self._bw)

    def _sibling_scale(self, flops, moved, dtype: str):
        """This device's roofline time over the measured sibling's (1 without a rebased profile).

        A profile rebased on a sibling (A100 40GB from 80GB, H200 from H100) keeps each kernel's
        measured fraction of the roofline, so memory-bound kernels speed up with bandwidth and
        compute-bound ones with peak FLOP/s. A device of another architecture (B200) also scales a
        GEMM's fraction by its measured ratio (``sibling_gemm.gemm_ratio``, applied by the callers).
        """
        ref = self.profile.measured_reference
        if ref is None:
            return 1.0
        return roofline_ratio(flops, moved, self._peak(dtype), self._bw,
                              moved, ref.peak_flops(dtype), ref.mem_bw_gbps * 1e9)

    def _sibling_gemm_ratio(self, flops, moved, dtype: str):
        """This device's measured GEMM fraction over the profile device's (``sibling_gemm.gemm_ratio``,
        1 without one) for GEMMs of ``flops`` moving ``moved`` bytes, applied to what is compute-bound:
        raised to ``min(1, intensity / ridge)`` on this device's roofline, so a GEMM bound by reading
        its weights (decode) keeps the plain rebase (the ratio is measured on compute-heavy shapes)."""
        pair = self.profile.sibling_gemm_ratio
        if pair is None:
            return 1.0
        flops = np.asarray(flops, dtype=float)
        ridge = self._peak(dtype) / self._bw
        share = np.clip(flops / np.maximum(np.asarray(moved, dtype=float) * ridge, 1e-30), 0.0, 1.0)
        return gemm_ratio(flops, pair) ** share

    def grouped_gemm_s(self, tokens_per_expert, n: int, k: int, dtype: str = "bf16", working_set_bytes=None,
                       batch_tokens=None):
        """One grouped GEMM over the experts of a rank: sums over the last axis (experts).

        Per-expert roofline summed, one launch, a cost per busy expert (``grouped_loop_s``). Per-expert
        efficiency is the grouped (cold-weight) table, blended towards the dense (hot) table when the
        busy experts' weights fit in the profile's cache; a profile with only a dense table (the
        shipped GPU ones) reads it at the whole call's shape (every busy expert's weights side by
        side) at the rows the kernel computes, each expert's padded to its tile
        (``grouped_eff.padded_tokens``; DeepGEMM's tables, ``moesim/data/grouped_gemm.csv``).
        ``working_set_bytes``: bytes the surrounding layer touches per call, which decides whether
        expert weights stay in cache; default this call's busy weights.
        """
        t = self.kernel_rows(tokens_per_expert)
        g = self.profile.grouped
        p = self.precision(dtype)
        dtype = p.compute_dtype
        if dtype == "fp4":  # the grouped NVFP4 kernel model measured on a Blackwell MoE layer (costmodel.fp4)
            return fp4_grouped_gemm_s(t, n, k, self._peak("fp4"), self._bw, self._fp4_memory_efficiency(),
                                      p.act_bytes, p.weight_bytes)
        w, m = float(n) * float(k), np.maximum(t, 1.0)
        busy = (t > 0).sum(axis=-1)
        ref = self.profile.measured_reference
        peak, bw = (ref.peak_flops(dtype), ref.mem_bw_gbps * 1e9) if ref else (self._peak(dtype), self._bw)
        # Without a grouped table: a grouped kernel runs every busy expert's tiles side by side, as a
        # dense GEMM with the experts' weights next to each other (m x busy*n: the same tiles, weight
        # bytes and FLOPs) would; read per expert, the dense table would price each narrow expert as
        # a kernel of its own, too small to fill the GPU, and pay its latency once per expert.
        # Checked on published fused-MoE kernel timings (tests/test_fused_moe_tables.py).
        call_w = w if g is not None else w * np.maximum(busy, 1)[..., None]
        if g is not None:
            eff = self.profile.gemm.lookup(m, call_w) * self._dtype_scale(m, n, k, dtype)
            ws = busy * w * p.weight_bytes if working_set_bytes is None else working_set_bytes
            cold = np.asarray(self.profile.cold_fraction(ws))[..., None]
            eff = eff ** (1.0 - cold) * g.efficiency.lookup(m, w) ** cold
        else:  # a dense table: a grouped kernel pads each expert's rows to its tile (grouped_eff)
            # It computes ``pad(t)`` rows as a dense GEMM of that many rows would, where a dense
            # kernel pads nothing: the table read there, its FLOPs credited to the ``t`` real rows
            # (``t / pad(t)``). Read at the real rows, the table held its own kernel's padding
            # already and a padding ratio charged it again (a band's time fell ~5 % as rows filled it).
            rows = padded_tokens(m, self.row_tile(t, p))
            eff = self.profile.gemm.lookup(rows, call_w) * self._dtype_scale(rows, n, k, dtype) * m / rows
        flops, moved = gemm_flops(t, n, k), gemm_bytes(t, n, k, p.act_bytes, p.weight_bytes)
        full = gemm_bytes(t, n, k, p.act_bytes) if p.narrow_weights else moved
        per_expert = roofline_s(flops, full, peak, bw, eff, self._gemm_memory_efficiency(), 0.0) * (t > 0)  # idle: no read
        # a grouped kernel is one call: its size on another architecture is the experts' FLOPs together
        ratio = self._sibling_gemm_ratio(flops.sum(axis=-1, keepdims=True),
                                         (full * (t > 0)).sum(axis=-1, keepdims=True), dtype)
        per_expert = per_expert * self._sibling_scale(flops, full, dtype) / ratio
        if p.narrow_weights:
            per_expert = np.maximum(per_expert * self._narrow_weight_scale(flops, moved, full, dtype),
                                    self._weight_only_floor_s(flops, p))
        launch_s = (g.launch_overhead_us if g else self.profile.launch_overhead_us) * 1e-6
        fixed_s = launch_s + self.grouped_loop_s(t, n)
        return np.where(busy > 0, per_expert.sum(axis=-1) + fixed_s, 0.0)

    def kernel_rows(self, tokens_per_expert) -> np.ndarray:
        """Rows an expert GEMM kernel computes for each expert's tokens: padded to the profile's
        measured row tile (``gemm_rows``, local calibrations), since routed per-expert counts are
        irregular and the GEMM tables are measured where the tile divides the rows; unchanged
        without one (the shipped GPU profiles)."""
        t = np.asarray(tokens_per_expert, dtype=float)
        tile = self.profile.gemm_rows
        if tile is None or tile.rows <= 1:
            return t
        return np.where(t > 0, tile.padded(t), 0.0)

    def grouped_loop_s(self, tokens_per_expert, n: int):
        """What a loop implementation of one grouped call pays beyond the GEMMs: a fixed cost per busy
        expert and the copy of each expert's ``tokens x n`` output into place (0 without ``grouped``)."""
        g = self.profile.grouped
        t = self.kernel_rows(tokens_per_expert)
        if g is None:
            return np.zeros(t.shape[:-1])
        return ((t > 0).sum(axis=-1) * g.per_expert_overhead_us * 1e-6
                + t.sum(axis=-1) * n * g.copy_ns_per_element * 1e-9)

    def grouped_efficiency(self, tokens_per_expert, n: int, k: int, weight_only: bool = False):
        """Achieved fraction of peak of a grouped expert GEMM, from its mean tokens per busy expert
        (``weight_only`` is for the protocol: the measured tables already hold their kernels' tiles)."""
        t = np.asarray(tokens_per_expert, dtype=float)
        busy = np.maximum((t > 0).sum(axis=-1), 1)
        mean_tokens = t.sum(axis=-1) / busy
        if self.profile.grouped is not None:
            return self.profile.grouped.efficiency.lookup(np.maximum(mean_tokens, 1.0), float(n) * float(k))
        return self.compute_efficiency(mean_tokens, n, k)

    # ------------------------------------------------------------ other kernels
    def moe_overhead_s(self, busy_experts, capacity: bool = False, assignments=0.0):
        """Host-side cost of one MoE layer beyond its kernels (0 where the profile has none):
        fixed, per busy expert, per computed assignment, and more with a capacity."""
        busy = np.asarray(busy_experts, dtype=float)
        o = self.profile.moe_overhead
        if o is None:
            return np.zeros_like(busy)
        n = np.asarray(assignments, dtype=float)
        return (o.fixed_us + o.per_busy_expert_us * busy + o.per_assignment_us * n
                + (o.capacity_us if capacity else 0.0)) * 1e-6

    def activation_s(self, out_elements, gated: bool, act_bytes: float):
        """The FFN activation writing ``out_elements`` (tokens x hidden): silu(gate) * up when gated.

        A measured activation curve prices it by elements (on a CPU the exp, not the bytes, sets the
        pace; a non-gated GELU is priced like the gated kernel); otherwise it is one memory stream
        reading 2 (gated) or 1 inputs and writing 1 output per element.
        """
        e = self.profile.elementwise
        if e is not None and e.activation is not None:
            return e.activation.seconds(out_elements)
        return self.memory_s(np.asarray(out_elements, dtype=float) * (3 if gated else 2) * act_bytes)

    def router_topk_s(self, tokens, n_experts: int, top_k: int):
        """Router after its GEMM over ``tokens`` x ``n_experts`` fp32 logits: softmax, top-k, renormalise.

        Measured table when the profile has one; otherwise one memory stream over the logits.
        """
        e = self.profile.elementwise
        if e is not None and e.router is not None:
            return e.router.seconds(tokens, n_experts, top_k)
        return self.memory_s(np.asarray(tokens, dtype=float) * n_experts * 4.0)

    def memory_s(self, nbytes):
        """A bandwidth-bound kernel moving ``nbytes`` (norms, activations, weight reads).

        With a cache (``memory_curve``) the bandwidth depends on the bytes moved (the working set).
        """
        eff = self.profile.streaming_efficiency(nbytes)
        return roofline_s(0.0, nbytes, self._peak("bf16"), self._bw, 1.0, eff, self.launch_s)

    # ------------------------------------------------------------ attention terms
    def attention_efficiency(self, q_tokens, kv_tokens=None, paged: bool = True, head_dim: int = 128,
                             causal: bool = True):
        """Fraction of peak attention reaches at ``q_tokens`` queries over ``kv_tokens`` keys (default q).

        Training (``paged`` False) runs flash attention over contiguous Q/K/V: the published kernel
        table the profile names (``flash_attention``, see ``costmodel.flash_attention``), else a
        contiguous-kernel prefill table, else the datasheet's rate (``CostModelBase``). A table
        measured on a serving engine's paged-KV kernel (``attention.kernel: paged``, Vidur's vLLM
        profiles) prices serving only; without one, serving prompts take the flash kernel table too.
        """
        kv = q_tokens if kv_tokens is None else kv_tokens
        a = self.profile.attention
        # Serving prompts run the same flash kernel when no paged-KV table was measured: pricing them
        # at the datasheet's flat rate ignores what the kernel table says about head width and length.
        if self.profile.flash_attention is not None and (not paged or a is None):
            return flash_efficiency(self.profile.flash_attention, q_tokens, kv, head_dim, causal)
        if a is None or (not paged and a.kernel == "paged"):
            return super().attention_efficiency(q_tokens, kv_tokens, paged, head_dim, causal)
        return a.prefill_efficiency.lookup(np.maximum(q_tokens, 1.0), np.maximum(kv, 1.0))

    def _attention_memory_efficiency(self, working_set_bytes):
        """The profile's decode KV-read efficiency; with a cache-aware profile (``memory_curve``, CPUs)
        times the curve's rate for the kernel's working set (a KV outgrowing the cache reads slower)."""
        a = self.profile.attention
        if a is None:
            return self.memory_efficiency()
        eff_mem = a.decode_memory_efficiency
        if self.profile.memory_curve is not None:
            eff_mem = eff_mem * self.profile.streaming_efficiency(working_set_bytes)
        return eff_mem

    @property
    def _attention_batch_coupled(self) -> bool:
        return self.profile.attention is not None and self.profile.memory_curve is not None

    @property
    def _attention_launch_overhead_s(self) -> float:
        a = self.profile.attention
        if a:
            return a.launch_overhead_us * 1e-6
        fixed = self.profile.attention_fixed_us
        return self.launch_s if fixed is None else fixed * 1e-6
