"""``moesim show RESULT``: a saved result (simulate --out) printed again as simulate printed it, nothing simulated."""

from __future__ import annotations

import json

import pytest

from moesim.cli import main

pytestmark = pytest.mark.usefixtures("eighty_columns")  # the README quotes an 80-column terminal


def _lines(capsys) -> list[str]:
    return capsys.readouterr().out.rstrip("\n").split("\n")


TRN_37 = ["moesim/data/validation/qwen3-30b-a3b-h100-train.yaml", *(
    x for o in "hardware.cluster.nodes=4;plan.dp=32;plan.ep=8;plan.microbatches=8;workload.global_batch_seqs=256;"
    "plan.recompute=none;plan.alltoall=deepep_normal;plan.fp8_recipe=current".split(";") for x in ("-s", o))]


@pytest.mark.parametrize("argv", [["mixtral-8x7b-h100-serve-tp8"], ["mixtral-8x7b-h100-train"], TRN_37],
                         ids=["serving", "training", "host-note"])
def test_show_prints_what_simulate_printed(argv, root, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(root)
    assert main(["simulate", *argv, "--out", str(tmp_path / "r")]) == 0
    printed = _lines(capsys)
    assert any(line.startswith("nearest published") for line in printed)
    assert main(["show", str(tmp_path / "r")]) == 0
    # NaN figures (a batch run's offered rate) read n/a again, not "-"; the host-wait note and the nearest
    # measurements, which need the scenario, come from summary.json's notes
    assert _lines(capsys) == printed
    if argv is TRN_37:
        assert any(line.startswith("note: the MoE layers wait for the host") for line in printed)


def test_a_folder_saved_without_notes_shows_the_rest(tmp_path, capsys):
    assert main(["simulate", "mixtral-8x7b-h100-train", "--out", str(tmp_path / "r")]) == 0
    printed = _lines(capsys)
    path = tmp_path / "r" / "summary.json"
    doc = json.loads(path.read_text())
    del doc["notes"]
    path.write_text(json.dumps(doc))
    assert main(["show", str(tmp_path / "r")]) == 0
    assert _lines(capsys) == printed[:next(i for i, line in enumerate(printed) if line.startswith("nearest published"))]


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
    assert "none: no such result folder" in capsys.readouterr().err
    (tmp_path / "plot.png").write_bytes(b"\x89PNG")
    assert main(["show", str(tmp_path / "plot.png")]) == 2
    err = capsys.readouterr().err
    assert "plot.png: a file, not a result folder" in err and "Not a directory" not in err
    (tmp_path / "empty").mkdir()
    assert main(["show", str(tmp_path / "empty")]) == 2
    assert "empty: not a result folder (no summary.json" in capsys.readouterr().err
    (tmp_path / "sweep").mkdir()
    (tmp_path / "sweep" / "results.jsonl").write_text("")
    assert main(["show", str(tmp_path / "sweep")]) == 2
    err = capsys.readouterr().err
    assert "a sweep folder, not a result folder" in err and "Traceback" not in err
    assert main(["simulate", "mixtral-8x7b-h100-serve-tp8", "--out", str(tmp_path / "r"), "--json"]) == 0
    capsys.readouterr()
    (tmp_path / "r" / "decode_step.csv").write_text("a,b\n1,2\n")
    assert main(["show", str(tmp_path / "r")]) == 2
    assert "decode_step.csv: not a moesim decode-step table" in capsys.readouterr().err
    (tmp_path / "r" / "decode_step.csv").write_text("part,seconds,share,batch_seqs,context_tokens\nattention,x,1,8,128\n")
    assert main(["show", str(tmp_path / "r")]) == 2
    assert "decode_step.csv: not a moesim decode-step table" in capsys.readouterr().err
    assert main(["plot", str(tmp_path / "r"), "--kind", "breakdown", "--out", str(tmp_path / "b")]) == 2  # the same check
    assert "decode_step.csv: not a moesim decode-step table" in capsys.readouterr().err
    assert not list(tmp_path.glob("b.*"))


def test_a_capacity_result_shows_its_capacity_title(tmp_path, capsys):
    argv = ["simulate", "llama-2-7b-a100-serve", "--slo", "ttft_p99=2,tpot_p99=0.2", "--out", str(tmp_path / "r")]
    assert main(argv) == 0
    printed = _lines(capsys)
    assert "at capacity under" in " ".join(printed[:2])
    assert main(["show", str(tmp_path / "r")]) == 0
    assert _lines(capsys) == printed


def test_a_serving_run_whose_weights_leave_no_kv_prints_why_not_a_table_of_na(tmp_path, capsys):
    """Qwen3-235B in BF16 on one H200 a replica: no request can run, so the table keeps the rows that say
    what was asked and why, with the fit advice; show prints the saved result the same way."""
    argv = ["simulate", "mixtral-8x7b-h100-serve", "-s", "model=qwen3-235b-a22b", "-s", "hardware=h200"]
    assert main([*argv, "--out", str(tmp_path / "r")]) == 0
    printed = _lines(capsys)
    text = "\n".join(printed)
    assert "does not fit" in text and "to fit:" in text and "nothing was served: 8,000 requests rejected" in text
    assert "ttft_p99_s" not in text and "n/a" not in text and "fits" in text
    assert main(["show", str(tmp_path / "r")]) == 0
    assert _lines(capsys) == printed
    assert main([*argv, "--json"]) == 0  # the machine-readable summary keeps every figure
    assert "ttft_p99_s" in json.loads(capsys.readouterr().out)


def test_simulate_out_refuses_a_sweep_or_plan_folder_before_running(tmp_path, capsys):
    for name, what in (("results.jsonl", "a sweep's results"), ("plans.json", "a plan search's results")):
        folder = tmp_path / name.split(".")[0]
        folder.mkdir()
        (folder / name).write_text("")
        assert main(["simulate", "switch-base-128-train", "--out", str(folder)]) == 2
        err = capsys.readouterr().err
        assert f"holds {what} ({name})" in err and "\n" not in err.strip()
        assert sorted(p.name for p in folder.iterdir()) == [name]  # nothing written beside it
