"""Reading scenario files: YAML errors, odd files, overrides, hf_config, anchored paths."""

from __future__ import annotations

import json

import pytest
import yaml

from moesim.errors import InputError
from moesim.loader import apply_override, load_scenario
from tests.conftest import SCENARIOS


def _write(tmp_path, text, name="s.yaml"):
    p = tmp_path / name
    p.write_text(text) if isinstance(text, str) else p.write_bytes(text)
    return p


@pytest.mark.parametrize("path", SCENARIOS, ids=[p.stem for p in SCENARIOS])
def test_every_shipped_scenario_loads(path):
    s = load_scenario(path)
    assert s.plan.n_devices == s.hardware.n_devices


def test_yaml_syntax_error_gives_line_and_column(tmp_path):
    p = _write(tmp_path, "model: mixtral-8x7b\nplan: {dp: 8\nworkload: x\n")
    with pytest.raises(InputError, match=r"YAML error at line \d+, column \d+"):
        load_scenario(p)


@pytest.mark.parametrize(
    "content, words",
    [
        ("", "file is empty"),
        ("- a\n- b\n", "expected a mapping"),
        ("just a string", "expected a mapping"),
        (b"\x00\x01\xff\xfe binary", "not a text file"),
        ("!!python/object/apply:os.system ['echo hi']\n", "YAML error"),
    ],
)
def test_odd_files(tmp_path, content, words):
    with pytest.raises(InputError, match=words):
        load_scenario(_write(tmp_path, content))


def test_missing_file(tmp_path):
    with pytest.raises(InputError, match="file not found"):
        load_scenario(tmp_path / "nope.yaml")


def test_overrides_parse_yaml_values_and_expand_presets(root):
    path = root / "scenarios" / "mixtral-8x7b-h100-train.yaml"
    s = load_scenario(path, ["model.n_experts=16", "routing.capacity_factor=2.0", "plan.schedule=gpipe"])
    assert s.model.n_experts == 16 and s.model.d_model == 4096
    assert s.routing.capacity_factor == 2.0 and s.plan.schedule == "gpipe"


def test_override_without_equals_is_an_error():
    with pytest.raises(InputError, match="expected path.to.field=value"):
        apply_override({}, "plan.tp")


def test_hf_config_mixtral_and_deepseek(tmp_path):
    mixtral = {"hidden_size": 4096, "num_attention_heads": 32, "num_key_value_heads": 8,
               "num_hidden_layers": 32, "vocab_size": 32000, "intermediate_size": 14336,
               "num_local_experts": 8, "num_experts_per_tok": 2, "torch_dtype": "bfloat16"}
    deepseek = {"hidden_size": 7168, "num_attention_heads": 128, "num_key_value_heads": 128,
                "num_hidden_layers": 61, "vocab_size": 129280, "intermediate_size": 18432,
                "moe_intermediate_size": 2048, "n_routed_experts": 256, "n_shared_experts": 1,
                "num_experts_per_tok": 8, "first_k_dense_replace": 3, "moe_layer_freq": 1,
                "q_lora_rank": 1536, "kv_lora_rank": 512, "qk_nope_head_dim": 128,
                "qk_rope_head_dim": 64, "v_head_dim": 128, "max_position_embeddings": 163840}
    from moesim.accounting import param_counts

    for cfg, total in ((mixtral, 46.7e9), (deepseek, 671e9)):
        (tmp_path / "config.json").write_text(json.dumps(cfg))
        text = yaml.safe_dump({
            "model": {"hf_config": "config.json"}, "hardware": "h100-sxm",
            "plan": {"dp": 8}, "workload": {"kind": "training", "global_batch_seqs": 8, "seq_len": 128},
        })
        s = load_scenario(_write(tmp_path, text))
        assert param_counts(s.model).total == pytest.approx(total, rel=0.02)


def test_hf_config_missing_key(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"hidden_size": 8}))
    text = "model: {hf_config: config.json}\nhardware: h100-sxm\nplan: {dp: 8}\nworkload: {kind: training, global_batch_seqs: 8, seq_len: 8}\n"
    with pytest.raises(InputError, match="missing key 'num_attention_heads'"):
        load_scenario(_write(tmp_path, text))


def test_relative_trace_path_is_anchored_at_the_scenario(root):
    s = load_scenario(root / "scenarios" / "llama-2-7b-a100-serve.yaml")
    assert s.workload.arrival.trace.is_file()
