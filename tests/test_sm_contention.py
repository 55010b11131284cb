"""Communication kernels that hold SMs slow the compute they overlap (DeepEP's normal kernels: 20 SMs)."""

from __future__ import annotations

import numpy as np
import pytest

import moesim
from moesim.costmodel.comm import overlap_slowdown
from moesim.engine.serving.overlap import period_s
from moesim.engine.training.timeline import combine_units


def test_slowdown_is_the_share_of_sms_the_kernels_hold():
    assert overlap_slowdown("deepep_normal", 132) == pytest.approx(20 / 112)
    assert overlap_slowdown("deepep_low_latency", 132) == 0.0  # hook-based: no SMs
    assert overlap_slowdown("flat", 132) == 0.0
    assert overlap_slowdown("deepep_normal", None) == 0.0  # unknown SM count: not modelled


def test_combined_pair_stretches_by_the_overlap_it_had():
    f = np.array([1.0, 2.0, 1.0, 2.0])  # compute, a2a, compute, a2a
    b = np.array([2.0, 1.0, 2.0, 1.0])  # a2a, compute, a2a, compute
    fm, bm = np.array([0, 1, 0, 1], bool), np.array([1, 0, 1, 0], bool)
    plain = combine_units(f, fm, b, bm)
    slow = combine_units(f, fm, b, bm, sm_slowdown=0.25)
    compute, comm = 6.0, 6.0
    overlap = compute + comm - plain.makespan_s
    assert overlap > 0
    assert slow.makespan_s == pytest.approx(plain.makespan_s + 0.25 * overlap)
    assert slow.hidden_s == pytest.approx(plain.hidden_s - 0.25 * overlap)
    assert combine_units(f, fm, b, bm, sm_slowdown=0.0).makespan_s == plain.makespan_s


def test_tbo_period_pays_for_the_time_both_streams_run():
    s1, d, s2, c = 1.0, 0.5, 1.0, 0.5
    p = period_s(s1, d, s2, c)
    assert period_s(s1, d, s2, c, 0.2) == pytest.approx(p + 0.2 * (2 * 2.0 + 2 * 1.0 - p))
    assert period_s(s1, d, s2, c, 0.2) >= p


def test_deepseek_dualpipe_step_pays_deepep_sms():
    s = moesim.load_scenario("deepseek-v3-h800-train", ["plan.microbatches=32", "workload.global_batch_seqs=4096"])
    unknown = moesim.load_scenario("deepseek-v3-h800-train", ["plan.microbatches=32", "workload.global_batch_seqs=4096",
                                                              "hardware.device.sm_count=null"])
    with_sms, without = moesim.simulate(s).summary, moesim.simulate(unknown).summary
    assert with_sms["step_time_s"] > without["step_time_s"]
    assert with_sms["compute_s"] == pytest.approx(without["compute_s"])  # the loss shows as exposed all-to-all
    assert with_sms["alltoall_exposed_s"] > without["alltoall_exposed_s"]
