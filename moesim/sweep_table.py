"""The table ``moesim sweep`` prints at the end: the swept axes and the metrics that move with them.

Which metrics (:func:`pick_metrics`): the ``--best`` metric, the headline metrics of the workload
kind (:data:`HEADLINE`), then the metrics whose values differ across the rows, the telling ones
first (:data:`MOVERS`, then the registry's order), leaving out those that only move in proportion
to a column already shown (MFU with tokens/s, run cost with $/Mtok when only the capacity factor
changes: they add width, not news). What does not fit the console's width is left out and named
under the table (:func:`note`); cells fold rather than being cut. Numbers follow the unit rules of
:mod:`moesim.formatting`, the unit in the header.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from rich.table import Table

from moesim.formatting import fmt_value, swept_text, unit_text
from moesim.metrics import METRICS, unit_of

#: Metrics every sweep table of a kind shows when the rows have them (what the sweep is about).
HEADLINE = {"training": ("step_time_s", "usd_per_mtok"),
            "serving": ("output_tokens_per_s", "usd_per_mtok", "ttft_p99_s", "tpot_p99_s")}
#: ... and before those, under ``sweep --slo``: the capacity each point holds its SLO to (the serving headline's
#: figures are then the run at it: its ``usd_per_mtok`` is ``usd_per_mtok_at_capacity``).
CAPACITY_HEADLINE = ("max_goodput_req_s",)
#: Metrics shown first when they differ across the rows: what a sweep usually trades.
MOVERS = ("dropped_fraction", "tokens_per_s", "peak_memory_gib", "mfu", "padding_waste_fraction", "bubble_fraction",
          "expert_load_imbalance", "alltoall_exposed_s", "straggler_wait_s", "rejected_fraction",
          "e2e_p99_s", "kv_utilisation_max", "preemptions")
#: Width of a column beyond its text: one space each side and a border.
_PAD = 3
#: Names longer than this break onto two lines at an underscore in a header.
_HEAD_MAX = 12
#: Relative difference under which two values count as equal (float residue across points).
_REL = 1e-9


@dataclass(frozen=True)
class Picked:
    """Metric columns of a sweep table: ``shown`` in order, ``left_out`` (moving, no room),
    ``proportional`` (moving only in proportion to a shown column), and the ``reasons`` of the
    rows that did not finish (numbered as their status cells say); ``rows_left``: rows not shown."""

    shown: list[str]
    left_out: list[str]
    proportional: list[str]
    reasons: list[str]
    rows_left: int = 0
    unranked: int = 0  # with --best: points without a value to rank (invalid, failed), never in the table


def _numbers(rows: Sequence[dict[str, Any]], key: str) -> list[float] | None:
    """The finite values of ``key`` over the rows, None when a row lacks a number there."""
    vals = [r.get(key) for r in rows]
    if not vals or any(isinstance(v, bool) or not isinstance(v, (int, float)) for v in vals):
        return None
    out = [float(v) for v in vals]
    return out if all(math.isfinite(v) for v in out) else None


def moves(rows: Sequence[dict[str, Any]], key: str) -> bool:
    """True when ``key`` takes more than one value over the rows (numbers beyond float residue)."""
    nums = _numbers(rows, key)
    if nums is None:
        return len({str(r.get(key)) for r in rows if key in r}) > 1
    lo, hi = min(nums), max(nums)
    return hi - lo > _REL * max(abs(lo), abs(hi), 1e-300)


def proportional(rows: Sequence[dict[str, Any]], a: str, b: str) -> bool:
    """True when ``a`` is a constant times ``b`` or times ``1 / b`` over the rows (all nonzero)."""
    xa, xb = _numbers(rows, a), _numbers(rows, b)
    if not xa or not xb or any(v == 0 for v in xa + xb):
        return False
    for ratios in ([p / q for p, q in zip(xa, xb)], [p * q for p, q in zip(xa, xb)]):
        lo, hi = min(ratios), max(ratios)
        if hi - lo <= 1e-6 * max(abs(lo), abs(hi)):
            return True
    return False


def pick_metrics(rows: Sequence[dict[str, Any]], kind: str, best: str | None = None) -> tuple[list[str], list[str]]:
    """Metric columns for ``rows`` (the finished ones decide what moves): the ``best`` metric and the
    headline ones of ``kind`` first, then the moving ones (:data:`MOVERS` first, then the registry's
    order). Returns (candidates in order, the moving metrics left out as proportional to one before)."""
    ok = [r for r in rows if r.get("status", "ok") == "ok"] or list(rows)
    have = {k for r in rows for k in r}
    # a sweep under --slo: its capacity and the cost at it are the answer; the serving headline is the run at it
    capacity = list(CAPACITY_HEADLINE) if "max_goodput_req_s" in have else []
    first = [m for m in ([best] if best else []) + capacity + list(HEADLINE.get(kind, ())) + slo_limits(rows)
             if m in have]
    order = [m for m in MOVERS if m in METRICS] + [m for m, spec in METRICS.items() if spec.direction]
    picked, same = list(dict.fromkeys(first)), []
    for m in dict.fromkeys(order):
        if m in picked or m not in have or not moves(ok, m):
            continue
        (same if any(proportional(ok, m, p) for p in picked) else picked).append(m)
    return picked, same


def slo_limits(rows: Sequence[dict[str, Any]]) -> list[str]:
    """The summary keys a ``sweep --slo`` held its points to (their ``slo`` text, ``itl_p99=0.05`` ->
    ``itl_p99_s``), so the limit that binds has a column even when it is not a headline one (ITL)."""
    from moesim.slo import parse_slo

    texts = dict.fromkeys(r["slo"] for r in rows if isinstance(r.get("slo"), str))
    return list(dict.fromkeys(key for text in texts for key in parse_slo(text).limits))


def split_name(name: str) -> str:
    """A long column name on two lines, broken after the underscore nearest its middle."""
    cuts = [i + 1 for i, ch in enumerate(name) if ch == "_"]
    if len(name) <= _HEAD_MAX or not cuts:
        return name
    cut = min(cuts, key=lambda i: max(i, len(name) - i))
    return f"{name[:cut]}\n{name[cut:]}"


#: Units whose cells carry their own scaled unit (``fmt_number``: "112.00 GiB", "46.70 B", "3.2 GFLOP").
_SELF_UNITS = ("params", "FLOP", "bytes/param")


def header(metric: str) -> str:
    """The column header: the name, and its unit on a last line where the cells leave it out (bytes, parameters
    and FLOPs are scaled in each cell, "112.00 GiB": the header keeps only what follows, "per token")."""
    unit = unit_of(metric)
    if unit in _SELF_UNITS or unit.startswith("bytes"):
        per = unit.removeprefix("bytes").strip(" /") if unit.startswith("bytes") and unit != "bytes/param" else ""
        return split_name(metric) + (f"\n(per {per})" if per else "")
    text = unit_text(unit).replace(" / ", "/")
    return split_name(metric) + ("" if unit == "fraction" or not text else f"\n({text})")


def cell(metric: str, value: Any) -> str:
    """A number by its unit's rule, without the unit (the header has it); "-" where missing."""
    return "-" if value is None else fmt_value(metric, value, with_unit=False)


def width_of(head: str, cells: Sequence[str]) -> int:
    """Characters a column takes: its widest line of header or cell, plus padding and border."""
    return max([len(x) for x in head.split("\n")] + [len(c) for c in cells]) + _PAD


def fit(fixed: int, candidates: list[str], widths: dict[str, int], width: int, keep: int) -> tuple[list[str], list[str]]:
    """The candidates that fit ``width`` after ``fixed`` characters, in order; the first ``keep``
    always stay (the table folds them if it must). Returns (shown, left out)."""
    shown, left, used = [], [], fixed
    for i, m in enumerate(candidates):
        if i < keep or used + widths[m] <= width:
            shown.append(m)
            used += widths[m]
        else:
            left.append(m)
    return shown, left


def rows_table(rows: list[dict[str, Any]], dims: list[str], kind: str, best: str | None,
               best_row: dict[str, Any] | None, top: int, direction: str | None = None,
               width: int = 80, columns: Sequence[str] | None = None) -> tuple[Table, Picked]:
    """The first ``top`` rows (best first when ``best`` is given, that row in green) with the swept
    axes and the metrics of :func:`pick_metrics` that fit ``width`` characters, or ``columns`` (sweep
    ``--columns``: those metrics alone, in that order, folded where they must)."""
    metric = best.partition(":")[0] if best else None
    ordered = rows
    if metric and best_row is not None:
        scored = [r for r in rows if r.get("status") == "ok" and isinstance(r.get(metric), (int, float))]
        sign = -1 if direction == "max" else 1  # overloaded serving points after those that kept up (sweep.best_row)
        ordered = sorted(scored, key=lambda r: (r.get("overloaded") is True, sign * r[metric]))
    candidates_n, ordered = len(ordered), ordered[:top]
    with_seed = len({r.get("seed") for r in rows}) > 1
    lead = [(split_name(d.rsplit(".", 1)[-1]), [swept_text(r.get(d, "")) for r in ordered]) for d in dims]
    lead += [("seed", [str(r.get("seed", "")) for r in ordered])] if with_seed else []
    status, reasons = status_cells(ordered)
    with_status = any(c != "ok" for c in status)
    fixed = 1 + sum(width_of(h, c) for h, c in lead) + (width_of("status", status) if with_status else 0)
    candidates, same = (list(columns), []) if columns else pick_metrics(rows, kind, metric)
    widths = {m: width_of(header(m), [cell(m, r.get(m)) for r in ordered]) for m in candidates}
    # the --best metric, the headline ones and the first that moves stay, folded if they must (--columns: all)
    keep = len(candidates) if columns else 1 + len([m for m in candidates if m == metric or m in HEADLINE.get(kind, ())])
    shown, left = fit(fixed, candidates, widths, width, keep)
    ranked = f" (best by {metric})" if best_row is not None else f" (none ranked by {metric})" if metric else ""
    t = Table(title=f"sweep results{ranked}", header_style="bold")
    for h, _ in lead:
        t.add_column(h, justify="right", overflow="fold")
    for m in shown:
        t.add_column(header(m), justify="right", overflow="fold")
    if with_status:
        t.add_column("status", overflow="fold")
    for i, r in enumerate(ordered):
        cells = [c[i] for _, c in lead] + [cell(m, r.get(m)) for m in shown] + ([status[i]] if with_status else [])
        t.add_row(*cells, style="bold green" if r is best_row else None)
    return t, Picked(shown, left, same, reasons, candidates_n - len(ordered), len(rows) - candidates_n)


#: Why an overloaded serving point's status says so, under the table.
OVERLOADED_WHY = ("overloaded: its queue grew through the steady-state window (the plan did not keep up with the "
                  "arrivals; its latencies grow with the run), ranked after the points that kept up")


def status_cells(rows: Sequence[dict[str, Any]]) -> tuple[list[str], list[str]]:
    """Status cells ("ok", "tight [1]", "overloaded [2]", "invalid [3]") and the distinct reasons they number, for under the
    table (a reason in the cell would take the width the metrics need). A tight point fits, but the
    allocator would reserve more than the device has (``fits_advice`` of a fitting run says what avoids it)."""
    reasons: list[str] = []
    cells = []
    for r in rows:
        tight = r.get("status") == "ok" and r.get("fits") is True and bool(r.get("fits_advice"))
        behind = r.get("status") == "ok" and r.get("overloaded") is True
        if r.get("status") == "ok" and not tight and not behind:
            cells.append("ok")
            continue
        label = "overloaded" if behind else "tight" if tight else str(r.get("status"))
        why = (OVERLOADED_WHY if behind else f"tight: {r['fits_advice']}" if tight else
               str(r.get("reason", "") or ""))
        if why and why not in reasons:
            reasons.append(why)
        cells.append(f"{label} [{reasons.index(why) + 1}]" if why else label)
    return cells, reasons


def note(picked: Picked, csv_path: str, most: int = 6) -> str:
    """The lines under the table: the reasons its status cells number, and the moving metrics it
    leaves out ("" when neither)."""
    lines = [f"[{i + 1}] {why}" for i, why in enumerate(picked.reasons)]
    parts = []
    for names, why in ((picked.left_out, "no room"), (picked.proportional, "in proportion to a column shown")):
        if names:
            more = f" and {len(names) - most} more" if len(names) > most else ""
            parts.append(f"{', '.join(names[:most])}{more} ({why})")
    if picked.rows_left:
        rows_word = "row" if picked.rows_left == 1 else "rows"
        lines.append(f"{picked.rows_left} more {rows_word} not shown (raise --top)")
    if picked.unranked:
        points = "point" if picked.unranked == 1 else "points"
        lines.append(f"{picked.unranked} {points} not ranked: invalid or failed, or without the metric (reasons in {csv_path})")
    if parts:
        lines.append(f"also varying: {'; '.join(parts)}; every column is in {csv_path}")
    return "\n".join(lines)


def host_floor_note(rows: Sequence[dict[str, Any]]) -> str:
    """Under a training sweep where a point waits for the host to issue its MoE layers: that the GPU work
    its axes change (capacity factor, top-k, experts) hides under that floor, and the knob; "" otherwise."""
    from moesim.engine.training.host_floor import HOST_NOTE_SHARE

    shares = [r["host_wait_s"] / r["step_time_s"] for r in rows if r.get("status") == "ok"
              and isinstance(r.get("host_wait_s"), (int, float)) and isinstance(r.get("step_time_s"), (int, float))
              and r["step_time_s"] > 0]
    if not shares or max(shares) < HOST_NOTE_SHARE:  # one point at the floor may hold the others' steps level
        return ""
    low, high = f"{min(shares):.0%}", f"{max(shares):.0%}"
    return (f"the MoE layers wait for the host for {low if low == high else f'{low}-{high}'} of these steps "
            "(host_wait_s, plan.moe_layer_host_us): GPU work the swept fields change may hide under that floor; "
            "--set plan.moe_layer_host_us=0 prices a runtime with full CUDA graphs")


#: Why a swept field can change nothing, for the fields where a scenario's other settings commonly make it so.
_INERT_WHY = {"routing.capacity_factor": "capacity applies only under routing.overflow: drop",
              "routing.min_capacity": "capacity applies only under routing.overflow: drop"}


def inert_axes_note(rows: Sequence[dict[str, Any]], dims: Sequence[str]) -> str:
    """Under a sweep: the swept fields whose values changed no figure of any point (every numeric result of the
    points that differ in that field alone is equal), with why where a common setting explains it (capacity
    factors under ``overflow: dropless``); "" when every swept field moved something."""
    ok = [r for r in rows if r.get("status") == "ok"]
    inert = []
    for dim in dims:
        groups: dict[tuple, list[dict[str, Any]]] = {}
        for r in ok:
            groups.setdefault(tuple(repr(r.get(d)) for d in dims if d != dim) + (r.get("seed"),), []).append(r)
        pairs = [g for g in groups.values() if len({repr(r.get(dim)) for r in g}) > 1]
        if pairs and all(_same_figures(g, dims) for g in pairs):
            inert.append(f"{dim} ({_INERT_WHY[dim]})" if dim in _INERT_WHY else dim)
    if not inert:
        return ""
    return f"{', '.join(inert)} changed no figure of these points: every result is the same at each of its values"


def _same_figures(group: Sequence[dict[str, Any]], dims: Sequence[str]) -> bool:
    """Whether every numeric result (not a swept field or a row's bookkeeping, ``sweep_store.ROW_COLUMNS``) is
    equal across ``group``'s rows."""
    from moesim.sweep_store import ROW_COLUMNS

    keys = {k for r in group for k, v in r.items() if isinstance(v, (int, float)) and not isinstance(v, bool)
            and k not in ROW_COLUMNS and k not in dims}
    return all(len({repr(r.get(k)) for r in group}) == 1 for k in keys)
