"""The ``sweep``, ``plot`` and ``validate`` commands (registered by :mod:`moesim.cli`).

Each function parses options, calls the library (sweep, plots, validation) and renders with rich.
Failures raise InputError (exit 2) or RunError (exit 1); the CLI prints them as one line.
Heavy imports (matplotlib, dask) happen inside the commands, so ``moesim --help`` stays fast.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, ProgressColumn, TextColumn
from rich.table import Table
from rich.text import Text

from moesim.cli_output import StdoutConsole, write_stdout
from moesim.errors import InputError, RunError

out = StdoutConsole()  # a redirected table keeps every value (no 80-column crop)
err = Console(stderr=True)



class _StatsColumn(ProgressColumn):
    """ok / invalid / failed counts, points per second and time left, from the task's fields."""

    def render(self, task) -> Text:
        f = task.fields
        eta = f.get("eta_s")
        eta_text = "--:--" if eta is None else f"{int(eta // 60):02d}:{int(eta % 60):02d}"
        return Text(f"ok {f.get('ok', 0)}  invalid {f.get('invalid', 0)}  failed {f.get('failed', 0)}  "
                    f"{f.get('rate', 0.0):.1f} pt/s  ETA {eta_text}")


#: Seconds between the progress lines a sweep writes to stderr when it is not a terminal.
LOG_EVERY_S = 30.0


def sweep_command(
    scenario: Annotated[str, typer.Argument(help="Scenario YAML file, or a shipped scenario's name, to sweep around.", metavar="SCENARIO", show_default=False)],
    experts: Annotated[str | None, typer.Option("--experts", help="Values of model.n_experts, e.g. 8,16,32,64.")] = None,
    capacity_factor: Annotated[str | None, typer.Option("--capacity-factor", help="Values of routing.capacity_factor, e.g. 1.0,1.25,2.0.")] = None,
    grid: Annotated[list[str] | None, typer.Option("--grid", "-g", metavar="PATH=V1,V2", help="Any field: path.to.field=v1,v2 (repeatable; a value may be a {mapping} merged into that section).")] = None,
    set_: Annotated[list[str] | None, typer.Option("--set", "-s", metavar="PATH=VALUE", help="Fixed override for every point: path.to.field=value (repeatable; a {mapping} value replaces the whole section, where --grid merges one; a field is either --set or swept).")] = None,
    seeds: Annotated[str | None, typer.Option("--seeds", help="Seeds to run at every point, e.g. 0,1,2 (default: the scenario's routing.seed).")] = None,
    out_dir: Annotated[Path | None, typer.Option("--out", "-o", help="Folder for results.csv, results.jsonl, sweep.json (default: sweeps/<scenario name>).")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Keep the rows already in --out and run only the missing points.")] = False,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Discard rows already in --out and start again.")] = False,
    executor: Annotated[str, typer.Option("--executor", help="local (processes on this machine) or dask.")] = "local",
    workers: Annotated[int, typer.Option("--workers", "-w", help="Worker processes (local) or LocalCluster workers (dask).")] = 2,
    scheduler: Annotated[str | None, typer.Option("--scheduler", help="Dask scheduler address tcp://host:port (default: start a LocalCluster).")] = None,
    retries: Annotated[int, typer.Option("--retries", help="Extra attempts for a point whose worker died.")] = 2,
    best: Annotated[str | None, typer.Option("--best", help="Metric that picks the best point, e.g. tokens_per_s or usd_per_mtok (direction from the metric registry; force with :min or :max).")] = None,
    slo: Annotated[str | None, typer.Option("--slo", metavar="METRIC=SECONDS,...", help="Serving: run each point at capacity under these latency limits (simulate --slo's search, seconds to a point), so plans compare at the traffic each can take: --best usd_per_mtok_at_capacity or max_goodput_req_s.")] = None,
    top: Annotated[int, typer.Option("--top", help="Rows in the final table.")] = 10,
    columns: Annotated[str | None, typer.Option("--columns", metavar="METRIC,...", help="The metrics the final table shows after the swept fields, in this order (default: the headline ones and those that vary, as many as fit); every metric is in results.csv either way.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the outcome (counts, files, best row) as JSON.")] = False,
) -> None:
    """Run a scenario over a grid of experts, capacity factors or any fields; a tidy table per point."""
    from moesim.shipped import resolve_scenario
    from moesim.sweep import run_sweep

    scenario = resolve_scenario(scenario)
    if workers < 1:
        raise InputError(f"--workers {workers}: need at least 1")
    if top < 1:
        raise InputError(f"--top {top}: need at least 1")
    shown = table_columns(columns)  # checked before anything runs
    with Progress(TextColumn("[bold]sweep"), BarColumn(), MofNCompleteColumn(), _StatsColumn(),
                  console=err, transient=False, disable=as_json or not err.is_terminal) as bar:
        task = bar.add_task("sweep", total=None)
        logged = [time.monotonic()]  # without a terminal (a CI log, a pipe): a line now and then instead of the bar

        def on_progress(p) -> None:
            bar.update(task, total=p.total, completed=p.done, ok=p.ok, invalid=p.invalid,
                       failed=p.failed, rate=p.rate_per_s, eta_s=p.eta_s)
            if not err.is_terminal and p.done < p.total and time.monotonic() - logged[0] >= LOG_EVERY_S:
                logged[0] = time.monotonic()
                eta = "" if p.eta_s is None else f", about {p.eta_s:.0f} s left"
                err.print(f"sweep: {p.done:,} of {p.total:,} points (ok {p.ok}, invalid {p.invalid}, failed {p.failed}), "
                          f"{p.rate_per_s:.1f} points/s{eta}", highlight=False, soft_wrap=True)

        done = [0]  # points finished so far: a run stopped after the first has rows to keep

        def on_point(p) -> None:
            done[0] = p.done
            on_progress(p)

        try:
            outcome = run_sweep(scenario, experts=experts, capacity_factor=capacity_factor, grid=grid or [],
                                seeds=seeds, sets=set_ or [], out_dir=out_dir, resume=resume,
                                overwrite=overwrite, executor=executor, workers=workers, scheduler=scheduler,
                                retries=retries, best=best, on_progress=on_point, slo=slo)
        except KeyboardInterrupt:
            if done[0] > 0:  # what Ctrl-C kept, and how to go on
                err.print("sweep: the points that finished are saved; the same command with --resume runs the rest",
                          highlight=False, soft_wrap=True)
            raise
    p = outcome.progress
    files = {"csv": str(outcome.out_dir / "results.csv"), "jsonl": str(outcome.out_dir / "results.jsonl")}
    if as_json:
        from moesim.results import jsonable

        doc = {"points": p.total + p.skipped, "ok": p.ok, "invalid": p.invalid, "failed": p.failed,
               "skipped": p.skipped, "wall_s": outcome.wall_s, "files": files, "best": outcome.best}
        write_stdout(json.dumps(jsonable(doc), indent=2) + "\n")
    else:
        from rich.markup import escape

        from moesim.sweep_table import host_floor_note, inert_axes_note, note, rows_table

        kind = next((r["kind"] for r in outcome.rows if r.get("kind")), "training")
        table, picked = rows_table(outcome.rows, outcome.dims, kind, best, outcome.best, top,
                                   outcome.best_direction, out.width, columns=shown)
        out.print(table)
        if note(picked, files["csv"]):
            out.print(note(picked, files["csv"]), highlight=False)
        for line in (host_floor_note(outcome.rows), inert_axes_note(outcome.rows, outcome.dims)):
            if line:
                out.print(f"[yellow]note:[/yellow] {escape(line)}", highlight=False)
        n = p.total + p.skipped
        out.print(f"{n} point{'' if n == 1 else 's'}: ok {p.ok}, invalid {p.invalid}, failed {p.failed}, "
                  f"skipped {p.skipped} (already done) in {outcome.wall_s:.1f} s -> {files['csv']}",
                  highlight=False, soft_wrap=True)  # the path whole, for a script to read back
        if best and outcome.best is None:
            finished = any(r.get("status") == "ok" for r in outcome.rows)
            why = (f"no finished point has {best.partition(':')[0]}" if finished else
                   "no point finished ok (the status column says why)")
            out.print(f"[yellow]no best point: {why}[/yellow]", highlight=False)
    if p.total and p.failed == p.total:
        raise RunError(f"every point failed (see the reason column of {files['csv']})")
    if p.failed:  # the others are saved; a script must not read the sweep as whole
        raise RunError(f"{p.failed} of {p.total} point{'' if p.total == 1 else 's'} failed (see the reason column of "
                       f"{files['csv']}); the rest are saved, and --resume runs the failed ones again")


def table_columns(text: str | None) -> list[str] | None:
    """``--columns a,b``: the metric names, each a registered summary metric (a one-line InputError naming the
    first that is not, with the names most like it); None when not given."""
    from moesim.metrics import METRICS
    from moesim.suggest import did_you_mean

    if text is None:
        return None
    names = [c.strip() for c in text.split(",") if c.strip()]
    if not names:
        raise InputError("--columns: empty; give metric names, e.g. --columns step_time_s,bubble_fraction")
    for name in names:
        if name not in METRICS:
            hint = did_you_mean(name, METRICS)
            raise InputError(f"--columns {name}: not a summary metric{'; ' + hint if hint else ''} (the README's "
                             "metric tables list them)")
    return list(dict.fromkeys(names))


def plot_command(
    results: Annotated[str, typer.Argument(help="A sweep folder (results.jsonl), a result folder (summary.json from simulate --out), or a scenario YAML or shipped scenario name (simulated first).", metavar="RESULTS", show_default=False)],
    kind: Annotated[str | None, typer.Option("--kind", "-k", help="throughput-vs-experts | cost-vs-cf | dropped-heatmap | breakdown | throughput-vs-load | metric-vs-axis (any swept field on x, --metric on y) (sweeps); timeline | latency-cdf | breakdown (one result; a serving result's mean decode step); spec-speedup (a serving scenario with workload.speculative). Default: from what a sweep varied (throughput-vs-experts, cost-vs-cf, throughput-vs-load, else metric-vs-axis); breakdown for a result or scenario.", show_default=False)] = None,
    out_base: Annotated[Path | None, typer.Option("--out", "-o", help="Output path without extension (default: <results>/<kind>, or plots/<scenario>-<kind>).")] = None,
    formats: Annotated[str, typer.Option("--format", help="Comma-separated image formats: png, svg, pdf.")] = "png,svg",
    metric: Annotated[str | None, typer.Option("--metric", help="Summary metric for the y axis (or heatmap colour) instead of the default; sweep kinds other than breakdown.")] = None,
    where: Annotated[list[str] | None, typer.Option("--where", metavar="PATH=VALUE", help="Keep only sweep rows with path=value (repeatable; sweep folders only).")] = None,
    set_: Annotated[list[str] | None, typer.Option("--set", "-s", metavar="PATH=VALUE", help="Override a field when RESULTS is a scenario YAML (repeatable).")] = None,
    seed: Annotated[int | None, typer.Option("--seed", help="Seed when RESULTS is a scenario YAML that is simulated (timeline, latency-cdf, breakdown).")] = None,
) -> None:
    """Draw a plot (PNG and SVG by default, or PDF) from sweep results, a saved result, or a scenario."""
    from moesim import plots
    from moesim.shipped import resolve_scenario

    fmts = _plot_formats(formats)
    source = Path(results) if Path(results).exists() or "/" in results else resolve_scenario(results)
    what = _plot_source(source)  # the real problem with RESULTS (missing, empty, unreadable) comes first
    here = f"a {_SOURCE_NAMES[what]}"
    if kind is None and what != "sweep":
        kind = plots.default_kind(what)
    if what != "scenario":
        _unused("--set", set_, here, "a scenario .yaml")
        _unused("--seed", seed, here, _SIMULATED)
    if what != "sweep":
        _unused("--where", where, here, "a sweep folder")
        _unused("--metric", metric, f"--kind {kind} from {here}",
                f"a sweep folder (--kind {', '.join(plots.METRIC_KINDS)})")
    if what == "sweep":
        from moesim.sweep_store import read_manifest, read_rows

        folder = source if source.is_dir() else source.parent
        rows = _filter(read_rows(source), where or [])
        manifest = read_manifest(folder)
        kind = kind or plots.default_kind("sweep", manifest.get("dims") or plots.swept_columns(rows))
        name = manifest.get("name") or (str(rows[0].get("scenario", "")) if rows else "")
        sliced = f"{name} ({', '.join(w.strip() for w in where)})" if where else name  # the slice a title shows
        fig = plots.plot_sweep(kind, rows, title=sliced, metric=metric, dims=manifest.get("dims"))
        base = out_base or folder / kind
    elif what == "result":
        from moesim.results import SimResult, read_saved

        result = SimResult.load(source)  # a damaged summary.json is named before a wrong --kind
        if kind not in plots.RESULT_KINDS:
            raise InputError(f"--kind {kind!r}: a result folder draws {', '.join(plots.RESULT_KINDS)}; "
                             "sweep plots need a sweep folder (results.jsonl)")
        sets = read_saved(source)[1].get("inputs", {}).get("overrides") or []  # the title says what was run
        fig = plots.plot_result(kind, result, title=f"{result.scenario} [{', '.join(map(str, sets))}]" if sets else "")
        base = out_base or source / kind
    else:
        from moesim.loader import load_scenario

        scenario = load_scenario(source, set_ or [])  # YAML and field errors before a wrong --kind
        title = f"{scenario.name} [{', '.join(set_)}]" if set_ else ""
        if kind in plots.SCENARIO_KINDS:
            _unused("--seed", seed, f"--kind {kind} (computed, not simulated)", _SIMULATED)
            fig = plots.plot_scenario(kind, scenario, title=title)
        elif kind in plots.RESULT_KINDS:
            from moesim.cli_progress import RunProgress
            from moesim.simulate import simulate

            with RunProgress(err) as progress:
                result = simulate(scenario, seed=seed, progress=progress)
            fig = plots.plot_result(kind, result, title=title)
        else:
            raise InputError(f"--kind {kind!r}: a scenario draws {', '.join(plots.RESULT_KINDS)} (simulated first) "
                             f"or {', '.join(plots.SCENARIO_KINDS)}; sweep plots need a sweep folder (results.jsonl)")
        base = out_base or Path("plots") / f"{scenario.name}-{kind}"
    for path in plots.save_figure(fig, base, fmts):
        out.print(f"wrote {path}", highlight=False, soft_wrap=True)


#: What each kind of plot source is called in messages.
_SOURCE_NAMES = {"sweep": "sweep folder", "result": "result folder", "scenario": "scenario"}


def _plot_formats(text: str) -> list[str]:
    """The --format list, each format once; a one-line InputError for an empty or unknown one
    (checked before anything is simulated or written)."""
    from moesim.plots import FORMATS

    fmts = list(dict.fromkeys(f.strip() for f in text.split(",") if f.strip()))
    if not fmts:
        raise InputError(f"--format {text!r}: give at least one of {', '.join(FORMATS)}")
    bad = [f for f in fmts if f not in FORMATS]
    if bad:
        raise InputError(f"--format {bad[0]!r}: allowed: {', '.join(FORMATS)}")
    return fmts


def _plot_source(source: Path) -> str:
    """"sweep", "result" or "scenario" for what RESULTS names; a one-line InputError naming the
    real problem (not found, an empty folder, a file of another kind) otherwise."""
    if source.suffix == ".jsonl" or (source.is_dir() and (source / "results.jsonl").exists()):
        return "sweep"
    if source.is_dir():
        if not (source / "summary.json").exists():
            raise InputError(f"{source}: neither a sweep folder (no results.jsonl) nor a result folder "
                             "(no summary.json); expected one of those or a scenario .yaml")
        return "result"
    if source.suffix in (".yaml", ".yml"):
        return "scenario"  # the loader names a missing, empty or broken file
    if not source.exists():
        raise InputError(f"{source}: file not found")
    raise InputError(f"{source}: expected a sweep folder, a result folder or a scenario .yaml")


#: When --seed applies: only a simulated scenario has a seed to choose.
_SIMULATED = "a scenario .yaml that is simulated (--kind timeline, latency-cdf or breakdown)"


def _unused(option: str, value: Any, here: str, applies: str) -> None:
    """One-line InputError when ``option`` was given (not None, not an empty list) for a plot it
    does not apply to, rather than ignoring it silently."""
    if value is not None and value != []:
        raise InputError(f"{option} does not apply to {here}; it applies when RESULTS is {applies}")


def _filter(rows: list[dict[str, Any]], where: list[str]) -> list[dict[str, Any]]:
    from moesim.sweep_grid import canonical, parse_values

    for item in where:
        path, sep, text = item.partition("=")
        if not sep or not path.strip():
            raise InputError(f"--where {item!r}: expected path=value")
        want = canonical(parse_values(text, f"--where {path}=")[0])
        path = path.strip()
        if not any(path in r for r in rows):
            raise InputError(f"--where {item!r}: no column {path!r} in these results")
        rows = [r for r in rows if canonical(_parsed(r.get(path))) == want]
        if not rows:
            raise InputError(f"--where {item!r}: no rows match")
    return rows


def _parsed(value: Any) -> Any:
    if isinstance(value, str) and value.startswith("{"):
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            return value
    return value


def validate_command(
    csv_path: Annotated[Path | None, typer.Argument(help="Validation CSV (default: the table moesim ships in moesim/data/validation.csv).", show_default=False, metavar="CSV")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the checks as JSON.")] = False,
    fail_above: Annotated[float | None, typer.Option("--fail-above", help="Exit 1 when the median |error| of simulated rows is above this many percent.")] = None,
    only: Annotated[str | None, typer.Option("--only", help="Comma-separated row ids, id prefixes or id ranges to run (INF-30,APL,INF-589..601); the median is over these rows.", show_default=False)] = None,
    markdown: Annotated[bool, typer.Option("--markdown", help="Print the simulated rows as the Markdown table of docs/validation-table.md (with each miss's reason; python -m moesim.validation_table FILE writes it there, and its misses into the README); the summary goes to stderr.")] = False,
    workers: Annotated[int, typer.Option("--workers", "-w", help="Processes to run the rows on (the results do not depend on it).")] = 2,
    near: Annotated[str | None, typer.Option("--near", help="A scenario (name or YAML): run only the published measurements most like it (same kind of run; by device family, model size and experts, plan, batch and lengths), nearest first, to see how far to trust its numbers.", show_default=False, metavar="SCENARIO")] = None,
    nearest: Annotated[int, typer.Option("--nearest", help="With --near: how many rows.")] = 5,
    set_: Annotated[list[str] | None, typer.Option("--set", "-s", metavar="PATH=VALUE", help="With --near: override a field of that scenario, as simulate --set does (repeatable).")] = None,
    save_results: Annotated[Path | None, typer.Option("--save-results", help="Also write each simulated row's prediction, error and scenario traits to this CSV (the shipped table, all rows; moesim ships the file as moesim/data/validation_results.csv, from which simulate names the measurements nearest to a run).", show_default=False, metavar="FILE")] = None,
) -> None:
    """Compare moesim's predictions with published measurements, row by row.

    A row more than 25 % off is a miss: the table prints the reason the CSV's ``why`` column gives.
    ``--near SCENARIO`` runs the rows most like a scenario of your own."""
    import math

    from moesim.validation import DEFAULT_CSV, checks_of, median_abs_error, read_table, select_rows

    if as_json and markdown:
        raise InputError("--json and --markdown: choose one output format")
    if fail_above is not None and not (math.isfinite(fail_above) and fail_above > 0):
        raise InputError(f"--fail-above {fail_above:g}: must be a positive, finite percentage")
    if workers < 1:
        raise InputError(f"--workers {workers}: need at least 1")
    if near is not None and only is not None:
        raise InputError("--near and --only: choose one way to pick the rows")
    if set_ and near is None:
        raise InputError("--set: only with --near (it overrides fields of the --near scenario)")
    if nearest < 1:
        raise InputError(f"--nearest {nearest}: need at least 1 row")
    if save_results is not None and (csv_path is not None or only is not None or near is not None):
        raise InputError("--save-results: only over the whole shipped table (no CSV argument, --only or --near)")
    if save_results is not None and save_results.is_dir():
        raise InputError(f"--save-results {save_results}: is a folder; give a file name")
    table = csv_path if csv_path is not None else DEFAULT_CSV
    rows = select_rows(read_table(table), only.split(",") if only is not None else None)
    if near is not None:
        from moesim.loader import load_scenario
        from moesim.validation_near import nearest_rows

        target = load_scenario(near, set_ or [])
        rows = [r for r, _ in nearest_rows(target, rows, Path(table).resolve().parent, nearest)]
        if not rows:
            raise InputError(f"--near {near}: no {'training' if target.is_training else 'serving'} row in {table} to compare with")
    checks = []
    with Progress(TextColumn("[bold]validate"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.description}"),
                  console=err, transient=True, disable=as_json or not err.is_terminal) as bar:
        task = bar.add_task("", total=len(rows))
        for c in checks_of(rows, Path(table).resolve().parent, workers=workers):
            checks.append(c)
            bar.update(task, advance=1, description=c.id)
    med = median_abs_error(checks)
    med_all = median_abs_error(checks, simulated_only=False)
    med_text = "n/a" if med is None else f"{100 * med:.1f} %"
    failed = [c.id for c in checks if not c.ok]
    if as_json:
        from dataclasses import asdict

        from moesim.results import jsonable

        doc = {"checks": [asdict(c) | {"optimistic": c.optimistic} for c in checks], "median_abs_error": med,
               "median_abs_error_all_rows": med_all, **({} if near is None else {"near": target.name})}
        write_stdout(json.dumps(jsonable(doc), indent=2) + "\n")
    else:
        n_sim = sum(1 for c in checks if c.simulated and c.error is not None)
        misses = [c for c in checks if c.simulated and c.missed]
        n_miss, n_rosy = len(misses), sum(1 for c in misses if c.optimistic)
        lead = "" if near is None else f"the {_rows(len(checks))} nearest to {target.name}: {_error_range(checks)}"
        summary = (lead + f"median |error|: {med_text} over {n_sim} simulated rows"
                   + ("" if med_all is None else f"; {100 * med_all:.1f} % over all rows with a prediction")
                   + f"; {_rows(n_miss)} over 25 %" + (f" ({n_rosy} optimistic)" if n_miss else "")
                   + f"; {_rows(len(failed))} failed")
        if markdown:
            from moesim.validation_table import markdown_table

            write_stdout(markdown_table(checks) + "\n")
            err.print(summary, highlight=False, soft_wrap=True)
        else:
            out.print(_checks_table(checks))
            out.print(summary, highlight=False)
    if save_results is not None:
        _save_results(checks, rows, Path(table).resolve().parent, save_results, med_text)
    problems = []
    if fail_above is not None and (med is None or not math.isfinite(med) or 100 * med > fail_above):  # NaN fails
        problems.append(f"median |error| {med_text} is above --fail-above {fail_above:g} %")
    if failed:
        problems.append(f"{_rows(len(failed))} failed to run ({', '.join(failed[:5])}{', ...' if len(failed) > 5 else ''})")
    if problems:
        raise RunError("; ".join(problems))


def _save_results(checks, rows, base: Path, path: Path, med_text: str) -> None:
    """Write the run's simulated rows to ``path`` (``validation_results``); nothing when a row failed."""
    import datetime

    from moesim.validation_results import known_of, write_results

    known = known_of(checks, rows, base)
    write_results(known, path, f"moesim validate --save-results: {_rows(len(known))} of moesim/data/validation.csv, "
                               f"median |error| {med_text} ({datetime.date.today().isoformat()})")
    err.print(f"wrote {_rows(len(known))} to {path}", highlight=False, soft_wrap=True)


def _error_range(checks) -> str:
    """``errors -12.0 to +53.3 %; `` over the checks with an error (empty without any)."""
    errs = sorted(100 * c.error for c in checks if c.error is not None)
    return "" if not errs else f"errors {errs[0]:+.1f} to {errs[-1]:+.1f} %; "


def _rows(n: int) -> str:
    """``1 row``, ``3 rows``."""
    return f"{n} row" if n == 1 else f"{n} rows"


def _checks_table(checks) -> Table:
    """One row per check: id, published, predicted, error, unit, then what was measured."""
    from moesim.validation_table import fmt_error

    t = Table(title="moesim vs published measurements", header_style="bold")
    for c in ("id", "published", "predicted", "error", "unit", "quantity"):
        t.add_column(c, justify="right" if c in ("published", "predicted", "error") else "left",
                     overflow="fold", no_wrap=c in ("id", "published", "predicted", "error"))
    for c in checks:
        what = Text(c.quantity)
        if c.why and c.missed:
            what.append(f"\nwhy: {c.why}", style="italic")
        if c.ok:
            t.add_row(c.id, f"{c.published:,.6g}", f"{c.predicted:,.6g}", fmt_error(c.error), Text(c.unit), what,
                      style="yellow" if c.missed else None)
        else:
            t.add_row(c.id, f"{c.published:,.6g}", "-", Text("error", style="red"), Text(c.unit),
                      Text(f"{c.quantity}: {c.message}", style="red"))
    return t
