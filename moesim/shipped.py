"""The scenarios shipped with moesim: find them installed or in a checkout, list them, resolve names.

They live in the repository's ``scenarios/`` folder, which installs as the package ``moesim.scenarios``
(package data), with the request traces they reference by relative path in ``scenarios/traces/``.
Every command that takes a scenario accepts a file path or one of these names; a path that exists wins.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import yaml

from moesim.errors import InputError
from moesim.suggest import did_you_mean

_MAX_PATH_CHARS = 4096  # PATH_MAX on Linux


@dataclass(frozen=True)
class ShippedScenario:
    """One shipped scenario: its name (the file stem), workload kind, one-line description, file."""

    name: str
    kind: str
    description: str
    path: Path


def shipped_dir() -> Path:
    """Folder of the shipped scenario YAMLs (site-packages/moesim/scenarios, or the checkout's scenarios/)."""
    from importlib import resources

    try:
        folder = Path(str(resources.files("moesim.scenarios")))
    except ModuleNotFoundError:  # a bare checkout on sys.path without an install
        folder = Path(__file__).resolve().parent.parent / "scenarios"
    return folder


@lru_cache(maxsize=1)
def shipped_scenarios() -> tuple[ShippedScenario, ...]:
    """Every shipped scenario, sorted by name (read once per process)."""
    found = []
    for path in sorted(shipped_dir().glob("*.yaml")):
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        workload = data.get("workload") or {}
        found.append(ShippedScenario(name=path.stem, kind=str(workload.get("kind", "?")),
                                     description=str(data.get("description", "")).strip(), path=path))
    return tuple(found)


def resolve_scenario(arg: str | Path) -> Path:
    """The file for ``arg``: an existing path as given, else the shipped scenario of that name.

    A name may carry the ``.yaml`` suffix. Raises InputError (one line, with close matches) otherwise.
    """
    if len(str(arg)) > _MAX_PATH_CHARS:
        raise InputError(f"{str(arg)[:60]}...: path of {len(str(arg)):,} characters (at most {_MAX_PATH_CHARS})")
    p = Path(arg)
    try:
        if p.exists():
            return p
    except (OSError, ValueError):  # a name the OS rejects (too long, NUL byte): the loader says so
        return p
    text = str(arg)
    if "/" not in text and "\\" not in text:
        stem = text.removesuffix(".yaml").removesuffix(".yml")
        by_name = {sc.name: sc.path for sc in shipped_scenarios()}
        if stem in by_name:
            return by_name[stem]
        hint = did_you_mean(stem, by_name, cutoff=0.5)
        raise InputError(f"{text}: file not found, and no shipped scenario has that name{'; ' + hint if hint else ''} "
                         "(`moesim scenarios` lists them)")
    stem = p.name.removesuffix(".yaml").removesuffix(".yml")
    if p.parent.name == "scenarios" and stem in {sc.name for sc in shipped_scenarios()}:
        raise InputError(f"{text}: file not found here; the shipped scenario of that name runs from any folder as "
                         f"`{stem}` (or run from the repository's root)")
    raise InputError(f"{text}: file not found")
