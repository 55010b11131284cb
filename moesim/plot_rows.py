"""Which sweep rows and columns a plot can draw, as one-line InputErrors naming the option to change
(--kind, --metric) and what the sweep has: the checks :mod:`moesim.plots` runs before drawing."""

from __future__ import annotations

from typing import Any

from moesim.errors import InputError
from moesim.suggest import close_names, did_you_mean
from moesim.sweep_store import ROW_COLUMNS

#: Metrics named first when an error lists the metrics a sweep has (those present, in this order).
COMMON_METRICS = ("tokens_per_s", "output_tokens_per_s", "step_time_s", "mfu", "usd_per_mtok",
                   "peak_memory_gib", "dropped_fraction", "ttft_p99_s")


#: Legend text of the marks for a point that ran but does not fit in device memory (hollow) and a serving
#: point whose queue grew through its steady-state window (a cross).
NO_FIT = "does not fit in memory"
OVERLOADED = "overloaded (queue grew)"


def finished(row: dict[str, Any]) -> bool:
    """A point drawn as any other: it ran (status ``ok``, or ``overloaded`` where a table wrote that) and fits."""
    return row.get("status") in ("ok", "overloaded") and row.get("fits") is not False


def does_not_fit(row: dict[str, Any]) -> bool:
    """A point that ran but whose memory exceeds the device's: the sweep marks it ``invalid`` and keeps its
    figures (throughput, cost, peak memory), which a plot draws hollow."""
    return row.get("fits") is False and row.get("status") in ("ok", "invalid")


def is_overloaded(row: dict[str, Any]) -> bool:
    """A serving point that did not keep up with its arrivals (its queue grew through the window)."""
    return row.get("status") == "overloaded" or row.get("overloaded") is True


def drawable(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The rows a sweep plot draws: the finished points, then those that ran but do not fit."""
    return [r for r in rows if finished(r)] + [r for r in rows if not finished(r) and does_not_fit(r)]


def not_drawn(rows: list[dict[str, Any]], y: str) -> list[dict[str, Any]]:
    """The points a plot of ``y`` leaves out and must say so: those that did not finish and have no ``y``
    to draw hollow (invalid, failed; a finished point without ``y`` is a column it lacks, not a point)."""
    return [r for r in rows if not finished(r) and not (does_not_fit(r) and is_number(r.get(y)))]


def swept_text(dims: list[str], n_ok: int, n_rows: int) -> str:
    """"this sweep varies: plan.dp (1 of 2 points finished)": what was swept and how much of it can be drawn."""
    return (f"this sweep varies: {', '.join(dims) or 'no field (seeds only)'} "
            f"({n_ok} of {n_rows} point{'' if n_rows == 1 else 's'} finished)")


def need_axes(kind: str, axes: tuple[str, ...], how: str, rows: list[dict[str, Any]], dims: list[str],
              n_rows: int) -> None:
    """One-line InputError unless the (ok) rows have the swept fields ``axes`` that ``kind`` draws on;
    ``how`` says how to sweep them; ``n_rows`` counts every row, finished or not, for the message."""
    missing = [a for a in axes if not any(r.get(a) is not None for r in rows)]
    if not missing:
        return
    raise InputError(f"--kind {kind} needs a sweep over {' and '.join(axes)}; {swept_text(dims, len(rows), n_rows)}; "
                     f"sweep again with {how}")


def varied_axis(rows: list[dict[str, Any]], dims: list[str], n_rows: int) -> str:
    """The first swept field whose value differs between the (ok) rows; a one-line InputError when
    none does, naming the swept fields and how many of the ``n_rows`` points finished."""
    varied = [d for d in dims if len({str(r.get(d)) for r in rows}) > 1]
    if not varied:
        raise InputError("--kind metric-vs-axis needs a sweep that varies a field across its finished points; "
                         f"{swept_text(dims, len(rows), n_rows)} (see the reason column of results.csv, "
                         "or sweep with --grid PATH=V1,V2,...)")
    return varied[0]


def heatmap_rows(rows: list[dict[str, Any]], dims: list[str], n_rows: int, experts: str, cf: str) -> str:
    """The heatmap's vertical axis beside the capacity factor ``cf`` across: the number of ``experts`` where the
    sweep varied it, else the first other swept field that varies (a routing skew, top-k, a plan field); a
    one-line InputError when only the capacity factor varies."""
    varied = [d for d in dims if d != cf and len({str(r.get(d)) for r in rows}) > 1]
    if experts in varied or not varied and any(r.get(experts) is not None for r in rows):
        return experts
    if not varied:
        raise InputError(f"--kind dropped-heatmap needs a second swept field beside {cf}; "
                         f"{swept_text(dims, len(rows), n_rows)}; sweep again with --experts 8,16,32 or e.g. "
                         "--grid routing.zipf_s=0,0.5,1")
    return varied[0]


def swept_columns(rows: list[dict[str, Any]]) -> list[str]:
    """Columns that look like swept fields (dotted paths), in table order."""
    cols: list[str] = []
    for r in rows:
        cols.extend(k for k in r if "." in k and k not in ROW_COLUMNS and k not in cols)
    return cols


def throughput_key(rows: list[dict[str, Any]], serving: bool = False) -> str:
    """tokens/s for training rows, output tokens/s for serving rows (or when ``serving``)."""
    serving = serving or any(r.get("kind") == "serving" for r in rows)
    keys = ("output_tokens_per_s", "tokens_per_s") if serving else ("tokens_per_s", "output_tokens_per_s")
    return first_present(rows, keys) or keys[0]


def first_present(rows: list[dict[str, Any]], keys: tuple[str, ...]) -> str | None:
    return next((k for k in keys if any(isinstance(r.get(k), (int, float)) for r in rows)), None)


def need_metric(rows: list[dict[str, Any]], metric: str, dims: list[str]) -> None:
    """One-line InputError naming --metric unless some row has a number in that column; the message
    lists close names, or else a few metrics these rows have."""
    if any(is_number(r.get(metric)) for r in rows):
        return
    numeric = [k for k in dict.fromkeys(k for r in rows for k in r)  # suggestions: metrics, not swept fields
               if k not in ROW_COLUMNS and k not in dims and any(is_number(r.get(k)) for r in rows)]
    if any(r.get(metric) is not None for r in rows):
        problem = "not a number in these results"
    else:
        problem = "no such column in these results"
    close = close_names(metric, numeric)
    few = close or ([k for k in COMMON_METRICS if k in numeric] + [k for k in numeric if k not in COMMON_METRICS])[:5]
    hint = f"did you mean {', '.join(close)}?" if close else f"metrics here include {', '.join(few) or 'none'}"
    raise InputError(f"--metric {metric!r}: {problem}; {hint} (results.csv has every column)")


def is_number(value: Any) -> bool:
    """An int or float (a bool counts: its mean is a fraction)."""
    return isinstance(value, (int, float))


def need(rows: list[dict[str, Any]], *cols: str) -> None:
    """One-line InputError naming a column the rows lack, with the closest names they have."""
    for c in cols:
        if not any(r.get(c) is not None for r in rows):
            have = sorted({k for r in rows for k in r if k not in ROW_COLUMNS})
            hint = did_you_mean(c, have, cutoff=0.5)
            raise InputError(f"these results have no {c!r} column" + (f" ({hint})" if hint else "; see results.csv for the columns"))
