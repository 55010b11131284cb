"""Read a scenario YAML, apply ``--set`` overrides, validate; every failure is one-line InputError.

Structural limits guard everything before pydantic sees it (file size, nesting depth, string
length, number of values, non-text keys); every numeric field has an upper bound in the schema
whose reason is appended to the error (``moesim.schemas._base.bounded``).
"""

from __future__ import annotations

import csv
import io
import re
import sys
import types
import typing
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from moesim.errors import InputError, short_repr
from moesim.resolve import (
    BASE_KEYS,
    FILE_FIELDS,
    KEPT_ON_NEW_BASE,
    PresetError,
    path_fields,
    set_base,
)
from moesim.schemas import Scenario
from moesim.schemas._base import MAX_STRING_CHARS, bound_reason
from moesim.suggest import did_you_mean

_TAGS = {"training", "serving"}  # discriminator tags pydantic puts in error locations

#: Largest scenario YAML read: 100x any real scenario (shipped ones are < 2 KiB), and small enough
#: that the pure-Python YAML parser takes a few seconds at most.
MAX_SCENARIO_BYTES = 256 << 10
#: Deepest nesting of mappings/lists (a scenario is at most 4 levels deep; presets add none).
MAX_DEPTH = 32
#: Most values (mappings, lists, scalars) in one scenario, counted with YAML aliases expanded.
MAX_VALUES = 100_000


def load_scenario(path: str | Path, overrides: Iterable[str] = ()) -> Scenario:
    """Load and validate a scenario file, or a shipped scenario by name (``moesim scenarios``).

    ``overrides`` are ``a.b.c=value`` strings (value is YAML).
    """
    from moesim.shipped import resolve_scenario

    if isinstance(path, dict):
        raise InputError("load_scenario takes a file path or a shipped scenario's name; for a mapping use "
                         "moesim.loader.scenario_from_dict(mapping, base_dir)")
    if isinstance(overrides, str):  # one string would be read character by character
        raise InputError(f"overrides = {short_repr(overrides)}: a list of 'path=value' strings, e.g. [{overrides!r}]")
    return read_scenario(resolve_scenario(path), overrides)[2]


def read_scenario(path: Path, overrides: Iterable[str] = ()) -> tuple[dict, Path, Scenario]:
    """(raw mapping with ``overrides`` applied, the file's folder, the validated Scenario) of the
    scenario file ``path``: what ``load_scenario`` returns, for callers that derive variants of it."""
    raw = read_yaml_mapping(path)
    for item in overrides:  # in order: a later override of the same field wins (advice added on top)
        apply_override(raw, item)
    base_dir = path.resolve().parent
    return raw, base_dir, scenario_from_dict(raw, base_dir=base_dir)


def scenario_from_dict(raw: dict, base_dir: Path | None = None) -> Scenario:
    """Validate plain data into a Scenario, mapping every error to one InputError line."""
    check_structure(raw)
    check_colon_keys(raw)
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
    text = read_text_file(p, MAX_SCENARIO_BYTES, "a YAML scenario")
    data = parse_yaml(text, str(p))
    if data is None:
        raise InputError(f"{p}: file is empty (expected a scenario mapping with model, hardware, plan, workload)")
    if not isinstance(data, dict):
        raise InputError(f"{p}: expected a mapping of scenario fields at the top, got {type(data).__name__}")
    return data


def read_text_file(p: Path, max_bytes: int, what: str, label: str | None = None) -> str:
    """The UTF-8 text of ``p``; a missing, oversized, binary or unreadable file is a one-line InputError.

    ``label`` starts every message (default: the path); ``what`` says what the file should be.
    """
    label = label or str(p)
    try:
        if not p.exists():
            raise InputError(f"{label}: file not found")
        if not p.is_file():
            raise InputError(f"{label}: not a file")
        size = p.stat().st_size
        if size > max_bytes:
            raise InputError(f"{label}: file is {_size(size)}, more than the {_size(max_bytes)} allowed for {what}")
        with open(p, "rb") as fh:
            data = fh.read(max_bytes + 1)
    except (OSError, ValueError) as exc:  # permission denied, name too long, NUL in the path, ...
        if isinstance(exc, InputError):
            raise
        raise InputError(f"{label}: cannot read the file ({getattr(exc, 'strerror', None) or exc})") from None
    if len(data) > max_bytes:  # grew while we looked (or a special file that reports size 0)
        raise InputError(f"{label}: file is more than the {_size(max_bytes)} allowed for {what}")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise InputError(f"{label}: not a text file (expected {what})") from None
    if "\x00" in text:
        raise InputError(f"{label}: not a text file (expected {what})")
    return text


def read_csv_rows(p: str | Path, max_bytes: int, label: str) -> list[list[str]]:
    """Rows of a CSV file, size-limited; every problem is a one-line InputError starting with ``label``."""
    text = read_text_file(Path(p), max_bytes, "a CSV file", label=label)
    try:
        return list(csv.reader(io.StringIO(text, newline="")))
    except csv.Error as exc:  # a field over the csv module's limit, a NUL, ...
        raise InputError(one_line(f"{label}: not a readable CSV ({exc})")) from None


def parse_yaml(text: str, label: str) -> Any:
    """``yaml.safe_load`` that never raises anything but a one-line InputError starting with ``label``."""
    try:
        return load_yaml_value(text, label)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "unknown position"
        problem = (exc.problem or exc.context or "invalid YAML").strip()
        raise InputError(one_line(f"{label}: YAML error at {where}: {problem}{_glued_hint(text, mark)}")) from None
    except yaml.YAMLError as exc:
        first = (str(exc).splitlines() or ["invalid YAML"])[0]
        raise InputError(one_line(f"{label}: YAML error: {first}")) from None


def _glued_hint(text: str, mark: Any) -> str:
    """For a YAML error just after a block line written ``name:value`` (no space after the colon, so YAML
    read it as text that the next line's ``key:`` then breaks): that line and its fix."""
    if mark is None:
        return ""
    lines = text.splitlines()
    for i in range(min(mark.line, len(lines) - 1), max(mark.line - 3, -1), -1):
        m = re.fullmatch(r"\s*(?:-\s+)?" + _GLUED_KEY.pattern, lines[i].split(" #")[0].rstrip())
        if m:
            glued = f"{m.group(1)}:{m.group(2)}"
            return (f"; line {i + 1} has {_clip(glued, 60)!r}: YAML needs a space after the colon "
                    f"({_clip(m.group(1) + ': ' + m.group(2), 62)!r})")
    return ""


class _UniqueKeyLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses a key written twice in one mapping: PyYAML keeps the last
    silently, so a scenario with two ``model:`` lines would run the second without a word. Keys
    brought in by a merge (``<<: *base``) may still be overridden, as YAML intends."""

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            seen: dict = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key = self.construct_object(key_node, deep=True)
                try:
                    if key in seen:
                        raise yaml.constructor.ConstructorError(
                            None, None, f"key {key!r} appears twice in one mapping (first on line {seen[key]})",
                            key_node.start_mark)
                    seen[key] = key_node.start_mark.line + 1
                except TypeError:  # an unhashable key: construct_mapping reports it
                    continue
        return super().construct_mapping(node, deep=deep)


def load_yaml_value(text: str, label: str) -> Any:
    """``yaml.safe_load`` with the nesting limit: yaml.YAMLError for bad syntax (callers may take the
    text as a plain string then), a one-line InputError starting with ``label`` for anything else.

    Nesting is measured on the event stream first (no recursion, stops at the limit), so a document
    nested thousands deep fails fast instead of overflowing the stack of the recursive composer.
    """
    depth = values = 0
    try:
        for event in yaml.parse(text, Loader=yaml.SafeLoader):
            if isinstance(event, yaml.NodeEvent):  # scalars, aliases, mapping and list starts
                values += 1
                if values > MAX_VALUES:
                    raise InputError(f"{label}: more than {MAX_VALUES:,} values")
            if isinstance(event, (yaml.MappingStartEvent, yaml.SequenceStartEvent)):
                depth += 1
                if depth > MAX_DEPTH:
                    line = event.start_mark.line + 1 if event.start_mark else 0
                    raise InputError(f"{label}: nested deeper than {MAX_DEPTH} levels (line {line})")
            elif isinstance(event, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
                depth -= 1
        return yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 (a SafeLoader subclass)
    except RecursionError:
        raise InputError(f"{label}: nested deeper than {MAX_DEPTH} levels") from None
    except (ValueError, OverflowError, TypeError) as exc:  # e.g. an integer of more than 4300 digits
        if isinstance(exc, InputError):
            raise
        if "digits" in str(exc):
            raise InputError(f"{label}: a number of more than {sys.get_int_max_str_digits()} digits") from None
        raise InputError(one_line(f"{label}: YAML error: {short_repr(str(exc), 120)}")) from None


def check_structure(data: Any, label: str = "") -> None:
    """Refuse data no scenario can be: nested deeper than MAX_DEPTH, more than MAX_VALUES values,
    strings over MAX_STRING_CHARS characters, mapping keys that are not text.

    Walks iteratively and stops at the first problem, so self-referencing or alias-multiplied data
    costs at most MAX_VALUES steps. ``label`` prefixes messages (default: the field path alone).
    """
    stack: list[tuple[Any, tuple, int]] = [(data, (), 0)]
    count = 0
    while stack:
        node, path, depth = stack.pop()
        count += 1
        if count > MAX_VALUES:
            raise InputError(f"{label or 'scenario'}: more than {MAX_VALUES:,} values "
                             "(YAML anchors and aliases can multiply them); a scenario has fewer than 200")
        if isinstance(node, (str, bytes, bytearray)):
            if len(node) > MAX_STRING_CHARS:
                raise InputError(f"{_where(label, path)}: text of {len(node):,} characters, "
                                 f"more than the {MAX_STRING_CHARS:,} allowed")
            continue
        if not isinstance(node, (dict, list, tuple, set, frozenset)):
            continue
        if depth >= MAX_DEPTH:
            raise InputError(f"{_where(label, path[:6])}...: nested deeper than {MAX_DEPTH} levels")
        if isinstance(node, dict):
            for key, value in node.items():
                if not isinstance(key, str):
                    raise InputError(f"{_where(label, path)}: key {short_repr(key, 40)} is not a field name "
                                     "(keys are text; quote it)")
                if len(key) > MAX_STRING_CHARS:
                    raise InputError(f"{_where(label, path)}: a key of {len(key):,} characters, "
                                     f"more than the {MAX_STRING_CHARS:,} allowed")
                stack.append((value, path + (key,), depth + 1))
        else:
            stack.extend((value, path + (i,), depth + 1) for i, value in enumerate(node))


#: A key YAML read from ``name:value`` written without the space after the colon (``{preset:a100-80gb}``
#: is one key ``'preset:a100-80gb'`` with no value): a field name, the colon, then something.
_GLUED_KEY = re.compile(r"([A-Za-z_][\w\-]*):(\S.*)", re.DOTALL)


def check_colon_keys(data: Any) -> None:
    """Refuse a mapping key written ``name:value`` (no space after the colon) that YAML read as one key
    with no value, naming the mapping, the key and the fix, before the schema's errors about it (a
    missing field, an unknown one) hide why. Call after :func:`check_structure` (which bounds the walk)."""
    stack: list[tuple[Any, tuple]] = [(data, ())]
    seen = 0
    while stack and seen <= MAX_VALUES:
        node, path = stack.pop()
        seen += 1
        if isinstance(node, dict):
            for key, value in node.items():
                m = _GLUED_KEY.fullmatch(key) if isinstance(key, str) and value is None else None
                if m:
                    fixed = f"{m.group(1)}: {m.group(2)}"
                    raise InputError(one_line(f"{_where('', path)}: key {_clip(key, 60)!r} has no value: YAML needs a "
                                              f"space after the colon ({_clip(fixed, 62)!r})"))
            stack.extend((value, path + (key,)) for key, value in reversed(list(node.items())))
            if not path:  # ``hardware: preset:a100-80gb`` on its own is a preset name with a colon in it
                for section in KEPT_ON_NEW_BASE:
                    m = _GLUED_KEY.fullmatch(node.get(section)) if isinstance(node.get(section), str) else None
                    if m and m.group(1) in BASE_KEYS:
                        raise InputError(one_line(f"{section} = {_clip(node[section], 60)!r}: YAML needs a space after "
                                                  f"the colon ({_clip(m.group(1) + ': ' + m.group(2), 62)!r})"))
        elif isinstance(node, (list, tuple)):
            stack.extend((value, path + (i,)) for i, value in reversed(list(enumerate(node))))


def _where(label: str, path: tuple) -> str:
    text = ".".join(str(p) for p in path)
    text = text if len(text) <= 120 else text[:117] + "..."
    if label:
        return f"{label}: {text}" if text else label
    return text or "scenario"


def _size(n: int) -> str:
    for unit, scale in (("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= scale:
            return f"{n / scale:.1f}".removesuffix(".0") + f" {unit}"
    return f"{n} bytes"


def apply_override(raw: dict, item: str) -> None:
    """Apply one ``a.b.c=value`` override in place; a preset name on the way becomes ``{preset: name}``, and a
    new base for a section (``model.preset``, ``model.hf_config``, ``hardware.preset``) sheds the old one's
    fields (:func:`moesim.resolve.set_base`)."""
    if "=" not in item:
        raise InputError(f"--set {short_repr(item, 80)}: expected path.to.field=value")
    key, _, text = item.partition("=")
    parts = key.strip().split(".")
    if not key.strip():
        raise InputError(f"--set {short_repr(item, 80)}: empty field path")
    if not all(p.strip() for p in parts):
        raise InputError(f"--set {short_repr(item, 80)}: empty part in the field path {key.strip()!r} "
                         "(write path.to.field=value)")
    parts = [p.strip() for p in parts]
    try:
        value = load_yaml_value(text, f"--set {_clip(key.strip())}") if text.strip() else ""
    except yaml.YAMLError:
        value = text  # not YAML: take it as a plain string (pydantic judges it)
    value = _from_working_dir(parts, value)
    node = raw
    for i, part in enumerate(parts[:-1]):
        child = node.get(part)
        if isinstance(child, str) and part in ("model", "hardware") and i == 0:
            child = {"preset": child}
        if child is None:
            child = {}
        if not isinstance(child, dict):
            raise InputError(f"--set {_clip(key)}: {_clip('.'.join(parts[: i + 1]))} is not a mapping")
        node[part] = child
        node = child
    if len(parts) == 2 and parts[0] in KEPT_ON_NEW_BASE and parts[1] in BASE_KEYS:
        set_base(parts[0], node, parts[1], value)
    else:
        node[parts[-1]] = value


def _from_working_dir(parts: list[str], value: Any) -> Any:
    """``value`` of the override at ``parts`` with each relative file path in it that names a file from the
    working folder made absolute: a path typed at the shell means the shell's folder (in the YAML, a path is
    the scenario file's folder's, where a path not found from the working folder is still looked up)."""
    wrapped: Any = value
    for part in reversed(parts):
        wrapped = {part: wrapped}
    for _, node, key in path_fields(wrapped, FILE_FIELDS):
        text = node[key]
        if isinstance(text, str) and text.strip() and not Path(text).is_absolute():
            try:
                here = Path.cwd() / text
                if here.is_file() or (key == "hf_config" and here.is_dir()):  # a model's folder holds its config.json
                    node[key] = str(here)
            except (OSError, ValueError):  # a name the OS cannot look up: the scenario's rules report it
                pass
    for part in parts:
        wrapped = wrapped[part]
    return wrapped


def _walk(loc: tuple) -> tuple[type[BaseModel] | None, Any]:
    """(model class, FieldInfo) reached by walking a pydantic error location from Scenario.

    The class is the section ``loc`` ends in (None past a non-model field or an unknown name); the
    field is the last one named (a dict key or list index stays at the field that holds it).
    """
    cls: type[BaseModel] | None = Scenario
    field = None
    for part in loc:
        if part in _TAGS:
            from moesim.schemas import ServingWorkload, TrainingWorkload

            cls = TrainingWorkload if part == "training" else ServingWorkload
            continue
        if cls is None or isinstance(part, int):
            continue
        field = cls.model_fields.get(str(part))
        cls = model_in(field.annotation) if field else None
    return cls, field


def _section_class(loc: tuple) -> type[BaseModel] | None:
    """The pydantic model class found by walking ``loc`` from Scenario (for listing allowed keys)."""
    return _walk(loc)[0]


def model_in(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType, typing.Annotated):
        for arg in typing.get_args(annotation):
            found = model_in(arg)
            if found is not None:
                return found
    return None


def models_in(annotation: Any) -> list[type[BaseModel]]:
    """Every pydantic model class in ``annotation`` (both workload kinds of the discriminated union)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    if typing.get_origin(annotation) in (typing.Union, types.UnionType, typing.Annotated):
        found = [m for arg in typing.get_args(annotation) for m in models_in(arg)]
        return list(dict.fromkeys(found))
    return []


def nested_field_paths(cls: type[BaseModel], name: str) -> list[str]:
    """``sub.name`` for each sub-section of ``cls`` that has a field ``name``: where a key written one
    level too high belongs (``nodes`` in hardware -> ``cluster.nodes``)."""
    paths = []
    for sub_name, field in cls.model_fields.items():
        if any(name in sub.model_fields for sub in models_in(field.annotation)):
            paths.append(f"{sub_name}.{name}")
    return paths


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
        parent, _, last = path.rpartition(".")
        if not path or msg.startswith(root + ".") or msg.startswith(root + ":"):
            line = msg
        elif parent and (msg.startswith(last + ".") or msg.startswith(last + ":")):
            line = f"{parent}.{msg}"  # a section's own rule names the section (a pool's "plan.ep = ...")
        else:
            line = f"{path}.{msg}"
    elif kind == "union_tag_invalid":  # a discriminated section (workload.kind) with an unknown tag
        ctx = first.get("ctx") or {}
        tags = str(ctx.get("expected_tags", "")).replace("'", "")
        key = str(ctx.get("discriminator", "kind")).strip("'")
        line = f"{path}.{key} = {short_repr(ctx.get('tag'))}: allowed: {tags}"
    elif kind == "extra_forbidden":
        cls = _section_class(loc[:-1])
        allowed = f"; allowed: {', '.join(cls.model_fields)}" if cls else ""
        parent = ".".join(str(p) for p in loc[:-1] if p not in _TAGS)
        nested = [f"{parent}.{p}" if parent else p for p in nested_field_paths(cls, str(loc[-1]))] if cls else []
        hint = (f"did you mean {' or '.join(nested[:3])}?" if nested else
                did_you_mean(str(loc[-1]), cls.model_fields if cls else [], n=2, joiner=" or "))
        line = f"{path}: unknown field{'; ' + hint if hint else ''}{allowed}"
    elif kind == "missing":
        missing = [".".join(str(p) for p in e["loc"] if p not in _TAGS) for e in errors if e["type"] == "missing"]
        if len(missing) > 1:  # name them all: a file missing two sections says which two
            line = f"{', '.join(missing)}: required fields are missing"
            errors = [first] + [e for e in errors if e["type"] != "missing"]
        else:
            line = f"{path}: required field is missing"
    elif kind in ("less_than_equal", "less_than", "int_parsing_size") or (
            kind == "float_type" and isinstance(first.get("input"), int) and not isinstance(first.get("input"), bool)):
        # over the field's bound, or an integer too big to be a float / a float too big for an int
        line = f"{path} = {short_repr(first.get('input'))}: {_over_bound(loc, first)}"
    elif kind in ("model_type", "dict_type", "model_attributes_type"):
        value = first.get("input")
        brace = "; a YAML {key: value} mapping needs its closing brace" if str(value).lstrip().startswith("{") else ""
        glued = _GLUED_KEY.fullmatch(value.strip()) if isinstance(value, str) else None
        if glued:  # ``cluster: nodes:8`` (block style) or ``--set hardware.cluster=nodes:8``
            brace += f"; YAML needs a space after the colon ({_clip(glued.group(1) + ': ' + glued.group(2), 62)!r})"
        line = f"{path} = {short_repr(value)}: expected a mapping of {path}'s fields{brace}"
    else:
        line = f"{path} = {short_repr(first.get('input'))}: {msg}{_unit_hint(kind, first.get('input'))}"
    more = len(errors) - 1
    line += f" (and {more} more error{'s' if more > 1 else ''})" if more else ""
    return one_line(line)


def _unit_hint(kind: str, value: Any) -> str:
    """For a number written with its unit (``80GB``, ``400 Gb/s``): the number to give instead, and where the
    field's unit is said. Fields take plain numbers in the unit their name and description give."""
    if kind not in ("float_parsing", "int_parsing") or not isinstance(value, str):
        return ""
    m = re.match(r"\s*([-+]?[0-9][0-9_.]*(?:[eE][-+]?[0-9]+)?)\s*([A-Za-z/%]+)\s*$", value)
    if not m:
        return ""
    if re.fullmatch(r"[GT]b(ps|/s|it/s)", m.group(2)):  # bits: the *_gbps fields are GB/s, bytes
        number = float(m.group(1).replace("_", "")) * (1000 if m.group(2)[0] == "T" else 1) / 8
        return f"; bandwidths are GB/s (bytes): {m.group(1)} {m.group(2)} is {number:g}"
    return f"; write the number alone ({m.group(1)}) in the field's unit (docs/scenario-fields.md)"


def _over_bound(loc: tuple, error: dict) -> str:
    """``must be <= 64 (why)`` for a value over a field's upper bound."""
    return over_bound(_field_at(loc), error)


def over_bound(field: Any, error: dict) -> str:
    """``must be <= 64 (why)`` for pydantic ``error`` on a value over ``field``'s upper bound (a FieldInfo)."""
    ctx = error.get("ctx") or {}
    if "le" in ctx or "lt" in ctx:
        op, bound = ("<=", ctx["le"]) if "le" in ctx else ("<", ctx["lt"])
    else:  # int_parsing_size: a number too big to be an integer at all
        op, bound = _upper_bound(field)
    if bound is None:
        return "too large"
    reason = bound_reason(field) if field is not None else None
    return f"must be {op} {_number(bound)}" + (f" ({reason})" if reason else "")


def _field_at(loc: tuple) -> Any:
    """The FieldInfo a pydantic error location points at (a dict value: the dict's field)."""
    return _walk(loc)[1]


def _upper_bound(field: Any) -> tuple[str, Any]:
    for meta in getattr(field, "metadata", ()):
        if getattr(meta, "le", None) is not None:
            return "<=", meta.le
        if getattr(meta, "lt", None) is not None:
            return "<", meta.lt
    return "<=", None


def _number(x: Any) -> str:
    if isinstance(x, float) and x.is_integer() and abs(x) < 1e7:
        return str(int(x))
    return f"{x:g}" if isinstance(x, float) else str(x)


def one_line(text: str) -> str:
    """Escape line breaks so a message that quotes user text stays on one line."""
    return text.replace("\r", "\\r").replace("\n", "\\n")


def _clip(text: str, limit: int = 80) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


