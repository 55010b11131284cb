"""Tables redirected to a file keep every value: where stdout is no terminal and no width was asked for, the CLI's
console prints each table at the width it needs (``moesim compare`` of five runs keeps its fifth column whole,
a sweep's names are not folded mid-word); on a terminal, with ``COLUMNS`` set or a width forced (the README's
80 columns), rich's width as before."""

from __future__ import annotations

import io
import json
import shutil

import pytest

from moesim import cli
from moesim.cli import main
from moesim.cli_output import UNBOUNDED_COLUMNS, StdoutConsole
from tests.conftest import console_columns


@pytest.fixture
def no_columns(monkeypatch):
    monkeypatch.delenv("COLUMNS", raising=False)


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """Five saved training runs of one scenario, their step times 1..5 x the first's (copies of one run)."""
    root = tmp_path_factory.mktemp("five")
    assert main(["simulate", "mixtral-8x7b-h100-train", "--out", str(root / "run-1"), "--json"]) == 0
    doc = json.loads((root / "run-1" / "summary.json").read_text())
    paths = [root / "run-1"]
    for i in range(2, 6):
        shutil.copytree(root / "run-1", root / f"run-{i}")
        d = dict(doc, summary=dict(doc["summary"], step_time_s=doc["summary"]["step_time_s"] * i * 1000.5))
        (root / f"run-{i}" / "summary.json").write_text(json.dumps(d))
        paths.append(root / f"run-{i}")
    return paths


@pytest.mark.usefixtures("no_columns")
def test_compare_of_five_runs_redirected_keeps_every_column(saved, capsys):
    capsys.readouterr()
    assert cli.out.width == UNBOUNDED_COLUMNS  # pytest's stdout is no terminal
    assert main(["compare", *map(str, saved)]) == 0
    text = capsys.readouterr().out
    line = next(ln for ln in text.splitlines() if ln.startswith("│ step_time_s"))
    assert line.count("│") == 7  # the key and five runs, each whole, borders closed: nothing cropped
    assert line.rstrip().endswith("│") and "+500150.0%" in line  # the fifth run's change, on its line
    header = "".join(text.splitlines()[:6])
    assert all(f"run-{i}" in header for i in range(1, 6))


def test_columns_is_honoured_and_a_forced_width_kept(monkeypatch):
    monkeypatch.setenv("COLUMNS", "80")
    assert cli.out.width == 80
    monkeypatch.setenv("COLUMNS", "132")
    assert cli.out.width == 132
    monkeypatch.delenv("COLUMNS")
    with console_columns(cli.out, 80):  # as the README tests force it
        assert cli.out.width == 80
    assert cli.out.width == UNBOUNDED_COLUMNS
    assert StdoutConsole(file=io.StringIO(), width=90).width == 90  # a width asked for


def test_on_a_terminal_the_width_is_rich_s(monkeypatch, no_columns):
    console = StdoutConsole(file=io.StringIO(), force_terminal=True)
    monkeypatch.setattr("os.get_terminal_size", lambda fd=0: __import__("os").terminal_size((77, 20)))
    assert console.is_terminal and console.width == 77


@pytest.mark.usefixtures("no_columns")
def test_a_redirected_sweep_table_folds_no_name():
    """``sweep > out.txt``: the swept names whole (not ``llama-3.`` / ``1-8b``) and every moving metric shown on
    the stdout console, where rich's 80 columns fold them (cli_sweep prints its table on its own console: one of
    these once it is a StdoutConsole)."""
    from rich.console import Console

    from moesim.sweep_table import rows_table

    moving = ("step_time_s", "usd_per_mtok", "peak_memory_gib", "mfu", "dropped_fraction", "bubble_fraction",
              "alltoall_exposed_s", "expert_load_imbalance", "straggler_wait_s", "padding_waste_fraction")
    rows = [{"model.preset": m, "plan.microbatches": mb, "status": "invalid", "kind": "training",
             "reason": f"does not fit in device memory (peak {700 / mb:.1f} GiB)",
             **{k: (i + 1.37) * mb + (m == "llama-2-7b") for i, k in enumerate(moving)}}
            for m in ("llama-3.1-8b", "llama-2-7b") for mb in (2, 4)]

    def printed(console_of) -> tuple[str, object]:
        buf = io.StringIO()
        console = console_of(buf)
        table, picked = rows_table(rows, ["model.preset", "plan.microbatches"], "training", None, None, 10,
                                   width=console.width)
        console.print(table)
        return buf.getvalue(), picked

    folded, _ = printed(lambda f: Console(file=f))  # rich's own: 80 columns without a terminal
    assert "llama-3.1-8b" not in folded  # the bug: the name folded mid-word
    text, picked = printed(lambda f: StdoutConsole(file=f))
    assert text.count("llama-3.1-8b") == 2 and "llama-3.1-\n" not in text
    assert picked.left_out == []  # every moving metric has room
    assert max(len(ln) for ln in text.splitlines()) > 80
    lines = [ln for ln in text.splitlines() if "llama" in ln]
    assert len(lines) == 4 and all(ln.count("│") == len(moving) + 4 for ln in lines)  # one line a row: axes, metrics, status
