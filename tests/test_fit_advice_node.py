"""Fit advice keeps a TP group inside a node this device comes in (an H100 node holds 8: no TP16), names the preset
whose node is wider than the scenario's own, and offers more devices through expert parallelism instead."""

from __future__ import annotations

import re

import pytest

from moesim.fit_advice import _widest_node, fit_explanation
from moesim.loader import load_scenario
from moesim.memory import memory_report
from tests.test_kv_pool_fit import LONG_CONTEXT

DSV3_ON_H100 = ["hardware=h100-sxm"]  # DeepSeek-V3 FP8 at TP8 on one 8 x H100 node: 79 GiB of weights per device
#: the long-context scenario of test_kv_pool_fit with a 900K-token prompt: too long for its four H100s' KV pool
QWEN_TP4_NODE4 = LONG_CONTEXT.replace("value: 850000", "value: 900000")


def _advice(name, sets) -> str:
    s = load_scenario(name, sets)
    assert not memory_report(s).fits
    return fit_explanation(s)[1]


def test_no_tp_wider_than_an_h100_node():
    advice = _advice("deepseek-v3-h200-serve", DSV3_ON_H100)
    assert "plan.tp" not in advice and "devices_per_node >= 16" not in advice
    assert "plan.pp 1 -> 2 (2x the devices)" in advice and "hardware: h200" in advice


def test_expert_parallel_advice_followed_fits():
    advice = _advice("deepseek-v3-h200-serve", DSV3_ON_H100)
    found = re.search(r"plan\.dp (\d+) -> (\d+) with plan\.ep (\d+) -> (\d+) \((\d+)x the devices", advice)
    assert found, advice
    dp, ep, k = int(found.group(2)), int(found.group(4)), int(found.group(5))
    base = load_scenario("deepseek-v3-h200-serve", DSV3_ON_H100)
    assert dp == base.plan.dp * k and ep == base.plan.ep * k
    nodes = base.hardware.cluster.nodes * k
    followed = load_scenario("deepseek-v3-h200-serve", [*DSV3_ON_H100, f"plan.dp={dp}", f"plan.ep={ep}",
                                                        f"hardware.cluster.nodes={nodes}"])
    assert memory_report(followed).fits
    if k > 2:  # the fewest: half the factor does not fit
        half = load_scenario("deepseek-v3-h200-serve", [*DSV3_ON_H100, f"plan.dp={dp // 2}", f"plan.ep={ep // 2}",
                                                        f"hardware.cluster.nodes={nodes // 2}"])
        assert not memory_report(half).fits


def test_a_node_narrower_than_the_preset_may_grow_to_the_preset_s(tmp_path):
    """Four H100s of an 8-GPU board: TP8 is advised (a node of 8 exists), and followed it fits."""
    path = tmp_path / "q235.yaml"
    path.write_text(QWEN_TP4_NODE4)
    advice = _advice(path, [])
    assert "plan.tp 4 -> 8 (2x the devices, within a node of hardware.node.devices_per_node >= 8)" in advice
    followed = load_scenario(path, ["plan.tp=8", "hardware.node.devices_per_node=8"])
    assert memory_report(followed).fits


@pytest.mark.parametrize(("sets", "widest"), [
    (["hardware=h100-sxm"], 8),  # the preset's own NVLink board
    (["hardware=h100-sxm", "hardware.node.devices_per_node=4", "hardware.cluster.nodes=2"], 8),
    (["hardware=gb200-nvl72", "hardware.cluster.nodes=1", "hardware.node.devices_per_node=8"], 72),
])
def test_widest_node_of_an_nvlink_device(sets, widest):
    assert _widest_node(load_scenario("deepseek-v3-h200-serve", sets)) == widest


@pytest.mark.parametrize("sets", [["hardware.device.name=Custom accelerator"],  # no preset: the user's to describe
                                  ["hardware=l40s"]])  # PCIe cards: a server takes what its slots hold
def test_no_known_board_is_not_capped(sets):
    s = load_scenario("deepseek-v3-h200-serve", sets)
    assert _widest_node(s) >= 64 * s.plan.tp
