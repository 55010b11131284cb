"""``CostModel``: the interface the engines call for seconds of GEMMs, expert GEMMs, attention,
memory traffic and collectives, and ``build_cost_model``, the one factory that picks its implementation.

Every method takes scalars or numpy arrays and returns seconds of the same shape. Two implementations:

- ``RooflineCostModel`` (``datasheet.py``): the datasheet roofline (``DeviceSpec`` efficiencies);
- ``ProfiledCostModel`` (``profiled.py``): a fitted calibration profile (``profile.py``).

Both share ``CostModelBase`` (``base.py``): precisions, links and collectives, attention plumbing.

A ``dtype`` argument is the weights' dtype (``model.dtype``); ``precision`` resolves it on this
device: weights are read at their bytes per parameter (quantization scales included), GEMM inputs,
outputs and the KV cache move in the compute dtype, and FLOPs run at the compute dtype's peak
(int8/int4, and fp8 without fp8 tensor cores, run weight-only in bf16/fp16).
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Protocol, runtime_checkable

from moesim.costmodel.datasheet import RooflineCostModel
from moesim.costmodel.profile import (
    Profile,
    check_device,
    default_profile_file,
    default_profile_for,
    load_profile,
)
from moesim.costmodel.profiled import ProfiledCostModel
from moesim.errors import InputError
from moesim.precision import Precision
from moesim.schemas import HardwareSpec
from moesim.schemas.hardware import DATASHEET


@runtime_checkable
class CostModel(Protocol):
    """Per-op timing for one hardware description (see the module docstring for the implementations)."""

    hw: HardwareSpec
    #: The calibration profile the efficiencies come from; None for the datasheet roofline.
    profile: Profile | None

    @property
    def basis(self) -> str:
        """Where the efficiencies come from: 'datasheet' or 'profile: <device> (<source>)'."""

    @property
    def launch_s(self) -> float:
        """Fixed cost per kernel, seconds."""

    @property
    def kernel_floor_s(self) -> float:
        """The part of ``launch_s`` the GPU spends (a CUDA graph keeps it); the rest is the CPU's launch."""

    def precision(self, dtype: str) -> Precision:
        """Bytes and compute dtype of weights stored as ``dtype`` on this device."""

    # ---------------------------------------------------------------- efficiencies
    def compute_efficiency(self, m, n: int, k: int):
        """Fraction of peak a GEMM of ``m`` tokens and an (k x n) weight reaches."""

    def memory_efficiency(self):
        """Fraction of peak bandwidth a streaming kernel reaches."""

    def grouped_efficiency(self, tokens_per_expert, n: int, k: int, weight_only: bool = False):
        """Fraction of peak a grouped expert GEMM reaches, from its mean tokens per busy expert
        (``weight_only``: its weights are dequantized in the kernel, which pads fewer rows)."""

    def attention_efficiency(self, q_tokens, kv_tokens=None, paged: bool = True, head_dim: int = 128,
                             causal: bool = True):
        """Fraction of peak attention reaches at ``q_tokens`` queries over ``kv_tokens`` keys, for a
        serving kernel over a paged KV cache (``paged``) or training's flash attention over contiguous
        Q/K/V (which depends on ``head_dim`` and the mask, ``costmodel.flash_attention``)."""

    # ---------------------------------------------------------------- kernels
    def gemm_s(self, m, n: int, k: int, dtype: str = "bf16"):
        """(m x k) @ (k x n): ``m`` is tokens, ``n``/``k`` weight dims (already divided by tp)."""

    def grouped_gemm_s(self, tokens_per_expert, n: int, k: int, dtype: str = "bf16", working_set_bytes=None,
                       batch_tokens=None):
        """One grouped GEMM over the experts of a rank (``tokens_per_expert``: ``(..., experts)``);
        ``batch_tokens``: the tokens of the batch it serves (``(...)``, default unknown), which some
        devices' kernels choose their tiles by (``hardware.device.expert_tile_tokens``)."""

    def grouped_loop_s(self, tokens_per_expert, n: int):
        """What a loop implementation of one grouped call pays beyond the GEMMs."""

    def moe_overhead_s(self, busy_experts, capacity: bool = False, assignments=0.0):
        """Host-side cost of one MoE layer beyond its kernels (``assignments``: token x expert pairs
        the layer's experts compute)."""

    def activation_s(self, out_elements, gated: bool, act_bytes: float):
        """The FFN activation writing ``out_elements`` (tokens x hidden)."""

    def router_topk_s(self, tokens, n_experts: int, top_k: int):
        """Softmax, top-k and renormalise after the router GEMM."""

    def memory_s(self, nbytes):
        """A bandwidth-bound kernel moving ``nbytes``."""

    def attention_s(self, q_tokens, kv_tokens, n_heads: int, head_dim: int, kv_heads: int,
                    dtype: str = "bf16", causal: bool = True):
        """Attention core per sequence (one launch each)."""

    def attention_batch_s(self, q_tokens, kv_tokens, n_heads: int, head_dim: int, kv_heads: int,
                          dtype: str = "bf16", causal: bool = True, kv_bytes: float | None = None,
                          paged: bool = True):
        """One batched attention kernel over sequences on the last axis (one launch); ``kv_bytes``: bytes
        per KV element (default ``dtype``'s); ``paged``: serving's paged KV cache, else training's."""

    def attention_seq_s(self, q_tokens, kv_tokens, n_heads: int, head_dim: int, kv_heads: int,
                        dtype: str = "bf16", causal: bool = True, kv_bytes: float | None = None):
        """Per-sequence seconds of the batched kernel without its launch (None: not separable)."""

    @property
    def attention_launch_s(self) -> float:
        """Fixed cost of one attention kernel launch, seconds."""

    # ---------------------------------------------------------------- collectives
    def allreduce_s(self, nbytes, n: int, stride: int = 1, algorithm: str = "nccl"):
        """All-reduce over ``n`` ranks spaced ``stride`` apart: NCCL's ring, or (``custom``) an
        inference engine's one-shot/two-shot kernels inside a node."""

    def reduce_scatter_s(self, nbytes, n: int, stride: int = 1):
        """Ring reduce-scatter over ``n`` ranks."""

    def allgather_s(self, nbytes, n: int, stride: int = 1):
        """Ring all-gather over ``n`` ranks."""

    def p2p_s(self, nbytes, intra: bool):
        """A pipeline send/recv of ``nbytes``."""

    def fp8_cast_s(self, nbytes, kernels):
        """FP8 training's cast kernels moving ``nbytes`` in ``kernels`` launches."""

    def alltoall_s(self, bytes_to_peers, ep: int, tp: int, algorithm: str = "flat", top_k: int = 1,
                   n_experts: int = 0, max_nodes: int | None = None):
        """An EP all-to-all where each rank sends ``bytes_to_peers`` bytes to its peers (hierarchical:
        a token crosses the NIC once per distinct remote node of its ``top_k`` experts)."""

    def alltoall_split(self, bytes_to_peers, ep: int, tp: int, algorithm: str = "flat", top_k: int = 1,
                       n_experts: int = 0, max_nodes: int | None = None) -> tuple[float, float]:
        """(NVLink bytes, NIC bytes) one rank sends in an all-to-all."""


def cost_model(hw: HardwareSpec, profile: Profile | None = None) -> CostModel:
    """The cost model for ``hw`` with exactly this ``profile`` (None: the datasheet roofline).

    No lookup and no device check: use ``build_cost_model`` for a scenario's hardware.
    """
    return RooflineCostModel(hw) if profile is None else ProfiledCostModel(hw, profile)


def build_cost_model(hw: HardwareSpec, force_profile: bool | None = None) -> CostModel:
    """The cost model for ``hw``.

    Order: the profile ``hw.profile`` names (its device must match ``hw.device.name`` unless
    ``force_profile``, ``hw.force_profile`` or the environment variable ``MOESIM_FORCE_PROFILE=1``);
    else the device's shipped default (``hw.device.default_profile``, or for devices without one a
    match on the device name), rebased on the device's datasheet peaks; else the datasheet.
    """
    if force_profile is None:
        force_profile = hw.force_profile or os.environ.get("MOESIM_FORCE_PROFILE", "").strip().lower() in {"1", "true", "yes"}
    if hw.profile is not None:
        profile = _load_cached(Path(hw.profile))
        check_device(profile, hw.device.name, force=force_profile)
        # its tables replace any expert tiles, and a datasheet preset's own efficiencies (an Apple preset's
        # llama.cpp fit) are the preset's, not fields a user set: neither is checked
        return ProfiledCostModel(hw, profile)
    return _datasheet_fields_checked(_tiles_checked(cost_model(hw, default_profile_for(hw.device, hw.node.intra_bw_gbps))))


#: Device fields only the datasheet roofline reads: a profile's measured tables hold their own.
DATASHEET_ONLY_FIELDS = ("compute_efficiency", "memory_efficiency", "launch_overhead_us")


def _datasheet_fields_checked(cm: CostModel) -> CostModel:
    """``cm``, unless a shipped profile prices the device and the scenario set a field only the datasheet
    roofline reads (:data:`DATASHEET_ONLY_FIELDS`; no preset a shipped profile prices sets them) to another
    value than its default: a one-line error naming it, rather than a run that silently ignores it."""
    d = cm.hw.device
    # set away from its default (a model_dump round trip names every field, at its default)
    named = [f for f in DATASHEET_ONLY_FIELDS if getattr(d, f) != type(d).model_fields[f].default]
    if named and not isinstance(cm, RooflineCostModel):
        raise InputError(f"hardware.device.{named[0]}: only the datasheet cost model reads it; this device is priced "
                         f"by the shipped profile {default_profile_file(d)}, whose measured tables hold their own "
                         "(set hardware.device.default_profile: datasheet to price it with this field, or remove it)")
    return cm


def cost_model_text(hw: HardwareSpec) -> str:
    """Which cost model :func:`build_cost_model` prices ``hw`` with, in words (``moesim check``'s
    ``cost_model``): a calibration profile as measured, a shipped profile rebased on the device's datasheet
    (named by ``default_profile``, or matched on the device's name), or the datasheet roofline."""
    if hw.profile is not None:
        return f"calibration profile {Path(hw.profile).name} (hardware.profile: its measured tables as fitted)"
    d = hw.device
    fname = default_profile_file(d)
    if fname is None or fname == DATASHEET:
        why = ("hardware.device.default_profile: datasheet" if fname == DATASHEET
               else f"no shipped profile matches the device name {d.name!r}")
        return f"datasheet roofline ({why})"
    how = "hardware.device.default_profile" if d.default_profile is not None else "matched on the device name"
    return f"shipped profile {fname} ({how}), rebased on this device's datasheet peaks and links"


def _tiles_checked(cm: CostModel) -> CostModel:
    """``cm``, unless the device names its own expert tiles and its default profile prices it (the
    measured grouped tables hold their kernels' tiles already, so the field could never apply): then
    a one-line error naming the field. A user's calibration profile (``hardware.profile``) may
    replace a preset's tiles: it measured the kernels the user runs."""
    if cm.hw.device.expert_tile_tokens is not None and not isinstance(cm, RooflineCostModel):
        raise InputError("hardware.device.expert_tile_tokens: only the datasheet cost model prices a device's own "
                         "expert tiles; this device is priced by a calibration profile (set "
                         "hardware.device.default_profile: datasheet, or remove the field)")
    return cm


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
