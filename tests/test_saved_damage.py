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


def test_a_table_its_save_listed_but_the_folder_lost_is_named(tmp_path, capsys):
    """A deleted decode_step.csv read as "saved by an older moesim" in plot and vanished silently from show."""
    from moesim.cli import main

    out = tmp_path / "r"
    assert main(["simulate", "qwen3-30b-a3b-h100-serve", "--set", "workload.arrival.n_requests=100", "--out",
                 str(out)]) == 0
    (out / "decode_step.csv").unlink()
    capsys.readouterr()
    for argv in (["show", str(out)], ["plot", str(out)], ["compare", str(out), str(out)]):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert "decode_step.csv: missing (summary.json lists it" in err and "older moesim" not in err


def test_a_hand_edited_figure_that_is_no_number_is_refused(tmp_path, capsys):
    import json

    from moesim.cli import main

    out = tmp_path / "r"
    assert main(["simulate", "mixtral-8x7b-h100-train", "--out", str(out)]) == 0
    doc = json.loads((out / "summary.json").read_text())
    for summary, said in (({**doc["summary"], "step_time_s": "abc"}, "summary.step_time_s = 'abc': expected a number"),
                          ({}, "summary = {}: no figures")):
        (out / "summary.json").write_text(json.dumps({**doc, "summary": summary}))
        capsys.readouterr()
        for argv in (["show", str(out)], ["compare", str(out), str(out)], ["plot", str(out)]):
            assert main(argv) == 2
            assert said in capsys.readouterr().err


def test_the_python_api_does_not_save_a_result_into_a_sweep_folder(tmp_path, capsys):
    import pytest

    from moesim import load_scenario, simulate
    from moesim.cli import main
    from moesim.errors import InputError

    sweep = tmp_path / "s"
    assert main(["sweep", "mixtral-8x7b-h100-train", "--experts", "8", "--out", str(sweep)]) == 0
    result = simulate(load_scenario("mixtral-8x7b-h100-train"))
    with pytest.raises(InputError, match="holds a sweep"):
        result.save(sweep)
    assert not (sweep / "summary.json").exists()


def test_show_and_compare_name_a_sweep_folder_as_one(tmp_path, capsys):
    from moesim.cli import main

    sweep = tmp_path / "s"
    assert main(["sweep", "mixtral-8x7b-h100-train", "--experts", "8", "--out", str(sweep)]) == 0
    capsys.readouterr()
    for argv in (["show", str(sweep)], ["compare", str(sweep), "mixtral-8x7b-h100-train"]):
        assert main(argv) == 2
        assert "a sweep folder, not a result folder" in capsys.readouterr().err
