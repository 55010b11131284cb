"""Predicted vs published: run the scenarios behind a table of measurements and compare.

A validation table is a CSV with columns:

- ``id``: the source row (e.g. INF-01 of shared/validation/dev_points.csv), ``quantity``: what it is;
- ``scenario``: a scenario YAML, relative to the CSV's folder, or a shipped scenario's name
  (``deepseek-v3-h800-train``); ``overrides``: ``a.b=v`` items
  separated by ``;`` applied to it (so rows can share one file);
- ``metric``: a summary key of the simulation (e.g. ``output_tokens_per_s``), or
  ``scenario:dotted.path`` to read a field of the scenario itself (datasheet rows: no simulation);
- ``transform``: empty, or ``1/x`` (e.g. steps/s from ``step_time_s``); ``scale``: a number or
  ``a/b`` multiplying the result (e.g. ``1/1024`` for tokens/s per GPU on 1024 GPUs);
- ``published``, ``unit``, ``source``: the measured value (a positive number), its unit and where
  it comes from. Ids must be unique; every row has one cell per column.
- optional ``notes`` (the setup in full) and ``why`` (one line: why the row misses, where it misses
  by more than :data:`MISS`; the validate table and its Markdown print it beside the row).

Error is ``(predicted - published) / published``. A row whose scenario or simulation fails is
reported with its message; it never stops the others.
"""

from __future__ import annotations

import csv
import math
import re
import statistics
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from moesim.errors import InputError, MoesimError, short_repr
from moesim.metrics import direction_of

DEFAULT_CSV = Path(__file__).resolve().parent / "data" / "validation.csv"
REQUIRED = ("id", "quantity", "scenario", "metric", "published", "unit", "source")
SCENARIO_PREFIX = "scenario:"
MISS = 0.25  # |error| above which a row is a miss and says why


@dataclass
class Check:
    """One comparison: the published value, what moesim predicts, and the relative error."""

    id: str
    quantity: str
    published: float
    unit: str
    source: str
    metric: str
    predicted: float | None = None
    error: float | None = None  # (predicted - published) / published
    message: str = ""  # why there is no prediction
    simulated: bool = True  # False for datasheet rows read from the scenario
    why: str = ""  # one line: why the row misses (the CSV's optional ``why`` column)
    transform: str = ""  # the CSV's ``transform`` (``1/x`` compares the metric's reciprocal)

    @property
    def missed(self) -> bool:
        """True when the prediction is off by more than :data:`MISS`."""
        return self.error is not None and abs(self.error) > MISS

    @property
    def optimistic(self) -> bool | None:
        """True when the prediction is better than the measurement by its metric's direction (more
        throughput, less time, cost or memory: the registry's, :func:`moesim.metrics.direction_of`,
        reversed by a ``1/x`` transform), False when worse, None without an error or a direction
        (datasheet rows, metrics neither better larger nor smaller)."""
        return optimistic_of(self.metric, self.transform, self.error) if self.simulated else None

    @property
    def ok(self) -> bool:
        return self.predicted is not None


def optimistic_of(metric: str, transform: str, error: float | None) -> bool | None:
    """Whether a prediction off by ``error`` (predicted / published - 1) on ``metric`` is better than the
    run by the metric's registered direction (:func:`moesim.metrics.direction_of`), reversed when the
    row's ``transform`` is ``1/x``; None without an error or a direction. Pure."""
    direction = direction_of(metric)
    if error is None or error == 0 or direction is None:
        return None
    larger_is_better = (direction == "max") != ((transform or "").strip() == "1/x")
    return (error > 0) == larger_is_better


def read_table(path: str | Path) -> list[dict[str, str]]:
    """Rows of a validation CSV, checked for the required columns."""
    p = Path(path)
    if not p.is_file():
        raise InputError(f"{p}: file not found (expected a validation CSV)")
    try:
        with open(p, newline="", encoding="utf-8") as fh:
            rows = list(csv.DictReader(fh))
            columns = rows[0].keys() if rows else []
    except (UnicodeDecodeError, csv.Error) as exc:
        raise InputError(f"{p}: not a readable CSV ({exc})") from None
    if not rows:
        raise InputError(f"{p}: no rows")
    missing = [c for c in REQUIRED if c not in columns]
    if missing:
        raise InputError(f"{p}: missing column(s) {', '.join(missing)}; need {', '.join(REQUIRED)}")
    first_line: dict[str, int] = {}
    for n, row in enumerate(rows, start=2):
        rid = (row.get("id") or "").strip()
        where = f"{p}: line {n} (row {rid or '?'})"
        if None in row:  # DictReader puts a row's cells past the header's under None
            raise InputError(f"{where} has {len(columns) + len(row[None])} cells "
                             f"for {len(columns)} columns; quote a cell that holds a comma")
        if None in row.values():  # ... and None under the columns a short row does not reach
            raise InputError(f"{where} has {sum(v is not None for v in row.values())} cells "
                             f"for {len(columns)} columns; leave an unused cell empty (,,) rather than out")
        if not rid:
            raise InputError(f"{where}: id is empty; every row needs a unique id")
        if rid in first_line:
            raise InputError(f"{where}: id {rid} is already used on line {first_line[rid]}; ids must be unique")
        first_line[rid] = n
        _check_published(row["published"], where)
        try:  # before anything runs, as published
            scale = parse_scale(row.get("scale"))
        except InputError as exc:
            raise InputError(f"{where}: {exc}") from None
        if not (math.isfinite(scale) and scale > 0):
            raise InputError(f"{where}: scale {short_repr((row.get('scale') or '').strip())}: must be a positive "
                             "number or a/b")
    return rows


def _check_published(text: str, where: str) -> None:
    """A row's ``published`` value must be a positive, finite number (it divides the error)."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise InputError(f"{where}: published {short_repr(text.strip())}: must be a positive number")


def parse_scale(text: str | None) -> float:
    """``""`` -> 1, ``"0.5"`` -> 0.5, ``"1/1024"`` -> 1/1024."""
    text = (text or "").strip()
    if not text:
        return 1.0
    try:
        num, _, den = text.partition("/")
        return float(num) / float(den) if den else float(num)
    except (ValueError, ZeroDivisionError):
        raise InputError(f"scale {text!r}: expected a number or a/b") from None


def iter_checks(path: str | Path | None = None, runner: Callable | None = None,
                only: list[str] | None = None, workers: int = 1) -> Iterator[Check]:
    """Yield one Check per CSV row, in the CSV's order (default CSV: the shipped one).

    ``only``: row ids or id prefixes (``INF-30``, ``APL``) to keep; the rows are checked before any
    is computed, so a name that matches nothing is an :class:`InputError` naming the ids there are.
    ``workers`` > 1 spreads the rows over that many processes (rows that share a scenario and its
    overrides stay together, so one simulation serves them); the checks are the same either way,
    since every simulation is seeded. A custom ``runner`` always runs here, in this process.
    """
    csv_path = Path(path) if path is not None else DEFAULT_CSV
    yield from checks_of(select_rows(read_table(csv_path), only), csv_path.resolve().parent, runner, workers)


def checks_of(rows: list[dict[str, str]], base: Path, runner: Callable | None = None,
              workers: int = 1) -> Iterator[Check]:
    """The checks of rows already read (:func:`read_table`, :func:`select_rows`), in their order;
    ``base``: the CSV's folder. ``runner`` and ``workers`` as for :func:`iter_checks`."""
    groups = _groups(rows)
    if workers <= 1 or runner is not None or len(groups) < 2:
        cache: dict[tuple, Any] = {}
        for row in rows:
            yield check_row(row, base, runner, cache)
        return
    yield from _parallel_checks(groups, base, min(workers, len(groups)))


def _groups(rows: list[dict[str, str]]) -> list[list[tuple[int, dict[str, str]]]]:
    """Rows as (index, row) lists, one per (scenario, overrides): the unit one worker runs."""
    groups: dict[tuple, list[tuple[int, dict[str, str]]]] = {}
    for i, row in enumerate(rows):
        key = ((row.get("scenario") or "").strip(), (row.get("overrides") or "").strip())
        groups.setdefault(key, []).append((i, row))
    return list(groups.values())


def _check_group(group: list[tuple[int, dict[str, str]]], base: Path) -> list[tuple[int, Check]]:
    """The checks of one group, in a worker process (module level: the pool pickles it by name)."""
    cache: dict[tuple, Any] = {}
    return [(i, check_row(row, base, None, cache)) for i, row in group]


def _parallel_checks(groups: list, base: Path, workers: int) -> Iterator[Check]:
    """Run the groups on a process pool; yield each check once every row before it is done."""
    from concurrent.futures import ProcessPoolExecutor, as_completed

    done: dict[int, Check] = {}
    nxt = 0
    with ProcessPoolExecutor(max_workers=workers) as pool:
        futures = [pool.submit(_check_group, g, base) for g in groups]
        for fut in as_completed(futures):
            done.update(fut.result())
            while nxt in done:
                yield done.pop(nxt)
                nxt += 1


#: An id range as the docs write one: ``INF-589..601`` or ``INF-589..INF-601`` (both ends included).
_RANGE = re.compile(r"^([A-Z]+)-(\d+)\.\.(?:\1-)?(\d+)$")


def _picker(wanted: str, ids: frozenset[str]) -> Callable[[str], bool]:
    """What ``wanted`` (upper case) picks, as a test of an upper-case row id: an id range, a whole id (that row
    alone, so ``INF-30`` is not also INF-300..309), or else an id prefix (``APL``, ``INF-0``); ``ids``: every
    row's id. A range that runs backwards is an InputError."""
    m = _RANGE.match(wanted)
    if m is None:
        return (lambda i: i == wanted) if wanted in ids else (lambda i: i.startswith(wanted))
    prefix, lo, hi = m[1], int(m[2]), int(m[3])
    if lo > hi:
        raise InputError(f"--only {wanted}: the range runs backwards; write the lower id first ({prefix}-{hi}..{lo})")

    def in_range(i: str) -> bool:
        head, _, number = i.partition("-")
        return head == prefix and number.isdigit() and lo <= int(number) <= hi
    return in_range


def select_rows(rows: list[dict[str, str]], only: list[str] | None) -> list[dict[str, str]]:
    """The rows whose id is one of ``only``, starts with one of its prefixes or falls in one of its ranges
    (``INF-30``, ``APL``, ``INF-589..601``; case-insensitive); all without it."""
    if only is None:
        return rows
    wanted = tuple(w.strip().upper() for w in only if w.strip())
    if not wanted:
        raise InputError(f"--only {','.join(only)!r}: no ids given")
    ids = [r["id"].strip().upper() for r in rows]
    known = frozenset(ids)
    picks = [_picker(w, known) for w in wanted]
    for w, pick in zip(wanted, picks):
        if not any(pick(i) for i in ids):
            raise InputError(f"--only {w}: no validation row has that id, id prefix or id in that range; "
                             f"ids run {ids[0]} .. {ids[-1]} (prefixes such as {', '.join(_prefixes(ids))})")
    return [r for r, i in zip(rows, ids) if any(pick(i) for pick in picks)]


def _prefixes(ids: list[str]) -> list[str]:
    """The distinct id prefixes before the first '-', in table order."""
    return list(dict.fromkeys(i.split("-")[0] for i in ids))


def run_checks(path: str | Path | None = None, runner: Callable | None = None) -> list[Check]:
    """All checks of a validation CSV."""
    return list(iter_checks(path, runner))


def check_row(row: dict[str, str], base: Path, runner: Callable | None = None,
              cache: dict[tuple, Any] | None = None) -> Check:
    """Compute one row's prediction; any moesim error becomes the check's message."""
    metric = (row.get("metric") or "").strip()
    chk = Check(id=row["id"].strip(), quantity=row["quantity"].strip(), published=float("nan"),
                unit=row["unit"].strip(), source=row["source"].strip(), metric=metric,
                simulated=not metric.startswith(SCENARIO_PREFIX), why=(row.get("why") or "").strip(),
                transform=(row.get("transform") or "").strip())
    try:
        chk.published = _number(row["published"], "published")
        value = _predict(row, metric, base, runner, cache if cache is not None else {})
        chk.predicted = _transform(value, row.get("transform")) * parse_scale(row.get("scale"))
        chk.error = (chk.predicted - chk.published) / chk.published if chk.published else None
    except MoesimError as exc:
        chk.message = str(exc)
    except Exception as exc:  # noqa: BLE001 - a crashing row is reported, the others still run
        chk.message = f"{type(exc).__name__}: {(str(exc).splitlines() or [''])[0]}"
    return chk


def row_overrides(row: dict[str, str]) -> tuple[str, ...]:
    """A row's ``overrides`` cell as its ``a.b=v`` items (``;``-separated, blanks dropped)."""
    return tuple(o.strip() for o in (row.get("overrides") or "").split(";") if o.strip())


def median_abs_error(checks: list[Check], simulated_only: bool = True) -> float | None:
    """Median of |error| over rows with a prediction (simulated rows only by default)."""
    errs = [abs(c.error) for c in checks if c.error is not None and (c.simulated or not simulated_only)]
    return statistics.median(errs) if errs else None


def scenario_ref(name: str, base: Path) -> str | Path:
    """What a row's ``scenario`` names: a YAML path relative to the CSV's folder ``base``, or a
    shipped scenario's name (no folder, no suffix) as ``load_scenario`` takes it."""
    return name if "/" not in name and not name.endswith((".yaml", ".yml")) else base / name


def _predict(row: dict[str, str], metric: str, base: Path, runner: Callable | None,
             cache: dict[tuple, Any]) -> float:
    from moesim.loader import load_scenario

    name = (row.get("scenario") or "").strip()
    if not name:
        raise InputError("no scenario given")
    overrides = row_overrides(row)
    scenario = load_scenario(scenario_ref(name, base), list(overrides))
    if metric.startswith(SCENARIO_PREFIX):
        return _field(scenario, metric.removeprefix(SCENARIO_PREFIX))
    key = (name, overrides)
    if key not in cache:
        if runner is None:
            from moesim.simulate import simulate as runner
        cache[key] = runner(scenario, None).summary
    summary = cache[key]
    if metric not in summary:
        raise InputError(f"the {summary.get('kind', 'simulation')} summary has no {metric!r}")
    return _number(summary[metric], metric)


def _field(obj: Any, path: str) -> float:
    for part in path.split("."):
        obj = obj.get(part) if isinstance(obj, dict) else getattr(obj, part, None)
        if obj is None:
            raise InputError(f"scenario has no field {path!r}")
    return _number(obj, path)


def _transform(value: float, transform: str | None) -> float:
    t = (transform or "").strip()
    if t in ("", "x"):
        return value
    if t == "1/x":
        if value == 0:
            raise InputError("transform 1/x of zero")
        return 1.0 / value
    raise InputError(f"transform {t!r}: allowed: x, 1/x")


def _number(value: Any, what: str) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise InputError(f"{what} = {value!r}: not a number") from None
    if math.isnan(v):
        raise InputError(f"{what} is not a number (NaN)")
    return v
