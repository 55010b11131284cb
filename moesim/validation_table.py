"""The validation table as Markdown, as the README shows it (``moesim validate --markdown``).

One row per simulated check, in the CSV's order: id, what was measured, the published value,
moesim's prediction, the signed error and the one-line reason from the CSV's ``why`` column
(required of every row that misses by more than :data:`moesim.validation.MISS`; rows nearer
the mark may give one too). Datasheet rows (``scenario:`` metrics, read from a preset, not simulated)
are left out, as they are of the headline median.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from moesim.validation import Check

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
