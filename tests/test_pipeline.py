"""Pipeline schedules: orders, deadlock freedom, and the simulated bubble against the formula."""

from __future__ import annotations

import numpy as np
import pytest

from moesim.engine.training.pipeline import Unit, analytic_bubble_fraction, check_orders, schedule
from moesim.engine.training.step import run_pipeline

F, B = False, True


def test_one_f_one_b_order_two_stages():
    orders = schedule("1f1b", pp=2, m=2)
    assert orders[0] == [Unit(0, 0, F), Unit(1, 0, F), Unit(0, 0, B), Unit(1, 0, B)]
    assert orders[1] == [Unit(0, 0, F), Unit(0, 0, B), Unit(1, 0, F), Unit(1, 0, B)]


def test_gpipe_runs_all_forwards_first():
    orders = schedule("gpipe", pp=3, m=2)
    assert all(o == [Unit(0, 0, F), Unit(1, 0, F), Unit(0, 0, B), Unit(1, 0, B)] for o in orders)


def test_interleaved_order_matches_megatron():
    orders = schedule("interleaved", pp=2, m=2, v=2)
    # stage 0 warms up with 2*(pp-1) + (v-1)*pp = 4 forwards: all of them
    assert orders[0] == [Unit(0, 0, F), Unit(1, 0, F), Unit(0, 1, F), Unit(1, 1, F),
                         Unit(0, 1, B), Unit(1, 1, B), Unit(0, 0, B), Unit(1, 0, B)]
    assert orders[1] == [Unit(0, 0, F), Unit(1, 0, F), Unit(0, 1, F), Unit(0, 1, B),
                         Unit(1, 1, F), Unit(1, 1, B), Unit(0, 0, B), Unit(1, 0, B)]


def test_interleaved_needs_microbatches_multiple_of_pp():
    with pytest.raises(ValueError, match="multiple of pp"):
        schedule("interleaved", pp=4, m=6, v=2)


@pytest.mark.parametrize("kind, pp, m, v", [
    ("gpipe", 1, 1, 1), ("gpipe", 4, 3, 1), ("1f1b", 4, 2, 1), ("1f1b", 5, 13, 1),
    ("interleaved", 4, 8, 2), ("interleaved", 3, 3, 4), ("interleaved", 1, 3, 2), ("interleaved", 8, 16, 4),
])
def test_orders_are_complete_and_deadlock_free(kind, pp, m, v):
    check_orders(schedule(kind, pp, m, v), m, v)


def test_check_orders_catches_a_deadlock():
    orders = schedule("1f1b", pp=2, m=2)
    orders[1] = [Unit(0, 0, F), Unit(1, 0, B), Unit(1, 0, F), Unit(0, 0, B)]  # B1 before F1
    with pytest.raises(ValueError, match="deadlock"):
        check_orders(orders, 2, 1)
    with pytest.raises(ValueError, match="exactly once"):
        check_orders([orders[0][:-1]] + [orders[1]], 2, 1)


def test_analytic_formula_values():
    assert analytic_bubble_fraction(1, 8) == 0.0
    assert analytic_bubble_fraction(4, 8) == pytest.approx(3 / 11)
    assert analytic_bubble_fraction(4, 8, 2) == pytest.approx(3 / 19)
    assert analytic_bubble_fraction(15, 36) == pytest.approx(14 / 50)


def _idle_fraction(kind, pp, m, v, send=0.0, fwd=1.0, bwd=2.0):
    C = pp * v
    unit = np.zeros((C, m, 2))
    unit[:, :, 0], unit[:, :, 1] = fwd / v, bwd / v
    run = run_pipeline(schedule(kind, pp, m, v), unit, np.full((C, 2), send))
    return 1.0 - m * (fwd + bwd) / run.end_s.max(), run


@pytest.mark.parametrize("kind, pp, m, v", [
    ("gpipe", 4, 8, 1), ("1f1b", 4, 8, 1), ("1f1b", 8, 3, 1), ("gpipe", 2, 1, 1),
    ("interleaved", 4, 8, 2), ("interleaved", 4, 4, 3), ("interleaved", 8, 16, 4),
])
def test_simulated_bubble_equals_formula_on_equal_stages(kind, pp, m, v):
    idle, _ = _idle_fraction(kind, pp, m, v)
    assert idle == pytest.approx(analytic_bubble_fraction(pp, m, v), abs=1e-9)


def test_transfers_and_a_slow_stage_add_idle_on_top_of_the_formula():
    base = analytic_bubble_fraction(4, 8)
    idle, run = _idle_fraction("1f1b", 4, 8, 1, send=0.2)
    assert idle > base + 0.01
    assert run.pp_exposed_s.sum() > 0
    unit = np.ones((4, 8, 2))
    unit[:, :, 1] = 2.0
    unit[2] *= 1.5  # one stage 50% slower
    run = run_pipeline(schedule("1f1b", 4, 8), unit, np.zeros((4, 2)))
    stage_busy = unit.sum(axis=(1, 2))
    idle = 1 - stage_busy.mean() / run.end_s.max()
    assert idle > base + 0.05


def test_sends_queue_on_the_senders_comm_stream():
    # Stage 0 finishes F0 at 1 and F1 at 2; each send takes 1.5 s, so F1's send waits for F0's.
    unit = np.zeros((2, 2, 2))
    unit[:, :, 0], unit[:, :, 1] = 1.0, 1.0
    run = run_pipeline(schedule("gpipe", 2, 2), unit, np.full((2, 2), 1.5))
    fwd_sends = [(c, i, t0, t1) for s, c, i, b, t0, t1 in run.sends if s == 0 and not b]
    assert fwd_sends == [(0, 0, 1.0, 2.5), (0, 1, 2.5, 4.0)]
    assert run.start_s[1, 1, 0] == 4.0  # stage 1's F1 waits for the queued transfer
