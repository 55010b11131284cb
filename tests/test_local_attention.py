"""Sliding-window and chunked attention (``model.local_attention``): the keys each query sees, the
layers that see them, and what training, prefill and decode pay for them."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from moesim import load_scenario, simulate
from moesim.accounting import flops_per_token
from moesim.engine.local_attention import TILE, keys_before, kv_slots, local_kv, slot_map
from moesim.engine.serving.decode_cost import IterationCost
from moesim.errors import InputError
from moesim.hf_config import HFConfigError, model_fields
from moesim.schemas import ModelSpec
from tests.conftest import engine_reserve_gib

ROOT = Path(__file__).resolve().parents[1]
HF = ROOT / "tests" / "data" / "hf_configs"
GPT_OSS_TRAIN = ROOT / "moesim" / "data" / "validation" / "gpt-oss-120b-h100-train.yaml"
SERVE = ROOT / "scenarios" / "mixtral-8x7b-h100-serve-online.yaml"
SLIDING = "model.local_attention={kind: sliding, window: 128, full_every: 2}"


def _brute_pairs(q: int, kv: int, window: int, kind: str) -> int:
    """(Query, key) pairs of the last ``q`` of ``kv`` positions, counted one query at a time."""
    return sum(min(p + 1, window) if kind == "sliding" else p % window + 1 for p in range(kv - q, kv))


@pytest.mark.parametrize("kind", ["sliding", "chunked"])
@pytest.mark.parametrize(("q", "kv", "window"), [(1, 1000, 128), (1, 128, 128), (1, 129, 128), (7, 20, 8),
                                                 (300, 300, 4096), (100, 1000, 128), (2048, 10000, 512)])
def test_decodes_count_exactly_the_keys_in_the_window(kind, q, kv, window):
    """The causal convention q (kv' - q/2) at the returned kv' counts the brute-force pairs less q/2
    (decodes exactly; prompt chunks of a sliding window with the far edge's half tile)."""
    got = float(local_kv(np.array([float(q)]), np.array([float(kv)]), window, kind)[0])
    edge = TILE // 2 if kind == "sliding" and q > 1 else 0
    assert q * (got - q / 2) == pytest.approx(_brute_pairs(q, kv, window + edge, kind) - q / 2, rel=1e-12)


def test_integer_decodes_read_the_window_and_chunks_restart():
    assert local_kv(np.ones(4, np.int64), np.array([5, 128, 129, 100_000]), 128, "sliding").tolist() == [5, 128, 128, 128]
    assert local_kv(np.ones(3, np.int64), np.array([8, 9, 17]), 8, "chunked").tolist() == [8, 1, 1]
    assert local_kv(300, 300, 4096, "sliding") == 300  # a first chunk inside the window: unchanged
    assert keys_before(np.array([10.0]), 0, "sliding")[0] == 55  # window 0: full causal


def test_layer_patterns_of_published_models():
    def model(**la) -> ModelSpec:
        return ModelSpec(n_layers=48, d_model=512, n_heads=8, vocab_size=1000, ffn_hidden=1024, local_attention=la)

    llama4 = model(kind="chunked", window=8192, full_every=4)
    assert llama4.n_local_layers == 36 and [llama4.is_local_layer(i) for i in range(4)] == [True, True, True, False]
    assert model(window=4096).n_local_layers == 48  # Mistral: every layer
    with pytest.raises(ValueError, match="model.local_attention.full_every = 49: must be <= model.n_layers"):
        model(window=128, full_every=49)


def test_hugging_face_configs_read_their_windows():
    def read(name: str, **changes):
        cfg = json.loads((HF / f"{name}.json").read_text())
        cfg.update(changes)
        return model_fields(cfg).get("local_attention")

    assert read("gpt-oss-120b") == {"kind": "sliding", "window": 128, "full_every": 2}
    assert read("llama-4-maverick-17b-128e") == {"kind": "chunked", "window": 8192, "full_every": 4}
    assert read("mixtral-8x7b") is None  # sliding_window: null
    assert read("mixtral-8x7b", sliding_window=4096) == {"kind": "sliding", "window": 4096, "full_every": 0}
    with pytest.raises(HFConfigError, match="'layer_types': full-attention layers are not every N-th layer"):
        read("gpt-oss-120b", layer_types=["full_attention"] * 2 + ["sliding_attention"] * 34)
    with pytest.raises(HFConfigError, match="'layer_types' = .*: expected one attention type per layer \\(36\\)"):
        read("gpt-oss-120b", layer_types=["full_attention"] * 3)

    def read4(**changes):
        cfg = json.loads((HF / "llama-4-maverick-17b-128e.json").read_text())
        cfg["text_config"].update(changes)
        return model_fields(cfg).get("local_attention")

    assert read4(no_rope_layers=[1, 1, 0] * 16) == {"kind": "chunked", "window": 8192, "full_every": 3}
    with pytest.raises(HFConfigError, match="'text_config.no_rope_layers' = .*: expected one 0/1 per layer \\(48\\)"):
        read4(no_rope_layers=[1, 0])
    with pytest.raises(HFConfigError, match="'text_config.no_rope_layer_interval': expected a positive int"):
        read4(no_rope_layer_interval=0)


def test_a_window_as_long_as_the_row_changes_nothing_and_a_short_one_saves_attention_time():
    full = simulate(load_scenario(GPT_OSS_TRAIN, ["plan.recompute_modules=null", "model.local_attention=null"])).summary
    wide = simulate(load_scenario(GPT_OSS_TRAIN, ["plan.recompute_modules=null",
                                                  "model.local_attention={window: 4096, full_every: 2}"])).summary
    short = simulate(load_scenario(GPT_OSS_TRAIN, ["plan.recompute_modules=null", SLIDING])).summary
    assert wide["step_time_s"] == full["step_time_s"]
    assert short["step_time_s"] < full["step_time_s"]
    # model FLOPs count only the keys in the window
    s = load_scenario(GPT_OSS_TRAIN, [SLIDING])
    assert flops_per_token(s.model, 4096) < flops_per_token(load_scenario(GPT_OSS_TRAIN, ["model.local_attention=null"]).model, 4096)


def _cost(overrides: list[str]) -> IterationCost:
    from moesim.costmodel.model import build_cost_model

    s = load_scenario(SERVE, ["model.max_seq_len=32768", *overrides])
    return IterationCost(s, build_cost_model(s.hardware), np.random.default_rng(0), max_tokens=256)


def test_a_decode_past_the_window_costs_what_a_decode_at_the_window_does():
    """Every layer local (full_every 0): decoding at context 20,000 reads 1,024 keys a layer."""
    local = _cost(["model.local_attention={kind: sliding, window: 1024}"])
    full = _cost([])
    ones = np.ones(8, np.int64)
    assert local.attention_s(ones, np.full(8, 20_000)) == full.attention_s(ones, np.full(8, 1024))
    assert local.attention_s(ones, np.full(8, 500)) == full.attention_s(ones, np.full(8, 500))


def test_decodes_over_the_whole_cache_when_the_engine_applies_the_window_to_prompts_only():
    """TensorRT-LLM's chunked attention: prompt chunks within the chunk, decodes over everything."""
    chunked = "model.local_attention={kind: chunked, window: 1024}"
    ctx_only = _cost([chunked, "workload.local_attention_mode=prefill"])
    both = _cost([chunked])
    full = _cost([])
    ones, ctx = np.ones(4, np.int64), np.full(4, 5000)
    assert ctx_only.attention_s(ones, ctx) == full.attention_s(ones, ctx) > both.attention_s(ones, ctx)
    prompt = (np.array([2048]), np.array([2048]))
    assert ctx_only.attention_s(*prompt) == both.attention_s(*prompt) < full.attention_s(*prompt)


def test_a_bad_local_attention_is_one_line_naming_the_field():
    with pytest.raises(InputError, match="model.local_attention.kind"):
        load_scenario(SERVE, ["model.local_attention={kind: banded, window: 128}"])
    with pytest.raises(InputError, match="model.local_attention.window"):
        load_scenario(SERVE, ["model.local_attention={window: 0}"])
    with pytest.raises(InputError, match=r"^model.local_attention.full_every = 40: must be <= model.n_layers \(32\)"):
        load_scenario(SERVE, ["model.local_attention={window: 128, full_every: 40}"])
    with pytest.raises(InputError, match="workload.local_attention_mode") as info:
        load_scenario(SERVE, ["workload.local_attention_mode=window"])
    assert "\n" not in str(info.value) and "kv_window" in str(info.value)


def test_local_layers_hold_the_window_and_full_layers_every_token():
    """Slots in tokens of every layer's KV: 48 layers, 36 local with a window of 1,000."""
    ctx = np.array([0, 1, 999, 1000, 1001, 1004, 100_000])
    slots = kv_slots(ctx, 1000, 36, 48)
    assert slots.tolist() == [0, 1, 999, 1000, 1001, 1001, 1000 + (99_000 * 12 + 47) // 48]
    assert set(np.diff(kv_slots(np.arange(5000), 1000, 36, 48)).tolist()) == {0, 1}  # non-decreasing, unit steps
    m = load_scenario(SERVE, ["model.local_attention={window: 1000, full_every: 4}"]).model
    assert slot_map(m, "kv_window")(np.array([5000])).tolist() == [1000 + 4000 // 4]
    assert slot_map(m, "compute") is None and slot_map(m, "prefill") is None


def test_a_sequence_longer_than_the_pool_is_served_when_every_layer_keeps_only_its_window():
    """Mistral-style: every layer local, so a sequence never holds more than the window's KV."""
    base = ["model.max_seq_len=65536", "workload.arrival={process: batch, n_requests: 20}",
            "workload.prompt_tokens={dist: fixed, value: 30000}", "workload.output_tokens={dist: fixed, value: 200}"]
    base.append(f"hardware.device.mem_gib={45 + engine_reserve_gib(load_scenario(SERVE, base))}")  # a 45 GiB budget
    full = simulate(load_scenario(SERVE, base)).summary
    local = simulate(load_scenario(SERVE, [*base, "model.local_attention={window: 4096}"])).summary
    assert full["kv_cache_capacity_tokens"] < 30_200  # the pool cannot hold one whole sequence
    assert full["served_requests"] == 0 and local["served_requests"] == 20
    assert not full["fits"] and local["fits"]  # the memory verdict counts the longest request's KV slots
    compute = simulate(load_scenario(SERVE, [*base, "model.local_attention={window: 4096}",
                                             "workload.local_attention_mode=compute"])).summary
    assert compute["served_requests"] == 0 and not compute["fits"]  # the cache still sized for every token


def test_disaggregated_decode_pools_receive_only_the_windows_kv():
    disagg = ROOT / "scenarios" / "deepseek-v3-h800-serve-disagg.yaml"
    few = "workload.arrival.n_requests=60"
    full = simulate(load_scenario(disagg, [few])).summary
    local = simulate(load_scenario(disagg, [few, "model.local_attention={window: 256}"])).summary
    assert local["kv_transfer_gib"] < full["kv_transfer_gib"]
    assert local["served_requests"] == full["served_requests"] > 0


@pytest.mark.parametrize(("preset", "config"), [("gpt-oss-120b", "gpt-oss-120b"), ("gpt-oss-20b", "gpt-oss-20b"),
                                                ("llama-4-maverick", "llama-4-maverick-17b-128e"),
                                                ("llama-4-scout", "llama-4-scout-17b-16e")])
def test_presets_of_local_attention_models_are_their_config_json(preset, config):
    """The presets are the Hugging Face import of the published config.json, windows included."""
    from moesim.presets import MODELS

    imported = ModelSpec(**{**model_fields(json.loads((HF / f"{config}.json").read_text())), "name": "x"})
    assert ModelSpec(**{**MODELS[preset], "name": "x"}) == imported
    assert imported.local_attention is not None


def test_decode_bytes_read_mxfp4_experts_and_only_the_windows_kv():
    """gpt-oss at batch 1: 4 experts a layer at 4.25 bits, not 16; the KV of 18 full layers at
    10,000 tokens and of 18 sliding ones at 128."""
    from moesim.accounting import decode_bytes_per_token, expert_params, kv_bytes_per_token
    from moesim.presets import MODELS

    m = ModelSpec(**MODELS["gpt-oss-120b"])
    bf16_experts = m.model_copy(update={"expert_dtype": None})
    touched = 4 * m.n_moe_layers * expert_params(m)
    saved = decode_bytes_per_token(bf16_experts) - decode_bytes_per_token(m)
    assert saved == pytest.approx(touched * (2.0 - 4.25 / 8))
    kv = decode_bytes_per_token(m, context_tokens=10_000) - decode_bytes_per_token(m)
    assert kv == pytest.approx(kv_bytes_per_token(m) * (18 * 10_000 + 18 * 128) / 36)
    # chunked (Llama 4): 36 of 48 layers read their own chunk's (10,000 - 1) mod 8,192 + 1 = 1,808 keys
    mav = ModelSpec(**MODELS["llama-4-maverick"])
    full = mav.model_copy(update={"local_attention": None})
    assert decode_bytes_per_token(mav) == decode_bytes_per_token(full)  # no context, no KV read
    kv = decode_bytes_per_token(mav, context_tokens=10_000) - decode_bytes_per_token(mav)
    assert kv == pytest.approx(kv_bytes_per_token(mav) * (12 * 10_000 + 36 * 1_808) / 48)


def test_check_counts_the_max_length_sequences_the_kv_pool_holds():
    """gpt-oss: a 131,072-token sequence holds about half its KV when half the layers keep 128 tokens."""
    from moesim.check import summary

    local = summary(load_scenario("gpt-oss-120b-h100-serve-long"))
    full = summary(load_scenario("gpt-oss-120b-h100-serve-long", ["model.local_attention=null"]))
    assert full["kv_sequences_at_max_seq_len"] == int(full["kv_cache_capacity_tokens"] // 131_072)
    held = 131_072 - 18 * (131_072 - 128) // 36
    assert local["kv_sequences_at_max_seq_len"] == int(local["kv_cache_capacity_tokens"] // held)
    assert local["kv_sequences_at_max_seq_len"] >= 2 * full["kv_sequences_at_max_seq_len"]
