"""Atomic file writes: a temp file in the same folder, fsync, then rename over the target."""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO


@contextmanager
def atomic_open(path: str | Path, mode: str = "w", encoding: str | None = "utf-8") -> Iterator[IO]:
    """Open a temp file beside ``path``; on success it replaces ``path``, on error it vanishes."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; results are meant to be shared like any file
    binary = "b" in mode
    try:
        with os.fdopen(fd, mode, encoding=None if binary else encoding, newline=None if binary else "") as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically."""
    with atomic_open(path, "w") as fh:
        fh.write(text)


def check_out_folder(path: str | Path, option: str = "--out") -> Path:
    """``path`` as a Path, or a one-line InputError naming ``option`` when a file is already there:
    the check commands run before their work, creating nothing (:func:`ensure_out_folder` creates)."""
    from moesim.errors import InputError

    if not str(path).strip():
        raise InputError(f"{option} {str(path)!r}: an empty path; name a folder")
    out = Path(path)
    if out.exists() and not out.is_dir():
        raise InputError(f"{option} {out}: exists and is not a folder")
    check_writable(out, option)
    return out


def check_writable(path: str | Path, option: str = "--out") -> None:
    """A one-line InputError naming ``option`` when nothing can be written at ``path`` (a file or folder,
    existing or not): its nearest existing folder is read-only (a read-only file system, an immutable or
    unwritable folder) or a file. Checked before a command's work, so that it fails at once, not after."""
    from moesim.errors import InputError

    here = Path(path).absolute()
    probe = here if here.is_dir() else here.parent
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir():
        raise InputError(f"{option} {path}: {probe} is a file, not a folder")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise InputError(f"{option} {path}: cannot write in {probe} (read-only or no permission)")


def check_runs_folder(path: str | Path, option: str = "--out") -> Path:
    """:func:`check_out_folder` for ``sweep`` and ``plan``, refusing a folder that holds one ``simulate --out``
    result (``summary.json``): the folder would then read as both (``show`` one run, ``plot`` a sweep)."""
    from moesim.errors import InputError

    out = check_out_folder(path, option)
    if (out / "summary.json").exists():
        raise InputError(f"{option} {out}: holds a simulate result (summary.json); write to another folder")
    return out


def folder_name(name: str, fallback: str = "scenario") -> str:
    """A scenario's ``name`` as one folder name (letters, digits, ``.``, ``_``, ``-``; any other run of
    characters one ``-``), so that a default output folder stays inside its parent (``sweeps/<name>``):
    ``../x`` or ``/tmp/x`` as a name would otherwise write elsewhere."""
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip(".-")
    return slug or fallback


#: Files that mark a folder as another command's output, which a result written there would mix with.
FOREIGN_OUTPUTS = {"plans.json": "a plan search's results", "results.jsonl": "a sweep's results"}  # plan's first: it
# keeps a results.jsonl of its runs too


def not_a_result_folder(path: Path) -> str | None:
    """For a folder without summary.json that holds a plan search's or a sweep's output: one line saying which
    and where its rows are (for show, compare and plot to say instead of "no summary.json"); None otherwise."""
    if (path / "summary.json").exists() or not path.is_dir():
        return None
    if (path / "plans.json").exists():
        return (f"{path}: a plan search's folder, not a result folder (its plans are in plans.csv, its best plan in "
                "best.yaml: moesim simulate best.yaml runs it)")
    if (path / "results.jsonl").exists():
        return f"{path}: a sweep folder, not a result folder (its rows are in results.csv; moesim plot draws them)"
    return None


def check_result_folder(path: str | Path, option: str = "--out") -> Path:
    """:func:`check_out_folder` for ``simulate --out``, refusing a folder that holds a sweep's or a
    plan search's output (``show`` and ``plot`` would read one thing there and the result another)."""
    from moesim.errors import InputError

    out = check_out_folder(path, option)
    for name, what in FOREIGN_OUTPUTS.items():
        if (out / name).exists():
            raise InputError(f"{option} {out}: holds {what} ({name}); write the result to another folder")
    return out


def ensure_out_folder(path: str | Path, option: str = "--out") -> Path:
    """Create the output folder ``path`` (and its parents) or raise a one-line InputError naming
    ``option``: a file already there, or a folder the OS will not create (no permission, /proc)."""
    from moesim.errors import InputError

    out = check_out_folder(path, option)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"{option} {out}: cannot create the folder ({exc.strerror or type(exc).__name__})") from None
    return out


def write_out_file(path: str | Path, text: str, option: str = "--out") -> None:
    """``atomic_write_text`` whose OS errors become a one-line InputError naming ``option``."""
    from moesim.errors import InputError

    try:
        atomic_write_text(path, text)
    except IsADirectoryError:
        raise InputError(f"{option} {path}: is a folder; give a file name") from None
    except OSError as exc:
        raise InputError(f"{option} {path}: cannot write the file ({exc.strerror or type(exc).__name__})") from None
