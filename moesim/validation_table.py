"""The validation table as Markdown (``moesim validate --markdown``), whole in docs/validation-table.md and
its misses in the README.

One row per simulated check, in the CSV's order: id, what was measured, the published value,
moesim's prediction, the signed error and the one-line reason from the CSV's ``why`` column
(required of every row that misses by more than :data:`moesim.validation.MISS`; rows nearer
the mark may give one too). Datasheet rows (``scenario:`` metrics, read from a preset, not simulated)
are left out, as they are of the headline median. After a change that moves predictions::

    moesim validate --markdown > /tmp/table.md
    python -m moesim.validation_table /tmp/table.md   # rewrites docs/validation-table.md and the README's misses

The README shows the rows more than :data:`~moesim.validation.MISS` off (:func:`misses_table`), between
the markers ``<!-- validation:misses -->`` and ``<!-- /validation:misses -->``; the docs file, every row.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from moesim.doc_blocks import replace_between
from moesim.validation import MISS, Check

HEADER = "| row | what | published | moesim | error | why it misses |\n|---|---|---|---|---|---|"
ROW_RE = re.compile(r"^\| ([A-Z]+-\d+) \| (.*) \| (.*) \| (.*) \| (.*) \| (.*) \|$")


def fmt_value(x: float) -> str:
    """A value at the precision the table shows: 16,848 / 468 / 39.7 / 2.76."""
    a = abs(x)
    if a >= 1000:
        return f"{x:,.0f}"
    if a >= 100:
        return f"{x:.0f}"
    if a >= 10:
        return f"{x:.1f}"
    return f"{x:.2f}"


def fmt_error(error: float | None) -> str:
    """``+5.5 %``; ``-`` without an error."""
    return "-" if error is None else f"{100 * error:+.1f} %"


def markdown_row(c: Check) -> str:
    """One check as a table row; a row that could not run says ``failed``."""
    predicted = fmt_value(c.predicted) if c.predicted is not None else "failed"
    cells = [c.id, c.quantity, fmt_value(c.published), predicted, fmt_error(c.error), c.why]
    return "| " + " | ".join(cell.replace("|", "/") for cell in cells) + " |"


def markdown_table(checks: Iterable[Check]) -> str:
    """The header and one row per simulated check."""
    return "\n".join([HEADER] + [markdown_row(c) for c in checks if c.simulated])


def parse_rows(text: str) -> dict[str, dict[str, str]]:
    """The table rows found in ``text`` (e.g. the README): id -> its cells by column name."""
    rows = {}
    for line in text.splitlines():
        m = ROW_RE.match(line)
        if m:
            rows[m.group(1)] = dict(zip(("what", "published", "moesim", "error", "why"), m.groups()[1:]))
    return rows


MISSES_BEGIN, MISSES_END = "<!-- validation:misses -->", "<!-- /validation:misses -->"
TABLE_BEGIN, TABLE_END = "<!-- validation:table -->", "<!-- /validation:table -->"


def table_lines(text: str) -> list[str]:
    """The header and rows of the validation table found in ``text`` (Markdown)."""
    lines = text.splitlines()
    start = next((i for i, line in enumerate(lines) if line.startswith(HEADER.split("\n")[0])), None)
    if start is None:
        raise ValueError("no validation table (the header moesim validate --markdown prints) in the text")
    end = start
    while end < len(lines) and lines[end].startswith("|"):
        end += 1
    return lines[start:end]


def missed_ids() -> set[str]:
    """Ids of the rows more than :data:`MISS` off at the last saved validate run (``validation_results``;
    exact errors: the table rounds them to 0.1 %, so a row 25.006 % off reads ``-25.0 %`` there)."""
    from moesim.validation_results import read_results

    return {k.id for k in read_results() if abs(k.error) > MISS}


def misses_table(table: str, missed: set[str]) -> str:
    """The rows of a validation table (``markdown_table``'s text) whose ids are in ``missed``, with its header."""
    rows = table_lines(table)
    return "\n".join(rows[:2] + [line for line in rows[2:] if ROW_RE.match(line).group(1) in missed])


def main(argv: list[str] | None = None) -> None:
    """``python -m moesim.validation_table TABLE.md [ROOT]``: write the table (``moesim validate --markdown``'s
    output) into ROOT/docs/validation-table.md whole and its misses (by the saved results of the same run,
    ``validate --save-results``) into ROOT/README.md."""
    import sys
    from pathlib import Path

    from moesim.fileio import atomic_write_text

    args = sys.argv[1:] if argv is None else argv
    if not args:
        sys.exit("usage: python -m moesim.validation_table TABLE.md [ROOT]  (TABLE.md: moesim validate --markdown's output)")
    try:
        table = "\n".join(table_lines(Path(args[0]).read_text()))
    except (OSError, ValueError) as exc:
        sys.exit(f"error: {args[0]}: {exc}")
    root = Path(args[1]) if len(args) > 1 else Path(__file__).resolve().parent.parent
    for name, (begin, end), body in (("docs/validation-table.md", (TABLE_BEGIN, TABLE_END), table),
                                     ("README.md", (MISSES_BEGIN, MISSES_END), misses_table(table, missed_ids()))):
        path = root / name
        atomic_write_text(path, replace_between(path.read_text(), begin, end, body))
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
