"""The sweep result store: one row per finished point, as JSON lines plus a CSV view.

``results.jsonl`` is the source of truth. Each row is appended with a single ``write`` of one
complete line to a file opened in append mode (then flushed to disk when ``durable``), so a
killed sweep keeps every row it finished and never leaves half a row behind; a torn last line
(power loss) is cut off when the store is reopened. ``results.csv`` is the same table for
spreadsheets: rows are appended as they finish, and the file is rewritten atomically (sorted
by point) when new columns appear, when the store is reopened, and when the sweep ends.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Self

from moesim.errors import InputError, short_repr
from moesim.fileio import atomic_write_text, ensure_out_folder

#: Columns every sweep row has besides the swept fields and the summary (see sweep_exec.run_point).
ROW_COLUMNS = ("point", "status", "reason", "scenario", "kind", "seed", "key", "sim_wall_s")

JSONL_NAME = "results.jsonl"
CSV_NAME = "results.csv"
MANIFEST_NAME = "sweep.json"
#: The file a run writing the folder holds locked (``ResultStore._lock``).
LOCK_NAME = ".moesim.lock"
#: Columns every row starts with, in this order; swept fields and summary metrics follow.
LEAD_COLUMNS = ("point", "status", "reason", "scenario", "kind", "seed")
#: Columns every row ends with: the point's identity for --resume, and its wall time (s).
TAIL_COLUMNS = ("sim_wall_s", "key")


class ResultStore:
    """Append-only table of sweep rows in ``out_dir`` (see the module docstring)."""

    def __init__(self, out_dir: str | Path, durable: bool = True) -> None:
        self.dir = Path(out_dir)
        self.durable = durable
        self.rows: list[dict[str, Any]] = []
        self._header: list[str] = []
        self._jsonl_fd: int | None = None
        self._csv_fd: int | None = None
        self._lock_fd: int | None = None

    # ---------------------------------------------------------------- lifecycle
    def open(self, resume: bool = False, overwrite: bool = False) -> list[dict[str, Any]]:
        """Open for appending and return the rows already there (``resume``), else start empty.

        A folder that already holds rows needs ``resume`` (keep them) or ``overwrite`` (drop them).
        On resume, rows of points that failed are dropped so those points run again.
        """
        jsonl = self.dir / JSONL_NAME
        existing = read_jsonl(jsonl) if jsonl.exists() else []
        if existing and not (resume or overwrite):
            raise InputError(f"{self.dir}: already holds {len(existing)} sweep rows; pass --resume to continue it, "
                             "--overwrite to start again, or --out another folder for another sweep")
        ensure_out_folder(self.dir)
        self._lock()
        kept = [r for r in existing if r.get("status") != "failed"] if resume else []
        # Rewrite both files from the kept rows (cuts a torn tail, drops failed rows).
        atomic_write_text(jsonl, "".join(_jsonl_line(r) for r in kept))
        self.rows = list(kept)
        self._header = header_for(self.rows)
        self._rewrite_csv()
        self._jsonl_fd = os.open(jsonl, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        self._csv_fd = self._append_csv()
        return list(kept)

    def _lock(self) -> None:
        """Hold the folder's lock file until :meth:`close` (the OS drops it if the process dies): a second run
        writing the same folder at once would interleave two sweeps' rows and lose one's. No lock where the
        platform has no ``fcntl`` (Windows)."""
        try:
            import fcntl
        except ImportError:
            return
        fd = os.open(self.dir / LOCK_NAME, os.O_WRONLY | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise InputError(f"{self.dir}: another moesim run is writing to this folder; wait for it to end, or "
                             "use another --out") from None
        self._lock_fd = fd

    def close(self) -> None:
        """Close the files, leave the CSV sorted by point and release the folder."""
        for fd in (self._jsonl_fd, self._csv_fd):
            if fd is not None:
                os.close(fd)
        self._jsonl_fd = self._csv_fd = None
        if self.dir.exists():
            self._rewrite_csv()
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # releases the lock
            self._lock_fd = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---------------------------------------------------------------- writing
    def append(self, row: dict[str, Any]) -> None:
        """Record one finished point: a whole JSON line, then its CSV line."""
        if self._jsonl_fd is None or self._csv_fd is None:
            raise RuntimeError("ResultStore.append before open()")
        row = {k: _plain(v) for k, v in row.items()}
        _write_all(self._jsonl_fd, _jsonl_line(row).encode("utf-8"), self.durable)
        self.rows.append(row)
        if all(k in self._header for k in row):
            _write_all(self._csv_fd, _csv_lines(self._header, [row]).encode("utf-8"), self.durable)
        else:
            self._header = header_for(self.rows)
            self._rewrite_csv()
            # the rewrite put a new file in place: appending to the old descriptor wrote to the unlinked one, and
            # a sweep killed later left results.csv at its first rows while results.jsonl had them all
            os.close(self._csv_fd)
            self._csv_fd = self._append_csv()

    def write_manifest(self, manifest: dict[str, Any]) -> None:
        """Write ``sweep.json`` (what was swept, over which scenario) atomically."""
        from moesim import __version__

        self.dir.mkdir(parents=True, exist_ok=True)
        manifest = {**manifest, "moesim_version": __version__}  # which moesim priced the rows
        atomic_write_text(self.dir / MANIFEST_NAME, json.dumps(manifest, indent=2) + "\n")

    def _append_csv(self) -> int:
        """A descriptor appending to ``results.csv`` as it is now on disk (after a rewrite: the new file)."""
        return os.open(self.dir / CSV_NAME, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def _rewrite_csv(self) -> None:
        rows = sorted(self.rows, key=lambda r: (r.get("point", 0), r.get("seed", 0)))
        self._header = header_for(rows)
        text = _csv_lines(self._header, rows, with_header=True)
        atomic_write_text(self.dir / CSV_NAME, text)


# -------------------------------------------------------------------- reading
def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """Rows of a results.jsonl; a torn last line (no newline) is ignored, other damage is an error."""
    p = Path(path)
    try:
        data = p.read_bytes()
    except FileNotFoundError:
        raise InputError(f"{p}: file not found") from None
    lines = data.split(b"\n")
    complete, tail = lines[:-1], lines[-1]  # tail is b"" when the file ends with a newline
    rows = []
    for n, line in enumerate(complete, start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise InputError(f"{p}: line {n} is not a JSON row (damaged results file)") from None
        if not isinstance(row, dict) or "status" not in row:
            raise InputError(f"{p}: line {n} is not a sweep row")
        for key in ("point", "seed"):  # what orders and keys the rows: whole numbers, as the sweep wrote them
            v = row.get(key, 0)
            if not isinstance(v, int) or isinstance(v, bool) or v < 0:
                raise InputError(f"{p}: line {n}: {key} = {short_repr(v)}: expected a whole number (damaged or "
                                 "edited results file)")
        # NaN written by hand reads as null, as the sweep saves it (a resume rewrites the rows as strict JSON)
        rows.append({k: None if isinstance(v, float) and not math.isfinite(v) else v for k, v in row.items()})
    del tail  # an incomplete final line was never a finished row
    return rows


def read_rows(out_dir: str | Path) -> list[dict[str, Any]]:
    """All rows of a sweep folder, sorted by point then seed."""
    d = Path(out_dir)
    path = d / JSONL_NAME if d.is_dir() else d
    if d.is_dir() and not path.exists():
        raise InputError(f"{d}: no {JSONL_NAME} here (not a sweep folder)")
    rows = read_jsonl(path)
    return sorted(rows, key=lambda r: (r.get("point", 0), r.get("seed", 0)))


#: What each tool's folder is called in messages, and the command that makes it.
TOOLS = {"sweep": ("a sweep", "moesim sweep"), "plan": ("a plan search", "moesim plan")}


def scenario_fingerprint(raw: dict[str, Any]) -> str:
    """A short hash of a scenario's contents (its mapping with the fixed overrides applied): --resume
    compares it, so rows priced before the scenario file was edited are never mixed with new ones
    (the name alone survives an edit)."""
    text = json.dumps(raw, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def check_resume(out_dir: str | Path, manifest: dict[str, Any], compare: tuple[tuple[str, str], ...]) -> None:
    """--resume continues only what ``out_dir`` holds: a folder of the same tool (``manifest["tool"]``:
    sweep and plan folders share a layout, so mixing them would pass every file check) with the same
    ``compare`` entries (manifest key, what to call it); anything else would mix two runs' rows.
    Manifests written before the ``tool`` key say which they are by their keys."""
    old = read_manifest(out_dir)
    tool = manifest["tool"]
    if not old:
        rows = Path(out_dir) / "results.jsonl"
        if rows.is_file() and rows.stat().st_size > 0:  # rows of an unknown run: which scenario, which overrides?
            raise InputError(f"--resume: {out_dir} holds rows but no {MANIFEST_NAME} saying which "
                             f"{TOOLS[tool][0].removeprefix('a ')} they are of, so they cannot be checked against this one; use another --out, or pass "
                             "--overwrite to replace them")
        return
    old_tool = old.get("tool") or ("sweep" if "dims" in old else "plan")
    if old_tool != tool:
        (had, had_cmd), (want, want_cmd) = TOOLS[old_tool], TOOLS[tool]
        raise InputError(f"--resume: {out_dir} holds {had} ({had_cmd}), not {want} ({want_cmd}); use another --out, "
                         "or pass --overwrite to replace it")

    def same(a, b) -> bool:  # lists (fields, overrides) in any order
        return sorted(a) == sorted(b) if isinstance(a, list) and isinstance(b, list) else a == b

    for key, what in compare:
        if key == "fingerprint" and key in old and old[key] != manifest.get(key):
            raise InputError(f"--resume: the scenario's contents changed since {out_dir} was started (a field was "
                             "edited; its rows were priced with the old values); use another --out, or pass "
                             "--overwrite to replace it")
        if key in old and not same(old[key], manifest.get(key)):
            raise InputError(f"--resume: {out_dir} holds {TOOLS[tool][0]} with other {what} ({old[key]} "
                             f"there, {manifest.get(key)} now); use another --out, or pass --overwrite to replace it")


def read_manifest(out_dir: str | Path) -> dict[str, Any]:
    """The sweep.json of a sweep folder, or {} when there is none."""
    p = Path(out_dir) / MANIFEST_NAME
    if not p.exists():
        return {}
    try:
        doc = json.loads(p.read_text())
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise InputError(f"{p}: damaged sweep manifest (not JSON)") from None
    if not isinstance(doc, dict):
        return {}
    dims = doc.get("dims", [])
    if not isinstance(dims, list) or not all(isinstance(d, str) for d in dims):
        raise InputError(f"{p}: dims = {short_repr(dims)}: expected a list of field paths (damaged or edited manifest)")
    return doc


def header_for(rows: Iterable[dict[str, Any]]) -> list[str]:
    """Column order: the lead columns, every other key in first-seen order, the tail columns."""
    cols = list(LEAD_COLUMNS)
    seen = set(cols) | set(TAIL_COLUMNS)
    for r in rows:
        for k in r:
            if k not in seen:
                seen.add(k)
                cols.append(k)
    return cols + list(TAIL_COLUMNS)


# -------------------------------------------------------------------- helpers
def _write_all(fd: int, data: bytes, durable: bool) -> None:
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]
    if durable:
        os.fsync(fd)


def _jsonl_line(row: dict[str, Any]) -> str:
    return json.dumps(row, separators=(",", ":"), allow_nan=False) + "\n"


def _csv_lines(columns: list[str], rows: list[dict[str, Any]], with_header: bool = False) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    if with_header:
        w.writerow(columns)
    for r in rows:
        w.writerow(["" if r.get(c) is None else r.get(c) for c in columns])
    return buf.getvalue()


def _plain(v: Any) -> Any:
    """A JSON-safe scalar: numpy numbers as Python numbers, NaN/inf as None."""
    if hasattr(v, "item") and not isinstance(v, (list, dict, str)):
        v = v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, (dict, list, tuple)):
        return json.dumps(v, separators=(",", ":"), default=str)
    return v
