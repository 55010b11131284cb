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
    """The rows of a CSV whose lines starting ``#`` are comments, as dicts of strings keyed by its
    header. ``path``: a path, or the file name of a shipped table."""
    p = Path(path)
    if not p.is_absolute() and not p.exists():
        p = data_path(str(path))
    with open(p, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(line for line in f if not line.startswith("#")))
