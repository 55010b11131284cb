"""The host floor of a training MoE layer pass (costmodel/train_host.py)."""

import os
import subprocess
import sys

import numpy as np
import pytest

from moesim.costmodel.host import default_host_spec
from moesim.costmodel.train_host import (
    RECENT_PASS_MS,
    RECENT_ROWS,
    SOURCE_ROWS,
    TRAIN_MOE_LAYER_US,
    compiled_step,
    implied_pass_us,
    moe_layer_floor_s,
)
from moesim.engine.training.host_floor import (
    HOST_NOTE_SHARE,
    apply_host_floor,
    host_wait_note,
    moe_layer_host_us,
)
from moesim.engine.training.layer_costs import BWD_EXPERTS, DISPATCH, EXPERTS
from moesim.errors import InputError
from moesim.loader import load_scenario
from moesim.simulate import simulate


def test_default_is_the_mean_of_its_source_rows():
    implied = [implied_pass_us(*row) for row in SOURCE_ROWS.values()]
    assert TRAIN_MOE_LAYER_US == pytest.approx(np.mean(implied), rel=0.01)


def test_floor_splits_as_te_grouped_mlp_cpu_time_and_sums_to_the_whole():
    f, b = moe_layer_floor_s(9000.0)
    assert f + b == pytest.approx(9e-3)
    assert b / f == pytest.approx(2.1 / 1.2)


def test_tpus_compile_the_step_and_get_no_floor():
    assert compiled_step("Google TPU v3") and not compiled_step("NVIDIA H100 SXM5 80GB")


def test_only_cuda_has_a_floor():
    assert default_host_spec("cuda").train_moe_layer_us == TRAIN_MOE_LAYER_US
    assert default_host_spec("mps").train_moe_layer_us == 0.0
    assert default_host_spec("cpu").train_moe_layer_us == 0.0


class _Datasheet:
    profile = None  # a datasheet cost model: the platform's defaults (CUDA for an H100)


ALL = np.ones(8, dtype=bool)


def test_a_short_pass_waits_for_the_host_and_a_long_one_does_not():
    f, b = moe_layer_floor_s(TRAIN_MOE_LAYER_US)
    moe = np.array([True, True, False])
    fwd = np.zeros((3, 2, 8))
    bwd = np.zeros((3, 2, 9))
    fwd[:, 0, 0], bwd[:, 0, 1] = 1e-3, 2e-3  # micro-batch 0: short passes
    fwd[:, 1, 0], bwd[:, 1, 1] = 1.0, 2.0  # micro-batch 1: longer than the floor
    wait_f, wait_b = apply_host_floor(fwd, bwd, moe, (f, b), ALL, EXPERTS, BWD_EXPERTS)
    assert fwd[:2, 0].sum(axis=-1) == pytest.approx([f, f])
    assert bwd[:2, 0].sum(axis=-1) == pytest.approx([b, b])
    assert fwd[:2, 0, EXPERTS] == pytest.approx([f - 1e-3] * 2) == wait_f[:2, 0]
    assert bwd[:2, 0, BWD_EXPERTS] == pytest.approx([b - 2e-3] * 2) == wait_b[:2, 0]
    assert fwd[:, 1].sum(axis=-1) == pytest.approx([1.0] * 3)  # long passes untouched
    assert fwd[2, 0].sum() == pytest.approx(1e-3) and wait_f[2, 0] == 0.0  # dense layer: no floor


def test_slots_not_counted_do_not_hide_the_host():
    f, b = moe_layer_floor_s(TRAIN_MOE_LAYER_US)
    fwd, bwd = np.zeros((1, 1, 8)), np.zeros((1, 1, 9))
    fwd[0, 0, EXPERTS], fwd[0, 0, DISPATCH] = 1e-3, 1.0  # a long all-to-all
    own_stream = ALL.copy()
    own_stream[DISPATCH] = False  # ... on its own stream
    wait_f, _ = apply_host_floor(fwd.copy(), bwd.copy(), np.array([True]), (f, b), own_stream, EXPERTS, BWD_EXPERTS)
    assert wait_f[0, 0] == pytest.approx(f - 1e-3)
    wait_f, _ = apply_host_floor(fwd.copy(), bwd.copy(), np.array([True]), (f, b), ALL, EXPERTS, BWD_EXPERTS)
    assert wait_f[0, 0] == 0.0


def test_the_plan_overrides_the_cost_model_and_tpus_get_none():
    s = load_scenario("mixtral-8x7b-h100-train")
    assert moe_layer_host_us(s, _Datasheet()) == TRAIN_MOE_LAYER_US
    assert moe_layer_host_us(load_scenario("mixtral-8x7b-h100-train", ["plan.moe_layer_host_us=123"]), _Datasheet()) == 123
    tpu = s.model_copy(update={"hardware": s.hardware.model_copy(update={
        "device": s.hardware.device.model_copy(update={"name": "Google TPU v3"})})})
    assert moe_layer_host_us(tpu, _Datasheet()) == 0.0


SHORT = ["workload.seq_len=256", "workload.global_batch_seqs=64", "plan.microbatches=1"]


def test_plan_sets_the_floor_and_the_summary_reports_the_wait():
    base = simulate(load_scenario("mixtral-8x7b-h100-train", SHORT)).summary
    off = simulate(load_scenario("mixtral-8x7b-h100-train", SHORT + ["plan.moe_layer_host_us=0"])).summary
    more = simulate(load_scenario("mixtral-8x7b-h100-train", SHORT + ["plan.moe_layer_host_us=20000"])).summary
    assert off["host_wait_s"] == 0.0 < base["host_wait_s"] < more["host_wait_s"] <= more["compute_s"]
    assert off["step_time_s"] < base["step_time_s"] < more["step_time_s"]
    # the wait is compute-stream time: with one pipeline stage the pipeline grows by what it adds
    # (the step by less: the longer backward hides more of the gradient sync)
    assert base["pipeline_s"] - off["pipeline_s"] == pytest.approx(base["host_wait_s"], rel=0.02)


@pytest.mark.parametrize("value", ["-1", "2e6", "lots"])
def test_a_bad_floor_is_one_error_line_naming_the_field(value):
    with pytest.raises(InputError) as err:
        load_scenario("mixtral-8x7b-h100-train", [f"plan.moe_layer_host_us={value}"])
    msg = str(err.value)
    assert "plan.moe_layer_host_us" in msg and "\n" not in msg


def test_the_host_note_says_how_long_at_which_floor_and_the_knob():
    assert host_wait_note(0.1, 1.0, 9200.0, False) == ""  # below the share: nothing to say
    assert host_wait_note(0.0, 0.0, 9200.0, False) == ""
    note = host_wait_note(HOST_NOTE_SHARE * 3.0, 3.0, 9200.0, False)
    assert "0.6 s of the 3 s step (20%)" in note and "9.2 ms per MoE layer pass" in note
    assert f"{RECENT_PASS_MS[0]:g}-{RECENT_PASS_MS[1]:g} ms" in note and "plan.moe_layer_host_us" in note
    own = host_wait_note(2.0, 3.0, 5000.0, True)
    assert "5 ms per MoE layer pass (plan.moe_layer_host_us)." in own and "2025" not in own


def test_recent_recipes_pass_faster_than_the_default_floor():
    assert RECENT_PASS_MS == (6.6, 8.2)
    assert RECENT_PASS_MS[0] < RECENT_PASS_MS[1] < TRAIN_MOE_LAYER_US / 1e3


@pytest.mark.parametrize("rid", sorted(RECENT_ROWS))
def test_recent_rows_steps_and_passes_are_the_tables(rid):
    """Each recent row's step is its published throughput's (global batch x seq / (tokens/s/GPU x GPUs)),
    its passes the scenario's MoE layers per stage x micro-batches."""
    from moesim.validation import DEFAULT_CSV, parse_scale, read_table, row_overrides, scenario_ref

    row = next(r for r in read_table(DEFAULT_CSV) if r["id"] == rid)
    s = load_scenario(scenario_ref(row["scenario"], DEFAULT_CSV.parent), row_overrides(row))
    step, passes = RECENT_ROWS[rid]
    assert 1 / parse_scale(row["scale"]) == s.hardware.n_devices and s.plan.pp == 1
    published_step = s.workload.global_batch_seqs * s.workload.seq_len / (float(row["published"]) * s.hardware.n_devices)
    assert step == pytest.approx(published_step, rel=2e-3)
    assert passes == s.model.n_moe_layers // s.plan.pp * s.plan.microbatches


def test_simulate_prints_the_host_note_only_for_a_run_that_waits():
    def run(*sets):
        args = [sys.executable, "-m", "moesim.cli", "simulate", "moesim/data/validation/qwen3-30b-a3b-h100-train.yaml"]
        for x in ("hardware.cluster.nodes=4", "plan.dp=32", "plan.ep=8", "plan.microbatches=8",
                  "workload.global_batch_seqs=256", "plan.recompute=none", *sets):
            args += ["-s", x]
        done = subprocess.run(args, capture_output=True, text=True, env={**os.environ, "COLUMNS": "200"})
        assert done.returncode == 0, done.stderr
        return done.stdout

    waits = run()  # TRN-37's run: about 40 % of the step waits for the host
    assert "note: the MoE layers wait for the host" in waits and "plan.moe_layer_host_us" in waits
    assert "note: the MoE layers wait" not in run("plan.moe_layer_host_us=0")
