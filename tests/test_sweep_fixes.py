"""Sweep folders a pipeline keeps: rows of an unknown sweep are not resumed into, the manifest counts every row,
and points that failed make the run exit 1 once the rest are saved."""

from __future__ import annotations

import json

from moesim.cli import main


def test_resume_refuses_rows_whose_manifest_is_gone(tmp_path, capsys):
    out = tmp_path / "s"
    assert main(["sweep", "mixtral-8x7b-h100-train", "--capacity-factor", "1.0", "--out", str(out)]) == 0
    (out / "sweep.json").unlink()  # a pipeline that kept the rows alone
    before = (out / "results.jsonl").read_text()
    capsys.readouterr()
    assert main(["sweep", "switch-base-128-train", "--capacity-factor", "1.0", "--out", str(out), "--resume"]) == 2
    err = capsys.readouterr().err
    assert "no sweep.json saying which sweep they are of" in err and "--overwrite" in err
    assert (out / "results.jsonl").read_text() == before  # nothing mixed in


def test_the_manifest_counts_the_rows_kept_from_before_a_resume(tmp_path, capsys):
    out = tmp_path / "s"
    base = ["sweep", "mixtral-8x7b-h100-train", "--out", str(out)]
    assert main([*base, "--capacity-factor", "1.0,1.25"]) == 0
    assert main([*base, "--capacity-factor", "1.5", "--resume"]) == 0
    capsys.readouterr()
    rows = (out / "results.jsonl").read_text().splitlines()
    assert len(rows) == 3 and json.loads((out / "sweep.json").read_text())["n_points"] == 3


def test_a_sweep_with_a_failed_point_exits_1_after_saving_the_others(tmp_path, capsys, monkeypatch):
    import moesim.sweep as sweep
    from tests.sweep_fakes import failing_simulate

    real = sweep.run_sweep
    monkeypatch.setattr(sweep, "run_sweep", lambda *a, **k: real(*a, **{**k, "runner": failing_simulate}))
    out = tmp_path / "s"
    assert main(["sweep", "mixtral-8x7b-h100-train", "--experts", "8,32", "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert "1 of 2 points failed" in err and "--resume" in err
    status = [json.loads(line)["status"] for line in (out / "results.jsonl").read_text().splitlines()]
    assert sorted(status) == ["failed", "ok"]
