"""The published tables in ``moesim/data/``: CSVs with ``#`` comment lines (source, units, caveats)
above their header. One reader, so every cost-model module and test reads them the same way."""

from __future__ import annotations

import csv
from pathlib import Path

#: The folder of the shipped tables.
DATA_DIR = Path(__file__).resolve().parent.parent / "data"


def data_path(name: str) -> Path:
    """The path of the shipped table ``name`` (a file name in ``moesim/data/``)."""
    return DATA_DIR / name


def read_table(path: Path | str) -> list[dict[str, str]]:
    """The rows of the CSV at ``path`` (a shipped one: ``data_path(name)``), whose lines starting ``#`` are
    comments, as dicts of strings keyed by its header."""
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(line for line in f if not line.startswith("#")))
