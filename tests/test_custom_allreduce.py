"""Serving's TP all-reduce on the engines' custom kernels (one-shot / two-shot through peer memory),
fitted on published timings (moesim/data/custom_allreduce.csv), and workload.tp_allreduce."""

from __future__ import annotations

import numpy as np
import pytest

from moesim.costmodel import build_cost_model, comm
from moesim.costmodel import custom_allreduce as car
from moesim.engine.ops import block_ops, total_s
from moesim.engine.serving.decode_cost import IterationCost
from moesim.errors import InputError
from moesim.loader import scenario_from_dict


def serve(tp: int = 8, tp_allreduce: str | None = None, nodes: int = 1, per_node: int | None = None):
    w = {"kind": "serving", "arrival": {"process": "batch", "n_requests": 4},
         "prompt_tokens": {"dist": "fixed", "value": 64}, "output_tokens": {"dist": "fixed", "value": 8}}
    if tp_allreduce is not None:
        w["tp_allreduce"] = tp_allreduce
    return scenario_from_dict({"name": "ar", "model": {"preset": "mixtral-8x7b", "dtype": "bf16"},
                               "hardware": {"preset": "h100-sxm", "node": {"devices_per_node": per_node or tp},
                                            "cluster": {"nodes": nodes}},
                               "plan": {"dp": 1, "tp": tp}, "workload": w})


def test_formulas_by_hand():
    # one-shot: 5 us + 7 peers x 1 MB at 100 GB/s = 5 + 70 us; two-shot: 5 us + 2 * 7/8 MB / 100 GB/s
    assert float(comm.one_shot_allreduce_s(1e6, 8, 100.0, 5e-6)) == pytest.approx(75e-6)
    assert float(comm.two_shot_allreduce_s(1e6, 8, 100.0, 5e-6)) == pytest.approx(5e-6 + 17.5e-6)
    assert float(comm.one_shot_allreduce_s(0.0, 8, 100.0, 5e-6)) == 0.0  # nothing to reduce
    assert float(comm.one_shot_allreduce_s(1e6, 1, 100.0, 5e-6)) == 0.0  # one rank


def test_refit_gives_the_shipped_constants():
    rows = car.load_points(use="fit")
    assert len(rows) >= 40
    assert car.fit_points(rows, "one_shot") == (car.ONE_SHOT_LATENCY_US, car.ONE_SHOT_LINK_FRACTION)
    assert car.fit_points(rows, "two_shot") == (car.TWO_SHOT_LATENCY_US, car.TWO_SHOT_LINK_FRACTION)


@pytest.mark.parametrize("algorithm, median, worst", [("one_shot", 0.05, 0.15), ("two_shot", 0.10, 0.30)])
def test_fit_rows_agree(algorithm, median, worst):
    errors = [abs(car.predict_us(r) / r["latency_us"] - 1) for r in car.load_points(use="fit")
              if r["algorithm"] == algorithm]
    assert np.median(errors) <= median and max(errors) <= worst


def test_held_out_rows_agree():
    """Rows the fit never saw: SGLang's TensorRT-LLM-derived kernel on 2/4/8 H100 and MSCCL++'s
    one-shot on 8 H200, 2 KiB-4 MiB (decode-step messages)."""
    rows = car.load_points(use="holdout")
    assert len(rows) >= 20 and {r["world_size"] for r in rows} == {2, 4, 8}
    errors = {id(r): car.predict_us(r) / r["latency_us"] - 1 for r in rows}
    assert np.median(np.abs(list(errors.values()))) <= 0.15
    assert all(abs(errors[id(r)]) <= 0.25 for r in rows if r["world_size"] == 8)


def test_custom_is_never_slower_than_the_ring_and_wins_on_small_messages():
    cm = build_cost_model(serve().hardware)
    nbytes = np.array([8 * 4096 * 2.0, 64 * 4096 * 2.0, 2048 * 4096 * 2.0, 64e6])  # decode batches 8..2048, 64 MB
    ring, custom = cm.allreduce_s(nbytes, 8, 1), cm.allreduce_s(nbytes, 8, 1, "custom")
    assert np.all(custom <= ring)
    assert custom[0] < 0.5 * ring[0]  # a batch-8 decode message: latency-bound, one sync instead of 14 ring steps
    assert custom[-1] == pytest.approx(ring[-1])  # 64 MB: the ring's bandwidth wins, as the engines switch to NCCL


def test_a_group_spanning_nodes_runs_the_ring():
    cm = build_cost_model(serve(tp=16, nodes=2, per_node=8).hardware)
    assert float(cm.allreduce_s(65536.0, 16, 1, "custom")) == pytest.approx(float(cm.allreduce_s(65536.0, 16, 1)))


def test_unknown_algorithm_is_refused():
    cm = build_cost_model(serve().hardware)
    with pytest.raises(ValueError, match="nccl, custom"):
        cm.allreduce_s(1024.0, 8, 1, "magic")


@pytest.mark.parametrize("setting, algorithm", [(None, "custom"), ("custom", "custom"), ("nccl", "nccl")])
def test_workload_setting_picks_the_kernels(setting, algorithm):
    s = serve(tp_allreduce=setting)
    cm = build_cost_model(s.hardware)
    cost = IterationCost(s, cm, np.random.default_rng(0), max_tokens=8)
    ops = [op for op in block_ops(cost.dims, cost.dtypes, True, 8, np.ones(8), np.ones(8), expert_tokens=np.ones(8))
           if op.stream == "tp_comm"]
    assert len(ops) == 2 and {op.args["algorithm"] for op in ops} == {algorithm}
    expected = 2 * float(cm.allreduce_s(8 * s.model.d_model * 2.0, 8, 1, algorithm))
    assert float(total_s(cm, ops)) == pytest.approx(expected)


def test_nccl_setting_makes_small_batch_decode_slower():
    import moesim

    fast, slow = (moesim.simulate(serve(tp_allreduce=a)).summary for a in ("custom", "nccl"))
    assert slow["tpot_mean_s"] > fast["tpot_mean_s"]
    assert slow["tp_comm_fraction"] > fast["tp_comm_fraction"]


def test_bad_setting_is_refused_in_one_line():
    with pytest.raises(InputError) as e:
        serve(tp_allreduce="ring")
    msg = str(e.value)
    assert "tp_allreduce" in msg and "custom" in msg and "nccl" in msg and "\n" not in msg.strip()
