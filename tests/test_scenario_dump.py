"""The resolved scenario (``check --resolved``, ``simulate --out``'s scenario.yaml) loads back to the same run."""

from __future__ import annotations

import json

import pytest
import yaml

from moesim.cli import main
from moesim.loader import load_scenario
from moesim.scenario_dump import RESOLVED_NAME, resolved_yaml
from tests.conftest import SCENARIOS


@pytest.mark.parametrize("path", SCENARIOS, ids=[p.stem for p in SCENARIOS])
def test_every_shipped_scenario_resolves_to_a_file_that_loads_back_equal(path, tmp_path):
    s = load_scenario(str(path), [])
    dumped = tmp_path / "resolved.yaml"
    dumped.write_text(resolved_yaml(s, str(path)))
    again = load_scenario(str(dumped), [])
    assert again == s
    # no preset names left to expand: every section is written out field by field
    raw = yaml.safe_load(dumped.read_text())
    assert isinstance(raw["model"], dict) and isinstance(raw["hardware"], dict)
    assert "preset" not in raw["model"] and "preset" not in raw["hardware"]


def test_check_resolved_applies_the_overrides_and_runs_as_the_original(tmp_path, capsys):
    argv = ["--set", "plan.ep=8", "--set", "plan.microbatches=4"]
    assert main(["check", "mixtral-8x7b-h100-train", "--resolved", *argv]) == 0
    text = capsys.readouterr().out
    assert text.startswith("# mixtral-8x7b-h100-train:") and "--set plan.ep=8 plan.microbatches=4" in text
    raw = yaml.safe_load(text)
    assert raw["plan"]["ep"] == 8 and raw["plan"]["microbatches"] == 4
    assert raw["model"]["n_experts"] == 8 and raw["hardware"]["device"]["mem_gib"] == 80.0
    path = tmp_path / "r.yaml"
    path.write_text(text)
    assert main(["simulate", str(path), "--json"]) == 0
    from_file = json.loads(capsys.readouterr().out)
    assert main(["simulate", "mixtral-8x7b-h100-train", *argv, "--json"]) == 0
    given = json.loads(capsys.readouterr().out)
    assert from_file["step_time_s"] == given["step_time_s"] and from_file["peak_memory_gib"] == given["peak_memory_gib"]


def test_check_resolved_refuses_json_in_one_line(capsys):
    assert main(["check", "mixtral-8x7b-h100-train", "--resolved", "--json"]) == 2
    err = capsys.readouterr().err
    assert len([ln for ln in err.splitlines() if ln.strip()]) == 1 and "--resolved" in err


def test_a_saved_serving_result_holds_its_scenario_and_reruns_to_the_same_summary(tmp_path, capsys):
    out = tmp_path / "r"
    argv = ["--set", "workload.arrival.n_requests=300"]
    assert main(["simulate", "qwen3-30b-a3b-h100-serve", *argv, "--out", str(out), "--json"]) == 0
    saved = json.loads(capsys.readouterr().out)
    doc = json.loads((out / "summary.json").read_text())
    assert RESOLVED_NAME in doc["files"]
    assert yaml.safe_load((out / RESOLVED_NAME).read_text())["workload"]["arrival"]["n_requests"] == 300
    assert main(["simulate", str(out / RESOLVED_NAME), "--json"]) == 0
    rerun = json.loads(capsys.readouterr().out)
    assert {k: v for k, v in rerun.items() if k != "scenario"} == {k: v for k, v in saved.items() if k != "scenario"}
