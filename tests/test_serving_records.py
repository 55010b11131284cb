"""The serving engine's iteration records: a decode window kept as one block gives the rows the
iterations would give one by one, and a run's rows come out in (replica, slot, start) order."""

import numpy as np
import pytest

import moesim
from moesim.engine.serving.metrics import ITERATION_COLUMNS
from moesim.engine.serving.records import IterationLog

C = ITERATION_COLUMNS


def _row(e, start, end, kv, dropped, **fields):
    row = dict.fromkeys(C, 0.0)
    row.update(replica=e, start_s=start, end_s=end, stage0_end_s=end, kv_tokens=kv, dropped_slots=dropped, **fields)
    return tuple(row[c] for c in C)


def test_a_window_block_gives_the_rows_of_its_iterations_one_by_one():
    log, flat = IterationLog(2), {0: [], 1: []}
    ends = np.array([0.5, 0.75, 1.25])
    # engine 1 records first: the rows still come out engine by engine
    step = _row(1, 0.0, 0.1, 40, 0.0, batch_seqs=3, prefill_tokens=37, decode_tokens=2, running=3)
    log.add(1, step)
    flat[1].append(step)
    shared = _row(0, 0.0, 0.0, 0, 0.0, batch_seqs=4, decode_tokens=4, running=4, queued=2, tp_comm_s=1e-4)
    log.add_window(0, shared, 0.25, ends, np.array([10, 14, 18]), [0.0, 1.0, 2.0])
    flat[0] += [_row(0, s, e, kv, d, batch_seqs=4, decode_tokens=4, running=4, queued=2, tp_comm_s=1e-4)
                for s, e, kv, d in zip([0.25, *ends[:-1]], ends, [10, 14, 18], [0.0, 1.0, 2.0])]
    later = _row(0, 1.25, 1.5, 19, 0.0, batch_seqs=1, decode_tokens=1, running=1)
    log.add(0, later)
    flat[0].append(later)
    # a second window: its first iteration starts at its own start, not where the last window ended
    log.add_window(0, shared, 1.5, np.array([1.75, 2.0]), np.array([20, 21]), [0.0, 0.0])
    flat[0] += [_row(0, 1.5, 1.75, 20, 0.0, batch_seqs=4, decode_tokens=4, running=4, queued=2, tp_comm_s=1e-4),
                _row(0, 1.75, 2.0, 21, 0.0, batch_seqs=4, decode_tokens=4, running=4, queued=2, tp_comm_s=1e-4)]
    got = log.array()
    assert got.shape == (7, len(C))
    np.testing.assert_array_equal(got, np.array(flat[0] + flat[1], dtype=float))


def test_an_empty_log_has_no_rows():
    assert IterationLog(3).array().shape == (0, len(C))


@pytest.mark.parametrize("name, sets", [
    ("llama-2-7b-a100-serve", ["workload.arrival.n_requests=150"]),
    ("mixtral-8x7b-h100-serve-online", ["workload.arrival.n_requests=300"]),
    ("llama-2-7b-a100-serve", ["workload.arrival.n_requests=100", "plan.dp=1", "plan.pp=2"]),
])
def test_a_runs_rows_are_in_replica_slot_start_order(name, sets):
    r = moesim.simulate(moesim.load_scenario(name, sets))
    it = r.tables["iterations"]
    order = np.lexsort((it["start_s"], it["slot"], it["replica"]))
    assert len(order) == r.summary["iterations"] > 0
    np.testing.assert_array_equal(order, np.arange(order.size))
