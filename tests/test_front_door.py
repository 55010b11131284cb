"""What a new user meets first: shipped scenarios by name, every command present, flags that read
as flags, a missing optional dependency named in one line, and why a plan does not fit."""

from __future__ import annotations

import json
import re
import sys

import pytest

from moesim.cli import main
from moesim.serving_reserve import CUDA_CONTEXT_GIB, CUDA_UNSEEN_GIB
from tests.conftest import SCENARIOS

# Mixtral 8x7B in fp16 on one 80 GB GPU: 87 GiB of weights, so it cannot fit.
TOO_BIG = ["mixtral-8x7b-h100-serve", "--set", "model.dtype=fp16", "--set", "plan.dp=1",
           "--set", "hardware.node.devices_per_node=1"]


def _one_error_line(err: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def test_scenarios_lists_every_shipped_file_with_its_kind(capsys):
    assert main(["scenarios", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert {r["name"] for r in rows} == {p.stem for p in SCENARIOS}
    kinds = {r["name"]: r["kind"] for r in rows}
    assert kinds["mixtral-8x7b-h100-train"] == "training" and kinds["switch-base-128-serve"] == "serving"
    assert main(["scenarios"]) == 0
    assert "mixtral-8x7b-h100-train" in capsys.readouterr().out


def test_commands_take_a_shipped_name_from_any_folder(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["check", "switch-base-128-train", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["scenario"] == "switch-base-128-train"
    assert main(["simulate", "llama-2-7b-a100-serve", "--json", "--set", "workload.arrival.n_requests=20"]) == 0
    assert json.loads(capsys.readouterr().out)["served_requests"] == 20  # its trace resolves beside it
    assert main(["simulate", "switch-base-128-trian"]) == 2
    assert "did you mean switch-base-128-train" in _one_error_line(capsys.readouterr().err)


def test_every_command_is_registered():
    from moesim.cli import click_command

    names = set(click_command().commands)
    assert {"check", "simulate", "scenarios", "presets", "schema", "calibrate", "sweep", "plot", "validate"} <= names


@pytest.mark.parametrize("argv, flag", [(["calibrate", "--help"], "--quick"), (["sweep", "--help"], "--resume"),
                                        (["check", "--help"], "--json")])
def test_flags_read_as_flags_in_help(argv, flag, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    assert main(argv) == 0
    out = capsys.readouterr().out
    row = next(ln for ln in out.splitlines() if f"{flag} " in ln)
    assert "<bool>" not in row, row
    assert "<int>" in out or "<str>" in out or "<path>" in out  # options that take values keep their type


def test_calibrate_without_torch_says_what_to_install(monkeypatch, tmp_path, capsys):
    monkeypatch.setitem(sys.modules, "torch", None)  # import torch now raises ImportError
    code = main(["calibrate", "--quick", "--out", str(tmp_path / "p.yaml")])
    line = _one_error_line(capsys.readouterr().err)
    assert code != 0 and "pip install" in line and "moesim[calibrate]" in line
    assert not (tmp_path / "p.yaml").exists()


def test_fit_reason_names_the_terms_and_the_advice_works(capsys):
    assert main(["check", *TOO_BIG, "--json"]) == 0
    acc = json.loads(capsys.readouterr().out)
    assert acc["fits"] is False
    # one H100 (80 GiB) less what CUDA does not report and its context: the engine's budget (moesim.serving_reserve)
    budget = 80.0 - CUDA_UNSEEN_GIB - CUDA_CONTEXT_GIB
    assert "weights" in acc["fits_reason"] and f"> capacity {budget:.1f} GiB" in acc["fits_reason"]
    assert "held by the CUDA context)" in acc["fits_reason"]
    terms = [float(x) for x in re.findall(r"([\d.]+) GiB", acc["fits_reason"].split("=")[0])]
    assert sum(terms) == pytest.approx(acc["memory_per_device_gib"], rel=0.01)
    tp = re.search(r"plan\.tp 1 -> (\d+)", acc["fits_advice"])
    assert tp, acc["fits_advice"]
    n = tp.group(1)
    assert main(["check", *TOO_BIG, "--set", f"plan.tp={n}", "--set", f"hardware.node.devices_per_node={n}",
                 "--json"]) == 0
    fixed = json.loads(capsys.readouterr().out)
    assert fixed["fits"] is True and fixed["fits_reason"] == "" and fixed["fits_advice"] == ""
    assert "h200" in acc["fits_advice"]  # a bigger device of the same family
    assert "m2" not in acc["fits_advice"]  # not a laptop


def test_simulate_prints_why_it_does_not_fit(capsys):
    assert main(["simulate", *TOO_BIG, "--set", "workload.arrival.n_requests=4"]) == 0
    out = capsys.readouterr().out
    assert "does not fit:" in out and "to fit:" in out


def test_training_fit_reason_counts_optimizer_and_activations(capsys):
    assert main(["check", "llama-2-7b-a100-train", "--set", "plan.zero_stage=0", "--set", "model.n_layers=200",
                 "--json"]) == 0
    acc = json.loads(capsys.readouterr().out)
    assert acc["fits"] is False
    for term in ("weights", "gradients", "optimizer", "activations"):
        assert term in acc["fits_reason"]
    assert acc["fits_advice"]


def test_fit_advice_only_offers_plans_that_are_valid(capsys):
    """grok-1-h100-train runs the interleaved schedule on plan.pp 4; with 4 micro-batches it no longer fits.
    Doubling pp would leave the micro-batches no multiple of it, a plan `check` rejects, so the advice
    offers the other ways instead of crashing on it (it once ended in 'internal error')."""
    assert main(["check", "grok-1-h100-train", "--set", "plan.microbatches=4", "--json"]) == 0
    acc = json.loads(capsys.readouterr().out)
    assert acc["fits"] is False and "plan.tp 2 -> " in acc["fits_advice"]
    assert "plan.pp" not in acc["fits_advice"]
    assert main(["check", "grok-1-h100-train", "--set", "plan.microbatches=4", "--set", "plan.pp=8"]) == 2
    assert "the interleaved schedule needs a multiple of plan.pp (8)" in capsys.readouterr().err
    assert main(["simulate", "grok-1-h100-train", "--set", "plan.microbatches=8"]) == 0  # pp 8 would be valid here
    assert "internal error" not in capsys.readouterr().err


@pytest.mark.parametrize("argv", [["presets"], ["schema"]])
def test_a_reader_that_leaves_the_pipe_early_gets_the_sigpipe_exit_code(argv):
    """`moesim presets | head -1` under pipefail exited 1, a failure while running: the shell's code for a command
    ended by its reader leaving is 141, and nothing goes to stderr."""
    import subprocess
    import sys

    p = subprocess.Popen([sys.executable, "-m", "moesim.cli", *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    p.stdout.close()  # before the command has imported, let alone written
    assert p.wait(timeout=120) == 141
    assert p.stderr.read() == b""


def test_a_sweep_whose_reader_leaves_exits_141_too(tmp_path):
    """sweep prints on a console of its own, which rich's default ended with exit 1 when `| head -1` left."""
    import subprocess
    import sys

    argv = ["sweep", "mixtral-8x7b-h100-train", "--experts", "8", "--out", str(tmp_path / "s")]
    p = subprocess.Popen([sys.executable, "-m", "moesim.cli", *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    p.stdout.close()
    assert p.wait(timeout=300) == 141
    assert b"Traceback" not in p.stderr.read()
