"""Issue 16: noise-aware timing, the noise floor, the fitted physics terms, --validate --json, and
the one-shot GPU/MPS check scripts' no-device exit. Synthetic timing functions and fake clocks keep
every test deterministic and fast."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")  # kernels.timing and the calibration import torch
from moesim.calibrate.fit_dispatch import fit_dispatch
from moesim.calibrate.microbench import Measurement
from moesim.calibrate.validate import SUMMARY_KEYS, ValidationReport, ValidationRow
from moesim.kernels.timing import (
    PrecisionRule,
    iqr_spread,
    measure_interleaved,
    median_ci,
    outlier_index,
    split_outliers,
)

from moesim.costmodel import cost_model
from moesim.costmodel.profile import (
    DispatchSpec,
    RowTileSpec,
    load_default_profile,
    load_profile,
    save_profile,
)

ROOT = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------- statistics of one point


def test_spread_and_median_interval_formulas():
    xs = [1.0, 2.0, 3.0, 4.0, 5.0]  # inclusive quartiles 2 and 4
    assert iqr_spread(xs) == pytest.approx(2.0 / 3.0)
    assert median_ci(xs) == pytest.approx(1.57 * (2.0 / 3.0) / np.sqrt(5))
    assert median_ci([1.0]) == float("inf") and iqr_spread([1.0]) == 0.0
    assert median_ci([2.0, 2.0, 2.0]) == 0.0


def test_outliers_need_a_robust_and_a_relative_distance():
    rule = PrecisionRule(outlier_z=4.0, outlier_floor=0.06)
    assert outlier_index([1.0, 1.01, 0.99, 1.5], rule) == {3}
    assert split_outliers([1.0, 1.01, 0.99, 1.5], rule) == ([1.0, 1.01, 0.99], [1.5])
    assert outlier_index([1.0, 1.02, 1.05], rule) == set()  # within 6 % of the median: not an outlier
    assert outlier_index([1.0, 5.0], rule) == set()  # two samples: nothing to compare against


# ---------------------------------------------------------------- the interleaved scheduler


def _seq(values_by_point):
    """A sample function returning each point's values in order (and recording the call order)."""
    calls, pos = [], [0] * len(values_by_point)

    def sample(i):
        calls.append(i)
        v = values_by_point[i][pos[i] % len(values_by_point[i])]
        pos[i] += 1
        return v

    return sample, calls


def test_precise_points_stop_at_the_minimum_and_noisy_ones_run_to_the_cap():
    rule = PrecisionRule(target=0.03, min_samples=3, max_samples=6)
    steady = [1.0, 1.001, 0.999]
    noisy = [1.0, 1.2, 0.85, 1.1, 0.9, 1.15]  # stays wide: never within 3 %
    sample, _ = _seq([steady, noisy])
    run = measure_interleaved(2, sample, rule)
    assert len(run.points[0].samples) == 3 and run.points[0].converged(rule)
    assert len(run.points[1].samples) == 6 and not run.points[1].converged(rule)
    assert run.rounds == 6 and run.converged() == 1 and not run.out_of_time
    assert run.points[0].median(rule) == pytest.approx(1.0)


def test_a_point_converges_as_soon_as_its_interval_is_narrow():
    rule = PrecisionRule(target=0.03, min_samples=3, max_samples=8)
    sample, _ = _seq([[1.0, 1.08, 0.95, 1.0, 1.0, 1.0, 1.0, 1.0]])
    run = measure_interleaved(1, sample, rule)
    n = len(run.points[0].samples)
    assert 3 < n < 8  # needed more than the minimum, stopped before the cap
    assert run.points[0].ci(rule) <= 0.03 and median_ci(run.points[0].samples[:n - 1]) > 0.03


def test_an_outlier_is_set_aside_and_remeasured():
    rule = PrecisionRule(target=0.03, min_samples=3, max_samples=6)
    sample, _ = _seq([[1.0, 2.0, 1.01, 1.0, 1.0, 1.0]])
    run = measure_interleaved(1, sample, rule)
    st = run.points[0]
    assert st.samples[:4] == [1.0, 2.0, 1.01, 1.0]  # a fourth sample replaces the outlier
    assert st.outliers(rule) == 1 and len(st.kept(rule)) >= 3 and 2.0 not in st.kept(rule)
    assert st.median(rule) == pytest.approx(1.0, rel=0.01) and st.converged(rule)


def test_rounds_interleave_points_in_a_seeded_order():
    rule = PrecisionRule(min_samples=3, max_samples=3)
    sample, calls = _seq([[1.0]] * 5)
    measure_interleaved(5, sample, rule)
    rounds = [calls[i:i + 5] for i in range(0, 15, 5)]
    assert all(sorted(r) == list(range(5)) for r in rounds)  # every point once per round
    assert len({tuple(r) for r in rounds}) > 1  # shuffled differently per round
    sample2, calls2 = _seq([[1.0]] * 5)
    measure_interleaved(5, sample2, rule)
    assert calls2 == calls  # ... and the same way on a rerun


def test_the_budget_stops_extra_rounds_but_never_the_first_ones():
    now, taken = [0.0], [0, 0, 0]

    def sample(i):  # never precise (1.0, 1.3, 0.8, ...); each sample takes one fake second
        now[0] += 1.0
        taken[i] += 1
        return (1.0, 1.3, 0.8)[taken[i] % 3]

    rule = PrecisionRule(min_samples=2, max_samples=6)
    run = measure_interleaved(3, sample, rule, budget_s=4.0, clock=lambda: now[0])
    assert [len(p.samples) for p in run.points] == [2, 2, 2]  # 6 s > the 4 s budget, yet both first rounds ran
    assert run.out_of_time and run.rounds == 2
    now[0], taken[:] = 0.0, [0, 0, 0]
    free = measure_interleaved(3, sample, rule, budget_s=100.0, clock=lambda: now[0])
    assert [len(p.samples) for p in free.points] == [6, 6, 6] and not free.out_of_time and free.rounds == 6
    # guaranteed=1 (the calibration's --quick): a machine too busy for the minimum still stops in time
    now[0], taken[:] = 0.0, [0, 0, 0]
    busy = measure_interleaved(3, sample, PrecisionRule(min_samples=3, max_samples=6), budget_s=4.0,
                               clock=lambda: now[0], guaranteed=1)
    n = [len(p.samples) for p in busy.points]
    assert min(n) >= 1 and sum(n) == 5 and busy.out_of_time and busy.rounds == 2  # 3 in round 0, 2 before 4 s passed


def test_pairs_keep_both_halves_balanced():
    rule = PrecisionRule(target=0.03, min_samples=2, max_samples=6)
    sample, _ = _seq([[1.0, 1.3, 0.9, 1.2, 0.95, 1.25]])
    run = measure_interleaved(1, sample, rule, pairs=True)
    st = run.points[0]
    even = [x for x, r in zip(st.samples, st.rounds) if r % 2 == 0]
    odd = [x for x, r in zip(st.samples, st.rounds) if r % 2 == 1]
    assert len(st.samples) == 6 and len(even) == len(odd) == 3
    assert st.halves(rule) == (pytest.approx(np.median(even)), pytest.approx(np.median(odd)))


# ---------------------------------------------------------------- the noise floor and the summary


def _row(pred, meas, a, b):
    return ValidationRow(8, 2, 64, 1.0, 0, pred, meas, a, b, spread=0.02, samples=4)


def test_noise_floor_and_error_summary():
    rows = [_row(1.10, 1.0, 0.95, 1.05), _row(0.90, 1.0, 1.0, 1.0), _row(0.97, 1.0, 0.9, 1.1),
            _row(1.02, 1.0, 0.98, 1.02), _row(0.95, 1.0, 1.0, 1.0)]
    assert rows[0].noise_pct == pytest.approx(10.0) and rows[1].noise_pct == 0.0
    assert rows[2].noise_pct == pytest.approx(20.0) and rows[0].error_pct == pytest.approx(10.0)
    report = ValidationReport("cpu", 256, 512, rows)
    s = report.summary()
    assert set(SUMMARY_KEYS) <= set(s) and s["points"] == 5
    assert s["median_abs_error"] == pytest.approx(5.0)  # |10, -10, -3, 2, -5| -> 5
    assert s["median_signed_error"] == pytest.approx(-3.0)
    assert s["noise_median"] == pytest.approx(4.0)  # 10, 0, 20, 4, 0
    assert s["noise_p90"] == pytest.approx(np.percentile([10, 0, 20, 4, 0], 90))
    assert s["p90_abs_error"] == pytest.approx(10.0)
    text = "\n".join(report.lines())
    assert "median signed -3.0%" in text and "noise floor" in text
    doc = report.to_dict()
    assert len(doc["points"]) == 5 and doc["points"][0]["noise_pct"] == pytest.approx(10.0)


def test_shape_labels_parse_back():
    from moesim.calibrate.microbench import parse_shape, shape_label

    params = {"experts": 4, "top_k": 3, "tokens": 32, "capacity_factor": None, "d_model": 256, "ffn": 512,
              "counts": [1, 2], "dropped": 0}
    assert shape_label(params) == "experts=4 top_k=3 tokens=32 capacity_factor=None d_model=256 ffn=512"
    assert parse_shape(shape_label(params)) == {k: v for k, v in params.items() if k not in ("counts", "dropped")}
    assert parse_shape("capacity_factor=1.5 impl=loop") == {"capacity_factor": 1.5, "impl": "loop"}


def test_drift_summary_from_remeasured_calibration_points():
    from moesim.calibrate.validate import DriftRow

    report = ValidationReport("cpu", 256, 512, [_row(1.0, 1.0, 1.0, 1.0)],
                              drift=[DriftRow("a", 1.0, 1.1), DriftRow("b", 1.0, 0.95), DriftRow("c", 2.0, 2.2)])
    s = report.summary()
    assert s["drift_points"] == 3 and s["drift_median"] == pytest.approx(10.0)
    assert s["drift_p90"] == pytest.approx(10.0) and "drift since calibration" in report.lines()[-2]
    none = ValidationReport("cpu", 256, 512, [_row(1.0, 1.0, 1.0, 1.0)]).summary()
    assert none["drift_median"] is None and none["median_signed_error_drift_corrected"] is None


def test_drift_corrected_error_divides_the_machines_change_out():
    """Predictions right for the machine at calibration, measured on a machine now 10% slower: the
    raw error reads -9.1%, the drift-corrected one 0."""
    from moesim.calibrate.validate import DriftRow

    rows = [_row(1.0, 1.1, 1.1, 1.1), _row(2.0, 2.2, 2.2, 2.2), _row(0.5, 0.55, 0.55, 0.55)]
    report = ValidationReport("cpu", 256, 512, rows, drift=[DriftRow("a", 1.0, 1.1), DriftRow("b", 3.0, 3.3)])
    s = report.summary()
    assert s["median_signed_error"] == pytest.approx(-100 / 11, rel=1e-3)
    assert s["median_signed_error_drift_corrected"] == pytest.approx(0.0, abs=1e-9)
    assert s["median_abs_error_drift_corrected"] == pytest.approx(0.0, abs=1e-9)
    assert "drift divided out: median 0.0%, median signed +0.0%" in report.lines()[-1]


def test_an_unsplit_point_has_no_noise_figure():
    assert ValidationRow(8, 1, 1, 1.0, 0, 1.0, 1.0).noise_pct == 0.0


# ---------------------------------------------------------------- fitted physics terms


def test_dispatch_fit_recovers_a_known_cost():
    truth = DispatchSpec(fixed_us=20.0, per_assignment_ns=18.0, per_expert_ns=25.0, capacity_us=15.0,
                         capacity_per_assignment_ns=12.0)
    rows = [Measurement("dispatch", {"tokens": t, "experts": e, "top_k": k, "capacity_factor": cf},
                        float(truth.seconds(t * k, e, cf is not None)))
            for t in (1, 16, 256, 4096) for e in (4, 64) for k in (1, 3) for cf in (None, 1.5) if k < e]
    spec, err = fit_dispatch(rows)
    for field in DispatchSpec.model_fields:
        assert getattr(spec, field) == pytest.approx(getattr(truth, field), rel=2e-3), field
    assert err.rows_held_out > 0 and err.median_abs_pct < 0.5
    assert fit_dispatch([Measurement("gemm", {}, 1.0)]) == (None, None)


def test_row_tile_padding_rules():
    four = RowTileSpec(rows=4, remainder="binary")
    assert four.padded(np.array([3, 4, 5, 7, 11, 12, 13, 15])).tolist() == [3, 4, 8, 12, 16, 12, 16, 20]
    assert RowTileSpec(rows=64).padded(np.array([1, 64, 65, 129])).tolist() == [1, 64, 128, 192]
    assert RowTileSpec().padded(np.array([5.0])).tolist() == [5.0]


@pytest.mark.parametrize("truth", [RowTileSpec(rows=4, remainder="binary"), RowTileSpec(rows=16, remainder="ceil"),
                                   RowTileSpec()])
def test_row_tile_fit_finds_the_kernels_tile(truth):
    from moesim.calibrate.fit_local import fit_row_tile, hardware_for

    prof = load_default_profile("a100.yaml")
    cm = cost_model(hardware_for(prof), prof)
    rows = [Measurement("gemm_tile", {"m": m, "n": n, "k": 4096},
                        float(cm.gemm_s(float(truth.padded(m)), n, 4096, "bf16")))
            for m in (3, 5, 6, 7, 9, 10, 11, 13, 14, 15, 21, 27, 30, 45, 63, 100) for n in (8192, 4096)]
    spec, fit, held = fit_row_tile(rows, cm, "bf16")
    assert spec.padded(np.arange(1, 120)).tolist() == truth.padded(np.arange(1, 120)).tolist()
    assert len(fit) + len(held) == len(rows) and held


def test_reference_layer_prices_the_dispatch_and_the_padded_rows():
    from moesim.calibrate.fit_local import hardware_for
    from moesim.calibrate.predict import moe_layer_s

    prof = load_default_profile("a100.yaml")
    counts = [5, 0, 11, 3, 0, 9, 2, 2]
    base = moe_layer_s(cost_model(hardware_for(prof), prof), 16, 512, 1024, 8, 2, counts, dtype="bf16", capacity=True)
    disp = DispatchSpec(fixed_us=100.0, per_assignment_ns=1000.0, capacity_us=7.0)
    with_disp = prof.model_copy(update={"dispatch": disp})
    got = moe_layer_s(cost_model(hardware_for(with_disp), with_disp), 16, 512, 1024, 8, 2, counts, dtype="bf16",
                      capacity=True)
    assert got - base == pytest.approx(100e-6 + 32 * 1e-6 + 7e-6, rel=1e-9)
    # a measured tile past the MMA rows the device pads every expert's rows to itself (its grouped kernel's)
    counts = [140, 0, 150, 24, 0, 70, 64, 64]
    base = moe_layer_s(cost_model(hardware_for(prof), prof), 256, 512, 1024, 8, 2, counts, dtype="bf16", capacity=True)
    tiled = prof.model_copy(update={"gemm_rows": RowTileSpec(rows=128, remainder="ceil")})
    padded = moe_layer_s(cost_model(hardware_for(tiled), tiled), 256, 512, 1024, 8, 2, counts, dtype="bf16",
                         capacity=True)
    aligned = [256, 0, 256, 24, 0, 70, 64, 64]  # what the 128-row tile computes (up to one tile: the rows)
    cm = cost_model(hardware_for(prof), prof)
    gemms = lambda c: float(cm.grouped_gemm_s(np.array(c, float), 2048, 512, "bf16") - cm.grouped_loop_s(np.array(c, float), 2048)
                            + cm.grouped_gemm_s(np.array(c, float), 512, 1024, "bf16"))
    assert padded - base == pytest.approx(gemms(aligned) - gemms(counts), rel=1e-6) and padded > base


def test_profiles_without_the_new_fields_still_load(tmp_path):
    prof = load_default_profile("a100.yaml")
    assert prof.timing is None and prof.dispatch is None and prof.gemm_rows is None
    from moesim.costmodel.profile import TimedPoint, TimingSpec

    timed = prof.model_copy(update={"timing": TimingSpec(
        precision_pct=3.0, min_rounds=3, max_rounds=6, rounds=5, cpus=2, threads=1, load_before=[1.5, 1.2, 1.0],
        load_after=[2.0, 1.4, 1.1], points=1, converged=1,
        point_spreads=[TimedPoint(kind="gemm", shape="m=1 n=4 k=256", us=3.5, spread_pct=1.2, ci_pct=1.1, samples=3)])})
    again = load_profile(save_profile(timed, tmp_path / "p.yaml"))
    assert again == timed and again.timing.point_spreads[0].shape == "m=1 n=4 k=256"


# ---------------------------------------------------------------- the CLI's --json


def test_validate_json_has_every_point_and_the_summary(tmp_path, monkeypatch):
    typer = pytest.importorskip("typer")
    import moesim.calibrate.run as run_mod
    import moesim.calibrate.validate as validate_mod
    from moesim.calibrate.grids import tiny_grid
    from typer.testing import CliRunner

    from moesim.cli_calibrate import calibrate_command

    monkeypatch.setattr(run_mod, "grid_for", lambda dev, quick: tiny_grid())
    monkeypatch.setattr(validate_mod, "grid_for", lambda dev, quick: tiny_grid())
    monkeypatch.setattr(validate_mod, "validation_points", lambda quick=False: [(8, 2, 16, 1.0), (4, 1, 64, 1.25)])
    app = typer.Typer()
    app.command("calibrate")(calibrate_command)
    app.command("other")(lambda: None)
    out = tmp_path / "cpu.yaml"
    res = CliRunner().invoke(app, ["calibrate", "--device", "cpu", "--threads", "1", "--no-collectives", "--out", str(out),
                                   "--validate", "--json"])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)  # stdout is one JSON object: messages and the bar went to stderr
    assert doc["profile"] == str(out) and doc["calibration"]["timing"]["points"] > 0
    assert set(doc["summary"]) >= set(SUMMARY_KEYS) and doc["summary"]["points"] == 2
    assert [(p["experts"], p["top_k"], p["tokens"], p["capacity_factor"]) for p in doc["points"]] == [(8, 2, 16, 1.0),
                                                                                                      (4, 1, 64, 1.25)]
    for p in doc["points"]:
        assert p["measured_s"] > 0 and p["predicted_s"] > 0 and p["samples"] >= 3
        assert p["error_pct"] == pytest.approx(100 * (p["predicted_s"] - p["measured_s"]) / p["measured_s"], abs=1e-2)
        assert p["measured_a_s"] > 0 and p["measured_b_s"] > 0 and p["spread_pct"] >= 0 and sum(p["counts"]) > 0
    # the drift since calibration: the profile's own layer points measured again
    drift = doc["drift"]
    assert doc["summary"]["drift_points"] == len(drift) > 0 and doc["summary"]["drift_median"] is not None
    assert all(d["then_s"] > 0 and d["now_s"] > 0 and "experts=" in d["shape"] for d in drift)
    # the cache's edge: the profile's mid-expert grouped GEMMs measured again, the cache refitted
    s = doc["summary"]
    assert s["cache_points"] > 0 and s["cache_now_mib"] > 0 and s["cache_mib"] > 0
    assert s["median_abs_error_cache_now"] >= 0 and s["median_signed_error_cache_now_drift_corrected"] is not None
    again = CliRunner().invoke(app, ["calibrate", "--profile", str(out), "--validate", "--json", "--threads", "1"])
    assert again.exit_code == 0 and "calibration" not in json.loads(again.stdout)


# ---------------------------------------------------------------- the one-shot device checks


def _has(device: str) -> bool:
    try:
        import torch
    except ImportError:
        return False
    if device == "cuda":
        return torch.cuda.is_available()
    mps = getattr(torch.backends, "mps", None)
    return mps is not None and mps.is_available()


@pytest.mark.parametrize("script, device, line", [("gpu_check.sh", "cuda", "gpu_check: no CUDA GPU visible"),
                                                  ("mps_check.sh", "mps", "mps_check: no Apple MPS device visible")])
def test_device_check_exits_1_with_one_line_without_the_device(tmp_path, script, device, line):
    if _has(device):
        pytest.skip(f"{device} is visible here: the script would run for real")
    if shutil.which("bash") is None:
        pytest.skip("no bash")
    summary = tmp_path / "summary.json"
    env = {**os.environ, "PYTHON": sys.executable}
    res = subprocess.run(["bash", str(ROOT / "bench" / script), str(summary)], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=120, check=False)
    assert res.returncode == 1
    assert res.stderr.count("\n") == 1 and res.stderr.startswith(line) and "nothing run" in res.stderr
    assert res.stdout == "" and not summary.exists() and list(tmp_path.iterdir()) == []
    missing = subprocess.run(["bash", str(ROOT / "bench" / script)], cwd=tmp_path,
                             env={**os.environ, "PYTHON": "no-such-python"}, capture_output=True, text=True,
                             timeout=60, check=False)
    assert missing.returncode == 1 and "no-such-python" in missing.stderr and missing.stderr.count("\n") == 1


def test_device_check_steps_time_out_and_the_summary_says_which(tmp_path):
    """The scripts' shared steps (bench/device_check_lib.sh): a step past its limit is stopped and
    recorded as timed out, a passing step's JSON lands in the summary, and the summary fails."""
    if shutil.which("bash") is None:
        pytest.skip("no bash")
    out = tmp_path / "check.json"
    script = (f'set -euo pipefail\nPY="{sys.executable}"; out="{out}"; TAG=dry_check\n'
              "source bench/device_check_lib.sh\nnew_workdir\n"
              "run_step calib 30 \"$work/calib.json\" \"$PY\" -c 'print(\"{\\\"summary\\\": {\\\"n\\\": 3}}\")'\n"
              "run_step kernel 1 \"$work/kernel.json\" \"$PY\" -c 'import time; time.sleep(30)'\n"
              "write_summary '{\"device\": \"fake\"}'\n")
    res = subprocess.run(["bash", "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120, check=False)
    assert res.returncode == 2, res.stderr
    s = json.loads(out.read_text())
    assert s["device"] == "fake" and s["ok"] is False and s["calibrate"] == {"summary": {"n": 3}}
    assert s["steps"]["calib"]["ok"] and s["steps"]["kernel"]["timed_out"] and s["steps"]["kernel"]["exit"] == 124
    assert res.stderr.strip().splitlines()[-1].startswith("dry_check: FAILED")


def test_the_engines_expert_gemms_pay_the_row_tile():
    """The row tile lives in the cost model, so the op graph the engines price pays it too."""
    from moesim.calibrate.fit_local import hardware_for

    from moesim.engine.op_types import BlockDims, OpDtypes
    from moesim.engine.ops import moe_ops, price

    prof = load_default_profile("a100.yaml")
    # a measured tile past the MMA rows the device pads every expert's rows to itself (its grouped kernel's)
    tiled = prof.model_copy(update={"gemm_rows": RowTileSpec(rows=128, remainder="ceil")})
    dims = BlockDims(d_model=512, expert_w=1024, shared_w=0, n_shared=0, gated=True, n_experts=8, top_k=2)
    dt = OpDtypes(weights="bf16", gemm_in_bytes=2, act_bytes=2, act_dtype="bf16", attn_dtype="bf16")

    def expert_s(p, counts):
        ops = [op for op in moe_ops(dims, dt, 256, np.array(counts, float), impl="loop") if op.name == "expert_up"]
        return float(sum(price(cost_model(hardware_for(p), p), ops).values()))

    irregular, aligned = [140, 0, 150, 24, 0, 70, 64, 64], [256, 0, 256, 24, 0, 70, 64, 64]
    assert expert_s(tiled, irregular) == pytest.approx(expert_s(prof, aligned), rel=1e-12)
    assert expert_s(tiled, irregular) > expert_s(prof, irregular)
    assert expert_s(tiled, aligned) == pytest.approx(expert_s(prof, aligned), rel=1e-12)  # whole tiles: no change


def test_cache_now_error_prices_the_rows_with_the_cache_measured_again():
    """Rows predicted 20 % too fast with the profile's cache and right with the cache measured at
    validation: the raw error reads -20 %, the cache-now error 0, and with a 10 % drift too both
    corrections are reported."""
    from moesim.calibrate.validate import DriftRow

    rows = [_row(0.8, 1.0, 1.0, 1.0), _row(1.6, 2.0, 2.0, 2.0), _row(0.4, 0.5, 0.5, 0.5)]
    report = ValidationReport("cpu", 256, 512, rows, cache_then_bytes=16 * 2 ** 20, cache_now_bytes=11 * 2 ** 20,
                              cache_points=32, predicted_cache_now_s=(1.0, 2.0, 0.5))
    s = report.summary()
    assert s["median_signed_error"] == pytest.approx(-20.0)
    assert s["median_signed_error_cache_now"] == pytest.approx(0.0, abs=1e-9)
    assert s["median_abs_error_cache_now"] == pytest.approx(0.0, abs=1e-9)
    assert s["cache_mib"] == pytest.approx(16.0) and s["cache_now_mib"] == pytest.approx(11.0)
    assert s["cache_points"] == 32 and s["median_signed_error_cache_now_drift_corrected"] is None
    assert "11.0 MiB against 16.0 MiB" in report.lines()[-1]
    drifted = ValidationReport("cpu", 256, 512, rows, drift=[DriftRow("a", 1.0, 1.1)], cache_then_bytes=16 * 2 ** 20,
                               cache_now_bytes=11 * 2 ** 20, cache_points=32, predicted_cache_now_s=(1.0, 2.0, 0.5))
    assert drifted.summary()["median_signed_error_cache_now_drift_corrected"] == pytest.approx(10.0)
    assert "with that cache and the drift divided out" in drifted.lines()[-1]
    # nothing measured again: no figure, no line
    plain = ValidationReport("cpu", 256, 512, rows).summary()
    assert plain["cache_now_mib"] is None and plain["median_signed_error_cache_now"] is None


def test_cache_edge_points_are_the_profiles_grouped_points_between_fewest_and_most_experts():
    from moesim.calibrate.validate import calibration_cache_points

    from moesim.costmodel.profile import GroupedSpec, TimedPoint, TimingSpec
    from moesim.costmodel.tables import GemmTable

    prof = load_default_profile("a100.yaml")
    assert calibration_cache_points(prof) == []  # no timing record, no cache: nothing to measure again
    shapes = [(2, 1, 64, 32), (4, 1, 64, 32), (8, 4, 32, 64), (16, 1, 64, 32)]
    spreads = [TimedPoint(kind="grouped", shape=f"experts={e} m={m} n={n} k={k}", us=10.0)
               for e, m, n, k in shapes] + [TimedPoint(kind="gemm", shape="m=1 n=4 k=256", us=1.0)]
    timing = TimingSpec(point_spreads=spreads)
    grouped = GroupedSpec(efficiency=GemmTable(tokens=[1.0], weight_elems=[1.0], efficiency=[[0.5]]),
                          launch_overhead_us=1.0)
    local = prof.model_copy(update={"timing": timing, "cache_bytes": 8e6, "grouped": grouped})
    assert calibration_cache_points(local) == [(4, 1, 64, 32), (8, 4, 32, 64)]
