"""Generated blocks in the project's Markdown (the README's metric tables and validation misses,
docs/validation-table.md): the text between a pair of HTML-comment marker lines, rewritten whole."""

from __future__ import annotations


def has_block(text: str, begin: str, end: str) -> bool:
    """Whether ``text`` holds the marker line ``begin`` and, after it, ``end``."""
    _, sep, rest = text.partition(begin + "\n")
    return bool(sep) and end in rest


def replace_between(text: str, begin: str, end: str, body: str) -> str:
    """``text`` with what lies between the marker lines ``begin`` and ``end`` replaced by ``body`` (no trailing
    newline: one is put before ``end``). Raises ValueError when the markers are not there."""
    if not has_block(text, begin, end):
        raise ValueError(f"markers {begin} ... {end} not found")
    head, _, rest = text.partition(begin + "\n")
    _, _, tail = rest.partition(end)
    return head + begin + "\n" + body + "\n" + end + tail
