"""``moesim show RESULT``: a saved result (simulate --out) printed again as simulate printed it, nothing simulated."""

from __future__ import annotations

import json

import pytest

from moesim import cli
from moesim.cli import main


@pytest.fixture(autouse=True)
def eighty_columns():
    saved = cli.out._width, cli.out._height
    cli.out.size = (80, 25)
    yield
    cli.out._width, cli.out._height = saved


def _lines(capsys) -> list[str]:
    return capsys.readouterr().out.rstrip("\n").split("\n")


@pytest.mark.parametrize("scenario", ["mixtral-8x7b-h100-serve-tp8", "mixtral-8x7b-h100-train"])
def test_show_prints_what_simulate_printed_but_the_nearest_measurements(scenario, tmp_path, capsys):
    assert main(["simulate", scenario, "--out", str(tmp_path / "r")]) == 0
    printed = _lines(capsys)
    printed = printed[:next(i for i, line in enumerate(printed) if line.startswith("nearest published"))]
    assert main(["show", str(tmp_path / "r")]) == 0
    assert _lines(capsys) == printed  # NaN figures (a batch run's offered rate) read n/a again, not "-"


def test_show_json_is_simulate_json_and_takes_the_summary_file_too(tmp_path, capsys):
    assert main(["simulate", "llama-2-7b-a100-serve", "--out", str(tmp_path / "r"), "--json"]) == 0
    simulated = json.loads(capsys.readouterr().out)
    assert main(["show", str(tmp_path / "r" / "summary.json"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == simulated


def test_a_result_priced_by_another_version_says_so(tmp_path, capsys):
    assert main(["simulate", "mixtral-8x7b-h100-train", "--out", str(tmp_path / "r"), "--json"]) == 0
    capsys.readouterr()
    path = tmp_path / "r" / "summary.json"
    doc = json.loads(path.read_text())
    doc["moesim_version"] = "0.0.9"
    path.write_text(json.dumps(doc))
    assert main(["show", str(tmp_path / "r")]) == 0
    assert "priced by moesim 0.0.9; this is moesim" in capsys.readouterr().out


def test_not_a_result_folder_is_one_line_and_exit_2(tmp_path, capsys):
    assert main(["show", str(tmp_path / "none")]) == 2
    assert "summary.json: file not found" in capsys.readouterr().err
    (tmp_path / "sweep").mkdir()
    (tmp_path / "sweep" / "results.jsonl").write_text("")
    assert main(["show", str(tmp_path / "sweep")]) == 2
    err = capsys.readouterr().err
    assert "a sweep folder, not a result folder" in err and "Traceback" not in err
