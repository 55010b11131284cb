"""The last ``moesim validate`` over the shipped table, saved: how far moesim read each measurement.

``moesim validate --save-results FILE`` writes one row per simulated measurement of the shipped
table (``moesim/data/validation.csv``): its id and quantity, moesim's prediction and error, and the
:class:`~moesim.validation_near.Traits` of its scenario. moesim ships that file as
``moesim/data/validation_results.csv`` (:data:`RESULTS_CSV`), so ``moesim simulate`` can name the
published measurements nearest to any scenario and what moesim read on them (:func:`trust_lines`)
without re-running them: a user sees, next to a prediction, whether runs like it agree with their
measurements (``moesim validate --near`` re-runs them). The traits are stored because computing
them loads every row's scenario (~1.5 s), too slow to add to every simulate.

``tests/test_validation_results.py`` checks that the shipped file lists exactly the table's
simulated rows with today's traits, and re-runs three of them against it, so a change to the physics
that moves them fails until the file is written again (the validation tables, docs/validation-table.md
and the README's misses, are written from the same run: ``moesim validate --markdown --save-results ...``,
then ``python -m moesim.validation_table``).
"""

from __future__ import annotations

import csv
import dataclasses
import shlex
import textwrap
from dataclasses import dataclass
from pathlib import Path

from moesim.errors import InputError
from moesim.validation import DEFAULT_CSV, optimistic_of, read_table
from moesim.validation_near import Traits, rank_nearest, row_traits, traits

#: The results moesim ships (written by ``moesim validate --save-results`` over the shipped table).
RESULTS_CSV = Path(__file__).resolve().parent / "data" / "validation_results.csv"
#: Traits fields, in order, with the type each is read back as.
TRAIT_FIELDS: tuple[tuple[str, type], ...] = tuple((f.name, f.type if isinstance(f.type, type) else
                                                    {"str": str, "int": int, "float": float, "bool": bool}[f.type])
                                                   for f in dataclasses.fields(Traits))
COLUMNS: tuple[str, ...] = ("id", "quantity", "predicted", "error") + tuple(name for name, _ in TRAIT_FIELDS)
#: A nearest distance above which no saved row is much like a run (ours, assumed): two mismatches of
#: kind (another device family and dense against MoE), or one and several doublings of size, plan and lengths.
FAR = 4.0


@dataclass(frozen=True)
class Known:
    """One saved result: the row's id and quantity, moesim's prediction and its relative error
    ``(predicted - published) / published``, and its scenario's traits."""

    id: str
    quantity: str
    predicted: float
    error: float
    traits: Traits


def known_of(checks, rows: list[dict[str, str]], base: Path) -> list[Known]:
    """The simulated checks of a validate run over ``rows`` (the CSV's rows, ``base`` its folder) as
    :class:`Known` results, in table order. Raises InputError when a row has no prediction."""
    failed = [c.id for c in checks if c.simulated and (c.predicted is None or c.error is None)]
    if failed:
        raise InputError(f"--save-results: {len(failed)} row(s) have no prediction ({', '.join(failed[:5])}); "
                         "nothing written")
    by_id = {r["id"].strip(): r for r in rows}
    seen: dict[tuple, Traits] = {}
    return [Known(c.id, c.quantity, float(c.predicted), float(c.error), row_traits(by_id[c.id], base, seen))
            for c in checks if c.simulated]


def write_results(known: list[Known], path: str | Path, header: str) -> None:
    """Write ``known`` to ``path`` atomically (a failure leaves any previous file as it was), under
    one ``# header`` comment line."""
    from moesim.fileio import atomic_open

    with atomic_open(path) as fh:
        fh.write(f"# {header}\n")
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(COLUMNS)
        for k in known:
            t = dataclasses.asdict(k.traits)
            w.writerow([k.id, k.quantity, repr(k.predicted), repr(k.error)] + [t[name] for name, _ in TRAIT_FIELDS])


def read_results(path: str | Path = RESULTS_CSV) -> list[Known]:
    """The results saved at ``path`` (default: the shipped ones). InputError, in one line, when the
    file is missing or not a results file."""
    p = Path(path)
    if not p.is_file():
        raise InputError(f"{p}: file not found (expected the results of moesim validate --save-results)")
    with open(p, newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(line for line in fh if not line.startswith("#"))
        if tuple(reader.fieldnames or ()) != COLUMNS:
            raise InputError(f"{p}: not a results file of this moesim (columns {', '.join(reader.fieldnames or [])}); "
                             "write it again with moesim validate --save-results")
        try:
            return [Known(r["id"], r["quantity"], float(r["predicted"]), float(r["error"]),
                          Traits(**{name: _parse(r[name], kind) for name, kind in TRAIT_FIELDS}))
                    for r in reader]
        except (TypeError, ValueError) as exc:
            raise InputError(f"{p}: line {reader.line_num}: {exc}") from None


def _parse(text: str, kind: type):
    """A trait read back from its CSV cell."""
    if kind is bool:
        if text not in ("True", "False"):
            raise ValueError(f"expected True or False, got {text!r}")
        return text == "True"
    return kind(text)


def nearest_known(target, n: int = 3, path: str | Path = RESULTS_CSV) -> list[tuple[Known, float]]:
    """The ``n`` saved results nearest to scenario ``target`` (the same kind of run), nearest first,
    with their distances (:func:`~moesim.validation_near.distance`); ties keep table order."""
    return rank_nearest(traits(target), ((k, k.traits) for k in read_results(path)), n)


def trust_lines(target, name: str, n: int = 3, width: int = 72, sets: tuple[str, ...] | list[str] = ()) -> list[str]:
    """What ``moesim simulate`` prints under a run: the ``n`` published measurements nearest to
    ``target`` and moesim's error on each at the last saved validate run, with the command that
    re-runs them (``name``: how the user named the scenario, "" for none written; ``sets``: the ``--set`` overrides the run
    had, repeated in that command so it picks the same rows). Empty when no result is saved."""
    try:
        near = nearest_known(target, n)
    except InputError:
        return []
    if not near:
        return []
    far = near[0][1] > FAR
    if name:
        again = " ".join(["moesim validate --near", shlex.quote(name), *(f"-s {shlex.quote(x)}" for x in sets)])
        again += " re-runs them"
    else:  # a plan not written to a file: say how to get one
        again = "with plan --out DIR, moesim validate --near DIR/best.yaml re-runs them"
    lines = [f"nearest published measurements{', none much like this run' if far else ''} (moesim / measured - 1 "
             f"at the last validate run; {again}):"]
    lean = _leanings()
    for k, _ in near:
        what = textwrap.shorten(k.quantity, width, placeholder=" ...")  # whole words: "DP16", never "DP1..."
        lines.append(f"  {k.id:<8} {100 * k.error:+7.1f} %  {lean(k):<11}  {what}")
    return lines


#: Below this |error| a result's line names no direction (a few percent either way is agreement).
LEAN_FROM = 0.05


def _leanings():
    """A function naming which way a saved result errs: ``optimistic`` (the prediction better than the
    run by its metric's direction, :func:`moesim.validation.optimistic_of`), ``pessimistic``, or ""
    below :data:`LEAN_FROM` and for a row the shipped table does not hold."""
    try:
        rows = {r["id"]: r for r in read_table(DEFAULT_CSV)}
    except InputError:
        rows = {}

    def lean(k: Known) -> str:
        r = rows.get(k.id)
        if r is None or abs(k.error) < LEAN_FROM:
            return ""
        better = optimistic_of(r["metric"].strip(), r.get("transform") or "", k.error)
        return "" if better is None else "optimistic" if better else "pessimistic"

    return lean
