"""`moesim plot` input handling: text and boolean swept fields are drawn as categories; every bad
input (an empty folder, a wrong --format, an option that does not apply, an unknown --metric) is
one line naming the option or file, exit 2, and no image written."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from moesim import plots
from moesim.cli import main
from moesim.errors import InputError
from moesim.results import SimResult, SpanRecorder
from moesim.sweep_store import ResultStore

SHIPPED = "switch-base-128-train"  # a shipped training scenario that loads and simulates in well under a second


def write_sweep(folder: Path, rows: list[dict], dims: list[str]) -> Path:
    """A sweep folder as `moesim sweep` leaves it: results.jsonl plus sweep.json naming the swept fields."""
    with ResultStore(folder, durable=False) as store:
        store.open()
        for r in rows:
            store.append(r)
    (folder / "sweep.json").write_text(json.dumps({"name": "s", "kind": "training", "dims": dims}))
    return folder


def hardware_rows() -> list[dict]:
    """A sweep of hardware=h200,a100-80gb (not alphabetical) with two seeds per point."""
    rows = []
    for point, (hw, tps) in enumerate((("h200", 900.0), ("a100-80gb", 600.0))):
        for seed in (0, 1):
            rows.append({"point": point, "status": "ok", "scenario": "s", "kind": "training", "seed": seed,
                         "hardware": hw, "tokens_per_s": tps + 10.0 * seed, "step_time_s": 1.0,
                         "peak_memory_gib": 20.0})
    return rows


def run(argv: list[str], capsys) -> tuple[int, str]:
    """Exit code and the one error line (stderr) of `moesim ARGV`."""
    rc = main(argv)
    text = capsys.readouterr().err.strip()
    return rc, text


def assert_one_line_error(rc: int, text: str, *parts: str) -> None:
    assert rc == 2, text
    assert text.startswith("error: ") and "\n" not in text and "Traceback" not in text
    for part in parts:
        assert part in text, text


def training_result() -> SimResult:
    rec = SpanRecorder()
    starts = np.arange(3) * 0.01
    rec.add("forward", 0, "compute", starts, starts + 0.008, item=np.arange(3))
    return SimResult("training", "tiny", 0, {"step_time_s": 0.03, "compute_s": 0.02}, rec.columns())


# ------------------------------------------------------------------ 1. text and boolean x values
def test_text_values_are_categories_in_sweep_order_with_the_seed_mean():
    fig = plots.plot_sweep("metric-vs-axis", hardware_rows(), metric="tokens_per_s", dims=["hardware"])
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["h200", "a100-80gb"]
    assert list(ax.lines[0].get_xdata()) == [0.0, 1.0]
    assert list(ax.lines[0].get_ydata()) == [905.0, 605.0]  # mean over seeds 0 and 1
    assert ax.get_xlabel() == "hardware"


def test_a_category_that_did_not_fit_breaks_the_line():
    """Three recompute modes where the middle one did not fit: its tick stays, the line does not join its
    neighbours across it (a joined line would read as an interpolated value)."""
    rows = [{"point": i, "status": "ok" if mode != "selective" else "invalid", "scenario": "s", "seed": 0,
             "plan.recompute": mode, **({"tokens_per_s": 100.0 + i} if mode != "selective" else {})}
            for i, mode in enumerate(["none", "selective", "full"])]
    ax = plots.plot_sweep("metric-vs-axis", rows, metric="tokens_per_s", dims=["plan.recompute"]).axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["none", "selective", "full"]
    ys = list(ax.lines[0].get_ydata())
    assert ys[0] == 100.0 and np.isnan(ys[1]) and ys[2] == 102.0


def test_the_highest_point_keeps_room_under_the_frame_and_long_labels_slant():
    """Two close costs drawn from 0 put the higher marker on the frame, half cut off; mapping ticks side by side
    ran into each other. The top keeps 6 % of room and long ticks slant, the preset named first."""
    rows = [{"point": i, "status": "ok", "scenario": "s", "seed": 0,
             "hardware": {"device": {"usd_per_hour": p}, "preset": hw}, "usd_per_mtok": c}
            for i, (hw, p, c) in enumerate((("h100-sxm", 2.0, 0.178), ("h200", 2.5, 0.22)))]
    ax = plots.plot_sweep("metric-vs-axis", rows, metric="usd_per_mtok", dims=["hardware"]).axes[0]
    assert ax.get_ylim()[0] == 0 and ax.get_ylim()[1] >= 1.06 * 0.22
    ticks = ax.get_xticklabels()
    assert ticks[0].get_text().startswith("preset=h100-sxm") and ticks[0].get_rotation() == 30


def test_the_title_says_points_are_seed_means():
    ax = plots.plot_sweep("metric-vs-axis", hardware_rows(), metric="tokens_per_s", dims=["hardware"]).axes[0]
    assert ax.get_title().endswith("(mean of 2 seeds)")


def test_more_lines_than_colours_ask_for_a_slice():
    """Eleven lines would repeat the ten colours; the error names the fields and how to slice them."""
    rows = [{"point": i, "status": "ok", "scenario": "s", "seed": 0, "model.n_experts": e, "routing.zipf_s": z,
             "tokens_per_s": 1.0 + i} for i, (e, z) in enumerate((e, z) for e in (8, 16) for z in range(11))]
    with pytest.raises(InputError, match=r"11 lines \(11 routing.zipf_s\) are too many to tell apart; pick a "
                                         r"slice with --where routing.zipf_s=VALUE"):
        plots.plot_sweep("metric-vs-axis", rows, dims=["model.n_experts", "routing.zipf_s"])
    ax = plots.plot_sweep("metric-vs-axis", [r for r in rows if r["routing.zipf_s"] < 10],
                          dims=["model.n_experts", "routing.zipf_s"]).axes[0]
    assert len(ax.lines) == 10


def test_a_heatmap_cell_without_a_run_says_so_and_residue_reads_zero():
    rows = [{"point": i, "status": "ok" if i else "invalid", "scenario": "s", "seed": 0, "model.n_experts": e,
             "routing.capacity_factor": cf, "dropped_fraction": (None if i == 0 else 2.1e-14 if i == 1 else 0.025)}
            for i, (e, cf) in enumerate((e, cf) for e in (8, 16) for cf in (1.0, 1.25))]
    fig = plots.plot_sweep("dropped-heatmap", rows, dims=["model.n_experts", "routing.capacity_factor"])
    texts = sorted(t.get_text() for t in fig.axes[0].texts)
    assert texts == ["0", "0.025", "0.025", "n/a"]


def test_boolean_values_are_categories():
    rows = [{"point": i, "status": "ok", "scenario": "s", "plan.flag": v, "tokens_per_s": 100.0 + i}
            for i, v in enumerate((True, False))]
    ax = plots.plot_sweep("metric-vs-axis", rows, dims=["plan.flag"]).axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["true", "false"]
    assert list(ax.lines[0].get_ydata()) == [100.0, 101.0]


def test_text_axis_lines_share_category_positions():
    """Two lines (one per expert count) on a text axis; a point missing from one line keeps the
    other values at their own category, not shifted left."""
    rows = []
    for point, (hw, e) in enumerate((("h200", 8), ("a100-80gb", 8), ("h200", 16), ("a100-80gb", 16))):
        rows.append({"point": point, "status": "invalid" if (hw, e) == ("h200", 16) else "ok",
                     "scenario": "s", "hardware": hw, "model.n_experts": e, "tokens_per_s": 1.0 + point})
    ax = plots.plot_sweep("metric-vs-axis", rows, dims=["hardware", "model.n_experts"]).axes[0]
    assert [line.get_label() for line in ax.lines] == ["E=8", "E=16"]
    assert list(ax.lines[0].get_xdata()) == [0.0, 1.0]
    xs, ys = np.asarray(ax.lines[1].get_xdata()), np.asarray(ax.lines[1].get_ydata())
    assert list(xs[np.isfinite(ys)]) == [1.0]  # a100-80gb only: h200's place is a gap


def test_cli_plots_a_text_swept_field(tmp_path, capsys):
    folder = write_sweep(tmp_path / "g", hardware_rows(), ["hardware"])
    rc, text = run(["plot", str(folder), "--kind", "metric-vs-axis", "--metric", "tokens_per_s",
                    "--format", "png"], capsys)
    assert rc == 0, text
    assert (folder / "metric-vs-axis.png").read_bytes().startswith(b"\x89PNG")


# ------------------------------------------------------------------ 2. the real cause first
def test_default_kind_reports_what_is_wrong_with_results(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty.txt").write_text("")
    (tmp_path / "garbage.yaml").write_text("foo: [\n")
    rc, text = run(["plot", str(tmp_path / "empty")], capsys)
    assert_one_line_error(rc, text, "no results.jsonl", "no summary.json")
    assert "--kind" not in text
    rc, text = run(["plot", str(tmp_path / "empty.txt")], capsys)
    assert_one_line_error(rc, text, "expected a sweep folder, a result folder or a scenario .yaml")
    rc, text = run(["plot", str(tmp_path / "garbage.yaml")], capsys)
    assert_one_line_error(rc, text, "garbage.yaml", "YAML error")
    assert "--kind" not in text


def test_without_kind_a_result_or_scenario_draws_its_step_breakdown(tmp_path, capsys):
    assert main(["simulate", SHIPPED, "--out", str(tmp_path / "res")]) == 0
    capsys.readouterr()
    rc, text = run(["plot", str(tmp_path / "res"), "--format", "png"], capsys)
    assert rc == 0, text
    assert (tmp_path / "res" / "breakdown.png").read_bytes().startswith(b"\x89PNG")
    rc, text = run(["plot", SHIPPED, "--format", "png", "--out", str(tmp_path / "scn")], capsys)
    assert rc == 0, text
    assert (tmp_path / "scn.png").read_bytes().startswith(b"\x89PNG")


@pytest.mark.parametrize("dims, kind", [(["model.n_experts", "routing.capacity_factor"], "throughput-vs-experts"),
                                        (["routing.capacity_factor"], "cost-vs-cf"),
                                        (["workload.arrival.rate_per_s"], "throughput-vs-load"),
                                        (["workload.trainable.rank", "plan.recompute"], "metric-vs-axis"),
                                        ([], "metric-vs-axis")])
def test_default_kind_follows_what_the_sweep_varied(dims, kind):
    assert plots.default_kind("sweep", dims) == kind
    assert plots.default_kind("result") == plots.default_kind("scenario") == "breakdown"


def test_without_kind_a_rank_sweep_draws_its_metric_against_the_rank(tmp_path, capsys):
    rows = [{"point": i, "status": "ok", "scenario": "s", "kind": "training", "seed": 0,
             "workload.trainable.rank": r, "tokens_per_s": 100.0 - r, "peak_memory_gib": 20.0 + r / 8}
            for i, r in enumerate((8, 16, 64))]
    folder = write_sweep(tmp_path / "rank", rows, ["workload.trainable.rank"])
    rc, text = run(["plot", str(folder), "--metric", "peak_memory_gib", "--format", "png"], capsys)
    assert rc == 0, text
    assert (folder / "metric-vs-axis.png").read_bytes().startswith(b"\x89PNG")
    assert not (folder / "throughput-vs-experts.png").exists()


# ------------------------------------------------------------------ 3. what was swept, and how much finished
def test_sweep_with_one_finished_point_names_the_swept_field(tmp_path, capsys):
    rows = [{"point": 0, "status": "ok", "scenario": "s", "seed": 0, "plan.dp": 4, "tokens_per_s": 5.0},
            {"point": 1, "status": "invalid", "reason": "plan.dp", "scenario": "s", "seed": 0, "plan.dp": 8}]
    folder = write_sweep(tmp_path / "g1", rows, ["plan.dp"])
    for kind in ("throughput-vs-experts", "metric-vs-axis"):
        rc, text = run(["plot", str(folder), "--kind", kind], capsys)
        assert_one_line_error(rc, text, "this sweep varies: plan.dp", "1 of 2 points finished")
        assert "nothing" not in text and "vary none" not in text
    assert not list(folder.glob("*.png")) and not list(folder.glob("*.svg"))


# ------------------------------------------------------------------ 4. --format
@pytest.mark.parametrize("fmt, message", [("", "--format '': give at least one of png, svg, pdf"),
                                          (" , ", "give at least one of png, svg, pdf"),
                                          ("png,gif", "--format 'gif': allowed: png, svg, pdf")])
def test_bad_format_writes_nothing(fmt, message, tmp_path, capsys):
    folder = write_sweep(tmp_path / "g", hardware_rows(), ["hardware"])
    rc, text = run(["plot", str(folder), "--kind", "metric-vs-axis", "--format", fmt,
                    "--out", str(tmp_path / "img")], capsys)
    assert_one_line_error(rc, text, message)
    assert not list(tmp_path.glob("img*"))


def test_save_figure_checks_every_format_before_writing(tmp_path):
    fig = plots.plot_sweep("metric-vs-axis", hardware_rows(), dims=["hardware"])
    with pytest.raises(InputError, match="'gif'"):
        plots.save_figure(fig, tmp_path / "x", ["png", "gif"])
    assert not (tmp_path / "x.png").exists()
    with pytest.raises(InputError, match="at least one"):
        plots.save_figure(fig, tmp_path / "x", [])


# ------------------------------------------------------------------ 5. options that do not apply
def test_options_that_do_not_apply_are_refused(tmp_path, capsys):
    folder = write_sweep(tmp_path / "g", hardware_rows(), ["hardware"])
    training_result().save(tmp_path / "res")
    sweep, res = str(folder), str(tmp_path / "res")
    cases = [
        (["plot", sweep, "-k", "metric-vs-axis", "--set", "plan.dp=2"], ("--set does not apply to a sweep folder", "scenario .yaml")),
        (["plot", sweep, "-k", "metric-vs-axis", "--seed", "0"], ("--seed does not apply to a sweep folder", "simulated")),
        (["plot", sweep, "-k", "breakdown", "--metric", "tokens_per_s"], ("--metric does not apply to --kind breakdown",)),
        (["plot", res, "-k", "timeline", "--metric", "nope"], ("--metric does not apply to --kind timeline", "sweep folder")),
        (["plot", res, "-k", "timeline", "--set", "plan.dp=2"], ("--set does not apply to a result folder",)),
        (["plot", res, "-k", "timeline", "--seed", "3"], ("--seed does not apply to a result folder",)),
        (["plot", res, "-k", "timeline", "--where", "hardware=h200"], ("--where does not apply to a result folder",)),
        (["plot", SHIPPED, "-k", "timeline", "--metric", "mfu"], ("--metric does not apply to --kind timeline from a scenario",)),
        (["plot", SHIPPED, "-k", "spec-speedup", "--seed", "1"], ("--seed does not apply to --kind spec-speedup",)),
    ]
    for argv, parts in cases:
        rc, text = run(argv + ["--out", str(tmp_path / "img")], capsys)
        assert_one_line_error(rc, text, *parts)
    assert not list(tmp_path.glob("img*"))


def test_set_and_seed_still_apply_to_a_simulated_scenario(tmp_path, capsys):
    rc, text = run(["plot", SHIPPED, "--kind", "breakdown", "--set", "plan.recompute=full", "--seed", "1",
                    "--format", "png", "--out", str(tmp_path / "b")], capsys)
    assert rc == 0, text
    assert (tmp_path / "b.png").stat().st_size > 5000


# ------------------------------------------------------------------ 6. --metric names
def test_unknown_metric_names_the_option_and_metrics_that_exist(tmp_path, capsys):
    folder = write_sweep(tmp_path / "g", hardware_rows(), ["hardware"])
    rc, text = run(["plot", str(folder), "-k", "metric-vs-axis", "--metric", "nope"], capsys)
    assert_one_line_error(rc, text, "--metric 'nope'", "tokens_per_s", "step_time_s", "peak_memory_gib")
    rc, text = run(["plot", str(folder), "-k", "metric-vs-axis", "--metric", "tokens_per"], capsys)
    assert_one_line_error(rc, text, "--metric 'tokens_per'", "did you mean tokens_per_s")
    rc, text = run(["plot", str(folder), "-k", "metric-vs-axis", "--metric", "hardware"], capsys)
    assert_one_line_error(rc, text, "--metric 'hardware': not a number")
    assert not list(folder.glob("*.png"))
