"""Output paths are checked before a command's work: empty ones, unwritable ones, folders that hold another
command's output, and a scenario name used as a default folder (it must stay under ``sweeps/``)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from moesim.cli import main
from moesim.errors import InputError
from moesim.fileio import check_runs_folder, check_writable, folder_name

TRAIN = "switch-base-128-train"


@pytest.mark.parametrize("argv", [["simulate", TRAIN, "--out", ""], ["simulate", TRAIN, "--out="],
                                  ["compare", TRAIN, TRAIN, "--plot", " "], ["validate", "--save-results", ""]])
def test_an_empty_output_path_is_refused_before_anything_runs(argv, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    assert "an empty path; name a file or folder" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_sweep_and_plan_refuse_a_folder_holding_a_simulate_result(tmp_path, capsys):
    assert main(["simulate", TRAIN, "--out", str(tmp_path / "r"), "--json"]) == 0
    capsys.readouterr()
    with pytest.raises(InputError, match="holds a simulate result"):
        check_runs_folder(tmp_path / "r")
    assert main(["sweep", TRAIN, "--experts", "8", "--out", str(tmp_path / "r")]) == 2
    assert "holds a simulate result (summary.json)" in capsys.readouterr().err
    assert not (tmp_path / "r" / "results.jsonl").exists()


@pytest.mark.parametrize("name, folder", [("../../escaped", "escaped"), ("/tmp/abs", "tmp-abs"), ("", "scenario"),
                                          (".", "scenario"), ("my run:v2", "my-run-v2"), ("ok-name_1.2", "ok-name_1.2")])
def test_a_scenario_name_becomes_one_folder_name(name, folder):
    assert folder_name(name) == folder


def test_a_sweeps_default_folder_stays_under_sweeps(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["sweep", TRAIN, "--experts", "8", "--set", "name=../../escaped", "--workers", "1"]) == 0
    assert (tmp_path / "sweeps" / "escaped" / "results.csv").is_file()
    assert [p.name for p in tmp_path.iterdir()] == ["sweeps"]


def test_an_unwritable_place_is_refused_at_once(tmp_path, monkeypatch):
    (tmp_path / "afile").write_text("x")
    with pytest.raises(InputError, match="afile is a file, not a folder"):
        check_writable(tmp_path / "afile" / "out")
    real = os.access
    monkeypatch.setattr(os, "access", lambda p, mode: False if str(p) == str(tmp_path) else real(p, mode))
    with pytest.raises(InputError, match=r"--out .*: cannot write in .* \(read-only or no permission\)"):
        check_writable(tmp_path / "new" / "deeper")


def test_calibrate_refuses_an_unwritable_profile_path_before_timing_anything(tmp_path, capsys):
    pytest.importorskip("torch")
    (tmp_path / "afile").write_text("x")
    assert main(["calibrate", "--quick", "--device", "cpu", "--out", str(tmp_path / "afile" / "p.yaml")]) == 2
    assert "afile is a file, not a folder" in capsys.readouterr().err


@pytest.mark.parametrize("args, words", [
    (["--measurements", "{t}/afile/m.csv"], "--measurements {t}/afile/m.csv: {t}/afile is a file, not a folder"),
    (["--measurements", "{t}"], "--measurements {t}: a folder; name the CSV to write"),
    (["--measurements", "{t}/p.yaml"], "the same file as --out"),
])
def test_calibrate_refuses_a_bad_measurements_path_before_timing_anything(tmp_path, capsys, args, words):
    """--measurements was written after minutes of timing, the profile already saved beside the error: it is
    checked up front as --out is, and nothing is written."""
    (tmp_path / "afile").write_text("x")
    argv = ["calibrate", "--quick", "--device", "cpu", "--out", str(tmp_path / "p.yaml")]
    assert main(argv + [a.format(t=tmp_path) for a in args]) == 2
    assert words.format(t=tmp_path) in capsys.readouterr().err
    assert not (tmp_path / "p.yaml").exists()


def test_calibrate_names_an_existing_folder_as_a_folder(tmp_path, capsys):
    assert main(["calibrate", "--quick", "--device", "cpu", "--out", str(tmp_path)]) == 2
    assert "a folder; name the profile YAML to write" in capsys.readouterr().err


def test_a_name_the_terminals_encoding_lacks_prints_escaped(tmp_path):
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    folder = tmp_path / "uni cödé"
    folder.mkdir()
    scenario = folder / "t ü.yaml"
    shutil.copy(Path(__file__).resolve().parents[1] / "scenarios" / f"{TRAIN}.yaml", scenario)
    run = subprocess.run([sys.executable, "-m", "moesim.cli", "simulate", str(scenario)], capture_output=True,
                         env={**os.environ, "PYTHONIOENCODING": "ascii"}, timeout=120)
    assert run.returncode == 0, run.stderr
    assert b"internal error" not in run.stderr and b"c\\xf6d\\xe9" in run.stdout  # the path, escaped


def test_a_folder_being_written_by_one_run_is_refused_to_another(tmp_path):
    pytest.importorskip("fcntl")
    from moesim.sweep_store import ResultStore

    first = ResultStore(tmp_path / "sw", durable=False)
    first.open()
    first.append({"point": 0, "seed": 0, "key": "a", "status": "ok"})
    with pytest.raises(InputError, match="another moesim run is writing to this folder"):
        ResultStore(tmp_path / "sw", durable=False).open(resume=True)
    first.close()
    again = ResultStore(tmp_path / "sw", durable=False)  # released when the first closed
    assert [r["key"] for r in again.open(resume=True)] == ["a"]
    again.close()


def test_resuming_with_more_values_numbers_the_new_points_after_the_kept_ones(tmp_path, capsys):
    from moesim.sweep_store import read_rows

    out = str(tmp_path / "sw")
    assert main(["sweep", TRAIN, "--experts", "8,16", "--workers", "1", "--out", out]) == 0
    assert main(["sweep", TRAIN, "--experts", "32,64", "--workers", "1", "--out", out, "--resume"]) == 0
    rows = read_rows(out)
    assert sorted(r["point"] for r in rows) == [0, 1, 2, 3]
    assert sorted(r["model.n_experts"] for r in rows) == [8, 16, 32, 64]


@pytest.mark.parametrize("edit, words", [(lambda r: r.update(point="x"), "point = 'x': expected a whole number"),
                                         (lambda r: r.update(seed=True), "seed = True: expected a whole number")])
def test_an_edited_sweep_row_is_one_line(tmp_path, capsys, edit, words):
    import json

    out = tmp_path / "sw"
    assert main(["sweep", TRAIN, "--experts", "8", "--workers", "1", "--out", str(out)]) == 0
    row = json.loads((out / "results.jsonl").read_text())
    edit(row)
    (out / "results.jsonl").write_text(json.dumps(row) + "\n")
    capsys.readouterr()
    assert main(["plot", str(out), "--out", str(tmp_path / "p"), "--format", "png"]) == 2
    assert words in capsys.readouterr().err


def test_calibrate_prints_a_hardware_section_that_validates_as_printed():
    """After a calibration the newcomer pastes the printed section into a scenario: it must load (a device name with
    a colon stays one string), with the profile's peaks and the placeholders marked."""
    import yaml

    from moesim.cli_calibrate import hardware_block
    from moesim.schemas import HardwareSpec

    text = hardware_block("AMD EPYC 7B13: 64-core", {"fp32": 0.0895}, 65.7, 23.5, Path("prof.yaml"))
    hw = yaml.safe_load(text)["hardware"]
    assert hw["profile"] == str(Path("prof.yaml").absolute()) and "placeholders" in text
    spec = HardwareSpec.model_validate({k: v for k, v in hw.items() if k != "profile"})
    assert spec.device.name == "AMD EPYC 7B13: 64-core" and spec.device.peak_tflops["fp32"] == 0.0895
    assert spec.device.mem_gib == 23.5 and spec.n_devices == 1
