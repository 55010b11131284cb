"""Calibration on CPU: a tiny end-to-end run, the fits, validation, and the CLI command's promises."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
typer = pytest.importorskip("typer")
import moesim.calibrate.run as run_mod
import moesim.calibrate.validate as validate_mod
from moesim.calibrate.fit import fit_gemm_table, fit_relative_nnls, held_out, log2_nodes
from moesim.calibrate.fit_local import hardware_for
from moesim.calibrate.grids import grid_for, tiny_grid
from moesim.calibrate.predict import moe_layer_s
from typer.testing import CliRunner

from moesim.cli_calibrate import calibrate_command
from moesim.costmodel import cost_model
from moesim.costmodel.profile import load_profile, save_profile
from moesim.errors import InputError, RunError


@pytest.fixture(scope="module")
def tiny():
    """(profile, rows) of one tiny calibration on CPU (seconds)."""
    p = run_mod.plan("cpu", grid=tiny_grid(), threads=1)
    return run_mod.calibrate(p, device_name="test cpu")


def test_tiny_calibration_fits_every_part(tiny):
    prof, rows = tiny
    assert prof.device == "test cpu" and prof.platform == "cpu" and prof.dtype == "fp32"
    assert {"torch", "python", "threads"} <= set(prof.framework)
    assert prof.grouped is not None and prof.attention is not None and prof.moe_overhead is not None
    assert prof.elementwise.activation is not None and prof.elementwise.router is not None
    assert prof.dispatch is not None and prof.gemm_rows is not None
    assert set(prof.fit_error) == {"memory", "gemm", "grouped", "attention", "gemm_rows", "activation", "router",
                                   "dispatch", "moe_layer"}
    for e in prof.fit_error.values():
        assert e.rows_fit > 0 and np.isfinite(e.median_abs_pct)
    assert {r.kind for r in rows} == {"copy", "gemm", "gemm_tile", "grouped", "attn_prefill", "attn_decode", "router",
                                      "activation", "dispatch", "layer"}
    # how it was timed: every point with its spread, the load before and after
    t = prof.timing
    assert t.points == len(rows) == len(t.point_spreads) and t.rounds == 1 and t.cpus >= 1 and t.threads == 1
    assert {p.kind for p in t.point_spreads} == {r.kind for r in rows} and all(p.us > 0 for p in t.point_spreads)
    assert len(t.load_before) in (0, 3) and t.precision_pct == 3.0


def test_profile_round_trip(tmp_path, tiny):
    prof, _ = tiny
    assert load_profile(save_profile(prof, tmp_path / "cpu.yaml")) == prof


def test_fitted_cost_model_moves_the_right_way(tiny):
    prof, _ = tiny
    cm = cost_model(hardware_for(prof), prof)
    t = cm.gemm_s(np.array([1, 16, 256, 4096]), 256, 64, "fp32")
    assert np.all(t > 0) and np.all(np.diff(t) > 0)
    uniform = [moe_layer_s(cm, n, 64, 128, 8, 2, [n * 2 // 8] * 8) for n in (8, 64, 512, 4096)]
    assert np.all(np.diff(uniform) > 0)
    # the same tokens on fewer experts: fewer weights read, fewer loop steps
    assert moe_layer_s(cm, 512, 64, 128, 8, 2, [256, 256] + [0] * 6) < uniform[2]


def test_quick_grid_size_is_bounded():
    """--quick stays under 3 minutes on 2 shared cores: about 600 points of about 10 ms (CPU time)
    each per round, 3 rounds, extra rounds only within a 110 s budget."""
    g = grid_for("cpu", quick=True)
    assert g.points() < 620 and g.rounds == 3 and g.min_time_s <= 0.01
    assert g.max_rounds <= 6 and g.budget_s <= 110 and g.precision == 0.03
    assert grid_for("cpu", quick=False).count() > g.count()
    gpu = grid_for("cuda", quick=True)
    assert gpu.budget_s <= 100 and not gpu.grouped_mid_experts  # no cache edge to find on a GPU


def test_fit_helpers_recover_known_parameters():
    b = np.logspace(3, 9, 20)
    t = 2e-6 + b / 50e9
    launch, inv_bw = fit_relative_nnls(np.column_stack([np.ones_like(b), b]), t)
    assert launch == pytest.approx(2e-6, rel=1e-6) and 1 / inv_bw == pytest.approx(50e9, rel=1e-6)
    m = np.repeat([1, 4, 16, 64, 256], 3)
    w = np.tile([1e4, 1e5, 1e6], 5)
    eff = 0.01 * m ** 0.5 * (w / 1e4) ** 0.1
    table = fit_gemm_table(m, w, eff, log2_nodes(m), log2_nodes(w), smooth=0.01)
    assert table.lookup(m, w) == pytest.approx(eff, rel=0.05)
    share = np.mean([held_out("gemm", i) for i in range(2000)])
    assert 0.15 < share < 0.25


def test_validation_reports_every_point(tiny, monkeypatch):
    prof, _ = tiny
    monkeypatch.setattr(validate_mod, "grid_for", lambda dev, quick: tiny_grid())
    report = validate_mod.validate(prof, "cpu", points=[(8, 1, 16, 1.0), (8, 2, 64, 1.25)], min_time_s=0.005, rounds=1)
    assert [(r.experts, r.top_k, r.tokens) for r in report.rows] == [(8, 1, 16), (8, 2, 64)]
    assert all(r.predicted_s > 0 and r.measured_s > 0 for r in report.rows)
    assert "median" in report.lines()[-1] and report.p90_abs_pct >= report.median_abs_pct


def test_validation_grid_is_the_issue_grid():
    pts = validate_mod.validation_points()
    assert {p[0] for p in pts} == {8, 16, 64} and {p[1] for p in pts} == {1, 2}
    assert {p[3] for p in pts} == {1.0, 1.25} and min(p[2] for p in pts) == 1 and max(p[2] for p in pts) == 4096


# ---------------------------------------------------------------- the CLI command


@pytest.fixture
def cli(monkeypatch):
    monkeypatch.setattr(run_mod, "grid_for", lambda dev, quick: tiny_grid())
    monkeypatch.setattr(validate_mod, "grid_for", lambda dev, quick: tiny_grid())
    monkeypatch.setattr(validate_mod, "validation_points", lambda quick=False: [(8, 2, 16, 1.0)])
    app = typer.Typer()
    app.command("calibrate")(calibrate_command)
    app.command("other")(lambda: None)
    runner = CliRunner()
    return lambda *args: runner.invoke(app, ["calibrate", *args])


def test_cli_writes_profile_and_validates(tmp_path, cli):
    out = tmp_path / "cpu.yaml"
    res = cli("--device", "cpu", "--quick", "--threads", "1", "--out", str(out), "--validate",
              "--measurements", str(tmp_path / "m.csv"))
    assert res.exit_code == 0, res.output
    assert load_profile(out).platform == "cpu" and (tmp_path / "m.csv").is_file()
    assert "written to" in res.output and "p90" in res.output and "load average" in res.output
    assert "median signed" in res.output and "noise floor" in res.output
    again = cli("--out", str(out), "--validate", "--profile", str(out), "--threads", "1")
    assert again.exit_code == 0, again.output
    assert "predicted_ms" in again.output


@pytest.mark.parametrize("args, message", [
    (["--device", "tpu"], "--device tpu"),
    (["--dtype", "int8"], "--dtype int8"),
    (["--profile", "x.yaml"], "only used with --validate"),
])
def test_cli_bad_flags_are_input_errors(tmp_path, cli, args, message):
    res = cli("--out", str(tmp_path / "p.yaml"), *args)
    assert isinstance(res.exception, InputError) and message in str(res.exception)


def test_cli_refuses_to_overwrite_without_force(tmp_path, cli):
    out = tmp_path / "p.yaml"
    out.write_text("keep me")
    res = cli("--out", str(out))
    assert isinstance(res.exception, InputError) and "--force" in str(res.exception)
    assert out.read_text() == "keep me"


def test_cli_foreign_profile_needs_force(tmp_path, cli, tiny):
    prof, _ = tiny
    path = save_profile(prof.model_copy(update={"device": "Some Other CPU"}), tmp_path / "other.yaml")
    res = cli("--validate", "--profile", str(path), "--threads", "1")
    assert isinstance(res.exception, InputError) and "Some Other CPU" in str(res.exception)
    assert cli("--validate", "--profile", str(path), "--threads", "1", "--force").exit_code == 0


def test_ctrl_c_leaves_no_profile(tmp_path, cli, monkeypatch):
    def interrupted(*_a, **_k):
        raise KeyboardInterrupt

    monkeypatch.setattr(run_mod, "measure", interrupted)
    out = tmp_path / "p.yaml"
    res = cli("--out", str(out))
    assert isinstance(res.exception, RunError) and "no profile written" in str(res.exception)
    assert list(tmp_path.iterdir()) == []


COUNTS = [5, 0, 3, 0, 0, 7, 0, 1]  # 4 busy experts, 16 kept assignments


def _layer_gain_s(prof, section: str, field: str, by: float) -> float:
    """How much longer the reference layer over COUNTS takes with ``prof.section.field`` raised by ``by``."""
    part = getattr(prof, section)
    bumped = prof.model_copy(update={section: part.model_copy(update={field: getattr(part, field) + by})})
    base, more = (moe_layer_s(cost_model(hardware_for(p), p), 8, 64, 128, 8, 2, COUNTS) for p in (prof, bumped))
    return more - base


def test_layer_pays_the_per_expert_loop_cost_once_per_busy_expert(tiny):
    """Both expert GEMMs run in one loop step per busy expert: raising the grouped per-expert cost
    by d raises the layer by busy * d (not 2 * busy * d, as two separate grouped calls would)."""
    assert _layer_gain_s(tiny[0], "grouped", "per_expert_overhead_us", 10) == pytest.approx(4 * 10e-6, rel=1e-6)


def test_layer_pays_the_overhead_per_kept_assignment(tiny):
    """The fitted host overhead has a term per computed (kept) assignment: raising it by d raises the
    layer by sum(kept) * d."""
    assert _layer_gain_s(tiny[0], "moe_overhead", "per_assignment_us", 1.0) == pytest.approx(16 * 1e-6, rel=1e-6)


def test_overhead_fit_recovers_known_terms(tiny):
    """Layer rows built from the cost model's kernels plus known fixed, per-expert, per-assignment
    and capacity terms: the relative NNLS gets each back."""
    from moesim.calibrate.fit_local import _fit_overhead, layer_pred_s
    from moesim.calibrate.microbench import Measurement

    prof, _ = tiny
    bare = prof.model_copy(update={"moe_overhead": None})
    cm = cost_model(hardware_for(bare), bare)
    rng = np.random.default_rng(0)
    rows = []
    for e, k, t, cf in [(e, k, t, cf) for e in (4, 12) for k in (1, 3) for t in (2, 8, 32, 128, 512) for cf in (None, 1.5)]:
        counts = np.bincount(rng.integers(0, e, t * k), minlength=e).tolist()
        params = dict(tokens=t, d_model=64, ffn=128, experts=e, top_k=k, counts=counts, capacity_factor=cf)
        r = Measurement("layer", params, 1.0)
        extra = (40 + 12 * np.count_nonzero(counts) + 0.5 * sum(counts) + (30 if cf else 0)) * 1e-6
        rows.append(Measurement("layer", params, layer_pred_s(cm, r, "fp32") + extra))
    spec, _ = _fit_overhead(rows, cm, "fp32", True)
    assert (spec.fixed_us, spec.per_busy_expert_us, spec.per_assignment_us, spec.capacity_us) == pytest.approx(
        (40, 12, 0.5, 30), rel=1e-3)


def test_triton_path_runs_one_activation_over_all_rows(tiny):
    prof, _ = tiny
    cm = cost_model(hardware_for(prof), prof)
    counts = np.array([5, 0, 3, 0, 0, 7, 0, 1])
    per_expert = float(np.sum(cm.activation_s(counts[counts > 0] * 128, True, 4.0)))
    once = float(cm.activation_s(counts.sum() * 128, True, 4.0))
    loop = moe_layer_s(cm, 8, 64, 128, 8, 2, counts)
    fused = moe_layer_s(cm, 8, 64, 128, 8, 2, counts, loop=False)
    assert fused - loop == pytest.approx(once - per_expert, rel=1e-9) and once < per_expert


@pytest.mark.slow
def test_quick_calibration_end_to_end(tmp_path):
    """The real ``--quick`` grid (about 95 s on one core), collectives included, as a user runs it:
    every part fitted with finite held-out error, the profile round-trips, and the held-out
    whole-layer runs are priced within a loose bound (a broken fit lands far outside it; the
    fidelity figures themselves come from bench/bench_calibrate_validate.py)."""
    p = run_mod.plan("cpu", quick=True)
    prof, rows = run_mod.calibrate(p)
    parts = {"memory", "gemm", "grouped", "attention", "activation", "router", "moe_layer"}
    assert parts <= set(prof.fit_error)
    assert all(np.isfinite(e.median_abs_pct) and e.rows_held_out > 0 for k, e in prof.fit_error.items() if k in parts)
    assert prof.fit_error["moe_layer"].median_abs_pct < 50
    assert {r.kind for r in rows} >= {"gemm", "grouped", "copy", "router", "activation", "layer"}
    assert load_profile(save_profile(prof, tmp_path / "quick.yaml")) == prof


def test_scenario_simulates_on_a_locally_calibrated_profile(tmp_path, tiny):
    """A scenario names this machine's profile; the engine prices its kernels from it, including the
    measured router top-k and activation (a faster router table makes the step faster)."""
    from moesim import scenario_from_dict, simulate

    prof, _ = tiny
    path = save_profile(prof, tmp_path / "cpu.yaml")
    raw = {
        "model": {"preset": "switch-base-128", "n_layers": 2},
        "hardware": {"name": "this-cpu", "profile": str(path), "node": {"devices_per_node": 1, "intra_bw_gbps": 20},
                     "device": {"name": "test cpu", "peak_tflops": {"fp32": 0.1}, "mem_bw_gbps": 20, "mem_gib": 16,
                                "power_w": 100, "usd_per_hour": 0.1}},
        "plan": {"dp": 1, "tp": 1, "pp": 1, "ep": 1, "microbatches": 1},
        "workload": {"kind": "training", "global_batch_seqs": 2, "seq_len": 128},
    }
    base = simulate(scenario_from_dict(raw)).summary["step_time_s"]
    router = prof.elementwise.router
    quicker = prof.model_copy(update={"elementwise": prof.elementwise.model_copy(update={
        "router": router.model_copy(update={"us": (np.asarray(router.us) / 100).tolist()})})})
    raw["hardware"]["profile"] = str(save_profile(quicker, tmp_path / "quicker.yaml"))
    faster = simulate(scenario_from_dict(raw)).summary["step_time_s"]
    assert 0 < faster < base
