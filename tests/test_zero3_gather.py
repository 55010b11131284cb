"""ZeRO-3 holds more than its shards while a block runs (``moesim/zero3_gather.py``), and an fp32 model keeps no
second fp32 copy of its weights for Adam (``train_bytes.optimizer_bytes``)."""

from __future__ import annotations

import pytest

from moesim.accounting import GIB
from moesim.loader import load_scenario
from moesim.memory import memory_report
from moesim.zero3_gather import GATHERED_BLOCKS, zero3_block_bytes

LLAMA = "llama-2-7b-a100-train"  # DP8, TP1, PP1


def _llama_block_params() -> int:
    """One Llama-2-7B block by hand: q/k/v/o 4 x 4096^2, gated FFN 3 x 4096 x 11008, two norms."""
    return 4 * 4096 ** 2 + 3 * 4096 * 11008 + 2 * 4096


def test_zero3_adds_two_gathered_blocks_and_one_unsharded_gradient_by_hand():
    z2 = memory_report(load_scenario(LLAMA, ["plan.zero_stage=2"]))
    z3 = memory_report(load_scenario(LLAMA, ["plan.zero_stage=3"]))
    s = load_scenario(LLAMA, ["plan.zero_stage=3"])
    dp, block = s.plan.dp, _llama_block_params()
    total = 6_738_415_616  # Llama-2-7B's parameters (embedding and head untied)
    sharded = total * 2 / dp
    gathered = GATHERED_BLOCKS * block * (1 - 1 / dp) * 2  # bf16 weights: the running and the prefetched block
    assert z3.weights_gib * GIB == pytest.approx(sharded + gathered, rel=2e-3)
    assert z3.gradients_gib == pytest.approx(z2.gradients_gib + block * (1 - 1 / dp) * 2 / GIB, rel=2e-3)
    assert z3.optimizer_gib == pytest.approx(z2.optimizer_gib)


def test_nothing_is_gathered_below_zero3_or_without_data_parallel_ranks():
    for sets in (["plan.zero_stage=1"], ["plan.zero_stage=2"]):
        assert zero3_block_bytes(load_scenario(LLAMA, sets), 2.0, 2.0, 2.0, 8, 8) == (0.0, 0.0)
    one = load_scenario(LLAMA, ["plan.zero_stage=3", "plan.dp=1", "hardware.node.devices_per_node=1"])
    assert zero3_block_bytes(one, 2.0, 2.0, 2.0, 1, 1) == (0.0, 0.0)


def test_moe_blocks_gather_their_experts_over_the_expert_data_parallel_group():
    s = load_scenario("mixtral-8x7b-h100-train", ["plan.zero_stage=3"])
    dp = s.plan.dp
    attention = 4096 * (4096 * 2 + 1024 * 2) + 2 * 4096 + 4096 * 8  # q, o, k, v; norms; router
    expert = 3 * 4096 * 14336  # one EP rank holds one of the 8 experts (EP8)
    w, g = zero3_block_bytes(s, 2.0, 2.0, 2.0, dp, 1)  # an expert-DP group of one: the experts stay whole
    assert w == pytest.approx(GATHERED_BLOCKS * attention * (1 - 1 / dp) * 2, rel=1e-9)
    assert g == pytest.approx(attention * (1 - 1 / dp) * 2, rel=1e-9)
    w8, _ = zero3_block_bytes(s, 2.0, 2.0, 2.0, dp, 8)  # sharded over 8 expert-DP ranks: gathered too
    assert w8 - w == pytest.approx(GATHERED_BLOCKS * expert * (7 / 8) * 2, rel=1e-9)


def test_a_frozen_base_is_gathered_without_a_gradient():
    full = load_scenario("mixtral-8x7b-qlora-1xa100", [])
    frozen = zero3_block_bytes(full.model_copy(update={"plan": full.plan.model_copy(update={"zero_stage": 3})}),
                               0.5, 0.5, 2.0, 4, 4, trains=(0.0, 0.0))
    assert frozen[0] > 0 and frozen[1] == 0.0


def test_an_fp32_model_keeps_no_separate_master_copy():
    bf16 = memory_report(load_scenario("mixtral-8x7b-h100-train"))
    fp32 = memory_report(load_scenario("mixtral-8x7b-h100-train", ["model.dtype=fp32"]))
    assert fp32.optimizer_gib == pytest.approx(bf16.optimizer_gib * 8 / 12)  # m and v only
    assert fp32.weights_gib == pytest.approx(2 * bf16.weights_gib, rel=0.02)  # the weights are the fp32 copy
