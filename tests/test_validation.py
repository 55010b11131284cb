"""The validation table: arithmetic of predicted vs published, failing rows, the shipped rows, the command."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from moesim.errors import InputError
from moesim.loader import load_scenario
from moesim.results import SimResult
from moesim.validation import (
    DEFAULT_CSV,
    REQUIRED,
    SCENARIO_PREFIX,
    iter_checks,
    median_abs_error,
    read_table,
    run_checks,
    scenario_ref,
)
from tests.conftest import ROOT
from tests.test_sweep import invoke

HEADER = "id,quantity,scenario,overrides,metric,transform,scale,published,unit,source\n"
TRAIN = (ROOT / "scenarios" / "mixtral-8x7b-h100-train.yaml").as_posix()
DEV_POINTS = ROOT.parent / "shared" / "validation" / "dev_points.csv"


def fake_runner(scenario, seed):
    """tokens/s = 1000 x capacity factor; step time 0.5 s."""
    return SimResult("training", scenario.name, 0, {"tokens_per_s": 1000.0 * scenario.routing.capacity_factor,
                                                     "step_time_s": 0.5})


def write(tmp_path: Path, body: str) -> Path:
    p = tmp_path / "v.csv"
    p.write_text(HEADER + body)
    return p


def test_prediction_scale_transform_and_error(tmp_path):
    p = write(tmp_path, f"A,tok,{TRAIN},routing.capacity_factor=2.0,tokens_per_s,,1/4,400,tok/s,src\n"
                        f"B,steps,{TRAIN},,step_time_s,1/x,,2.5,steps/s,src\n"
                        f"C,bw,{TRAIN},,{SCENARIO_PREFIX}hardware.device.mem_bw_gbps,,,3350,GB/s,src\n")
    a, b, c = run_checks(p, runner=fake_runner)
    assert a.predicted == pytest.approx(500.0) and a.error == pytest.approx(0.25)
    assert b.predicted == pytest.approx(2.0) and b.error == pytest.approx(-0.2)
    assert c.predicted == 3350.0 and not c.simulated
    assert median_abs_error([a, b, c]) == pytest.approx(0.225)
    assert median_abs_error([a, b, c], simulated_only=False) == pytest.approx(0.2)


def test_failing_rows_are_reported_not_raised(tmp_path):
    p = write(tmp_path, f"A,bad plan,{TRAIN},plan.ep=3,tokens_per_s,,,1,x,src\n"
                        f"B,missing,nowhere.yaml,,tokens_per_s,,,1,x,src\n"
                        f"C,no key,{TRAIN},,ttft_p50_s,,,1,x,src\n"
                        f"E,good,{TRAIN},,tokens_per_s,,,1250,x,src\n")
    checks = run_checks(p, runner=fake_runner)
    assert [c.ok for c in checks] == [False, False, False, True]
    assert "plan.ep = 3" in checks[0].message
    assert "not found" in checks[1].message
    assert "ttft_p50_s" in checks[2].message
    assert checks[3].error == pytest.approx(0.0)


@pytest.mark.parametrize("scale, words", [("1/0", "expected a number or a/b"), ("abc", "expected a number or a/b"),
                                          ("nan", "must be a positive number"), ("0", "must be a positive number")])
def test_a_bad_scale_is_refused_before_any_row_runs(tmp_path, scale, words):
    from moesim.errors import InputError

    p = write(tmp_path, f"D,bad scale,{TRAIN},,tokens_per_s,,{scale},1,x,src\n")
    with pytest.raises(InputError, match=f"line 2 \\(row D\\): scale '{scale}': {words}"):
        read_table(p)


def test_bad_tables_are_input_errors(tmp_path):
    from moesim.errors import InputError

    with pytest.raises(InputError, match="not found"):
        read_table(tmp_path / "none.csv")
    (tmp_path / "x.csv").write_text("id,value\nA,1\n")
    with pytest.raises(InputError, match="missing column"):
        read_table(tmp_path / "x.csv")
    header = ",".join(REQUIRED)
    cells = ",".join("1" for _ in REQUIRED)
    (tmp_path / "y.csv").write_text(f"{header}\n{cells},an unquoted, comma\n")
    with pytest.raises(InputError, match=r"line 2 .* quote a cell that holds a comma"):
        read_table(tmp_path / "y.csv")


def test_shipped_rows_load_and_name_real_sources():
    rows = read_table(DEFAULT_CSV)
    ids = [r["id"] for r in rows]
    assert {"INF-01", "INF-06", "TRN-04", "TRN-05", "SW-01", "SW-03", "HW-06"} <= set(ids)
    assert len(ids) == len(set(ids))
    for r in rows:
        overrides = [o for o in r["overrides"].split(";") if o]
        s = load_scenario(scenario_ref(r["scenario"], DEFAULT_CSV.parent), overrides)  # every scenario is valid
        assert float(r["published"]) > 0 and r["unit"] and r["source"]
        if r["metric"].startswith(SCENARIO_PREFIX):
            continue
        assert r["metric"] in ({"tokens_per_s", "step_time_s", "peak_memory_gib", "peak_reserved_gib", "peak_device_gib",
                                "model_tflops_per_device", "microbatch_busy_s"}
                               if s.is_training else {"output_tokens_per_s", "whole_run_output_tokens_per_s", "tpot_mean_s",
                                                         "input_tokens_per_s", "makespan_s"})
    if DEV_POINTS.exists():  # rows taken from dev_points.csv carry the value it records
        with open(DEV_POINTS, newline="") as fh:
            dev = {d["id"]: d["value"] for d in csv.DictReader(fh)}
        shared = [r for r in rows if r["id"] in dev]
        assert len(shared) >= 15
        for r in shared:
            assert float(dev[r["id"]].replace(",", "")) == pytest.approx(float(r["published"]), rel=1e-3)
        for r in rows:  # rows found later cite where the number was published: repo@commit path or a page
            if r["id"] not in dev:
                assert "@" in r["source"] or "://" in r["source"] or "discussion" in r["source"].lower(), r["id"]


def test_validate_command_exit_codes(tmp_path):
    p = write(tmp_path, f"C,bw,{TRAIN},,{SCENARIO_PREFIX}hardware.device.mem_bw_gbps,,,3000,GB/s,src\n"
                        f"D,bad,{TRAIN},plan.ep=3,tokens_per_s,,,1,x,src\n")
    assert invoke(["validate", str(p)]) == 1  # a failing row is shown, then the run exits 1
    assert invoke(["validate", str(tmp_path / "none.csv")]) == 2
    assert invoke(["validate", str(p), "--fail-above", "5"]) == 1  # no simulated row: median n/a
    from typer.testing import CliRunner

    from tests.test_sweep import _app

    result = CliRunner().invoke(_app(), ["validate", str(p), "--json"])
    doc = json.loads(result.stdout)
    assert [c["id"] for c in doc["checks"]] == ["C", "D"]
    assert doc["checks"][0]["error"] == pytest.approx(350 / 3000)
    assert doc["checks"][1]["predicted"] is None and "plan.ep = 3" in doc["checks"][1]["message"]


def test_only_keeps_the_named_rows_and_prefixes(tmp_path):
    body = "".join(f"{i},q,{TRAIN},,{SCENARIO_PREFIX}hardware.device.mem_bw_gbps,,,3350,GB/s,src\n"
                   for i in ("INF-01", "INF-02", "APL-01", "TRN-04"))
    p = write(tmp_path, body)
    assert [c.id for c in iter_checks(p, only=["apl", "TRN-04"])] == ["APL-01", "TRN-04"]
    assert [c.id for c in iter_checks(p, only=["INF-0"])] == ["INF-01", "INF-02"]
    with pytest.raises(InputError, match=r"--only XYZ: no validation row .*prefixes such as INF, APL, TRN"):
        list(iter_checks(p, only=["XYZ"]))
    from typer.testing import CliRunner

    from tests.test_sweep import _app

    result = CliRunner().invoke(_app(), ["validate", str(p), "--only", "INF-02,APL", "--json"])
    assert result.exit_code == 0 and [c["id"] for c in json.loads(result.stdout)["checks"]] == ["INF-02", "APL-01"]
    assert invoke(["validate", str(p), "--only", "NOPE"]) == 2


def test_workers_give_the_checks_one_process_gives(tmp_path):
    """Rows spread over worker processes come back in the CSV's order with the same predictions
    (every simulation is seeded); rows sharing a scenario and overrides share one simulation."""
    p = write(tmp_path, f"A,tok,{TRAIN},,tokens_per_s,,,1000,tokens/s,src\n"
                        f"B,step,{TRAIN},routing.capacity_factor=2.0,step_time_s,,,1,s,src\n"
                        f"C,step,{TRAIN},,step_time_s,1/x,,1,steps/s,src\n"
                        f"D,bad,{TRAIN},plan.ep=3,tokens_per_s,,,1,x,src\n"
                        f"E,bw,{TRAIN},,{SCENARIO_PREFIX}hardware.device.mem_bw_gbps,,,3000,GB/s,src\n")
    serial = list(iter_checks(p, workers=1))
    parallel = list(iter_checks(p, workers=3))
    assert [c.id for c in parallel] == ["A", "B", "C", "D", "E"]
    assert parallel == serial
    assert parallel[1].predicted != parallel[2].predicted and "plan.ep = 3" in parallel[3].message
    assert invoke(["validate", str(p), "--workers", "0"]) == 2
