"""``moesim compare`` prints no meaningless percentage: two figures within float residue of zero are the same (no
change, no better or worse), and a figure that goes from, to or across zero has no percentage (its difference
instead), in the table and in ``--json``."""

from __future__ import annotations

import math

import pytest
from rich.console import Console

from moesim.cli_compare import ACROSS_ZERO, _table
from moesim.compare import compare_rows, step_rows
from moesim.formatting import fmt_value


def _text(rows, labels=("a", "b")) -> str:
    console = Console(width=200, record=True, file=open("/dev/null", "w"), color_system=None)  # noqa: SIM115
    console.print(_table("t", "quantity", list(labels), rows, lambda r, v: fmt_value(r.key, v)))
    return console.export_text()


def _line(text: str, key: str) -> str:
    return next(ln for ln in text.splitlines() if f" {key} " in ln)


def test_float_residue_around_zero_is_the_same_figure():
    a = {"queue_growth_requests": -3.6e-16, "step_time_s": 1.0}
    b = {"queue_growth_requests": 4.0e-16, "step_time_s": 2.0}
    assert [r.key for r in compare_rows([a, b])] == ["step_time_s"]  # not a difference
    row = {r.key: r for r in compare_rows([a, b], every=True)}["queue_growth_requests"]
    assert not row.differs and row.changes == [None, 0.0] and row.better == [None, None]
    line = _line(_text([row]), "queue_growth_requests")
    assert "%" not in line and "(" not in line


@pytest.mark.parametrize("first, then, better", [(1.043, -5.592, True), (-0.149, 0.115, False), (0.0, 6.8, False),
                                                 (2.5, 0.0, True), (1e-17, 3.0, False)])
def test_a_change_from_to_or_across_zero_has_no_percentage(first, then, better):
    """queue_growth_requests (less is better) 1.043 -> -5.592 is no -636.2 %: the difference says how far, the
    direction which way."""
    row = compare_rows([{"queue_growth_requests": first}, {"queue_growth_requests": then}])[0]
    assert row.changes == [None, None] and row.better == [None, better]
    text = _text([row])
    line = _line(text, "queue_growth_requests")
    assert "%" not in line
    diff = then - (0.0 if abs(first) < 1e-9 else first)
    assert f"({'+' if diff > 0 else '-'}{fmt_value('queue_growth_requests', abs(diff))})" in line
    assert ACROSS_ZERO in " ".join(text.split())


def test_a_change_of_one_sign_is_relative_to_the_first_values_size():
    """-2 -> -4 went down by the first's size: -100 %, not +100 %; less is better, so better."""
    row = compare_rows([{"queue_growth_requests": -2.0}, {"queue_growth_requests": -4.0}])[0]
    assert row.changes == [None, pytest.approx(-1.0)] and row.better == [None, True]
    assert "-100.0%" in _line(_text([row]), "queue_growth_requests")
    row = compare_rows([{"step_time_s": 10.0}, {"step_time_s": 12.0}])[0]  # the ordinary case as before
    assert row.changes == [None, pytest.approx(0.2)] and row.better == [None, False]
    assert "+20.0%" in _line(_text([row]), "step_time_s")


def test_a_share_from_zero_changes_by_points_and_nan_or_a_flag_has_no_mark():
    rows = {r.key: r for r in compare_rows([{"dropped_fraction": 0.0, "fits": True, "ttft_p99_s": math.nan},
                                            {"dropped_fraction": 0.05, "fits": False, "ttft_p99_s": 1.0}])}
    assert rows["dropped_fraction"].changes == [None, None] and rows["dropped_fraction"].better == [None, False]
    text = _text(list(rows.values()))
    assert "+5.00pp" in _line(text, "dropped_fraction")
    assert "(" not in _line(text, "fits") and "(" not in _line(text, "ttft_p99_s")
    assert rows["ttft_p99_s"].better == [None, None]


def test_step_parts_of_float_residue_are_unchanged_and_a_new_part_shows_its_time():
    a = {"part": ["experts", "host", "total"], "seconds": [4.0, 3e-17, 4.0]}
    b = {"part": ["experts", "host", "total"], "seconds": [4.0, -2e-17, 4.0]}
    rows = step_rows([a, b])
    assert not any(r.differs for r in rows) and all(r.better == [None, None] for r in rows)
    c = {"part": ["experts", "gathers", "total"], "seconds": [4.0, 0.5, 4.5]}
    got = {r.key: r for r in step_rows([a, c])}
    assert got["gathers"].changes == [None, None] and got["gathers"].better == [None, False]


def test_json_says_no_change_and_no_better_for_residue(tmp_path, capsys):
    """Two saved runs whose queue growth is float residue: --json gives no change and no better or worse."""
    import json

    from moesim.cli import main

    assert main(["simulate", "mixtral-8x7b-h100-train", "--out", str(tmp_path / "a"), "--json"]) == 0
    capsys.readouterr()
    key = "bubble_fraction"  # less is better: the residue must not read as better
    for name, value in (("b", 4.0e-16), ("c", -3.6e-16)):
        (tmp_path / name).mkdir()
        for f in (tmp_path / "a").iterdir():
            (tmp_path / name / f.name).write_bytes(f.read_bytes())
        d = json.loads((tmp_path / name / "summary.json").read_text())
        d["summary"][key] = value
        (tmp_path / name / "summary.json").write_text(json.dumps(d))
    assert main(["compare", str(tmp_path / "b"), str(tmp_path / "c"), "--json", "--all"]) == 0
    rows = {r["key"]: r for r in json.loads(capsys.readouterr().out)["rows"]}
    assert rows[key]["change"] == [None, 0.0] and rows[key]["better"] == [None, None]
    assert main(["compare", str(tmp_path / "b"), str(tmp_path / "c"), "--json"]) == 0
    assert key not in {r["key"] for r in json.loads(capsys.readouterr().out)["rows"]}  # the same figure
