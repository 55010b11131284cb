"""SimResult: the one contract between the engines and everything downstream.

A result is a summary (flat dict of numbers, stable keys listed in the README) plus flat span
records and optional tidy tables (per-layer routing stats, per-request latencies, ...).
Span columns: kind, stage, stream, rank_group, layer, item (microbatch or request), start_s,
end_s, bytes, tokens, dropped. ``stage`` is the pipeline stage (training) or replica (serving);
``stream`` is ``compute`` or ``comm`` (training adds ``dp_comm`` for the gradient sync, which runs
beside the pipeline's sends as Megatron's grad-reduce stream does).
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from moesim.errors import InputError, short_repr
from moesim.fileio import check_result_folder, ensure_out_folder

FORMAT_VERSION = 1
SPAN_COLUMNS = ("kind", "stage", "stream", "rank_group", "layer", "item", "start_s", "end_s",
                "bytes", "tokens", "dropped")
_NUMERIC = {"stage": int, "layer": int, "item": int, "start_s": float, "end_s": float,
            "bytes": float, "tokens": float, "dropped": float}


#: Up to this many chunks, ``SpanRecorder.columns`` fills each chunk's slice (serving adds a few
#: chunks of thousands of spans); past it, it repeats one value per chunk (training adds many small ones).
_FEW_CHUNKS = 8


class SpanRecorder:
    """Collects spans in column chunks (numpy-friendly: one call can add many spans)."""

    def __init__(self) -> None:
        self._chunks: list[dict[str, Any]] = []

    def add(self, kind, stage, stream, start_s, end_s, *, layer=-1, item=-1, bytes=0.0,
            tokens=0.0, dropped=0.0, rank_group="") -> None:
        """Add one span, or many when any argument is an array (scalars broadcast)."""
        cols = dict(kind=kind, stage=stage, stream=stream, rank_group=rank_group, layer=layer,
                    item=item, start_s=start_s, end_s=end_s, bytes=bytes, tokens=tokens, dropped=dropped)
        self._chunks.append(cols)

    def columns(self) -> dict[str, np.ndarray]:
        """All spans as equal-length numpy columns, sorted by (stage, start_s)."""
        if not self._chunks:
            return {c: np.array([], dtype=object if c in ("kind", "stream", "rank_group") else float)
                    for c in SPAN_COLUMNS}
        chunks = self._chunks
        # a chunk of arrays holds as many spans as its longest (none when they are empty: e.g. the
        # gradient syncs of a stage whose blocks are all frozen); a chunk of scalars holds one
        sizes = np.array([max([v.size for v in ch.values() if isinstance(v, np.ndarray) and v.ndim], default=1)
                          for ch in chunks])
        ends = np.cumsum(sizes)
        few = len(chunks) <= _FEW_CHUNKS
        out = {}
        for c in SPAN_COLUMNS:
            vals = [ch[c] for ch in chunks]
            kind = object if c in ("kind", "stream", "rank_group") else float
            if few:  # each chunk's slice filled whole (a value or an array)
                col = np.empty(int(ends[-1]), dtype=kind)
                for j, v in enumerate(vals):
                    col[ends[j] - sizes[j]:ends[j]] = v
            else:  # one value per chunk, repeated over its spans; then the chunks given as arrays
                col = np.repeat(np.array([0.0 if isinstance(v, np.ndarray) and v.ndim else v for v in vals],
                                         dtype=kind), sizes)
                for j in (j for j, v in enumerate(vals) if isinstance(v, np.ndarray) and v.ndim):
                    col[ends[j] - sizes[j]:ends[j]] = vals[j]
            out[c] = col
        for c, t in _NUMERIC.items():
            out[c] = out[c].astype(t, copy=False)
        order = np.lexsort((out["start_s"], out["stage"]))
        if np.array_equal(order, np.arange(order.size)):  # already in order (serving's compute spans)
            return out
        return {c: v[order] for c, v in out.items()}


@dataclass
class SimResult:
    """What a simulation produced. ``summary`` values are plain floats/ints/bools/strings."""

    kind: str  # "training" | "serving"
    scenario: str
    seed: int
    summary: dict[str, Any]
    spans: dict[str, np.ndarray] = field(default_factory=dict)
    #: name -> column -> values (a list, or a numpy array: serving's requests and iterations)
    tables: dict[str, dict[str, list | np.ndarray]] = field(default_factory=dict)

    # ---------------------------------------------------------------- export
    def summary_json(self, files: list[str] | None = None, notes: dict[str, Any] | None = None,
                     inputs: dict[str, Any] | None = None) -> str:
        """The summary as JSON (stable key order, NaN/inf written as null); ``files``: the names
        :meth:`save` writes beside it, recorded so the next save into the folder knows them; ``notes``:
        what the CLI printed with the run that needs its scenario (its ``title``, ``host_note``, the ``nearest`` measurements),
        kept under ``notes`` so ``moesim show`` prints them again; ``inputs``: what was run (the scenario
        as given and its ``--set`` overrides), so a saved result says which variant it is."""
        from moesim import __version__

        doc = {"format_version": FORMAT_VERSION, "moesim_version": __version__, "kind": self.kind,
               "scenario": self.scenario, "seed": self.seed, "summary": jsonable(self.summary)}
        if inputs:
            doc["inputs"] = jsonable(inputs)
        if notes:
            doc["notes"] = jsonable(notes)
        if files is not None:
            doc["files"] = files
        return json.dumps(doc, indent=2, sort_keys=False)

    def spans_csv(self) -> str:
        """Spans as CSV text, one row per span (columns converted whole, not cell by cell)."""
        cols = [_csv_column(self.spans.get(c, [])) for c in SPAN_COLUMNS]
        lines = [",".join(SPAN_COLUMNS)]
        lines.extend(map(",".join, zip(*cols)))
        return "\n".join(lines) + "\n"

    def chrome_trace(self) -> dict:
        """Chrome/Perfetto trace: one process per stage (or replica), one thread per stream, and
        one per kind of communication the compute stream waits for (:func:`trace_track`)."""
        label = "replica" if self.kind == "serving" else "stage"
        s = self.spans
        if not len(s.get("kind", [])):
            return {"traceEvents": [], "displayTimeUnit": "ms",
                    "otherData": {"scenario": self.scenario, "seed": self.seed, "kind": self.kind}}
        kinds = np.asarray(s["kind"]).astype(str).tolist()
        stage_l = np.asarray(s["stage"]).astype(int).tolist()
        tracks: dict[tuple[str, str], str] = {}  # a few (kind, stream) pairs repeat over every span
        stream_l = [tracks.get(ks) or tracks.setdefault(ks, trace_track(*ks))
                    for ks in zip(kinds, np.asarray(s["stream"]).astype(str).tolist())]
        streams = {"compute": 0, "comm": 1}
        for name in dict.fromkeys(stream_l):
            streams.setdefault(name, len(streams))
        events: list[dict] = []
        for stage in sorted(set(stage_l)):  # one process_name per pid (a second one confuses the viewers)
            events.append({"ph": "M", "name": "process_name", "pid": stage, "tid": 0,
                           "args": {"name": f"{label} {stage}"}})
        for stage, stream in sorted(set(zip(stage_l, stream_l))):
            events.append({"ph": "M", "name": "thread_name", "pid": stage, "tid": streams[stream],
                           "args": {"name": stream}})
        start = np.asarray(s["start_s"], dtype=float)
        ts_us = (start * 1e6).tolist()
        dur_us = ((np.asarray(s["end_s"], dtype=float) - start) * 1e6).tolist()
        extra = {k: np.asarray(s[k]).tolist() for k in ("layer", "item", "bytes", "tokens", "dropped", "rank_group")}
        for i, (kind, stage, stream) in enumerate(zip(kinds, stage_l, stream_l)):
            events.append({"ph": "X", "name": kind, "pid": stage, "tid": streams[stream],
                           "ts": ts_us[i], "dur": dur_us[i],
                           "args": {k: v[i] for k, v in extra.items()}})
        return {"traceEvents": events, "displayTimeUnit": "ms",
                "otherData": {"scenario": self.scenario, "seed": self.seed, "kind": self.kind}}

    def save(self, out_dir: str | Path, notes: dict[str, Any] | None = None,
             inputs: dict[str, Any] | None = None, extra: dict[str, str] | None = None) -> list[Path]:
        """Write summary.json (with ``notes`` and ``inputs``: :meth:`summary_json`), spans.csv, trace.json,
        one CSV per table and the ``extra`` files (name -> text: the CLI's resolved ``scenario.yaml``) into
        ``out_dir``.

        The files are written into a staging folder inside ``out_dir`` first and renamed into place
        at the end, summary.json last, so a run stopped before then leaves the folder as it was. A
        folder that held an earlier result loses the files that result's summary.json lists and this
        one does not write (a training run's ``layers.csv`` after a serving run's ``requests.csv``...),
        so it holds this result only; any other file is left alone. Two saves into one folder at
        once are not supported.
        """
        check_result_folder(out_dir)  # not a sweep's or a plan's folder (the CLI refuses one as well)
        out = ensure_out_folder(out_dir)
        files = {"spans.csv": self.spans_csv(),
                 # dumps + one write is several times faster than json.dump's many small writes
                 "trace.json": json.dumps(self.chrome_trace(), separators=(",", ":"))}
        files.update({f"{name}.csv": table_csv(table) for name, table in self.tables.items()})
        files.update(extra or {})
        files["summary.json"] = self.summary_json(files=sorted(files), notes=notes, inputs=inputs) + "\n"  # written last
        earlier = listed_files(out / "summary.json")
        stage = Path(tempfile.mkdtemp(prefix=".moesim-save-", dir=out))
        try:
            for name, text in files.items():
                (stage / name).write_text(text, encoding="utf-8", newline="")
            for name in files:
                if name != "summary.json":
                    os.replace(stage / name, out / name)
            for name in earlier - files.keys():  # the earlier result's, not rewritten
                (out / name).unlink(missing_ok=True)
            os.replace(stage / "summary.json", out / "summary.json")
        finally:
            shutil.rmtree(stage, ignore_errors=True)
        return [out / name for name in files]

    @classmethod
    def load(cls, out_dir: str | Path) -> SimResult:
        """Read a result folder written by ``save`` (summary, spans and tables), or its summary.json: tables as
        column lists (numbers as floats, NaN where the run had none, flags as bools), the summary's NaN as NaN."""
        out = Path(out_dir)
        if out.name == "summary.json" and out.is_file():
            out = out.parent
        doc = read_summary(out / "summary.json")
        spans: dict[str, np.ndarray] = {}
        if (out / "spans.csv").exists():
            spans = _read_spans(out / "spans.csv")
        listed = doc.get("files")  # what save wrote (older folders: every CSV there)
        paths = [out / n for n in listed if n.endswith(".csv")] if isinstance(listed, list) else sorted(out.glob("*.csv"))
        tables = {}
        for p in paths:
            if p.name == "spans.csv":
                continue
            if not p.exists():  # listed by its save: the folder lost it (a table is no longer "not saved")
                if isinstance(listed, list):
                    raise InputError(f"{p}: missing (summary.json lists it: this folder lost a file); simulate the "
                                     "scenario again")
                continue
            tables[p.stem] = read_table_csv(p)
        return cls(doc["kind"], doc["scenario"], doc["seed"], saved_summary(doc), spans, tables)


#: Communication spans recorded on the compute stream (they block it), by kind prefix, and the
#: trace track they get: a collective drawn over the compute it blocks hides which is which.
_COMM_TRACKS = (("alltoall", "ep_comm"), ("tp_allreduce", "tp_comm"))


def trace_track(kind: str, stream: str) -> str:
    """The trace thread of a span: its stream, except that communication the compute stream waits
    for (``alltoall_*``, ``tp_allreduce_*`` on ``compute``) gets its own track per stage."""
    if stream == "compute":
        return next((track for prefix, track in _COMM_TRACKS if kind.startswith(prefix)), stream)
    return stream


def listed_files(summary: Path) -> set[str]:
    """The file names a result folder's summary.json says its save wrote (none when there is no
    such file, it is not a moesim summary, or it predates the list); plain names only."""
    try:
        listed = json.loads(summary.read_text()).get("files", [])
    except (OSError, ValueError, AttributeError):
        return set()
    if not isinstance(listed, list):
        return set()
    return {n for n in listed if isinstance(n, str) and n and "/" not in n and "\\" not in n and n not in (".", "..")}


#: Largest seed: what NumPy's generators take and summary.json keeps (a 64-bit whole number).
MAX_SEED = 2**63 - 1


def read_summary(path: Path) -> dict:
    """Load a summary.json, with a clear error for a missing, corrupt or foreign file."""
    try:
        doc = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise InputError(f"{path}: file not found") from None
    except (ValueError, UnicodeDecodeError, RecursionError):  # corrupt, a 5,000-digit number, nested too deep
        raise InputError(f"{path}: not a moesim result (corrupt JSON)") from None
    if not isinstance(doc, dict) or "summary" not in doc or "kind" not in doc:
        raise InputError(f"{path}: not a moesim result (no summary/kind)")
    if doc.get("format_version") != FORMAT_VERSION:
        raise InputError(f"{path}: format_version {short_repr(doc.get('format_version'))} is not {FORMAT_VERSION}")
    inputs = doc.get("inputs", {})
    if not isinstance(inputs, dict) or not isinstance(inputs.get("overrides", []), list):
        raise InputError(f"{path}: not a moesim result (inputs must map scenario and a list of overrides)")
    # the fields show, compare and plot read, with the types save wrote: a hand-edited file fails here, in one line
    shape = (("kind", doc["kind"] in ("training", "serving"), "training or serving"),
             ("scenario", isinstance(doc.get("scenario"), str), "a name"),
             ("summary", isinstance(doc["summary"], dict), "a mapping of figures"),
             ("seed", doc.get("seed") is None or (isinstance(doc["seed"], int) and not isinstance(doc["seed"], bool)
                                             and 0 <= doc["seed"] <= MAX_SEED),
              "a whole number or null"),
             ("files", all(isinstance(n, str) for n in doc.get("files", [])) if isinstance(doc.get("files", []), list)
              else False, "a list of file names"))
    for key, ok, what in shape:
        if not ok:
            raise InputError(f"{path}: {key} = {short_repr(doc.get(key))}: expected {what} (not a moesim result, or "
                             "edited)")
    _check_figures(path, doc["summary"])
    return doc


def _check_figures(path: Path, summary: dict) -> None:
    """InputError for a summary with no figures, or a registered numeric figure that is not a number (or null,
    what save writes for NaN): a hand-edited ``"step_time_s": "abc"`` printed as it was."""
    from moesim.metrics import METRICS

    if not summary:
        raise InputError(f"{path}: summary = {{}}: no figures (not a moesim result, or edited)")
    for key, value in summary.items():
        metric = METRICS.get(key)
        if metric is None or metric.unit in ("text", "bool") or value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise InputError(f"{path}: summary.{key} = {short_repr(value)}: expected a number in {metric.unit} "
                             "(not a moesim result, or edited)")


def read_saved(path: str | Path) -> tuple[Path, dict, dict]:
    """A result folder written by :meth:`SimResult.save`, or its summary.json: the folder, the summary.json
    document (:func:`read_summary`) and its summary with the nulls read back as NaN (``summary_json`` writes
    NaN as null; a run's summary holds no None of its own), so tables print ``n/a`` as they did for the run."""
    path = Path(path)
    folder = path.parent if path.name == "summary.json" and not path.is_dir() else path
    if not folder.exists():
        raise InputError(f"{path}: no such result folder (simulate --out FOLDER writes one)")
    if not folder.is_dir():
        raise InputError(f"{path}: a file, not a result folder (give the folder simulate --out wrote, or its summary.json)")
    if not (folder / "summary.json").exists():
        raise InputError(f"{path}: not a result folder (no summary.json; simulate --out FOLDER writes one)")
    doc = read_summary(folder / "summary.json")
    return folder, doc, saved_summary(doc)


def saved_summary(doc: dict) -> dict:
    """The summary of a summary.json document (:func:`read_summary`) with its nulls read back as NaN:
    ``summary_json`` writes NaN as null, and a run's summary holds no None of its own."""
    return {k: math.nan if v is None else v for k, v in doc["summary"].items()}


def table_csv(table: dict[str, list | np.ndarray]) -> str:
    """A column dict as CSV text."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    keys = list(table)
    w.writerow(keys)
    cols = [v.tolist() if isinstance(v, np.ndarray) else v for v in table.values()]
    for row in zip(*cols):
        w.writerow([_fmt(v) for v in row])
    return buf.getvalue()


def read_table_csv(path: Path) -> dict[str, list]:
    """A CSV as a column dict, numbers parsed as float where every value parses."""
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            rows = list(csv.reader(fh))
    except (UnicodeDecodeError, csv.Error) as exc:
        raise InputError(f"{path}: not a moesim table ({type(exc).__name__}: not CSV text)") from None
    if not rows:
        return {}
    head, body = rows[0], rows[1:]
    return {k: _parsed_column([r[j] if j < len(r) else "" for r in body]) for j, k in enumerate(head)}


def _parsed_column(vals: list[str]) -> list:
    """A column's cells as :func:`table_csv` wrote them: flags (``True``/``False``) as bools; numbers as floats, an
    empty cell among them as NaN (``table_csv`` writes NaN and inf as ""); anything else as the text."""
    if vals and all(v in ("True", "False") for v in vals):
        return [v == "True" for v in vals]
    if any(v != "" for v in vals):
        try:
            return [float(v) if v != "" else math.nan for v in vals]
        except ValueError:
            pass
    return vals


def check_parts_table(table: dict[str, list], columns: tuple[str, ...], where: str, what: str) -> None:
    """Raise InputError naming ``where`` when ``table`` (a run's step table, or one read back from its CSV) is not
    a ``what`` table: every one of ``columns``, at least one part, numbers in all but the first (part) column."""
    from numbers import Real

    from moesim.errors import InputError

    if not len(table.get(columns[0], ())) or any(c not in table for c in columns) or any(
            not all(isinstance(v, Real) and not isinstance(v, bool) and math.isfinite(v) for v in table[c])
            for c in columns[1:]):
        raise InputError(f"{where}: not a moesim {what} table (columns {', '.join(columns)}, "
                         "one row per part, finite numbers but the part)")


def _read_spans(path: Path) -> dict[str, np.ndarray]:
    t = read_table_csv(path)
    out = {}
    for c in SPAN_COLUMNS:
        v = t.get(c, [])
        try:
            out[c] = np.asarray(v, dtype=_NUMERIC[c]) if c in _NUMERIC else np.asarray(v, dtype=object)
        except (ValueError, TypeError, OverflowError):
            raise InputError(f"{path}: column {c}: expected numbers (edited or not a moesim spans table)") from None
        if c in ("start_s", "end_s") and not np.isfinite(out[c]).all():
            raise InputError(f"{path}: column {c}: expected finite numbers (edited or not a moesim spans table)")
    return out


def _csv_column(values) -> list[str]:
    """One span column as CSV cells: floats by repr (round-trips exactly), others by str.

    Each distinct value is formatted once (span columns repeat a few kinds, streams and sizes).
    """
    arr = np.asarray(values)
    if arr.dtype.kind not in "fiub":
        arr = arr.astype(str)
    uniq, inverse = np.unique(arr, return_inverse=True)
    if arr.dtype.kind == "f":
        cells = [repr(x) if x == x and abs(x) != float("inf") else "" for x in uniq.tolist()]
    elif arr.dtype.kind in "iub":
        cells = list(map(str, uniq.tolist()))
    else:
        cells = [_csv_text(x) for x in uniq.tolist()]
    return [cells[i] for i in inverse.ravel().tolist()]


def _csv_text(text: str) -> str:
    if any(ch in text for ch in ',"\n\r'):
        return '"' + text.replace('"', '""') + '"'
    return text


def _fmt(v: Any) -> Any:
    if isinstance(v, (np.floating, float)):
        f = float(v)
        return repr(f) if math.isfinite(f) else ""
    if isinstance(v, np.integer):
        return int(v)
    if isinstance(v, np.bool_):
        return bool(v)
    return v


def jsonable(v: Any) -> Any:
    """``v`` with numpy scalars turned into Python ones and non-finite floats into None, through dicts, lists and tuples."""
    if isinstance(v, dict):
        return {str(k): jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [jsonable(x) for x in v]
    if isinstance(v, (np.floating, float)):
        f = float(v)
        return f if math.isfinite(f) else None
    if isinstance(v, np.integer):
        return int(v)
    if isinstance(v, np.bool_):
        return bool(v)
    return v
