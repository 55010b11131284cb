"""Where a training step's time goes (``training/anatomy.py``): the compute split by what its ops do,
beside the summary's other terms, so the parts add up to the step and the compute parts to ``compute_s``,
and the table is printed, saved, shown again and drawn."""

from __future__ import annotations

import numpy as np
import pytest

import moesim
from moesim.cli import main
from moesim.engine.training.anatomy import COMPUTE_PARTS, PARTS, compute_part, compute_part_key

#: Shipped training scenarios, some with overrides that reach the terms the split must take out of an
#: op: ZeRO-3's waits, the collectives full recompute re-runs, a context-parallel ring, DualPipe, a split
#: backward with held head gradients, LoRA's frozen weights.
CASES = [
    ("mixtral-8x7b-h100-train", []),
    ("mixtral-8x7b-h100-train", ["plan.zero_stage=3", "plan.recompute=full"]),
    ("mixtral-8x22b-h100-train", []),  # TP2 PP4 VP14 CP2 EP8
    ("deepseek-v3-h800-train", []),  # DualPipe, EP64
    ("llama-2-7b-a100-train", ["plan.pp=2", "plan.dp=4", "plan.schedule=zb-h1"]),  # split backward
    ("llama-2-7b-a100-train", ["plan.pp=2", "plan.dp=4", "plan.schedule=1f1b", "plan.defer_head_wgrad=8"]),
    ("mixtral-8x7b-lora-8xh100", []),
]


def _run(name: str, sets: list[str]):
    return moesim.simulate(moesim.load_scenario(name, sets))


def _seconds(step: dict) -> dict[str, float]:
    return dict(zip(step["part"], step["seconds"], strict=True))


@pytest.mark.parametrize("name, sets", CASES)
def test_the_parts_add_up_to_the_step_and_the_compute_parts_to_compute_s(name, sets):
    r = _run(name, sets)
    step, s = r.tables["train_step"], r.summary
    secs = _seconds(step)
    assert step["part"][-1] == "total" and secs["total"] == pytest.approx(s["step_time_s"], rel=1e-12)
    assert set(secs) - {"total"} <= set(PARTS) and all(v >= 0 for v in secs.values())
    assert sum(v for p, v in secs.items() if p != "total") == pytest.approx(s["step_time_s"], rel=1e-9)
    assert sum(secs.get(p, 0.0) for p in COMPUTE_PARTS) == pytest.approx(s["compute_s"], rel=1e-9)
    for part in PARTS[len(COMPUTE_PARTS):]:  # the rest are the summary's own terms
        assert secs.get(part, 0.0) == pytest.approx(s[f"{part}_s"], rel=1e-9, abs=1e-15)
    for part in COMPUTE_PARTS:  # and the compute rows are the summary's compute_<part>_s (sweeps, plots, --json)
        assert s[compute_part_key(part)] == pytest.approx(secs.get(part, 0.0), rel=1e-12, abs=1e-15)
    assert sum(step["share"][:-1]) == pytest.approx(1.0) and step["share"][-1] == 1.0
    assert set(step["microbatches"]) == {moesim.load_scenario(name, sets).plan.microbatches}


def test_the_compute_parts_follow_what_the_model_runs():
    dense = _seconds(_run("llama-2-7b-a100-train", []).tables["train_step"])
    moe = _seconds(_run("mixtral-8x7b-h100-train", []).tables["train_step"])
    assert "experts" not in dense and "router" not in dense and dense["dense_ffn"] > dense["attention"] > 0
    assert "dense_ffn" not in moe and moe["experts"] > moe["attention"] > moe["router"] > 0
    # full recompute re-runs every forward: a part of its own, and the step grows by about it
    full = _seconds(_run("llama-2-7b-a100-train", ["plan.recompute=full"]).tables["train_step"])
    assert full["recompute"] > 0.25 * (dense["attention"] + dense["dense_ffn"])
    assert full["total"] - dense["total"] == pytest.approx(full["recompute"] - dense.get("recompute", 0.0), rel=0.05)


def test_zero3_waits_and_the_cp_ring_are_their_own_parts_not_the_ops_they_sit_in():
    z1 = _seconds(_run("mixtral-8x7b-h100-train", []).tables["train_step"])
    z3 = _seconds(_run("mixtral-8x7b-h100-train", ["plan.zero_stage=3"]).tables["train_step"])
    assert z3["zero_gather_exposed"] > z1["zero_gather_exposed"]
    assert z3["attention"] == pytest.approx(z1["attention"], rel=1e-9)  # the waits left the ops they precede
    cp = _run("mixtral-8x22b-h100-train", [])
    assert cp.summary["cp_comm_s"] > 0
    assert _seconds(cp.tables["train_step"])["cp_comm"] == pytest.approx(cp.summary["cp_comm_s"])


def test_every_op_kind_has_a_compute_part():
    assert compute_part("experts_wgrad") == "experts" and compute_part("lm_head") == "embedding_head"
    with pytest.raises(ValueError, match="no compute part"):
        compute_part("new_op")  # a new op kind must be given a part, not dropped from the table


def test_simulate_prints_saves_shows_and_draws_the_step(tmp_path, capsys):
    out = tmp_path / "r"
    assert main(["simulate", "mixtral-8x7b-h100-train", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "training step: 16 micro-batches of 4,096 tokens per device" in printed
    assert "experts (routed and shared)" in printed and "expert all-to-alls (exposed)" in printed
    saved = (out / "train_step.csv").read_text().splitlines()
    assert saved[0] == "part,seconds,share,microbatches,tokens_per_microbatch" and saved[-1].startswith("total,")
    assert main(["show", str(out)]) == 0
    assert capsys.readouterr().out == printed
    assert main(["plot", str(out), "--kind", "breakdown", "--out", str(tmp_path / "b"), "--format", "png"]) == 0
    assert (tmp_path / "b.png").read_bytes().startswith(b"\x89PNG")


def test_a_broken_train_step_csv_is_refused_in_one_line(tmp_path, capsys):
    out = tmp_path / "r"
    assert main(["simulate", "llama-2-7b-a100-train", "--out", str(out), "--json"]) == 0
    capsys.readouterr()
    (out / "train_step.csv").write_text("part,seconds,share,microbatches,tokens_per_microbatch\nattention,x,1,4,8\n")
    for argv in (["show", str(out)], ["plot", str(out), "--kind", "breakdown", "--out", str(tmp_path / "b")]):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert "train_step.csv: not a moesim training-step table" in err and "Traceback" not in err
    assert not list(tmp_path.glob("b.*"))


def test_the_breakdown_plot_draws_one_bar_per_part():
    from moesim.plots import plot_result

    r = _run("mixtral-8x22b-h100-train", [])
    fig = plot_result("breakdown", r)
    labels = [t.get_text() for t in fig.axes[0].get_yticklabels()]
    assert len(labels) == len(r.tables["train_step"]["part"]) - 1 and labels[0].startswith("attention block")
    assert fig.axes[0].get_xlabel() == "seconds in the step"


def test_a_sweeps_breakdown_stacks_the_steps_parts_and_adds_up_to_each_step():
    from moesim.plots import plot_sweep

    rows = [dict(_run("mixtral-8x7b-h100-train", [f"routing.capacity_factor={cf}"]).summary, status="ok",
                 **{"routing.capacity_factor": cf}) for cf in (1.0, 1.5)]
    fig = plot_sweep("breakdown", rows, "cf")
    ax = fig.axes[0]
    stacked = [t.get_text() for t in ax.get_legend().get_texts()]
    # labelled as the step table prints its parts
    assert stacked[0] == "attention block (norms, projections, core)" and "experts (routed and shared)" in stacked
    assert "compute" not in stacked
    assert "straggler_wait" not in stacked  # within compute and all-to-all: stacking it would count it twice
    heights = np.zeros(2)
    for bar in ax.patches:
        heights[round(bar.get_x() + bar.get_width() / 2)] += bar.get_height()
    assert heights == pytest.approx([r["step_time_s"] for r in rows], rel=1e-9)
    assert rows[1]["compute_experts_s"] > rows[0]["compute_experts_s"]  # capacity padding is expert compute


def test_the_host_wait_is_its_own_part_so_capacity_shows_in_the_experts_under_the_floor():
    """Switch-Base-128 waits for the host's MoE-layer floor: the step holds level across capacity factors, but
    the experts' GPU work (capacity padding) grows, and the wait is a part of its own, not inside the experts."""
    runs = [_run("switch-base-128-train", [f"routing.capacity_factor={cf}"]) for cf in (1.0, 2.0)]
    low, high = (_seconds(r.tables["train_step"]) for r in runs)
    assert low["host_wait"] > 0 and low["host_wait"] == pytest.approx(runs[0].summary["host_wait_s"], rel=1e-12)
    assert high["experts"] > 1.3 * low["experts"]  # twice the padded rows
    assert high["host_wait"] < low["host_wait"]  # the GPU work fills more of the floor
    # without the floor there is no wait, and the experts' work is what it was under the floor
    bare = _seconds(_run("switch-base-128-train", ["routing.capacity_factor=1.0", "plan.moe_layer_host_us=0"])
                    .tables["train_step"])
    assert "host_wait" not in bare and bare["experts"] == pytest.approx(low["experts"], rel=1e-9)


def test_an_older_sweep_row_with_the_wait_inside_its_experts_is_not_stacked_twice():
    from moesim.plot_breakdown import _seconds as stacked_s

    r = _run("switch-base-128-train", []).summary
    assert stacked_s(r, "host_wait_s") == r["host_wait_s"] > 0
    older = dict(r, compute_experts_s=r["compute_experts_s"] + r["host_wait_s"])  # as saved before the split
    assert stacked_s(older, "host_wait_s") == 0.0


def test_a_resumed_sweeps_bars_are_in_the_order_of_their_values():
    from moesim.plots import plot_sweep

    cfs = (1.0, 2.0, 1.5)  # 1.5 added by --resume: last in the file
    rows = [dict(_run("switch-base-128-train", [f"routing.capacity_factor={cf}"]).summary, status="ok",
                 **{"routing.capacity_factor": cf}) for cf in cfs]
    fig = plot_sweep("breakdown", rows, "cf")
    labels = [t.get_text() for t in fig.axes[0].get_xticklabels()]
    assert labels == ["cf=1.0", "cf=1.5", "cf=2.0"]
    heights = {}
    for bar in fig.axes[0].patches:  # each bar is its own point's step, moved with its label
        heights[round(bar.get_x() + bar.get_width() / 2)] = heights.get(round(bar.get_x() + bar.get_width() / 2), 0.0) \
            + bar.get_height()
    assert [heights[i] for i in range(3)] == pytest.approx([rows[0]["step_time_s"], rows[2]["step_time_s"],
                                                            rows[1]["step_time_s"]], rel=1e-9)
