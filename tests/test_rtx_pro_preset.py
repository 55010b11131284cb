"""The RTX PRO 6000 Blackwell server preset: eight GPUs on PCIe 5.0, no NVLink, consumer-Blackwell MMA tiles."""

from __future__ import annotations

from moesim.costmodel.model import build_cost_model
from moesim.presets import HARDWARE
from moesim.schemas import HardwareSpec


def _hw(name: str) -> HardwareSpec:
    return HardwareSpec(**HARDWARE[name])


def test_pcie_collectives_cost_more_than_nvlink_ones():
    """An 8-GPU all-gather of a prompt chunk's hidden states (8,192 tokens x 4,096 x BF16, bandwidth-bound)
    over PCIe takes longer than over the B200's NVLink by at least half their link ratio."""
    nbytes = 8192 * 4096 * 2.0
    rtx, b200 = build_cost_model(_hw("rtx-pro-6000")), build_cost_model(_hw("b200"))
    t_rtx, t_b200 = float(rtx.allgather_s(nbytes, 8)), float(b200.allgather_s(nbytes, 8))
    ratio = _hw("b200").node.intra_bw_gbps / _hw("rtx-pro-6000").node.intra_bw_gbps
    assert t_rtx > 0.5 * ratio * t_b200


def test_memory_bound_decode_reads_at_the_gddr7_rate():
    """Streaming a 40 GB checkpoint once takes the B200 preset's time scaled by the bandwidth ratio
    (both devices rebase the H100 profile's measured streaming efficiency)."""
    nbytes = 40e9
    rtx, b200 = build_cost_model(_hw("rtx-pro-6000")), build_cost_model(_hw("b200"))
    bw = _hw("b200").device.mem_bw_gbps / _hw("rtx-pro-6000").device.mem_bw_gbps
    assert abs(float(rtx.memory_s(nbytes)) / float(b200.memory_s(nbytes)) - bw) < 0.05 * bw


def test_grouped_kernels_tile_16_rows():
    """sm_120 has no warpgroup MMA: the preset pads experts' rows to 16, as Ampere and GB10 do (Hopper: 64)."""
    assert _hw("rtx-pro-6000").device.mma_rows == 16
    assert _hw("h100-sxm").device.mma_rows > 16


def test_fit_advice_keeps_a_pcie_plan_on_pcie_and_an_nvlink_plan_on_nvlink(capsys):
    """A plan too big for its device is advised onto a bigger device of its own interconnect: Mixtral 8x7B in
    FP16 on one H100 to a bigger NVLink-class device (never the 96 GB PCIe RTX PRO 6000), and Mixtral 8x22B on one RTX PRO 6000 to
    no NVLink device (none bigger is on PCIe: the advice names other fixes only)."""
    import json

    from moesim.cli import main

    base = ["check", "mixtral-8x7b-h100-serve", "--set", "model.dtype=fp16", "--set", "plan.dp=1",
            "--set", "hardware.node.devices_per_node=1", "--json"]
    assert main(base) == 0
    h100 = json.loads(capsys.readouterr().out)
    advice = h100["fits_advice"]
    assert h100["fits"] is False and "hardware: " in advice and "rtx" not in advice and "l40s" not in advice
    assert main([*base, "--set", "hardware.preset=rtx-pro-6000", "--set", "model.preset=mixtral-8x22b"]) == 0
    rtx = json.loads(capsys.readouterr().out)
    assert rtx["fits"] is False and rtx["fits_advice"] and "hardware:" not in rtx["fits_advice"]


def test_rings_spanning_the_pcie_server_run_at_its_measured_bus_bandwidth():
    """node.ring_busbw_gbps caps the rings of 4 and 8 GPUs at NCCL's measured 35 and 28 GB/s (8 RTX 5090s on PCIe 5.0),
    while a 2-GPU ring keeps the link's (faster) figure; an NVLink node has no cap."""
    cm = build_cost_model(_hw("rtx-pro-6000"))
    nbytes = 64e6

    def busbw(n: int) -> float:
        return 2 * (n - 1) / n * nbytes / float(cm.allreduce_s(nbytes, n)) / 1e9

    assert 26.0 < busbw(8) <= 28.0
    assert 33.0 < busbw(4) <= 35.0
    assert busbw(2) > 35.0
    assert not _hw("b200").node.ring_busbw_gbps


def test_a_ring_cap_applies_to_custom_all_reduce_and_all_gather_alike():
    """The engines' one-shot/two-shot all-reduce and the attention-DP all-gather cross the same host fabric."""
    cm = build_cost_model(_hw("rtx-pro-6000"))
    nbytes = 64e6
    assert float(cm.allreduce_s(nbytes, 8, algorithm="custom")) >= 0.99 * float(cm.allreduce_s(nbytes, 8))
    assert (8 - 1) / 8 * nbytes / float(cm.allgather_s(nbytes, 8)) / 1e9 <= 28.0


def test_an_l40s_servers_rings_get_the_measured_pcie_share_of_its_gen4_link():
    """The L40S preset's rings of 4 and 8 GPUs run at the share of the link the RTX 5090 server's rings reach
    (35/63 and 28/63 of PCIe 5.0, NCCL issue #1639), of its own 32 GB/s Gen4 link: 17.8 and 14.2 GB/s; the
    RTX PRO 6000's, from the same share of 63 GB/s, are the measured 35 and 28."""
    from moesim.presets.hardware import PCIE_RING_SHARE, pcie_rings

    assert pcie_rings(63.0) == {4: 35.0, 8: 28.0}
    assert _hw("l40s").node.ring_busbw_gbps == pcie_rings(32.0) == {4: 17.8, 8: 14.2}
    cm = build_cost_model(_hw("l40s"))
    nbytes = 64e6

    def busbw(n: int) -> float:
        return 2 * (n - 1) / n * nbytes / float(cm.allreduce_s(nbytes, n)) / 1e9

    assert busbw(8) <= 32.0 * PCIE_RING_SHARE[8] * (1 + 1e-9)
    assert busbw(4) <= 32.0 * PCIE_RING_SHARE[4] * (1 + 1e-9)
    assert busbw(8) < busbw(4) < busbw(2)
