"""Every plot kind renders a non-empty image from a small hand-built result; bad requests fail cleanly."""

from __future__ import annotations

import numpy as np
import pytest

from moesim import plots
from moesim.errors import InputError
from moesim.results import SimResult, SpanRecorder

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def sweep_rows(extra_dim: bool = False) -> list[dict]:
    """Rows as a sweep of experts x capacity factor (x arrival rate) writes them."""
    rows, i = [], 0
    for e in (8, 16, 32):
        for cf in (1.0, 1.25, 2.0):
            for rate in ((1.0, 4.0) if extra_dim else (None,)):
                r = {"point": i, "status": "ok", "scenario": "tiny", "seed": 0, "model.n_experts": e,
                     "routing.capacity_factor": cf, "tokens_per_s": 1e6 / (1 + e / 64) * min(cf, 1.25),
                     "usd_per_mtok": 2.0 * cf, "dropped_fraction": max(0.0, 0.15 - 0.1 * cf),
                     "compute_s": 2.0, "alltoall_s": 0.1 * e / 8, "bubble_s": 0.3, "step_time_s": 2.5,
                     "output_tokens_per_s": 5000.0, "ttft_p99_s": 0.2}
                if rate is not None:
                    r |= {"workload.arrival.rate_per_s": rate, "output_tokens_per_s": 900.0 * rate,
                          "ttft_p99_s": 0.1 * rate}
                rows.append(r)
                i += 1
    rows.append({"point": i, "status": "invalid", "reason": "plan.ep", "model.n_experts": 12})
    return rows


def training_result() -> SimResult:
    rec = SpanRecorder()
    for stage in range(2):
        starts = np.arange(4) * 0.01 + stage * 0.01
        rec.add("forward", stage, "compute", starts, starts + 0.008, item=np.arange(4))
        rec.add("alltoall", stage, "comm", starts + 0.008, starts + 0.01, bytes=1e6)
    summary = {"step_time_s": 0.06, "compute_s": 0.04, "alltoall_s": 0.01, "bubble_s": 0.01}
    parts = {"attention": 0.015, "experts": 0.025, "alltoall_exposed": 0.01, "bubble": 0.01, "total": 0.06}
    step = {"part": list(parts), "seconds": list(parts.values()), "share": [v / 0.06 for v in parts.values()],
            "microbatches": [4] * 5, "tokens_per_microbatch": [1024] * 5}
    return SimResult("training", "tiny-train", 0, summary, rec.columns(), {"train_step": step})


def serving_result() -> SimResult:
    rng = np.random.default_rng(0)
    ttft = rng.gamma(2.0, 0.05, 200)
    table = {"ttft_s": list(ttft), "tpot_s": list(rng.gamma(2.0, 0.005, 200)), "e2e_s": list(ttft + 1.0)}
    return SimResult("serving", "tiny-serve", 0, {"output_tokens_per_s": 100.0}, tables={"requests": table})


def assert_png(paths):
    png = next(p for p in paths if p.suffix == ".png")
    data = png.read_bytes()
    assert data.startswith(PNG_MAGIC) and len(data) > 5000
    svg = next(p for p in paths if p.suffix == ".svg")
    assert "<svg" in svg.read_text()[:2000]


@pytest.mark.parametrize("kind", ["throughput-vs-experts", "cost-vs-cf", "dropped-heatmap", "breakdown"])
def test_sweep_kinds_render(kind, tmp_path):
    fig = plots.plot_sweep(kind, sweep_rows(), title="tiny")
    assert "tiny" in fig.axes[0].get_title()
    assert fig.axes[0].get_xlabel() or kind == "breakdown"
    assert_png(plots.save_figure(fig, tmp_path / kind))


def test_metric_vs_axis_plots_any_swept_field(tmp_path):
    rows = [{"point": i, "status": "ok", "scenario": "ft", "workload.trainable.rank": r, "peak_memory_gib": 20.0 + r / 8}
            for i, r in enumerate((8, 32, 128))]
    fig = plots.plot_sweep("metric-vs-axis", rows, metric="peak_memory_gib")
    ax = fig.axes[0]
    assert ax.get_xlabel() == "workload.trainable.rank" and "GiB" in ax.get_ylabel()
    assert "peak memory" in ax.get_title() and "workload.trainable.rank" in ax.get_title()
    assert list(ax.lines[0].get_ydata()) == [21.0, 24.0, 36.0]
    assert_png(plots.save_figure(fig, tmp_path / "rank"))
    with pytest.raises(InputError, match="varies a field"):
        plots.plot_sweep("metric-vs-axis", rows[:1], metric="peak_memory_gib", dims=["workload.trainable.rank"])


def test_memory_vs_axis_shows_the_device_and_the_points_that_do_not_fit(tmp_path):
    """A LoRA-rank sweep whose largest rank does not fit: its memory is drawn as a hollow marker beside
    the finished line, with the device's capacity as a dashed line, and both are in the legend."""
    rows = [{"point": i, "status": "ok" if r < 256 else "invalid", "scenario": "ft", "workload.trainable.rank": r,
             "peak_memory_gib": 20.0 + r / 4, "memory_capacity_gib": 80.0, "fits": r < 256}
            for i, r in enumerate((8, 64, 256))]
    ax = plots.plot_sweep("metric-vs-axis", rows, metric="peak_memory_gib").axes[0]
    finished, hollow = ax.lines[0], ax.lines[1]
    assert list(finished.get_ydata()) == [22.0, 36.0]
    assert list(hollow.get_xdata()) == [256.0] and list(hollow.get_ydata()) == [84.0]
    assert hollow.get_markerfacecolor() == "none"
    capacity = [ln for ln in ax.lines if list(ln.get_ydata()) == [80.0, 80.0]]
    assert len(capacity) == 1
    labels = [text.get_text() for text in ax.get_legend().get_texts()]
    assert labels == ["fits", "capacity (80 GiB)", "does not fit in memory"]
    # a throughput plot of the same sweep draws the point that does not fit hollow too, but no capacity line
    plain = plots.plot_sweep("metric-vs-axis", [r | {"tokens_per_s": 1.0} for r in rows]).axes[0]
    assert not [ln for ln in plain.lines if list(ln.get_ydata()) == [80.0, 80.0]]
    assert [t.get_text() for t in plain.get_legend().get_texts()] == ["fits", "does not fit in memory"]


def test_throughput_vs_load_renders_with_latency_axis(tmp_path):
    rows = [r for r in sweep_rows(extra_dim=True) if r.get("model.n_experts") == 8 and r.get("routing.capacity_factor") == 1.0]
    fig = plots.plot_sweep("throughput-vs-load", rows, dims=["workload.arrival.rate_per_s"])
    assert fig.axes[0].get_xlabel() == "arrival rate (requests/s)"
    assert "TTFT p99 (s)" in fig.axes[1].get_ylabel()
    assert_png(plots.save_figure(fig, tmp_path / "load"))


@pytest.mark.parametrize("kind, make", [("timeline", training_result), ("breakdown", training_result),
                                        ("latency-cdf", serving_result)])
def test_result_kinds_render(kind, make, tmp_path):
    fig = plots.plot_result(kind, make())
    assert make().scenario in fig.axes[0].get_title()
    assert_png(plots.save_figure(fig, tmp_path / kind))


def test_timeline_has_a_lane_per_stage_and_stream_with_time_unit():
    fig = plots.plot_result("timeline", training_result())
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["stage 0 compute", "stage 0 PP sends",
                                                            "stage 1 compute", "stage 1 PP sends"]
    assert ax.get_xlabel() == "time (ms)"


def test_a_zero_bubble_timeline_shows_its_weight_gradient_passes_apart():
    """ZB-H1 moves weight-gradient passes into the cool-down: the timeline must draw them in their own colour."""
    import moesim

    s = moesim.load_scenario("mixtral-8x7b-h100-train", ["plan.pp=4", "plan.dp=16", "plan.microbatches=8",
                                                         "plan.schedule=zb-h1"])
    ax = plots.plot_result("timeline", moesim.simulate(s)).axes[0]
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert legend[:3] == ["forward compute", "backward compute", "weight-gradient compute"]
    assert plots.span_group("experts_wgrad_bwd") == "weight-gradient compute"
    assert plots.span_group("experts_bwd") == "backward compute"


def test_lines_one_per_capacity_factor():
    fig = plots.plot_sweep("throughput-vs-experts", sweep_rows())
    labels = [line.get_label() for line in fig.axes[0].get_lines()]
    assert labels == ["cf=1.0", "cf=1.25", "cf=2.0"]


def test_large_values_read_with_thousands_separators():
    """Throughputs of ~10^6 tokens/s tick as 600,000, not 600000 or 6e5 with an offset; small ones stay plain."""
    ax = plots.plot_sweep("throughput-vs-experts", sweep_rows()).axes[0]
    fmt = ax.yaxis.get_major_formatter()
    assert fmt(600000.0, 0) == "600,000"
    small = plots.plot_sweep("cost-vs-cf", sweep_rows()).axes[0]  # $ per 1M tokens: 2-4
    assert "," not in small.yaxis.get_major_formatter()(2.5, 0)


def test_bad_requests_are_input_errors():
    with pytest.raises(InputError, match="--where"):
        plots.plot_sweep("dropped-heatmap", sweep_rows(extra_dim=True))
    with pytest.raises(InputError, match="allowed"):
        plots.plot_sweep("pie", sweep_rows())
    with pytest.raises(InputError, match="no finished"):
        plots.plot_sweep("cost-vs-cf", [{"status": "invalid"}])
    with pytest.raises(InputError, match="only a serving result has"):
        plots.plot_result("latency-cdf", training_result())
    with pytest.raises(InputError, match="no spans"):
        plots.plot_result("timeline", serving_result())
    with pytest.raises(InputError, match="format"):
        plots.save_figure(plots.plot_result("breakdown", training_result()), "x", ["gif"])


def test_a_saved_result_plots_under_the_overrides_it_was_run_with(tmp_path, monkeypatch):
    """Plotted from simulate --out's folder, a run's title names its --set overrides, as plotted from the scenario."""
    from tests.test_sweep import invoke

    training_result().save(tmp_path / "res", inputs={"scenario": "tiny", "overrides": ["plan.pp=2"]})
    titles = []
    draw = plots.plot_result
    monkeypatch.setattr(plots, "plot_result", lambda kind, result, title="": titles.append(title) or draw(kind, result, title))
    assert invoke(["plot", str(tmp_path / "res"), "--kind", "timeline"]) == 0
    assert titles == [f"{training_result().scenario} [plan.pp=2]"]


def test_plot_command_from_saved_result_and_sweep_folder(tmp_path):
    from tests.test_sweep import invoke

    training_result().save(tmp_path / "res")
    assert invoke(["plot", str(tmp_path / "res"), "--kind", "timeline"]) == 0
    assert (tmp_path / "res" / "timeline.png").stat().st_size > 5000
    from moesim.sweep_store import ResultStore

    with ResultStore(tmp_path / "sw", durable=False) as store:
        store.open()
        for r in sweep_rows():
            store.append(r)
    assert invoke(["plot", str(tmp_path / "sw"), "--kind", "dropped-heatmap", "--out",
                   str(tmp_path / "heat"), "--format", "png"]) == 0
    assert (tmp_path / "heat.png").exists() and not (tmp_path / "heat.svg").exists()
    assert invoke(["plot", str(tmp_path / "sw"), "--kind", "breakdown", "--where",
                   "routing.capacity_factor=1.25"]) == 0
    assert invoke(["plot", str(tmp_path / "sw"), "--kind", "breakdown", "--where", "nope=1"]) == 2
    assert invoke(["plot", str(tmp_path / "sw"), "--kind", "timeline"]) == 2
    assert invoke(["plot", str(tmp_path / "missing"), "--kind", "timeline"]) == 2
