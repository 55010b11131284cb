"""Turn the raw scenario mapping into plain data: presets expanded, hf_config read, paths anchored.

Runs before pydantic validation, so both YAML files and Python dicts get the same treatment.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from moesim.errors import short_repr
from moesim.hf_config import MAX_HF_CONFIG_BYTES, HFConfigError, read_config
from moesim.hf_keys import path_text
from moesim.presets import HARDWARE, MODELS
from moesim.shipped import shipped_dir
from moesim.suggest import did_you_mean

#: Fields holding file paths, anchored at the scenario file's folder when relative.
PATH_FIELDS = (("hardware", "profile"), ("routing", "trace"), ("workload", "arrival", "trace"))
#: Every file a scenario may name: the path fields and the Hugging Face configs (read by :func:`_expand`).
FILE_FIELDS = PATH_FIELDS + (("model", "hf_config"), ("workload", "speculative", "draft", "hf_config"))
__all__ = ["BASE_KEYS", "FILE_FIELDS", "KEPT_ON_NEW_BASE", "MAX_HF_CONFIG_BYTES", "PATH_FIELDS", "PresetError",
           "deep_merge", "path_fields", "read_hf_config", "resolve_presets", "set_base"]


def path_fields(data: dict, fields: tuple[tuple[str, ...], ...] = PATH_FIELDS) -> Iterator[tuple[str, dict, str]]:
    """(dotted name, the mapping holding it, its key) of each path field (``fields``, default ``PATH_FIELDS``) that
    the scenario mapping ``data`` sets; the caller may rewrite ``holder[key]`` in place."""
    for path in fields:
        node = data
        for key in path[:-1]:
            node = node.get(key) if isinstance(node, dict) else None
        if isinstance(node, dict) and node.get(path[-1]) is not None:
            yield ".".join(path), node, path[-1]


#: A section's base (what its other fields refine) and what a custom section (one without a base) keeps when
#: a field path gives it one: choices that hold for any base (a model's number formats; a node's and a
#: cluster's size and network), not the custom shape, which would otherwise override the preset field by field.
BASE_KEYS = ("preset", "hf_config")
KEPT_ON_NEW_BASE = {"model": ("dtype", "expert_dtype"), "hardware": ("node", "cluster")}


def set_base(section: str, node: dict, key: str, value: Any) -> None:
    """``node[key] = value`` where ``node`` is the raw ``section`` mapping and ``key`` one of :data:`BASE_KEYS`
    (``--set model.preset=qwen3-30b-a3b``, ``--grid hardware.preset=h100-sxm,h200``). A custom section (no
    base yet) drops its fields but :data:`KEPT_ON_NEW_BASE`, so a custom model's ``n_experts`` or a
    hand-written device does not run under the preset's name; a section with a base keeps its fields,
    which refine whichever base it has (an efficiency override, a smaller ``n_layers``), and loses the
    other base key (a preset replaces an ``hf_config`` and the reverse)."""
    if node.get(key) != value:
        drop = [k for k in node if k in BASE_KEYS] if any(k in node for k in BASE_KEYS) else \
            [k for k in node if k not in KEPT_ON_NEW_BASE[section]]
        for other in drop:
            del node[other]
    node[key] = value


class PresetError(ValueError):
    """An unknown preset or unreadable hf_config; the message names the field."""


def deep_merge(base: dict, override: dict) -> dict:
    """Return ``base`` updated by ``override``, merging nested mappings key by key."""
    out = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _expand(section: str, value: Any, registry: dict[str, dict], base_dir: Path | None) -> Any:
    if isinstance(value, str):
        value = {"preset": value}
    if not isinstance(value, dict):
        return value  # pydantic reports the wrong type with the field name
    value = dict(value)
    if section == "model" and "hf_config" in value:
        if "preset" in value:  # else ModelSpec would call preset an unknown field
            raise PresetError("model.preset and model.hf_config: give one of them (preset: a model moesim ships; "
                              "hf_config: a Hugging Face config.json), with any fields to change beside it")
        path = _hf_config_path(value.pop("hf_config"), base_dir)
        return deep_merge(read_hf_config(path, dtype_set=value.get("dtype") is not None), value)
    if "preset" not in value:
        return value
    name = value.pop("preset")
    if not isinstance(name, str) or name not in registry:
        hint = did_you_mean(str(name), registry, n=2, joiner=" or ")
        raise PresetError(f"{section}.preset = {name!r}: unknown preset{'; ' + hint if hint else ''}; "
                          f"allowed: {', '.join(sorted(registry))}")
    return deep_merge(registry[name], value)


def _hf_config_path(raw: Any, base_dir: Path | None) -> Path:
    """The path ``model.hf_config = raw`` names. A relative one is read from the scenario file's folder,
    but for a shipped scenario from the working folder: a shipped scenario's folder lies inside moesim,
    and such a path can only have come from ``--set`` (which the loader anchors at the working folder
    only when it names a file, so a model's folder arrives here relative)."""
    label = f"model.hf_config = {short_repr(raw)}"
    if not isinstance(raw, (str, Path)):
        raise PresetError(f"{label}: expected the path of a config.json")
    if not str(raw).strip():  # Path("") is the scenario's folder: never what was meant
        raise PresetError(f"{label}: empty path; expected the path of a config.json (or of the model's folder)")
    p = Path(raw).expanduser()
    if p.is_absolute() or base_dir is None:
        return p
    shipped = _is_shipped(base_dir)
    path = (Path.cwd() if shipped else base_dir) / p
    try:
        found = path.exists()
    except (OSError, ValueError):  # a name the OS rejects: read_config says so in one line
        return path
    if not found:
        where = ("the working folder, as the scenario is a shipped one" if shipped else
                 "a relative path is read from the scenario file's folder, and from --set the working folder's "
                 "file first")
        raise PresetError(f"{label}: not found; looked for {path_text(path)} ({where})")
    return path


def _is_shipped(folder: Path) -> bool:
    """Whether ``folder`` is the shipped scenarios' folder (inside the package or the checkout)."""
    try:
        return folder.resolve() == shipped_dir().resolve()
    except (OSError, ValueError):
        return False


def _anchor(path: Any, base_dir: Path | None) -> Any:
    if not isinstance(path, (str, Path)) or base_dir is None:
        return path
    p = Path(path).expanduser()
    return str(p if p.is_absolute() else base_dir / p)


def resolve_presets(data: Any, base_dir: Path | None = None) -> Any:
    """Expand ``model``/``hardware`` presets and ``hf_config``; anchor relative paths at ``base_dir``."""
    if not isinstance(data, dict):
        return data
    data = dict(data)
    if "model" in data:
        data["model"] = _expand("model", data["model"], MODELS, base_dir)
    if "hardware" in data:
        data["hardware"] = _expand("hardware", data["hardware"], HARDWARE, base_dir)
    spec = data.get("workload", {}).get("speculative") if isinstance(data.get("workload"), dict) else None
    if isinstance(spec, dict) and spec.get("draft") is not None:
        spec = dict(spec, draft=_expand("workload.speculative.draft", spec["draft"], MODELS, base_dir))
        data["workload"] = dict(data["workload"], speculative=spec)
    for label, node, key in path_fields(data):
        node[key] = _anchor(node[key], base_dir)
        _check_path(label, node[key])
    return data


def _check_path(label: str, path: Any) -> None:
    """A path the OS cannot even look up (a name too long, a NUL byte) fails here in one line;
    a path that merely does not exist is reported by the scenario's own rules."""
    if not isinstance(path, (str, Path)):
        return  # pydantic reports the wrong type
    try:
        Path(path).is_file()
    except (OSError, ValueError) as exc:
        raise PresetError(f"{label} = {short_repr(str(path))}: not a usable path ({getattr(exc, 'strerror', None) or exc})") from None


def read_hf_config(path: str | Path, dtype_set: bool = False) -> dict:
    """ModelSpec fields from a Hugging Face ``config.json`` or the folder holding it (formats:
    ``moesim.hf_config``); ``dtype_set``: the scenario gives ``model.dtype``, so a quantization moesim has
    no dtype for is no error. Any problem is a one-line PresetError naming ``model.hf_config`` and the key."""
    try:
        return read_config(path, dtype_set)
    except HFConfigError as exc:
        raise PresetError(str(exc)) from None
