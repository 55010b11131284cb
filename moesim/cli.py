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

import click
import typer

try:  # typer >= 0.20 vendors its own click; catch both so usage errors never leak tracebacks
    from typer._click import exceptions as _tclick
except ImportError:  # pragma: no cover - older typer uses click itself
    _tclick = click.exceptions

from rich.console import Console

from moesim.errors import InputError, MoesimError

_EXIT = (click.exceptions.Exit, typer.Exit)
_USAGE = (click.ClickException, _tclick.ClickException)
_ABORT = (click.exceptions.Abort, typer.Abort)

app = typer.Typer(
    name="moesim",
    help="Simulate and cost Mixture-of-Experts training and serving clusters before renting them.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
out = Console()
err = Console(stderr=True)

ScenarioArg = Annotated[Path, typer.Argument(help="Scenario YAML file (see scenarios/).", show_default=False)]
SetOpt = Annotated[
    list[str] | None,
    typer.Option("--set", "-s", help="Override a field: path.to.field=value (repeatable), e.g. --set plan.tp=2."),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON instead of tables.")]


def _print_json(data) -> None:
    from moesim.results import _jsonable

    sys.stdout.write(json.dumps(_jsonable(data), indent=2) + "\n")


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
            raise InputError(f"--show {show!r}: unknown preset; allowed: {', '.join(sorted(MODELS) + sorted(HARDWARE))}")
        if as_json:
            _print_json(data)
        else:
            import yaml

            out.print(f"[bold]{show}[/bold] ({'model' if show in MODELS else 'hardware'})")
            out.print(yaml.safe_dump(data, sort_keys=False), highlight=False, end="")
        return
    if as_json:
        _print_json({"models": MODELS, "hardware": HARDWARE})
        return
    from moesim.report import presets_table

    for table in presets_table(MODELS, HARDWARE):
        out.print(table)


@app.command()
def check(scenario: ScenarioArg, set_: SetOpt = None, as_json: JsonOpt = False) -> None:
    """Validate a scenario and print its accounting: parameters, FLOPs, memory per device, fits."""
    from moesim.accounting import summary
    from moesim.loader import load_scenario

    s = load_scenario(scenario, set_ or [])
    acc = summary(s)
    if as_json:
        _print_json(acc)
        return
    from moesim.report import summary_table

    out.print(summary_table(f"{s.name}: {s.model.name} on {acc['devices']} x {s.hardware.device.name}", acc))
    if not acc["fits"]:
        out.print(f"[red]does not fit:[/red] needs {acc['memory_per_device_gib']:.1f} GiB of "
                  f"{acc['memory']['capacity_gib']:.1f} GiB per device")


@app.command()
def schema(
    out_file: Annotated[Path | None, typer.Option("--out", "-o", help="Write the schema to this file instead of stdout.")] = None,
) -> None:
    """Print the scenario's JSON Schema (point your editor's YAML plugin at it for completion)."""
    from moesim.fileio import atomic_write_text
    from moesim.schemas import Scenario

    text = json.dumps(Scenario.model_json_schema(), indent=2) + "\n"
    if out_file is None:
        sys.stdout.write(text)
    else:
        atomic_write_text(out_file, text)
        err.print(f"wrote {out_file}")


@app.command()
def simulate(
    scenario: ScenarioArg,
    set_: SetOpt = None,
    seed: Annotated[int | None, typer.Option(help="Routing/arrival seed (default: the scenario's routing.seed).")] = None,
    as_json: JsonOpt = False,
    out_dir: Annotated[Path | None, typer.Option("--out", "-o", help="Write summary.json, spans.csv, trace.json (Perfetto) and tables here.")] = None,
) -> None:
    """Simulate a training step or a serving run and print where the time and money go."""
    from moesim.loader import load_scenario
    from moesim.simulate import simulate as run

    if seed is not None and seed < 0:
        raise InputError(f"--seed = {seed}: must be >= 0")
    s = load_scenario(scenario, set_ or [])
    result = run(s, seed=seed)
    if out_dir is not None:
        paths = result.save(out_dir)
        err.print(f"wrote {len(paths)} files to {out_dir}")
    if as_json:
        _print_json({"scenario": result.scenario, "kind": result.kind, "seed": result.seed, **result.summary})
        return
    from moesim.report import summary_table

    out.print(summary_table(f"{s.name} ({result.kind}, seed {result.seed})", result.summary))


def _register_optional() -> None:
    """Commands whose modules live beside this one (calibrate, sweep, plot, validate)."""
    try:
        from moesim.cli_calibrate import calibrate_command

        app.command("calibrate")(calibrate_command)
    except ImportError:
        pass
    try:
        from moesim.cli_sweep import plot_command, sweep_command, validate_command

        app.command("sweep")(sweep_command)
        app.command("plot")(plot_command)
        app.command("validate")(validate_command)
    except ImportError:
        pass


_register_optional()


def main(argv: list[str] | None = None) -> int:
    """Entry point: run the app, map errors to one line and an exit code."""
    try:
        app(args=argv, standalone_mode=False)
        return 0
    except MoesimError as exc:
        from rich.markup import escape

        from moesim.loader import one_line

        err.print(f"[red]error:[/red] {escape(one_line(str(exc)))}", highlight=False, soft_wrap=True)
        return exc.exit_code
    except _EXIT as exc:
        return exc.exit_code
    except _USAGE as exc:  # usage errors: unknown option, missing argument
        exc.show()
        return 2
    except _ABORT:
        err.print("aborted")
        return 130
    except KeyboardInterrupt:
        err.print("interrupted")
        return 130
    except Exception as exc:  # noqa: BLE001 - last line of defence: never a traceback for users
        if os.environ.get("MOESIM_DEBUG"):
            raise
        err.print(f"[red]internal error:[/red] {type(exc).__name__}: {exc} (set MOESIM_DEBUG=1 for a traceback)",
                  highlight=False, soft_wrap=True)
        return 1


if __name__ == "__main__":
    sys.exit(main())


def run() -> None:
    """Console-script entry point."""
    sys.exit(main())
