"""The figure of ``moesim compare --plot``: the headline figures of two or more runs, each as a multiple of the
first run's, one group of bars per figure (a slide for a design review: which option is faster, cheaper, leaner).

Pure plotting over :class:`moesim.compare.Row` values; the bars are labelled with the values as the tables print
them (:func:`moesim.formatting.fmt_value`), and each figure's label says which way is better.
"""

from __future__ import annotations

import math

import numpy as np
from matplotlib.figure import Figure

from moesim.compare import Row
from moesim.formatting import fmt_value, time_unit
from moesim.metrics import direction_of
from moesim.plot_breakdown import stack_bases
from moesim.plots import label, part_colour

#: The figures drawn, by kind of run, in order (those a run lacks are left out).
HEADLINE = {
    "training": ("step_time_s", "tokens_per_s_per_device", "mfu", "peak_memory_gib", "usd_per_mtok",
                 "alltoall_exposed_s", "bubble_fraction"),
    "serving": ("output_tokens_per_s_per_device", "ttft_p99_s", "tpot_p99_s", "e2e_p99_s", "usd_per_mtok",
                "peak_memory_gib", "max_goodput_req_s"),
}


def _ratio(value, first) -> float | None:
    try:
        v, f = float(value), float(first)
    except (TypeError, ValueError):
        return None
    return v / f if f and math.isfinite(v) and math.isfinite(f) and not isinstance(value, bool) else None


def compare_figure(labels: list[str], rows: list[Row], kind: str, title: str = "", parts: list[Row] | None = None,
                   part_labels: dict[str, str] | None = None) -> Figure:
    """Grouped horizontal bars: for each headline figure the runs share, each run's value over the first run's
    (1.0 for the first), labelled with the value itself. ``rows``: :func:`moesim.compare.compare_rows` with
    ``every=True``, so equal figures are drawn too. ``parts`` (:func:`moesim.compare.step_rows`, the ``total``
    last): below them, each run's step stacked part by part (``part_labels`` names the parts)."""
    by_key = {r.key: r for r in rows}
    keys = [k for k in HEADLINE.get(kind, ()) if k in by_key
            and all(_ratio(v, by_key[k].values[0]) is not None for v in by_key[k].values)]
    if not keys:
        raise ValueError("no headline figure with a value in every run to draw")
    n = len(labels)
    height = 0.8 / n
    tall = max(3.0, 0.35 * n * len(keys) + 1.4)
    low = 0.45 * n + 1.6 if parts else 0.0
    fig = Figure(figsize=(8.0, tall + low), layout="constrained")
    ax, steps_ax = (fig.subplots(2, 1, height_ratios=[tall, low]) if parts else (fig.add_subplot(), None))
    ax.set_title(title or f"{kind}: each figure as a multiple of {labels[0]}'s", fontsize=10)
    for j in range(n):
        ys = [i + (j - (n - 1) / 2) * height for i in range(len(keys))]
        widths = [_ratio(by_key[k].values[j], by_key[k].values[0]) for k in keys]
        bars = ax.barh(ys, widths, height=height * 0.9, color=f"C{j}", label=labels[j])
        for bar, k in zip(bars, keys):
            ax.text(bar.get_width(), bar.get_y() + bar.get_height() / 2, " " + fmt_value(k, by_key[k].values[j]),
                    va="center", fontsize=7)
    names = []
    for k in keys:
        direction = direction_of(k)
        better = {"max": "higher is better", "min": "lower is better"}.get(direction or "", "")
        names.append(f"{label(k)}\n({better})" if better else label(k))
    ax.set_yticks(range(len(keys)), names, fontsize=8)
    ax.invert_yaxis()
    ax.axvline(1.0, color="0.3", linewidth=0.8)
    ax.set_xlabel("multiple of the first run's value")
    right = max(_ratio(by_key[k].values[j], by_key[k].values[0]) for k in keys for j in range(n))
    ax.set_xlim(0, right * 1.35)  # room for the value labels
    ax.grid(True, axis="x", alpha=0.3)
    fig.legend(*ax.get_legend_handles_labels(), loc="outside lower center", ncols=min(n, 3), fontsize=8)
    if steps_ax is not None:
        _steps(steps_ax, labels, parts, part_labels or {}, kind)
    return fig


def _steps(ax, labels: list[str], parts: list[Row], names: dict[str, str], kind: str) -> None:
    """One horizontal bar per run, its step's parts stacked left to right (a net part below 0 draws leftwards
    from 0, :func:`moesim.plot_breakdown.stack_bases`); each bar's total printed at its right end."""
    rows = [r for r in parts if r.key != "total"]
    scale, unit = time_unit(parts[-1].values[0])  # the first run's total
    widths = [np.asarray([scale * float(v or 0.0) for v in r.values]) for r in rows]
    for r, w, left in zip(rows, widths, stack_bases(widths)):  # part colours are none of the runs' C0, C1, ...
        ax.barh(range(len(labels)), w, left=left, color=part_colour(r.key), label=names.get(r.key, r.key))
    right = sum(np.maximum(w, 0.0) for w in widths) if widths else np.zeros(len(labels))
    lowest = min(float(sum(np.minimum(w, 0.0) for w in widths).min()), 0.0) if widths else 0.0
    for j, total in enumerate(parts[-1].values):
        ax.text(right[j], j, f" {scale * float(total):,.2f} {unit}", va="center", fontsize=7)
    ax.set_yticks(range(len(labels)), labels, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlim(lowest * 1.2, max(float(right.max()), 0.0) * 1.3 or 1.0)  # room for the totals
    if lowest < 0:
        ax.axvline(0.0, color="black", linewidth=0.6)  # a net part below 0 draws leftwards from it
    what = "step" if kind == "training" else "mean decode step"
    ax.set_xlabel(f"{unit} in the {what}, part by part")
    ax.grid(True, axis="x", alpha=0.3)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
