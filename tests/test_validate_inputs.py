"""`moesim validate` rejects bad tables and flags in one line (exit 2) before running anything, and
exits 1 when a row fails to run or the median is above --fail-above, after printing the table."""

from __future__ import annotations

import json

import pytest

from moesim.cli import main
from moesim.errors import InputError
from moesim.validation import SCENARIO_PREFIX, iter_checks, read_table, select_rows
from tests.test_front_door import _one_error_line
from tests.test_validation import TRAIN, fake_runner, write

# A datasheet row (no simulation) predicts 3350 GB/s for the H100 in TRAIN.
BW = f"{TRAIN},,{SCENARIO_PREFIX}hardware.device.mem_bw_gbps,,,3350,GB/s,src\n"
SIM = f"{TRAIN},,tokens_per_s,,,1250,tok/s,src\n"  # fake_runner predicts 1250 tok/s: error 0
BROKEN = f"{TRAIN},plan.ep=3,tokens_per_s,,,1,x,src\n"  # the scenario does not load


def _error(argv: list[str], capsys, code: int = 2) -> str:
    assert main(argv) == code
    return _one_error_line(capsys.readouterr().err)


def test_a_row_with_fewer_cells_than_the_header_names_its_line_and_id(tmp_path, capsys):
    p = write(tmp_path, "A,q," + BW + "X1,q,switch-base-128-train,,step_time_s,,,1.5\n")
    with pytest.raises(InputError, match=r"line 3 \(row X1\) has 8 cells for 10 columns"):
        read_table(p)
    assert "line 3 (row X1) has 8 cells for 10 columns" in _error(["validate", str(p)], capsys)


@pytest.mark.parametrize("value", ["0", "-5", "abc", "nan", "inf", ""])
def test_published_must_be_a_positive_number(tmp_path, capsys, value):
    p = write(tmp_path, "A,q," + BW + f"B,q,{TRAIN},,{SCENARIO_PREFIX}hardware.device.mem_bw_gbps,,,{value},GB/s,src\n")
    with pytest.raises(InputError, match=r"line 3 \(row B\): published .* must be a positive number"):
        read_table(p)
    assert f"published {value!r}: must be a positive number" in _error(["validate", str(p)], capsys)


def test_row_ids_must_be_unique_and_present(tmp_path, capsys):
    p = write(tmp_path, "A,q," + BW + "B,q," + BW + "A,q," + BW)
    assert "line 4 (row A): id A is already used on line 2; ids must be unique" in _error(["validate", str(p)], capsys)
    p = write(tmp_path, "A,q," + BW + " ,q," + BW)
    with pytest.raises(InputError, match=r"line 3 \(row \?\): id is empty"):
        read_table(p)


@pytest.mark.parametrize("value", ["nan", "-3", "0", "inf"])
def test_fail_above_must_be_a_positive_finite_percentage(tmp_path, capsys, value):
    p = write(tmp_path, "A,q," + BW)
    assert _error(["validate", str(p), "--fail-above", value], capsys) == \
        f"error: --fail-above {value}: must be a positive, finite percentage"


@pytest.mark.parametrize("value", [",", "", " , "])
def test_only_without_ids_is_an_error(tmp_path, capsys, value):
    p = write(tmp_path, "A,q," + BW)
    assert _error(["validate", str(p), "--only", value], capsys) == f"error: --only {value!r}: no ids given"
    with pytest.raises(InputError, match="no ids given"):
        list(iter_checks(p, only=[]))


def test_a_row_that_fails_to_run_exits_1_after_the_table(tmp_path, capsys):
    p = write(tmp_path, "A,q," + BW + "D,bad plan," + BROKEN)
    assert main(["validate", str(p)]) == 1
    captured = capsys.readouterr()
    out = " ".join(captured.out.split())
    assert "plan.ep = 3" in out and "; 1 row failed" in out and "1 rows" not in out
    assert _one_error_line(captured.err) == "error: 1 row failed to run (D)"
    assert main(["validate", str(p), "--json"]) == 1  # the JSON is still printed, whole
    captured = capsys.readouterr()
    assert [c["id"] for c in json.loads(captured.out)["checks"]] == ["A", "D"]
    assert main(["validate", str(p), "--only", "A"]) == 0  # the good row alone passes


def test_fail_above_gates_on_the_median(tmp_path, capsys, monkeypatch):
    import sys  # the module: the package's ``moesim.simulate`` is the function

    monkeypatch.setattr(sys.modules["moesim.simulate"], "simulate", fake_runner)
    p = write(tmp_path, "A,q," + SIM.replace("1250", "1000") + "B,q," + SIM)  # errors +25 % and 0 %
    assert main(["validate", str(p), "--fail-above", "20"]) == 0  # median 12.5 %
    assert "median |error|: 12.5 % over 2 simulated rows; 12.5 % over all rows with a prediction; 0 rows over 25 %; 0 rows failed" \
        in " ".join(capsys.readouterr().out.split())  # as one line, however rich wrapped it
    assert _error(["validate", str(p), "--fail-above", "10"], capsys, code=1) == \
        "error: median |error| 12.5 % is above --fail-above 10 %"
    p = write(tmp_path, "A,q," + SIM + "D,bad plan," + BROKEN)  # median 0 % passes; the failed row does not
    assert _error(["validate", str(p), "--fail-above", "10"], capsys, code=1) == "error: 1 row failed to run (D)"
    p = write(tmp_path, "D,bad plan," + BROKEN)
    assert _error(["validate", str(p), "--fail-above", "10"], capsys, code=1) == \
        "error: median |error| n/a is above --fail-above 10 %; 1 row failed to run (D)"


def test_misses_count_their_optimistic_rows_by_the_metric_direction(tmp_path, capsys, monkeypatch):
    """A miss is optimistic when the prediction is better than the run by its metric's direction: more
    tokens/s, less step time, and the reverse under a 1/x transform (steps/s from step_time_s)."""
    import sys

    from moesim.validation import Check, run_checks

    monkeypatch.setattr(sys.modules["moesim.simulate"], "simulate", fake_runner)  # 1250 tok/s, 0.5 s a step
    p = write(tmp_path, "A,q," + SIM.replace("1250", "500")  # +150 % tok/s: optimistic
              + "B,q," + SIM.replace("1250", "2000")  # -37.5 % tok/s: pessimistic
              + f"C,q,{TRAIN},,step_time_s,,,1.0,s,src\n"  # -50 % time: optimistic
              + f"D,q,{TRAIN},,step_time_s,1/x,,1.0,steps/s,src\n"  # 2 steps/s against 1: +100 %, optimistic
              + "E,q," + SIM + "F,q," + BW)  # no miss; a datasheet row has no direction
    checks = {c.id: c for c in run_checks(p)}
    assert {i: c.optimistic for i, c in checks.items()} == {"A": True, "B": False, "C": True, "D": True,
                                                          "E": None, "F": None}
    assert Check("G", "q", 1.0, "GiB", "s", "peak_memory_gib", predicted=0.5, error=-0.5).optimistic is True
    assert main(["validate", str(p)]) == 0
    assert "; 4 rows over 25 % (3 optimistic); 0 rows failed" in " ".join(capsys.readouterr().out.split())
    assert main(["validate", str(p), "--json"]) == 0
    assert [c["optimistic"] for c in json.loads(capsys.readouterr().out)["checks"]] == [True, False, True, True, None, None]


def _ids_of(only: list[str]) -> list[str]:
    rows = [{"id": i} for i in ("INF-9", "INF-10", "INF-11", "INF-100", "TRN-10", "APL-01")]
    return [r["id"] for r in select_rows(rows, only)]


def test_only_takes_id_ranges_as_the_docs_write_them():
    """``INF-10..11`` (or ``INF-10..INF-11``) picks the ids of that prefix numbered 10 to 11, by number
    (not INF-100); a whole id picks that row alone, anything else is a prefix; ranges, ids and prefixes mix."""
    assert _ids_of(["INF-10..11"]) == ["INF-10", "INF-11"]
    assert _ids_of(["inf-9..inf-10", "APL"]) == ["INF-9", "INF-10", "APL-01"]
    assert _ids_of(["INF-10"]) == ["INF-10"]  # a whole id: not INF-100 too
    assert _ids_of(["INF-1"]) == ["INF-10", "INF-11", "INF-100"]  # no such id: a prefix
    assert _ids_of(["TRN-1..99"]) == ["TRN-10"]


@pytest.mark.parametrize("value, message", [
    ("INF-11..9", "error: --only INF-11..9: the range runs backwards; write the lower id first (INF-9..11)"),
    ("INF-200..300", "error: --only INF-200..300: no validation row has that id, id prefix or id in that range"),
])
def test_a_bad_id_range_is_one_line(tmp_path, capsys, value, message):
    p = write(tmp_path, "INF-9,q," + BW)
    assert _error(["validate", str(p), "--only", value], capsys).startswith(message)
