"""The ``compare`` command (registered by :mod:`moesim.cli`): two or more runs side by side.

Each run is a scenario (a shipped name or a YAML, simulated here) or a result folder that ``simulate --out``
wrote (read, not simulated). The table lists the summary figures that differ, each run's value and its change
against the first run, green where it is better by the metric's direction and red where worse; a second
table puts the runs' steps side by side part by part (a training run's ``train_step``, a serving run's
mean decode step), so a change in the step time shows where it comes from.
"""

from __future__ import annotations

import math
import os
import shlex
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Annotated, Any

import typer

from moesim.errors import InputError


@dataclass(frozen=True)
class _Loaded:
    """One run of a comparison: its scenario's name, kind, summary and step table (None for a run saved
    before steps were tabled); a saved run's folder name and the ``--set`` overrides it was run with."""

    label: str
    kind: str
    summary: dict[str, Any]
    step: dict | None
    folder: str | None = None
    overrides: tuple[str, ...] = ()
    version: str | None = None  # the moesim that priced a saved run (None: recorded none); a simulated one: this


def _run(source: str, seed: int | None, progress_console) -> _Loaded:
    """A result folder or ``summary.json`` (read) or a scenario (simulated)."""
    from moesim.cli_output import result_step, saved_step

    path = Path(source)
    if (path / "summary.json").exists() or (path.name == "summary.json" and path.is_file()):
        from moesim.results import read_saved

        folder, doc, summary = read_saved(path)
        overrides = tuple(str(o) for o in doc.get("inputs", {}).get("overrides", []))  # read_summary checked them
        return _Loaded(doc["scenario"], doc["kind"], summary, saved_step(folder), folder.resolve().name, overrides,
                       str(doc["moesim_version"]) if doc.get("moesim_version") else None)
    if path.is_dir():
        from moesim.fileio import not_a_result_folder

        raise InputError(not_a_result_folder(path) or f"{source}: a folder without summary.json: give a result folder "
                         "(simulate --out) or a scenario")
    from moesim.cli_progress import RunProgress
    from moesim.loader import load_scenario
    from moesim.shipped import resolve_scenario
    from moesim.simulate import simulate

    scenario = load_scenario(resolve_scenario(source), [])
    with RunProgress(progress_console) as progress:
        result = simulate(scenario, seed=seed, progress=progress)
    from moesim import __version__

    return _Loaded(scenario.name, result.kind, result.summary, result_step(result.tables), version=__version__)


def _labels(loaded: list[_Loaded]) -> list[str]:
    """Each run's column name: its scenario's name, or where two runs share one, a saved run's folder name
    (``--out runs/e32``: ``e32``), numbered only where that still leaves two alike."""
    names = [r.label for r in loaded]
    names = [r.folder if names.count(r.label) > 1 and r.folder else r.label for r in loaded]
    return [f"{lab} #{i + 1}" if names.count(lab) > 1 else lab for i, lab in enumerate(names)]


def compare_command(
    runs: Annotated[list[str], typer.Argument(
        help="Two or more runs: scenarios (shipped names or YAML files, simulated here) or result folders "
             "written by simulate --out (read as saved).", metavar="RUN...", show_default=False)],
    every: Annotated[bool, typer.Option("--all", help="List every summary figure, not only those that differ.")] = False,
    seed: Annotated[int | None, typer.Option(help="Seed for the scenarios simulated here (default: each one's routing.seed).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the rows as JSON (key, values, change against the first run, better).")] = False,
    plot: Annotated[Path | None, typer.Option("--plot", help="Also draw the headline figures, each as a multiple of the first run's, to this path (no extension: PLOT.png and PLOT.svg, or --format).", metavar="PLOT")] = None,
    fmt: Annotated[str | None, typer.Option("--format", help="With --plot: comma-separated image formats: png, svg, pdf (default png,svg).", show_default=False)] = None,
) -> None:
    """Put two or more runs side by side: the figures that differ and by how much, better or worse, and their
    steps part by part."""
    from moesim.cli import err, out, print_json
    from moesim.cli_output import step_keys
    from moesim.compare import compare_rows, step_rows
    from moesim.formatting import fmt_value, time_unit
    from moesim.schemas import check_seed

    if len(runs) < 2:
        raise InputError(f"compare: {len(runs)} run given; give two or more (scenarios or result folders)")
    if fmt is not None and plot is None:  # said, or it would be ignored without a word
        raise InputError(f"--format {fmt}: applies to the figure --plot PATH draws; add --plot, or leave --format out")
    fmt = "png,svg" if fmt is None else fmt
    if seed is not None:
        check_seed(seed, "--seed")
    loaded = [_run(r, seed, err) for r in runs]
    kinds = {r.kind for r in loaded}
    if len(kinds) > 1:
        listed = ", ".join(f"{r.label} ({r.kind})" for r in loaded)
        raise InputError(f"compare: the runs are of different kinds ({listed}); compare training with training, "
                         "serving with serving")
    labels = _labels(loaded)
    kind = next(iter(kinds))
    every_row = compare_rows([r.summary for r in loaded], every=True)
    from moesim.engine.serving import anatomy as serving
    from moesim.engine.training import anatomy as training

    anatomy = training if kind == "training" else serving
    steps = [r.step for r in loaded]
    parts = step_rows(steps, anatomy.PARTS) if all(steps) else []  # a run saved before steps were tabled has none
    if plot is not None:
        from moesim import plots
        from moesim.plot_compare import compare_figure

        # an overloaded run's cheap tokens came from a growing queue: its bars must say so
        shown = [f"{lab} (overloaded)" if r.summary.get("overloaded") is True else lab for lab, r in zip(labels, loaded)]
        try:
            fig = compare_figure(shown, every_row, kind, parts=parts if any(r.differs for r in parts) else None,
                                 part_labels=anatomy.PART_LABELS)
        except ValueError as exc:
            raise InputError(f"--plot: {exc}") from None
        for path in plots.save_figure(fig, plot, [f.strip() for f in fmt.split(",") if f.strip()]):
            err.print(f"wrote {path}", highlight=False, soft_wrap=True)
    rows = every_row if every else [r for r in every_row if r.differs]
    if as_json:
        print_json({"runs": labels, "kind": kind, "overrides": [list(r.overrides) for r in loaded],
                     "moesim_versions": [r.version for r in loaded],
                     "rows": [{"key": r.key, "values": r.values, "change": r.changes, "better": r.better} for r in rows],
                     "step": [{"part": r.key, "seconds": r.values, "change": r.changes, "better": r.better}
                              for r in parts]})
        return
    repeated = set(step_keys()) if parts else set()  # the parts table holds them
    shown = [r for r in rows if r.key not in repeated]
    out.print(_table(f"{' vs '.join(labels)} ({kind})", "quantity", labels, shown, lambda r, v: fmt_value(r.key, v)))
    if not rows:
        out.print("every summary figure is the same in these runs (--all lists them)", highlight=False)
    if parts and any(r.differs for r in parts):
        what = "the step" if kind == "training" else "the mean decode step"
        scale, unit = time_unit(parts[-1].values[0])  # the first run's total
        out.print(_table(f"where {what} goes, part by part ({unit})", "part", labels,
                         [replace(r, key=anatomy.PART_LABELS.get(r.key, r.key)) for r in parts],
                         lambda r, v: f"{v * scale:,.3f}"))
    if any(r.key == "run_tokens" and r.differs for r in every_row):  # a run's cost is for its own token budget
        out.print("note: these runs price different token budgets (run_tokens): compare usd_per_mtok, not "
                  "run_cost_usd or run_time_days", highlight=False)
    from moesim import __version__

    older = [f"{label} ({r.version or 'no version recorded'})" for label, r in zip(labels, loaded)
             if r.version != __version__]
    if older:  # a figure may differ because another moesim priced it, not because the runs differ
        out.print(f"note: priced by another moesim than this one ({__version__}): {', '.join(older)}; simulate them "
                  "again to compare today's numbers", highlight=False, soft_wrap=True)
    for label, r in zip(labels, loaded):  # what each saved variant was run with
        if r.overrides:
            out.print(f"{label}: " + " ".join(f"--set {shlex.quote(o)}" for o in r.overrides), highlight=False,
                      soft_wrap=True)


def column_labels(labels: list[str], longest: int = 16) -> list[str]:
    """Run names as column headers: where they are long and share a leading part up to a ``-`` (three Mixtral
    serving scenarios), that part left out, so ``...-serve-tp2`` and ``...-serve-tp8`` stay apart in a narrow
    column; as given when short, or when leaving it out would make two alike or one empty."""
    if max(map(len, labels)) <= longest:
        return labels
    common = os.path.commonprefix(labels)
    cut = common.rfind("-") + 1
    short = [lab[cut:] for lab in labels]
    return short if cut and all(short) and len(set(short)) == len(short) else labels


#: Under a table with a change from, to or across zero: what its mark in brackets is.
ACROSS_ZERO = "(+x): a change from, to or across zero, as the difference"


def _mark(r, i: int, text_of) -> str:
    """Run ``i``'s change against the first in ``r`` (``compare.Row``), "" where the values are the same (float
    residue included) or not two finite numbers: a share by points, a change from, to or across zero by its
    difference in brackets (``text_of(row, value)`` writes it), any other by a percentage."""
    from moesim.compare import as_number, same_value
    from moesim.metrics import unit_of

    first, x = as_number(r.values[0]), as_number(r.values[i])
    if i == 0 or first is None or x is None or not (math.isfinite(first) and math.isfinite(x)) \
            or same_value(first, x):  # an unchanged figure says nothing
        return ""
    if unit_of(r.key) == "fraction":  # a share changes by points: 10.85 % -> 9.28 % is -1.57 pp
        return f"{100 * (x - first):+.2f}pp"
    change = r.changes[i]
    if change is None:  # 0.115 -> -0.149 is no "-229 %"
        return f"({'+' if x > first else '-'}{text_of(r, abs(x - first))})"
    return f"{100 * change:+.1f}%"  # one word: a narrow column wraps before it, not inside it


def _table(title: str, first: str, labels: list[str], rows: list, text_of) -> Any:
    """A rich table of ``rows`` (``compare.Row``): the key, then each run's value (``text_of(row, value)``) with
    its change against the first run (:func:`_mark`), green where better and red where worse."""
    from rich.table import Table

    table = Table(title=title, show_header=True, header_style="bold")
    # whole names: a summary key cut to "steady_window_en…" says nothing (the run columns fold their numbers instead)
    table.add_column(first, overflow="fold")
    for i, label in enumerate(column_labels(labels)):  # the title names the runs whole
        table.add_column(label if i == 0 else f"{label}\nvs the first", justify="right", min_width=12)
    across = False
    for r in rows:
        cells = [r.key]
        for i, (v, better) in enumerate(zip(r.values, r.better)):
            text = "-" if v is None else text_of(r, v)
            mark = _mark(r, i, text_of)
            if mark:
                across |= mark.startswith("(")
                colour = "" if better is None else "green" if better else "red"
                text += f"  [{colour}]{mark}[/{colour}]" if colour else f"  {mark}"
            cells.append(text)
        table.add_row(*cells)
    if across:
        table.caption = ACROSS_ZERO
    return table
