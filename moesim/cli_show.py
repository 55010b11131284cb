"""The ``show`` command (registered by :mod:`moesim.cli`): a saved result printed again.

``moesim simulate SCENARIO --out DIR`` writes a result folder; ``moesim show DIR`` prints its summary
table and the lines under it as ``simulate`` printed them, without simulating anything, so a result
can be passed around as a folder and read back later. The two notes ``simulate`` computes from the
scenario (the host-wait note, the nearest published measurements) are saved in ``summary.json``'s
``notes`` and printed again; a folder saved before 2026-12-05 has none.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from moesim.errors import InputError


def show_command(
    result: Annotated[Path, typer.Argument(help="A result folder written by simulate --out (its summary.json).",
                                           metavar="RESULT", show_default=False)],
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as simulate --json does.")] = False,
) -> None:
    """Print a saved result (simulate --out) as simulate printed it, without simulating."""
    from moesim import __version__
    from moesim.cli import err, out, print_json, print_result
    from moesim.cli_output import saved_step
    from moesim.fileio import not_a_result_folder
    from moesim.results import read_saved

    if foreign := not_a_result_folder(result):
        raise InputError(foreign)
    folder, doc, summary = read_saved(result)
    if as_json:
        print_json({"scenario": doc["scenario"], "kind": doc["kind"], "seed": doc["seed"], **doc["summary"]})
        return
    step = saved_step(folder)  # what the step views read, checked
    notes = doc.get("notes") if isinstance(doc.get("notes"), dict) else {}
    title = str(notes.get("title") or f"{doc['scenario']} ({doc['kind']}, seed {doc['seed']})")
    print_result(title, summary, step,
                 host_note=str(notes.get("host_note") or ""),
                 nearest=[str(x) for x in notes.get("nearest") or []])
    priced_by = doc.get("moesim_version")
    if priced_by != __version__:
        from rich.markup import escape

        was = f"moesim {priced_by}" if priced_by else "a moesim that did not record its version"
        out.print(f"[yellow]note:[/yellow] priced by {escape(was)}; this is moesim {__version__}: simulate "
                  "the scenario again for today's numbers", highlight=False)
    err.print(f"(saved result {folder}; nothing simulated)", highlight=False)
