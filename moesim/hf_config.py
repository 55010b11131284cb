"""Read a Hugging Face ``config.json`` into ModelSpec fields, one small reader per ``model_type``.

Understood ``model_type`` values: dense ``llama``, ``mistral``, ``qwen2``, ``qwen3``; MoE ``mixtral``,
``qwen2_moe``, ``qwen3_moe``, ``deepseek_v2``, ``deepseek_v3``, ``kimi_k2`` (DeepSeek-V3's layout), ``dbrx`` (nested ``attn_config`` and
``ffn_config``), ``olmoe``, ``grok-1`` (the hpcai-tech Hugging Face port of Grok-1),
``gpt_oss``, ``llama4`` (its ``text_config``) and ``llama4_text``. A config without ``model_type``
(hand-written) is read as DeepSeek, Mixtral or Llama by its keys, as before.

Never a silent dense fallback: an unknown ``model_type``, a key that looks like MoE (``expert``,
``moe``, ``router``, ``sparse`` in its name) that the family's reader did not read, or a layout
ModelSpec cannot hold (Qwen's ``mlp_only_layers``, Llama-4's ``moe_layers``, DeepSeek's
``first_k_dense_replace``/``moe_layer_freq`` are turned into the set of MoE layers, which must be
"``first_dense_layers`` dense layers, then every ``moe_every``-th layer MoE") raises HFConfigError,
one line naming the key and what is allowed. Keys that only steer training (aux-loss weights,
router noise, logging flags) are read as understood and dropped: they change neither shapes nor cost.

What the accounting does not represent (parameter counts stay within ~1% of the published totals):
  * biases: Qwen2/Qwen2-MoE QKV biases, GPT-OSS attention, router and expert biases (~0.05%);
  * GPT-OSS attention sinks (one scalar per head); its alternating 128-token sliding window
    (``sliding_window``, ``layer_types``), Mistral's and Mixtral's ``sliding_window`` and Llama-4's
    chunked attention (``attention_chunk_size`` on its RoPE layers, ``no_rope_layers``) are read as
    ``local_attention`` (attention over the window; in serving, ``workload.local_attention_mode`` says
    whether those layers also keep only the window's KV); Qwen's ``use_sliding_window`` (off in every
    published Qwen config) is not read;
  * Qwen2-MoE's shared-expert sigmoid gate (d_model weights a layer), Qwen3/OLMoE q/k norms, Grok-1's
    four norms a layer; DeepSeek-V3's multi-token-prediction layer (``num_nextn_predict_layers``,
    ~14B, not part of the published 671B) and its router bias;
  * Llama-4's vision encoder (outside ``text_config``; ~1% of Scout's published 109B);
  * quantized checkpoints: ``quantization_config`` fp8 reads as ``dtype: fp8``, mxfp4 (GPT-OSS) as
    ``expert_dtype: mxfp4`` beside ``torch_dtype`` (its attention, router, embeddings and head stay
    16-bit; serving only: drop ``expert_dtype`` to train), 4/8-bit GPTQ/AWQ as ``int4``/``int8``
    (serving only; set ``model.dtype`` to train) and ModelOpt's NVFP4/FP8 as ``nvfp4``/``fp8`` (an MoE
    export that excludes its attention: ``expert_dtype`` beside ``torch_dtype``, :func:`moesim.hf_keys.dtypes`);
    any other quantization, or a ``torch_dtype`` other than bfloat16/float16/float32, is refused unless the
    scenario sets ``model.dtype`` beside ``hf_config``. ``torch_dtype: float32`` reads as bf16 (how vLLM
    serves and mixed precision trains an fp32 checkpoint; ``model.dtype: fp32`` asks for fp32).

Values are read by their JSON type (:mod:`moesim.hf_keys`): a width, count or layer step must be a
positive whole number (``"2048"``, ``2048.5``, NaN are refused naming the key), ``tie_word_embeddings``
a JSON boolean; ``num_experts_per_tok`` at most the experts and ``num_key_value_heads`` a divisor of
the query heads, as transformers needs.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from moesim.errors import InputError, short_repr
from moesim.hf_keys import HFConfigError, Section, dtypes, name_from_path, path_text
from moesim.schemas._base import MAX_LAYERS

__all__ = ["FAMILIES", "MAX_HF_CONFIG_BYTES", "HFConfigError", "model_fields", "read_config"]

# Names that mark a key as part of the MoE description; one left unread means the import is wrong.
_MOE_WORDS = re.compile(r"expert|moe|router|sparse", re.IGNORECASE)
# Training-only knobs: loss weights, router noise, logging. Shapes and cost do not depend on them.
_TRAINING_KNOBS = ("router_aux_loss_coef", "output_router_logits", "router_jitter_noise",
                   "router_z_loss_coef", "moe_jitter_eps", "moe_loss_weight")
#: Largest Hugging Face config.json read (real ones are 1-10 KiB).
MAX_HF_CONFIG_BYTES = 1 << 20


def _int(value: Any) -> int | None:
    """``value`` when it is a positive int (not a bool), else None."""
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


# ---------------------------------------------------------------- shared pieces


def _attention(s: Section) -> dict:
    """Layers, width, heads and vocabulary of a Llama-style config (widths in elements; context in tokens)."""
    d, heads = s.count("hidden_size"), s.count("num_attention_heads")
    kv = s.opt_count("num_key_value_heads", heads)
    _kv_divides(s.prefix + "num_key_value_heads", kv, "num_attention_heads", heads)
    return dict(n_layers=s.count("num_hidden_layers"), d_model=d, n_heads=heads, n_kv_heads=kv,
                head_dim=s.opt_count("head_dim", d // heads),  # transformers' default, floored as it does
                vocab_size=s.count("vocab_size"), max_seq_len=s.opt_count("max_position_embeddings", 4096))


def _kv_divides(kv_key: str, kv: int, heads_key: str, heads: int) -> None:
    """transformers repeats each KV head over a whole number of query heads (``repeat_kv``)."""
    if heads % kv:
        raise HFConfigError(f"key {kv_key!r} = {kv}: must divide {heads_key} ({heads}), the query heads "
                            "each KV head serves")


def _tied(s: Section, default: bool = False) -> dict:
    """``tie_word_embeddings`` with the family's transformers default when the key is absent."""
    return dict(tied_embeddings=s.opt_flag("tie_word_embeddings", default))


def _experts(s: Section, n_key: str, width: int, k_key: str = "num_experts_per_tok", k_default: int | None = None,
             n: int | None = None) -> dict:
    """Routed experts: how many (``n_key``, or ``n`` already read), how many a token uses (``k_key``; at
    most all of them, as transformers' top-k needs), hidden width of one (elements)."""
    n = s.count(n_key) if n is None else n
    k = s.count(k_key) if k_default is None else s.opt_count(k_key, k_default)
    if k > n:
        raise HFConfigError(f"key {s.prefix + k_key!r} = {k}: must be <= {s.prefix + n_key} ({n}), the experts "
                            "a token can be routed to")
    return dict(n_experts=n, top_k=k, expert_ffn_hidden=width)


def _layout(key: str, moe_layers: Iterable[int], n_layers: Any) -> dict:
    """``first_dense_layers``/``moe_every`` that reproduce exactly the 0-based ``moe_layers``.

    ModelSpec's layer ``i`` is MoE when ``i >= f`` and ``(i - f) % e == e - 1``; any other set
    (dense layers scattered in the middle, say) is refused rather than approximated.
    """
    n = _int(n_layers)
    if n is None or n > MAX_LAYERS:
        return {}  # ModelSpec names the bad n_layers itself
    wanted = frozenset(moe_layers)
    if not wanted:
        raise HFConfigError(f"key {key!r}: leaves no MoE layer; allowed: at least one (or a dense model_type)")
    if not wanted <= set(range(n)):
        raise HFConfigError(f"key {key!r}: names layers outside 0..{n - 1}")
    first = min(wanted)
    for every in range(1, first + 2):
        dense = first - (every - 1)
        if frozenset(range(dense + every - 1, n, every)) == wanted:
            return dict(first_dense_layers=dense, moe_every=every)
    dense_layers = sorted(set(range(n)) - wanted)
    raise HFConfigError(
        f"key {key!r}: dense layers {short_repr(dense_layers, 40)} follow no pattern ModelSpec holds; "
        "allowed: the first N layers dense (first_dense_layers), then every k-th layer MoE (moe_every)")


def _index_list(s: Section, key: str) -> list[int]:
    """A list of 0-based layer indices (Qwen's ``mlp_only_layers``, Llama-4's ``moe_layers``)."""
    value = s.opt(key, [])
    if not isinstance(value, list) or not all(isinstance(i, int) and not isinstance(i, bool) for i in value):
        raise HFConfigError(f"key {s.prefix + key!r} = {short_repr(value)}: expected a list of layer indices")
    return value


def _local_layers(key: str, full: list[bool], kind: str, window: Any) -> dict:
    """``local_attention`` for layers whose full-attention flags are ``full``: every layer local, or
    every ``N``-th full (``i % N == N - 1``); any other layout is refused rather than approximated."""
    n = len(full)
    if not any(full):
        return dict(local_attention=dict(kind=kind, window=window, full_every=0))
    if all(full):
        return {}
    every = full.index(True) + 1
    if full != [i % every == every - 1 for i in range(n)]:
        raise HFConfigError(f"key {key!r}: full-attention layers are not every N-th layer (i % N == N - 1); "
                            "allowed: that layout, or write model.local_attention by hand")
    return dict(local_attention=dict(kind=kind, window=window, full_every=every))


def _sliding(read: Callable[[Section], dict]) -> Callable[[Section], dict]:
    """Mistral and Mixtral: a non-null ``sliding_window`` makes every layer a sliding-window layer."""
    def wrapped(s: Section) -> dict:
        out, window = read(s), s.opt_count("sliding_window", None)
        if window is not None:
            out["local_attention"] = dict(kind="sliding", window=window, full_every=0)
        return out
    return wrapped


def _layer_types(s: Section, n: int, default: list[str]) -> list[bool]:
    """Full-attention flags from ``layer_types`` (``full_attention`` / ``sliding_attention`` /
    ``chunked_attention`` per layer), or ``default`` when absent."""
    types = s.opt("layer_types", default)
    if not isinstance(types, list) or len(types) != n or not all(isinstance(t, str) for t in types):
        raise HFConfigError(f"key {s.prefix + 'layer_types'!r} = {short_repr(types)}: expected one attention "
                            f"type per layer ({n})")
    return [t == "full_attention" for t in types]


# ---------------------------------------------------------------- one reader per family


def _dense(s: Section) -> dict:
    """Llama, Mistral, Qwen2, Qwen3: one SwiGLU FFN per layer."""
    return {**_attention(s), "ffn_hidden": s.count("intermediate_size"), **_tied(s)}


def _every_layer_moe(experts_key: str, tied_default: bool = False) -> Callable[[Section], dict]:
    """Reader for Mixtral (``num_local_experts``), OLMoE and the Grok-1 port (``num_experts``; Grok-1
    ties embeddings by default): every layer MoE, experts as wide as ``intermediate_size``."""
    def read(s: Section) -> dict:
        width = s.count("intermediate_size")
        return {**_attention(s), "ffn_hidden": width, **_tied(s, tied_default), **_experts(s, experts_key, width)}
    return read


def _qwen_moe(s: Section, shared_allowed: bool) -> dict:
    """Qwen2-MoE / Qwen3-MoE: layer i is MoE when not in ``mlp_only_layers`` and
    ``(i + 1) % decoder_sparse_step == 0``; dense layers use ``intermediate_size``."""
    out = {**_attention(s), "ffn_hidden": s.count("intermediate_size"), **_tied(s)}
    n_experts = s.count("num_experts", least=0, what="a whole number of routed experts (0: a dense model)")
    step = s.opt_count("decoder_sparse_step", 1)  # 0 divides by zero in transformers
    dense = set(_index_list(s, "mlp_only_layers"))
    shared = s.opt_count("shared_expert_intermediate_size", 0, least=0)
    if shared and not shared_allowed:
        raise HFConfigError(f"key 'shared_expert_intermediate_size' = {short_repr(shared)}: qwen3_moe has no "
                            "shared expert in transformers; allowed: 0 or absent (qwen2_moe has one)")
    if n_experts == 0:  # transformers builds dense MLPs everywhere
        s.skip("num_experts_per_tok", "moe_intermediate_size")
        return out
    out.update(_experts(s, "num_experts", s.count("moe_intermediate_size"), n=n_experts))
    if shared:
        out.update(n_shared_experts=1, shared_expert_ffn_hidden=shared)
    moe = [i for i in range(min(out["n_layers"], MAX_LAYERS + 1)) if i not in dense and (i + 1) % step == 0]
    out.update(_layout("mlp_only_layers" if dense else "decoder_sparse_step", moe, out["n_layers"]))
    return out


def _deepseek(s: Section) -> dict:
    """DeepSeek-V2/V3: MoE on layer i when ``i >= first_k_dense_replace`` and ``i % moe_layer_freq == 0``;
    multi-head latent attention when ``kv_lora_rank`` is set."""
    out = {**_attention(s), "ffn_hidden": s.count("intermediate_size"), **_tied(s)}
    s.skip("num_nextn_predict_layers", "n_group", "topk_group", "topk_method", "routed_scaling_factor",
           "scoring_func", "norm_topk_prob", "seq_aux", "aux_loss_alpha", "ep_size")
    if s.has("n_routed_experts"):
        out.update(_experts(s, "n_routed_experts", s.count("moe_intermediate_size")),
                   n_shared_experts=s.opt_count("n_shared_experts", 0, least=0))
        first, freq = s.opt_count("first_k_dense_replace", 0, least=0), s.opt_count("moe_layer_freq", 1)
        moe = [i for i in range(min(out["n_layers"], MAX_LAYERS + 1)) if i >= first and i % freq == 0]
        out.update(_layout("moe_layer_freq" if freq != 1 else "first_k_dense_replace", moe, out["n_layers"]))
    else:
        _deepseek_dense(s)
    if "kv_lora_rank" in s.data:  # absent: a hand-written config with plain attention, as before
        out["mla"] = _mla(s)
    return out


_DEEPSEEK_MOE_KEYS = ("num_experts_per_tok", "moe_intermediate_size", "n_shared_experts", "moe_layer_freq")


def _deepseek_dense(s: Section) -> None:
    """A null (or absent) ``n_routed_experts`` makes transformers build dense MLPs everywhere; that is
    refused when MoE keys are set, since then the experts' count is what went missing."""
    given = [k for k in _DEEPSEEK_MOE_KEYS if s.has(k)]
    if given:
        state = "null" if "n_routed_experts" in s.data else "missing"
        raise HFConfigError(f"key 'n_routed_experts' is {state} (transformers then builds a dense model) while "
                            f"MoE keys are set: {', '.join(given)}; allowed: the number of routed experts, or "
                            "no MoE keys for a dense model")
    s.skip("n_routed_experts", *_DEEPSEEK_MOE_KEYS)


def _mla(s: Section) -> dict:
    """Multi-head latent attention. DeepSeek's modelling code has no plain-attention form: a null
    ``kv_lora_rank`` is a broken config, not multi-head attention."""
    if s.data["kv_lora_rank"] is None:
        s.skip("kv_lora_rank")
        raise HFConfigError("key 'kv_lora_rank' is null: DeepSeek-V2/V3 attention is multi-head latent attention, "
                            "built from the KV latent's rank; allowed: a positive whole number (e.g. 512)")
    return dict(q_lora_rank=s.opt_count("q_lora_rank", 0, least=0), kv_lora_rank=s.count("kv_lora_rank"),
                qk_nope_head_dim=s.count("qk_nope_head_dim"), qk_rope_head_dim=s.count("qk_rope_head_dim"),
                v_head_dim=s.count("v_head_dim"))


def _dbrx(s: Section) -> dict:
    """DBRX: MPT-style names, heads in ``attn_config``, experts in ``ffn_config``; every layer MoE."""
    attn, ffn = s.sub("attn_config"), s.sub("ffn_config")
    d, heads, kv = s.count("d_model"), s.count("n_heads"), attn.opt_count("kv_n_heads", 1)
    _kv_divides("attn_config.kv_n_heads", kv, "n_heads", heads)
    width = ffn.count("ffn_hidden_size")
    ffn.skip("moe_normalize_expert_weights", "uniform_expert_assignment")
    return dict(n_layers=s.count("n_layers"), d_model=d, n_heads=heads, n_kv_heads=kv, head_dim=d // heads,
                vocab_size=s.count("vocab_size"), max_seq_len=s.opt_count("max_seq_len", 2048), ffn_hidden=width,
                **_tied(s), **_experts(ffn, "moe_num_experts", width, k_key="moe_top_k", k_default=1))


def _gpt_oss(s: Section) -> dict:
    """GPT-OSS: every layer MoE; ``experts_per_token`` is the original name of ``num_experts_per_tok``."""
    width, top_k = s.count("intermediate_size"), s.count("num_experts_per_tok")
    alias = s.opt_count("experts_per_token", top_k)
    if alias != top_k:
        raise HFConfigError(f"key 'experts_per_token' = {short_repr(alias)}: differs from num_experts_per_tok "
                            f"({short_repr(top_k)}); allowed: equal values")
    out = {**_attention(s), "ffn_hidden": width, **_tied(s), **_experts(s, "num_local_experts", width)}
    n, window = out["n_layers"], s.opt_count("sliding_window", None)
    if window is not None and n <= MAX_LAYERS:  # transformers' default: sliding on even layers, full on odd
        full = _layer_types(s, n, ["full_attention" if i % 2 else "sliding_attention" for i in range(n)])
        out.update(_local_layers("layer_types", full, "sliding", window))
    return out


def _llama4_text(s: Section) -> dict:
    """Llama-4 text model: MoE layers (``moe_layers``, else every ``interleave_moe_layer_step``-th)
    hold routed experts plus one shared expert, all ``intermediate_size`` wide; the other layers are
    dense with ``intermediate_size_mlp``."""
    out = {**_attention(s), "ffn_hidden": s.count("intermediate_size_mlp"), **_tied(s)}
    width = s.count("intermediate_size")
    out.update(_experts(s, "num_local_experts", width), n_shared_experts=1, shared_expert_ffn_hidden=width)
    step, n = s.opt_count("interleave_moe_layer_step", 1), out["n_layers"]
    chunk = s.opt_count("attention_chunk_size", None)
    if chunk is not None and n <= MAX_LAYERS:  # RoPE layers attend within chunks, NoPE layers fully
        interval = _int(s.opt("no_rope_layer_interval", 4))
        if interval is None:
            raise HFConfigError(f"key {s.prefix + 'no_rope_layer_interval'!r}: expected a positive int")
        rope = s.opt("no_rope_layers") or [int((i + 1) % interval != 0) for i in range(n)]  # transformers' default
        if not isinstance(rope, list) or len(rope) != n:
            raise HFConfigError(f"key {s.prefix + 'no_rope_layers'!r} = {short_repr(rope)}: expected one 0/1 per layer ({n})")
        out.update(_local_layers("no_rope_layers", [not r for r in rope], "chunked", chunk))
    if s.has("moe_layers"):
        s.skip("interleave_moe_layer_step")  # transformers derives moe_layers from it only when absent
        out.update(_layout("moe_layers", _index_list(s, "moe_layers"), n))
    else:
        out.update(_layout("interleave_moe_layer_step", range(step - 1, min(n, MAX_LAYERS + 1), step), n))
    return out


def _llama4(s: Section) -> dict:
    """Llama-4 multimodal config: the language model is ``text_config``; the vision tower is left out."""
    text = s.sub("text_config")
    out = _llama4_text(text)
    if not text.has("tie_word_embeddings"):
        out.update(_tied(s))
    return out


FAMILIES: dict[str, Callable[[Section], dict]] = {
    "llama": _dense, "mistral": _sliding(_dense), "qwen2": _dense, "qwen3": _dense,
    "mixtral": _sliding(_every_layer_moe("num_local_experts")),
    "qwen2_moe": lambda s: _qwen_moe(s, shared_allowed=True),
    "qwen3_moe": lambda s: _qwen_moe(s, shared_allowed=False),
    "deepseek_v2": _deepseek, "deepseek_v3": _deepseek, "kimi_k2": _deepseek,
    "dbrx": _dbrx, "olmoe": _every_layer_moe("num_experts"),
    "grok-1": _every_layer_moe("num_experts", tied_default=True), "gpt_oss": _gpt_oss,
    "llama4": _llama4, "llama4_text": _llama4_text,
}


# ---------------------------------------------------------------- entry point


def _family(cfg: dict) -> str:
    """The reader for ``cfg``: its ``model_type``, or (no model_type: a hand-written config) a guess
    from the keys among the formats moesim read before model_type dispatch."""
    model_type = cfg.get("model_type")
    if model_type is None:
        if "n_routed_experts" in cfg or "kv_lora_rank" in cfg:
            return "deepseek_v3"
        return "mixtral" if "num_local_experts" in cfg else "llama"
    if not isinstance(model_type, str) or model_type not in FAMILIES:
        raise HFConfigError(f"model_type {short_repr(model_type)} is not understood; allowed: "
                            f"{', '.join(sorted(FAMILIES))} (or write the model's fields, docs/scenario-fields.md)")
    return model_type


def _unread_moe_keys(data: dict, read: set[str], prefix: str = "") -> list[str]:
    """Dotted paths of MoE-looking keys nobody read, nested mappings included (but not
    ``quantization_config``, which describes storage, not the architecture)."""
    out = []
    for key, value in data.items():
        path = prefix + str(key)
        if _MOE_WORDS.search(str(key)) and path not in read and key not in _TRAINING_KNOBS:
            out.append(path)
        elif isinstance(value, dict) and key != "quantization_config":
            out += _unread_moe_keys(value, read, path + ".")
    return out


def model_fields(cfg: dict, name_hint: str = "hf-model", dtype_set: bool = False) -> dict[str, Any]:
    """ModelSpec fields from a parsed config.json; ``dtype_set``: the scenario gives ``model.dtype``
    itself, so a quantization moesim has no dtype for is no error (:func:`moesim.hf_keys.dtypes`).

    Raises HFConfigError (one line naming the key) for what cannot be read faithfully and KeyError
    (the dotted key) for a required key that is missing; values past ModelSpec's bounds (a layer count
    over 1024, say) are left to ModelSpec to name.
    """
    family = _family(cfg)
    read: set[str] = set()
    out = FAMILIES[family](Section(cfg, read))
    unread = _unread_moe_keys(cfg, read)
    if unread:
        understood = sorted(k for k in read if _MOE_WORDS.search(k))
        keys, them = ((f"key {unread[0]!r} is", "it") if len(unread) == 1
                      else (f"keys {', '.join(map(repr, unread))} are", "them"))
        shown = repr(family) if "model_type" in cfg else f"{family!r} (guessed: the config has no model_type)"
        raise HFConfigError(f"{keys} not understood for model_type {shown}, and ignoring {them} could "
                            f"misdescribe the experts; understood: {', '.join(understood) or 'no MoE keys'}")
    section = cfg.get("text_config") if family == "llama4" and isinstance(cfg.get("text_config"), dict) else cfg
    out["name"] = cfg.get("_name_or_path") or name_hint
    out.update(dtypes(cfg, section, moe=out.get("n_experts", 1) > 1, dtype_set=dtype_set))
    return out


def read_config(path: str | Path, dtype_set: bool = False) -> dict[str, Any]:
    """ModelSpec fields from the config.json at ``path``, or in the folder ``path`` (as ``from_pretrained``
    takes a model's folder); ``dtype_set`` as for :func:`model_fields`.

    Every problem (missing, oversized, not JSON, nested too deep, a key missing or not understood)
    is an HFConfigError whose one-line message starts ``model.hf_config = '<path>'``.
    """
    # local: loader imports resolve, which imports this module
    from moesim.loader import check_structure, read_text_file

    label = f"model.hf_config = {path_text(path)}"
    p = _config_file(Path(path), label)
    try:
        cfg = _parse(read_text_file(p, MAX_HF_CONFIG_BYTES, "a Hugging Face config.json", label=label), label)
        check_structure(cfg, label)
    except InputError as exc:
        raise HFConfigError(str(exc)) from None
    hint = name_from_path(p) or cfg.get("model_type") or "hf-model"
    try:
        return model_fields(cfg, str(hint), dtype_set)
    except KeyError as exc:
        raise HFConfigError(f"{label}: missing key {exc.args[0]!r}") from None
    except HFConfigError as exc:
        raise HFConfigError(f"{label}: {exc}") from None


def _config_file(p: Path, label: str) -> Path:
    """``p``, or the config.json in it when ``p`` is a folder."""
    try:
        if not p.is_dir():
            return p
    except (OSError, ValueError):  # a name the OS rejects: read_text_file says so in one line
        return p
    if not (p / "config.json").is_file():
        raise HFConfigError(f"{label}: is a folder without a config.json; expected a config.json or the model's "
                            "folder that holds one")
    return p / "config.json"


def _parse(text: str, label: str) -> dict:
    """The JSON object in ``text``; anything else is a one-line HFConfigError."""
    try:
        cfg = json.loads(text)
    except RecursionError:
        raise HFConfigError(f"{label}: nested too deeply to be a config.json") from None
    except ValueError as exc:  # JSONDecodeError, or an integer of more than 4300 digits
        first = str(exc).splitlines()[0] if str(exc) else "invalid JSON"
        if "digits" in first:
            first = f"a number of more than {sys.get_int_max_str_digits()} digits"
        raise HFConfigError(f"{label}: not valid JSON ({first[:120]})") from None
    if not isinstance(cfg, dict):
        raise HFConfigError(f"{label}: expected a JSON object")
    return cfg
