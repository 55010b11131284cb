"""FP8 dispatch (``plan.fp8_dispatch``): the forward EP dispatch sends 1-byte rows with a scale per 128 channels,
the combine and both backward all-to-alls stay 16-bit (DeepSeek-V3 sec. 3.3.3), so a step's all-to-all bytes
fall to (ratio + 3) / 4 of the 16-bit step's; without FP8 GEMMs the field changes nothing."""

from __future__ import annotations

import pytest

import moesim
from moesim.engine.training.fp8 import FP8_DISPATCH_BYTES

SMALL = ["plan.microbatches=32", "workload.global_batch_seqs=4096"]  # DeepSeek-V3's plan at a quarter of the batch


def _run(*sets: str) -> dict:
    return moesim.simulate(moesim.load_scenario("deepseek-v3-h800-train", [*SMALL, *sets])).summary


def test_only_the_forward_dispatch_shrinks():
    bf16, fp8 = _run("plan.fp8_dispatch=false"), _run("plan.fp8_dispatch=true")
    ratio = FP8_DISPATCH_BYTES / 2  # of a 16-bit row's bytes
    assert ratio == pytest.approx(0.515625)
    for key in ("alltoall_nic_bytes", "alltoall_nvlink_bytes"):
        assert fp8[key] == pytest.approx(bf16[key] * (ratio + 3) / 4, rel=1e-9)
    assert fp8["alltoall_s"] < bf16["alltoall_s"] and fp8["step_time_s"] <= bf16["step_time_s"]
    assert fp8["compute_s"] == pytest.approx(bf16["compute_s"], rel=1e-9)  # the GEMMs do not change


def test_ignored_without_fp8_gemms():
    on, off = (_run("model.dtype=bf16", f"plan.fp8_dispatch={x}", "plan.fp8_moe_act_input=false") for x in ("true", "false"))
    assert on["alltoall_s"] == off["alltoall_s"] and on["step_time_s"] == off["step_time_s"]
