"""Typed reads of Hugging Face ``config.json`` keys, the checkpoint's number format, and the model's name.

transformers builds its modules straight from these values (``nn.Linear(hidden_size, ...)``), so a value
of the wrong JSON type fails there; the importer refuses it too, naming the key, instead of letting
pydantic turn ``"2048"`` into 2048 or ``bool("false")`` into True.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from moesim.errors import short_repr


class HFConfigError(ValueError):
    """A config.json moesim cannot read faithfully; the message (one line) names the key."""


def whole(key: str, value: Any, least: int = 1, what: str = "") -> int:
    """``value`` as an int when it is a JSON integer of at least ``least``; an integral float (2048.0)
    counts, as pydantic took it before. Text, booleans, fractions, NaN and infinities are refused."""
    if isinstance(value, float) and value.is_integer():  # False for nan and inf
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < least:
        what = what or ("a positive whole number" if least == 1 else f"a whole number >= {least}")
        text = " (a JSON number, not text)" if isinstance(value, str) else ""
        raise HFConfigError(f"key {key!r} = {short_repr(value)}: expected {what}{text}")
    return value


def flag(key: str, value: Any) -> bool:
    """``value`` when it is a JSON boolean; ``"false"`` is refused (``bool("false")`` is True)."""
    if not isinstance(value, bool):
        raise HFConfigError(f"key {key!r} = {short_repr(value)}: expected true or false (a JSON boolean)")
    return value


class Section:
    """One mapping of the config (the top level, or a nested block such as DBRX's ``ffn_config``)
    that records the dotted path of every key read, so unread MoE keys can be named afterwards."""

    def __init__(self, data: dict, read: set[str], prefix: str = "") -> None:
        self.data, self.read, self.prefix = data, read, prefix

    def req(self, key: str) -> Any:
        """The value of a required key (KeyError with its dotted path when missing)."""
        self.read.add(self.prefix + key)
        if key not in self.data:
            raise KeyError(self.prefix + key)
        if self.data[key] is None:  # never a silent default: ModelSpec would fill a dense model's width in
            raise HFConfigError(f"key {self.prefix + key!r} is null: this model_type needs its value")
        return self.data[key]

    def opt(self, key: str, default: Any = None) -> Any:
        """The value of an optional key; ``default`` when missing or null (HF writes null for "off")."""
        self.read.add(self.prefix + key)
        value = self.data.get(key)
        return default if value is None else value

    def count(self, key: str, least: int = 1, what: str = "") -> int:
        """A required whole-number key (:func:`whole`)."""
        return whole(self.prefix + key, self.req(key), least, what)

    def opt_count(self, key: str, default: int | None, least: int = 1) -> int | None:
        """An optional whole-number key; ``default`` when missing or null."""
        value = self.opt(key)
        return default if value is None else whole(self.prefix + key, value, least)

    def opt_flag(self, key: str, default: bool) -> bool:
        """An optional boolean key; ``default`` when missing or null."""
        value = self.opt(key)
        return default if value is None else flag(self.prefix + key, value)

    def has(self, key: str) -> bool:
        """Whether ``key`` is present and not null (reading nothing)."""
        return self.data.get(key) is not None

    def sub(self, key: str) -> Section:
        """A nested mapping (``text_config``, ``ffn_config``)."""
        value = self.req(key)
        if not isinstance(value, dict):
            raise HFConfigError(f"key {self.prefix + key!r} = {short_repr(value)}: expected a mapping")
        return Section(value, self.read, f"{self.prefix}{key}.")

    def skip(self, *keys: str) -> None:
        """Mark keys as understood and deliberately unused."""
        self.read.update(self.prefix + k for k in keys)


# ---------------------------------------------------------------- number format

#: ``torch_dtype`` values and the ``model.dtype`` each reads as. float32 reads as bf16: an fp32 checkpoint
#: (allenai/OLMoE-1B-7B-0924 ships one) is neither served nor trained in fp32 -- vLLM's ``dtype: auto``
#: serves it in 16-bit and training runs bf16 mixed precision -- so fp32 would quadruple its weight memory
#: and halve its speed against every real run. ``model.dtype: fp32`` beside ``hf_config`` still asks for it.
TORCH_DTYPES = {"bfloat16": "bf16", "float16": "fp16", "float32": "bf16"}
UNDERSTOOD_TORCH = "bfloat16, float16, float32 (read as bf16)"
UNDERSTOOD_QUANT = "fp8; gptq or awq with bits 4 or 8; mxfp4; modelopt or modelopt_fp4 with quant_algo NVFP4 or FP8"
FIX = "set model.dtype to the weights' precision (e.g. int4, fp8) beside model.hf_config"
_ALGOS = ("NVFP4", "FP8")


def _quantized(quant: dict, moe: bool, base: str | None) -> dict[str, str] | None:
    """``dtype``/``expert_dtype`` for a ``quantization_config`` moesim has a dtype for, None otherwise.

    NVIDIA's ModelOpt checkpoints say ``quant_method: modelopt`` (vLLM also reads ``modelopt_fp4``) with
    ``quant_algo`` NVFP4 or FP8; an MoE export whose ``exclude_modules`` (or ``ignore``) list names attention
    modules keeps them at ``torch_dtype`` (``base``) and quantizes the experts (``expert_dtype``):
    nvidia/DeepSeek-R1-FP4 (Model-Optimizer issue #150; ModelOpt's DeepSeek ``ptq.py`` disables ``*attn*``
    quantizers by default) and ModelOpt's Qwen3-MoE NVFP4 exports since 2026-01 (Model-Optimizer PR #735:
    q/k/v) store their attention projections in BF16. GPT-OSS's mxfp4 covers the experts only (~98 % of
    the weights); the rest keeps ``torch_dtype``."""
    method, bits = quant.get("quant_method"), quant.get("bits")
    if method == "fp8":
        return {"dtype": "fp8"}
    if method in ("gptq", "awq") and bits in (4, 8):
        return {"dtype": f"int{int(bits)}"}
    if method == "mxfp4":
        return {"expert_dtype": "mxfp4"}
    algo = str(quant.get("quant_algo", "")).upper()
    if method in ("modelopt", "modelopt_fp4") and algo in _ALGOS:
        excluded = quant.get("exclude_modules") or quant.get("ignore") or []
        if moe and base is not None and any("attn" in str(m) for m in excluded):
            return {"expert_dtype": algo.lower()}  # attention (and the rest) at torch_dtype
        return {"dtype": algo.lower()}
    return None


def _unknown_quant(quant: Any) -> str:
    """One-line refusal of a ``quantization_config`` :func:`_quantized` has no dtype for."""
    if not isinstance(quant, dict):
        return f"key 'quantization_config' = {short_repr(quant)}: expected a mapping; {FIX}"
    method = quant.get("quant_method")
    detail = {"gptq": "bits", "awq": "bits", "modelopt": "quant_algo", "modelopt_fp4": "quant_algo"}.get(str(method))
    extra = f" with {detail} = {short_repr(quant.get(detail))}" if detail else ""
    return (f"key 'quantization_config.quant_method' = {short_repr(method)}{extra}: moesim has no dtype for it "
            f"(understood: {UNDERSTOOD_QUANT}); {FIX}")


def _torch_dtype(cfg: dict, section: dict) -> tuple[str, Any]:
    """(dotted key, value) of the checkpoint's ``torch_dtype`` (``dtype`` since transformers 4.56), in
    ``section`` (Llama-4's ``text_config``) first; ("", None) when neither is given."""
    for where, prefix in ((section, "text_config." if section is not cfg else ""), (cfg, "")):
        for key in ("torch_dtype", "dtype"):
            if where.get(key) is not None:
                return prefix + key, where[key]
    return "", None


def dtypes(cfg: dict, section: dict, moe: bool, dtype_set: bool) -> dict[str, str]:
    """``dtype`` (and ``expert_dtype``) fields: the checkpoint's quantization when moesim has a dtype for
    it, else ``torch_dtype`` (``dtype`` in transformers >= 4.56). A quantization or ``torch_dtype`` moesim
    cannot name is refused -- keeping 16 bits would misstate every byte -- unless the scenario gives
    ``model.dtype`` itself (``dtype_set``), which then decides."""
    key, raw = _torch_dtype(cfg, section)
    base = TORCH_DTYPES.get(raw) if isinstance(raw, str) else None
    quant = cfg.get("quantization_config")
    out = {} if quant is None else (_quantized(quant, moe, base) if isinstance(quant, dict) else None)
    if out is None:
        if dtype_set:
            return {}
        raise HFConfigError(_unknown_quant(quant))
    if "dtype" in out:
        return out
    if raw is not None and base is None:
        if dtype_set:
            return out
        raise HFConfigError(f"key {key!r} = {short_repr(raw)}: not a precision moesim reads "
                            f"(understood: {UNDERSTOOD_TORCH}); {FIX}")
    return {"dtype": base, **out} if base else out


# ---------------------------------------------------------------- name


def path_text(path: str | Path, limit: int = 100) -> str:
    """``repr`` of ``path`` for a one-line message, clipped at the front: the file's name is what tells."""
    text = str(path)
    return repr(text if len(text) <= limit else "..." + text[3 - limit:])


def name_from_path(p: Path) -> str:
    """The model's name from where its config.json lies: the file's stem, or for a ``config.json`` its
    folder (``models/Qwen3-30B-A3B/config.json``), or the repository of a Hugging Face cache snapshot
    (``models--Qwen--Qwen3-30B-A3B/snapshots/<hash>/config.json``); "" when the path says nothing."""
    if p.name != "config.json":
        return p.stem
    folder = p.absolute().parent
    repo = folder.parent.parent.name
    if folder.parent.name == "snapshots" and repo.startswith("models--"):
        return repo.split("--")[-1]
    return folder.name
