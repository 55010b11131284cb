"""How a sweep's points are marked on its line plots and heatmaps (called by :func:`moesim.plots.plot_sweep`).

A point that finished is a filled marker on its line; one that ran but does not fit in device memory is
hollow; a serving point whose queue grew is a cross; each kind of mark has one legend entry. A point with no
figure to draw (invalid, failed) is named in a note under the axes, so a reader does not take it for one that
was never tried. Text x values (a hardware name, a model preset, a mapping) are categories, drawn as markers
with no line between them; legends follow the sweep's order (numbers by value).
"""

from __future__ import annotations

import json
import textwrap
from collections import defaultdict
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from moesim.errors import InputError
from moesim.formatting import swept_text
from moesim.plot_rows import NO_FIT, OVERLOADED, finished, is_number, is_overloaded, need, not_drawn
from moesim.plots import EXPERTS, MEMORY_METRICS, figure, label, legend_text

#: Most lines one plot draws (matplotlib's default cycle has ten colours).
MAX_LINES = 10
#: Legend labels longer than this go in a legend under the axes (beside them, they squeeze the axes).
LONG_LABEL = 24
#: Characters per line of a category's tick (a long one, slanted, hangs far left of the axes and squeezes them).
TICK_WIDTH = 24
#: Most lines of the note under the axes naming the points not drawn.
NOTE_LINES = 4
#: Characters per line of that note (7-point text about as wide as the axes of a 6.5-inch figure).
NOTE_WIDTH = 80


def lines(rows, dims, x: str, y: str, title: str, twin: str | None = None,
          every: list[dict[str, Any]] | None = None) -> Figure:
    """Lines of ``y`` against ``x``, one per combination of the other swept fields. ``rows``: the points to
    draw (:func:`moesim.plot_rows.drawable`): finished ones as filled markers joined by a line (a cross where
    a serving point was overloaded), those that ran but do not fit as hollow markers (``y`` a memory metric:
    with the device's capacity as a dashed line). ``every``: all the sweep's rows: text ``x`` values all get
    a tick, and the points with no ``y`` are named under the axes."""
    need(rows, x, y)
    every = every if every is not None else rows
    by = [d for d in dims if d != x]
    # text x (a hardware name, a model preset): one tick per value, markers only (no line joins two models)
    cats = _categories(rows + [r for r in every if r.get(x) is not None], x)
    groups = _group(rows, by, every)
    if len(groups) > MAX_LINES:  # colours repeat past ten and the legend covers the plot
        sizes = " x ".join(f"{len({str(r.get(d)) for r in rows})} {d}" for d in by)
        raise InputError(f"{len(groups)} lines ({sizes}) are too many to tell apart; pick a slice with "
                         f"--where {by[0]}=VALUE")
    seeds = {r.get("seed") for r in rows}
    if len(seeds) > 1:  # each point is the mean over its seeds: say so
        title = f"{title} (mean of {len(seeds)} seeds)"
    fig, ax = figure(title)
    ax2 = ax.twinx() if twin else None
    style = "none" if cats is not None else "-"
    hollow = late = False
    for i, (values, group) in enumerate(groups.items()):
        done = [r for r in group if finished(r)]
        color = f"C{i % 10}"
        spilled = [r for r in group if not finished(r)]  # ran, does not fit
        if done:
            xs, ys = _gaps(*_mean_by(done, x, y, cats), cats)
            behind = np.isin(xs, _positions([r for r in done if is_overloaded(r)], x, cats))
            # one line and marks in the legend: name the line for what sets it apart (fitting, keeping up)
            name = legend_text(by, values) if by else "fits" if spilled or hollow else "kept up"
            ax.plot(xs, ys, linestyle=style, marker="o", color=color, label=name,
                    markevery=list(~behind) if behind.any() else None)
            if behind.any():  # the overloaded points: a cross in the line's colour, one legend entry below
                ax.plot(xs[behind], ys[behind], linestyle="none", marker="X", markersize=9, color=color)
                late = True
        if ax2 is not None and done:
            xs2, ys2 = _gaps(*_mean_by(done, x, twin, cats), cats)
            ax2.plot(xs2, ys2, linestyle="--" if cats is None else "none", marker="x", color=color, alpha=0.7)
        xs3, ys3 = _mean_by(spilled, x, y, cats)
        if len(xs3):
            ax.plot(xs3, ys3, linestyle="none", marker="o", markerfacecolor="none", markeredgecolor=color,
                    markersize=8, label=None if done or not by else legend_text(by, values))
            hollow = True
    if hollow and y in MEMORY_METRICS:
        _capacity_lines(ax, rows)
    if hollow:
        ax.plot([], [], linestyle="none", marker="o", markerfacecolor="none", markeredgecolor="0.3", label=NO_FIT)
    if late:
        ax.plot([], [], linestyle="none", marker="X", markersize=9, color="0.3", label=OVERLOADED)
    ax.set_xlabel(label(x))
    ax.set_ylabel(label(y))
    grouped_digits(ax)
    if ax2 is not None:
        ax2.set_ylabel(label(twin) + ("  (dashed)" if cats is None else "  (x)"))
        grouped_digits(ax2)
    _x_ticks(ax, rows, x, cats)
    for axis, key in ((ax, y), (ax2, twin)):  # counts, times, costs from 0: a 3 % change does not fill the plot
        values = [float(r[key]) for r in rows if is_number(r.get(key))]
        if axis is not None and all(v >= 0 for v in values):
            # room above the highest point (the autoscaled top of a narrow range clips its marker once 0 is in)
            axis.set_ylim(bottom=0, top=max(axis.get_ylim()[1], 1.06 * max(values, default=0.0)) or None)
    if by or hollow or late:  # groups or marks to tell apart
        _legend(fig, ax, 1.02 if ax2 is None else 1.12)
    note(ax, every, dims, y)
    return fig


def heatmap(rows, dims, row_key: str, col_key: str, value: str, title: str,
            every: list[dict[str, Any]] | None = None) -> Figure:
    """``value`` coloured by ``row_key`` up and ``col_key`` across. A cell whose point ran but does not fit
    says so (uncoloured, its figure in brackets); a cell with no figure reads n/a, the note under the axes
    says why (invalid, failed)."""
    need(rows, row_key, col_key, value)
    every = every if every is not None else rows
    extra = [d for d in dims if d not in (row_key, col_key) and len({str(r.get(d)) for r in rows}) > 1]
    if extra:
        raise InputError(f"the heatmap needs one slice: rows vary in {', '.join(extra)}; "
                         f"pick one with --where {extra[0]}=VALUE")
    placed = [r for r in every if r.get(row_key) is not None and r.get(col_key) is not None] + rows
    cats = _categories(placed, row_key)  # None: numbers, in order; text or mappings as categories in sweep order
    ys = cats or sorted({r[row_key] for r in placed if is_number(r.get(row_key))})
    xs = sorted({r[col_key] for r in placed if is_number(r.get(col_key))})
    cells: dict[tuple, list[float]] = defaultdict(list)
    spilled: dict[tuple, list[float]] = defaultdict(list)
    for r in rows:
        if is_number(r.get(value)):
            where = (r[row_key] if cats is None else _category(r[row_key]), r[col_key])
            (cells if finished(r) else spilled)[where].append(float(r[value]))
    grid = np.full((len(ys), len(xs)), np.nan)
    for i, yv in enumerate(ys):
        for j, xv in enumerate(xs):
            if cells.get((yv, xv)):
                grid[i, j] = np.mean(cells[(yv, xv)])
    fig, ax = figure(title, (6.5, 4.5))
    ax.grid(False)
    im = ax.imshow(grid, aspect="auto", origin="lower", cmap="viridis")
    ax.set_xticks(range(len(xs)), [f"{v:g}" for v in xs])
    ax.set_yticks(range(len(ys)), [str(v) for v in ys])
    ax.set_xlabel(label(col_key))
    ax.set_ylabel(label(row_key))
    mid = np.nanmean(grid) if np.isfinite(grid).any() else 0.0
    tiny = 1e-9 * float(np.nanmax(np.abs(grid))) if np.isfinite(grid).any() else 0.0
    for i, yv in enumerate(ys):
        for j, xv in enumerate(xs):
            if np.isfinite(grid[i, j]):
                v = 0.0 if abs(grid[i, j]) <= tiny else grid[i, j]  # float residue (2e-14 dropped) reads 0
                ax.text(j, i, f"{v:.3g}", ha="center", va="center", fontsize=7,
                        color="black" if grid[i, j] > mid else "white")
            elif spilled.get((yv, xv)):  # it ran: its figure, but not in the colours of the points that fit
                ax.text(j, i, f"does not fit\n({np.mean(spilled[(yv, xv)]):.3g})",
                        ha="center", va="center", fontsize=7, color="0.35")
            else:  # no figure: the note under the axes says why (invalid, failed), or no point was run here
                ax.text(j, i, "n/a", ha="center", va="center", fontsize=7, color="gray")
    fig.colorbar(im, ax=ax, label=label(value))
    note(ax, every, dims, value)
    return fig


def note(ax, rows: list[dict[str, Any]], dims: list[str], y: str) -> str:
    """Under the x axis label, the points with no ``y`` drawn and why, one line per reason ("E=12, cf=1.0:
    invalid (plan.ep = 8: must divide ...)"), at most :data:`NOTE_LINES`; the text ('' for none)."""
    text = note_text(rows, dims, y)
    if text:
        from matplotlib.offsetbox import AnnotationBbox, TextArea

        # a box of the axes (their layout makes room for it), not one of their texts (a heatmap's cells)
        box = TextArea(text, textprops={"fontsize": 7, "color": "0.3"})
        ax.add_artist(AnnotationBbox(box, (0.0, 0.0), xycoords=("axes fraction", ax.xaxis.label),
                                     xybox=(0, -4), boxcoords="offset points", box_alignment=(0.0, 1.0),
                                     frameon=False, pad=0.0, annotation_clip=False, gid="not-drawn"))
    return text


def note_text(rows: list[dict[str, Any]], dims: list[str], y: str) -> str:
    """The note :func:`note` draws."""
    why: dict[str, list[str]] = {}
    for r in not_drawn(rows, y):
        reason = " ".join(str(r.get("reason") or "").split())
        status = f"{r.get('status') or 'not run'}" + (f", no {y}" if r.get("fits") is False else "")
        key = f"{status} ({_clip(reason, 90)})" if reason else status
        point = legend_text(dims, tuple(r.get(d) for d in dims)) if dims else f"point {r.get('point')}"
        if point not in why.setdefault(key, []):
            why[key].append(point)
    out = []
    for key, points in why.items():
        shown = "; ".join(points[:3]) + (f" and {len(points) - 3} more" if len(points) > 3 else "")
        out.append(f"{shown}: {key}")
    if len(out) > NOTE_LINES:
        out = out[:NOTE_LINES - 1] + [f"and {len(out) - NOTE_LINES + 1} more reasons (results.csv has each)"]
    # wrapped to about the axes' width: a wider note would widen the figure's margins and squeeze the axes
    return "\n".join(textwrap.fill(("not drawn: " if i == 0 else "") + line, NOTE_WIDTH, subsequent_indent="    ")
                     for i, line in enumerate(out))


def _clip(text: str, n: int) -> str:
    return text if len(text) <= n else text[:n - 1].rstrip() + "…"


def _legend(fig, ax, right: float) -> None:
    """The legend beside the axes (where no point hides under it), or, where a label is long (a mapping's
    fields), under the axes, labels wrapped, so the axes keep the figure's width."""
    handles, labels = ax.get_legend_handles_labels()
    longest = max(map(len, labels), default=0)
    if longest <= LONG_LABEL:
        ax.legend(fontsize=8, title=None, loc="upper left", bbox_to_anchor=(right, 1.0), borderaxespad=0.0)
        return
    wrapped = [textwrap.fill(t, 60) for t in labels]
    fig.legend(handles, wrapped, fontsize=8, loc="outside lower center", ncol=1 if longest > 45 else 2)


def _x_ticks(ax, rows, x: str, cats: list[str] | None) -> None:
    """A tick per category (slanted where many or long), or the experts on a base-2 axis."""
    xs = sorted({r[x] for r in rows if is_number(r.get(x))})
    if cats is not None:  # many or long labels side by side overlap: slanted
        slanted = len(cats) > 4 or sum(map(len, cats)) > 60
        shown = [textwrap.fill(c, TICK_WIDTH, break_long_words=False) for c in cats]  # a mapping's fields: lines
        ax.set_xticks(range(len(cats)), shown, rotation=30 if slanted else 0, ha="right" if slanted else "center")
        ax.set_xlim(-0.5, len(cats) - 0.5)
    elif x == EXPERTS and len(xs) > 2 and xs[0] > 0:
        ax.set_xscale("log", base=2)
        ax.set_xticks(xs, [f"{v:g}" for v in xs])
        ax.minorticks_off()


def _group(rows: list[dict[str, Any]], by: list[str], every: list[dict[str, Any]]) -> dict[tuple, list[dict[str, Any]]]:
    """Rows by their values of ``by``, in legend order: a field whose values are all numbers by value (8
    before 16), any other (text, mappings) in the sweep's order (``every``'s points), not by its text."""
    groups: dict[tuple, list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        groups[tuple(r.get(c) for c in by)].append(r)
    order = sorted(every + rows, key=lambda r: r.get("point", 0))
    ranks = []
    for c in by:
        seen = [r.get(c) for r in order if r.get(c) is not None]
        numeric = all(is_number(v) and not isinstance(v, bool) for v in seen)
        ranks.append(None if numeric else {json.dumps(v, sort_keys=True): i for i, v in reversed(list(enumerate(seen)))})

    def rank(values: tuple) -> tuple:
        return tuple((1, 0.0) if v is None else (0, float(v)) if rank_of is None else
                     (0, float(rank_of.get(json.dumps(v, sort_keys=True), len(rank_of))))
                     for v, rank_of in zip(values, ranks))

    return dict(sorted(groups.items(), key=lambda kv: rank(kv[0])))


def _positions(rows: list[dict[str, Any]], x: str, categories: list[str] | None) -> list[float]:
    """Where ``rows`` sit on the x axis: their values, or their categories' indices."""
    return [float(r[x]) if categories is None else float(categories.index(_category(r[x])))
            for r in rows if r.get(x) is not None]


def _mean_by(rows: list[dict[str, Any]], x: str, y: str,
             categories: list[str] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """x positions and the mean of y over rows sharing x (seeds). Numeric x: the values, sorted.
    With ``categories`` (text x): each value's index in that list, in that order."""
    acc: dict[Any, list[float]] = defaultdict(list)
    for r in rows:
        if is_number(r.get(y)) and r.get(x) is not None:
            acc[r[x] if categories is None else _category(r[x])].append(float(r[y]))
    if categories is None:
        xs = sorted(acc)
        return np.asarray(xs, dtype=float), np.asarray([np.mean(acc[v]) for v in xs])
    cats = [c for c in categories if c in acc]
    return (np.asarray([categories.index(c) for c in cats], dtype=float),
            np.asarray([np.mean(acc[c]) for c in cats]))


def _gaps(xs: np.ndarray, ys: np.ndarray, categories: list[str] | None) -> tuple[np.ndarray, np.ndarray]:
    """On a category axis, every category's position with NaN where the group has no point (a plan that did
    not fit), so each line's data line up category by category (drawn as markers only: categories are not
    a scale to join across). Numeric x: as given."""
    if categories is None:
        return xs, ys
    full = np.full(len(categories), np.nan)
    full[xs.astype(int)] = ys
    return np.arange(len(categories), dtype=float), full


def _category(value: Any) -> str:
    """Tick text of a non-numeric x value: booleans as YAML writes them, text as is, anything else as JSON."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return swept_text(value) if isinstance(value, (str, dict)) else json.dumps(value, sort_keys=True)


def _categories(rows: list[dict[str, Any]], x: str) -> list[str] | None:
    """The x values as categories in sweep order (by point, then first seen), or None when every
    value is a number (drawn on a numeric axis). Booleans and text are categories."""
    values = [r.get(x) for r in sorted(rows, key=lambda r: r.get("point", 0)) if r.get(x) is not None]
    if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
        return None
    return list(dict.fromkeys(_category(v) for v in values))


def grouped_digits(ax) -> None:
    """Y tick labels of 10,000 and more with thousands separators (325,000 tokens/s, not 325000 or 3.25e5)."""
    from matplotlib.ticker import FuncFormatter

    lo, hi = ax.get_ylim()
    if max(abs(lo), abs(hi)) >= 1e4:
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _pos: f"{v:,.0f}"))


def _capacity_lines(ax, rows: list[dict[str, Any]]) -> None:
    """What a device gives the tensors (``memory_capacity_gib``: training's CUDA total less the context and
    NCCL's buffers, a serving engine's budget; one dashed line per distinct value to 0.1 GiB, at most three)."""
    caps = sorted({round(float(r["memory_capacity_gib"]), 1) for r in rows
                   if isinstance(r.get("memory_capacity_gib"), (int, float))})
    for cap in caps[:3]:
        ax.axhline(cap, color="0.3", linestyle="--", linewidth=1, label=f"capacity ({cap:g} GiB)")
