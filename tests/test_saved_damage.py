"""A saved result edited by hand, or damaged, is refused in one line naming the file (exit 2), never an
internal error: ``show``, ``compare`` and ``plot`` read summary.json, spans.csv and the step tables."""

from __future__ import annotations

import json
import shutil

import pytest

from moesim.cli import main

TRAIN = "switch-base-128-train"


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    folder = tmp_path_factory.mktemp("saved") / "r"
    assert main(["simulate", TRAIN, "--out", str(folder), "--json"]) == 0
    return folder


def _edited(saved, tmp_path, edit):
    copy = tmp_path / "x"
    shutil.copytree(saved, copy)
    doc = json.loads((copy / "summary.json").read_text())
    edit(doc)
    (copy / "summary.json").write_text(json.dumps(doc))
    return copy


@pytest.mark.parametrize("edit, words", [
    (lambda d: d.update(summary=list(d["summary"])), "summary = ['step_time_s'"),
    (lambda d: d.update(kind=[1]), "kind = [1]: expected training or serving"),
    (lambda d: d.update(scenario=3), "scenario = 3: expected a name"),
    (lambda d: d.update(files=[1]), "files = [1]: expected a list of file names"),
    (lambda d: d.update(seed=-1), "seed = -1: expected a whole number or null"),
])
@pytest.mark.parametrize("command", ["show", "compare", "plot"])
def test_an_edited_summary_is_one_line_naming_the_field(saved, tmp_path, capsys, edit, words, command):
    x = _edited(saved, tmp_path, edit)
    argv = {"show": ["show", str(x)], "compare": ["compare", str(x), str(saved)],
            "plot": ["plot", str(x), "--kind", "timeline", "--out", str(tmp_path / "t"), "--format", "png"]}[command]
    capsys.readouterr()
    assert main(argv) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "summary.json: " in err and words in err and "internal error" not in err


@pytest.mark.parametrize("text", ["[" * 100_000, '{"seed": ' + "9" * 5000 + "}"])
def test_json_too_deep_or_too_long_a_number_is_corrupt(saved, tmp_path, capsys, text):
    x = tmp_path / "x"
    shutil.copytree(saved, x)
    (x / "summary.json").write_text(text)
    assert main(["show", str(x)]) == 2
    assert "not a moesim result (corrupt JSON)" in capsys.readouterr().err


def test_damaged_tables_are_named(saved, tmp_path, capsys):
    x = tmp_path / "x"
    shutil.copytree(saved, x)
    lines = (x / "spans.csv").read_text().split("\n")
    cells = lines[1].split(",")
    cells[1] = "x"  # the stage of the first span
    (x / "spans.csv").write_text("\n".join([lines[0], ",".join(cells), *lines[2:]]))
    assert main(["plot", str(x), "--kind", "timeline", "--out", str(tmp_path / "t"), "--format", "png"]) == 2
    assert "spans.csv: column stage: expected numbers" in capsys.readouterr().err
    (x / "train_step.csv").write_bytes(bytes(range(128, 256)) * 3)
    assert main(["show", str(x)]) == 2
    assert "train_step.csv: not a moesim table" in capsys.readouterr().err
