"""Why a validation row misses: the CSV's ``why`` column, the Markdown table (whole in docs/validation-table.md)
and the README's table of the misses."""

from __future__ import annotations

from typer.testing import CliRunner

from moesim.validation import DEFAULT_CSV, MISS, SCENARIO_PREFIX, Check, read_table
from moesim.validation_table import (
    MISSES_BEGIN,
    MISSES_END,
    TABLE_BEGIN,
    TABLE_END,
    fmt_value,
    main,
    markdown_row,
    markdown_table,
    missed_ids,
    misses_table,
    parse_rows,
)
from tests.conftest import ROOT
from tests.test_sweep import _app, invoke
from tests.test_validation import TRAIN, write


def _check(id_: str, error: float | None, why: str = "", simulated: bool = True) -> Check:
    predicted = None if error is None else 100.0 * (1 + error)
    return Check(id=id_, quantity=f"{id_} tokens/s", published=100.0, unit="tokens/s", source="s",
                 metric="tokens_per_s", predicted=predicted, error=error, simulated=simulated, why=why)


def test_values_print_at_the_precision_of_their_size():
    assert [fmt_value(x) for x in (16848.27, 468.2, 39.71, 2.764)] == ["16,848", "468", "39.7", "2.76"]


def test_markdown_rows_carry_the_reason_and_leave_datasheet_rows_out():
    miss = _check("INF-30", 1.161, why="kernels | unmeasured")
    hit = _check("INF-01", 0.055)
    sheet = _check("HW-01", 0.0, simulated=False)
    failed = _check("INF-99", None, why="")
    assert miss.missed and not hit.missed and not failed.missed and MISS == 0.25
    table = markdown_table([miss, hit, sheet, failed])
    rows = parse_rows(table)
    assert list(rows) == ["INF-30", "INF-01", "INF-99"]  # CSV order, datasheet row left out
    assert rows["INF-30"] == {"what": "INF-30 tokens/s", "published": "100", "moesim": "216",
                              "error": "+116.1 %", "why": "kernels / unmeasured"}  # a '|' cannot break the row
    assert rows["INF-01"]["why"] == "" and rows["INF-01"]["error"] == "+5.5 %"
    assert rows["INF-99"]["moesim"] == "failed" and rows["INF-99"]["error"] == "-"
    assert markdown_row(hit).count(" | ") == 5


def test_shipped_whys_are_one_short_line():
    for r in read_table(DEFAULT_CSV):
        why = r.get("why", "")
        assert "\n" not in why and len(why) <= 140, r["id"]
        if why:
            assert not r["metric"].startswith(SCENARIO_PREFIX), r["id"]  # datasheet rows never miss


def test_docs_table_is_the_csv_with_a_reason_for_every_miss():
    """docs/validation-table.md lists every simulated row in the CSV's order with its quantity, published
    value and reason; a row it shows more than 25 % off must give a reason."""
    csv_rows = [r for r in read_table(DEFAULT_CSV) if not r["metric"].startswith(SCENARIO_PREFIX)]
    shown = parse_rows((ROOT / "docs" / "validation-table.md").read_text())
    assert list(shown) == [r["id"] for r in csv_rows]
    for r in csv_rows:
        cells = shown[r["id"]]
        assert cells["what"] == r["quantity"], r["id"]
        assert cells["published"] == fmt_value(float(r["published"])), r["id"]
        assert cells["why"] == r.get("why", ""), r["id"]
        error = float(cells["error"].removesuffix(" %")) / 100
        if abs(error) > MISS:
            assert r.get("why"), f"{r['id']} misses by {cells['error']} in the README and its CSV row gives no why"


def test_readme_shows_the_misses_of_the_docs_table_row_for_row():
    """The README's table is the docs table's rows more than 25 % off at the last saved validate run
    (exact errors: INF-409, -25.006 %, reads -25.0 % and is one), cell for cell, in the same order."""
    docs = (ROOT / "docs" / "validation-table.md").read_text()
    readme = (ROOT / "README.md").read_text()
    between = readme.split(MISSES_BEGIN + "\n")[1].split(MISSES_END)[0].rstrip("\n")
    missed = missed_ids()
    assert between == misses_table(docs, missed)
    assert set(parse_rows(between)) == missed and len(missed) >= 1


def test_the_writer_puts_the_table_in_docs_and_its_misses_in_the_readme(tmp_path, monkeypatch):
    import moesim.validation_table as vt

    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "validation-table.md").write_text(f"intro\n{TABLE_BEGIN}\nold\n{TABLE_END}\nend\n")
    (tmp_path / "README.md").write_text(f"top\n{MISSES_BEGIN}\nold\n{MISSES_END}\nbottom\n")
    checks = [_check("A-1", 0.05), _check("A-2", -0.30, why="slow"), _check("A-3", 0.2501, why="fast")]
    table = tmp_path / "t.md"
    table.write_text("summary line\n" + markdown_table(checks) + "\n")
    monkeypatch.setattr(vt, "missed_ids", lambda: {"A-2", "A-3"})
    main([str(table), str(tmp_path)])
    docs = (tmp_path / "docs" / "validation-table.md").read_text()
    assert docs.startswith("intro\n") and docs.endswith("end\n") and list(parse_rows(docs)) == ["A-1", "A-2", "A-3"]
    readme = (tmp_path / "README.md").read_text()
    assert readme.startswith("top\n") and readme.endswith("bottom\n") and list(parse_rows(readme)) == ["A-2", "A-3"]


def test_markdown_option_prints_the_table_and_refuses_json_too(tmp_path):
    p = write(tmp_path, f"C,bw,{TRAIN},,{SCENARIO_PREFIX}hardware.device.mem_bw_gbps,,,3000,GB/s,src\n")
    result = CliRunner().invoke(_app(), ["validate", str(p), "--markdown"])
    assert result.exit_code == 0 and result.stdout.startswith("| row | what |")
    assert "C |" not in result.stdout  # the datasheet row is not in the table
    assert invoke(["validate", str(p), "--markdown", "--json"]) == 2


def test_readme_documents_every_column_a_validation_csv_can_have():
    from moesim.validation import REQUIRED

    readme = (ROOT / "README.md").read_text()
    for column in (*REQUIRED, "overrides", "transform", "scale", "notes", "why"):
        assert f"`{column}`" in readme, column


def _miss_patterns(text: str) -> list[dict[str, str]]:
    """The README's table of miss patterns: one dict per pattern (its cells by column name)."""
    lines = text.splitlines()
    head = next(i for i, line in enumerate(lines) if line.startswith("| pattern | rows over 25 % |"))
    columns = [c.strip() for c in lines[head].strip("|").split("|")]
    out = []
    for line in lines[head + 2:]:
        if not line.startswith("|"):
            break
        out.append(dict(zip(columns, (c.strip() for c in line.strip("|").split("|")))))
    return out


def test_readme_miss_patterns_cover_every_miss_once_with_its_direction():
    """The summary table of miss patterns lists each row more than 25 % off exactly once, counts its
    optimistic rows (``Check.optimistic``: a prediction better than the run by its metric's direction) and
    its pessimistic ones, as the sentence above it does, and states its rows' smallest and largest errors."""
    import re

    from moesim.validation_results import read_results

    readme = (ROOT / "README.md").read_text()
    rows = {r["id"]: r for r in read_table(DEFAULT_CSV)}
    missed = {}  # id -> optimistic, from the last full validate (tests/test_validation_results.py keeps it fresh)
    errors = {}
    for k in read_results():
        errors[k.id] = k.error
        if abs(k.error) > MISS:
            r = rows[k.id]
            missed[k.id] = Check(k.id, "", 1.0, "", "", r["metric"], error=k.error,
                                 transform=r.get("transform") or "").optimistic
    patterns = _miss_patterns(readme)
    listed = [id_ for p in patterns for id_ in re.findall(r"[A-Z]+-\d+", p["rows over 25 %"])]
    assert len(listed) == len(set(listed)), "a row is listed under two patterns"
    assert set(listed) == set(missed), (sorted(set(missed) - set(listed)), sorted(set(listed) - set(missed)))
    for p in patterns:
        ids = re.findall(r"[A-Z]+-\d+", p["rows over 25 %"])
        counts = dict(re.findall(r"(optimistic|pessimistic) \((\d+)\)", p["moesim"]))
        assert int(counts.get("optimistic", 0)) == sum(missed[i] for i in ids), p["pattern"]
        assert int(counts.get("pessimistic", 0)) == sum(not missed[i] for i in ids), p["pattern"]
        assert p["what is known"], p["pattern"]
        # the error column names the listed rows' extremes (to the point, as the README rounds them)
        stated = [float(x) for x in re.findall(r"[+-]?\d+(?:\.\d+)?", p["error"])]
        errs = [100 * errors[i] for i in ids]
        for end in (min(errs), max(errs)):
            assert any(abs(abs(s) - abs(end)) <= 1.0 for s in stated), (p["pattern"], p["error"], round(end, 1))
    optimistic = sum(missed.values())
    assert (f"of the {len(missed)} rows over 25 %, {optimistic} predict a better run than\nthe one measured "
            f"(more tokens a second, less time or memory) and {len(missed) - optimistic} a worse one") in readme
    assert f'("{len(missed)} rows over 25 % ({optimistic} optimistic)")' in readme
