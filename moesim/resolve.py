"""Turn the raw scenario mapping into plain data: presets expanded, hf_config read, paths anchored.

Runs before pydantic validation, so both YAML files and Python dicts get the same treatment.
"""

from __future__ import annotations

import copy
import json
import sys
from pathlib import Path
from typing import Any

from moesim.errors import short_repr
from moesim.presets import HARDWARE, MODELS

# Fields holding file paths, anchored at the scenario file's folder when relative.
_PATH_FIELDS = (("hardware", "profile"), ("routing", "trace"), ("workload", "arrival", "trace"))
#: Largest Hugging Face config.json read (real ones are 1-10 KiB).
MAX_HF_CONFIG_BYTES = 1 << 20


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
        path = _anchor(value.pop("hf_config"), base_dir)
        if not isinstance(path, (str, Path)):
            raise PresetError(f"model.hf_config = {short_repr(path)}: expected the path of a config.json")
        return deep_merge(read_hf_config(path), value)
    if "preset" not in value:
        return value
    name = value.pop("preset")
    if not isinstance(name, str) or name not in registry:
        raise PresetError(f"{section}.preset = {name!r}: unknown preset; allowed: {', '.join(sorted(registry))}")
    return deep_merge(registry[name], value)


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
    for path in _PATH_FIELDS:
        node = data
        for key in path[:-1]:
            node = node.get(key) if isinstance(node, dict) else None
        if isinstance(node, dict) and node.get(path[-1]) is not None:
            node[path[-1]] = _anchor(node[path[-1]], base_dir)
            _check_path(".".join(path), node[path[-1]])
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


def _int(value: Any) -> int | None:
    """``value`` when it is a positive int (not a bool), else None."""
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


def read_hf_config(path: str | Path) -> dict:
    """Map a Hugging Face ``config.json`` (Llama, Mixtral, DeepSeek-V2/V3 formats) to ModelSpec fields.

    Every problem (missing, oversized, not JSON, nested too deep, a key missing) is a PresetError
    naming ``model.hf_config``; wrong values are left to the ModelSpec validation to name.
    """
    from moesim.errors import InputError
    from moesim.loader import check_structure, read_text_file

    p = Path(path)
    label = f"model.hf_config = {short_repr(str(path))}"
    try:
        text = read_text_file(p, MAX_HF_CONFIG_BYTES, "a Hugging Face config.json", label=label)
        try:
            cfg = json.loads(text)
        except RecursionError:
            raise PresetError(f"{label}: nested too deeply to be a config.json") from None
        except ValueError as exc:  # JSONDecodeError, or an integer of more than 4300 digits
            first = str(exc).splitlines()[0] if str(exc) else "invalid JSON"
            if "digits" in first:
                first = f"a number of more than {sys.get_int_max_str_digits()} digits"
            raise PresetError(f"{label}: not valid JSON ({first[:120]})") from None
        if not isinstance(cfg, dict):
            raise PresetError(f"{label}: expected a JSON object")
        check_structure(cfg, label)
    except InputError as exc:
        raise PresetError(str(exc)) from None
    try:
        out = _hf_fields(cfg, p)
    except KeyError as exc:
        raise PresetError(f"{label}: missing key {exc.args[0]!r}") from None
    dtype = {"bfloat16": "bf16", "float16": "fp16", "float32": "fp32"}.get(str(cfg.get("torch_dtype")))
    if dtype:
        out["dtype"] = dtype
    return out


def _hf_fields(cfg: dict, p: Path) -> dict[str, Any]:
    """ModelSpec fields from a config.json mapping (KeyError names a missing key)."""
    d = cfg["hidden_size"]
    heads = cfg["num_attention_heads"]
    derived_head_dim = _int(d) // _int(heads) if _int(d) and _int(heads) else None
    out: dict[str, Any] = dict(
        name=cfg.get("_name_or_path") or cfg.get("model_type") or p.parent.name or "hf-model",
        n_layers=cfg["num_hidden_layers"], d_model=d, n_heads=heads,
        n_kv_heads=cfg.get("num_key_value_heads") or heads,
        head_dim=cfg.get("head_dim") or derived_head_dim,
        vocab_size=cfg["vocab_size"], ffn_hidden=cfg["intermediate_size"],
        tied_embeddings=bool(cfg.get("tie_word_embeddings", False)),
        max_seq_len=cfg.get("max_position_embeddings", 4096),
    )
    if "num_local_experts" in cfg:  # Mixtral / Qwen-MoE style
        out.update(n_experts=cfg["num_local_experts"], top_k=cfg.get("num_experts_per_tok", 2),
                   expert_ffn_hidden=cfg["intermediate_size"])
    if "n_routed_experts" in cfg:  # DeepSeek-V2/V3 style
        out.update(
            n_experts=cfg["n_routed_experts"], top_k=cfg.get("num_experts_per_tok", 8),
            n_shared_experts=cfg.get("n_shared_experts") or 0,
            expert_ffn_hidden=cfg.get("moe_intermediate_size", cfg["intermediate_size"]),
            first_dense_layers=cfg.get("first_k_dense_replace", 0),
            moe_every=cfg.get("moe_layer_freq", 1),
        )
    if "kv_lora_rank" in cfg:
        out["mla"] = dict(
            q_lora_rank=cfg.get("q_lora_rank") or 0, kv_lora_rank=cfg["kv_lora_rank"],
            qk_nope_head_dim=cfg["qk_nope_head_dim"], qk_rope_head_dim=cfg["qk_rope_head_dim"],
            v_head_dim=cfg["v_head_dim"],
        )
    return out
