"""Two or more runs side by side: which summary figures differ, by how much, and whether for the better.

Pure functions over summary dicts (``SimResult.summary``, or a saved ``summary.json``'s); ``moesim compare``
(:mod:`moesim.cli_compare`) runs or reads them and prints the rows. A change is relative to the first run,
``value / first - 1``; whether it is better comes from the metric registry's direction
(:func:`moesim.metrics.direction_of`: more throughput, less time, cost or memory), None where a metric has none.
A value within float residue of zero (:data:`ZERO`) is zero, so two such values are the same; a change from, to or
across zero has no relative change (a queue growth of 0.115 -> -0.149 is no "-229 %"), only a direction.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from moesim.metrics import direction_of

#: Summary keys that hold a sentence (printed under a run's table, not in it): never compared.
SENTENCES = ("fits_reason", "fits_advice", "capacity_limit", "capacity_note", "steady_note", "rejected_note")


@dataclass
class Row:
    """One summary key across the runs: its values (None where a run lacks it), each run's change against
    the first (``(value - first) / |first|``; 0 for the same value; None for the first, a missing, non-numeric
    or non-finite value, and where the value and the first are not of one sign: from, to or across zero) and
    whether that change is for the better (None without a direction, for the same value, or where either is
    missing, non-numeric or non-finite; a change from, to or across zero is better or worse by its
    difference)."""

    key: str
    values: list[Any]
    changes: list[float | None]
    better: list[bool | None]

    @property
    def differs(self) -> bool:
        """Whether the runs' values differ (numbers beyond a relative 1e-9; NaN equals NaN)."""
        return not _same(self.values)


#: Magnitude under which a figure is zero: float residue (a queue growth of -3.6e-16 requests against 4.0e-16 is
#: none in either run, not a change of -210 %). Summary figures are in whole units (seconds, requests, dollars,
#: fractions), where nothing moesim models is a billionth.
ZERO = 1e-9


def as_number(v: Any) -> float | None:
    """A number as a float, :data:`ZERO`'s residue as 0.0; None for a flag or anything else."""
    if not isinstance(v, (int, float)) or isinstance(v, bool):
        return None
    x = float(v)
    return 0.0 if abs(x) < ZERO else x


def same_value(a: float, b: float) -> bool:
    """Whether two numbers (:func:`as_number`'s) are one figure: equal to a relative 1e-9, NaN equal to NaN."""
    if math.isnan(a) or math.isnan(b):
        return math.isnan(a) and math.isnan(b)
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=0.0)


def _same(values: list[Any]) -> bool:
    """Whether every run has the same value (numbers to a relative 1e-9, any two within :data:`ZERO` of zero
    alike, NaN equal to NaN)."""
    first = values[0]
    for v in values[1:]:
        a, b = as_number(first), as_number(v)
        if a is not None and b is not None:
            if not same_value(a, b):
                return False
        elif v != first:
            return False
    return True


def compare_rows(summaries: list[dict[str, Any]], every: bool = False) -> list[Row]:
    """The rows of a comparison of ``summaries`` (two or more): the keys whose values differ (``every``: all
    keys), in the first summary's order and then the others' new keys; sentences left out."""
    if len(summaries) < 2:
        raise ValueError("compare needs two or more runs")
    keys: list[str] = []
    for s in summaries:
        keys.extend(k for k in s if k not in keys and k not in SENTENCES)
    rows = [_row(key, [s.get(key) for s in summaries], direction_of(key)) for key in keys]
    return rows if every else [r for r in rows if r.differs]


def step_rows(steps: list[dict[str, list]], order: tuple[str, ...] = ()) -> list[Row]:
    """Where the runs' steps go, part by part: one row per part any run has, in ``order`` (the anatomy's
    ``PARTS``; parts it does not list after them, as the runs list them), and the ``total`` last; values in
    seconds (0 where a run's step spends nothing on the part, as its table leaves it out), changes against the
    first run, less time better. ``steps``: the runs' ``train_step`` or ``decode_step`` tables
    (``engine/training/anatomy.py``, ``engine/serving/anatomy.py``)."""
    parts: list[str] = []
    for st in steps:
        parts.extend(p for p in st["part"] if p not in parts and p != "total")
    parts.sort(key=lambda p: order.index(p) if p in order else len(order))  # stable: unlisted parts keep their order
    secs = [dict(zip(st["part"], (float(v) for v in st["seconds"]), strict=True)) for st in steps]
    return [_row(part, [s.get(part, 0.0) for s in secs], "min") for part in [*parts, "total"]]


def _row(key: str, values: list[Any], direction: str | None) -> Row:
    """A row of ``values`` (the first run's first), their changes against the first and whether each is for
    the better by ``direction`` (``max``, ``min`` or None)."""
    first = as_number(values[0])
    changes: list[float | None] = [None]
    better: list[bool | None] = [None]
    for v in values[1:]:
        x = as_number(v)
        if first is None or x is None or not (math.isfinite(first) and math.isfinite(x)):
            changes.append(None)
            better.append(None)
        elif same_value(first, x):  # float residue (within ZERO of zero, both): no change, no better or worse
            changes.append(0.0)
            better.append(None)
        else:
            # from, to or across zero a ratio means nothing: the difference alone says which way it went
            changes.append((x - first) / abs(first) if first * x > 0 else None)
            better.append(None if direction is None else (x > first) == (direction == "max"))
    return Row(key, values, changes, better)
