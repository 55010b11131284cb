"""A sweep's breakdown plot: one bar per point, its step stacked part by part.

Training points stack the summary's terms that add up to ``step_time_s`` (the ``train_step`` table's parts,
``engine/training/anatomy.py``), the compute split by what the ops do where the results carry the
``compute_<part>_s`` keys; serving points stack their mean decode step (``decode_<part>_s``, in milliseconds).
"""

from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure

from moesim.engine.training.anatomy import OTHER_PARTS
from moesim.errors import InputError
from moesim.plots import figure, legend_text, part_colour

#: Step-time components stacked for training points, in this order, when present (seconds): the summary's
#: terms that add up to ``step_time_s`` (``engine/training/anatomy.PARTS``; ``compute_s`` split into its
#: ``compute_<part>_s`` where the results have them). ``straggler_wait_s`` is not one: it lies within
#: ``compute_s + alltoall_s``.
BREAKDOWN_KEYS = ("compute_s", *(f"{p}_s" for p in OTHER_PARTS))


def sweep_breakdown(rows: list[dict], dims: list[str], title: str) -> Figure:
    """The breakdown of a sweep's ``rows`` (its successful points), labelled by the swept ``dims``."""
    from moesim.engine.serving.anatomy import DECODE_STEP_KEY

    if any(DECODE_STEP_KEY in r for r in rows):  # a serving sweep: each point's mean decode step
        return _decode_breakdown(rows, dims, f"{title}: mean decode step, part by part")
    return _training_breakdown(rows, dims, f"{title}: step-time breakdown")


def _decode_breakdown(rows, dims, title: str) -> Figure:
    """Each serving point's mean decode step stacked part by part (``decode_<part>_s``), in milliseconds;
    points where no decode-only iteration ran have no bar."""
    from moesim.engine.serving.anatomy import DECODE_PART_KEYS, DECODE_STEP_KEY

    rows = [r for r in rows if isinstance(r.get(DECODE_STEP_KEY), (int, float))]
    return _stacked(rows, dims, title, [k for k in DECODE_PART_KEYS if any(r.get(k) for r in rows)],
                    lambda r, k: 1e3 * float(r.get(k) or 0.0), "milliseconds per decode step")


def _training_breakdown(rows, dims, title: str) -> Figure:
    """Each training point's step stacked by :data:`BREAKDOWN_KEYS` (seconds)."""
    from moesim.engine.training.anatomy import COMPUTE_PART_KEYS

    order = BREAKDOWN_KEYS
    if all(all(isinstance(r.get(k), (int, float)) for k in COMPUTE_PART_KEYS) for r in rows):
        order = COMPUTE_PART_KEYS + BREAKDOWN_KEYS[1:]  # compute by what the ops do (older results: compute_s whole)
    keys = [k for k in order if any(_seconds(r, k) for r in rows)]  # the components some point spends time on
    if not keys:
        raise InputError(f"no step-time components ({', '.join(BREAKDOWN_KEYS)}) in these results")
    return _stacked(rows, dims, title, keys, _seconds, "time per step (s)")


def _seconds(row: dict, key: str) -> float:
    """A training point's seconds on component ``key``, 0 where it has no number; results saved before
    ``alltoall_exposed_s`` existed had every all-to-all exposed (their ``alltoall_s``)."""
    v = row.get(key, row.get("alltoall_s") if key == "alltoall_exposed_s" else None)
    if key == "host_wait_s" and _wait_in_experts(row):
        return 0.0
    return float(v) if isinstance(v, (int, float)) else 0.0


def _wait_in_experts(row: dict) -> bool:
    """Whether a training point's host wait is inside its ``compute_experts_s`` (results saved before the
    wait was a compute part of its own): its other compute parts already sum to ``compute_s``."""
    from moesim.engine.training.anatomy import COMPUTE_PART_KEYS

    others = [row.get(k) for k in COMPUTE_PART_KEYS if k != "host_wait_s"]
    wait, compute = row.get("host_wait_s"), row.get("compute_s")
    if not all(isinstance(v, (int, float)) for v in (*others, wait, compute)) or not wait:
        return False
    return abs(sum(others) - compute) <= 1e-9 * max(abs(compute), 1e-30) + 1e-12 < wait


def stack_bases(parts: list[np.ndarray]) -> list[np.ndarray]:
    """Where each stacked part starts, per bar: positive parts stack up from 0 and negative ones (a net
    part, such as a host-and-launches figure the kernels' own launch costs outweigh) down from 0, so no
    part is drawn back over another and each bar's parts keep their true lengths."""
    up = np.zeros_like(parts[0]) if parts else np.zeros(0)
    down = up.copy()
    bases = []
    for vals in parts:
        bases.append(np.where(vals >= 0, up, down))
        up, down = up + np.maximum(vals, 0.0), down + np.minimum(vals, 0.0)
    return bases


def part_label(key: str) -> str:
    """A stacked part's legend text, as the step tables print it: ``decode_<part>_s`` by the serving
    anatomy's labels, ``compute_<part>_s`` and ``<part>_s`` by the training anatomy's; else the key."""
    from moesim.engine.serving.anatomy import PART_LABELS as DECODE_LABELS
    from moesim.engine.training.anatomy import PART_LABELS as STEP_LABELS

    part = key.removesuffix("_s")
    if part.startswith("decode_") and part.removeprefix("decode_") in DECODE_LABELS:
        return DECODE_LABELS[part.removeprefix("decode_")]
    return STEP_LABELS.get(part.removeprefix("compute_"), STEP_LABELS.get(part, part))


def _point_order(rows, dims):
    """Sort key of a point: by each swept field in turn, numerically where every value of that field is a number,
    else in the order the values first appear (a grid of mappings keeps the order it was given in)."""
    def number(v) -> bool:
        return isinstance(v, (int, float)) and not isinstance(v, bool)

    numeric = {d: all(number(r.get(d)) for r in rows) for d in dims}
    first: dict[str, dict[str, int]] = {d: {} for d in dims}
    for r in rows:
        for d in dims:
            first[d].setdefault(repr(r.get(d)), len(first[d]))
    return lambda r: tuple(float(r[d]) if numeric[d] else first[d][repr(r.get(d))] for d in dims)


def _stacked(rows, dims, title: str, keys: list[str], value, ylabel: str) -> Figure:
    """One bar per point, ``keys`` stacked in order (``value(row, key)`` high), labelled by the swept fields."""
    if not keys:
        raise InputError("no step components in these results")
    if len(rows) > 60:
        raise InputError(f"{len(rows)} points are too many bars; pick a slice with --where path=VALUE")
    rows = sorted(rows, key=_point_order(rows, dims))  # a resumed sweep's new values sit among the old ones
    labels = [legend_text(dims, tuple(r.get(d) for d in dims)) if dims else f"seed {r.get('seed')}" for r in rows]
    longest = max((len(part_label(k)) for k in keys), default=0)  # the legend beside the bars takes this width
    fig, ax = figure(title, (max(6.0, 0.45 * len(rows) + 3) + 0.065 * longest, 4.8))
    parts = [np.asarray([value(r, k) for r in rows], dtype=float) for k in keys]
    for k, vals, base in zip(keys, parts, stack_bases(parts)):
        ax.bar(range(len(rows)), vals, bottom=base, label=part_label(k), color=part_colour(k))
    if any((v < 0).any() for v in parts):
        ax.axhline(0.0, color="black", linewidth=0.6)  # net parts below it (a negative host and launches)
    slanted = len(rows) > 4 or max(map(len, labels), default=0) > 14  # long labels side by side overlap
    ax.set_xticks(range(len(rows)), labels, rotation=60 if slanted else 0, ha="right" if slanted else "center",
                  fontsize=7)
    ax.set_ylabel(ylabel)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return fig
