"""Sweep points that ran but do not fit in device memory are drawn hollow, with one legend entry, on every
line plot (not only --metric peak_memory_gib); points with no figure (invalid) are named under the axes;
heatmap cells of points that do not fit say so."""

from __future__ import annotations

import pytest

from moesim import plots

NO_FIT = "does not fit in memory"
EP_REASON = "plan.ep = 8: must divide model.n_experts (12); allowed: 1, 2, 3, 4, 6, 12"


def rows() -> list[dict]:
    """An experts x capacity-factor sweep as `moesim sweep` writes it: only E=8 cf=1.0 fits; the other points
    ran (their figures kept, status invalid, fits false); E=12 is invalid before running (no figures)."""
    out = []
    for i, (e, cf) in enumerate((e, cf) for e in (8, 12, 16, 32) for cf in (1.0, 2.0)):
        row = {"point": i, "scenario": "s", "kind": "training", "seed": 0, "model.n_experts": e,
               "routing.capacity_factor": cf}
        if e == 12:
            out.append(row | {"status": "invalid", "reason": EP_REASON})
            continue
        fits = (e, cf) == (8, 1.0)
        out.append(row | {"status": "ok" if fits else "invalid", "fits": fits,
                          "reason": "" if fits else "does not fit in device memory (peak 90.0 GiB)",
                          "tokens_per_s": 1000.0 / cf - e, "usd_per_mtok": 0.1 * cf + e / 1000,
                          "alltoall_exposed_s": 0.35 * cf, "dropped_fraction": 0.1 / cf + e / 1000,
                          "peak_memory_gib": 60.0 * cf + e, "memory_capacity_gib": 72.9})
    return out


DIMS = ["model.n_experts", "routing.capacity_factor"]


def legend_labels(fig) -> list[str]:
    legend = fig.axes[0].get_legend() or (fig.legends[0] if fig.legends else None)
    return [t.get_text() for t in legend.get_texts()] if legend else []


def note_of(ax) -> str:
    """The note under the axes naming the points not drawn ('' when none)."""
    boxes = [a for a in ax.artists if a.get_gid() == "not-drawn"]
    return " ".join(boxes[0].offsetbox.get_text().split()) if boxes else ""


def hollow_points(ax) -> set[tuple[float, float]]:
    return {(float(x), float(y)) for ln in ax.lines if ln.get_markerfacecolor() == "none"
            for x, y in zip(ln.get_xdata(), ln.get_ydata())}


@pytest.mark.parametrize("kind, metric, x, y", [
    ("throughput-vs-experts", None, "model.n_experts", "tokens_per_s"),
    ("cost-vs-cf", None, "routing.capacity_factor", "usd_per_mtok"),
    ("metric-vs-axis", "alltoall_exposed_s", "model.n_experts", "alltoall_exposed_s"),
])
def test_points_that_do_not_fit_are_hollow_with_one_legend_entry(kind, metric, x, y):
    fig = plots.plot_sweep(kind, rows(), metric=metric, dims=DIMS)
    ax = fig.axes[0]
    spilled = {(float(r[x]), r[y]) for r in rows() if r.get("fits") is False}
    assert hollow_points(ax) == spilled  # every point that ran, none left out
    labels = legend_labels(fig)
    assert labels.count(NO_FIT) == 1
    # the point that fits is a filled marker
    filled = {(float(x_), float(y_)) for ln in ax.lines if ln.get_markerfacecolor() != "none" and ln.get_label() != NO_FIT
              for x_, y_ in zip(ln.get_xdata(), ln.get_ydata())}
    assert filled == {(8.0 if x == "model.n_experts" else 1.0, rows()[0][y])}


@pytest.mark.parametrize("kind", ["throughput-vs-experts", "cost-vs-cf", "dropped-heatmap"])
def test_points_with_no_figure_are_named_under_the_axes(kind):
    ax = plots.plot_sweep(kind, rows(), dims=DIMS).axes[0]
    assert note_of(ax) == f"not drawn: E=12, cf=1.0; E=12, cf=2.0: invalid ({EP_REASON})"


def test_a_sweep_where_nothing_fits_still_plots_its_points():
    spilled = [r for r in rows() if r.get("fits") is False]
    fig = plots.plot_sweep("throughput-vs-experts", spilled, dims=DIMS)
    assert len(hollow_points(fig.axes[0])) == len(spilled)
    assert legend_labels(fig) == ["cf=1.0", "cf=2.0", NO_FIT]


def test_heatmap_cells_that_do_not_fit_say_so():
    ax = plots.plot_sweep("dropped-heatmap", rows(), dims=DIMS).axes[0]
    texts = [t.get_text() for t in ax.texts]
    assert len(texts) == 8 and texts.count("n/a") == 2  # E=12: invalid, named in the note
    assert sum(t.startswith("does not fit\n(") for t in texts) == 5
    assert "does not fit\n(0.066)" in texts  # E=16, cf=2.0: its figure, in brackets
    assert "0.108" in texts  # the point that fits, coloured
    assert [t.get_text() for t in ax.get_yticklabels()] == ["8", "12", "16", "32"]


def test_no_note_when_every_point_has_a_figure():
    fitting = [r for r in rows() if r.get("model.n_experts") != 12]
    assert note_of(plots.plot_sweep("cost-vs-cf", fitting, dims=DIMS).axes[0]) == ""
