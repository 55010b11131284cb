"""A swept field whose values are categories (model presets, mappings such as ``model={n_experts: 8, top_k: 1}``)
is drawn as markers with no line joining unrelated models; legends follow the sweep's order (numbers by value),
and long legend labels go under the axes instead of squeezing them."""

from __future__ import annotations

import json

from moesim import plots

MODELS = [{"n_experts": 8, "top_k": 1}, {"n_experts": 16, "top_k": 2}, {"n_experts": 32, "top_k": 2}]
SEQ = [2048, 256, 1024, 512, 4096]  # the order given on the command line


def mapping_rows(x_first: bool = True) -> list[dict]:
    """``--grid model={...},{...},{...} --grid workload={seq_len: 2048},{seq_len: 256},...`` as the results
    keep it: each mapping as compact JSON text."""
    rows = []
    for m in MODELS:
        for s in SEQ:
            rows.append({"point": len(rows), "status": "ok", "scenario": "s", "kind": "training", "seed": 0, "fits": True,
                         "model": json.dumps(m, separators=(",", ":")), "workload": json.dumps({"seq_len": s}),
                         "tokens_per_s": 1000.0 * m["top_k"] + s})
    return rows


def legend_labels(fig) -> list[str]:
    legend = fig.axes[0].get_legend() or (fig.legends[0] if fig.legends else None)
    return [t.get_text().replace("\n", " ") for t in legend.get_texts()]


def test_category_x_is_markers_without_joining_lines():
    ax = plots.plot_sweep("metric-vs-axis", mapping_rows(), dims=["model", "workload"]).axes[0]
    assert [t.get_text().replace("\n", " ") for t in ax.get_xticklabels()] == [
        "n_experts=8 top_k=1", "n_experts=16 top_k=2", "n_experts=32 top_k=2"]
    for line in ax.lines:
        if line.get_xdata().size:
            assert line.get_linestyle() == "None" and line.get_marker() == "o"


def test_text_x_is_markers_without_joining_lines():
    rows = [{"point": i, "status": "ok", "scenario": "s", "seed": 0, "model": m, "tokens_per_s": 10.0 + i}
            for i, m in enumerate(("mixtral-8x7b", "deepseek-v3", "qwen3-30b-a3b"))]
    line = plots.plot_sweep("metric-vs-axis", rows, dims=["model"]).axes[0].lines[0]
    assert line.get_linestyle() == "None" and list(line.get_ydata()) == [10.0, 11.0, 12.0]


def test_a_numeric_x_keeps_its_lines():
    rows = [{"point": i, "status": "ok", "scenario": "s", "seed": 0, "model.n_experts": e, "tokens_per_s": 1.0 + i}
            for i, e in enumerate((8, 16, 32))]
    line = plots.plot_sweep("throughput-vs-experts", rows, dims=["model.n_experts"]).axes[0].lines[0]
    assert line.get_linestyle() == "-"


def test_legend_of_mappings_follows_the_sweep_order():
    fig = plots.plot_sweep("metric-vs-axis", mapping_rows(), dims=["model", "workload"])
    assert legend_labels(fig) == [f"workload: seq_len={s}" for s in SEQ]  # as swept, not as text (1024 < 2048 < 256)


def test_legend_of_text_follows_the_sweep_order_and_numbers_their_value():
    rows = []
    for hw in ("h200", "a100-80gb", "b200"):
        for e in (32, 8, 16):
            rows.append({"point": len(rows), "status": "ok", "scenario": "s", "seed": 0, "hardware": hw,
                         "model.n_experts": e, "tokens_per_s": 1.0 + len(rows)})
    fig = plots.plot_sweep("throughput-vs-experts", rows, dims=["model.n_experts", "hardware"])
    assert legend_labels(fig) == ["hardware=h200", "hardware=a100-80gb", "hardware=b200"]
    fig = plots.plot_sweep("metric-vs-axis", rows, dims=["hardware", "model.n_experts"])
    assert legend_labels(fig) == ["E=8", "E=16", "E=32"]


def test_long_legend_labels_go_under_the_axes_which_keep_the_width():
    fig = plots.plot_sweep("metric-vs-axis", mapping_rows(), dims=["workload", "model"])
    assert fig.axes[0].get_legend() is None and len(fig.legends) == 1
    assert legend_labels(fig) == [f"model: n_experts={m['n_experts']} top_k={m['top_k']}" for m in MODELS]
    fig.draw_without_rendering()
    assert fig.axes[0].get_position().width > 0.7  # beside the axes, these labels left them 40 % of the figure
    legend_top = fig.legends[0].get_window_extent().y1
    assert legend_top <= fig.axes[0].get_window_extent().y0


def test_short_legend_labels_stay_beside_the_axes():
    fig = plots.plot_sweep("metric-vs-axis", mapping_rows(), dims=["model", "workload"])
    assert fig.axes[0].get_legend() is not None and not fig.legends


def test_long_category_ticks_wrap():
    rows = mapping_rows()
    for r in rows:
        r["model"] = r["model"].replace("{", '{"max_seq_len":4096,', 1)
    ax = plots.plot_sweep("metric-vs-axis", rows, dims=["model", "workload"]).axes[0]
    ticks = [t.get_text() for t in ax.get_xticklabels()]
    assert ticks[0] == "max_seq_len=4096\nn_experts=8 top_k=1"
    assert max(len(line) for t in ticks for line in t.split("\n")) <= 24
