"""The ``moesim`` command: parse, call the public API, render. Nothing else.

Exit codes: 0 success, 1 failure while running, 2 bad input. Known errors print one line on
stderr and never a traceback (set MOESIM_DEBUG=1 to see one for unexpected errors).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from moesim.cli_output import (  # the consoles, and what every command prints under a run
    _FIT_TEXT,
    READER_LEFT_EXIT,
    _print_fit,
    err,
    host_note_text,
    nearest_lines,
    out,
    print_result,
    result_step,
    silence_stdout,
    write_stdout,
)
from moesim.errors import InputError, MoesimError
from moesim.schemas import check_seed

try:  # typer >= 0.20 vendors its own click (typer._click); older typer depends on click itself
    from typer._click import exceptions as _click_exceptions
except ImportError:  # pragma: no cover - older typer
    from click import exceptions as _click_exceptions

_EXIT = (typer.Exit, getattr(_click_exceptions, "Exit", typer.Exit))
_USAGE = (_click_exceptions.ClickException,)
_ABORT = (typer.Abort, getattr(_click_exceptions, "Abort", typer.Abort))

app = typer.Typer(
    name="moesim",
    help="Simulate and cost Mixture-of-Experts training and serving clusters before renting them.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        from moesim import __version__

        out.print(f"moesim {__version__}", highlight=False)
        raise typer.Exit()


@app.callback()
def _main(
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                          help="Print moesim's version and exit.")] = False,
) -> None:
    """Simulate and cost Mixture-of-Experts training and serving clusters before renting them."""

ScenarioArg = Annotated[str, typer.Argument(
    help="Scenario YAML file, or the name of a shipped scenario (`moesim scenarios` lists them).",
    metavar="SCENARIO", show_default=False)]
SetOpt = Annotated[
    list[str] | None,
    typer.Option("--set", "-s", metavar="PATH=VALUE", help="Override a field: path.to.field=value (repeatable), e.g. --set plan.tp=2; a {mapping} value replaces the whole section (sweep --grid merges one)."),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON instead of tables.")]


def print_json(data) -> None:
    """Write ``data`` to stdout as indented JSON (numpy scalars made plain, NaN and infinities as null)."""
    from moesim.results import jsonable

    write_stdout(json.dumps(jsonable(data), indent=2) + "\n")


@app.command()
def presets(
    show: Annotated[str | None, typer.Option("--show", help="Print one preset's full data.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """List the model and hardware presets (or show one with --show NAME)."""
    from moesim.presets import HARDWARE, MODELS

    if show is not None:
        data = MODELS.get(show) or HARDWARE.get(show)
        if data is None:
            from moesim.suggest import did_you_mean

            hint = did_you_mean(show, [*MODELS, *HARDWARE], n=2, joiner=" or ")
            raise InputError(f"--show {show!r}: unknown preset{'; ' + hint if hint else ''}; allowed: "
                             f"{', '.join(sorted(MODELS) + sorted(HARDWARE))}")
        if as_json:
            print_json(data)
        else:
            import yaml
            from rich.markup import escape

            section = "model" if show in MODELS else "hardware"
            # YAML as it is, comments above it: `presets --show b200 > b200.yaml` loads, and pastes as a section
            # (no markup, no wrapping at the console's width: a long line folded is no longer YAML)
            out.print(f"[bold]# {escape(show)} ({section})[/bold]", highlight=False, soft_wrap=True)
            out.print("\n".join(f"# {line}" for line in _preset_lines(show, section, data)), highlight=False,
                      markup=False, soft_wrap=True)
            out.print(yaml.safe_dump(data, sort_keys=False), highlight=False, markup=False, soft_wrap=True, end="")
        return
    if as_json:
        print_json({"models": MODELS, "hardware": HARDWARE})
        return
    from moesim.report import presets_table

    for table in presets_table(MODELS, HARDWARE):
        out.print(table)


def _preset_lines(name: str, section: str, data: dict) -> list[str]:
    """What ``presets --show`` says above a preset's fields (as YAML comments): a model's size, and how a
    scenario names the preset."""
    if section == "hardware":
        return [f"in a scenario: hardware: {name}", f"  or hardware: {{preset: {name}, cluster: {{nodes: 2}}}} to change a field"]
    from moesim.accounting import param_counts
    from moesim.formatting import fmt_value
    from moesim.schemas import ModelSpec

    p = param_counts(ModelSpec(**data))
    return [f"{fmt_value('total_params', p.total)} parameters, {fmt_value('active_params', p.active)} active a token",
            f"in a scenario: model: {name}", f"  or model: {{preset: {name}, dtype: fp8}} to change a field"]


@app.command()
def check(scenario: ScenarioArg, set_: SetOpt = None, as_json: JsonOpt = False,
          resolved: Annotated[bool, typer.Option(
              "--resolved", help="Print the scenario as moesim resolved it instead (YAML: presets expanded, --set "
                                 "applied, every default filled in), which `moesim simulate` runs as it is.")] = False,
          ) -> None:
    """Validate a scenario and print its accounting: parameters, FLOPs, memory per device, fits."""
    from moesim.check import summary
    from moesim.loader import load_scenario
    from moesim.shipped import resolve_scenario

    s = load_scenario(resolve_scenario(scenario), set_ or [])
    if resolved:
        if as_json:
            raise InputError("--resolved prints YAML; leave out --json (or use --json alone for the accounting)")
        from moesim.scenario_dump import resolved_yaml

        # plain text, not wrapped to the console: a folded line is no longer YAML
        out.print(resolved_yaml(s, scenario, set_ or []), highlight=False, markup=False, soft_wrap=True, end="")
        return
    acc = summary(s)
    if as_json:
        print_json(acc)
        return
    from moesim.report import summary_table

    out.print(summary_table(f"{s.name}: {s.model.name} on {acc['devices']} x {s.hardware.device.name}", acc,
                            skip=_FIT_TEXT))
    _print_fit(acc)


@app.command()
def scenarios(as_json: JsonOpt = False) -> None:
    """List the shipped scenarios: name, kind (training or serving) and what each describes."""
    from moesim.shipped import shipped_scenarios

    found = shipped_scenarios()
    if as_json:
        print_json([{"name": sc.name, "kind": sc.kind, "description": sc.description, "path": str(sc.path)}
                     for sc in found])
        return
    from rich.table import Table

    table = Table(title="Shipped scenarios (pass a name wherever a scenario file is taken)")
    for col in ("name", "kind", "description"):
        table.add_column(col, overflow="fold")
    for sc in found:
        table.add_row(sc.name, sc.kind, sc.description)
    out.print(table)


@app.command()
def schema(
    out_file: Annotated[Path | None, typer.Option("--out", "-o", help="Write the schema to this file instead of stdout.")] = None,
) -> None:
    """Print the scenario's JSON Schema (point your editor's YAML plugin at it for completion)."""
    from moesim.fileio import write_out_file
    from moesim.schemas.json_schema import scenario_json_schema

    text = json.dumps(scenario_json_schema(), indent=2) + "\n"  # as a file is written: presets and all
    if out_file is None:
        write_stdout(text)
    else:
        write_out_file(out_file, text)
        err.print(f"wrote {out_file}", highlight=False, soft_wrap=True)  # a path is not broken across lines


@app.command()
def simulate(
    scenario: ScenarioArg,
    set_: SetOpt = None,
    seed: Annotated[int | None, typer.Option(help="Routing/arrival seed (default: the scenario's routing.seed).")] = None,
    as_json: JsonOpt = False,
    out_dir: Annotated[Path | None, typer.Option("--out", "-o", help="Write summary.json, spans.csv, trace.json (Perfetto) and tables here.")] = None,
    slo: Annotated[str | None, typer.Option(
        "--slo", metavar="METRIC=SECONDS,...",
        help="Serving: find the highest Poisson arrival rate at which these latency limits hold in steady state "
             "(e.g. ttft_p99=2,tpot_p99=0.2; metrics ttft|tpot|e2e _p50|_p90|_p99|_mean) and print the run at that "
             "rate with max_goodput_req_s and its cost; --out adds capacity_probes.csv. Each probe sizes its own run "
             "(arrivals over five end-to-end latencies, 1,000-20,000 requests), so workload.arrival.n_requests only "
             "sizes the first.")] = None,
) -> None:
    """Simulate a training step or a serving run and print where the time and money go."""
    from moesim.loader import load_scenario
    from moesim.shipped import resolve_scenario
    from moesim.simulate import simulate as run

    if seed is not None:
        check_seed(seed, "--seed")
    limits = None
    if slo is not None:
        from moesim.capacity import parse_slo

        limits = parse_slo(slo)
    s = load_scenario(resolve_scenario(scenario), set_ or [])
    if out_dir is not None:  # before the run: a folder it cannot use is said at once
        from moesim.fileio import check_result_folder

        check_result_folder(out_dir)
    if limits is None:
        from moesim.cli_progress import RunProgress

        with RunProgress(err) as progress:  # a bar on a terminal once a serving run takes a second
            result = run(s, seed=seed, progress=progress)
    else:
        result = _capacity_search(s, limits, seed)
    if limits is None:
        title = f"{s.name} ({result.kind}, seed {result.seed})"
    else:
        rate, at = result.summary["max_goodput_req_s"], result.tables["capacity_probes"]
        title = (f"{s.name} at capacity under {limits.text}: {rate:.4g} req/s (seed {result.seed})" if rate > 0 else
                 f"{s.name}: capacity 0 under {limits.text} (the run at {at['rate_req_s'][0]:.4g} req/s)")
    notes = {} if as_json and out_dir is None else {  # what needs the scenario: printed, and saved for show
        "title": title, "host_note": host_note_text(s, result.summary), "nearest": nearest_lines(s, scenario, set_ or [])}
    if out_dir is not None:
        # the notes that need the scenario, for show to print again; the inputs, for compare's labels
        from moesim.scenario_dump import RESOLVED_NAME, resolved_yaml

        at = (None if limits is None else f"--slo {limits.text} searched its arrival rate: the run saved here is at "
              f"{result.summary['max_goodput_req_s']:.6g} req/s (summary.json), not at the rate below")
        paths = result.save(out_dir, notes=notes, inputs={"scenario": scenario, "overrides": list(set_ or [])},
                            extra={RESOLVED_NAME: resolved_yaml(s, scenario, set_ or [], note=at)})
        err.print(f"wrote {len(paths)} files to {out_dir}", highlight=False, soft_wrap=True)
    if as_json:
        print_json({"scenario": result.scenario, "kind": result.kind, "seed": result.seed, **result.summary})
        return
    print_result(notes.pop("title"), result.summary, result_step(result.tables), **notes)


def _capacity_search(s, limits, seed: int | None):
    """``max_goodput`` with one line per probe on stderr; the run at capacity, capacity keys added."""
    from rich.markup import escape

    from moesim.capacity import check_serving, max_goodput

    check_serving(s)
    bracket: list[float | None] = [None, None]  # highest rate that held, lowest that failed
    done: list = []

    def on_probe(p) -> None:
        if p.holds:
            bracket[0] = max(bracket[0] or 0.0, p.rate_req_s)
        else:
            bracket[1] = min(bracket[1] or float("inf"), p.rate_req_s)
        lo, hi = (f"{x:.4g}" if x is not None else "?" for x in bracket)
        err.print(f"probe {len(done) + 1}: {p.rate_req_s:.4g} req/s, {p.n_requests} requests: "
                  f"{'' if p.holds else 'fails: '}{escape(p.reason)}; capacity in [{lo}, {hi}) req/s",
                  highlight=False, soft_wrap=True)
        done.append(p)
        status.update(f"searching: {len(done)} probes, capacity in [{lo}, {hi}) req/s")

    with err.status(f"{s.name}: saturated throughput (every request at t=0)") as status:
        cap = max_goodput(s, limits, seed=s.routing.seed if seed is None else seed, on_probe=on_probe)
    return cap.result


def _register_commands() -> None:
    """Commands whose modules live beside this one. They import only core dependencies at the top;
    an optional one (torch, dask) is imported when the command runs, which then says in one line
    what to install. So an ImportError here is a bug and must surface, never hide a command."""
    from moesim.cli_calibrate import calibrate_command
    from moesim.cli_sweep import plot_command, sweep_command, validate_command

    app.command("calibrate")(calibrate_command)
    app.command("sweep")(sweep_command)
    app.command("plot")(plot_command)
    app.command("validate")(validate_command)
    app.command("plan")(__import__("moesim.cli_plan", fromlist=["plan_command"]).plan_command)
    app.command("show")(__import__("moesim.cli_show", fromlist=["show_command"]).show_command)
    app.command("compare")(__import__("moesim.cli_compare", fromlist=["compare_command"]).compare_command)


_register_commands()


def click_command():
    """The click command behind ``app``, with on/off flags shown as bare flags in ``--help``.

    typer >= 0.20 prints every option's type, so a flag reads ``--quick <bool>`` as if it took a
    value; an empty metavar makes it read ``--quick`` (the built-in ``--help`` included).
    """
    from typer._click import Context

    group = typer.main.get_command(app)
    for cmd in (group, *getattr(group, "commands", {}).values()):
        for param in (*cmd.params, cmd.get_help_option(Context(cmd))):
            if param is not None and getattr(param, "is_flag", False):
                param.metavar = ""
    return group


#: Options that name a file or folder to write: an empty value would reach the command as '.', the working folder.
_PATH_OPTIONS = ("--out", "-o", "--plot", "--save-results")


def _refuse_empty_paths(args: list[str]) -> None:
    """InputError for an output option given an empty value (``--out ''``, ``--out=``)."""
    for i, arg in enumerate(args):
        name, eq, value = arg.partition("=")
        empty = (eq and name in _PATH_OPTIONS and not value.strip()) or (
            arg in _PATH_OPTIONS and i + 1 < len(args) and not args[i + 1].strip())
        if empty:
            raise InputError(f"{name} '': an empty path; name a file or folder")


def main(argv: list[str] | None = None) -> int:
    """Entry point: run the app, map errors to one line and an exit code."""
    for stream in (sys.stdout, sys.stderr):  # a name the terminal's encoding lacks prints escaped, not as a crash
        try:
            stream.reconfigure(errors="backslashreplace")
        except (AttributeError, ValueError, OSError):
            pass
    try:
        _refuse_empty_paths(sys.argv[1:] if argv is None else argv)
        rc = click_command().main(args=argv, prog_name="moesim", standalone_mode=False)
        if rc == 130:  # typer turns Ctrl-C into Exit(130), which main() returns without standalone mode
            err.print("interrupted")
            return 130
        return rc if isinstance(rc, int) else 0
    except MoesimError as exc:
        from rich.markup import escape

        from moesim.loader import one_line

        err.print(f"[red]error:[/red] {escape(one_line(str(exc)))}", highlight=False, soft_wrap=True)
        return exc.exit_code
    except _EXIT as exc:
        return exc.exit_code
    except _USAGE as exc:  # usage errors: unknown option, missing argument, a value of the wrong type
        from rich.markup import escape

        ctx = getattr(exc, "ctx", None)
        where = ctx.command_path if ctx is not None else "moesim"
        err.print(f"[red]error:[/red] {escape(' '.join(exc.format_message().split()))} (see: {where} --help)",
                  highlight=False, soft_wrap=True)
        return 2
    except _ABORT:
        err.print("aborted")
        return 130
    except KeyboardInterrupt:
        err.print("interrupted")
        return 130
    except BrokenPipeError:  # stdout's reader left (| head): as cli_output's consoles do
        silence_stdout()
        return READER_LEFT_EXIT
    except OSError as exc:  # a path the user gave that cannot be read or written (--out on a file, ...)
        from rich.markup import escape

        err.print(f"[red]error:[/red] {escape(_os_error_line(exc))}", highlight=False, soft_wrap=True)
        return 2
    except Exception as exc:  # noqa: BLE001 - last line of defence: never a traceback for users
        if os.environ.get("MOESIM_DEBUG"):
            raise
        err.print(f"[red]internal error:[/red] {type(exc).__name__}: {exc} (set MOESIM_DEBUG=1 for a traceback)",
                  highlight=False, soft_wrap=True)
        return 1


def _os_error_line(exc: OSError) -> str:
    """One line for an OSError on a user's path, naming the file it was for (an atomic write's temp
    file ``.NAME.XXXXXXXX.tmp`` reads as ``NAME``)."""
    import re

    name = exc.filename if exc.filename is not None else ""
    name = re.sub(r"(^|/)\.([^/]+)\.[A-Za-z0-9_]+\.tmp$", r"\1\2", str(name))
    what = exc.strerror or type(exc).__name__
    return f"{name}: {what}" if name else what


if __name__ == "__main__":
    sys.exit(main())


def run() -> None:
    """Console-script entry point."""
    sys.exit(main())
