"""Issue 18's capacity-factor workflow and small newcomer frictions, one test each.

The sweep table shows the swept axes and what moves (dropped_fraction) without cutting columns;
plot titles follow --metric; the dropped heatmap says which axes it needs; every CSV column is
documented; the plan-size error names devices_per_node; one GPU is not a "DGX"; one formatting
rule per unit; the Chrome trace has one process_name per pid and communication on its own track.
"""

from __future__ import annotations

import csv
import itertools
import json
import re
from pathlib import Path

import numpy as np
import pytest
from rich.console import Console

from moesim import capacity, plots
from moesim.csv_columns import TABLES, markdown, undocumented
from moesim.errors import InputError
from moesim.formatting import fmt_value
from moesim.results import SimResult, SpanRecorder
from moesim.sweep_table import note, pick_metrics, rows_table
from tests.conftest import ROOT

TRAIN = ROOT / "scenarios" / "mixtral-8x7b-h100-train.yaml"
ONLINE = ROOT / "scenarios" / "mixtral-8x7b-h100-serve-online.yaml"
SMALL = ["workload.prompt_tokens={dist: lognormal, median: 128, sigma: 0.5, max: 512}",
         "workload.output_tokens={dist: lognormal, median: 24, sigma: 0.5, max: 96}"]


def cf_rows() -> list[dict]:
    """A capacity-factor sweep of a training scenario as the store keeps it: step time, cost and
    MFU move with the capacity factor, so do the drops; devices do not."""
    rows = []
    for i, (cf, dropped) in enumerate(((1.0, 0.1169), (1.25, 0.0496), (2.0, 0.0))):
        step = 8.0 + 2.0 * cf
        rows.append({"point": i, "status": "ok", "reason": "", "scenario": "s", "kind": "training", "seed": 0,
                     "routing.capacity_factor": cf, "step_time_s": step, "tokens_per_s": 4e6 / step,
                     "mfu": 4.0 / step, "usd_per_mtok": step / 80.0, "dropped_fraction": dropped,
                     "peak_memory_gib": 60.0 + 10 * cf, "devices": 64, "sim_wall_s": 0.1})
    rows[-1] |= {"status": "invalid", "reason": "does not fit in device memory (peak 86.1 GiB)"}
    return rows


def render(table, width: int = 80) -> str:
    console = Console(width=width, record=True, file=open("/dev/null", "w"))  # noqa: SIM115
    console.print(table)
    return console.export_text()


# ------------------------------------------------------------------ the capacity-factor workflow
def test_sweep_table_shows_the_swept_axis_and_dropped_fraction_within_80_columns():
    rows = cf_rows()
    table, picked = rows_table(rows, ["routing.capacity_factor"], "training", None, None, 10, width=80)
    text = render(table)
    assert all(len(line) <= 80 for line in text.splitlines())
    assert "…" not in text  # nothing cut with an ellipsis
    heads = [str(c.header).replace("\n", "") for c in table.columns]
    assert heads[0] == "capacity_factor" and "dropped_fraction" in heads  # long names on two lines
    assert "dropped_fraction" in picked.shown and "step_time_s" in picked.shown
    assert "11.69 %" in text and "4.96 %" in text
    assert "devices" not in picked.shown + picked.left_out + picked.proportional  # does not move
    # MFU and tokens/s move only with step time here: named under the table, not shown
    assert {"mfu", "tokens_per_s"} <= set(picked.proportional)
    lines = note(picked, "sw/results.csv")
    assert "[1] does not fit in device memory" in lines and "mfu" in lines and "sw/results.csv" in lines


def test_sweep_table_marks_a_tight_point_and_says_what_avoids_it():
    """A point that fits only while the allocator's reserve is not counted is "tight", numbered with its advice."""
    rows = cf_rows()[:2]
    rows[0] |= {"fits": True, "fits_advice": "the live tensors fit, but the allocator would reserve more"}
    rows[1] |= {"fits": True, "fits_advice": ""}
    table, picked = rows_table(rows, ["routing.capacity_factor"], "training", "tokens_per_s", rows[0], 10,
                               direction="max", width=100)
    text = render(table, 100)
    assert "tight [1]" in text and text.count(" ok ") == 1
    assert "[1] tight: the live tensors fit, but the allocator would reserve more" in note(picked, "r.csv")


def test_best_table_counts_the_points_it_could_not_rank_apart_from_those_top_cuts():
    """cf 2.0 did not fit: --best cannot rank it, so it is "not ranked", not a row that --top hides."""
    rows = cf_rows()
    _, picked = rows_table(rows, ["routing.capacity_factor"], "training", "tokens_per_s", rows[0], 10,
                           direction="max", width=100)
    assert picked.rows_left == 0 and picked.unranked == 1
    lines = note(picked, "r.csv")
    assert "raise --top" not in lines and "1 point not ranked" in lines
    _, top1 = rows_table(rows, ["routing.capacity_factor"], "training", "tokens_per_s", rows[0], 1,
                         direction="max", width=100)
    assert top1.rows_left == 1 and "1 more row not shown (raise --top)" in note(top1, "r.csv")


def test_sweep_table_names_what_it_leaves_out_when_the_console_is_narrow():
    rows = cf_rows()
    _, wide = rows_table(rows, ["routing.capacity_factor"], "training", None, None, 10, width=200)
    _, narrow = rows_table(rows, ["routing.capacity_factor"], "training", None, None, 10, width=60)
    assert "peak_memory_gib" in wide.shown and "peak_memory_gib" in narrow.left_out
    assert "peak_memory_gib" in note(narrow, "x.csv") and "no room" in note(narrow, "x.csv")
    assert pick_metrics(rows, "training", "mfu")[0][0] == "mfu"  # --best comes first
    _, top2 = rows_table(rows, ["routing.capacity_factor"], "training", None, None, 2, width=80)
    assert top2.rows_left == 1 and "1 more row not shown (raise --top)" in note(top2, "x.csv")


def test_sweep_columns_shows_the_metrics_asked_for_in_order_and_refuses_a_typo_before_running(tmp_path, capsys):
    """A pipeline researcher wants bubble_fraction beside step time on an 80-column terminal: --columns shows those
    metrics alone, in order; a misspelt one is refused before any point runs (no folder is made)."""
    from moesim.cli import main
    from moesim.cli_sweep import table_columns
    from moesim.errors import InputError

    rows = cf_rows()
    table, picked = rows_table(rows, ["routing.capacity_factor"], "training", None, None, 10, width=80,
                               columns=["mfu", "dropped_fraction"])
    assert picked.shown == ["mfu", "dropped_fraction"] and picked.left_out == [] and picked.proportional == []
    heads = [str(c.header).replace("\n", "") for c in table.columns]
    assert heads[1].startswith("mfu") and heads[2] == "dropped_fraction"
    assert table_columns(" step_time_s, bubble_fraction,step_time_s ") == ["step_time_s", "bubble_fraction"]
    with pytest.raises(InputError, match=r"^--columns bubble_frac: not a summary metric; did you mean bubble_fraction"):
        table_columns("step_time_s,bubble_frac")
    assert main(["sweep", str(TRAIN), "--capacity-factor", "1.0", "--columns", "bubble_frac",
                 "--out", str(tmp_path / "sw")]) == 2
    assert not (tmp_path / "sw").exists()


def test_cli_sweep_prints_dropped_fraction_and_the_axis(tmp_path, capsys):
    from moesim.cli import main

    assert main(["sweep", str(TRAIN), "--capacity-factor", "1.0,1.25", "--out", str(tmp_path / "sw"),
                 "--workers", "1"]) == 0
    text = capsys.readouterr().out
    assert "dropped_" in text and "fraction" in text and "capacity_" in text and "…" not in text


def test_plot_title_follows_the_metric():
    rows = [r for r in cf_rows() if r["status"] == "ok"]
    fig = plots.plot_sweep("cost-vs-cf", rows, title="s", metric="dropped_fraction", dims=["routing.capacity_factor"])
    ax = fig.axes[0]
    assert ax.get_title() == "s: dropped tokens vs capacity factor"
    assert ax.get_ylabel() == "dropped tokens (fraction)"
    fig = plots.plot_sweep("cost-vs-cf", rows, title="s", dims=["routing.capacity_factor"])
    assert fig.axes[0].get_title() == "s: cost vs capacity factor"


def test_dropped_heatmap_without_an_experts_axis_says_what_to_sweep():
    rows = [r for r in cf_rows() if r["status"] == "ok"]
    with pytest.raises(InputError) as e:
        plots.plot_sweep("dropped-heatmap", rows, dims=["routing.capacity_factor"])
    msg = str(e.value)
    assert "\n" not in msg and len(msg) < 250
    assert "needs a second swept field beside routing.capacity_factor" in msg
    assert "this sweep varies: routing.capacity_factor" in msg and "--experts" in msg and "zipf_s" in msg
    assert "peak_memory_gib" not in msg  # no list of every column


@pytest.mark.parametrize("axis, values, ticks", [
    ("routing.zipf_s", [0.0, 1.0, 0.5], ["0.0", "0.5", "1.0"]),  # numbers in order
    ("hardware", ["h200", "h100-sxm"], ["h200", "h100-sxm"]),  # text in sweep order
])
def test_dropped_heatmap_takes_the_other_swept_field_when_the_experts_are_fixed(axis, values, ticks):
    """Skew x capacity factor is the heatmap an MoE researcher asks for; any second swept field may stand in
    for the experts, each cell that point's figure."""
    rows = [{"point": i, "status": "ok", "scenario": "s", "seed": 0, axis: v, "routing.capacity_factor": cf,
             "dropped_fraction": 0.1 * j + 0.01 * k}
            for i, ((j, v), (k, cf)) in enumerate(itertools.product(enumerate(values), enumerate([1.0, 1.25])))]
    fig = plots.plot_sweep("dropped-heatmap", rows, title="s", dims=[axis, "routing.capacity_factor"])
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_yticklabels()] == ticks
    assert "(s)" not in ax.get_ylabel()  # zipf_s's "_s" is not seconds
    grid = ax.images[0].get_array()
    want = {v: 0.1 * j for j, v in enumerate(values)}
    for i, t in enumerate(ticks):
        v = next(x for x in values if str(x) == t)
        assert list(grid[i]) == pytest.approx([want[v], want[v] + 0.01])


def _written_columns(path: Path) -> list[str]:
    with open(path, newline="") as fh:
        return next(csv.reader(fh))


def test_every_csv_column_written_is_documented(tmp_path, monkeypatch, capsys):
    from moesim.cli import main

    monkeypatch.setattr(capacity, "MAX_REQUESTS", 100)
    monkeypatch.setattr(capacity, "MIN_REQUESTS", 100)
    monkeypatch.setattr(capacity, "LOW_LOAD_REQUESTS", 30)
    sets = [a for item in SMALL for a in ("--set", item)]
    assert main(["simulate", str(TRAIN), "--out", str(tmp_path / "train")]) == 0
    assert main(["simulate", str(ONLINE), *sets, "--slo", "ttft_p99=1e-6", "--out", str(tmp_path / "serve")]) == 0
    assert main(["sweep", str(TRAIN), "--capacity-factor", "1.0,1.25", "--out", str(tmp_path / "sw"), "-w", "1"]) == 0
    assert main(["plan", str(TRAIN), "--devices", "64", "--tp", "1", "--pp", "1", "--workers", "1",
                 "--out", str(tmp_path / "plan")]) == 0
    capsys.readouterr()
    written = {
        "train/spans.csv": "spans.csv", "train/layers.csv": "layers.csv", "serve/spans.csv": "spans.csv",
        "serve/requests.csv": "requests.csv", "serve/iterations.csv": "iterations.csv",
        "serve/expert_layers.csv": "expert_layers.csv", "serve/capacity_probes.csv": "capacity_probes.csv",
        "serve/decode_step.csv": "decode_step.csv",
        "sw/results.csv": "results.csv", "plan/plans.csv": "plans.csv", "plan/results.csv": "results.csv (moesim plan)",
    }
    for path, table in written.items():
        cols = _written_columns(tmp_path / path)
        assert cols and undocumented(table, cols) == [], f"{path}: document these in moesim/csv_columns.py"
    assert {p.name for p in tmp_path.glob("*/*.csv")} <= {t.split(" ")[0] for t in TABLES}


def test_csv_doc_is_generated_and_states_the_layers_scope(root):
    doc = (root / "docs" / "csv-columns.md").read_text()
    assert doc == markdown(), "docs/csv-columns.md is stale: python -m moesim.csv_columns --write"
    layers = doc.split("## layers.csv", 1)[1].split("##", 1)[0]
    assert "per EP group per microbatch" in layers and "| `routed` | token-slots |" in layers


# ------------------------------------------------------------------ small things
def test_fewer_devices_than_a_node_names_devices_per_node(raw):
    from moesim import scenario_from_dict

    raw = json.loads(json.dumps(raw))
    raw["hardware"] = {"preset": "a100-80gb"}
    raw["plan"] = {"dp": 1, "tp": 1, "pp": 1, "ep": 1}
    with pytest.raises(InputError, match=r"= 8\); set plan.dp: 8 to keep the hardware; or set hardware.node.devices_per_node: 1 "):
        scenario_from_dict(raw)


def test_one_gpu_is_not_named_as_a_whole_dgx():
    from moesim.presets.hardware import display_name
    from moesim.report import summary_table

    assert display_name("DGX A100 80GB", 1) == "A100 SXM4 80GB x1"
    assert display_name("DGX A100 80GB", 16) == "DGX A100 80GB"
    assert display_name("my cluster", 1) == "my cluster"
    text = render(summary_table("t", {"hardware": "DGX A100 80GB", "devices": 1}))
    assert "A100 SXM4 80GB x1" in text and "DGX" not in text


@pytest.mark.parametrize("key, value, text", [
    ("usd_per_1k_output_tokens", 7.931e-3, "$0.00793 / 1K tok"),
    ("usd_per_1k_tokens", 6.483e-05, "$0.0000648 / 1K tok"),
    ("usd_per_mtok", 0.135, "$0.135 / 1M tok"),
    ("run_cost_usd", 134578.14, "$134,578"),
    ("usd_per_step", 1.5, "$1.50"),
    ("kv_cache_capacity_tokens", 534135.5, "534,135"),
    ("dropped_fraction", 4.905e-4, "0.049 %"),
    ("kv_utilisation_mean", 0.1624, "16.24 %"),
    ("dp_sync_exposed_s", 7.675e-3, "7.68 ms"),  # under 0.1 s in milliseconds, three digits
    ("tpot_p50_s", 0.038, "38.0 ms"),
    ("step_time_s", 0.436, "0.436 s"),
    ("step_time_s", 0.0, "0.000 s"),
    ("spec_tokens_per_step", 2.31, "2.310 tokens/step"),
])
def test_one_formatting_rule_per_unit(key, value, text):
    assert fmt_value(key, value) == text
    assert "e-0" not in fmt_value(key, value)


def test_every_cost_row_of_a_serving_summary_shows_its_unit():
    from moesim.metrics import METRICS

    for name, m in METRICS.items():
        if m.unit.startswith("USD"):
            shown = fmt_value(name, 0.00123)
            assert shown.startswith("$") and not re.search(r"\de-\d", shown), name  # no 1.23e-03
            if "/" in m.unit:
                assert shown.endswith((" tok", " / device-hour")), name


def test_plan_table_cells_follow_the_unit_rules():
    from moesim.cli_plan import format_cell

    assert format_cell("mfu", 0.5069) == "50.69 %"
    assert format_cell("usd_per_mtok", 0.000132) == "0.000132"  # the header says $/Mtok
    assert format_cell("ttft_p99_s", 0.004) == "0.0040"
    assert format_cell("capacity_req_s", 811.877) == "811.9"


def _trace_result() -> SimResult:
    rec = SpanRecorder()
    for stage in range(2):
        t = np.arange(3) * 0.01
        rec.add("attention_fwd", stage, "compute", t, t + 0.004, item=np.arange(3))
        rec.add("alltoall_dispatch_fwd", stage, "compute", t + 0.004, t + 0.006, item=np.arange(3), bytes=1e6)
        rec.add("tp_allreduce_fwd", stage, "compute", t + 0.006, t + 0.007, item=np.arange(3))
        rec.add("pp_send_fwd", stage, "comm", t + 0.007, t + 0.008, item=np.arange(3))
        rec.add("dp_sync_dense", stage, "dp_comm", 0.03, 0.04)
    return SimResult("training", "t", 0, {}, rec.columns())


def test_trace_has_one_process_name_per_pid_and_comm_on_its_own_track():
    events = _trace_result().chrome_trace()["traceEvents"]
    names = [e["pid"] for e in events if e["ph"] == "M" and e["name"] == "process_name"]
    assert sorted(names) == [0, 1]
    tid = {e["name"]: e["tid"] for e in events if e["ph"] == "X" and e["pid"] == 0}
    assert tid["alltoall_dispatch_fwd"] != tid["attention_fwd"]
    assert tid["tp_allreduce_fwd"] not in (tid["attention_fwd"], tid["alltoall_dispatch_fwd"])
    threads = {(e["pid"], e["tid"]): e["args"]["name"] for e in events if e["name"] == "thread_name"}
    assert threads[(0, tid["alltoall_dispatch_fwd"])] == "ep_comm" and threads[(1, tid["tp_allreduce_fwd"])] == "tp_comm"
    assert len(threads) == len(set(threads))  # one thread_name per (pid, tid)


def test_plan_table_drops_the_least_telling_columns_on_a_narrow_terminal_and_says_so():
    from moesim.cli_plan import fit_columns, two_line

    headers = ["#", "plan", "devices", "hardware", "also on", "$/Mtok\n1 replica", "TTFT p99 s"]
    body = [["1", "dp8 tp1 pp1 ep2 batch512", "8", "h100-sxm", "16,32,64", "0.103", "0.219"]]
    every = fit_columns(headers, body, 200, ["hardware", "also on", "devices"])
    assert every == list(range(len(headers)))  # wide enough: nothing dropped
    narrow = fit_columns(headers, body, 60, ["hardware", "also on", "devices"])
    assert [headers[i] for i in narrow] == ["#", "plan", "$/Mtok\n1 replica", "TTFT p99 s"]  # dropped in order
    assert two_line("TTFT p99 s", 5) == "TTFT\np99 s" and two_line("plan", 30) == "plan"


def test_plan_table_keeps_the_hardware_when_the_plans_differ_by_it():
    """Comparing devices (--hardware h100-sxm,h200), which one wins is the answer: an 80-column table
    drops other columns first; when every row is on one device, the caption names it instead."""
    from types import SimpleNamespace

    from moesim.cli_plan import _table

    obj = SimpleNamespace(key="usd_per_mtok_at_capacity", name="usd_per_mtok", direction="min")

    def row(hw: str, ep: int) -> dict:
        return {"plan": f"dp8 tp1 pp1 ep{ep} batch512", "devices": 8, "hardware": hw, "one_replica_objective": 0.274,
                "whole_plan_objective": 0.271, "capacity_req_s": 86.0, "tokens_per_s_per_device_at_capacity": 3100.0,
                "ttft_p99_s": 0.525, "tpot_p99_s": 0.091}

    mixed = _table([row("h200", 4), row("h100-sxm", 8)], obj, False, 5, width=80)
    assert "hardware" in [c.header for c in mixed.columns] and "hardware" not in (mixed.caption or "")
    one = _table([row("h200", 4), row("h200", 8)], obj, False, 5, width=80)
    assert "hardware" not in [c.header for c in one.columns] and "all on h200" in one.caption


def test_summary_leaves_out_the_rows_of_a_feature_the_run_did_not_use():
    """No speculative decoding (1 token a step, 0 accepted) and no EPLB (0 moves): their rows say nothing."""
    from moesim.report import summary_table

    base = {"output_tokens_per_s": 10.0, "spec_tokens_per_step": 1.0, "spec_acceptance": 0.0,
            "eplb_rebalances": 0, "eplb_moved_gib": 0.0, "eplb_stall_s": 0.0}
    text = render(summary_table("t", base), 100)
    assert "output_tokens_per_s" in text and "spec_" not in text and "eplb_" not in text
    used = base | {"spec_tokens_per_step": 2.5, "spec_acceptance": 0.5, "eplb_rebalances": 3}
    text = render(summary_table("t", used), 100)
    assert "spec_acceptance" in text and "spec_tokens_per_step" in text and "eplb_stall_s" in text


def test_mapping_values_read_as_field_pairs_in_tables_and_ticks():
    """A swept {mapping} is kept as compact JSON in results; tables and plot ticks show it as dp=8 tp=1."""
    from moesim.formatting import swept_text

    rows = [{"point": i, "status": "ok", "scenario": "s", "kind": "serving", "seed": 0, "plan": p, "tokens_per_s": t}
            for i, (p, t) in enumerate((('{"dp":8,"tp":1}', 10.0), ('{"dp":4,"tp":2}', 8.0)))]
    table, _ = rows_table(rows, ["plan"], "serving", None, None, 10, width=80)
    text = render(table)
    assert "dp=8 tp=1" in text and "dp=4 tp=2" in text and '"dp"' not in text
    ax = plots.plot_sweep("metric-vs-axis", rows, metric="tokens_per_s", dims=["plan"]).axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["dp=8 tp=1", "dp=4 tp=2"]
    assert swept_text({"arrival": {"process": "batch"}, "n": 3}) == "arrival={process=batch} n=3"
    assert plots.legend_text(["plan", "model.n_experts"], ('{"dp":4,"tp":2}', 8)) == "plan: dp=4 tp=2, E=8"
    assert swept_text("h200") == "h200" and swept_text("{not json") == "{not json"


def test_a_sweep_under_an_slo_shows_the_capacity_first():
    rows = [{"status": "ok", "plan.dp": dp, "max_goodput_req_s": 20.0 * dp, "usd_per_mtok": 0.1 + 0.01 * dp,
             "usd_per_mtok_at_capacity": 0.1 + 0.01 * dp, "output_tokens_per_s": 900.0 * dp, "ttft_p99_s": 1.0,
             "tpot_p99_s": 0.03} for dp in (1, 2, 4)]
    picked, _ = pick_metrics(rows, "serving", "usd_per_mtok")
    assert picked[:3] == ["usd_per_mtok", "max_goodput_req_s", "output_tokens_per_s"]
    assert "usd_per_mtok_at_capacity" not in picked  # the same figure as usd_per_mtok, not a second column
    assert pick_metrics([{k: v for k, v in r.items() if k != "max_goodput_req_s"} for r in rows],
                        "serving")[0][0] == "output_tokens_per_s"


def test_sweep_best_ranks_serving_points_that_kept_up_before_overloaded_ones():
    from moesim.sweep import best_row
    from moesim.sweep_table import status_cells

    rows = [{"status": "ok", "plan.dp": 1, "usd_per_mtok": 0.10, "overloaded": True},
            {"status": "ok", "plan.dp": 2, "usd_per_mtok": 0.12, "overloaded": False},
            {"status": "ok", "plan.dp": 4, "usd_per_mtok": 0.20, "overloaded": False}]
    assert best_row(rows, "usd_per_mtok", "min")["plan.dp"] == 2  # the cheaper plan's queue grew without bound
    assert best_row(rows[:1], "usd_per_mtok", "min")["plan.dp"] == 1  # none kept up: the best of those
    table, _ = rows_table(rows, ["plan.dp"], "serving", "usd_per_mtok", rows[1], 10, direction="min", width=120)
    cells, reasons = status_cells(rows)
    assert cells == ["overloaded [1]", "ok", "ok"] and reasons[0].startswith("overloaded: its queue grew")
    assert [c for c in table.columns[0].cells] == ["2", "4", "1"]  # the overloaded point last


def test_sweep_lines_start_at_zero_keep_the_legend_off_the_points_and_a_slice_is_titled(tmp_path, monkeypatch):
    from moesim import plots
    from moesim.cli import main

    rows = cf_rows()
    fig = plots.plot_sweep("cost-vs-cf", rows, title="t")
    ax = fig.axes[0]
    assert ax.get_ylim()[0] == 0  # costs from 0
    legend = ax.get_legend()
    if legend is not None:  # beside the axes, not over them
        assert legend.get_bbox_to_anchor().x0 >= ax.get_position().x1 * fig.bbox.width - 1
    out = tmp_path / "sw"
    assert main(["sweep", str(TRAIN), "--capacity-factor", "1.0,1.25", "--experts", "8,16", "--out", str(out)]) == 0
    titles, draw = [], plots.plot_sweep
    monkeypatch.setattr(plots, "plot_sweep", lambda kind, rows, title="", **kw: titles.append(title) or
                        draw(kind, rows, title=title, **kw))
    assert main(["plot", str(out), "--kind", "cost-vs-cf", "--where", "model.n_experts=8", "--out",
                 str(tmp_path / "c"), "--format", "png"]) == 0
    assert titles[-1].endswith("(model.n_experts=8)")  # which slice the plot shows


def test_a_sweep_whose_steps_wait_for_the_host_says_so():
    from moesim.sweep_table import host_floor_note

    rows = [{"status": "ok", "host_wait_s": 0.19, "step_time_s": 0.26}, {"status": "ok", "host_wait_s": 0.19,
                                                                          "step_time_s": 0.27}]
    assert "wait for the host for 70%-73% of these steps" in host_floor_note(rows)
    assert "plan.moe_layer_host_us=0" in host_floor_note(rows)
    assert host_floor_note([{"status": "ok", "host_wait_s": 0.01, "step_time_s": 1.0}]) == ""
    # one point at the floor is enough: it holds the sweep's step times level (a capacity-factor sweep at 20 %, 16 %, 2 %)
    level = [{"status": "ok", "host_wait_s": w, "step_time_s": 1.67} for w in (0.334, 0.263, 0.035)]
    assert "2%-20% of these steps" in host_floor_note(level)
    assert host_floor_note([{"status": "ok", "ttft_p99_s": 1.0}]) == ""  # serving rows have no host floor


def test_plans_show_each_slo_limit_they_were_held_to():
    """A serving plan held to an ITL limit shows ITL beside TTFT and TPOT (the limit that binds was invisible:
    TPOT p99 0.014 s, ITL p99 0.049 s against 0.05)."""
    from types import SimpleNamespace

    from moesim.cli_plan import _table

    row = {"plan": "dp8 tp1 pp1 ep1 batch512", "devices": 8, "hardware": "h100-sxm", "one_replica_objective": 0.1,
           "whole_plan_objective": None, "capacity_req_s": 80.0, "tokens_per_s_per_device_at_capacity": 900.0,
           "ttft_p99_s": 0.5, "tpot_p99_s": 0.014, "itl_p99_s": 0.049}
    obj = SimpleNamespace(key="usd_per_mtok_at_capacity", name="usd_per_mtok", direction="min")
    with_itl = _table([row], obj, False, 5, width=200, limits=("ttft_p99_s", "itl_p99_s"))
    heads = [str(c.header).replace("\n", " ") for c in with_itl.columns]
    assert "ITL p99 s" in heads and heads.count("TTFT p99 s") == 1
    assert "0.049" in [c._cells[0] for c in with_itl.columns if str(c.header).replace("\n", " ") == "ITL p99 s"][0]
    plain = _table([row], obj, False, 5, width=200)
    assert "ITL p99 s" not in [str(c.header).replace("\n", " ") for c in plain.columns]


def test_a_swept_field_that_changes_nothing_is_named_with_why():
    from moesim.sweep_table import inert_axes_note

    def row(cf, e, step):
        return {"status": "ok", "seed": 0, "point": cf * e, "sim_wall_s": cf, "routing.capacity_factor": cf,
                "model.n_experts": e, "step_time_s": step}

    dims = ["routing.capacity_factor", "model.n_experts"]
    rows = [row(cf, e, 1.0 + e / 100) for cf in (1.0, 2.0) for e in (64, 128)]  # cf moves nothing, experts do
    text = inert_axes_note(rows, dims)
    assert text.startswith("routing.capacity_factor (capacity applies only under routing.overflow: drop)")
    assert "model.n_experts" not in text
    rows[0]["step_time_s"] = 0.5  # one pair differs: the field did something
    assert inert_axes_note(rows, dims) == ""
    assert inert_axes_note([row(1.0, 64, 1.0)], dims) == ""  # nothing to compare


def test_a_byte_column_says_its_unit_once_in_its_cells():
    """The sweep table's header read (bytes) above cells that read 112.00 GiB."""
    from moesim.sweep_table import cell, header

    assert "(bytes)" not in header("alltoall_nvlink_bytes") and cell("alltoall_nvlink_bytes", 112 * 2**30) == \
        "112.00 GiB"
    assert header("kv_cache_bytes_per_token").endswith("(per token)")
    assert header("step_time_s").endswith("(s)")  # a unit the cells leave out stays in the header


def test_an_output_suffix_the_formats_leave_out_and_a_format_without_a_plot_are_refused(tmp_path, capsys):
    from moesim.cli import main

    out = tmp_path / "r"
    assert main(["simulate", "mixtral-8x7b-h100-train", "--out", str(out)]) == 0
    capsys.readouterr()
    assert main(["plot", str(out), "--out", str(tmp_path / "p.pdf"), "--format", "png"]) == 2
    assert "ends in .pdf, but --format is png" in capsys.readouterr().err
    assert not (tmp_path / "p.png").exists()  # it used to write p.png without a word
    assert main(["plot", str(out), "--out", str(tmp_path / "p.pdf"), "--format", "pdf"]) == 0
    assert (tmp_path / "p.pdf").exists()
    capsys.readouterr()
    assert main(["compare", str(out), str(out), "--format", "png"]) == 2
    assert "--format png: applies to the figure --plot PATH draws" in capsys.readouterr().err


def test_compare_says_when_a_saved_run_was_priced_by_another_moesim(tmp_path, capsys):
    import json

    from moesim import __version__
    from moesim.cli import main

    out = tmp_path / "r"
    assert main(["simulate", "mixtral-8x7b-h100-train", "--out", str(out)]) == 0
    doc = json.loads((out / "summary.json").read_text())
    capsys.readouterr()
    assert main(["compare", str(out), "mixtral-8x7b-h100-train"]) == 0
    assert "priced by another moesim" not in capsys.readouterr().out
    doc["moesim_version"] = "0.0.9"
    (out / "summary.json").write_text(json.dumps(doc))
    assert main(["compare", str(out), "mixtral-8x7b-h100-train"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    assert f"note: priced by another moesim than this one ({__version__}): r (0.0.9)" in text
    assert main(["compare", str(out), "mixtral-8x7b-h100-train", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["moesim_versions"] == ["0.0.9", __version__]
