"""The hardware section: one device type, how devices form nodes, how nodes form a cluster."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, PositiveFloat, PositiveInt, model_validator

from moesim.schemas._base import Strict


def peak_flops_of(peak_tflops: dict[str, float], dtype: str) -> float:
    """FLOP/s for ``dtype`` from a TFLOP/s-per-dtype table, falling back to bf16, fp16, then fp32."""
    for key in (dtype, "bf16", "fp16", "fp32"):
        if key in peak_tflops:
            return peak_tflops[key] * 1e12
    return next(iter(peak_tflops.values())) * 1e12


class DeviceSpec(Strict):
    """One accelerator (or the GPU of an Apple SoC). Bandwidths are per direction."""

    name: str = Field(description="Device name, e.g. 'NVIDIA H100 SXM5 80GB'.")
    peak_tflops: dict[str, PositiveFloat] = Field(
        description="Dense peak TFLOP/s per dtype (keys fp32, bf16, fp16, fp8; a missing dtype falls back to bf16, then fp32)."
    )
    mem_bw_gbps: PositiveFloat = Field(description="Memory bandwidth, GB/s (1e9 bytes/s).")
    mem_gib: PositiveFloat = Field(description="Memory capacity, GiB.")
    power_w: PositiveFloat = Field(description="Board power at load, W (for energy per token).")
    usd_per_hour: float = Field(ge=0, description="Rental price per device-hour, USD.")
    compute_efficiency: float = Field(0.7, gt=0, le=1, description="Fraction of peak FLOP/s large GEMMs reach (datasheet roofline).")
    memory_efficiency: float = Field(0.8, gt=0, le=1, description="Fraction of peak memory bandwidth streaming kernels reach.")
    launch_overhead_us: float = Field(5.0, ge=0, description="Fixed cost per kernel, microseconds.")

    @model_validator(mode="after")
    def _check(self) -> DeviceSpec:
        allowed = {"fp32", "bf16", "fp16", "fp8"}
        bad = sorted(set(self.peak_tflops) - allowed)
        if bad:
            raise ValueError(f"hardware.device.peak_tflops.{bad[0]}: unknown dtype; allowed: {sorted(allowed)}")
        if not self.peak_tflops:
            raise ValueError("hardware.device.peak_tflops = {}: give at least one dtype's peak")
        return self

    def peak_flops(self, dtype: str) -> float:
        """Dense peak in FLOP/s for ``dtype``, falling back to bf16, fp16, then fp32."""
        return peak_flops_of(self.peak_tflops, dtype)


class NodeSpec(Strict):
    """Devices in one box and the link between them (NVLink/NVSwitch, or on-chip)."""

    devices_per_node: PositiveInt = Field(8, description="Devices per node.")
    intra_bw_gbps: PositiveFloat = Field(description="Intra-node bandwidth per device per direction, GB/s.")
    intra_latency_us: float = Field(2.0, ge=0, description="Intra-node per-message latency, microseconds.")


class ClusterSpec(Strict):
    """Nodes and the network between them."""

    nodes: PositiveInt = Field(1, description="Number of nodes.")
    nic_bw_gbps: PositiveFloat = Field(50.0, description="Network bandwidth per device per direction, GB/s (400 Gb/s NDR = 50).")
    nic_latency_us: float = Field(5.0, ge=0, description="Inter-node per-message latency, microseconds.")


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
