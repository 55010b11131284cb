"""Hugging Face config.json import: each MoE format reads as MoE with the published parameter
counts; a model_type, key or layout that is not understood fails in one line naming it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from moesim import load_scenario, simulate
from moesim.accounting import param_counts
from moesim.cli import main
from moesim.errors import InputError
from moesim.hf_config import FAMILIES
from moesim.resolve import read_hf_config
from moesim.schemas import ModelSpec

DATA = Path(__file__).parent / "data" / "hf_configs"
TRAIN = {"hardware": "h100-sxm", "plan": {"dp": 8},
         "workload": {"kind": "training", "global_batch_seqs": 8, "seq_len": 8}}


def _model(name: str) -> ModelSpec:
    return ModelSpec(**read_hf_config(DATA / f"{name}.json"))


def _cfg(name: str, **changes) -> dict:
    cfg = json.loads((DATA / f"{name}.json").read_text())
    for key, value in changes.items():
        if value is None:
            cfg.pop(key, None)
        else:
            cfg[key] = value
    return cfg


def _load(tmp_path: Path, cfg: dict, **model_overrides):
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump({"model": {"hf_config": "config.json", **model_overrides}, **TRAIN}))
    return load_scenario(path)


def _error(tmp_path: Path, cfg: dict) -> str:
    with pytest.raises(InputError) as info:
        _load(tmp_path, cfg)
    msg = str(info.value)
    assert "\n" not in msg and msg.startswith("model.hf_config = "), msg
    return msg


# ---------------------------------------------------------------- parameter counts

# (file, published total, published active). Tolerance REL for every row: published figures are
# rounded to 2-3 significant digits (Qwen3-30B-A3B's "3.3B" active alone spans +-1.5%) and the
# accounting leaves out biases, q/k norms and router biases (<0.1%). Rows that need a word:
#   * gpt-oss: OpenAI's active count takes the unembedding but not the input embedding (a gather),
#     so the input embedding (vocab x d_model) is subtracted before comparing;
#   * Llama-4 Scout: the published 109B includes the vision encoder, which is outside text_config
#     (moesim reads 107.8B, -1.1%);
#   * DeepSeek-V3: 671B excludes the multi-token-prediction layer, as moesim does;
#   * Grok-1: xAI published no active count.
REL = 0.02
PUBLISHED = [
    ("qwen1.5-moe-a2.7b", 14.3e9, 2.7e9),
    ("qwen3-30b-a3b", 30.5e9, 3.3e9),
    ("qwen3-235b-a22b", 235e9, 22e9),
    ("mixtral-8x7b", 46.7e9, 12.9e9),
    ("deepseek-v3", 671e9, 37e9),
    ("dbrx-base", 132e9, 36e9),
    ("olmoe-1b-7b-0924", 6.9e9, 1.3e9),
    ("grok-1", 314e9, None),
    ("gpt-oss-120b", 116.8e9, 5.1e9),
    ("gpt-oss-20b", 20.9e9, 3.6e9),
    ("llama-4-scout-17b-16e", 109e9, 17e9),
    ("llama-4-maverick-17b-128e", 400e9, 17e9),
]
ACTIVE_WITHOUT_INPUT_EMBEDDING = {"gpt-oss-120b", "gpt-oss-20b"}


@pytest.mark.parametrize("name, total, active", PUBLISHED, ids=[row[0] for row in PUBLISHED])
def test_parameter_counts_match_the_published_ones(name, total, active):
    m = _model(name)
    p = param_counts(m)
    assert p.total == pytest.approx(total, rel=REL)
    if active is not None:
        ours = p.active - (m.vocab_size * m.d_model if name in ACTIVE_WITHOUT_INPUT_EMBEDDING else 0)
        assert ours == pytest.approx(active, rel=REL)
    assert p.routed_experts > 0 and p.active < p.total / 2  # read as MoE, never dense


# (file, n_experts, top_k, MoE layers, shared experts, first dense layers, moe_every)
LAYOUTS = [
    ("qwen1.5-moe-a2.7b", 60, 4, 24, 1, 0, 1),
    ("qwen3-30b-a3b", 128, 8, 48, 0, 0, 1),
    ("qwen3-235b-a22b", 128, 8, 94, 0, 0, 1),
    ("mixtral-8x7b", 8, 2, 32, 0, 0, 1),
    ("deepseek-v3", 256, 8, 58, 1, 3, 1),
    ("kimi-k2", 384, 8, 60, 1, 1, 1),
    ("dbrx-base", 16, 4, 40, 0, 0, 1),
    ("olmoe-1b-7b-0924", 64, 8, 16, 0, 0, 1),
    ("grok-1", 8, 2, 64, 0, 0, 1),
    ("gpt-oss-120b", 128, 4, 36, 0, 0, 1),
    ("gpt-oss-20b", 32, 4, 24, 0, 0, 1),
    ("llama-4-scout-17b-16e", 16, 1, 48, 1, 0, 1),
    ("llama-4-maverick-17b-128e", 128, 1, 24, 1, 0, 2),
]


@pytest.mark.parametrize("name, experts, top_k, moe_layers, shared, first_dense, every", LAYOUTS,
                         ids=[row[0] for row in LAYOUTS])
def test_each_format_reads_its_expert_layout(name, experts, top_k, moe_layers, shared, first_dense, every):
    m = _model(name)
    assert (m.n_experts, m.top_k, m.n_moe_layers, m.n_shared_experts) == (experts, top_k, moe_layers, shared)
    assert (m.first_dense_layers, m.moe_every) == (first_dense, every)


def test_widths_of_dense_routed_and_shared_ffns():
    qwen = _model("qwen1.5-moe-a2.7b")
    assert (qwen.ffn_hidden, qwen.expert_width, qwen.shared_width) == (5632, 1408, 5632)
    maverick = _model("llama-4-maverick-17b-128e")
    assert (maverick.ffn_hidden, maverick.expert_width, maverick.shared_width) == (16384, 8192, 8192)
    assert [maverick.is_moe_layer(i) for i in range(4)] == [False, True, False, True]
    dbrx = _model("dbrx-base")
    assert (dbrx.n_kv_heads, dbrx.head_width, dbrx.max_seq_len) == (8, 128, 32768)
    assert _model("deepseek-v3").mla.kv_lora_rank == 512
    assert _model("grok-1").tied_embeddings and not _model("mixtral-8x7b").tied_embeddings


def test_kimi_k2_config_reads_as_the_kimi_k2_preset():
    """model_type kimi_k2 is DeepSeek-V3's layout with its own counts; read from its config.json it is the
    preset's model (the parameter counts of the two agree exactly)."""
    from moesim.accounting import param_counts
    from moesim.presets import MODELS

    read, preset = _model("kimi-k2"), ModelSpec(**MODELS["kimi-k2"])
    assert (read.n_heads, read.n_experts, read.first_dense_layers, read.vocab_size) == (64, 384, 1, 163840)
    assert param_counts(read) == param_counts(preset)


def test_dense_formats_stay_dense():
    m = _model("qwen3-4b")  # Qwen/Qwen3-4B: 4.0B, 3.6B without the (tied) embedding
    p = param_counts(m)
    assert not m.is_moe and m.tied_embeddings
    assert p.total == pytest.approx(4.0e9, rel=REL) and p.total - p.embedding == pytest.approx(3.6e9, rel=REL)
    mistral = {"model_type": "mistral", "hidden_size": 4096, "intermediate_size": 14336, "num_attention_heads": 32,
               "num_key_value_heads": 8, "num_hidden_layers": 32, "vocab_size": 32000, "sliding_window": 4096}
    assert param_counts(ModelSpec(**_fields(mistral))).total == pytest.approx(7.24e9, rel=REL)  # Mistral-7B


def _fields(cfg: dict) -> dict:
    from moesim.hf_config import model_fields

    return model_fields(cfg)


def test_dtype_follows_torch_dtype_or_the_checkpoint_quantization(tmp_path):
    assert _model("qwen3-30b-a3b").dtype == "bf16"
    assert _model("deepseek-v3").dtype == "fp8"  # quantization_config: fp8 e4m3 blocks
    m = _model("gpt-oss-120b")
    assert (m.dtype, m.expert_dtype) == ("bf16", "mxfp4")  # mxfp4 experts, bf16 attention
    with pytest.raises(InputError, match=r"model.expert_dtype = mxfp4: .*expert_dtype: null to train"):
        _load(tmp_path, _cfg("gpt-oss-120b"))  # a training scenario: the checkpoint's mxfp4 experts are refused
    s = _load(tmp_path, _cfg("gpt-oss-120b"), dtype="bf16", expert_dtype=None)  # the scenario's own fields win
    assert s.model.dtype == "bf16" and s.model.expert_dtype is None and s.model.n_experts == 128


@pytest.mark.parametrize("method, algo, dtype", [("modelopt", "NVFP4", "nvfp4"), ("modelopt_fp4", "NVFP4", "nvfp4"),
                                                 ("modelopt", "FP8", "fp8")])
def test_modelopt_checkpoints_read_their_quant_algo(method, algo, dtype):
    """NVIDIA's ModelOpt exports (nvidia/*-FP4, *-FP8) say quant_method modelopt and quant_algo (an
    algorithm moesim has no dtype for is refused: tests/test_hf_config_inputs.py)."""
    cfg = _cfg("qwen3-30b-a3b")
    cfg["quantization_config"] = {"quant_method": method, "quant_algo": algo}
    assert _fields(cfg)["dtype"] == dtype


def test_modelopt_moe_exports_that_exclude_attention_quantize_only_the_experts():
    """ModelOpt's NVFP4 MoE exports keep the attention projections at torch_dtype (their exclude list
    names them): the experts take the quantized dtype, the rest stays bf16; without such an entry, or
    on a dense model, the whole model takes it."""
    cfg = _cfg("qwen3-30b-a3b")
    cfg["quantization_config"] = {"quant_method": "modelopt", "quant_algo": "NVFP4",
                                  "exclude_modules": ["lm_head", "model.layers.0.self_attn.q_proj"]}
    f = _fields(cfg)
    assert (f["dtype"], f["expert_dtype"]) == ("bf16", "nvfp4")
    cfg["quantization_config"]["exclude_modules"] = ["lm_head"]
    assert _fields(cfg)["dtype"] == "nvfp4" and "expert_dtype" not in _fields(cfg)
    dense = _cfg("qwen3-4b")
    dense["quantization_config"] = {"quant_method": "modelopt", "quant_algo": "NVFP4", "ignore": ["model.layers.0.self_attn.q_proj"]}
    assert _fields(dense)["dtype"] == "nvfp4" and "expert_dtype" not in _fields(dense)


# ---------------------------------------------------------------- layouts: the HF rule, reproduced


def _qwen_rule(n: int, mlp_only: list[int], step: int) -> list[bool]:
    """transformers' Qwen2MoeDecoderLayer: MoE unless in mlp_only_layers, and only every step-th layer."""
    return [i not in mlp_only and (i + 1) % step == 0 for i in range(n)]


@pytest.mark.parametrize("mlp_only, step", [([], 1), ([0, 1, 2], 1), ([], 2), ([0], 2), ([], 3), ([0, 1], 4)])
def test_qwen_layouts_match_transformers_layer_by_layer(mlp_only, step):
    cfg = _cfg("qwen3-30b-a3b", num_hidden_layers=12, mlp_only_layers=mlp_only, decoder_sparse_step=step)
    m = ModelSpec(**_fields(cfg))
    assert [m.is_moe_layer(i) for i in range(12)] == _qwen_rule(12, mlp_only, step)


@pytest.mark.parametrize("first, freq", [(0, 1), (3, 1), (1, 2), (3, 3)])
def test_deepseek_layouts_match_transformers_layer_by_layer(first, freq):
    cfg = _cfg("deepseek-v3", num_hidden_layers=12, first_k_dense_replace=first, moe_layer_freq=freq)
    m = ModelSpec(**_fields(cfg))
    assert [m.is_moe_layer(i) for i in range(12)] == [i >= first and i % freq == 0 for i in range(12)]


def test_llama4_explicit_moe_layers_win_over_the_step():
    cfg = _cfg("llama-4-scout-17b-16e")
    cfg["text_config"].update(moe_layers=list(range(1, 48, 2)), interleave_moe_layer_step=1)
    m = ModelSpec(**_fields(cfg))
    assert (m.first_dense_layers, m.moe_every, m.n_moe_layers) == (0, 2, 24)


# ---------------------------------------------------------------- what is not understood fails


def _with_text(**changes) -> dict:
    cfg = _cfg("llama-4-scout-17b-16e")
    cfg["text_config"].update(changes)
    return cfg


ERRORS = [
    ("unknown model_type", _cfg("qwen3-30b-a3b", model_type="jamba"),
     ["model_type 'jamba' is not understood", "allowed: dbrx, deepseek_v2", "qwen3_moe"]),
    ("model_type not text", _cfg("qwen3-30b-a3b", model_type=5), ["model_type 5 is not understood"]),
    ("dense type with experts", {**_cfg("qwen3-4b"), "num_local_experts": 8, "num_experts_per_tok": 2},
     ["keys 'num_local_experts', 'num_experts_per_tok' are not understood for model_type 'qwen3'",
      "understood: no MoE keys"]),
    ("no model_type, Qwen keys", _cfg("qwen3-30b-a3b", model_type=None),
     ["not understood for model_type 'llama' (guessed: the config has no model_type)", "'num_experts'"]),
    ("extra MoE key", _cfg("qwen3-30b-a3b", n_shared_experts=2),
     ["key 'n_shared_experts' is not understood for model_type 'qwen3_moe'", "understood: decoder_sparse_step"]),
    ("nested MoE key", {**_cfg("dbrx-base"), "ffn_config": {**_cfg("dbrx-base")["ffn_config"], "moe_shared": 1}},
     ["key 'ffn_config.moe_shared' is not understood for model_type 'dbrx'", "ffn_config.moe_num_experts"]),
    ("scattered dense layers", _cfg("qwen3-30b-a3b", mlp_only_layers=[5, 9]),
     ["key 'mlp_only_layers': dense layers [5, 9] follow no pattern",
      "allowed: the first N layers dense (first_dense_layers), then every k-th layer MoE (moe_every)"]),
    ("layer indices not a list", _cfg("qwen3-30b-a3b", mlp_only_layers="0,1"),
     ["key 'mlp_only_layers' = '0,1': expected a list of layer indices"]),
    ("layer out of range", _with_text(moe_layers=[1, 99]), ["key 'moe_layers': names layers outside 0..47"]),
    ("every layer dense", _cfg("qwen3-30b-a3b", num_hidden_layers=2, mlp_only_layers=[0, 1]),
     ["key 'mlp_only_layers': leaves no MoE layer"]),
    ("MoE on layer 0 every 2nd", _cfg("deepseek-v3", first_k_dense_replace=0, moe_layer_freq=2),
     ["key 'moe_layer_freq': dense layers [1, 3, 5"]),
    ("llama4 scattered moe_layers", _with_text(moe_layers=[0, 5]), ["key 'moe_layers': dense layers"]),
    ("shared expert qwen3 lacks", _cfg("qwen3-30b-a3b", shared_expert_intermediate_size=512),
     ["key 'shared_expert_intermediate_size' = 512: qwen3_moe has no shared expert"]),
    ("gpt-oss top-k aliases disagree", _cfg("gpt-oss-20b", experts_per_token=2),
     ["key 'experts_per_token' = 2: differs from num_experts_per_tok (4)"]),
    ("text_config not a mapping", _cfg("llama-4-scout-17b-16e", text_config=3),
     ["key 'text_config' = 3: expected a mapping"]),
    ("missing expert width", _cfg("qwen1.5-moe-a2.7b", moe_intermediate_size=None),
     ["missing key 'moe_intermediate_size'"]),
    ("missing nested key", {**_cfg("dbrx-base"), "ffn_config": {"ffn_hidden_size": 10752}},
     ["missing key 'ffn_config.moe_num_experts'"]),
    ("null expert width", {**_cfg("qwen1.5-moe-a2.7b"), "moe_intermediate_size": None},
     ["key 'moe_intermediate_size' is null"]),
    ("expert count as text", _cfg("qwen1.5-moe-a2.7b", num_experts="60"),
     ["key 'num_experts' = '60': expected a whole number of routed experts"]),
    ("expert count a bool", _cfg("qwen1.5-moe-a2.7b", num_experts=True), ["key 'num_experts' = True"]),
]


@pytest.mark.parametrize("cfg, words", [row[1:] for row in ERRORS], ids=[row[0] for row in ERRORS])
def test_what_is_not_understood_fails_in_one_line_naming_the_key(tmp_path, cfg, words):
    msg = _error(tmp_path, cfg)
    for word in words:
        assert word in msg, msg


def test_training_knobs_are_understood_not_flagged():
    cfg = _cfg("olmoe-1b-7b-0924", router_jitter_noise=0.1, router_z_loss_coef=0.001)
    assert ModelSpec(**_fields(cfg)).n_experts == 64


def test_every_family_has_a_reader_and_the_error_lists_them(tmp_path):
    msg = _error(tmp_path, _cfg("qwen3-30b-a3b", model_type="qwen3_next"))
    assert ", ".join(sorted(FAMILIES)) in msg


def test_cli_prints_one_line_and_exits_2(tmp_path, capsys):
    (tmp_path / "config.json").write_text(json.dumps(_cfg("qwen3-30b-a3b", mlp_only_layers=[7])))
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump({"model": {"hf_config": "config.json"}, **TRAIN}))
    assert main(["check", str(path)]) == 2
    captured = capsys.readouterr()
    lines = [ln for ln in captured.err.splitlines() if ln.strip()]
    assert len(lines) == 1 and "mlp_only_layers" in lines[0] and "first_dense_layers" in lines[0]
    assert "Traceback" not in captured.err + captured.out


# ---------------------------------------------------------------- end to end


SERVE = {
    "name": "qwen3-30b-a3b-h100-serve",
    "model": {"hf_config": str(DATA / "qwen3-30b-a3b.json")},
    "hardware": "h100-sxm",
    "plan": {"dp": 8, "tp": 1, "pp": 1, "ep": 1},
    "workload": {"kind": "serving", "arrival": {"process": "batch", "n_requests": 32},
                 "prompt_tokens": {"dist": "fixed", "value": 128}, "output_tokens": {"dist": "fixed", "value": 16}},
}


def test_qwen3_moe_scenario_simulates_end_to_end_as_moe(tmp_path, capsys):
    path = tmp_path / "serve.yaml"
    path.write_text(yaml.safe_dump(SERVE))
    s = load_scenario(path)
    assert (s.model.n_experts, s.model.top_k, s.model.n_moe_layers) == (128, 8, 48)
    result = simulate(s)
    assert result.summary["served_requests"] == 32 and result.summary["model"] == "qwen3-30b-a3b"
    assert main(["check", str(path), "--json"]) == 0
    check = json.loads(capsys.readouterr().out)
    assert check["total_params"] == pytest.approx(30.5e9, rel=REL)
    assert check["active_params"] == pytest.approx(3.3e9, rel=REL)
    assert check["routed_expert_params"] > 0.9 * check["total_params"]
    assert main(["simulate", str(path), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["served_requests"] == 32 and summary["model"] == "qwen3-30b-a3b"


def test_a_sliding_window_config_with_absurd_layers_is_one_line(tmp_path):
    """The window is read without building a per-layer list: the bad layer count is what is named."""
    cfg = _cfg("mixtral-8x7b", num_hidden_layers=10**12, sliding_window=4096)
    with pytest.raises(InputError) as info:
        _load(tmp_path, cfg)
    msg = str(info.value)
    assert "\n" not in msg and "n_layers" in msg, msg


def test_qwen_moe_with_no_experts_is_the_dense_model_transformers_builds(tmp_path):
    m = _load(tmp_path, _cfg("qwen1.5-moe-a2.7b", num_experts=0)).model
    assert m.n_moe_layers == 0 and m.ffn_hidden == _cfg("qwen1.5-moe-a2.7b")["intermediate_size"]
