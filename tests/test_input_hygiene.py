"""What a newcomer's review of 2026-12-01 found, each as a check: Ctrl-C says so and exits 130,
usage errors and unwritable --out paths are one line with exit 2, --out holds one result, a sweep
is resumed only as itself, booleans are not numbers, swept values are judged before any point
runs, and recompute modules with nothing to re-run are refused."""

from __future__ import annotations

import importlib
import json

import pytest

from moesim.cli import _os_error_line, main
from moesim.errors import InputError
from moesim.loader import load_scenario
from tests.test_front_door import _one_error_line

SIM = importlib.import_module("moesim.simulate")  # the module (the package exports its function)


def test_ctrl_c_prints_interrupted_and_exits_130(monkeypatch, capsys):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(SIM, "simulate", interrupted)
    assert main(["simulate", "mixtral-8x7b-h100-train"]) == 130
    assert capsys.readouterr().err.strip() == "interrupted"


@pytest.mark.parametrize("argv, expected", [
    (["simulate", "mixtral-8x7b-h100-train", "--seed", "abc"], "'--seed'"),
    (["simulate", "mixtral-8x7b-h100-train", "--bogus"], "No such option: --bogus"),
])
def test_usage_errors_are_one_line(argv, expected, capsys):
    assert main(argv) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert line.startswith("error:") and expected in line and "moesim simulate --help" in line


def test_out_on_a_file_is_a_one_line_error(tmp_path, capsys):
    afile = tmp_path / "afile"
    afile.write_text("mine")
    assert main(["simulate", "mixtral-8x7b-h100-train", "--out", str(afile)]) == 2
    assert "exists and is not a folder" in _one_error_line(capsys.readouterr().err)
    assert main(["simulate", "mixtral-8x7b-h100-train", "--out", str(afile / "sub")]) == 2
    assert "afile is a file, not a folder" in _one_error_line(capsys.readouterr().err)  # said before the run
    assert afile.read_text() == "mine"


def test_os_errors_name_the_users_file_not_a_temp_file():
    exc = FileNotFoundError(2, "No such file or directory", "/proc/.x.json.rzt5v66c.tmp")
    assert _os_error_line(exc) == "/proc/x.json: No such file or directory"
    assert _os_error_line(PermissionError(13, "Permission denied", "out/summary.json")) == \
        "out/summary.json: Permission denied"


def test_out_holds_one_result_and_leaves_other_files(tmp_path, capsys):
    out = tmp_path / "out"
    serve = ["simulate", "mixtral-8x7b-h100-serve", "--set", "workload.arrival.n_requests=20", "--out", str(out)]
    assert main(serve) == 0
    assert {"requests.csv", "iterations.csv"} <= {p.name for p in out.iterdir()}
    (out / "notes.txt").write_text("keep me")
    assert main(["simulate", "mixtral-8x7b-h100-train", "--out", str(out)]) == 0
    names = {p.name for p in out.iterdir()}
    assert names == {"summary.json", "spans.csv", "trace.json", "layers.csv", "train_step.csv", "scenario.yaml",
                     "notes.txt"}
    assert json.loads((out / "summary.json").read_text())["kind"] == "training"
    capsys.readouterr()


def test_resume_continues_only_the_same_sweep(tmp_path, capsys):
    out = str(tmp_path / "sw")
    base = ["sweep", "mixtral-8x7b-h100-train", "--workers", "1", "--out", out]
    assert main([*base, "--experts", "8,16"]) == 0
    capsys.readouterr()
    assert main([*base, "--capacity-factor", "1.0,1.5", "--resume"]) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert "other swept fields" in line and "--overwrite" in line
    assert main([*base, "--experts", "8,16,32", "--resume"]) == 0  # more values of the same field
    capsys.readouterr()
    assert main([*base, "--experts", "8", "--resume", "--overwrite"]) == 2
    assert "pass one" in _one_error_line(capsys.readouterr().err)


@pytest.mark.parametrize("override, message", [
    ("plan.tp=true", "plan.tp = true: a number is expected, not a boolean"),
    ("routing.capacity_factor=false", "routing.capacity_factor = false: a number is expected"),
    ("plan.zero_stage=true", "plan.zero_stage = true: a number is expected"),
    ("plan..tp=2", "empty part in the field path 'plan..tp'"),
])
def test_booleans_are_not_numbers_and_paths_have_no_empty_parts(override, message):
    with pytest.raises(InputError, match=message):
        load_scenario("mixtral-8x7b-h100-train", [override])


def test_a_boolean_still_sets_a_boolean_field():
    assert load_scenario("mixtral-8x7b-h100-train", ["plan.overlap_alltoall=true"]).plan.overlap_alltoall is True


@pytest.mark.parametrize("argv, message", [
    (["--grid", "plan.tp=1,x"], "--grid plan.tp: 'x': Input should be a valid integer"),
    (["--capacity-factor", "1.0,-1"], "--capacity-factor: -1: Input should be greater than 0"),
    (["--grid", "plan.recompute=none,bogus"], "--grid plan.recompute: 'bogus'"),
    (["--grid", "plan.tp=1,true"], "--grid plan.tp: true: a number is expected"),
])
def test_swept_values_no_point_could_take_are_refused_before_running(argv, message, tmp_path, capsys):
    out = tmp_path / "sw"
    assert main(["sweep", "mixtral-8x7b-h100-train", *argv, "--out", str(out)]) == 2
    assert message in _one_error_line(capsys.readouterr().err)
    assert not out.exists()


@pytest.mark.parametrize("scenario, modules, message", [
    ("mixtral-8x7b-h100-train", "[shared_experts]", "shared_experts needs shared experts"),
    ("mixtral-8x7b-h100-train", "[mlp]", "mlp needs dense FFN layers"),
    ("llama-2-7b-a100-train", "[moe]", "moe needs MoE layers"),
    ("llama-2-7b-a100-train", "[layernorm]", "layernorm needs a pre-norm that is a layer of its own"),
])
def test_recompute_modules_with_nothing_to_rerun_are_refused(scenario, modules, message):
    with pytest.raises(InputError, match=message):
        load_scenario(scenario, [f"plan.recompute_modules={modules}"])


def test_a_file_missing_two_sections_names_both(tmp_path, capsys):
    f = tmp_path / "two.yaml"
    f.write_text("name: x\nmodel: mixtral-8x7b\n")
    assert main(["check", str(f)]) == 2
    assert "hardware, workload: required fields are missing" in _one_error_line(capsys.readouterr().err)


def test_scenarios_path_outside_the_checkout_points_at_the_shipped_name(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["check", "scenarios/mixtral-8x7b-h100-train.yaml"]) == 2
    assert "runs from any folder as `mixtral-8x7b-h100-train`" in _one_error_line(capsys.readouterr().err)


def test_qlora_reports_the_bytes_its_base_weights_take():
    from moesim.finetune import nf4_bytes_per_weight

    s = load_scenario("mixtral-8x7b-qlora-1xa100")
    got = SIM.simulate(s).summary["weight_bytes_per_param"]
    assert nf4_bytes_per_weight(s.workload.trainable) < got < 0.6  # nf4 linears, a few 16-bit embeddings
    lora = SIM.simulate(load_scenario("mixtral-8x7b-lora-8xh100")).summary
    assert lora["weight_bytes_per_param"] == 2.0


def test_a_short_overloaded_run_says_it_is_short():
    from moesim.engine.serving.metrics import overload_warning

    base = {"overloaded": True, "offered_requests_per_s": 72.0, "requests_per_s": 22.0}
    steady = "requests arriving 0.5-2.5 s (150 of 200; warm-up the first 20 %, drain the last 5 %)"
    capped = "requests arriving 1.4-2.5 s (80 of 200; warm-up the first half (the e2e p90 is longer), drain ...)"
    assert "this run is short" not in overload_warning({**base, "steady_note": steady})
    assert "this run is short" in overload_warning({**base, "steady_note": capped})
    assert overload_warning({**base, "overloaded": False}) == ""


def test_boolean_and_text_fields_still_sweep():
    from moesim.sweep_grid import build_dimensions

    dims = build_dimensions(grid=["plan.overlap_dp_comm=true,false", "plan.schedule=1f1b,gpipe",
                                  "plan.etp=null,1"])
    assert [d.values for d in dims] == [(True, False), ("1f1b", "gpipe"), (None, 1)]


def test_save_removes_only_what_the_earlier_result_wrote(tmp_path, capsys):
    from moesim.results import SimResult

    out = tmp_path / "out"
    assert main(["simulate", "mixtral-8x7b-h100-serve", "--set", "workload.arrival.n_requests=20",
                 "--out", str(out)]) == 0
    (out / "my_notes.csv").write_text("a,b\\n1,2\\n")
    assert main(["simulate", "mixtral-8x7b-h100-train", "--out", str(out)]) == 0
    capsys.readouterr()
    assert {p.name for p in out.iterdir()} == {"summary.json", "spans.csv", "trace.json", "layers.csv", "train_step.csv",
                                               "scenario.yaml", "my_notes.csv"}
    assert json.loads((out / "summary.json").read_text())["files"] == ["layers.csv", "scenario.yaml", "spans.csv",
                                                                      "trace.json", "train_step.csv"]
    assert list(SimResult.load(out).tables) == ["layers", "train_step"]  # the user's CSV is not read as a table
    # a folder whose summary.json lists nothing (an older save) loses no file
    doc = json.loads((out / "summary.json").read_text())
    del doc["files"]
    (out / "summary.json").write_text(json.dumps(doc))
    (out / "requests.csv").write_text("x\\n")
    assert main(["simulate", "mixtral-8x7b-h100-train", "--out", str(out)]) == 0
    assert (out / "requests.csv").exists() and (out / "my_notes.csv").exists()
