"""Read a scenario YAML, apply ``--set`` overrides, validate; every failure is one-line InputError."""

from __future__ import annotations

import types
import typing
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from moesim.errors import InputError
from moesim.resolve import PresetError
from moesim.schemas import Scenario

_TAGS = {"training", "serving"}  # discriminator tags pydantic puts in error locations


def load_scenario(path: str | Path, overrides: Iterable[str] = ()) -> Scenario:
    """Load and validate a scenario file. ``overrides`` are ``a.b.c=value`` strings (value is YAML)."""
    p = Path(path)
    raw = read_yaml_mapping(p)
    for item in overrides:
        apply_override(raw, item)
    return scenario_from_dict(raw, base_dir=p.resolve().parent)


def scenario_from_dict(raw: dict, base_dir: Path | None = None) -> Scenario:
    """Validate plain data into a Scenario, mapping every error to one InputError line."""
    try:
        scenario = Scenario.model_validate(raw, context={"base_dir": str(base_dir) if base_dir else None})
    except ValidationError as exc:
        raise InputError(format_validation_error(exc)) from None
    except PresetError as exc:
        raise InputError(str(exc)) from None
    _check_profile(scenario)
    return scenario


def _check_profile(s: Scenario) -> None:
    """A profile the hardware names must load and match its device (InputError otherwise)."""
    hw = s.hardware
    if hw.profile is None:
        return
    from moesim.costmodel.model import build_cost_model

    build_cost_model(hw)  # loads (cached), validates and checks the device name


def read_yaml_mapping(p: Path) -> dict:
    """Parse a YAML file with ``safe_load`` and require a mapping at the top."""
    if not p.exists():
        raise InputError(f"{p}: file not found")
    if not p.is_file():
        raise InputError(f"{p}: not a file")
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise InputError(f"{p}: not a text file (expected a YAML scenario)") from None
    if "\x00" in text:
        raise InputError(f"{p}: not a text file (expected a YAML scenario)")
    try:
        data = yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "unknown position"
        problem = (exc.problem or exc.context or "invalid YAML").strip()
        raise InputError(f"{p}: YAML error at {where}: {problem}") from None
    except yaml.YAMLError as exc:
        raise InputError(f"{p}: YAML error: {str(exc).splitlines()[0]}") from None
    if data is None:
        raise InputError(f"{p}: file is empty (expected a scenario mapping with model, hardware, plan, workload)")
    if not isinstance(data, dict):
        raise InputError(f"{p}: expected a mapping of scenario fields at the top, got {type(data).__name__}")
    return data


def apply_override(raw: dict, item: str) -> None:
    """Apply one ``a.b.c=value`` override in place; a preset name on the way becomes ``{preset: name}``."""
    if "=" not in item:
        raise InputError(f"--set {item!r}: expected path.to.field=value")
    key, _, text = item.partition("=")
    parts = [k for k in key.strip().split(".") if k]
    if not parts:
        raise InputError(f"--set {item!r}: empty field path")
    try:
        value = yaml.safe_load(text) if text.strip() else ""
    except yaml.YAMLError:
        value = text
    node = raw
    for i, part in enumerate(parts[:-1]):
        child = node.get(part)
        if isinstance(child, str) and part in ("model", "hardware") and i == 0:
            child = {"preset": child}
        if child is None:
            child = {}
        if not isinstance(child, dict):
            raise InputError(f"--set {key}: {'.'.join(parts[: i + 1])} is not a mapping")
        node[part] = child
        node = child
    node[parts[-1]] = value


def _section_class(loc: tuple) -> type[BaseModel] | None:
    """The pydantic model class found by walking ``loc`` from Scenario (for listing allowed keys)."""
    cls: type[BaseModel] | None = Scenario
    for part in loc:
        if cls is None or part in _TAGS or isinstance(part, int):
            if part in _TAGS:
                from moesim.schemas import ServingWorkload, TrainingWorkload

                cls = TrainingWorkload if part == "training" else ServingWorkload
            continue
        field = cls.model_fields.get(str(part))
        cls = _model_in(field.annotation) if field else None
    return cls


def _model_in(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType, typing.Annotated):
        for arg in typing.get_args(annotation):
            found = _model_in(arg)
            if found is not None:
                return found
    return None


def format_validation_error(exc: ValidationError) -> str:
    """One line: ``field.path = value: what is wrong; allowed ...`` (+ how many more errors)."""
    errors = exc.errors(include_url=False)
    first = errors[0]
    loc = tuple(first["loc"])
    path = ".".join(str(p) for p in loc if p not in _TAGS)
    kind = first["type"]
    msg = first["msg"]
    if kind == "value_error":
        msg = msg.removeprefix("Value error, ")
        root = str(loc[0]) if loc else ""
        line = msg if not path or msg.startswith(root + ".") or msg.startswith(root + ":") else f"{path}.{msg}"
    elif kind == "extra_forbidden":
        cls = _section_class(loc[:-1])
        allowed = f"; allowed: {', '.join(cls.model_fields)}" if cls else ""
        line = f"{path}: unknown field{allowed}"
    elif kind == "missing":
        line = f"{path}: required field is missing"
    else:
        line = f"{path} = {_short(first.get('input'))}: {msg}"
    more = len(errors) - 1
    line += f" (and {more} more error{'s' if more > 1 else ''})" if more else ""
    return one_line(line)


def one_line(text: str) -> str:
    """Escape line breaks so a message that quotes user text stays on one line."""
    return text.replace("\r", "\\r").replace("\n", "\\n")


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
