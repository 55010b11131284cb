"""The ``plan`` command (registered by :mod:`moesim.cli`): the cheapest plan that meets the SLO.

Parses options, calls :mod:`moesim.plan_search` (enumeration and screening in
:mod:`moesim.plan_space`, bounds in :mod:`moesim.plan_bounds`), renders the ranked table with rich
and writes the files of :mod:`moesim.plan_report`. Bad options are InputErrors (one line, exit 2).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, ProgressColumn, TextColumn
from rich.table import Table
from rich.text import Text

from moesim.cli_output import StdoutConsole, write_stdout
from moesim.errors import InputError, RunError
from moesim.fileio import check_runs_folder
from moesim.schemas import check_seed

out = StdoutConsole()  # a redirected table keeps every value (no 80-column crop)
err = Console(stderr=True)


class _PlanColumn(ProgressColumn):
    """Candidates left, simulations run and the best objective so far."""

    def render(self, task) -> Text:
        f = task.fields
        best = f.get("best")
        return Text(f"left {f.get('left', '?')}  runs {f.get('runs', 0)}  best "
                    + (f"{best:.4g} ({f.get('best_label', '')})" if best is not None else "-"))


def plan_command(
    scenario: Annotated[str, typer.Argument(help="Scenario YAML file, or a shipped scenario's name: the model, workload and (default) hardware to plan for.", metavar="SCENARIO", show_default=False)],
    devices: Annotated[str | None, typer.Option("--devices", "-d", help="Device counts: a range of powers of two (8..64) or a list (8,16,32). Default: the scenario's.")] = None,
    hardware: Annotated[str | None, typer.Option("--hardware", help="Hardware presets to compare, e.g. h100-sxm,h200,a100-80gb (default: the scenario's).")] = None,
    slo: Annotated[str | None, typer.Option("--slo", help="Serving SLO (required for serving), e.g. ttft_p99=2,tpot_p99=0.2 (seconds).")] = None,
    objective: Annotated[str | None, typer.Option("--objective", help="What to minimise/maximise. Serving: usd_per_mtok (at capacity, default), tokens_per_s_per_device, ttft_p99_s. Training: usd_per_mtok (default), step_time_s, mfu, tokens_per_s, tokens_per_s_per_device.")] = None,
    tp: Annotated[str | None, typer.Option("--tp", help="Tensor-parallel degrees to try (each must divide the model's attention heads, and stays within a node; default: the powers of two up to the devices per node).")] = None,
    pp: Annotated[str | None, typer.Option("--pp", help="Pipeline stages to try (any count up to the model's layers; an uneven layer split is written out as plan.pipeline_layout; default 1,2,4).")] = None,
    max_batch_seqs: Annotated[str | None, typer.Option("--max-batch-seqs", help="Serving batch limits to try (default 64,128,256,512).")] = None,
    set_: Annotated[list[str] | None, typer.Option("--set", "-s", metavar="PATH=VALUE", help="Fixed override of the scenario before planning: path.to.field=value (repeatable).")] = None,
    out_dir: Annotated[Path | None, typer.Option("--out", "-o", help="Write plans.csv, plans.json, pareto.png, best.yaml and the runs (results.jsonl) here.")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Reuse the runs already in --out; run only the missing ones.")] = False,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Discard the runs already in --out and start again.")] = False,
    workers: Annotated[int, typer.Option("--workers", "-w", help="Worker processes (1: run in this process).")] = 2,
    dask: Annotated[str | None, typer.Option("--dask", help="Run on Dask: a scheduler address tcp://host:port, or 'local' for a LocalCluster of --workers.")] = None,
    top: Annotated[int, typer.Option("--top", help="Rows of the ranked table.")] = 10,
    seed: Annotated[int, typer.Option("--seed", help="Seed of every run.")] = 0,
    verify: Annotated[int, typer.Option("--verify", help="Serving: re-run the capacity search of the best N plan shapes on the whole plan (every replica, fewest devices); they rank first, by it. 0: one-replica searches only.")] = 1,
    headroom: Annotated[float | None, typer.Option("--headroom", metavar="GIB", help="Training: keep only plans that leave at least this much device memory free (GiB per device; plans tied on the objective already rank the one with more free first).", show_default=False)] = None,
    exhaustive: Annotated[bool, typer.Option("--exhaustive", help="Evaluate every valid plan (no bound pruning; slow): the whole Pareto frontier.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print counts, the best plan and the ranked rows as JSON.")] = False,
) -> None:
    """Find the cheapest plan (devices, hardware, TP/PP/EP, batch limits) that meets the SLO."""
    from moesim.plan_options import prepare
    from moesim.plan_report import all_rows, counts, write_outputs
    from moesim.plan_search import search

    if workers < 1:
        raise InputError(f"--workers {workers}: need at least 1")
    if top < 1:
        raise InputError(f"--top {top}: need at least 1")
    check_seed(seed, "--seed")
    if verify < 0:
        raise InputError(f"--verify {verify}: must be >= 0 (0: rank by the one-replica searches alone)")
    if resume and overwrite:
        raise InputError("--resume and --overwrite: give one of them")
    if (resume or overwrite) and out_dir is None:
        raise InputError(f"--{'resume' if resume else 'overwrite'} needs --out DIR (where the runs are kept)")
    if dask is not None and dask != "local":
        from moesim.sweep_exec import check_scheduler

        check_scheduler(dask, "--dask", also="; or 'local' for a LocalCluster")
    if out_dir is not None:
        check_runs_folder(out_dir)
    space, obj, slo_obj = prepare(scenario, devices=devices, hardware=hardware, slo=slo, objective=objective,
                                  tp=tp, pp=pp, batch=max_batch_seqs, sets=set_ or [], exhaustive=exhaustive,
                                  headroom_gib=headroom)
    with Progress(TextColumn("[bold]plan"), BarColumn(), MofNCompleteColumn(), _PlanColumn(), console=err,
                  transient=False, disable=as_json or not err.is_terminal) as bar:
        task = bar.add_task("plan", total=len(space.candidates))

        def on_progress(p) -> None:
            bar.update(task, completed=p.decided, left=p.left, runs=sum(p.runs.values()), best=p.best_value,
                       best_label=p.best_label)

        outcome = search(space, obj, slo=slo_obj, seed=seed, workers=workers, dask=dask, store_dir=out_dir,
                         resume=resume, overwrite=overwrite, exhaustive=exhaustive, verify=verify,
                         on_progress=on_progress)
    files = [str(p) for p in write_outputs(outcome, out_dir)] if out_dir is not None else []
    n = counts(outcome)
    rows = [r for r in all_rows(outcome) if r["rank"] is not None]
    empty = None if rows else no_plan(outcome, n, space.training, out_dir is not None, headroom or 0.0)
    if as_json:
        from moesim.results import jsonable

        doc = {**n, "objective": obj.name, "best": rows[0] if rows else None, "ranked": rows[:top], "files": files}
        if empty is not None:
            doc |= {"no_plan": empty["why"], "nearest_fit": empty["nearest_fit"]}
        write_stdout(json.dumps(jsonable(doc), indent=2) + "\n")
    else:
        if rows:  # an empty table says nothing the counts line does not
            out.print(_table(rows, obj, space.training, top, limits=tuple(slo_obj.limits) if slo_obj else ()))
        out.print(_counts_line(n, space.training), highlight=False)
        if space.no_layout:
            counts_text = ", ".join(map(str, space.no_layout))
            out.print(f"[yellow]no plan splits {counts_text} device{'s' if space.no_layout != [1] else ''}[/yellow] "
                      f"({space.no_layout_why}): not searched", highlight=False)
        for f in files:
            out.print(f"wrote {f}", highlight=False, soft_wrap=True)
        if empty is not None:
            out.print(f"[yellow]{empty['why']}[/yellow]", highlight=False)
            if empty["nearest_fit"] is not None:
                out.print(empty["nearest_fit"]["text"], highlight=False)
        _print_trust(outcome, out_dir)
    if empty is not None and empty["failed"]:  # every run failed: a failure while running (as sweep's)
        raise RunError(empty["why"])


def no_plan(outcome, n: dict[str, Any], training: bool, has_out: bool, headroom_gib: float = 0.0) -> dict[str, Any]:
    """Why a search ranked no plan: ``{"why": one line, "nearest_fit": plan_report.no_fit_hint or None,
    "failed": every run failed}`` (``headroom_gib``: ``--headroom``, GiB per device). Only ``failed`` is an error (exit 1): a search that finishes with
    nothing to show exits 0, as ``check`` of a plan that does not fit does."""
    from moesim.plan_report import no_fit_hint

    if not n["simulated"]:  # every candidate pruned before a run: say by what
        pruned = ", ".join(f"{k} {v}" for k, v in n["pruned"].items())
        why = f"no candidate plan is valid and fits in memory ({pruned})"
    else:
        why = "no plan holds the SLO at any rate" if not training else "no plan fits and simulates"
    why += (f" (of {n['candidates']} candidates: pruned {n['pruned_total']}, evaluated {n['simulated']}); "
            f"see {'plans.csv in --out' if has_out else 'the counts above'}")
    failed = n["simulated"] > 0 and set(n["evaluated"]) <= {"failed"}
    hint = None if getattr(outcome, "disagg", False) else no_fit_hint(outcome.space.candidates, headroom_gib)
    return {"why": why, "nearest_fit": hint, "failed": failed}


def _print_trust(outcome, out_dir: Path | None) -> None:
    """Under the table: the published measurements nearest to the best plan and moesim's error on
    each (``validation_results.trust_lines``), as ``simulate`` prints under a run."""
    from moesim.loader import scenario_from_dict
    from moesim.report import print_trust
    from moesim.validation_results import trust_lines

    if getattr(outcome, "disagg", False):  # a disaggregated plan's best whole plan
        from moesim.plan_disagg_report import best_scenario
    else:
        from moesim.plan_report import best_scenario
    data = best_scenario(outcome)
    if data is None:
        return
    name = str(out_dir / "best.yaml") if out_dir is not None else ""
    print_trust(out, trust_lines(scenario_from_dict(data), name), lead="best plan: ")


def _counts_line(n: dict[str, Any], training: bool) -> str:
    if "pool_plans" in n:  # disaggregated
        from moesim.plan_disagg_report import counts_line

        return counts_line(n)
    pruned = ", ".join(f"{k} {v}" for k, v in sorted(n["pruned"].items())) or "none"
    evaluated = ", ".join(f"{k} {v}" for k, v in sorted(n["evaluated"].items())) or "none"
    runs = dict(n["runs"])
    if not training and "capacity" in runs:
        runs["capacity"] = f"{runs['capacity']} ({n['units_evaluated']} to the end, one replica each)"
    order = ("saturation", "capacity", "re-check", "simulate")
    text = ", ".join(f"{k} {runs[k]}" for k in order if k in runs) or "none"
    return (f"{n['candidates']} candidates: pruned {n['pruned_total']} ({pruned}); evaluated {n['simulated']} "
            f"({evaluated}); runs: {text}" + (f"; {n['runs_reused']} reused" if n["runs_reused"] else "")
            + f"; {n['wall_s']:.1f} s")


def format_cell(key: str, value: Any) -> str:
    """A table cell: the number alone (the unit is in the column header), by its unit's rule
    (:mod:`moesim.formatting`, as the summary and sweep tables)."""
    from moesim.formatting import fmt_number
    from moesim.metrics import unit_of

    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
        return "-"
    unit = "requests/s" if key in ("capacity_req_s", "capacity_per_replica_req_s") else unit_of(key)
    return fmt_number(float(value), unit, with_unit=False)


def _table(rows: list[dict[str, Any]], obj, training: bool, top: int, width: int | None = None,
           limits: tuple[str, ...] = ()) -> Table:
    """The best ``top`` plan shapes. Serving rows are replica shapes at their fewest devices (the same
    shape on more devices has the same cost per token and proportional capacity: "also on"); the
    objective is shown as the search measured it (one replica) and, for the plans re-checked on the
    whole plan (``--verify``), as that measured it; the other columns come from the whole plan where
    it was re-checked. ``width``: the characters the table may take (default the terminal's); a
    narrower terminal leaves out the least telling columns and says which. ``limits``: the SLO's
    summary keys (``itl_p99_s``), each shown beside TTFT and TPOT: the limit that binds is visible."""
    if rows and rows[0].get("kind") == "whole":  # disaggregated: each pool's plan and the split
        from moesim.plan_disagg_report import table

        return table(rows, obj, top)
    heads = {"capacity_req_s": "capacity req/s", "usd_per_mtok_at_capacity": "$/Mtok", "usd_per_mtok": "$/Mtok",
             "tokens_per_s_per_device_at_capacity": "tok/s/device", "tokens_per_s_per_device": "tok/s/device",
             "ttft_p99_s": "TTFT p99 s", "tpot_p99_s": "TPOT p99 s", "step_time_s": "step s", "mfu": "MFU",
             "tokens_per_s": "tok/s", "peak_memory_gib": "memory GiB"}
    if training:
        cols = [obj.key] + [c for c in ("step_time_s", "usd_per_mtok", "mfu", "tokens_per_s_per_device",
                                        "peak_memory_gib") if c != obj.key]
        first = {obj.key: "objective"}
    else:
        shown = ("capacity_req_s", "usd_per_mtok_at_capacity", "tokens_per_s_per_device_at_capacity",
                 "ttft_p99_s", "tpot_p99_s")
        cols = ["one_replica_objective", "whole_plan_objective"] + [
            c for c in (*shown, *(k for k in limits if k not in shown)) if c != obj.key]
        heads |= {k: _latency_head(k) for k in limits if k not in heads}
        heads |= {"one_replica_objective": f"{heads.get(obj.key, obj.key)}\n1 replica",
                  "whole_plan_objective": f"{heads.get(obj.key, obj.key)}\nwhole"}
        first = {}
    names = ("#", "plan", "devices", "hardware") + (() if training else ("also on",))
    shapes: dict[tuple, list[int]] = {}
    for r in rows:
        shapes.setdefault(_shape(r, training), []).append(r["devices"])
    body: list[list[str]] = []
    uneven = False  # a shown plan splits its layers unevenly (plan.pipeline_layout written out)
    for r in rows:  # best first; a shape's first row is its fewest devices (ties rank fewer devices first)
        devices = shapes.pop(_shape(r, training), None)
        if devices is None:
            continue
        cells = [str(len(body) + 1), r["plan"], str(r["devices"]), r["hardware"]]
        uneven = uneven or bool(r.get("plan.pipeline_layout"))
        if not training:
            cells.append(",".join(str(d) for d in sorted(set(devices) - {r["devices"]})) or "-")
        key = {c: (r.get("objective") if first.get(c) else r.get(c)) for c in cols}
        body.append(cells + [format_cell(obj.key if c.endswith("_objective") else c, key[c]) for c in cols])
        if len(body) >= top:
            break
    headers = list(names) + [heads.get(c, c) for c in cols]
    # what a narrow terminal drops first: the least telling columns (every one is in plans.csv / --json)
    drop_order = ["hardware", "also on", "tok/s/device", "memory GiB", "devices", "TPOT p99 s", "TTFT p99 s"]
    hardware = sorted({row[3] for row in body})
    if len(hardware) > 1:  # the plans differ by device: which one is the answer, so it goes last
        drop_order = drop_order[1:] + ["hardware"]
    left_names = [h.replace("\n", " ") for h in headers]
    shown = fit_columns(headers, body, width if width is not None else out.width, drop_order)
    t = Table(title=f"best plans by {obj.name} ({'lower' if obj.direction == 'min' else 'higher'} is better)",
              header_style="bold")
    for i in shown:
        left = headers[i] in ("plan", "hardware", "also on")
        # the plan's words wrap on a narrow terminal, so that the figures beside it are never cut
        t.add_column(two_line(headers[i], max((len(row[i]) for row in body), default=0)),
                     justify="left" if left else "right", no_wrap=headers[i] != "plan",
                     min_width=len(str(len(body))) if headers[i] == "#" else None)
    for j, row in enumerate(body):
        t.add_row(*(row[i] for i in shown), style="bold green" if j == 0 else None)
    notes = []
    if not training:
        notes.append("1 replica: the capacity search on one replica, times the replicas (what the search ranks by); "
                     "whole: re-run on every replica of the plan (--verify), which also gives the other columns")
    if uneven:
        notes.append(UNEVEN_NOTE)
    left_out = [left_names[i] for i in range(len(headers)) if i not in shown]
    if "hardware" in left_out and len(hardware) == 1:  # one device for every row: named, not a column
        left_out.remove("hardware")
        notes.append(f"all on {hardware[0]}")
    if left_out:
        notes.append(f"not shown for lack of width: {', '.join(left_out)} (plans.csv in --out and --json have them)")
    t.caption = "; ".join(notes) or None
    return t


#: Under a table that shows a plan whose layers do not split evenly over its pipeline chunks.
UNEVEN_NOTE = ("layers a/b/...: the layers of each pipeline chunk, which the stages cannot share evenly; "
               "best.yaml writes them as plan.pipeline_layout (Megatron-core's --pipeline-model-parallel-layout: "
               "it refuses an uneven split it is not given)")


def _latency_head(key: str) -> str:
    """``itl_p99_s`` -> ``ITL p99 s``: a latency limit's column header."""
    name, _, stat = key.removesuffix("_s").partition("_")
    return f"{name.upper()} {stat} s"


def two_line(header: str, cell_width: int) -> str:
    """``header`` on two lines (split at the space nearest its middle) when it is wider than its cells."""
    if "\n" in header or len(header) <= max(cell_width, 8) or " " not in header:
        return header
    spaces = [i for i, ch in enumerate(header) if ch == " "]
    cut = min(spaces, key=lambda i: abs(i - len(header) / 2))
    return header[:cut] + "\n" + header[cut + 1:]


#: The narrowest the plan column is counted when columns are fitted to a terminal (its words wrap below it).
_PLAN_WRAP = 28


def fit_columns(headers: list[str], body: list[list[str]], width: int, drop_order: list[str]) -> list[int]:
    """Indexes of the columns to show in ``width`` characters: all of them when they fit (each is as
    wide as its widest cell or header line, plus 3 for borders and padding), else without the
    columns of ``drop_order``, first ones first, until they do."""
    def col_width(i: int) -> int:
        head = max(len(part) for part in two_line(headers[i], max((len(r[i]) for r in body), default=0)).split("\n"))
        cells = max([head] + [len(r[i]) for r in body])
        return (min(cells, _PLAN_WRAP) if headers[i] == "plan" else cells) + 3  # the plan wraps (its table says so)

    shown = list(range(len(headers)))
    for name in drop_order:
        if sum(col_width(i) for i in shown) + 1 <= width:
            break
        shown = [i for i in shown if headers[i] != name]
    return shown


def _shape(r: dict[str, Any], training: bool) -> tuple:
    return (r["hardware"], r["plan"], r["devices"]) if training else (r["hardware"], r["plan"].split(" ", 1)[1])
