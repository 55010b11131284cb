"""What a training step keeps of its GEMMs' inputs (moesim.frozen_inputs): frozen GEMMs keep none, LoRA
adapters keep theirs at 16 bits (with dropout, a copy and a mask), FP8 attention keeps Q/K/V and O in FP8, and
Megatron's FP8 activation-input store; against hand counts in units of the model's widths."""

from __future__ import annotations

import pytest

from moesim.accounting import GIB
from moesim.activations import layer_activation_bytes_per_token, recompute_working_bytes_per_token
from moesim.frozen_inputs import (
    DROPOUT_MASK_BYTES,
    PRETRAINING,
    saves_delta_bytes_per_token,
    saves_of,
)
from moesim.loader import load_scenario, scenario_from_dict
from moesim.memory import memory_report
from moesim.precision import precision
from moesim.presets import MODELS
from moesim.schemas import ModelSpec
from moesim.schemas.workload import TrainableSpec
from moesim.train_bytes import stored_weight_bytes, training_weight_bytes

LLAMA = ModelSpec(**MODELS["llama-2-70b"])  # dense: d 8192, FFN 28672 (gated), 64 heads, 8 KV heads of 128
MIXTRAL = ModelSpec(**MODELS["mixtral-8x7b"])  # 8 experts top-2, no shared experts
BF16, FP8 = precision("bf16"), precision("fp8")
LORA_ATTN = TrainableSpec(mode="lora", rank=16, targets=["attention"])
MLPERF = "moesim/data/validation/llama2-70b-lora-mlperf.yaml"


def delta(m, moe, prec, saves, modules=None):
    return saves_delta_bytes_per_token(m, moe, prec, None, saves, modules)


def test_pretraining_keeps_what_it_kept():
    assert saves_of(TrainableSpec()) == PRETRAINING
    assert delta(LLAMA, False, FP8, PRETRAINING) == 0.0
    # the layer's bytes with the default saves are the pre-training ones, layer by layer
    for recompute in ("none", "selective", "full"):
        assert layer_activation_bytes_per_token(LLAMA, 0, 1, recompute, FP8) == layer_activation_bytes_per_token(
            LLAMA, 0, 1, recompute, FP8, saves=PRETRAINING)


def test_a_frozen_ffn_keeps_neither_gemm_input():
    d, f = LLAMA.d_model, LLAMA.ffn_hidden
    saves = saves_of(LORA_ATTN)
    assert (saves.attention, saves.dense_ffn) == ("adapted", "frozen")
    # bf16: the adapter keeps the QKV input at the width the trained GEMM did; fc1's and fc2's inputs go
    assert delta(LLAMA, False, BF16, saves) == pytest.approx((d + f) * 2)
    # FP8: the trained GEMMs kept 1-byte copies; the adapter keeps the 16-bit QKV input (one byte more)
    assert delta(LLAMA, False, FP8, saves) == pytest.approx((d + f) * 1 - d * 1)
    # training only the experts of a MoE: attention's QKV input, the router's input and nothing of the experts'
    experts_only = saves_of(TrainableSpec(mode="experts"))
    assert delta(MIXTRAL, True, BF16, experts_only) == pytest.approx(MIXTRAL.d_model * 2 * 2)  # QKV and router input
    non_experts = saves_of(TrainableSpec(mode="non_experts"))
    w, k = MIXTRAL.expert_width, MIXTRAL.top_k
    assert delta(MIXTRAL, True, BF16, non_experts) == pytest.approx(k * (MIXTRAL.d_model + w) * 2)


def test_dropout_adds_a_copy_and_a_mask_per_adapted_input():
    d, o = LLAMA.d_model, LLAMA.n_heads * LLAMA.head_width
    plain = delta(LLAMA, False, BF16, saves_of(LORA_ATTN))
    dropped = delta(LLAMA, False, BF16, saves_of(TrainableSpec(mode="lora", rank=16, targets=["attention"],
                                                               dropout=0.1)))
    # QKV input: its mask; the output projection's input: dropout(O) beside flash attention's O, and its mask
    assert plain - dropped == pytest.approx(d * DROPOUT_MASK_BYTES + o * (2 + DROPOUT_MASK_BYTES))
    assert saves_of(TrainableSpec(mode="lora", rank=16, dropout=0.0)).dropout is False


def test_fp8_attention_and_fp8_activation_inputs_keep_one_byte():
    d, f = LLAMA.d_model, LLAMA.ffn_hidden
    qkv = LLAMA.n_heads * LLAMA.head_width + 2 * LLAMA.kv_heads * LLAMA.head_width
    assert delta(LLAMA, False, FP8, PRETRAINING._replace(fp8_core=True)) == pytest.approx(qkv * 1)
    assert delta(LLAMA, False, FP8, PRETRAINING._replace(fp8_act_input=True)) == pytest.approx(2 * f * 1)
    # a frozen output projection keeps no copy of O beside flash attention's FP8 one
    frozen = saves_of(TrainableSpec(mode="experts"), fp8_core=True)
    o = LLAMA.n_heads * LLAMA.head_width
    assert delta(LLAMA, False, FP8, frozen) == pytest.approx(qkv + o + d + (d + f))
    # the legacy selective recompute keeps no Q/K/V at all: FP8 attention saves nothing there
    fp8_core = PRETRAINING._replace(fp8_core=True)
    assert layer_activation_bytes_per_token(LLAMA, 0, 1, "selective", FP8, saves=fp8_core) == pytest.approx(
        layer_activation_bytes_per_token(LLAMA, 0, 1, "selective", FP8))


def test_recomputed_modules_are_not_dropped_twice():
    saves = saves_of(LORA_ATTN)
    # the mlp checkpoint already drops the frozen FFN's insides: only the attention part changes
    assert delta(LLAMA, False, BF16, saves, ["mlp"]) == 0.0
    # moe_act drops the experts' fc2 input: freezing them drops only fc1's rows
    frozen_experts = saves_of(TrainableSpec(mode="non_experts"))
    k, d = MIXTRAL.top_k, MIXTRAL.d_model
    assert delta(MIXTRAL, True, BF16, frozen_experts, ["moe_act"]) == pytest.approx(k * d * 2)
    assert delta(MIXTRAL, True, BF16, frozen_experts, ["moe"]) == 0.0
    # recompute's working set and its kept bytes use the same saves: never negative
    for mods in (["mlp"], ["layernorm"], ["core_attn"]):
        assert recompute_working_bytes_per_token(LLAMA, 0, 1, "selective", BF16, None, mods, saves) >= 0.0


def test_fp8_primary_weights_of_a_lora_base_are_stored_at_their_cast():
    blackwell = load_scenario(MLPERF, ["plan.fp8_param_gather=true"])
    hopper = load_scenario(MLPERF, ["plan.fp8_param_gather=true", "hardware.preset=h100-sxm"])
    b = training_weight_bytes(precision("fp8", blackwell.hardware.device))
    dense_b, block_b = stored_weight_bytes(blackwell, b)
    assert block_b == 1.0 and 1.0 < dense_b < 1.05  # the embedding and head stay 16-bit (0.8 % of Llama 2 70B)
    assert stored_weight_bytes(hopper, b)[1] == 2.0  # the FP8 weight and its cached transpose
    assert stored_weight_bytes(load_scenario(MLPERF), b) == (b, b)  # 16-bit weights without fp8_param_gather
    w_bw, w_hp = memory_report(blackwell).weights_gib, memory_report(hopper).weights_gib
    assert w_bw == pytest.approx(w_hp / 2, rel=0.02) and 60 < w_bw < 70


def test_activations_shrink_with_cp_and_the_fp8_store_as_counted():
    """MLPerf's Llama 2 70B LoRA: the CP2 run's activations are twice the CP4 run's, and FP8_ACT takes off
    the SwiGLU input's upper byte: 2 x 28,672 bytes a token a layer."""
    base = ["plan.fp8_param_gather=true", "plan.fp8_act_input=false"]
    acts = {cp: memory_report(load_scenario(MLPERF, base + [f"plan.cp={cp}", f"hardware.cluster.nodes={cp}"])).activations_gib for cp in (2, 4)}
    assert acts[2] == pytest.approx(2 * acts[4], rel=0.01)
    with_store = memory_report(load_scenario(MLPERF, ["plan.fp8_param_gather=true"])).activations_gib
    without = memory_report(load_scenario(MLPERF, base)).activations_gib
    tokens, layers = 8192, LLAMA.n_layers
    assert (without - with_store) * GIB == pytest.approx(2 * LLAMA.ffn_hidden * tokens * layers, rel=1e-6)


def test_fp8_act_input_takes_a_boolean_only():
    with pytest.raises(Exception, match=r"plan.fp8_act_input = 'maybe': Input should be a valid boolean"):
        load_scenario(MLPERF, ["plan.fp8_act_input=maybe"])


def test_dropout_is_lora_only_and_bounded():
    for bad, words in (({"mode": "experts", "dropout": 0.1}, "only for mode 'lora'"),
                       ({"mode": "lora", "rank": 8, "dropout": 1.0}, "must be < 1")):
        with pytest.raises(Exception, match=words):
            scenario_from_dict({"name": "x", "model": {"preset": "mixtral-8x7b"}, "hardware": {"preset": "h100-sxm"},
                                "plan": {"dp": 1}, "workload": {"kind": "training", "global_batch_seqs": 1,
                                                                "seq_len": 128, "trainable": bad}})


def test_advice_offers_the_fp8_stores_that_make_a_plan_fit():
    from moesim.fit_advice import fit_explanation

    # FT-38's run without FP8_ACT does not fit 8 B200 (its SwiGLU inputs at 16 bits); the FP8 store alone fits it
    s = load_scenario(MLPERF, ["plan.fp8_param_gather=true", "plan.fp8_act_input=false"])
    assert not memory_report(s).fits
    advice = fit_explanation(s)[1]
    assert "plan.fp8_act_input: true" in advice and "plan.fp8_param_gather" not in advice  # already on
    # at CP2 the 16-bit frozen weights (and their cached FP8 copies) are what does not fit: FP8 primary weights fit
    cp2 = load_scenario(MLPERF, ["plan.cp=2", "hardware.cluster.nodes=2"])
    assert "plan.fp8_param_gather: true" in fit_explanation(cp2)[1]
    # a 16-bit run has no FP8 store to offer
    bf16 = load_scenario(MLPERF, ["model.dtype=bf16", "plan.fp8_act_input=false"])
    assert "fp8_act_input" not in fit_explanation(bf16)[1]


def test_both_fp8_swiglu_stores_never_count_the_routed_experts_twice():
    """DeepSeek-V3's plan caches the routed experts' SwiGLU input in FP8 under moe_act's recompute
    (plan.fp8_moe_act_input); adding Megatron's activation_func_fp8_input_store (plan.fp8_act_input) then saves
    only the shared expert's and the dense layers' SwiGLU inputs, one byte an element each (2 x width, gated)."""
    s = load_scenario("scenarios/deepseek-v3-h800-train.yaml")
    m, plan = s.model, s.plan
    prec = precision(m.dtype)
    mods = [*plan.recompute_modules, "fp8_moe_act_input"]
    full = TrainableSpec()

    def per_token(layer: int, act_input: bool) -> float:
        return layer_activation_bytes_per_token(m, layer, 1, plan.recompute, prec, None, mods,
                                                saves_of(full, fp8_act_input=act_input))

    moe, dense = m.first_dense_layers, 0  # DeepSeek-V3: three dense layers first
    assert m.is_moe_layer(moe) and not m.is_moe_layer(dense)
    assert per_token(moe, False) - per_token(moe, True) == pytest.approx(2 * m.n_shared_experts * m.shared_width)
    assert per_token(dense, False) - per_token(dense, True) == pytest.approx(2 * m.ffn_hidden)
