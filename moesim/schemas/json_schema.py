"""The scenario's JSON Schema as a scenario file is written, for editors and generic validators.

``Scenario.model_json_schema()`` describes the scenario after its presets are expanded: ``model`` and ``hardware``
as whole specs. A file names them as presets instead (``hardware: h100-sxm``, ``model: {preset: mixtral-8x7b,
dtype: fp8}``, ``model: {hf_config: config.json}``), which that schema refused in every shipped scenario. Here each
of those places takes any of the forms ``moesim.resolve`` expands: a preset name, a preset with overrides (every
field optional, nested sections too, as they are deep-merged), a Hugging Face ``config.json`` with overrides
(models), or the whole spec; ``workload.trainable`` may be a mode's name.
"""

from __future__ import annotations

import copy
from typing import Any

from moesim.presets import HARDWARE, MODELS

#: Schema definitions a file may give by preset: the presets, and whether an ``hf_config`` form exists.
_PRESET_SPECS = {"ModelSpec": (MODELS, True), "HardwareSpec": (HARDWARE, False)}
_REF = "#/$defs/"


def scenario_json_schema() -> dict[str, Any]:
    """The JSON Schema of a scenario file (draft 2020-12, as pydantic writes it), with the preset forms."""
    from moesim.schemas import Scenario

    schema = Scenario.model_json_schema()
    defs = schema["$defs"]
    for name, (presets, hf) in _PRESET_SPECS.items():
        if name not in defs:
            continue
        overrides = _partial(defs, name)
        fields = defs[overrides]["properties"]
        short = name.removesuffix("Spec")
        defs[f"{short}Preset"] = {"type": "string", "enum": sorted(presets), "description": f"A {short.lower()} preset."}
        forms = [{"$ref": f"{_REF}{short}Preset"},
                 _keyed("preset", {"$ref": f"{_REF}{short}Preset"}, fields, f"A {short.lower()} preset with overrides.")]
        if hf:
            forms.append(_keyed("hf_config", {"type": "string", "description": "Path of a Hugging Face config.json."},
                                fields, "A Hugging Face config.json with overrides."))
        forms.append({"$ref": f"{_REF}{name}"})
        defs[f"{short}Input"] = {"anyOf": forms}
        _retarget(schema, f"{_REF}{name}", f"{_REF}{short}Input")
    if "TrainableSpec" in defs:  # workload.trainable: a mode's name stands for {mode: NAME}
        from moesim.schemas.workload import _TRAINABLE_MODES

        named = sorted(m for m in _TRAINABLE_MODES if m != "lora")  # lora needs its rank: a mapping
        defs["TrainableInput"] = {"anyOf": [{"type": "string", "enum": named,
                                             "description": "A mode's name, for {mode: NAME}."},
                                            {"$ref": f"{_REF}TrainableSpec"}]}
        _retarget(schema, f"{_REF}TrainableSpec", f"{_REF}TrainableInput")
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    return schema


def _keyed(key: str, spec: dict, fields: dict, description: str) -> dict:
    """An object that must hold ``key`` (``spec``) beside any of the optional ``fields``."""
    return {"type": "object", "description": description, "properties": {key: spec, **copy.deepcopy(fields)},
            "required": [key], "additionalProperties": False}


def _partial(defs: dict, name: str) -> str:
    """The name of ``name``'s definition with no field required, nested definitions likewise (made once each)."""
    target = f"{name}Overrides"
    if target in defs:
        return target
    part = copy.deepcopy(defs[name])
    part.pop("required", None)
    defs[target] = part  # before the walk: a definition that refers to itself ends here
    _walk_refs(part, lambda ref: f"{_REF}{_partial(defs, ref[len(_REF):])}"
               if ref.startswith(_REF) and "properties" in defs.get(ref[len(_REF):], {}) else ref)
    return target


def _retarget(node: Any, old: str, new: str) -> None:
    """Every ``$ref`` to ``old`` in ``node`` made one to ``new``, except inside the definitions built from it."""
    _walk_refs(node, lambda ref: new if ref == old else ref, skip_defs=("Input", "Overrides"))


def _walk_refs(node: Any, change, skip_defs: tuple[str, ...] = ()) -> None:
    """Each ``$ref`` in ``node`` replaced by ``change(ref)``, but in the ``$defs`` whose names end in ``skip_defs``."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str):
                node[key] = change(value)
            elif key == "$defs":
                for name, d in value.items():
                    if not name.endswith(skip_defs):
                        _walk_refs(d, change, skip_defs)
            else:
                _walk_refs(value, change, skip_defs)
    elif isinstance(node, list):
        for item in node:
            _walk_refs(item, change, skip_defs)
