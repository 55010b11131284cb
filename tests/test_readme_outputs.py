"""The README's quoted outputs are what the commands print today (a changed table row or note fails here,
not in a newcomer's terminal)."""

from __future__ import annotations

import pytest

from moesim.cli import main

pytestmark = pytest.mark.usefixtures("eighty_columns")  # the README quotes an 80-column terminal


def _block_after(readme: str, marker: str) -> list[str]:
    """The lines of the first ```text block after the line starting with ``marker``."""
    lines = readme.split("\n")
    start = next(i for i, line in enumerate(lines) if line.startswith(marker))
    open_ = next(i for i in range(start, len(lines)) if lines[i].startswith("```text"))
    close = next(i for i in range(open_ + 1, len(lines)) if lines[i].startswith("```"))
    return lines[open_ + 1:close]


def _printed(argv: list[str], capsys) -> list[str]:
    assert main(argv) == 0
    return [line.rstrip() for line in capsys.readouterr().out.rstrip("\n").split("\n")]


def test_quick_start_output_is_real(root, capsys):
    quoted = _block_after((root / "README.md").read_text(), "What the first command prints at the end")
    assert _printed(["simulate", "mixtral-8x7b-h100-train"], capsys) == [line.rstrip() for line in quoted]


@pytest.mark.parametrize("scenario, marker", [("mixtral-8x7b-h100-serve-tp8", "TP8 (`moesim simulate mixtral-8x7b-h100-serve-tp8`)")])
def test_decode_step_table_is_real(root, capsys, scenario, marker):
    quoted = [line.rstrip() for line in _block_after((root / "README.md").read_text(), marker)]
    printed = _printed(["simulate", scenario], capsys)
    start = printed.index(quoted[0])
    assert printed[start:start + len(quoted)] == quoted
