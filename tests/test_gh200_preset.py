"""The GH200 preset: the H100's die on faster HBM, one GPU per node, driven by its Grace CPU."""

from __future__ import annotations

import pytest

from moesim.costmodel.model import build_cost_model
from moesim.costmodel.profile import default_profile_name
from moesim.presets import HARDWARE
from moesim.schemas import HardwareSpec


def _hw(name: str) -> HardwareSpec:
    return HardwareSpec(**HARDWARE[name])


def test_streams_faster_than_the_h100_by_the_bandwidth_ratio_and_computes_alike():
    gh, h = _hw("gh200"), _hw("h100-sxm")
    cg, ch = build_cost_model(gh), build_cost_model(h)
    ratio = gh.device.mem_bw_gbps / h.device.mem_bw_gbps
    assert float(ch.memory_s(40e9)) / float(cg.memory_s(40e9)) == pytest.approx(ratio, rel=0.05)
    big = 8192  # a compute-bound GEMM costs the same on the same die
    assert float(cg.gemm_s(big, big, big, "bf16")) == pytest.approx(float(ch.gemm_s(big, big, big, "bf16")), rel=0.05)


def test_a_grace_host_and_the_h100_profile_by_name():
    assert _hw("gh200").node.host_cpu == "grace"
    assert default_profile_name("NVIDIA GH200 480GB") == "h100.yaml"
