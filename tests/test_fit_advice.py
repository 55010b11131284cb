"""`check`'s advice offers gradient accumulation: more micro-batches of the same global batch keep fewer
activations, the fewest that fit, and only where each micro-batch still holds whole sequences."""

from __future__ import annotations

from moesim.fit_advice import fit_explanation
from moesim.loader import load_scenario
from moesim.memory import memory_report

QLORA = "mixtral-8x7b-qlora-1xa100"  # dp 1, global batch 8 sequences of 4,096


def test_more_micro_batches_are_advised_when_they_fit():
    s = load_scenario(QLORA, ["plan.microbatches=1", "plan.recompute=none", "hardware.device.mem_gib=60"])
    assert not memory_report(s).fits
    advice = fit_explanation(s)[1]
    assert "plan.microbatches 1 -> " in advice and "gradient accumulation" in advice
    factor = int(advice.split("plan.microbatches 1 -> ")[1].split(" ")[0])
    assert memory_report(load_scenario(QLORA, ["plan.recompute=none", "hardware.device.mem_gib=60",
                                              f"plan.microbatches={factor}"])).fits
    if factor > 2:  # the fewest: half as many do not fit
        assert not memory_report(load_scenario(QLORA, ["plan.recompute=none", "hardware.device.mem_gib=60",
                                                      f"plan.microbatches={factor // 2}"])).fits


def test_no_accumulation_advice_once_each_micro_batch_is_one_sequence():
    s = load_scenario(QLORA, ["plan.microbatches=8", "plan.recompute=none", "hardware.device.mem_gib=30"])
    assert not memory_report(s).fits
    assert "plan.microbatches" not in fit_explanation(s)[1]


def test_a_bigger_device_keeps_the_devices_a_node_holds():
    """An 8-GPU node's plan is not advised onto a one-GPU superchip node (GH200: following it breaks the plan)."""
    s = load_scenario("deepseek-v3-h200-serve", ["hardware=h100-sxm"])
    advice = fit_explanation(s)[1]
    assert "hardware: h200" in advice and "gh200" not in advice
    assert "hardware: gh200" in fit_explanation(load_scenario(QLORA, ["plan.recompute=none", "workload.seq_len=8192",
                                                                      "model.max_seq_len=8192"]))[1]


LLAMA_FP32 = ["model.dtype=fp32", "plan.zero_stage=0"]


def _advice(name: str, sets: list[str]) -> str:
    return fit_explanation(load_scenario(name, sets), memory_report(load_scenario(name, sets)))[1]


def test_the_same_devices_alternative_is_offered_only_when_it_is_a_valid_plan_that_fits():
    """Mixtral DP16 PP4 EP8: TP4 fits on 4x the devices, but dp / 4 breaks the EP rule (ep 8 must divide dp)
    and dp / 8 too; Llama-2-7B in fp32 without ZeRO fits at TP2 on the same devices with twice the micro-batches."""
    import re

    advice = _advice("mixtral-8x7b-h100-train", ["plan.dp=16", "plan.pp=4"])
    assert "plan.tp 1 -> 4 (4x the devices)" in advice and "plan.dp /" not in advice
    advice = _advice("llama-2-7b-a100-train", LLAMA_FP32)
    assert "plan.tp 1 -> 2 (2x the devices, or plan.dp / 2 with plan.microbatches x 2 on these devices)" in advice
    s = load_scenario("llama-2-7b-a100-train", LLAMA_FP32)
    f = int(re.search(r"plan\.dp / (\d+) with", advice).group(1))
    followed = load_scenario("llama-2-7b-a100-train", [*LLAMA_FP32, f"plan.tp={f}",
                                                       f"plan.dp={s.plan.dp // f}",
                                                       f"plan.microbatches={s.plan.microbatches * f}"])
    assert memory_report(followed).fits  # the advice, followed, fits
