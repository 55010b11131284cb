"""The fits verdict against a published out-of-memory: FlagPerf's Llama 3 8B ablation on one DGX A800
(validation rows TRN-103..116) ran seven plans and lists the eighth, PP1 x DP8, as OOM."""

from __future__ import annotations

import pytest

from moesim.loader import load_scenario
from moesim.memory import memory_report
from moesim.validation import DEFAULT_CSV

SCENARIO = DEFAULT_CSV.parent / "validation" / "llama3-8b-flagperf-megatron.yaml"
#: (pp, dp, tp) of the plans the table ran to completion on 80 GB, and the one it lists as OOM.
RAN = [(2, 4, 1), (4, 2, 1), (2, 2, 2), (2, 1, 4), (8, 1, 1), (1, 1, 8), (4, 1, 2)]
OOM = (1, 8, 1)


def _report(pp: int, dp: int, tp: int):
    micro = 512 // dp  # micro-batch 1, global batch 512
    return memory_report(load_scenario(SCENARIO, [f"plan.pp={pp}", f"plan.dp={dp}", f"plan.tp={tp}",
                                                  f"plan.microbatches={micro}"]))


@pytest.mark.parametrize("plan", RAN)
def test_the_plans_that_ran_fit(plan):
    assert _report(*plan).fits, plan


def test_the_plan_listed_as_oom_does_not_fit():
    """Without pipeline stages every GPU holds all 32 layers' activations (one micro-batch of 8,192 tokens,
    no recompute) beside 8B parameters' weights, fp32 gradients and an Adam state sharded over 8."""
    report = _report(*OOM)
    assert not report.fits
    assert report.total_gib > report.capacity_gib
