"""``moesim compare``: runs side by side, the figures that differ, their change against the first run and
whether it is for the better by the metric's registered direction."""

from __future__ import annotations

import json
import math

import pytest

from moesim.cli import main
from moesim.compare import compare_rows


def test_rows_are_the_differing_figures_with_change_and_direction():
    a = {"step_time_s": 10.0, "tokens_per_s": 100.0, "devices": 8, "fits": True, "mfu": 0.5,
         "fits_reason": "x", "offered_requests_per_s": math.nan, "zero": 0.0}
    b = {"step_time_s": 12.0, "tokens_per_s": 125.0, "devices": 8, "fits": False, "mfu": 0.5,
         "fits_reason": "y", "offered_requests_per_s": math.nan, "zero": 1.0, "extra_s": 3.0}
    rows = {r.key: r for r in compare_rows([a, b])}
    assert set(rows) == {"step_time_s", "tokens_per_s", "fits", "zero", "extra_s"}  # equal, NaN-equal, sentences out
    assert rows["step_time_s"].changes == [None, pytest.approx(0.2)] and rows["step_time_s"].better == [None, False]
    assert rows["tokens_per_s"].changes == [None, pytest.approx(0.25)] and rows["tokens_per_s"].better == [None, True]
    assert rows["fits"].changes == [None, None]  # a flag has no relative change
    assert rows["zero"].changes == [None, None]  # nothing to divide by
    assert rows["extra_s"].values == [None, 3.0] and rows["extra_s"].changes == [None, None]
    every = {r.key for r in compare_rows([a, b], every=True)}
    assert {"devices", "mfu", "offered_requests_per_s"} <= every and "fits_reason" not in every
    with pytest.raises(ValueError):
        compare_rows([a])


def test_a_saved_result_against_a_scenario(tmp_path, capsys):
    assert main(["simulate", "mixtral-8x7b-h100-serve", "--out", str(tmp_path / "r"), "--json"]) == 0
    capsys.readouterr()
    assert main(["compare", str(tmp_path / "r"), "mixtral-8x7b-h100-serve-tp2", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["runs"] == ["mixtral-8x7b-h100-serve", "mixtral-8x7b-h100-serve-tp2"] and doc["kind"] == "serving"
    rows = {r["key"]: r for r in doc["rows"]}
    tpot = rows["tpot_p99_s"]
    assert tpot["values"][1] < tpot["values"][0] and tpot["change"][1] < 0 and tpot["better"] == [None, True]
    assert main(["compare", str(tmp_path / "r"), str(tmp_path / "r" / "summary.json")]) == 0
    assert "every summary figure is the same in these runs" in capsys.readouterr().out


def test_a_saved_result_with_malformed_inputs_is_one_line(tmp_path, capsys):
    assert main(["simulate", "mixtral-8x7b-h100-train", "--out", str(tmp_path / "r"), "--json"]) == 0
    capsys.readouterr()
    doc = json.loads((tmp_path / "r" / "summary.json").read_text())
    for bad in ("x", {"overrides": "plan.dp=8"}):
        (tmp_path / "r" / "summary.json").write_text(json.dumps({**doc, "inputs": bad}))
        assert main(["compare", str(tmp_path / "r"), "mixtral-8x7b-h100-train"]) == 2
        err = capsys.readouterr().err
        assert "not a moesim result (inputs must map scenario and a list of overrides)" in err
        assert "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_bad_runs_are_one_line_and_exit_2(tmp_path, capsys):
    assert main(["compare", "mixtral-8x7b-h100-train"]) == 2
    assert "give two or more" in capsys.readouterr().err
    assert main(["compare", "mixtral-8x7b-h100-train", "mixtral-8x7b-h100-serve"]) == 2
    err = capsys.readouterr().err
    assert "the runs are of different kinds" in err and "Traceback" not in err
    (tmp_path / "empty").mkdir()
    assert main(["compare", "mixtral-8x7b-h100-train", str(tmp_path / "empty")]) == 2
    assert "a folder without summary.json" in capsys.readouterr().err


def test_plot_draws_each_headline_figure_for_each_run(tmp_path, capsys):
    from moesim.compare import compare_rows
    from moesim.plot_compare import HEADLINE, compare_figure

    a = {"step_time_s": 10.0, "tokens_per_s_per_device": 100.0, "mfu": 0.5, "peak_memory_gib": 70.0}
    b = {"step_time_s": 8.0, "tokens_per_s_per_device": 125.0, "mfu": 0.6, "peak_memory_gib": 75.0}
    fig = compare_figure(["a", "b"], compare_rows([a, b], every=True), "training")
    ax = fig.axes[0]
    assert len(ax.patches) == 2 * 4  # one bar per run and figure, in HEADLINE's order
    assert [t.get_text().split("\n")[0] for t in ax.get_yticklabels()][0].startswith("step time")
    widths = [p.get_width() for p in ax.patches]
    assert widths[:4] == [1.0] * 4 and widths[4:] == pytest.approx([0.8, 1.25, 1.2, 75 / 70])
    assert set(HEADLINE) == {"training", "serving"}
    with pytest.raises(ValueError, match="no headline figure"):
        compare_figure(["a", "b"], compare_rows([{"x": 1.0}, {"x": 2.0}], every=True), "training")

    assert main(["compare", "mixtral-8x7b-h100-train", "mixtral-8x22b-h100-train", "--plot", str(tmp_path / "c"),
                 "--format", "png"]) == 0
    assert (tmp_path / "c.png").stat().st_size > 10_000 and not (tmp_path / "c.svg").exists()
    capsys.readouterr()
    assert main(["compare", "mixtral-8x7b-h100-train", "mixtral-8x22b-h100-train", "--plot", str(tmp_path / "d"),
                 "--format", "gif"]) == 2
    assert "--format 'gif'" in capsys.readouterr().err and not list(tmp_path.glob("d.*"))


def test_step_rows_put_the_parts_side_by_side_in_the_anatomys_order():
    from moesim.compare import step_rows
    from moesim.engine.training.anatomy import PARTS

    a = {"part": ["attention", "experts", "optimizer", "total"], "seconds": [1.0, 4.0, 0.1, 5.1]}
    b = {"part": ["attention", "experts", "zero_gather_exposed", "optimizer", "total"],
         "seconds": [1.0, 3.0, 0.5, 0.1, 4.6]}
    rows = step_rows([a, b], PARTS)
    assert [r.key for r in rows] == ["attention", "experts", "zero_gather_exposed", "optimizer", "total"]
    got = {r.key: r for r in rows}
    assert got["zero_gather_exposed"].values == [0.0, 0.5]  # a part a run leaves out cost it nothing
    assert got["experts"].changes == [None, pytest.approx(-0.25)] and got["experts"].better == [None, True]
    assert got["total"].changes == [None, pytest.approx(4.6 / 5.1 - 1)] and not got["attention"].differs


@pytest.mark.usefixtures("eighty_columns")
def test_compare_says_where_the_step_time_changed(tmp_path, capsys):
    assert main(["simulate", "mixtral-8x7b-h100-train", "--out", str(tmp_path / "z1"), "--json"]) == 0
    assert main(["simulate", "mixtral-8x7b-h100-train", "-s", "plan.zero_stage=3", "--out", str(tmp_path / "z3"),
                 "--json"]) == 0
    capsys.readouterr()
    assert main(["compare", str(tmp_path / "z1"), str(tmp_path / "z3"), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    # one scenario twice: each column is named by its folder, and the saved overrides say what differs
    assert doc["runs"] == ["z1", "z3"] and doc["overrides"] == [[], ["plan.zero_stage=3"]]
    step = {r["part"]: r for r in doc["step"]}
    rows = {r["key"]: r for r in doc["rows"]}
    assert step["total"]["seconds"] == pytest.approx(rows["step_time_s"]["values"])
    gathers = step["zero_gather_exposed"]
    assert gathers["seconds"][1] > gathers["seconds"][0] and gathers["better"] == [None, False]
    assert step["experts"]["change"][1] == pytest.approx(0.0)  # ZeRO-3 moves the gathers, not the experts' GEMMs
    assert main(["compare", str(tmp_path / "z1"), str(tmp_path / "z3")]) == 0
    printed = capsys.readouterr().out
    assert "where the step goes, part by part (s)" in printed and "ZeRO parameter gathers" in printed
    assert "z3: --set plan.zero_stage=3" in printed
    assert main(["simulate", "mixtral-8x7b-h100-train", "-s", "plan.recompute=full", "--out", str(tmp_path / "rc"),
                 "--json"]) == 0
    capsys.readouterr()
    assert main(["compare", str(tmp_path / "z1"), str(tmp_path / "rc")]) == 0
    printed = capsys.readouterr().out
    assert "activation recompute" in printed and "compute_recompute_s" not in printed  # once, in the parts table
    (tmp_path / "z3" / "train_step.csv").unlink()  # as saved by a moesim without step tables: figures only
    doc = json.loads((tmp_path / "z3" / "summary.json").read_text())
    doc["files"] = [n for n in doc["files"] if n != "train_step.csv"]  # which that moesim's save did not list
    (tmp_path / "z3" / "summary.json").write_text(json.dumps(doc))
    assert main(["compare", str(tmp_path / "z1"), str(tmp_path / "z3")]) == 0
    assert "part by part" not in capsys.readouterr().out


def test_the_plot_stacks_each_runs_step_below_the_headline_figures():
    from moesim.compare import step_rows
    from moesim.engine.serving.anatomy import PART_LABELS, PARTS
    from moesim.plot_compare import compare_figure

    a = {"output_tokens_per_s_per_device": 100.0, "tpot_p99_s": 0.03}
    b = {"output_tokens_per_s_per_device": 80.0, "tpot_p99_s": 0.02}
    steps = [{"part": ["attention", "routed_experts", "total"], "seconds": [0.004, 0.02, 0.024]},
             {"part": ["attention", "routed_experts", "tp_comm", "total"], "seconds": [0.002, 0.01, 0.004, 0.016]}]
    fig = compare_figure(["a", "b"], compare_rows([a, b], every=True), "serving", parts=step_rows(steps, PARTS),
                         part_labels=PART_LABELS)
    top, low = fig.axes[:2]
    assert len(top.patches) == 2 * 2 and low.get_xlabel() == "ms in the mean decode step, part by part"
    ends = {}
    for bar in low.patches:  # each run's bar ends at its step
        ends[round(bar.get_y() + bar.get_height() / 2)] = max(ends.get(round(bar.get_y() + bar.get_height() / 2), 0),
                                                              bar.get_x() + bar.get_width())
    assert [ends[0], ends[1]] == pytest.approx([24.0, 16.0])
    assert "tensor-parallel all-reduces" in [t.get_text() for t in low.get_legend().get_texts()]


def test_the_step_parts_are_not_drawn_in_the_runs_colours():
    """The runs are C0, C1, ... above; a part drawn in a run's colour below would read as that run."""
    from matplotlib.colors import to_hex

    from moesim.compare import step_rows
    from moesim.engine.serving.anatomy import PART_LABELS, PARTS
    from moesim.plot_compare import compare_figure

    a = {"output_tokens_per_s_per_device": 100.0, "tpot_p99_s": 0.03}
    b = {"output_tokens_per_s_per_device": 80.0, "tpot_p99_s": 0.02}
    steps = [{"part": ["attention", "routed_experts", "total"], "seconds": [0.004, 0.02, 0.024]},
             {"part": ["attention", "routed_experts", "total"], "seconds": [0.002, 0.01, 0.012]}]
    top, low = compare_figure(["a", "b"], compare_rows([a, b], every=True), "serving", parts=step_rows(steps, PARTS),
                              part_labels=PART_LABELS).axes[:2]
    runs = {to_hex(bar.get_facecolor()) for bar in top.patches}
    parts = {to_hex(bar.get_facecolor()) for bar in low.patches}
    assert len(runs) == 2 and len(parts) == 2 and not runs & parts


def test_a_part_keeps_its_colour_from_plot_to_plot():
    """Slides put side by side must agree: attention is one colour whether a sweep's breakdown stacks it with
    two parts or five, and in compare's steps and a result's step; a serving step's routed experts are a
    training step's experts, and no part takes a run's colour (C0, C1, ...)."""
    from matplotlib.colors import to_hex

    from moesim.engine.training.anatomy import PART_LABELS as TRAIN
    from moesim.plot_breakdown import sweep_breakdown
    from moesim.plot_step import _parts_figure
    from moesim.plots import part_colour

    def legend_colours(fig) -> dict[str, str]:
        leg = fig.axes[0].get_legend()
        return {t.get_text(): to_hex(h.get_facecolor()) for t, h in zip(leg.get_texts(), leg.legend_handles)}

    from moesim.engine.training.anatomy import COMPUTE_PART_KEYS

    zero = dict.fromkeys(COMPUTE_PART_KEYS, 0.0)  # a result carries every compute part, 0 where none is spent
    few = {**zero, "compute_attention_s": 1.0, "compute_experts_s": 2.0}
    many = {**few, "compute_router_s": 0.1, "bubble_s": 0.5, "optimizer_s": 0.2}
    a = legend_colours(sweep_breakdown([few], [], "a"))
    b = legend_colours(sweep_breakdown([many], [], "b"))
    assert a[TRAIN["attention"]] == b[TRAIN["attention"]] and a[TRAIN["experts"]] == b[TRAIN["experts"]]
    assert len(set(b.values())) == len(b)  # distinct within one plot
    step = _parts_figure({"part": ["experts", "attention", "total"], "seconds": [2.0, 1.0, 3.0],
                          "share": [2 / 3, 1 / 3, 1.0]}, TRAIN, "step", "step")
    bars = {round(bar.get_width(), 6): to_hex(bar.get_facecolor()) for bar in step.axes[0].patches}
    assert bars[min(bars)] == a[TRAIN["attention"]]  # attention's is the shorter bar, in whatever unit
    assert part_colour("routed_experts") == part_colour("compute_experts_s") == part_colour("decode_routed_experts_s")
    runs = {to_hex(f"C{i}") for i in range(10)}
    assert not runs & {to_hex(part_colour(k)) for k in [*TRAIN, "routed_experts", "host_and_launch", "made_up"]}


def test_a_negative_part_stacks_down_from_zero_and_leaves_the_others_their_lengths():
    """A net part below 0 (a datasheet device's host-and-launches figure) must not be drawn back over the parts
    before it: positive parts stack up from 0, negative ones down from it."""
    import numpy as np

    from moesim.plot_breakdown import stack_bases

    parts = [np.array([2.0, 1.0]), np.array([-0.5, 3.0]), np.array([4.0, -1.0]), np.array([-1.0, 2.0])]
    bases = stack_bases(parts)
    assert [b.tolist() for b in bases] == [[0.0, 0.0], [0.0, 1.0], [2.0, 0.0], [-0.5, 4.0]]
    tops = [b + p for b, p in zip(bases, parts)]
    # each bar spans [sum of its negatives, sum of its positives]: nothing overlaps
    assert max(t[0] for t in tops) == 6.0 and min(t[0] for t in tops) == -1.5


def test_long_run_names_share_their_leading_part_once_in_the_headers():
    """Three Mixtral serving scenarios on an 80-column terminal: headers cut to "mixtral-8x7b-h1…" told TP2 from
    TP8 no more; the shared "mixtral-8x7b-h100-" is left out (the title names the runs whole)."""
    from moesim.cli_compare import column_labels

    names = ["mixtral-8x7b-h100-serve", "mixtral-8x7b-h100-serve-tp2", "mixtral-8x7b-h100-serve-tp8"]
    assert column_labels(names) == ["serve", "serve-tp2", "serve-tp8"]
    assert column_labels(["a-x", "a-y"]) == ["a-x", "a-y"]  # short: as given
    assert column_labels(["mixtral-8x7b-h100-serve", "mixtral-8x7b-h100-serve"]) == names[:1] * 2  # would be alike
    assert column_labels(["mixtral-8x7b-h100", "mixtral-8x7b-h100-tp2"]) == ["h100", "h100-tp2"]


def test_an_overloaded_run_is_named_so_on_the_plot(tmp_path, monkeypatch):
    """An overloaded run's cost bar is cheap because its queue grew; drawn unmarked beside a run that kept up it
    read as the better buy."""
    import moesim.plot_compare as plot_compare

    for name, rate in (("calm", 20), ("flooded", 200)):
        assert main(["simulate", "mixtral-8x7b-h100-serve-online", "-s", f"workload.arrival.rate_per_s={rate}",
                     "-s", "workload.arrival.n_requests=400", "--out", str(tmp_path / name), "--json"]) == 0
    seen = []
    draw = plot_compare.compare_figure
    monkeypatch.setattr(plot_compare, "compare_figure", lambda labels, *a, **k: seen.append(labels) or draw(labels, *a, **k))
    assert main(["compare", str(tmp_path / "calm"), str(tmp_path / "flooded"), "--plot", str(tmp_path / "c"),
                 "--format", "png"]) == 0
    assert seen == [["calm", "flooded (overloaded)"]]


def test_a_share_changes_by_percentage_points(tmp_path, capsys):
    """dropped_fraction 4.96 % -> 11.69 % reads +6.73pp, not a relative +136%."""
    for cf, name in (("1.25", "a"), ("1.0", "b")):
        assert main(["simulate", "mixtral-8x7b-h100-train", "-s", f"routing.capacity_factor={cf}",
                     "--out", str(tmp_path / name), "--json"]) == 0
    capsys.readouterr()
    assert main(["compare", str(tmp_path / "a"), str(tmp_path / "b"), "--json"]) == 0
    row = {r["key"]: r for r in json.loads(capsys.readouterr().out)["rows"]}["dropped_fraction"]
    points = 100 * (row["values"][1] - row["values"][0])
    assert main(["compare", str(tmp_path / "a"), str(tmp_path / "b")]) == 0
    line = next(x for x in capsys.readouterr().out.splitlines() if "dropped_fraction" in x)
    assert f"{points:+.2f}pp" in line and "%  " not in line.split("%")[-1]


def test_runs_of_different_token_budgets_say_to_compare_per_token_costs(capsys):
    assert main(["compare", "mixtral-8x7b-qlora-1xa100", "mixtral-8x7b-qlora-m2-ultra"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "run_tokens" in text and "100,000,000" in text and "10,000,000" in text
    assert "note: these runs price different token budgets (run_tokens): compare usd_per_mtok" in text
