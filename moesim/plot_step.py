"""The serving breakdown plot: where a result's mean decode step goes (its ``decode_step`` table)."""

from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure

from moesim.engine.serving.anatomy import PART_LABELS, caption, check_decode_step
from moesim.errors import InputError


def decode_step_figure(step: dict[str, list], title: str) -> Figure:
    """Horizontal bars, one per part of the step (milliseconds, labelled with their share), from a
    ``decode_step`` table (``serving/anatomy.py``; read back from ``decode_step.csv`` too)."""
    if not step or "part" not in step:
        raise InputError("this serving result has no decode_step table (saved by an older moesim): "
                         "simulate the scenario again")
    check_decode_step(step, "this result's decode_step.csv")
    rows = [(p, float(s), float(f)) for p, s, f in zip(step["part"], step["seconds"], step["share"], strict=True)
            if p != "total"]
    total_ms = 1e3 * sum(s for _, s, _ in rows)
    fig = Figure(figsize=(8.0, 0.5 * len(rows) + 1.9), layout="constrained")
    ax = fig.add_subplot()
    ax.set_title(f"{title}\n{caption(step)}, {total_ms:,.2f} ms", fontsize=10)
    ax.grid(True, axis="x", alpha=0.3)
    y = np.arange(len(rows))[::-1]  # the first part on top
    ms = [1e3 * s for _, s, _ in rows]
    ax.barh(y, ms, color=[f"C{i}" for i in range(len(rows))])
    ax.set_yticks(y, [PART_LABELS.get(p, p) for p, _, _ in rows], fontsize=8)
    for yi, v, (_, _, share) in zip(y, ms, rows, strict=True):
        ax.annotate(f"{v:,.2f} ms ({share:.0%})", (max(v, 0.0), yi), xytext=(4, 0), textcoords="offset points",
                    va="center", fontsize=8)
    ax.set_xlim(min(0.0, min(ms)) * 1.1, max(ms) * 1.3)
    ax.set_xlabel("milliseconds in the iteration")
    return fig
