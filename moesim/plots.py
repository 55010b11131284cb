"""Matplotlib figures from sweep rows and SimResults. Selection of columns only: no modelling here.

Figures are built on ``matplotlib.figure.Figure`` directly (no pyplot state, Agg when saved), so
this module is safe in worker processes and headless machines. Sweep plots read the rows of a
results.jsonl (see :mod:`moesim.sweep_store`); result plots read one :class:`SimResult`.
Where several seeds share a point, line plots and heatmaps show their mean.
"""

from __future__ import annotations

import math
import re
import zlib
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib import colormaps
from matplotlib.figure import Figure

from moesim.errors import InputError
from moesim.formatting import swept_mapping, swept_text
from moesim.metrics import label_of
from moesim.plot_rows import (
    drawable,
    first_present,
    heatmap_rows,
    need_axes,
    need_metric,
    swept_columns,
    throughput_key,
    varied_axis,
)

EXPERTS, CF, RATE = "model.n_experts", "routing.capacity_factor", "workload.arrival.rate_per_s"
#: Kinds drawn from a sweep's rows, and kinds drawn from one SimResult.
SWEEP_KINDS = ("throughput-vs-experts", "cost-vs-cf", "dropped-heatmap", "breakdown", "throughput-vs-load",
               "metric-vs-axis")
RESULT_KINDS = ("timeline", "latency-cdf", "breakdown")
#: Kinds computed analytically from a serving scenario (no simulation).
SCENARIO_KINDS = ("spec-speedup",)
#: Labels of the swept fields the plots use as axes; metrics' labels come from moesim.metrics.
_LABELS = {EXPERTS: "number of experts", CF: "capacity factor", RATE: "arrival rate (requests/s)",
           "routing.zipf_s": "routing skew (Zipf exponent s)"}  # its "_s" is no unit
_SHORT = {EXPERTS: "E", CF: "cf", RATE: "rate"}
#: Swept fields each sweep kind draws on, and the sweep options that vary them.
AXES = {"throughput-vs-experts": (EXPERTS,), "cost-vs-cf": (CF,), "throughput-vs-load": (RATE,),
        "dropped-heatmap": (CF,)}
_HOW = {EXPERTS: "--experts 8,16,32", CF: "--capacity-factor 1.0,1.25,1.5", RATE: f"--grid {RATE}=1,2,4"}
#: Sweep kinds that read --metric (breakdown stacks the fixed step-time components instead).
METRIC_KINDS = ("throughput-vs-experts", "cost-vs-cf", "dropped-heatmap", "throughput-vs-load", "metric-vs-axis")
#: Memory metrics whose line plots also show the device's capacity and the points that exceed it.
MEMORY_METRICS = ("peak_memory_gib", "peak_reserved_gib")
#: Image formats save_figure writes.
FORMATS = ("png", "svg", "pdf")


def default_kind(source: str, dims: Iterable[str] = ()) -> str:
    """The plot drawn when --kind is not given: for a ``"sweep"`` the kind whose axis it swept
    (experts, then capacity factor, then arrival rate; otherwise ``metric-vs-axis`` over the first
    varied field), for a ``"result"`` or ``"scenario"`` the step ``breakdown``."""
    if source != "sweep":
        return "breakdown"
    swept = set(dims)
    for kind in ("throughput-vs-experts", "cost-vs-cf", "throughput-vs-load"):
        if swept.issuperset(AXES[kind]):
            return kind
    return "metric-vs-axis"


def label(key: str) -> str:
    """Axis label with units for a column: a swept field's, a registered metric's, or the key
    with the unit its name suggests (:func:`moesim.metrics.label_of`)."""
    return _LABELS.get(key) or label_of(key)


# ------------------------------------------------------------------------------ sweep plots
def plot_sweep(kind: str, rows: list[dict[str, Any]], title: str = "", metric: str | None = None,
               dims: Iterable[str] | None = None) -> Figure:
    """One figure of ``kind`` (see SWEEP_KINDS) from sweep rows.

    The finished points are drawn; those that ran but do not fit in memory are drawn hollow (a heatmap cell
    says so); the rest (invalid, failed) are named under the axes (:mod:`moesim.plot_marks`). The breakdown
    stacks the finished points only. ``dims`` are the swept fields (the manifest's; default: the dotted
    columns of the rows).
    """
    if kind not in SWEEP_KINDS:
        raise InputError(f"--kind {kind!r}: allowed for sweep results: {', '.join(SWEEP_KINDS)}")
    if metric is not None and kind not in METRIC_KINDS:
        raise InputError(f"--metric does not apply to --kind {kind} (it stacks the step-time components); "
                         f"--metric applies to {', '.join(METRIC_KINDS)}")
    ok = drawable(rows)  # finished, then ran but does not fit
    if not ok:
        raise InputError("no finished (ok) points to plot in these results")
    dims = list(dims) if dims is not None else swept_columns(ok)
    title = title or str(ok[0].get("scenario", ""))
    if metric is not None:
        need_metric(ok, metric, dims)
    if kind in AXES:
        need_axes(kind, AXES[kind], " ".join(_HOW.get(a, f"--grid {a}=V1,V2") for a in AXES[kind]),
                   ok, dims, len(rows))
    from moesim.plot_marks import heatmap, lines

    if kind == "throughput-vs-experts":
        y = metric or throughput_key(ok)
        return lines(ok, dims, EXPERTS, y, f"{title}: {short_label(y)} vs experts", every=rows)
    if kind == "cost-vs-cf":
        y = metric or "usd_per_mtok"
        return lines(ok, dims, CF, y, f"{title}: {short_label(y)} vs capacity factor", every=rows)
    if kind == "throughput-vs-load":
        y = metric or throughput_key(ok, serving=True)
        return lines(ok, dims, RATE, y, f"{title}: {short_label(y)} vs load",
                     twin=first_present(ok, ("ttft_p99_s", "e2e_p99_s")), every=rows)
    if kind == "dropped-heatmap":  # capacity factor across, the experts (or the other swept field) up
        value = metric or "dropped_fraction"
        return heatmap(ok, dims, heatmap_rows(ok, dims, len(rows), EXPERTS, CF), CF, value,
                       f"{title}: {short_label(value)}", every=rows)
    if kind == "breakdown":  # each point that ran: its step (or mean decode step) stacked part by part
        from moesim.plot_breakdown import sweep_breakdown

        return sweep_breakdown(ok, dims, title)  # a step that does not fit still has its parts
    # metric-vs-axis: any swept field on x (e.g. a LoRA rank, or text such as a hardware name), the metric on y;
    # memory against a field (a LoRA rank, a micro-batch) also shows the device's capacity
    x = varied_axis(ok, dims, len(rows))
    y = metric or throughput_key(ok)
    return lines(ok, dims, x, y, f"{title}: {short_label(y)} vs {short_label(x)}", every=rows)


def short_label(key: str) -> str:
    """A metric's label without its unit, for a title ("dropped tokens", "cost"): the axis says the unit."""
    return re.sub(r"\s*\([^()]*\)$", "", label(key)) or key


def legend_text(by: list[str], values: tuple) -> str:
    """A sweep point's or line's label: its swept fields as short ``name=value`` pairs."""
    def pair(c: str, v: Any) -> str:  # a swept mapping as its field pairs: "plan: dp=4 tp=2"
        return f"{_SHORT.get(c, c)}: {swept_text(v)}" if swept_mapping(v) is not None else f"{_SHORT.get(c, c)}={v}"

    return ", ".join(pair(c, v) for c, v in zip(by, values)) or "all points"


#: Each step part's colour, the same in every plot that draws parts (a sweep's breakdown, ``compare --plot``'s
#: steps, a result's breakdown), so slides put side by side agree: (colour map, index). Families by kind of work,
#: from tab20c/tab20b, none of them tab10's saturated run colours (C0, C1, ...): compute in blues and greens,
#: communication in oranges and purples, the bubble grey, the optimizer red, the host brown.
PART_COLOURS: dict[str, tuple[str, int]] = {
    "attention": ("tab20c", 0), "embedding_head": ("tab20c", 1), "router": ("tab20c", 2),
    "other_kernels": ("tab20c", 3), "experts": ("tab20c", 8), "dense_ffn": ("tab20c", 9),
    "recompute": ("tab20c", 10), "alltoall_exposed": ("tab20c", 4), "tp_comm": ("tab20c", 5),
    "cp_comm": ("tab20c", 6), "pp_comm": ("tab20c", 7), "zero_gather_exposed": ("tab20c", 12),
    "dp_sync_exposed": ("tab20c", 13), "bubble": ("tab20c", 17), "optimizer": ("tab20b", 13),
    "host_and_launch": ("tab20b", 9), "two_batch_overlap": ("tab20b", 5), "compute": ("tab20c", 11),
}
#: A serving decode step's parts that are a training step's under another name: one colour for both.
PART_ALIASES = {"routed_experts": "experts", "ep_comm": "alltoall_exposed", "output_head": "embedding_head"}
_SPARE_COLOURS = (("tab20b", 17), ("tab20b", 1), ("tab20c", 18), ("tab20b", 19))


def part_colour(key: str) -> tuple[float, float, float, float]:
    """The colour of step part ``key``: a part name of a ``train_step`` / ``decode_step`` table, or a results
    key naming one (``compute_<part>_s``, ``decode_<part>_s``, ``<part>_s``). A part :data:`PART_COLOURS` does
    not list takes one of a few spare colours, by its name (the same in every plot)."""
    part = key.removesuffix("_s")
    for prefix in ("compute_", "decode_"):
        if part.removeprefix(prefix) in PART_COLOURS or part.removeprefix(prefix) in PART_ALIASES:
            part = part.removeprefix(prefix)
    part = PART_ALIASES.get(part, part)
    name, i = PART_COLOURS.get(part) or _SPARE_COLOURS[zlib.crc32(part.encode()) % len(_SPARE_COLOURS)]
    return colormaps[name](i)


def figure(title: str, size: tuple[float, float] = (7.0, 4.5)) -> tuple[Figure, Any]:
    """A figure with one gridded axes titled ``title``."""
    fig = Figure(figsize=size, layout="constrained")
    ax = fig.add_subplot()
    ax.set_title(title, fontsize=11)
    ax.grid(True, alpha=0.3)
    return fig, ax


# ------------------------------------------------------------------------------ result plots
def plot_result(kind: str, result: Any, title: str = "") -> Figure:
    """One figure of ``kind`` (see RESULT_KINDS) from a SimResult; ``title`` replaces the scenario name."""
    title = f"{title or result.scenario} (seed {result.seed})"
    if kind == "timeline":
        return _timeline(result, f"{title}: pipeline timeline")
    if kind == "latency-cdf":
        return _latency_cdf(result, f"{title}: request latency CDF")
    if kind == "breakdown" and result.kind == "serving":  # where the mean decode step goes
        from moesim.plot_step import decode_step_figure

        return decode_step_figure(result.tables.get("decode_step", {}), title)
    if kind == "breakdown":  # where the training step goes
        from moesim.plot_step import train_step_figure

        return train_step_figure(result.tables.get("train_step", {}), title)
    raise InputError(f"--kind {kind!r}: allowed for one result: {', '.join(RESULT_KINDS)}")


#: Span kinds grouped for the timeline legend, in drawing order (first = underneath).
_SPAN_GROUPS = (("iteration", "iteration"), ("optimizer", "optimizer"), ("recompute", "recompute"),
                ("alltoall", "all-to-all"), ("tp_allreduce", "TP all-reduce"), ("pp_send", "PP send"),
                ("dp_sync", "DP gradient sync"), ("zero_gather", "ZeRO parameter all-gather"), ("prefill", "prefill"), ("decode", "decode"))


#: Lane names of the span streams (``csv_columns``' ``stream``), for the timeline's y axis.
_STREAM_LABELS = {"compute": "compute", "ep_comm": "EP all-to-all", "comm": "PP sends", "pp_comm": "PP sends",
                  "dp_comm": "DP sync", "cp_comm": "CP ring", "zero_gather": "ZeRO gather", "tp_comm": "TP comm"}


def span_group(kind: str) -> str:
    """Legend group of a span kind: collectives by name, other compute as forward, backward (input gradients, or
    whole where a schedule does not split it) or weight-gradient passes."""
    for prefix, name in _SPAN_GROUPS:
        if kind.startswith(prefix):
            return name
    if kind.endswith("_fwd"):
        return "forward compute"
    if kind.endswith("_wgrad_bwd"):  # zb-h1 and dualpipe's split passes: W filling the cool-down shows apart
        return "weight-gradient compute"
    if kind.endswith("_bwd"):
        return "backward compute"
    return kind


def _timeline(result: Any, title: str) -> Figure:
    s = result.spans
    n = len(s.get("start_s", []))
    if not n:
        raise InputError(f"{result.scenario}: the result has no spans to draw a timeline from")
    stages = np.asarray(s["stage"], dtype=int)
    streams = np.asarray(s["stream"]).astype(str)
    groups = np.asarray([span_group(str(k)) for k in s["kind"]])
    start, end = np.asarray(s["start_s"], float), np.asarray(s["end_s"], float)
    scale, unit = (1e3, "ms") if end.max() < 1.0 else (1.0, "s")
    stream_names = sorted(set(streams), key=lambda x: (x != "compute", x))
    lanes = {(st, sm): i for i, (st, sm) in enumerate(
        (st, sm) for st in sorted(set(stages)) for sm in stream_names if ((stages == st) & (streams == sm)).any())}
    who = "replica" if result.kind == "serving" else "stage"
    order = ["forward compute", "backward compute", "weight-gradient compute"] + [name for _, name in _SPAN_GROUPS]
    present = sorted(set(groups), key=lambda g: (order.index(g) if g in order else -1, g))
    fig, ax = figure(title, (10.0, min(14.0, max(3.0, 0.28 * len(lanes) + 1.6))))
    for i, g in enumerate(present):
        sel = groups == g
        first = True
        for (st, sm), lane in lanes.items():
            m = sel & (stages == st) & (streams == sm)
            if m.any():
                bars = list(zip(start[m] * scale, (end[m] - start[m]) * scale))
                ax.broken_barh(bars, (lane - 0.4, 0.8), facecolors=f"C{i % 10}", linewidth=0,
                               label=g if first else None)
                first = False
    ax.set_yticks(list(lanes.values()), [f"{who} {st} {_STREAM_LABELS.get(sm, sm)}" for st, sm in lanes],
                  fontsize=8 if len(lanes) < 30 else 6)
    ax.invert_yaxis()
    ax.set_xlabel(f"time ({unit})")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return fig


def _latency_cdf(result: Any, title: str) -> Figure:
    table = result.tables.get("requests") or {}
    cols = [c for c in ("ttft_s", "tpot_s", "e2e_s") if c in table and len(table[c])]
    if not cols:
        raise InputError(f"{result.scenario}: --kind latency-cdf draws request latencies (TTFT, end-to-end), "
                         "which only a serving result has")
    fig, ax = figure(title)
    for i, c in enumerate(cols):
        v = np.sort(np.asarray([x for x in table[c] if isinstance(x, (int, float)) and math.isfinite(x)], dtype=float))
        ax.step(v, np.arange(1, len(v) + 1) / len(v), where="post", label=c.removesuffix("_s"), color=f"C{i}")
    positive = [v for c in cols for v in table[c] if isinstance(v, (int, float)) and v > 0]
    if positive and max(positive) / min(positive) > 100:
        ax.set_xscale("log")
    ax.set_xlabel("latency (s)")
    ax.set_ylabel("fraction of requests")
    ax.set_ylim(0, 1.02)
    ax.legend(fontsize=8, loc="lower right")
    return fig


# ------------------------------------------------------------------------------ scenario plots
def plot_scenario(kind: str, scenario: Any, title: str = "", context: int | None = None) -> Figure:
    """One figure of ``kind`` (see SCENARIO_KINDS) computed from a scenario's cost model."""
    if kind != "spec-speedup":
        raise InputError(f"--kind {kind!r}: allowed for a scenario: {', '.join(SCENARIO_KINDS)}")
    from moesim.engine.serving.speculative import speedup_curve

    w = scenario.workload
    if getattr(w, "speculative", None) is None:
        raise InputError(f"--kind spec-speedup: {scenario.name} has no workload.speculative (a serving scenario with "
                         "speculative decoding is needed)")
    if context is None:  # the workload's mean context: mean prompt + half the mean output
        from moesim.accounting import serving_mean_context

        context = int(serving_mean_context(scenario))
    batches = np.unique(np.round(np.geomspace(1, max(w.max_batch_seqs, 512), 24))).astype(int)
    c = speedup_curve(scenario, batches, context)
    spec = w.speculative
    fig, ax = figure(f"{title or scenario.name}: speculative decoding speedup (context {context})")
    ax.plot(c["batch"], c["speedup"], marker="o", ms=3, color="C0",
            label=f"{spec.method}, k={spec.k}, {c['tokens_per_step']:.2f} tokens/step")
    ax.axhline(1.0, color="grey", lw=0.8, ls="--")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("decode batch (sequences per replica)")
    ax.set_ylabel("speedup over plain decoding (x)")
    ax.legend(fontsize=8)
    return fig


def save_figure(fig: Figure, base: str | Path, formats: Iterable[str] = ("png", "svg")) -> list[Path]:
    """Write ``base.png``/``base.svg`` (for each of ``formats``) and return the paths.

    Every format is checked before any file is written, so a bad one leaves nothing half-written.
    """
    from moesim.fileio import atomic_open

    formats = list(formats)
    if Path(base).name in ("", ".", "..") or str(base).endswith(("/", "\\")):  # '' reaches here as '.'
        raise InputError(f"output path {str(base)!r}: names no file; give a path without extension (plots/run)")
    if not formats:
        raise InputError(f"--format '': give at least one of {', '.join(FORMATS)}")
    bad = [f for f in formats if f not in FORMATS]
    if bad:
        raise InputError(f"--format {bad[0]!r}: allowed: {', '.join(FORMATS)}")
    suffix = Path(base).suffix.lower().lstrip(".")
    if suffix in FORMATS and suffix not in formats:  # `--out p.pdf --format png` wrote p.png without a word
        raise InputError(f"output path {str(base)!r} ends in .{suffix}, but --format is {','.join(formats)}: give the "
                         f"path without extension, or --format {suffix}")
    out = []
    for fmt in formats:
        stem = str(base)
        for ext in (".png", ".svg", ".pdf"):
            stem = stem.removesuffix(ext)
        path = Path(f"{stem}.{fmt}")
        with atomic_open(path, "wb") as fh:
            fig.savefig(fh, format=fmt, dpi=150, bbox_inches="tight")  # a legend beside the axes stays in
        out.append(path)
    return out
