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
    d = getattr(s.workload, "disaggregation", None)
    assert (s.plan.n_devices if d is None else d.n_devices) == s.hardware.n_devices


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


def test_a_preset_set_by_path_on_a_custom_section_sheds_its_fields(root):
    """``model.preset`` set by path on a custom model runs that preset, not the custom model under its name
    (the custom fields would override the preset one by one); its number formats stay, as do a hand-written
    device's node and cluster. A section that has a base keeps what refines it."""
    from moesim.presets import MODELS

    custom = {"name": "mine", "n_layers": 4, "d_model": 1024, "n_heads": 8, "n_kv_heads": 8, "head_dim": 128,
              "vocab_size": 32000, "ffn_hidden": 4096, "expert_ffn_hidden": 512, "n_experts": 16, "top_k": 2,
              "n_shared_experts": 1, "dtype": "fp8"}
    raw = {"model": dict(custom),
           "hardware": {"name": "x", "device": {"name": "x", "mem_bw_gbps": 1}, "node": {"devices_per_node": 4}}}
    apply_override(raw, "model.preset=mixtral-8x7b")
    apply_override(raw, "hardware.preset=h100-sxm")
    assert raw["model"] == {"preset": "mixtral-8x7b", "dtype": "fp8"}
    assert raw["hardware"] == {"preset": "h100-sxm", "node": {"devices_per_node": 4}}
    apply_override(raw, "model.n_layers=2")
    apply_override(raw, "model.preset=qwen3-30b-a3b")  # a base that is refined keeps its refinements
    assert raw["model"] == {"preset": "qwen3-30b-a3b", "dtype": "fp8", "n_layers": 2}
    apply_override(raw, "model.hf_config=config.json")
    assert "preset" not in raw["model"] and raw["model"]["n_layers"] == 2
    s = load_scenario(root / "scenarios" / "mixtral-8x7b-h100-serve.yaml", ["model.preset=qwen3-30b-a3b"])
    assert s.model.n_experts == MODELS["qwen3-30b-a3b"]["n_experts"]


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


# ---------------------------------------------------------------- structural limits


TRAIN = (
    "model: {preset: mixtral-8x7b, n_layers: 4}\nhardware: h100-sxm\nplan: {dp: 8, ep: 8}\n"
    "workload: {kind: training, global_batch_seqs: 8, seq_len: 128}\n"
)


def _train_with(line: str) -> str:
    """TRAIN with ``line`` in place of its own section of that name (a key written twice is refused)."""
    section = line.split(":", 1)[0]
    return "".join(f"{x}\n" for x in TRAIN.splitlines() if not x.startswith(section + ":")) + line + "\n"


def _id(value) -> str:
    text = value.decode("latin-1") if isinstance(value, bytes) else str(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _one_line(exc_info) -> str:
    msg = str(exc_info.value)
    assert "\n" not in msg and "Traceback" not in msg
    return msg


def test_file_over_the_size_limit(tmp_path):
    from moesim.loader import MAX_SCENARIO_BYTES

    p = _write(tmp_path, TRAIN + "# " + "x" * MAX_SCENARIO_BYTES + "\n")
    with pytest.raises(InputError, match=r"s.yaml: file is 256.1 KiB, more than the 256 KiB allowed for a YAML scenario"):
        load_scenario(p)


@pytest.mark.parametrize("text", [
    TRAIN + "description: " + "[" * 5000 + "]" * 5000 + "\n",
    TRAIN + "description: " + "{a: " * 5000 + "}" * 5000 + "\n",
    TRAIN + "description:\n" + "".join("  " * i + "- \n" for i in range(1, 60)),
    TRAIN + "description: " + "[" * 100_000 + "\n",  # unclosed: the limit fires before the syntax error
], ids=["flow-seq", "flow-map", "block", "unclosed"])
def test_deep_nesting_in_the_file(tmp_path, text):
    with pytest.raises(InputError) as info:
        load_scenario(_write(tmp_path, text))
    assert "nested deeper than 32 levels (line " in _one_line(info)


def test_recursion_inside_yaml_gets_the_same_message(tmp_path, monkeypatch):
    import moesim.loader as loader

    monkeypatch.setattr(loader, "MAX_DEPTH", 10**6)  # let the event scan pass: yaml's composer recurses
    with pytest.raises(InputError) as info:
        load_scenario(_write(tmp_path, TRAIN + "description: " + "[" * 1200 + "]" * 1200 + "\n"))
    assert _one_line(info).endswith("nested deeper than 1000000 levels")


def test_self_referencing_and_alias_multiplied_data(tmp_path):
    with pytest.raises(InputError, match=r"^description.0.0.0.0.0...: nested deeper than 32 levels$"):
        load_scenario(_write(tmp_path, TRAIN + "description: &d [*d]\n"))
    bomb = "".join(f"l{i}: &l{i} [" + ", ".join([f"*l{i - 1}" if i else "x"] * 20) + "]\n" for i in range(6))
    with pytest.raises(InputError, match=r"^scenario: more than 100,000 values \(YAML anchors and aliases"):
        load_scenario(_write(tmp_path, TRAIN + bomb))


@pytest.mark.parametrize("line, words", ids=_id, argvalues=[
    ("name: " + "x" * 5000, "name: text of 5,000 characters, more than the 4,096 allowed"),
    ("plan: {1: 8}", "plan: key 1 is not a field name (keys are text; quote it)"),
    ("routing: {yes: 1}", "routing: key True is not a field name"),
    ("plan: {dp: 1" + "0" * 5000 + "}", "s.yaml: a number of more than 4300 digits"),
    ("plan: {dp: 99999999999999999999}", "plan.dp = 99999999999999999999: must be <= 16777216 (16.7M replicas"),
])
def test_strings_keys_and_numbers(tmp_path, line, words):
    with pytest.raises(InputError) as info:
        load_scenario(_write(tmp_path, _train_with(line)))
    assert words in _one_line(info)


@pytest.mark.parametrize("text, words", [
    (TRAIN + "plan: {dp: 4}\n", "line 5, column 1: key 'plan' appears twice in one mapping (first on line 3)"),
    (TRAIN.replace("{dp: 8, ep: 8}", "{dp: 8, ep: 8, dp: 2}"), "key 'dp' appears twice in one mapping (first on line 3)"),
])
def test_a_key_written_twice_is_refused_not_silently_overridden(tmp_path, text, words):
    """PyYAML keeps the last of two equal keys; a scenario with two `plan:` lines would run the second."""
    with pytest.raises(InputError) as info:
        load_scenario(_write(tmp_path, text))
    assert words in _one_line(info)


def test_merge_keys_may_still_be_overridden(tmp_path):
    text = TRAIN.replace("plan: {dp: 8, ep: 8}", "defaults: &p {dp: 8, ep: 8}\nplan: {<<: *p, dp: 8}")
    from moesim.loader import parse_yaml

    assert parse_yaml(text, "s")["plan"] == {"dp": 8, "ep": 8}


def test_library_dicts_get_the_same_structural_checks(raw):
    from moesim.loader import scenario_from_dict

    deep: list = []
    for _ in range(5000):
        deep = [deep]
    raw["description"] = deep
    with pytest.raises(InputError, match="^description.0.0.0.0.0...: nested deeper than 32 levels$"):
        scenario_from_dict(raw)
    raw["description"] = "x" * 100_000
    with pytest.raises(InputError, match="^description: text of 100,000 characters"):
        scenario_from_dict(raw)
    raw["description"] = {"k" * 5000: 1}
    with pytest.raises(InputError, match="^description: a key of 5,000 characters, more than the 4,096 allowed"):
        scenario_from_dict(raw)


@pytest.mark.parametrize("item, words", ids=_id, argvalues=[
    ("description=" + "[" * 5000, "--set description: nested deeper than 32 levels (line 1)"),
    ("plan.dp=" + "9" * 5000, "--set plan.dp: a number of more than 4300 digits"),
    ("model.name=" + "x" * 5000, "model.name: text of 5,000 characters"),
    ("a." * 40 + "b=1", "a.a.a.a.a.a...: nested deeper than 32 levels"),
    ("routing.capacity_factor=1e300", "routing.capacity_factor = '1e300': must be <= 64 (beyond 64"),
    ("routing.capacity_factor=[1", "routing.capacity_factor = '[1': Input should be a valid number"),
])
def test_overrides_get_the_limits_too(root, item, words):
    with pytest.raises(InputError) as info:
        load_scenario(root / "scenarios" / "mixtral-8x7b-h100-train.yaml", [item])
    assert words in _one_line(info)


def test_unusable_paths_are_one_line(tmp_path):
    for field in ("routing: {distribution: trace, trace: ", "hardware: {preset: h100-sxm, profile: "):
        with pytest.raises(InputError) as info:
            load_scenario(_write(tmp_path, _train_with(field + "a" * 300 + "}")))
        assert "not a usable path (File name too long)" in _one_line(info)


# ---------------------------------------------------------------- hf_config


def _hf(tmp_path, content) -> InputError:
    (tmp_path / "config.json").write_text(content if isinstance(content, str) else json.dumps(content))
    text = "model: {hf_config: config.json}\nhardware: h100-sxm\nplan: {dp: 8}\nworkload: {kind: training, global_batch_seqs: 8, seq_len: 8}\n"
    with pytest.raises(InputError) as info:
        load_scenario(_write(tmp_path, text))
    return _one_line(info)


HF = {"hidden_size": 4096, "num_attention_heads": 32, "num_hidden_layers": 32, "vocab_size": 32000,
      "intermediate_size": 14336}


@pytest.mark.parametrize("content, words", ids=_id, argvalues=[
    ("[" * 100_000, "model.hf_config = "),
    ("[" * 100_000 + "]" * 100_000, "nested too deeply to be a config.json"),
    ('{"hidden_size": 1' + "0" * 5000 + "}", "not valid JSON (a number of more than 4300 digits)"),
    ('{"x": ' + "[" * 40 + "]" * 40 + "}", "x.0.0.0.0.0...: nested deeper than 32 levels"),
    ({**HF, "hidden_size": "abc"}, "key 'hidden_size' = 'abc': expected a positive whole number"),
    ({**HF, "num_attention_heads": 0}, "key 'num_attention_heads' = 0: expected a positive whole number"),
    ({**HF, "hidden_size": [1]}, "key 'hidden_size' = [1]: expected a positive whole number"),
    ({**HF, "num_hidden_layers": 1e300}, "model.n_layers = 1000000000000000052504"),
    ({**HF, "num_hidden_layers": 2**64}, "model.n_layers = 18446744073709551616: must be <= 1024"),
    ({**HF, "kv_lora_rank": 512}, "missing key 'qk_nope_head_dim'"),
    ({**HF, "_name_or_path": "x" * 5000}, "text of 5,000 characters"),
    ('{"hidden_size": NaN}', "key 'hidden_size' = nan: expected a positive whole number"),
])
def test_bad_hf_configs_fail_in_one_line(tmp_path, content, words):
    assert words in _hf(tmp_path, content)


def test_huge_hf_config(tmp_path):
    from moesim.resolve import MAX_HF_CONFIG_BYTES

    msg = _hf(tmp_path, json.dumps({**HF, "pad": "x" * MAX_HF_CONFIG_BYTES}))
    assert "more than the 1 MiB allowed for a Hugging Face config.json" in msg


def test_hf_config_that_is_not_a_path(tmp_path):
    text = "model: {hf_config: [1, 2]}\nhardware: h100-sxm\nplan: {dp: 8}\nworkload: {kind: training, global_batch_seqs: 8, seq_len: 8}\n"
    with pytest.raises(InputError, match=r"^model.hf_config = \[1, 2\]: expected the path of a config.json$"):
        load_scenario(_write(tmp_path, text))


# ---------------------------------------------------------------- trace CSVs and profiles


@pytest.mark.parametrize("content, words", ids=_id, argvalues=[
    (b"\xff\xfe\x00binary", "not a text file"),
    ("1," + "2" * 200_000 + "\n", "not a readable CSV (field larger than field limit"),
    ("1e308,1e308\n", "must be finite, non-negative and not all zero"),
    ("nan,1\n", "must be finite"),
    ("", "no rows of expert weights"),
])
def test_bad_routing_traces(tmp_path, content, words):
    from moesim.engine.routing import read_popularity_trace

    p = tmp_path / "r.csv"
    p.write_bytes(content) if isinstance(content, bytes) else p.write_text(content)
    with pytest.raises(InputError) as info:
        read_popularity_trace(p, 2)
    assert words in _one_line(info) and "routing.trace = " in str(info.value)


def test_routing_trace_size_limit(tmp_path, monkeypatch):
    import moesim.engine.routing as routing

    monkeypatch.setattr(routing, "MAX_TRACE_BYTES", 100)
    p = tmp_path / "r.csv"
    p.write_text("1,1\n" * 100)
    with pytest.raises(InputError, match=r"routing.trace = .*: file is 400 bytes, more than the 100 bytes allowed"):
        routing.read_popularity_trace(p, 2)


@pytest.mark.parametrize("content, words", ids=_id, argvalues=[
    (b"\xff\xfe\x00binary", "not a text file"),
    ("arrived_at,num_prefill_tokens,num_decode_tokens\n0,nan,1\n", "data row 1: times must be finite"),
    ("arrived_at,num_prefill_tokens,num_decode_tokens\n0,1,1\ninf,1,1\n", "data row 2: times must be finite"),
    ("arrived_at,num_prefill_tokens,num_decode_tokens\n0,-5,1\n", "token counts between 0 and 16,777,216"),
    ("arrived_at,num_prefill_tokens,num_decode_tokens\n0,1e300,1\n", "token counts between 0 and 16,777,216"),
    ("arrived_at,num_prefill_tokens,num_decode_tokens\n0,1\n", "data row 1 has 2 cells, fewer than the 3 columns"),
    ("arrived_at,num_prefill_tokens,num_decode_tokens\n0,x,1\n", "data row 1: '0', 'x', '1' are not all numbers"),
    ("a" * 200_000 + "\n", "not a readable CSV"),
    ("", "empty file"),
])
def test_bad_request_traces(tmp_path, content, words):
    from moesim.engine.serving.requests import read_trace

    p = tmp_path / "t.csv"
    p.write_bytes(content) if isinstance(content, bytes) else p.write_text(content)
    with pytest.raises(InputError) as info:
        read_trace(p)
    assert words in _one_line(info) and "workload.arrival.trace = " in str(info.value)


def test_request_trace_size_limit(tmp_path, monkeypatch):
    import moesim.engine.serving.requests as requests

    monkeypatch.setattr(requests, "MAX_TRACE_BYTES", 100)
    p = tmp_path / "big.csv"
    p.write_text("arrived_at,num_prefill_tokens,num_decode_tokens\n" + "0,1,1\n" * 100)
    with pytest.raises(InputError, match=r"file is 648 bytes, more than the 100 bytes allowed for a CSV file"):
        requests.read_trace(p)


@pytest.mark.parametrize("content, words", ids=_id, argvalues=[
    ("format: moesim-profile\nversion: " + "[" * 5000, "corrupt profile: nested deeper than 32 levels"),
    ("format: moesim-profile\nversion: 1" + "0" * 5000, "corrupt profile: a number of more than 4300 digits"),
])
def test_bad_profiles(tmp_path, content, words):
    from moesim.costmodel.profile import load_profile

    p = tmp_path / "p.yaml"
    p.write_text(content)
    with pytest.raises(InputError) as info:
        load_profile(p)
    assert words in _one_line(info)


def test_profile_size_limit(tmp_path, monkeypatch):
    import moesim.costmodel.profile as profile

    monkeypatch.setattr(profile, "MAX_PROFILE_BYTES", 10)
    p = tmp_path / "p.yaml"
    p.write_text("format: moesim-profile\n")
    with pytest.raises(InputError, match="more than the 10 bytes allowed for a moesim profile YAML"):
        profile.load_profile(p)


# ---------------------------------------------------------------- sweep grids


def test_sweep_grid_values_with_extremes(root):
    from moesim.loader import read_yaml_mapping, scenario_from_dict
    from moesim.sweep_grid import apply_point, build_dimensions, expand

    with pytest.raises(InputError, match=r"^--grid model.n_layers= '\[\[\[.*nested deeper than 32 levels"):
        build_dimensions(grid=["model.n_layers=4," + "[" * 5000])
    with pytest.raises(InputError, match=r"a number of more than 4300 digits"):
        build_dimensions(capacity_factor="1," + "1" * 5000)
    # a value no point could take is refused before any point runs, with the field's bound and why
    for kw, flag in ((dict(capacity_factor="1e300,1.7e+308"), "--capacity-factor"),
                     (dict(grid=["plan.dp=99999999999999999999"]), "--grid plan.dp")):
        with pytest.raises(InputError) as info:
            build_dimensions(**kw)
        assert _one_line(info).startswith(flag) and "must be <=" in _one_line(info)
    # a value its field takes but the other fields refuse is an invalid point, with a one-line reason
    dims = build_dimensions(grid=["plan.ep=8,3"])
    raw = read_yaml_mapping(root / "scenarios" / "mixtral-8x7b-h100-train.yaml")
    points = list(expand(dims, [0]))
    scenario_from_dict(apply_point(raw, points[0]))
    with pytest.raises(InputError) as info:
        scenario_from_dict(apply_point(raw, points[1]))
    assert "plan.ep = 3" in _one_line(info)
