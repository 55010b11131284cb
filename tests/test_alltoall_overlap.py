"""``plan.overlap_alltoall``: Megatron-core's combined 1F1B (``--overlap-moe-expert-parallel-comm``).

A forward and the backward of another microbatch run as one unit whose dispatch/combine overlap the
partner's compute (``timeline.combine_units``); the stage order gets one more warm-up forward
(``training.combined_orders``); the summary reports ``alltoall_exposed_s`` next to ``alltoall_s``.
"""

from __future__ import annotations

import numpy as np
import pytest

import moesim
from moesim.engine.training.pipeline import schedule
from moesim.engine.training.schedules import SCHEDULES, Unit
from moesim.engine.training.step import combined_orders, run_pipeline
from moesim.engine.training.timeline import combine_units
from moesim.invariants import violations
from moesim.loader import load_scenario
from moesim.resolve import deep_merge
from tests.test_training import ROOT, _random_scenario
from tests.test_training_comm import MOE  # 8 layers, 8 experts top-2, one 8-GPU node, pp 1, EP4


def run(base: dict = MOE, overlap: bool = True, **sections) -> moesim.SimResult:
    raw = deep_merge(base, sections)
    return moesim.simulate(moesim.scenario_from_dict(deep_merge(raw, {"plan": {"overlap_alltoall": overlap}})))


def pipeline_parts(sm: dict, zero_stage: int) -> float:
    """compute + exposed all-to-all + TP + PP + bubble (+ ZeRO-3's gather waits) = ``pipeline_s``."""
    parts = sm["compute_s"] + sm["alltoall_exposed_s"] + sm["tp_comm_s"] + sm["pp_comm_s"] + sm["bubble_s"]
    return parts + (sm["zero_gather_exposed_s"] if zero_stage == 3 else 0.0)


def with_overlap(s: moesim.Scenario, on: bool) -> moesim.Scenario:
    return s.model_copy(update={"plan": s.plan.model_copy(update={"overlap_alltoall": on})})


# ------------------------------------------------------------------ the pair of chains
def test_combine_units_by_hand():
    # forward: compute 2, a2a 1, compute 2; backward: compute 3, a2a 1, compute 1 (seconds).
    # t=0 F computes [0,2]; t=2 B computes [2,5] while F's a2a runs [2,3]; t=5 F computes [5,7]
    # while B's a2a runs [5,6]; B's last compute [7,8]. Both a2a hidden: 8 s instead of 10.
    c = combine_units([2, 1, 2], [False, True, False], [3, 1, 1], [False, True, False])
    assert c.makespan_s == 8 and c.end_s == (7, 8) and c.hidden_s == 2
    np.testing.assert_allclose(c.op_end_s[0], [2, 3, 7])
    np.testing.assert_allclose(c.op_end_s[1], [5, 6, 8])
    # a2a-bound: F = 1, a2a 5, 1; B = 1, a2a 1, 1. F's a2a [1,6] covers B's first compute [1,2];
    # B's a2a must wait for the one comm stream [6,7] and covers F's last compute [6,7]; B ends [7,8].
    # 2 s hidden, 4 s of the 6 s of a2a exposed (makespan 8 - compute 4).
    c = combine_units([1, 5, 1], [False, True, False], [1, 1, 1], [False, True, False])
    assert c.makespan_s == 8 and c.end_s == (7, 8) and c.hidden_s == 2
    # zero-length ops take no stream and end where the op before them ends
    c = combine_units([0, 2, 0, 1], [True, False, True, True], [1, 0], [True, False])
    np.testing.assert_allclose(c.op_end_s[0], [0, 2, 2, 3])
    np.testing.assert_allclose(c.op_end_s[1], [1, 1])
    assert c.makespan_s == 3 and c.hidden_s == 1


def test_combine_units_respects_streams_chains_and_bounds():
    rng = np.random.default_rng(0)
    for _ in range(200):
        n_f, n_b = rng.integers(1, 12, size=2)
        d_f, d_b = rng.exponential(1, n_f) * (rng.random(n_f) > 0.2), rng.exponential(1, n_b) * (rng.random(n_b) > 0.2)
        a_f, a_b = rng.random(n_f) < 0.4, rng.random(n_b) < 0.4
        c = combine_units(d_f, a_f, d_b, a_b)
        compute = d_f[~a_f].sum() + d_b[~a_b].sum()
        comm = d_f[a_f].sum() + d_b[a_b].sum()
        lower = max(compute, comm, d_f.sum(), d_b.sum())
        assert lower - 1e-9 <= c.makespan_s <= d_f.sum() + d_b.sum() + 1e-9
        assert c.hidden_s == pytest.approx(d_f.sum() + d_b.sum() - c.makespan_s, abs=1e-12)
        assert c.makespan_s - compute <= comm + 1e-9  # exposed a2a <= a2a
        spans = {False: [], True: []}
        for d, a, end in ((d_f, a_f, c.op_end_s[0]), (d_b, a_b, c.op_end_s[1])):
            start = end - d
            assert np.all(np.diff(end) >= -1e-12) and np.all(start[1:] >= end[:-1] - 1e-12)  # chain order
            for s0, e0, s in zip(start, end, a):
                if e0 > s0:
                    spans[bool(s)].append((s0, e0))
        for iv in spans.values():  # one op at a time per stream
            iv.sort()
            assert all(b[0] >= a[1] - 1e-9 for a, b in zip(iv, iv[1:]))


# ------------------------------------------------------------------ the order
def test_combined_orders_add_one_warmup_forward_and_pair_the_steady_phase():
    f = lambda i: Unit(i, 0, False)  # noqa: E731
    b = lambda i: Unit(i, 0, True)  # noqa: E731
    # pp = 1 (Megatron's combined_1f1b_schedule_for_no_pipelining): F0, (F1, B0), (F2, B1), (F3, B2), B3
    assert combined_orders(schedule("1f1b", 1, 4)) == [[f(0), (f(1), b(0)), (f(2), b(1)), (f(3), b(2)), b(3)]]
    # 1F1B, pp 3, last stage: warm-up 0 -> 1
    assert combined_orders(schedule("1f1b", 3, 5))[2] == [f(0), (f(1), b(0)), (f(2), b(1)), (f(3), b(2)), (f(4), b(3)), b(4)]
    # GPipe has no steady phase: nothing paired
    assert combined_orders(schedule("gpipe", 2, 3)) == schedule("gpipe", 2, 3)


@pytest.mark.parametrize("pp, m, v", [(2, 4, 2), (3, 6, 2), (3, 3, 3), (4, 8, 2), (2, 2, 4), (5, 10, 2), (3, 9, 4)])
def test_combined_interleaved_orders_cover_every_unit_and_play_to_the_end(pp, m, v):
    orders = combined_orders(SCHEDULES["interleaved"].orders(pp, m, v))
    C = pp * v
    for st, order in enumerate(orders):
        flat = [u for e in order for u in ((e,) if isinstance(e, Unit) else e)]
        assert sorted(flat) == sorted(SCHEDULES["interleaved"].order(st, pp, m, v))
        assert all(e[0].microbatch != e[1].microbatch for e in order if not isinstance(e, Unit))
    rng = np.random.default_rng(pp * 100 + m * 10 + v)
    unit = rng.uniform(1, 2, (C, m, 2))
    combined = {}
    for st, order in enumerate(orders):
        for e in order:
            if not isinstance(e, Unit):
                (cf, i_f), (cb, i_b) = ((u.chunk * pp + st, u.microbatch) for u in e)
                c = combine_units([unit[cf, i_f, 0] / 2, 0.1, unit[cf, i_f, 0] / 2], [False, True, False],
                                  [unit[cb, i_b, 1]], [False])
                combined[(cf, i_f, cb, i_b)] = (c, np.zeros(0))
    r = run_pipeline(orders, unit, np.full((C, 2), 0.1), layout=SCHEDULES["interleaved"], combined=combined)
    assert np.all(r.end_s > r.start_s)  # every unit played: no deadlock


def test_pipeline_orders_that_cannot_finish_raise():
    # stage 0 waits for the gradient of a forward that waits for stage 0's forward
    with pytest.raises(RuntimeError, match="deadlock"):
        run_pipeline([[Unit(0, 0, True), Unit(0, 0, False)], [Unit(0, 0, False), Unit(0, 0, True)]],
                     np.ones((2, 1, 2)), np.full((2, 2), 0.1))


# ------------------------------------------------------------------ the engine
def test_overlap_is_off_by_default_and_then_every_alltoall_is_exposed():
    r = run(overlap=False)
    sm = r.summary
    assert not moesim.scenario_from_dict(MOE).plan.overlap_alltoall
    assert sm["alltoall_s"] > 0 and sm["alltoall_exposed_s"] == sm["alltoall_s"]
    assert "ep_comm" not in set(r.spans["stream"].tolist())


def test_with_enough_compute_only_the_unpaired_warmup_and_cooldown_expose_alltoall():
    """pp = 1, padded routing (every microbatch moves the same bytes), compute >> a2a: every pair
    hides both its all-to-alls, so only F0's and B_{m-1}'s are exposed: alltoall_s / m, -> 0."""
    for m in (4, 16):
        plan = {"microbatches": m, "dp": 8}
        off, on = (run(overlap=o, plan=plan, workload={"global_batch_seqs": 8 * m}).summary for o in (False, True))
        assert on["alltoall_s"] == pytest.approx(off["alltoall_s"], rel=1e-12)
        assert on["compute_s"] > 5 * on["alltoall_s"]
        assert on["alltoall_exposed_s"] == pytest.approx(on["alltoall_s"] / m, rel=1e-9)
        assert on["step_time_s"] == pytest.approx(off["step_time_s"] - (off["alltoall_s"] - on["alltoall_exposed_s"]), rel=1e-9)
        assert on["compute_s"] == off["compute_s"] and on["tp_comm_s"] == off["tp_comm_s"]
    assert on["alltoall_exposed_s"] / on["alltoall_s"] < 0.07


def test_full_recompute_rerun_alltoalls_stay_exposed():
    """The re-run's all-to-alls sit inside the recompute op on the compute stream: not hidden."""
    on = run(plan={"recompute": "full"}).summary
    base = run(plan={"recompute": "full"}, overlap=False).summary
    rerun = base["alltoall_s"] / 3  # full recompute adds the forward's a2a again: 1.5x of (fwd + bwd)
    assert on["alltoall_exposed_s"] == pytest.approx(2 * rerun / 4 + rerun, rel=1e-9)  # m = 4


def test_overlap_spans_run_alltoalls_on_their_own_stream_next_to_compute():
    r = run()
    assert violations(r) == []  # no stream busy more than 100%, times sound
    s = r.spans
    streams = s["stream"].astype(str)
    a2a = streams == "ep_comm"
    assert a2a.any() and all(k.startswith("alltoall_") for k in s["kind"][a2a])
    comp = streams == "compute"
    c0, c1 = s["start_s"][comp], s["end_s"][comp]
    overlapped = sum(np.clip(np.minimum(e, c1) - np.maximum(b, c0), 0, None).sum()
                     for b, e in zip(s["start_s"][a2a], s["end_s"][a2a]))
    sm = r.summary
    assert overlapped == pytest.approx(sm["alltoall_s"] - sm["alltoall_exposed_s"], rel=1e-9)


def test_overlap_needs_virtual_stages_with_pipeline_parallelism_and_is_a_no_op_without_ep():
    with pytest.raises(Exception, match="virtual_stages"):
        moesim.scenario_from_dict(deep_merge(MOE, {"plan": {"dp": 4, "pp": 2, "overlap_alltoall": True}}))
    moesim.scenario_from_dict(deep_merge(MOE, {"plan": {"dp": 4, "pp": 2, "schedule": "interleaved", "virtual_stages": 2,
                                                         "overlap_alltoall": True}}))
    off, on = (run(overlap=o, plan={"ep": 1}).summary for o in (False, True))
    assert on == off


def _random_overlap_scenarios(n: int, seed: int, pp1: bool):
    rng = np.random.default_rng(seed)
    out = []
    while len(out) < n:
        s = _random_scenario(rng)
        if s.plan.pp == 1 if pp1 else (s.plan.pp > 1 and s.plan.virtual_stages > 1):
            out.append(s)
    return out


def test_overlap_on_is_never_slower_than_off_without_pipeline_parallelism():
    """pp = 1: the combined order is F0, (F1, B0), ..., B_{m-1} played back to back, and no pair
    takes longer than its two units one after the other, so the step cannot get longer. Without the
    host floor: a host-bound pass waits for the host either way, and the floor counts the
    all-to-alls as GPU work only when they share the compute stream (tests/test_train_host.py)."""
    for s in _random_overlap_scenarios(30, 7, pp1=True):
        s = s.model_copy(update={"plan": s.plan.model_copy(update={"moe_layer_host_us": 0.0})})
        off, r = moesim.simulate(s).summary, moesim.simulate(with_overlap(s, True))
        on = r.summary
        assert on["step_time_s"] <= off["step_time_s"] * (1 + 1e-12), s.plan
        assert 0 <= on["alltoall_exposed_s"] <= on["alltoall_s"] * (1 + 1e-12) + 1e-15, s.plan
        assert pipeline_parts(on, s.plan.zero_stage) == pytest.approx(on["pipeline_s"], rel=1e-9), s.plan
        assert violations(r) == [], s.plan


def test_interleaved_pipelines_keep_the_invariants():
    """pp > 1 (interleaved): a pair waits for both inputs and the order has one more warm-up
    forward, as in Megatron, so a pipeline whose all-to-alls are negligible may get slightly
    slower; the accounting holds regardless."""
    for s in _random_overlap_scenarios(15, 11, pp1=False):
        r = moesim.simulate(with_overlap(s, True))
        on = r.summary
        assert 0 <= on["alltoall_exposed_s"] <= on["alltoall_s"] * (1 + 1e-12) + 1e-15, s.plan
        assert pipeline_parts(on, s.plan.zero_stage) == pytest.approx(on["pipeline_s"], rel=1e-9), s.plan
        assert violations(r) == [], s.plan


def test_deepseek_v3_interleaved_pipeline_hides_half_its_alltoall():
    """DeepSeek-V3 on 1024 H100 (PP8 x VP4, EP64): all-to-all-bound, so overlap hides about as much
    all-to-all as there is compute beside it, and the step gets shorter by what it hid."""
    s = load_scenario(ROOT / "scenarios" / "deepseek-v3-h100-train.yaml")
    off, r = moesim.simulate(s).summary, moesim.simulate(with_overlap(s, True))
    on = r.summary
    assert violations(r) == []
    assert on["alltoall_s"] == pytest.approx(off["alltoall_s"], rel=1e-12)
    hidden = on["alltoall_s"] - on["alltoall_exposed_s"]
    assert 0.4 * on["alltoall_s"] < hidden < on["compute_s"] + on["tp_comm_s"]
    assert on["step_time_s"] < off["step_time_s"] - 0.8 * hidden
