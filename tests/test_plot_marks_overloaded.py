"""Serving points whose queue grew through the steady-state window (``overloaded``) are marked apart from the
points that kept up, with one legend entry, on throughput-vs-load and metric-vs-axis."""

from __future__ import annotations

import numpy as np
import pytest

from moesim import plots

OVERLOADED = "overloaded (queue grew)"
RATE = "workload.arrival.rate_per_s"


def rate_rows(replicas: tuple[int, ...] = (1,)) -> list[dict]:
    """A serving sweep over arrival rates as `moesim sweep` writes it: status ok, ``overloaded`` true where the
    queue grew (rates 200 and 320 for one replica)."""
    out = []
    for n in replicas:
        for rate in (20.0, 100.0, 200.0, 320.0):
            cap = 150.0 * n  # what n replicas keep up with
            served = min(rate, cap)
            r = {"point": len(out), "status": "ok", "scenario": "srv", "kind": "serving", "seed": 0, RATE: rate,
                 "output_tokens_per_s": 300.0 * served, "ttft_p99_s": 0.1 if rate < cap else 5.0,
                 "overloaded": rate > cap, "fits": True}
            out.append(r | ({"plan.replicas": n} if len(replicas) > 1 else {}))
    return out


def labels(ax) -> list[str]:
    return [t.get_text() for t in ax.get_legend().get_texts()]


def crosses(ax) -> set[tuple[float, float]]:
    """The points drawn as a cross."""
    return {(float(x), float(y)) for ln in ax.lines if ln.get_marker() == "X" and ln.get_label() != OVERLOADED
            for x, y in zip(ln.get_xdata(), ln.get_ydata())}


@pytest.mark.parametrize("kind, metric", [("throughput-vs-load", None), ("metric-vs-axis", None),
                                          ("metric-vs-axis", "ttft_p99_s")])
def test_overloaded_points_are_crosses_with_one_legend_entry(kind, metric):
    ax = plots.plot_sweep(kind, rate_rows(), metric=metric, dims=[RATE]).axes[0]
    y = metric or "output_tokens_per_s"
    assert crosses(ax) == {(r[RATE], r[y]) for r in rate_rows() if r["overloaded"]}
    line = ax.lines[0]  # the kept-up points keep their circles; the overloaded ones are not circles too
    assert line.get_marker() == "o" and list(line.get_xdata()) == [20.0, 100.0, 200.0, 320.0]
    assert list(np.asarray(line.get_markevery(), dtype=bool)) == [True, True, False, False]
    assert labels(ax) == ["kept up", OVERLOADED]


def test_one_overloaded_entry_for_several_lines():
    ax = plots.plot_sweep("throughput-vs-load", rate_rows((1, 2)), dims=[RATE, "plan.replicas"]).axes[0]
    assert labels(ax) == ["plan.replicas=1", "plan.replicas=2", OVERLOADED]
    assert {x for x, _ in crosses(ax)} == {200.0, 320.0}  # one replica falls behind at 200 and 320, two at 320
    assert len(crosses(ax)) == 3


def test_a_status_that_says_overloaded_is_drawn_as_one():
    rows = [r | {"status": "overloaded"} if r["overloaded"] else r for r in rate_rows()]
    ax = plots.plot_sweep("throughput-vs-load", rows, dims=[RATE]).axes[0]
    assert {x for x, _ in crosses(ax)} == {200.0, 320.0}


def test_a_sweep_that_kept_up_has_no_marks_or_legend():
    rows = [r | {"overloaded": False} for r in rate_rows()]
    ax = plots.plot_sweep("throughput-vs-load", rows, dims=[RATE]).axes[0]
    assert not crosses(ax) and ax.get_legend() is None
