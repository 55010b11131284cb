"""Sweep grids: parse ``--experts``/``--capacity-factor``/``--grid path=v1,v2`` into points.

A point is one assignment of values to the swept field paths plus a seed; the sweep is the
cartesian product of every dimension (and the seeds). Values are YAML scalars or flow mappings;
a mapping value (``--grid 'plan={dp: 32, ep: 8},{dp: 64, ep: 8}'``) is merged into that section
field by field instead of replacing it.
"""

from __future__ import annotations

import itertools
import json
import types
import typing
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import yaml
from pydantic import BaseModel, TypeAdapter, ValidationError

from moesim.errors import InputError
from moesim.loader import apply_override, load_yaml_value, over_bound
from moesim.resolve import BASE_KEYS
from moesim.schemas import NOT_A_BOOLEAN, Scenario, check_seed, number_not_bool
from moesim.suggest import did_you_mean

#: Shorthand options and the field each one sweeps.
SHORTHANDS = {"experts": "model.n_experts", "capacity_factor": "routing.capacity_factor"}
#: Keys a preset-able section accepts besides its model fields.
_PRESET_KEYS = {"model": {"preset", "hf_config"}, "hardware": {"preset"}}


@dataclass(frozen=True)
class Dimension:
    """One swept field: its dotted path and the values it takes, in order."""

    path: str
    values: tuple[Any, ...]


@dataclass(frozen=True)
class Point:
    """One point of the sweep: ``values`` maps each swept path to its value; ``index`` is its
    position in expansion order; ``key`` identifies it across runs (swept values + seed)."""

    index: int
    values: dict[str, Any]
    seed: int
    key: str = field(default="")

    def overrides(self) -> list[str]:
        """``a.b=value`` strings that turn the base scenario into this point."""
        out: list[str] = []
        for path, value in self.values.items():
            out.extend(flatten_override(path, value))
        return out


def split_values(text: str) -> list[str]:
    """Split ``v1,v2,...`` on commas that are not inside brackets, braces or quotes."""
    parts, depth, quote, cur = [], 0, "", []
    for ch in text:
        if quote:
            quote = "" if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch in "[{(":
            depth += 1
        elif ch in "]})":
            depth -= 1
        elif ch == "," and depth == 0:
            parts.append("".join(cur).strip())
            cur = []
            continue
        cur.append(ch)
    parts.append("".join(cur).strip())
    return parts


def parse_values(text: str, option: str) -> tuple[Any, ...]:
    """Parse a comma-separated list of YAML values; ``option`` names the flag in errors."""
    items = split_values(text)
    if not text.strip() or any(not item for item in items):
        raise InputError(f"{option} {text!r}: expected a comma-separated list of values, e.g. 1,2,4")
    values = []
    for item in items:
        try:
            values.append(load_yaml_value(item, f"{option} {item[:40]!r}"))  # nesting/huge-number limits
        except yaml.YAMLError:
            raise InputError(f"{option} {text!r}: {item!r} is not a valid value") from None
    if len({canonical(v) for v in values}) != len(values):
        raise InputError(f"{option} {text!r}: a value is repeated")
    return tuple(values)


def parse_grid_option(item: str) -> Dimension:
    """Parse one ``--grid path.to.field=v1,v2`` option."""
    path, sep, text = item.partition("=")
    path = path.strip()
    if not sep or not path:
        raise InputError(f"--grid {item!r}: expected path.to.field=v1,v2,...")
    check_field_path(path, f"--grid {item!r}")
    return Dimension(path, parse_values(text, f"--grid {path}="))


def build_dimensions(experts: str | None = None, capacity_factor: str | None = None,
                     grid: Iterable[str] = ()) -> list[Dimension]:
    """Dimensions from the shorthand options and ``--grid`` items; a path may appear once."""
    dims: list[Dimension] = []
    for name, text in (("experts", experts), ("capacity_factor", capacity_factor)):
        if text is not None:
            flag = "--" + name.replace("_", "-")
            dims.append(Dimension(SHORTHANDS[name], parse_values(text, flag)))
    dims.extend(parse_grid_option(item) for item in grid)
    seen: set[str] = set()
    for d in dims:
        if d.path in seen:
            raise InputError(f"{d.path}: swept twice; give its values once")
        seen.add(d.path)
    flags = {SHORTHANDS[name]: "--" + name.replace("_", "-") for name, text in
             (("experts", experts), ("capacity_factor", capacity_factor)) if text is not None}
    if "model.n_experts" in seen:  # named as the user gave it: --experts or --grid model.n_experts
        flag = flags.get("model.n_experts", "--grid model.n_experts")
        for v in next(d for d in dims if d.path == "model.n_experts").values:
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise InputError(f"{flag}: {v!r} is not a positive whole number of experts")
    for d in dims:
        check_values(d, flags.get(d.path, "--grid " + d.path))
    return dims


def check_values(dim: Dimension, flag: str) -> None:
    """Fail early (InputError) on a swept value its field can never take (a word for a number, a
    negative count, over the field's bound), whatever the other fields are; rules that tie fields
    together are judged point by point (an ``invalid`` row)."""
    _check_presets(dim, flag)
    field = leaf_field(dim.path)
    if field is None:
        return
    kind = typing.Annotated[field.annotation, *field.metadata] if field.metadata else field.annotation
    adapter = TypeAdapter(kind)
    numeric = number_not_bool(field.annotation)
    for v in dim.values:
        if isinstance(v, dict):
            continue
        try:
            if isinstance(v, bool) and numeric:
                raise ValueError(NOT_A_BOOLEAN)
            adapter.validate_python(v)
        except (ValidationError, ValueError) as exc:
            msg = str(exc)
            if isinstance(exc, ValidationError):
                first = exc.errors(include_url=False)[0]
                bound = first["type"] in ("less_than_equal", "less_than", "int_parsing_size")
                msg = over_bound(field, first) if bound else first["msg"]
            shown = json.dumps(v) if isinstance(v, bool) or v is None else repr(v)
            raise InputError(f"{flag}: {shown}: {msg}") from None


def _check_presets(dim: Dimension, flag: str) -> None:
    """A swept model or hardware preset name (``--grid hardware=h100-sxm,h200``, ``model.preset``, or a mapping's
    ``preset``) that is no preset: an InputError before any point runs, not one ``invalid`` row among finished ones."""
    section = dim.path.removesuffix(".preset")
    if section not in ("model", "hardware"):
        return
    from moesim.presets import HARDWARE, MODELS
    from moesim.suggest import did_you_mean

    known = MODELS if section == "model" else HARDWARE
    for v in dim.values:
        name = v.get("preset") if isinstance(v, dict) and dim.path == section else v
        if isinstance(name, str) and name not in known:
            hint = did_you_mean(name, known, n=2, joiner=" or ")
            raise InputError(f"{flag}: {name!r}: unknown {section} preset{'; ' + hint if hint else ''} "
                             f"(moesim presets lists them)")


def leaf_field(path: str) -> Any:
    """The pydantic FieldInfo ``path`` ends at when it is one plain (non-section) field of one
    section, else None (a preset name, a mapping key, a field of several section types)."""
    parts = path.split(".")
    cls: Any = Scenario
    for i, part in enumerate(parts):
        if not (isinstance(cls, type) and issubclass(cls, BaseModel)) or part not in cls.model_fields:
            return None
        info = cls.model_fields[part]
        if i == len(parts) - 1:
            return None if _models_in(info.annotation) else info
        models = _models_in(info.annotation)
        cls = models[0] if len(models) == 1 else None
    return None


def parse_seeds(text: str | None, default: int) -> tuple[int, ...]:
    """``--seeds 0,1,2`` as ints (``default`` when not given)."""
    if text is None:
        return (default,)
    seeds = parse_values(text, "--seeds")
    for s in seeds:
        check_seed(s, "--seeds:")
    return tuple(seeds)


def expand(dims: Sequence[Dimension], seeds: Sequence[int]) -> list[Point]:
    """The cartesian product of every dimension and the seeds, in a stable order."""
    paths = [d.path for d in dims]
    points = []
    combos = itertools.product(*(d.values for d in dims)) if dims else [()]
    for combo in combos:
        values = dict(zip(paths, combo))
        for seed in seeds:
            points.append(Point(len(points), values, seed, point_key(values, seed)))
    return points


def point_key(values: dict[str, Any], seed: int) -> str:
    """Stable identity of a point: canonical JSON of the swept values and the seed."""
    doc = {k: _normal(v) for k, v in sorted(values.items())}
    doc["seed"] = int(seed)
    return json.dumps(doc, sort_keys=True, separators=(",", ":"))


def canonical(value: Any) -> str:
    """Canonical text of one value (``1`` and ``1.0`` are the same)."""
    return json.dumps(_normal(value), sort_keys=True, separators=(",", ":"))


def column_value(value: Any) -> Any:
    """How a swept value appears in the results table: scalars as-is, mappings as compact JSON."""
    return canonical(value) if isinstance(value, (dict, list)) else value


def _normal(v: Any) -> Any:
    if isinstance(v, float) and v.is_integer():
        return int(v)
    if isinstance(v, dict):
        return {str(k): _normal(x) for k, x in sorted(v.items())}
    if isinstance(v, (list, tuple)):
        return [_normal(x) for x in v]
    return v


def flatten_override(path: str, value: Any) -> list[str]:
    """``plan={dp: 2, ep: 2}`` -> ``["plan.dp=2", "plan.ep=2"]``; scalars give one override. A mapping's base
    (``preset``/``hf_config``) comes first: setting it sheds the section's old fields, not the mapping's."""
    if isinstance(value, dict) and value:
        out: list[str] = []
        for k, v in sorted(value.items(), key=lambda kv: kv[0] not in BASE_KEYS):
            out.extend(flatten_override(f"{path}.{k}", v))
        return out
    return [f"{path}={json.dumps(value)}"]


def apply_point(raw: dict, point: Point) -> dict:
    """A copy of the raw scenario mapping with the point's values applied."""
    out = json.loads(json.dumps(raw, default=str))
    for item in point.overrides():
        apply_override(out, item)
    return out


def check_field_path(path: str, where: str) -> None:
    """Fail early (InputError) when ``path`` names no field of a scenario."""
    parts = path.split(".")
    cls: Any = Scenario
    for i, part in enumerate(parts):
        if cls is None:  # inside a free-form mapping (e.g. peak_tflops): anything goes
            return
        if i == 1 and part in _PRESET_KEYS.get(parts[0], set()):
            return
        candidates = [cls] if not isinstance(cls, list) else cls
        nxt = [c for c in candidates if part in c.model_fields]
        if not nxt:
            allowed = sorted({f for c in candidates for f in c.model_fields})
            hint = did_you_mean(part, allowed, n=2, joiner=" or ")
            raise InputError(f"{where}: {'.'.join(parts[: i + 1])} is not a scenario field; {hint + ' ' if hint else ''}"
                             f"allowed here: {', '.join(allowed)}")
        annotations = [c.model_fields[part].annotation for c in nxt]
        models = [m for a in annotations for m in _models_in(a)]
        cls = models if len(models) > 1 else (models[0] if models else None)
        if cls is None and i < len(parts) - 1 and not any(_is_mapping(a) for a in annotations):
            raise InputError(f"{where}: {'.'.join(parts[: i + 1])} is a value, not a section")


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType, typing.Annotated):
        return [m for arg in typing.get_args(annotation) for m in _models_in(arg)]
    return []


def _is_mapping(annotation: Any) -> bool:
    return typing.get_origin(annotation) is dict or annotation is dict
