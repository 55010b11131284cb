"""Every numeric scenario field has a documented upper bound; errors over it say why.

The walk covers every pydantic model reachable from Scenario (both workload kinds, MLA, device,
node, cluster, ...) and the values of numeric mappings (``peak_tflops``): a new int or float field
without ``le=``/``lt=`` fails here, so no value can reach int64 or float overflow downstream.
"""

from __future__ import annotations

import types
import typing
from pathlib import Path

import pytest
import yaml
from pydantic import BaseModel
from pydantic.fields import FieldInfo

from moesim.errors import InputError
from moesim.loader import load_scenario, scenario_from_dict
from moesim.schemas import Scenario
from moesim.schemas._base import BOUND_REASON, bound_reason

ROOT = Path(__file__).resolve().parents[1]
SCENARIO_FILES = sorted((ROOT / "scenarios").glob("*.yaml")) + sorted((ROOT / "moesim" / "data" / "validation").glob("*.yaml"))


# ---------------------------------------------------------------- schema walk (also used by the fuzz)


def _upper(meta) -> float | None:
    for m in meta:
        if isinstance(m, FieldInfo):
            found = _upper(m.metadata)
            if found is not None:
                return found
        for attr in ("le", "lt"):
            v = getattr(m, attr, None)
            if v is not None:
                return v
    return None


def _slots(annotation, suffix: str = ""):
    """(suffix, kind, upper bound or None) of each number an annotation can hold; models excluded."""
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        base, *meta = typing.get_args(annotation)
        for sfx, kind, up in _slots(base, suffix):
            yield sfx, kind, up if up is not None else _upper(meta)
    elif origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(annotation):
            yield from _slots(arg, suffix)
    elif origin is dict:
        yield from _slots(typing.get_args(annotation)[1], suffix + ".<key>")
    elif origin in (list, tuple, set, frozenset):
        for arg in typing.get_args(annotation):
            yield from _slots(arg, suffix + ".<item>")
    elif annotation in (int, float):
        yield suffix, annotation, None


def _models_in(annotation) -> list[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [m for arg in typing.get_args(annotation) for m in _models_in(arg)]


def scenario_fields(kind: str = "training") -> list[tuple[str, FieldInfo, type[BaseModel] | None]]:
    """(dotted path, FieldInfo, model class or None) of every field of a ``kind`` scenario, sections too."""
    out = []

    def walk(cls: type[BaseModel], prefix: str) -> None:
        for name, f in cls.model_fields.items():
            models = _models_in(f.annotation)
            if name == "workload" and cls is Scenario:
                models = [m for m in models if m.model_fields["kind"].default == kind]
            out.append((prefix + name, f, models[0] if models else None))
            for m in models:
                walk(m, prefix + name + ".")

    walk(Scenario, "")
    return out


def numeric_fields(kind: str = "training") -> list[tuple[str, type, float | None, str | None]]:
    """(path, int/float, upper bound, reason) of every number a ``kind`` scenario holds.

    A mapping's values appear as ``path.<key>``.
    """
    out = []
    for path, f, _ in scenario_fields(kind):
        for suffix, typ, up in _slots(f.annotation):
            out.append((path + suffix, typ, up if up is not None else _upper(f.metadata), bound_reason(f)))
    return out


def all_models() -> set[type[BaseModel]]:
    return {cls for kind in ("training", "serving") for _, _, cls in scenario_fields(kind) if cls} | {Scenario}


# ---------------------------------------------------------------- the bounds


@pytest.mark.parametrize("kind", ["training", "serving"])
def test_every_numeric_field_has_an_upper_bound(kind):
    fields = numeric_fields(kind)
    assert len(fields) > 40  # the walk reaches every section
    unbounded = [path for path, _, up, _ in fields if up is None]
    assert not unbounded, f"numeric fields without le=/lt= (use moesim.schemas._base.bounded): {unbounded}"


@pytest.mark.parametrize("kind", ["training", "serving"])
def test_every_bound_above_one_says_why(kind):
    missing = [path for path, _, up, why in numeric_fields(kind) if up is not None and up > 1 and not why]
    assert not missing, f"bounds without a reason (bounded(..., why=...)): {missing}"


def test_no_int_bound_reaches_int64():
    for kind in ("training", "serving"):
        for path, _, up, _ in numeric_fields(kind):
            assert up is not None and up < 2**63, path


def test_the_walk_covers_every_model_class():
    names = {cls.__name__ for cls in all_models()}
    assert {"ModelSpec", "MLASpec", "DeviceSpec", "NodeSpec", "ClusterSpec", "HardwareSpec", "PlanSpec",
            "TrainingWorkload", "LengthDist", "ArrivalSpec", "ServingWorkload", "RoutingSpec"} <= names


def test_json_schema_carries_maximum_and_reason():
    schema = Scenario.model_json_schema()
    routing = schema["$defs"]["RoutingSpec"]["properties"]["capacity_factor"]
    assert routing["maximum"] == 64 and "dropless" in routing[BOUND_REASON]
    peak = schema["$defs"]["DeviceSpec"]["properties"]["peak_tflops"]
    assert peak["additionalProperties"]["maximum"] == 1e6 and BOUND_REASON in peak
    missing = []
    for name, d in schema["$defs"].items():
        for prop, spec in d.get("properties", {}).items():
            variants = spec.get("anyOf", [spec])
            for v in variants + [spec.get("additionalProperties") or {}]:
                if isinstance(v, dict) and v.get("type") in ("integer", "number") and "enum" not in v and \
                        "maximum" not in v and "exclusiveMaximum" not in v:
                    missing.append(f"{name}.{prop}")
    assert not missing, missing


# ---------------------------------------------------------------- the messages


OVER = [
    ("routing.capacity_factor", 1e300,
     "routing.capacity_factor = 1e+300: must be <= 64 (beyond 64 is far past any capacity factor in use"),
    ("workload.total_tokens", 1e300, "workload.total_tokens = 1e+300: must be <= 1e+16 (1000x the largest"),
    ("model.n_layers", 2**64, "model.n_layers = 18446744073709551616: must be <= 1024 (8x the deepest"),
    ("model.n_layers", 1e300, "model.n_layers = 1e+300: must be <= 1024 ("),
    ("model.d_model", 10**5000, "model.d_model = <int of 16610 bits>: must be <= 1048576 ("),
    ("routing.capacity_factor", 10**400, "routing.capacity_factor = 100000000000000000000000000000000000000000000000000000000...: must be <= 64 ("),
    ("hardware.device.peak_tflops", {"bf16": 1.7e308}, "hardware.device.peak_tflops.bf16 = 1.7e+308: must be <= 1000000 (1 EFLOP/s"),
    ("plan.dp", 2**63, "plan.dp = 9223372036854775808: must be <= 16777216 ("),
]


@pytest.mark.parametrize("path, value, expected", OVER, ids=[f"{p}-{i}" for i, (p, _, _) in enumerate(OVER)])
def test_over_the_bound_says_why_in_one_line(raw, path, value, expected):
    node = raw
    keys = path.split(".")
    for k in keys[:-1]:
        node = node.setdefault(k, {})
    node[keys[-1]] = value
    with pytest.raises(InputError) as info:
        scenario_from_dict(raw)
    msg = str(info.value)
    assert msg.startswith(expected), msg
    assert "\n" not in msg and len(msg) < 400


def test_values_at_the_bound_are_accepted(raw):
    raw["routing"]["capacity_factor"] = 64
    raw["workload"]["total_tokens"] = 1e16
    raw["hardware"]["device"] = {"peak_tflops": {"bf16": 1e6}, "mem_bw_gbps": 1e8}
    s = scenario_from_dict(raw)
    assert s.routing.capacity_factor == 64 and s.hardware.device.peak_tflops["bf16"] == 1e6


def test_set_overrides_are_bounded_too(root):
    path = root / "scenarios" / "mixtral-8x7b-h100-train.yaml"
    with pytest.raises(InputError, match=r"^routing.capacity_factor = '1e300': must be <= 64 \(beyond 64"):
        load_scenario(path, ["routing.capacity_factor=1e300"])
    with pytest.raises(InputError, match=r"^workload.total_tokens = 1e\+300: must be <= 1e\+16"):
        load_scenario(path, ["workload.total_tokens=1.0e+300"])


# ---------------------------------------------------------------- real configs stay inside


@pytest.mark.parametrize("path", SCENARIO_FILES, ids=[p.stem for p in SCENARIO_FILES])
def test_shipped_scenarios_are_within_bounds(path):
    load_scenario(path)


@pytest.mark.parametrize("path", SCENARIO_FILES, ids=[p.stem for p in SCENARIO_FILES])
def test_a_dumped_scenario_validates_back_to_itself(path):
    # a notebook user saves s.model_dump() and loads it again: every default written out must be accepted
    # (the disaggregated scenario's default top-level plan was refused as "set")
    s = load_scenario(path)
    for mode in ("python", "json"):
        assert Scenario.model_validate(s.model_dump(mode=mode)) == s


def test_presets_are_within_bounds():
    from moesim.presets import HARDWARE, MODELS
    from moesim.schemas import HardwareSpec, ModelSpec

    for data in MODELS.values():
        ModelSpec.model_validate(data)
    for data in HARDWARE.values():
        HardwareSpec.model_validate(data)


def test_every_shipped_yaml_is_far_below_the_file_limits():
    from moesim.loader import MAX_DEPTH, MAX_SCENARIO_BYTES

    for p in SCENARIO_FILES:
        assert p.stat().st_size < MAX_SCENARIO_BYTES // 100
        depth = max_depth(yaml.safe_load(p.read_text()))
        assert depth < MAX_DEPTH // 4, p


def max_depth(data, d: int = 0) -> int:
    if isinstance(data, dict):
        return max([max_depth(v, d + 1) for v in data.values()] or [d + 1])
    if isinstance(data, list):
        return max([max_depth(v, d + 1) for v in data] or [d + 1])
    return d
