"""Sweeps: grid expansion, the result store, resume after a kill, worker deaths, executors, CLI.

The sweep machinery is exercised with ``tests.sweep_fakes.fake_simulate`` (a deterministic
stand-in engine) so these tests do not depend on the engines' speed; one test runs the real
engine on a tiny scenario when it is importable.
"""

from __future__ import annotations

import csv
import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import time

import pytest
import typer
from typer.testing import CliRunner

from moesim.errors import InputError, MoesimError, RunError
from moesim.sweep import best_row, infer_direction, parse_best, run_sweep
from moesim.sweep_grid import (
    apply_point,
    build_dimensions,
    expand,
    parse_grid_option,
    point_key,
    split_values,
)
from moesim.sweep_store import ResultStore, read_jsonl, read_rows
from tests.conftest import ROOT
from tests.sweep_fakes import failing_simulate, fake_simulate

TRAIN = ROOT / "scenarios" / "mixtral-8x7b-h100-train.yaml"  # dp64, ep8
SERVE = ROOT / "scenarios" / "mixtral-8x7b-h100-serve.yaml"
_VOLATILE = {"sim_wall_s"}


def table(rows):
    """Rows without wall-time columns, for comparing runs."""
    return [{k: v for k, v in r.items() if k not in _VOLATILE} for r in rows]


# ----------------------------------------------------------------------------- grid expansion
def test_the_results_path_is_printed_whole_for_a_script_to_read(tmp_path, capsys):
    """Outside a terminal rich wraps at 80 columns: a long --out path came back split over two lines."""
    from moesim.cli import main

    out = tmp_path / ("a_folder_name_long_enough_to_pass_the_eighty_columns_of_a_pipe" * 2) / "sw"
    assert main(["sweep", str(TRAIN), "--capacity-factor", "1.25", "--out", str(out), "--workers", "1"]) == 0
    last = capsys.readouterr().out.rstrip("\n").splitlines()[-1]
    assert last.endswith(f"-> {out / 'results.csv'}")


@pytest.mark.parametrize("grid, words", [
    ("hardware=h100-sxm,h2000", "--grid hardware: 'h2000': unknown hardware preset; did you mean h200"),
    ("hardware={preset: h100-sxm},{preset: h20}", "'h20': unknown hardware preset"),
    ("model.preset=mixtral-8x7b,mixtral-8x77b", "--grid model.preset: 'mixtral-8x77b': unknown model preset"),
])
def test_a_misspelt_swept_preset_is_refused_before_any_point_runs(tmp_path, grid, words):
    """A typo in one swept preset name is knowable up front: not a folder with one invalid row and exit 0."""
    from moesim.sweep import run_sweep

    with pytest.raises(InputError, match=re.escape(words)):
        run_sweep(str(SERVE), grid=[grid], out_dir=tmp_path / "sw")
    assert not (tmp_path / "sw").exists()


def test_cartesian_product_in_stable_order():
    dims = build_dimensions("8,16,32", "1.0,1.25", ["plan.microbatches=8,16"])
    points = expand(dims, seeds=(0, 1))
    assert len(points) == 3 * 2 * 2 * 2
    assert [d.path for d in dims] == ["model.n_experts", "routing.capacity_factor", "plan.microbatches"]
    assert points[0].values == {"model.n_experts": 8, "routing.capacity_factor": 1.0, "plan.microbatches": 8}
    assert (points[0].seed, points[1].seed) == (0, 1)
    assert points[-1].values == {"model.n_experts": 32, "routing.capacity_factor": 1.25, "plan.microbatches": 16}
    assert len({p.key for p in points}) == len(points)
    assert [p.index for p in points] == list(range(len(points)))


def test_no_dimensions_is_one_point_per_seed():
    assert [p.values for p in expand([], seeds=(3,))] == [{}]


def test_values_split_outside_brackets_and_mappings_merge_into_section():
    assert split_values("{dp: 32, ep: 8},{dp: 64, ep: 8}") == ["{dp: 32, ep: 8}", "{dp: 64, ep: 8}"]
    dim = parse_grid_option("plan={dp: 32, ep: 8},{dp: 64, ep: 8}")
    assert dim.values == ({"dp": 32, "ep": 8}, {"dp": 64, "ep": 8})
    raw = {"plan": {"dp": 64, "ep": 8, "microbatches": 16}, "model": "mixtral-8x7b"}
    point = expand([dim, *build_dimensions("16")], seeds=(0,))[0]
    out = apply_point(raw, point)
    assert out["plan"] == {"dp": 32, "ep": 8, "microbatches": 16}  # merged, not replaced
    assert out["model"] == {"preset": "mixtral-8x7b", "n_experts": 16}
    assert raw["plan"]["dp"] == 64  # the base is untouched


def test_a_swept_mapping_naming_a_preset_runs_that_preset_whatever_its_key_order():
    """A custom model's fields do not override the preset a swept mapping names (they ran under its label);
    the mapping's own fields stay, even written before its ``preset``."""
    dim = parse_grid_option("model={dtype: fp8, preset: llama-3.1-8b},{n_experts: 8}")
    raw = {"model": {"name": "mine", "n_layers": 4, "d_model": 1024, "n_experts": 16, "top_k": 2, "dtype": "bf16"}}
    llama, more = (apply_point(raw, p)["model"] for p in expand([dim], seeds=(0,)))
    assert llama == {"preset": "llama-3.1-8b", "dtype": "fp8"}
    assert more == {**raw["model"], "n_experts": 8}  # no base named: merged field by field


def test_key_ignores_float_spelling_of_whole_numbers():
    assert point_key({"routing.capacity_factor": 1}, 0) == point_key({"routing.capacity_factor": 1.0}, 0)
    assert point_key({"routing.capacity_factor": 1}, 0) != point_key({"routing.capacity_factor": 1}, 1)


@pytest.mark.parametrize("kwargs, fragment", [
    ({"grid": ["routing.capacity_facter=1,2"]}, "not a scenario field"),
    ({"grid": ["plan.dp"]}, "expected path.to.field=v1"),
    ({"grid": ["plan.dp=1,,2"]}, "comma-separated"),
    ({"experts": "8,8"}, "repeated"),
    ({"experts": "8,eight"}, "^--experts: 'eight' is not a positive whole number"),
    ({"grid": ["model.n_experts=8,eight"]}, "^--grid model.n_experts: 'eight' is not a positive whole number"),
    ({"experts": "8", "grid": ["model.n_experts=4"]}, "swept twice"),
    ({"grid": ["routing.capacity_factor.x=1"]}, "is a value, not a section"),
])
def test_bad_grid_options_are_input_errors(kwargs, fragment):
    with pytest.raises(InputError, match=fragment):
        build_dimensions(**kwargs)


# ----------------------------------------------------------------------------- best point
@pytest.mark.parametrize("metric, direction", [
    ("usd_per_mtok", "min"), ("step_time_s", "min"), ("ttft_p99_s", "min"), ("dropped_fraction", "min"),
    ("tokens_per_s", "max"), ("output_tokens_per_s", "max"), ("mfu", "max"), ("run_cost_usd", "min"),
])
def test_direction_is_inferred(metric, direction):
    assert infer_direction(metric) == direction


def test_best_direction_can_be_forced_and_unknown_names_fail():
    assert parse_best("fits:max") == ("fits", "max")
    with pytest.raises(InputError, match="fits:min or fits:max"):
        parse_best("fits")  # registered, but neither end is better
    rows = [{"status": "ok", "tokens_per_s": 5.0}, {"status": "ok", "tokens_per_s": 9.0},
            {"status": "invalid", "tokens_per_s": 99.0}]
    assert best_row(rows, "tokens_per_s")["tokens_per_s"] == 9.0
    assert best_row(rows, "tokens_per_s", "min")["tokens_per_s"] == 5.0
    with pytest.raises(InputError, match="not a summary metric nor a column"):
        best_row(rows, "nope_per_s")
    with pytest.raises(InputError, match="not a metric of these results"):
        best_row(rows, "ttft_p99_s")  # registered, but these rows do not have it


# ----------------------------------------------------------------------------- result store
def test_store_refuses_to_mix_runs_and_resume_cuts_torn_tail(tmp_path):
    with ResultStore(tmp_path) as store:
        store.open()
        store.append({"point": 0, "status": "ok", "seed": 0, "key": "a", "x": 1.0})
        store.append({"point": 1, "status": "failed", "seed": 0, "key": "b", "reason": "boom"})
    with pytest.raises(InputError, match="--resume to continue it, --overwrite to start again, or --out another folder"):
        ResultStore(tmp_path).open()
    with open(tmp_path / "results.jsonl", "ab") as fh:  # a row torn by a crash mid-write
        fh.write(b'{"point":2,"status":"ok"')
    assert len(read_jsonl(tmp_path / "results.jsonl")) == 2
    with ResultStore(tmp_path) as store:
        kept = store.open(resume=True)
        assert [r["key"] for r in kept] == ["a"]  # failed rows are run again
        store.append({"point": 1, "status": "ok", "seed": 0, "key": "b", "x": 2.0, "y": 3.0})
    text = (tmp_path / "results.jsonl").read_text()
    assert text.endswith("\n") and len(text.splitlines()) == 2
    csv_lines = (tmp_path / "results.csv").read_text().splitlines()
    assert csv_lines[0].startswith("point,status,reason,scenario,kind,seed,x,y")
    assert len(csv_lines) == 3


def test_results_csv_holds_every_finished_point_while_the_sweep_runs(tmp_path):
    """A new column (the first ok row after an invalid one) rewrites results.csv as a new file; the rows after it were
    appended to the old, unlinked one, so a sweep killed mid-way left the CSV at its first rows (236 in the jsonl)."""
    store = ResultStore(tmp_path, durable=False)
    store.open()
    store.append({"point": 0, "status": "invalid", "seed": 0, "key": "a", "reason": "plan.ep"})
    store.append({"point": 1, "status": "ok", "seed": 0, "key": "b", "x": 1.0})  # new column: rewritten
    for i in range(2, 6):
        store.append({"point": i, "status": "ok", "seed": 0, "key": f"k{i}", "x": float(i)})
    # read before close(), as after a kill: every point is there
    with open(tmp_path / "results.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["point"] for r in rows] == [str(i) for i in range(6)]
    store.close()


# ----------------------------------------------------------------------------- running sweeps
def test_invalid_and_crashing_points_are_rows_not_fatal(tmp_path):
    outcome = run_sweep(TRAIN, experts="8,16,32,12", capacity_factor="1.0,1.25", out_dir=tmp_path,
                        runner=failing_simulate, best="tokens_per_s", durable=False)
    by_status = {}
    for r in outcome.rows:
        by_status.setdefault(r["status"], []).append(r)
    assert len(outcome.rows) == 8
    assert {r["model.n_experts"] for r in by_status["invalid"]} == {12}
    assert "plan.ep = 8: must divide model.n_experts (12)" in by_status["invalid"][0]["reason"]
    assert {r["model.n_experts"] for r in by_status["failed"]} == {32}
    assert by_status["failed"][0]["reason"].startswith("ZeroDivisionError")
    assert outcome.best["model.n_experts"] == 8 and outcome.best["routing.capacity_factor"] == 1.25
    # Resume: finished rows stay, crashed points run again (still crashing: same count, no dupes).
    again = run_sweep(TRAIN, experts="8,16,32,12", capacity_factor="1.0,1.25", out_dir=tmp_path,
                      runner=failing_simulate, resume=True, durable=False)
    assert again.progress.skipped == 6 and again.progress.total == 2
    assert sorted(r["key"] for r in again.rows) == sorted(r["key"] for r in outcome.rows)


def test_worker_killed_mid_point_is_retried(tmp_path, monkeypatch):
    marker = tmp_path / "died"
    monkeypatch.setenv("MOESIM_FAKE_DIE_ONCE", str(marker))
    outcome = run_sweep(TRAIN, experts="8,16,32", capacity_factor="1.0,1.25", out_dir=tmp_path / "out",
                        runner=fake_simulate, workers=2, durable=False)
    assert marker.exists()  # a worker really was SIGKILLed while running an n_experts=16 point
    assert [r["status"] for r in outcome.rows] == ["ok"] * 6
    assert len({r["key"] for r in outcome.rows}) == 6


def test_point_that_always_kills_its_worker_fails_after_retries(tmp_path, monkeypatch):
    monkeypatch.setenv("MOESIM_FAKE_DIE_ALWAYS", "1")
    outcome = run_sweep(TRAIN, experts="8,16", out_dir=tmp_path / "out", runner=fake_simulate,
                        workers=1, retries=1, durable=False)
    status = {r["model.n_experts"]: r["status"] for r in outcome.rows}
    assert status == {8: "ok", 16: "failed"}
    assert "worker died" in outcome.rows[1]["reason"] and "2 attempts" in outcome.rows[1]["reason"]


_KILLED_SWEEP = textwrap.dedent("""
    import sys
    from moesim.sweep import run_sweep
    from tests.sweep_fakes import fake_simulate
    run_sweep(sys.argv[1], experts="8,16,32,64", capacity_factor="1.0,1.25,1.5,2.0",
              seeds="0,1", out_dir=sys.argv[2], runner=fake_simulate, workers=2,
              resume=True)
""")


def test_resume_refuses_a_scenario_edited_since_the_sweep_began(tmp_path):
    """The name survives an edit, so the contents are compared: rows priced at the old sequence
    length must not sit beside rows at the new one. The unedited file resumes as before."""
    scenario = tmp_path / "s.yaml"
    text = TRAIN.read_text()
    scenario.write_text(text)
    out = tmp_path / "out"
    run_sweep(scenario, experts="8", out_dir=out, runner=fake_simulate, workers=1, durable=False)
    scenario.write_text(text.replace("seq_len: 4096", "seq_len: 2048"))
    assert "seq_len: 2048" in scenario.read_text()
    with pytest.raises(InputError, match="--resume: the scenario's contents changed since"):
        run_sweep(scenario, experts="8,16", out_dir=out, runner=fake_simulate, workers=1, resume=True,
                  durable=False)
    scenario.write_text(text)
    outcome = run_sweep(scenario, experts="8,16", out_dir=out, runner=fake_simulate, workers=1, resume=True,
                        durable=False)
    assert outcome.progress.skipped == 1 and outcome.progress.ok == 1


def test_sweep_killed_with_sigkill_resumes_without_losing_or_duplicating_rows(tmp_path):
    out = tmp_path / "out"
    env = dict(os.environ, MOESIM_FAKE_SLEEP_S="0.15", PYTHONPATH=str(ROOT))
    proc = subprocess.Popen([sys.executable, "-c", _KILLED_SWEEP, str(TRAIN), str(out)], cwd=ROOT,
                            env=env, start_new_session=True, stderr=subprocess.PIPE)
    jsonl = out / "results.jsonl"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if jsonl.exists() and jsonl.read_bytes().count(b"\n") >= 6:
            break
        assert proc.poll() is None, proc.stderr.read().decode()
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)  # the sweep and its worker processes, mid-way
    proc.wait()
    proc.stderr.close()
    before = read_rows(out)
    assert 6 <= len(before) < 32  # killed mid-way, every finished row intact
    data = jsonl.read_bytes()
    assert data.endswith(b"\n") and all(json.loads(line) for line in data.splitlines())
    outcome = run_sweep(TRAIN, experts="8,16,32,64", capacity_factor="1.0,1.25,1.5,2.0", seeds="0,1",
                        out_dir=out, runner=fake_simulate, resume=True, durable=False)
    assert outcome.progress.skipped == len(before)
    keys = [r["key"] for r in outcome.rows]
    assert len(keys) == 32 and len(set(keys)) == 32
    assert all(r["status"] == "ok" for r in outcome.rows)
    csv_rows = (out / "results.csv").read_text().splitlines()
    assert len(csv_rows) == 33


TINY = """
name: tiny
model: {preset: mixtral-8x7b, n_layers: 2}
hardware: h100-sxm
plan: {dp: 8, ep: 8, microbatches: 2}
workload: {kind: training, global_batch_seqs: 16, seq_len: 512}
routing: {distribution: zipf, zipf_s: 0.8}
"""


def real_engine() -> bool:
    try:
        import moesim.engine.training.step  # noqa: F401
    except ImportError:
        return False
    return True


@pytest.mark.parametrize("engine", ["fake", "real"])
def test_dask_local_cluster_gives_the_local_table(tmp_path, engine):
    pytest.importorskip("dask.distributed")
    if engine == "real" and not real_engine():
        pytest.skip("training engine not importable")
    scenario = tmp_path / "tiny.yaml"
    scenario.write_text(TINY)
    kw = {"experts": "8,16", "capacity_factor": "1.0,1.25", "grid": ["plan.ep=1,8"], "seeds": "0,1",
              "runner": fake_simulate if engine == "fake" else None, "durable": False}
    local = run_sweep(scenario, out_dir=tmp_path / "local", **kw)
    dask = run_sweep(scenario, out_dir=tmp_path / "dask", executor="dask", workers=2, dask_processes=False, **kw)
    assert len(local.rows) == 16 and all(r["status"] == "ok" for r in local.rows)
    assert table(dask.rows) == table(local.rows)
    if engine == "real":  # seeds matter: the same point with another seed routes differently
        by_seed = {r["seed"]: r["dropped_fraction"] for r in local.rows if r["point"] in (0, 1)}
        assert by_seed[0] != by_seed[1]


def test_dask_worker_killed_mid_point_is_rescheduled(tmp_path, monkeypatch):
    pytest.importorskip("dask.distributed")
    marker = tmp_path / "died"
    monkeypatch.setenv("MOESIM_FAKE_DIE_ONCE", str(marker))
    outcome = run_sweep(TRAIN, experts="8,16,32", out_dir=tmp_path / "out", executor="dask", workers=2,
                        runner=fake_simulate, durable=False)  # worker processes (dask_processes=True)
    assert marker.exists()
    assert [r["status"] for r in outcome.rows] == ["ok"] * 3


def test_bad_executor_options_are_input_errors(tmp_path):
    with pytest.raises(InputError, match="executor"):
        run_sweep(TRAIN, experts="8", out_dir=tmp_path, executor="ray")
    with pytest.raises(InputError, match="--scheduler needs"):
        run_sweep(TRAIN, experts="8", out_dir=tmp_path, scheduler="tcp://localhost:1")
    with pytest.raises(InputError, match="plan.ep = 3"):  # a broken base scenario fails up front
        run_sweep(TRAIN, experts="8", out_dir=tmp_path, sets=["plan.ep=3"])


# ----------------------------------------------------------------------------- CLI exit codes
def _app() -> typer.Typer:
    from moesim.cli_sweep import plot_command, sweep_command, validate_command

    app = typer.Typer()
    app.command("sweep")(sweep_command)
    app.command("plot")(plot_command)
    app.command("validate")(validate_command)
    return app


def invoke(args: list[str]) -> int:
    """Exit code as moesim's CLI maps it: MoesimError -> its exit_code, else click's code."""
    result = CliRunner().invoke(_app(), args)
    if isinstance(result.exception, MoesimError):
        return result.exception.exit_code
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code


def test_cli_exit_codes(tmp_path):
    assert invoke(["sweep", str(TRAIN), "--experts", "7,9", "--out", str(tmp_path / "a")]) == 0  # all invalid
    assert invoke(["sweep", str(TRAIN), "--experts", "7", "--out", str(tmp_path / "a")]) == 2  # needs --resume
    assert invoke(["sweep", str(TRAIN), "--experts", "7", "--out", str(tmp_path / "a"), "--resume"]) == 0
    assert invoke(["sweep", str(TRAIN), "--grid", "routing.nope=1", "--out", str(tmp_path / "b")]) == 2
    assert invoke(["sweep", str(TRAIN), "--experts", "8", "--executor", "mpi"]) == 2
    assert invoke(["sweep", str(TRAIN), "--experts", "8", "--best", "fits", "--out", str(tmp_path / "c")]) == 2
    assert invoke(["sweep", str(tmp_path / "missing.yaml"), "--experts", "8"]) == 2
    assert invoke(["sweep", str(TRAIN), "--workers", "0"]) == 2
    assert invoke(["sweep"]) == 2  # usage error


def test_cli_sweep_with_real_engine(tmp_path):
    if not real_engine():
        pytest.skip("training engine not importable")
    scenario = tmp_path / "tiny.yaml"
    scenario.write_text(TINY)
    out = tmp_path / "out"
    args = ["sweep", str(scenario), "--experts", "8,16", "--capacity-factor", "1.0,2.0", "--out", str(out),
            "--best", "tokens_per_s", "--json"]
    result = CliRunner().invoke(_app(), args)
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["ok"] == 4 and doc["best"]["status"] == "ok"
    rows = read_rows(out)
    assert len(rows) == 4
    assert doc["best"]["tokens_per_s"] == max(r["tokens_per_s"] for r in rows)
    result = CliRunner().invoke(_app(), args[:-1] + ["--resume"])  # the table view; nothing left to run
    assert result.exit_code == 0 and "skipped 4" in result.stdout


def test_best_over_a_sweep_with_no_fitting_point_says_none_is_ranked(tmp_path):
    args = ["sweep", str(TRAIN), "--experts", "7,9", "--out", str(tmp_path / "a"), "--best", "tokens_per_s"]
    result = CliRunner().invoke(_app(), args)  # 7 and 9 experts do not divide the plan's EP: both invalid
    assert result.exit_code == 0, result.output
    text = " ".join(result.stdout.split())  # the narrow test console folds the title
    assert "(none ranked by tokens_per_s)" in text and "best by" not in text
    assert "no best point: no point finished ok" in text


def test_a_scheduler_address_is_checked_before_anything_runs(tmp_path):
    """`--scheduler nonsense` was an internal error after the folder was made; it is refused in one line first."""
    with pytest.raises(InputError, match=r"^--scheduler 'nonsense': expected PROTOCOL://HOST:PORT"):
        run_sweep(TRAIN, experts="8", executor="dask", scheduler="nonsense", out_dir=tmp_path / "sw")
    assert not (tmp_path / "sw").exists()


def test_a_scheduler_that_does_not_speak_dask_is_one_line_not_a_hang(monkeypatch):
    """An HTTP server on the scheduler's address (the dashboard's port) held a sweep for eleven minutes, and a proxy's
    reply surfaced as `internal error: MemoryError`: either is one RunError now."""
    import threading

    import moesim.sweep_exec as sx

    never = threading.Event()

    class Hangs:
        def __init__(self, address, timeout):
            never.wait(5)

    class Garbage:
        def __init__(self, address, timeout):
            raise MemoryError("Unable to allocate 3.07 EiB")

    monkeypatch.setattr(sx, "CONNECT_S", 0.2)
    with pytest.raises(RunError, match=r"no Dask scheduler answered within 0.2 s"):
        sx._connect(Hangs, "tcp://127.0.0.1:8787")
    with pytest.raises(RunError, match=r"what answered is not a Dask scheduler \(MemoryError"):
        sx._connect(Garbage, "tcp://10.0.0.1:8786")
    never.set()


def test_a_set_field_beside_a_swept_mapping_that_does_not_name_it_is_kept(tmp_path):
    """A swept mapping merges into its section, sweeping only what it names: `--set plan.recompute=full` beside
    `--grid 'plan={tp: 1, dp: 64},{tp: 2, dp: 32}'` was refused as "also swept"; a --set of a field it names still is."""
    grid = ["plan={tp: 1, dp: 64},{tp: 2, dp: 32}"]
    out = run_sweep(TRAIN, grid=grid, sets=["plan.recompute=full"], out_dir=tmp_path / "a", durable=False)
    assert [r["status"] for r in out.rows] == ["ok", "ok"]
    with pytest.raises(InputError, match=r"^--set plan.tp: plan is also swept"):
        run_sweep(TRAIN, grid=grid, sets=["plan.tp=1"], out_dir=tmp_path / "b")
    with pytest.raises(InputError, match=r"^--set plan: plan is also swept"):
        run_sweep(TRAIN, grid=grid, sets=["plan={tp: 1}"], out_dir=tmp_path / "c")


def test_a_sweep_without_a_terminal_logs_its_progress_to_stderr(tmp_path, capsys, monkeypatch):
    """In a pipe or a CI log the progress bar is off, and a long sweep said nothing until its end: it writes a line
    now and then (every LOG_EVERY_S seconds; 0 here), to stderr, leaving stdout's table alone."""
    import moesim.cli_sweep as cs
    from moesim.cli import main

    monkeypatch.setattr(cs, "LOG_EVERY_S", 0.0)
    assert main(["sweep", str(TRAIN), "--capacity-factor", "1.0,1.25,1.5", "--out", str(tmp_path / "sw"),
                 "--workers", "1"]) == 0
    captured = capsys.readouterr()
    lines = [x for x in captured.err.splitlines() if x.startswith("sweep: ")]
    assert lines and all(" of 3 points (ok " in x and "points/s" in x for x in lines)
    assert "sweep: " not in captured.out
