"""Hugging Face config.json import, the inputs a newcomer tried: values of the wrong JSON type, number
formats moesim has no dtype for, impossible values, and the ways ``model.hf_config`` names its file.
Each bad input fails in one line naming the Hugging Face key (and the file), never a moesim field."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from moesim import load_scenario
from moesim.cli import main
from moesim.errors import InputError
from moesim.hf_config import model_fields
from tests.test_hf_config import DATA, TRAIN, _cfg, _error, _load

SERVE = {"hardware": {"preset": "h100-sxm", "node": {"devices_per_node": 1}}, "plan": {"dp": 1},
         "workload": {"kind": "serving", "arrival": {"process": "batch", "n_requests": 4},
                      "prompt_tokens": {"dist": "fixed", "value": 64}, "output_tokens": {"dist": "fixed", "value": 4}}}


def _scenario(tmp_path: Path, model: dict, base: dict = TRAIN) -> Path:
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump({"model": model, **base}))
    return path


# ---------------------------------------------------------------- values are read by their JSON type


@pytest.mark.parametrize("key, value, words", [
    ("tie_word_embeddings", "false", "key 'tie_word_embeddings' = 'false': expected true or false"),
    ("tie_word_embeddings", 0, "key 'tie_word_embeddings' = 0: expected true or false"),
    ("hidden_size", "2048", "key 'hidden_size' = '2048': expected a positive whole number (a JSON number, not text)"),
    ("num_hidden_layers", "48", "key 'num_hidden_layers' = '48': expected a positive whole number"),
    ("hidden_size", 2048.5, "key 'hidden_size' = 2048.5: expected a positive whole number"),
    ("hidden_size", float("nan"), "key 'hidden_size' = nan: expected a positive whole number"),
    ("moe_intermediate_size", True, "key 'moe_intermediate_size' = True: expected a positive whole number"),
    ("max_position_embeddings", -1, "key 'max_position_embeddings' = -1: expected a positive whole number"),
])
def test_a_value_of_the_wrong_json_type_is_refused_naming_the_key(tmp_path, key, value, words):
    msg = _error(tmp_path, _cfg("qwen3-30b-a3b", **{key: value}))
    assert words in msg and "/config.json': key" in msg, msg  # the file, then the key


def test_json_booleans_and_integral_floats_are_read_as_given(tmp_path):
    assert _load(tmp_path, _cfg("qwen3-30b-a3b", tie_word_embeddings=True)).model.tied_embeddings
    assert not _load(tmp_path, _cfg("qwen3-30b-a3b", tie_word_embeddings=False)).model.tied_embeddings
    fields = model_fields(_cfg("qwen3-30b-a3b", hidden_size=2048.0))  # as pydantic took it before
    assert fields["d_model"] == 2048 and isinstance(fields["d_model"], int)


# ---------------------------------------------------------------- values the model cannot have


@pytest.mark.parametrize("name, changes, words", [
    ("qwen3-30b-a3b", dict(decoder_sparse_step=0), "key 'decoder_sparse_step' = 0: expected a positive whole number"),
    ("deepseek-v3", dict(moe_layer_freq=0), "key 'moe_layer_freq' = 0: expected a positive whole number"),
    ("deepseek-v3", dict(first_k_dense_replace=-1), "key 'first_k_dense_replace' = -1: expected a whole number >= 0"),
    ("qwen3-30b-a3b", dict(num_experts_per_tok=200), "key 'num_experts_per_tok' = 200: must be <= num_experts (128)"),
    ("deepseek-v3", dict(num_experts_per_tok=300), "key 'num_experts_per_tok' = 300: must be <= n_routed_experts (256)"),
    ("mixtral-8x7b", dict(num_experts_per_tok=9), "key 'num_experts_per_tok' = 9: must be <= num_local_experts (8)"),
    ("qwen3-30b-a3b", dict(num_key_value_heads=5), "key 'num_key_value_heads' = 5: must divide num_attention_heads (32)"),
])
def test_impossible_values_are_named_by_their_hugging_face_key(tmp_path, name, changes, words):
    msg = _error(tmp_path, _cfg(name, **changes))
    assert words in msg, msg
    assert "model.moe_every" not in msg and "model.top_k" not in msg and "model.n_kv_heads" not in msg


def test_nested_keys_are_checked_with_their_path(tmp_path):
    dbrx = _cfg("dbrx-base")
    dbrx["ffn_config"] = {**dbrx["ffn_config"], "moe_top_k": 17}
    assert "key 'ffn_config.moe_top_k' = 17: must be <= ffn_config.moe_num_experts (16)" in _error(tmp_path, dbrx)
    dbrx = _cfg("dbrx-base")
    dbrx["attn_config"] = {**dbrx["attn_config"], "kv_n_heads": 5}
    assert "key 'attn_config.kv_n_heads' = 5: must divide n_heads (48)" in _error(tmp_path, dbrx)


# ---------------------------------------------------------------- number formats


def test_float32_checkpoints_read_as_bf16_unless_the_scenario_asks_for_fp32(tmp_path):
    """allenai/OLMoE-1B-7B-0924 ships torch_dtype float32; vLLM serves it and training runs it in bf16."""
    olmoe = _cfg("olmoe-1b-7b-0924", torch_dtype="float32")
    assert _load(tmp_path, olmoe).model.dtype == "bf16"
    assert _load(tmp_path, olmoe, dtype="fp32").model.dtype == "fp32"
    assert model_fields(_cfg("olmoe-1b-7b-0924", torch_dtype=None, dtype="float32"))["dtype"] == "bf16"
    assert model_fields(_cfg("olmoe-1b-7b-0924", torch_dtype="float16"))["dtype"] == "fp16"


UNKNOWN_FORMATS = [
    ("bitsandbytes", {"quant_method": "bitsandbytes", "load_in_4bit": True},
     "key 'quantization_config.quant_method' = 'bitsandbytes': moesim has no dtype for it (understood: fp8; "
     "gptq or awq with bits 4 or 8; mxfp4; modelopt or modelopt_fp4 with quant_algo NVFP4 or FP8)"),
    ("compressed-tensors", {"quant_method": "compressed-tensors", "format": "float-quantized"},
     "key 'quantization_config.quant_method' = 'compressed-tensors'"),
    ("gptq 3 bits", {"quant_method": "gptq", "bits": 3}, "key 'quantization_config.quant_method' = 'gptq' with bits = 3"),
    ("modelopt W4A8", {"quant_method": "modelopt", "quant_algo": "W4A8_AWQ"},
     "key 'quantization_config.quant_method' = 'modelopt' with quant_algo = 'W4A8_AWQ'"),
    ("no method", {"bits": 4}, "key 'quantization_config.quant_method' = None"),
    ("not a mapping", "fp8", "key 'quantization_config' = 'fp8': expected a mapping"),
]


@pytest.mark.parametrize("quant, words", [row[1:] for row in UNKNOWN_FORMATS], ids=[row[0] for row in UNKNOWN_FORMATS])
def test_a_quantization_moesim_has_no_dtype_for_is_refused_unless_model_dtype_is_set(tmp_path, quant, words):
    cfg = {**_cfg("qwen3-30b-a3b"), "quantization_config": quant}
    msg = _error(tmp_path, cfg)
    assert words in msg and "set model.dtype to the weights' precision" in msg, msg
    assert _load(tmp_path, cfg, dtype="fp8").model.dtype == "fp8"  # the scenario says what the weights are


def test_an_unknown_torch_dtype_is_refused_unless_model_dtype_is_set(tmp_path):
    cfg = _cfg("qwen3-30b-a3b", torch_dtype="float8_e4m3fn")
    msg = _error(tmp_path, cfg)
    assert "key 'torch_dtype' = 'float8_e4m3fn': not a precision moesim reads" in msg
    assert "understood: bfloat16, float16, float32 (read as bf16)" in msg and "set model.dtype" in msg
    assert _load(tmp_path, cfg, dtype="fp8").model.dtype == "fp8"
    fp8 = {**cfg, "quantization_config": {"quant_method": "fp8"}}  # the quantization says it all
    assert model_fields(fp8)["dtype"] == "fp8"


def test_a_serving_scenario_sets_the_dtype_of_an_unknown_4_bit_checkpoint(tmp_path):
    cfg = {**_cfg("qwen3-30b-a3b"), "quantization_config": {"quant_method": "bitsandbytes", "load_in_4bit": True}}
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    assert main(["check", str(_scenario(tmp_path, {"hf_config": "config.json"}, SERVE))]) == 2
    assert main(["check", str(_scenario(tmp_path, {"hf_config": "config.json", "dtype": "int4"}, SERVE))]) == 0


# ---------------------------------------------------------------- DeepSeek keys


def test_a_null_kv_lora_rank_is_refused_not_read_as_multi_head_attention(tmp_path):
    msg = _error(tmp_path, _cfg("deepseek-v3") | {"kv_lora_rank": None})
    assert "key 'kv_lora_rank' is null: DeepSeek-V2/V3 attention is multi-head latent attention" in msg, msg


def test_a_null_n_routed_experts_beside_moe_keys_says_so(tmp_path):
    cfg = _cfg("deepseek-v3") | {"n_routed_experts": None}
    msg = _error(tmp_path, cfg)
    assert "key 'n_routed_experts' is null (transformers then builds a dense model) while MoE keys are set" in msg
    assert "num_experts_per_tok" in msg and "not understood" not in msg
    dense = {k: v for k, v in cfg.items() if k not in ("num_experts_per_tok", "moe_intermediate_size",
                                                       "n_shared_experts", "moe_layer_freq")}
    assert not _load(tmp_path, dense).model.is_moe  # no MoE keys: the dense model transformers builds


# ---------------------------------------------------------------- what model.hf_config names


def test_a_folder_holding_config_json_is_read_and_named_after_it(tmp_path):
    folder = tmp_path / "models" / "Qwen3-30B-A3B"
    folder.mkdir(parents=True)
    (folder / "config.json").write_text((DATA / "qwen3-30b-a3b.json").read_text())
    m = _scenario_model(tmp_path, "models/Qwen3-30B-A3B")
    assert (m.name, m.n_experts) == ("Qwen3-30B-A3B", 128)
    assert _scenario_model(tmp_path, "models/Qwen3-30B-A3B/config.json").name == "Qwen3-30B-A3B"


def test_a_hugging_face_cache_snapshot_is_named_after_its_repository(tmp_path):
    snap = tmp_path / "hub" / "models--Qwen--Qwen3-30B-A3B" / "snapshots" / "0123abc"
    snap.mkdir(parents=True)
    (snap / "config.json").write_text((DATA / "qwen3-30b-a3b.json").read_text())
    assert _scenario_model(tmp_path, str(snap)).name == "Qwen3-30B-A3B"


def _scenario_model(tmp_path: Path, hf_config: str, **fields):
    return load_scenario(_scenario(tmp_path, {"hf_config": hf_config, **fields})).model


@pytest.mark.parametrize("value, words", [
    ("", "model.hf_config = '': empty path"),
    ("  ", "model.hf_config = '  ': empty path"),
    (".", "is a folder without a config.json"),
    ("nope.json", "model.hf_config = 'nope.json': not found; looked for '{tmp}/nope.json' (a relative path is read "
                  "from the scenario file's folder"),
])
def test_what_model_hf_config_cannot_name_is_one_line(tmp_path, value, words):
    with pytest.raises(InputError) as info:
        _scenario_model(tmp_path, value)
    msg = str(info.value)
    assert words.format(tmp=tmp_path) in msg and "\n" not in msg, msg


def test_a_shipped_scenario_looks_for_a_relative_path_in_the_working_folder(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["check", "mixtral-8x7b-h100-train", "--set", "model.hf_config=nope.json"]) == 2
    err = capsys.readouterr().err
    assert f"looked for '{tmp_path / 'nope.json'}' (the working folder" in err and "scenarios" not in err, err
    (tmp_path / "qwen").mkdir()
    (tmp_path / "qwen" / "config.json").write_text((DATA / "qwen3-30b-a3b.json").read_text())
    assert main(["check", "mixtral-8x7b-h100-train", "--set", "model.hf_config=qwen", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["total_params"] == pytest.approx(30.5e9, rel=0.02)


def test_a_folder_typed_with_set_is_the_working_folders_for_a_scenario_file_too(tmp_path, monkeypatch):
    """``--set model.hf_config=models/X`` from the shell names the shell's folder, as a file typed there does."""
    (tmp_path / "elsewhere").mkdir()
    scenario = _scenario(tmp_path / "elsewhere", {"hf_config": "unused.json"})
    (tmp_path / "models" / "Qwen3-30B-A3B").mkdir(parents=True)
    (tmp_path / "models" / "Qwen3-30B-A3B" / "config.json").write_text((DATA / "qwen3-30b-a3b.json").read_text())
    monkeypatch.chdir(tmp_path)
    m = load_scenario(scenario, ["model.hf_config=models/Qwen3-30B-A3B"]).model
    assert (m.name, m.n_experts) == ("Qwen3-30B-A3B", 128)


def test_preset_and_hf_config_are_alternatives(tmp_path):
    (tmp_path / "config.json").write_text((DATA / "qwen3-30b-a3b.json").read_text())
    with pytest.raises(InputError, match=r"^model.preset and model.hf_config: give one of them"):
        _scenario_model(tmp_path, "config.json", preset="mixtral-8x7b")


@pytest.mark.parametrize("changes", [dict(tie_word_embeddings="false"), dict(decoder_sparse_step=0),
                                     dict(torch_dtype="float8_e4m3fn")])
def test_the_cli_prints_one_line_without_a_traceback(tmp_path, capsys, changes):
    (tmp_path / "config.json").write_text(json.dumps(_cfg("qwen3-30b-a3b", **changes)))
    assert main(["check", str(_scenario(tmp_path, {"hf_config": "config.json"}))]) == 2
    captured = capsys.readouterr()
    lines = [ln for ln in captured.err.splitlines() if ln.strip()]
    assert len(lines) == 1 and next(iter(changes)) in lines[0], captured.err
    assert "Traceback" not in captured.err + captured.out
