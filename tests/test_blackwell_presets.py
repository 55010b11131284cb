"""Blackwell presets: HGX B200 (8 GPUs per NVLink domain) and GB200 NVL72 (one 72-GPU NVLink domain).

Figures are NVIDIA's datasheet ones (sparse peaks halved to dense), cited in moesim/presets/hardware.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest

import moesim
from moesim.costmodel import build_cost_model, comm, fp4, sibling_gemm
from moesim.costmodel.hbm import B200_HBM_GBPS, GB200_HBM_GBPS, hbm_gbps
from moesim.presets import HARDWARE
from moesim.schemas import HardwareSpec

ROOT = Path(__file__).resolve().parents[1]
K, E, EP = 8, 256, 64  # DeepSeek-V3's routing over EP64
ROW = 7168.0


def _hw(name: str, nodes: int = 1) -> HardwareSpec:
    data = dict(HARDWARE[name])
    data["cluster"] = dict(data["cluster"], nodes=nodes)
    return HardwareSpec(**data)


@pytest.mark.parametrize("name, bf16, fp8, watts, gib, per_node, bus_bits",
                         [("b200", 2250.0, 4500.0, 1000.0, 179.0, 8, 7680),
                          ("gb200-nvl72", 2500.0, 5000.0, 1200.0, 185.0, 72, 7936)])
def test_presets_carry_the_datasheet_figures(name, bf16, fp8, watts, gib, per_node, bus_bits):
    hw = _hw(name)
    d = hw.device
    assert d.peak_tflops["bf16"] == bf16 and d.peak_tflops["fp8"] == fp8 == 2 * bf16
    assert d.peak_tflops["fp4"] == 4 * bf16  # dense NVFP4
    assert d.compute_dtypes == ("fp32", "bf16", "fp16", "fp8", "fp4")
    assert d.mem_bw_gbps == hbm_gbps(bus_bits) and d.mem_gib == gib and d.power_w == watts
    assert d.default_profile == "h100.yaml" and d.usd_per_hour > 0  # the H100's efficiencies, rebased
    assert hw.node.intra_bw_gbps == 900.0  # NVLink 5: 1.8 TB/s bidirectional = 900 per direction
    assert hw.node.devices_per_node == per_node
    assert hw.cluster.nic_bw_gbps == 50.0  # one ConnectX-7 400 Gb/s per GPU
    assert build_cost_model(hw) is not None


def test_gb200_nvl72_is_one_node_of_72():
    assert HARDWARE["gb200-nvl72"]["node"]["devices_per_node"] == 72
    assert _hw("gb200-nvl72", nodes=4).n_devices == 288  # four racks over the NICs


@pytest.mark.parametrize("algorithm", ["flat", "hierarchical", "deepep_normal", "deepep_low_latency"])
def test_ep64_all_to_all_stays_on_nvlink_in_one_nvl72(algorithm):
    b = float(comm.alltoall_bytes_per_rank(4096, K, int(ROW), 1.0, EP))
    nvl72, hgx = _hw("gb200-nvl72", nodes=1), _hw("b200", nodes=8)
    nvl, nic = build_cost_model(nvl72).alltoall_split(b, EP, 1, algorithm, K, E)
    assert nic == 0.0 and nvl > 0.0
    assert comm.ep_peer_split(EP, 1, 72) == (63, 0)
    nvl_h, nic_h = build_cost_model(hgx).alltoall_split(b, EP, 1, algorithm, K, E)
    assert nic_h > 0.0  # HGX B200: 8 per node, EP64 spans 8 nodes
    assert comm.ep_peer_split(EP, 1, 8) == (7, 56)
    t72 = float(build_cost_model(nvl72).alltoall_s(b, EP, 1, algorithm, K, E))
    t8 = float(build_cost_model(hgx).alltoall_s(b, EP, 1, algorithm, K, E))
    assert 0 < t72 < t8


def _train(preset: str) -> dict:
    path = ROOT / "scenarios" / "mixtral-8x7b-h100-train.yaml"
    s = moesim.load_scenario(path, [f"hardware.preset={preset}"])
    assert s.hardware.n_devices == 64
    return moesim.simulate(s, seed=0).summary


def test_b200_trains_a_shipped_scenario_faster_than_h100():
    h100, b200 = _train("h100-sxm"), _train("b200")
    assert b200["fits"] and h100["fits"]
    # 2.27x the bf16 peak, 2.4x the HBM bandwidth, 2x NVLink: well over 1.5x, under the peak ratio
    assert 1.5 < h100["step_time_s"] / b200["step_time_s"] < 2250.0 / 989.4 * 1.05
    assert b200["alltoall_s"] < h100["alltoall_s"]


def test_blackwell_hbm_peaks_are_the_bus_the_driver_reports():
    """B200: 7,680 bits x 3,996 MHz x 2 = 7.672 TB/s (pytorch/ao PR #4002; NVIDIA's later datasheet: 7.7 TB/s);
    GB200: 7,928 GB/s (torch.cuda._device_limits on a GB200, pytorch/pytorch PR #172523). Each bus is the
    8,192-bit one of eight HBM3e stacks less the share of channels the usable memory lacks of 192 GB; the
    tables measured on a B200 are read on the same peak (sibling_gemm's roofline, fp4's fit)."""
    assert hbm_gbps(7680) == pytest.approx(7672.3, abs=0.1) and hbm_gbps(7936) == pytest.approx(7928.1, abs=0.1)
    assert HARDWARE["b200"]["device"]["mem_bw_gbps"] == B200_HBM_GBPS
    assert HARDWARE["gb200-nvl72"]["device"]["mem_bw_gbps"] == GB200_HBM_GBPS
    for bits, usable_gb in ((7680, 180), (7936, 186)):  # the channels enabled match the memory enabled
        assert bits / 8192 == pytest.approx(usable_gb / 192, abs=1e-3)
    # B300 (270 of 288 GB) and GB300 (278 of 288) by the same rule: not measured
    assert HARDWARE["b300"]["device"]["mem_bw_gbps"] == B200_HBM_GBPS
    assert HARDWARE["gb300-nvl72"]["device"]["mem_bw_gbps"] == GB200_HBM_GBPS
    assert sibling_gemm.ROOFLINES["b200"][1] == pytest.approx(B200_HBM_GBPS * 1e9)
    assert fp4.AO_B200_BW == pytest.approx(B200_HBM_GBPS * 1e9)
