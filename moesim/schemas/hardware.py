"""The hardware section: one device type, how devices form nodes, how nodes form a cluster."""

from __future__ import annotations

from functools import cache
from importlib import resources
from pathlib import Path
from typing import Literal

from pydantic import Field, PositiveFloat, PositiveInt, model_validator

from moesim.schemas._base import (
    BITS_PER_WEIGHT_WHY,
    BOUND_REASON,
    PEAK_TFLOPS_WHY,
    RING_BUSBW_WHY,
    PeakTFLOPsTable,
    RingBusbwTable,
    Strict,
    WeightBitsTable,
    bounded,
)


def peak_flops_of(peak_tflops: dict[str, float], dtype: str) -> float:
    """FLOP/s for ``dtype`` from a TFLOP/s-per-dtype table, falling back to bf16, fp16, then fp32."""
    for key in (dtype, "bf16", "fp16", "fp32"):
        if key in peak_tflops:
            return peak_tflops[key] * 1e12
    return next(iter(peak_tflops.values())) * 1e12


#: Bits per weight, quantization scales included, of group-wise quantization on CUDA devices (the
#: ``weight_bits`` default): AWQ/GPTQ and TensorRT-LLM's weight-only int4/int8 keep one fp16 scale
#: per group of 128 weights (int4: 4 + 16/128 = 4.125; int8: 8 + 16/128 = 8.125); FP8 has one
#: scale per tensor (8). AWQ: Lin et al. 2023, group size 128 (llm-awq's default q_group_size).
#: MXFP4 (OCP Microscaling spec v1.0): blocks of 32 FP4 (E2M1) weights share one 8-bit E8M0 scale,
#: 4 + 8/32 = 4.25 bits. NVFP4 (NVIDIA, "Introducing NVFP4 for efficient and accurate low-precision
#: inference", developer blog 2025): blocks of 16 FP4 (E2M1) weights share one FP8 (E4M3) scale,
#: 4 + 8/16 = 4.5 bits (plus one fp32 scale per tensor).

GROUP128_WEIGHT_BITS: dict[str, float] = {"int8": 8.125, "int4": 4.125, "fp8": 8.0, "mxfp4": 4.25, "nvfp4": 4.5}
#: Dtypes a device can have a math peak for (``peak_tflops`` keys), in the order they are listed.
COMPUTE_DTYPES = ("fp32", "bf16", "fp16", "fp8", "fp4")
#: ``default_profile`` value for a device with no shipped profile: the datasheet roofline.
DATASHEET = "datasheet"


@cache
def shipped_profile_names() -> tuple[str, ...]:
    """File names of the calibration profiles shipped in ``moesim/data/profiles``."""
    folder = resources.files("moesim").joinpath("data", "profiles")
    return tuple(sorted(p.name for p in folder.iterdir() if p.name.endswith(".yaml")))


class DeviceSpec(Strict):
    """One accelerator (or the GPU of an Apple SoC). Bandwidths are per direction."""

    name: str = Field(description=(
        "Device name, e.g. 'NVIDIA H100 SXM5 80GB'. Not only a label: words in it pick the platform ('Apple': Metal "
        "host costs and macOS's wired-memory limit; 'CPU', 'Xeon', 'EPYC': a CPU; 'TPU': a compiled step; else "
        "CUDA), the GPU family of measured attention rates (H100, H200, B200, ...) and, without default_profile, "
        "the shipped profile that prices it; `moesim check` prints the platform and cost model it picked."))
    peak_tflops: PeakTFLOPsTable = Field(json_schema_extra={BOUND_REASON: PEAK_TFLOPS_WHY},
        description="Dense peak TFLOP/s per dtype (keys fp32, bf16, fp16, fp8; a missing dtype falls back to bf16, then fp32)."
    )
    mem_bw_gbps: PositiveFloat = bounded(ge=1e-3, le=1e8, why="100 PB/s: 5x a wafer-scale engine's on-chip SRAM (21 PB/s); HBM3e is ~8 TB/s", description="Memory bandwidth, GB/s (1e9 bytes/s).")
    mem_gib: PositiveFloat = bounded(le=1 << 20, why="1 PiB per device: ~3500x the largest HBM (288 GiB)", description="Memory capacity, GiB.")
    power_w: PositiveFloat = bounded(le=1e6, why="1 MW per device: ~40x a wafer-scale system (23 kW)", description="Board power at load, W (for energy per token).")
    usd_per_hour: float = bounded(ge=0, le=1e5, why="$100k per device-hour: ~30,000x an H100's rent", description=(
        "Price per device-hour, USD: the rent of a cloud device; for hardware you own, its purchase price spread over "
        "its life (the desktop and Mac presets: the machine over 3 years, around the clock)."))
    compute_efficiency: float = Field(0.7, ge=1e-3, le=1, description="Fraction of peak FLOP/s large GEMMs reach (datasheet roofline).")
    memory_efficiency: float = Field(0.8, ge=1e-3, le=1, description="Fraction of peak memory bandwidth streaming kernels reach.")
    launch_overhead_us: float = bounded(5.0, ge=0, le=1e6, why="1 s per kernel; real launches take 2-20 us", description="Fixed cost per kernel, microseconds.")
    weight_bits: WeightBitsTable = Field(
        dict(GROUP128_WEIGHT_BITS), json_schema_extra={BOUND_REASON: BITS_PER_WEIGHT_WHY},
        description="Bits per weight, quantization scales included, per quantized model.dtype (keys int8, int4, fp8, mxfp4, nvfp4; "
        "a missing key takes the default): CUDA group-128 scales (int8 8.125, int4 4.125, fp8 8), MXFP4's 32-weight "
        "blocks with an 8-bit scale (4.25), NVFP4's 16-weight blocks with an FP8 scale (4.5); the Apple "
        "presets use llama.cpp's Q8_0/Q4_0 blocks of 32 (8.5, 4.5).")
    sm_count: PositiveInt | None = bounded(
        None, le=4096, why="4096 SMs: ~28x a B200's 148", description="Streaming multiprocessors (CUDA devices). "
        "Communication kernels that run on SMs (DeepEP's normal kernels: 20) take their share of them from "
        "the compute they overlap with; null: not modelled.")
    mma_rows: PositiveInt = bounded(
        64, le=256, why="256 rows: twice the largest CTA tile grouped kernels use (DeepGEMM, CUTLASS: 128)",
        description="Rows a grouped expert kernel computes each expert's tokens in (its padding granularity; "
        "moesim/costmodel/grouped_eff.py): 64 on Hopper and Blackwell (a WGMMA warpgroup, as DeepGEMM's published "
        "timings show), 16 on Ampere (mma.sync m16n8k16 is its only tensor-core MMA, and Triton fused-MoE kernels "
        "take 16-row blocks at small batches).")
    expert_tile_tokens: PositiveInt | None = bounded(
        None, le=1024, why="1024 tokens: 8x the largest token tile a grouped expert kernel uses (llama.cpp CUDA: 128)",
        description="Datasheet cost model only (a calibration profile's measured tables replace it; on a device "
        "priced by its default profile it is an error): tokens a matrix-matrix grouped expert kernel computes each expert's "
        "rows in, for every weight format; each busy expert's rows round up to a multiple of min(this, the "
        "batch's tokens rounded up to 8) (llama.cpp: 32 in Metal's mul_mm_id, 128 in CUDA's MMQ, whose tile "
        "follows the batch). null: mma_rows (moesim/costmodel/grouped_eff.py).")
    expert_matvec_tokens: int = bounded(
        0, ge=0, le=1 << 16, why="65536 tokens: a whole prompt batch; beyond it no engine keeps mat-vec kernels",
        description="With expert_tile_tokens: batches of at most this many tokens run the experts as "
        "matrix-vector kernels, unpadded (llama.cpp: 31 on Metal, below ne21_mm_id_min = 32; 8 on CUDA, "
        "MMVQ_MAX_BATCH_SIZE).")
    weight_only_peak_fraction: float | None = Field(
        None, gt=0, le=1,
        description="Fraction of the 16-bit dense peak that 4-bit weight-only GEMMs (int4, mxfp4, nvfp4 weights "
        "converted to 16 bits in the kernel's main loop) reach at most, however many tokens they multiply: the "
        "conversion instructions, not the tensor cores or memory, bound them (moesim/costmodel/weight_only.py). "
        "Hopper presets: 0.257 (an H100's W4A16 MoE GEMMs measured at 254 TFLOP/s); A100 presets: 0.453 (Marlin's "
        "141 TFLOP/s plateau). null: no such bound.")
    attention_rate_scale: float = bounded(
        1.0, gt=0, le=4, why="4x: a softmax unit four times faster; Blackwell Ultra's doubling of the exponentials "
        "gives 1.125", description="Attention kernels' fraction of the 16-bit peak on this device over what the cost "
        "model's table gives (capped at the peak; memory-bound decode does not move): a device whose softmax "
        "exponentials run faster at the same tensor peak. gb300-nvl72: 1.125, cuDNN's SDPA on a GB300 over a GB200 "
        "(moesim/costmodel/attention_rate.py). 1: the table as it is.")
    sustained_compute_fraction: float = Field(
        1.0, gt=0, le=1, description="Fraction of their benchmarked FLOP/s that compute-bound kernels keep when the "
        "device computes back to back at its power limit (its SM clocks held down), as every simulated step does: "
        "it multiplies the compute peak the cost model's kernels reach; memory-bound kernels keep their bandwidth "
        "(moesim/costmodel/sustained.py). b200: 0.853, FlashAttention-4 on a B200 falling from 1,450 to 1,237 TFLOP/s "
        "as its clock drops from 1,965 to ~1,580 MHz at 1,000 W (FlashInfer PR #2899); gb200-nvl72: the same, as "
        "the same training runs 1.01-1.05x faster on a GB200 than on a B200. 1: not measured, or no throttling "
        "(gb300-nvl72: runs 1.19-1.22x a GB200's at the same peaks).")
    sustained_fp4_fraction: float | None = Field(
        None, gt=0, le=1, description="As sustained_compute_fraction, for GEMMs on the FP4 tensor cores alone (NVFP4 models; not MXFP4 "
        "experts on MXFP8 activations, which compute in FP8): a part whose "
        "FP4 tensor cores can draw more than its power limit where its 16- and 8-bit ones cannot. gb300-nvl72: 0.664, "
        "b300: 0.603, each its Blackwell twin's sustained FP4 rate scaled by their power limits (1,400 / 1,200 W, "
        "1,100 / 1,000 W) over its own 15 or 14 PFLOP/s peak (moesim/costmodel/sustained.py). null: "
        "sustained_compute_fraction.")
    gpu_wired_limit_gib: float | None = bounded(
        None, gt=0, le=1 << 20, why="as mem_gib, which it may not exceed either",
        description="Apple silicon: the unified memory macOS lets the GPU wire (Metal's recommendedMaxWorkingSetSize), which training's tensors and a serving engine's budget must fit in. null: macOS's "
        "default, 2/3 of mem_gib up to 36 GiB and 3/4 above, as llama.cpp's Metal logs read it on 16, 32, 64 and 96 GB "
        "Macs (moesim/presets/apple_metal.py); `sudo sysctl iogpu.wired_limit_mb=N` raises it to N/1024. Ignored on "
        "other devices.")
    fp8_split_accumulation: bool = Field(
        True, description="FP8 training: the backward GEMMs (input and weight gradients) run with split accumulation, "
        "their partial sums promoted to FP32 every few MMAs, at SPLIT_ACCUMULATION_SLOWDOWN (1.15x) their forward-style "
        "time, as Transformer Engine asks on Hopper and Ada, whose FP8 tensor cores accumulate in reduced precision "
        "(moesim/costmodel/fp8.py). false: Blackwell (b200, gb200-nvl72, b300, gb300-nvl72), whose tensor cores "
        "accumulate FP8 products in FP32 and have no such mode (cuBLASLt has no fast-accumulation switch on sm100: "
        "NVIDIA/TransformerEngine PR #2748 review, 2026-03-11), so every FP8 GEMM runs at one speed.")
    fp8_non_tn_gemm: bool = Field(
        False, description="FP8 training: the device's FP8 GEMMs take their operands in any layout, so the "
        "tensor-scaled recipes (plan.fp8_recipe delayed, current) write no transposed FP8 copies of the input, weight "
        "and output gradient for the backward (Transformer Engine makes none where is_non_tn_fp8_gemm_supported(): "
        "compute capability 10.x-11.x and 13+). true on every Blackwell data-centre preset; false (Hopper, Ada, "
        "sm_120): each cast also writes the transpose a TN-only GEMM needs. MXFP8 quantizes along both axes either way.")
    default_profile: str | None = Field(
        None, description="Shipped calibration profile used when hardware.profile is unset: a file name in "
        "moesim/data/profiles (a100.yaml, h100.yaml), rebased on this device's peaks and bandwidth (and its "
        "measured intra-node collectives on node.intra_bw_gbps), or 'datasheet' for the datasheet roofline. "
        "null: chosen by the device name (a100; h100, h200, h800, b200, b300, gb200 or gb300: h100.yaml), else the datasheet.")
    profile_gemm_ratio: Literal["b200-vs-h100", "gb200-vs-h100"] | None = Field(
        None, description="Measured GEMM speed of this device next to the device its default profile was measured on, "
        "applied when that profile is rebased on it: each GEMM keeps its measured fraction of the roofline times "
        "this device's fraction over the profile device's at the same FLOPs (moesim/costmodel/sibling_gemm.py). "
        "'b200-vs-h100': XLA's BF16 GEMM tables of both (0.45 for GEMMs under 1e9 FLOPs, 0.80 for the largest); "
        "'gb200-vs-h100': the same times a GB200's measured best-GEMM fraction of its peak over a B200's (0.94, "
        "moesim/data/mamf.csv). "
        "null: the fractions carry over unchanged (a device on the profile's die: H200, H800).")

    @model_validator(mode="after")
    def _check(self) -> DeviceSpec:
        bad = sorted(set(self.peak_tflops) - set(COMPUTE_DTYPES))
        if bad:
            raise ValueError(f"hardware.device.peak_tflops.{bad[0]}: unknown dtype; allowed: {', '.join(COMPUTE_DTYPES)}")
        if not self.peak_tflops:
            raise ValueError("hardware.device.peak_tflops = {}: give at least one dtype's peak")
        if not {"bf16", "fp16", "fp32"} & set(self.peak_tflops):
            # the fallback every other dtype reads (peak_flops_of): an fp8 peak would price bf16 math 2x fast
            raise ValueError(f"hardware.device.peak_tflops: give a bf16, fp16 or fp32 peak beside "
                             f"{', '.join(self.peak_tflops)} (the peak of math in the other formats)")
        bad = sorted(set(self.weight_bits) - set(GROUP128_WEIGHT_BITS))
        if bad:
            raise ValueError(f"hardware.device.weight_bits.{bad[0]}: unknown dtype; allowed: {', '.join(sorted(GROUP128_WEIGHT_BITS))}")
        allowed = (*shipped_profile_names(), DATASHEET)
        if self.default_profile is not None and self.default_profile not in allowed:
            raise ValueError(f"hardware.device.default_profile = {self.default_profile!r}: unknown profile; "
                             f"allowed: {', '.join(allowed)} (files in moesim/data/profiles, or {DATASHEET})")
        if self.gpu_wired_limit_gib is not None and self.gpu_wired_limit_gib > self.mem_gib:
            raise ValueError(f"hardware.device.gpu_wired_limit_gib = {self.gpu_wired_limit_gib:g}: more than the device's "
                             f"memory (mem_gib {self.mem_gib:g}); give at most {self.mem_gib:g}")
        return self

    def peak_flops(self, dtype: str) -> float:
        """Dense peak in FLOP/s for ``dtype``, falling back to bf16, fp16, then fp32."""
        return peak_flops_of(self.peak_tflops, dtype)

    def sustained_fraction(self, dtype: str) -> float:
        """Fraction of the peak of compute dtype ``dtype`` (a ``COMPUTE_DTYPES`` name: what ``precision`` resolves a
        model dtype to, so NVFP4 runs pass ``fp4`` and MXFP4 experts on MXFP8 activations ``fp8``) that compute-bound
        kernels keep under sustained load: ``sustained_fp4_fraction`` for FP4 where set, else ``sustained_compute_fraction``."""
        if self.sustained_fp4_fraction is not None and dtype == "fp4":
            return self.sustained_fp4_fraction
        return self.sustained_compute_fraction

    @property
    def compute_dtypes(self) -> tuple[str, ...]:
        """Dtypes the device computes in natively: the keys of ``peak_tflops`` (no fp8 key: no fp8 tensor cores)."""
        return tuple(d for d in COMPUTE_DTYPES if d in self.peak_tflops)

    def bits_per_weight(self, dtype: str) -> float:
        """Bits per weight of a quantized ``dtype`` (int8, int4, fp8, mxfp4), scales included."""
        return self.weight_bits.get(dtype, GROUP128_WEIGHT_BITS[dtype])


class NodeSpec(Strict):
    """Devices in one box and the link between them (NVLink/NVSwitch, or on-chip)."""

    devices_per_node: PositiveInt = bounded(8, le=1 << 16, why="65536: 7x a whole TPU pod (9216 chips) as one node", description="Devices per node.")
    intra_bw_gbps: PositiveFloat = bounded(ge=1e-3, le=1e6, why="1 PB/s per device: ~1000x NVLink 5 (900 GB/s per direction)", description="Intra-node bandwidth per device per direction, GB/s.")
    intra_latency_us: float = bounded(2.0, ge=0, le=1e6, why="1 s per message; real links take 1-10 us", description="Intra-node per-message latency, microseconds.")
    host_cpu: Literal["x86", "grace"] = Field(
        "x86", description="The host CPU that drives the devices: x86 (DGX/HGX H100 and B200, most servers) or "
        "grace (NVIDIA Grace: GB200 NVL72, GH200). A PyTorch op costs the Grace host ~2.75x the CPU time it "
        "costs an x86 one (TransformerEngine issue #2053), which a serving engine's eager kernel launches pay "
        "(costmodel/host.py).")
    ring_busbw_gbps: RingBusbwTable = Field(
        default_factory=dict, json_schema_extra={BOUND_REASON: RING_BUSBW_WHY}, description="Measured bus bandwidth (GB/s, NCCL's busbw) of a ring over n devices of this node, by n: "
        "on a PCIe server a ring crosses the host's switches and sockets, so it gets less per device the more of the "
        "server it spans. Caps the intra-node collectives of groups of at least n devices (the largest n listed that "
        "the group reaches; YAML keys quoted: {'4': 35, '8': 28}). Empty: the link alone (NVLink/NVSwitch nodes).")


class ClusterSpec(Strict):
    """Nodes and the network between them."""

    nodes: PositiveInt = bounded(1, le=1 << 20, why="1M nodes: ~40x the largest cluster built (~200k GPUs)", description="Number of nodes.")
    nic_bw_gbps: PositiveFloat = bounded(50.0, ge=1e-3, le=1e6, why="1 PB/s per device: ~10,000x an 800 Gb/s NIC", description="Network bandwidth per device per direction, GB/s (400 Gb/s NDR = 50).")
    nic_latency_us: float = bounded(5.0, ge=0, le=1e6, why="1 s per message: more than a round trip around the globe", description="Inter-node per-message latency, microseconds.")


class HardwareSpec(Strict):
    """The cluster a scenario runs on."""

    name: str = Field("custom", description="Display name of the hardware preset.")
    device: DeviceSpec
    node: NodeSpec
    cluster: ClusterSpec = ClusterSpec()
    profile: Path | None = Field(None, description="Calibration profile YAML (from `moesim calibrate`); null: built-in default for the device.")
    force_profile: bool = Field(False, description="Use hardware.profile even though it was measured on another device.")

    @property
    def n_devices(self) -> int:
        return self.node.devices_per_node * self.cluster.nodes
