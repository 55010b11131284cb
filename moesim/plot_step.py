"""The breakdown plot of one result: where its step goes, part by part (a serving result's mean decode
step, its ``decode_step`` table; a training result's step, its ``train_step`` table)."""

from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure

from moesim.errors import InputError
from moesim.formatting import time_unit
from moesim.plots import part_colour


def decode_step_figure(step: dict[str, list], title: str) -> Figure:
    """Horizontal bars, one per part of the step (milliseconds, labelled with their share), from a
    ``decode_step`` table (``serving/anatomy.py``; read back from ``decode_step.csv`` too)."""
    from moesim.engine.serving.anatomy import caption, check_decode_step, part_labels

    if not step or "part" not in step:
        raise InputError("this serving result has no decode_step table (a result saved before steps were tabled): "
                         "simulate the scenario again")
    check_decode_step(step, "this result's decode_step.csv")
    return _parts_figure(step, part_labels(step), f"{title}\n{caption(step)}", "iteration")


def train_step_figure(step: dict[str, list], title: str) -> Figure:
    """The same bars from a training result's ``train_step`` table (``training/anatomy.py``; read back
    from ``train_step.csv`` too), in seconds where the step takes one or more."""
    from moesim.engine.training.anatomy import PART_LABELS, caption, check_train_step

    if not step or "part" not in step:
        raise InputError("this training result has no train_step table (a result saved before steps were tabled): "
                         "simulate the scenario again")
    check_train_step(step, "this result's train_step.csv")
    return _parts_figure(step, PART_LABELS, f"{title}\n{caption(step)}", "step")


def _parts_figure(step: dict[str, list], labels: dict[str, str], heading: str, what: str) -> Figure:
    """One bar per part but the total (the first on top), in ms (or s where the parts add up to 1 s or more)."""
    rows = [(p, float(s), float(f)) for p, s, f in zip(step["part"], step["seconds"], step["share"], strict=True)
            if p != "total"]
    total_s = sum(s for _, s, _ in rows)
    scale, unit = time_unit(total_s)
    name = {"s": "seconds", "ms": "milliseconds"}[unit]
    fig = Figure(figsize=(8.0, 0.5 * len(rows) + 1.9), layout="constrained")
    ax = fig.add_subplot()
    ax.set_title(f"{heading}, {total_s * scale:,.2f} {unit}", fontsize=10)
    ax.grid(True, axis="x", alpha=0.3)
    y = np.arange(len(rows))[::-1]  # the first part on top
    vals = [scale * s for _, s, _ in rows]
    ax.barh(y, vals, color=[part_colour(p) for p, _, _ in rows])
    ax.set_yticks(y, [labels.get(p, p) for p, _, _ in rows], fontsize=8)
    for yi, v, (_, _, share) in zip(y, vals, rows, strict=True):
        ax.annotate(f"{v:,.2f} {unit} ({share:.0%})", (max(v, 0.0), yi), xytext=(4, 0), textcoords="offset points",
                    va="center", fontsize=8)
    ax.set_xlim(min(0.0, min(vals)) * 1.1, max(vals) * 1.3)
    ax.set_xlabel(f"{name} in the {what}")
    return fig
