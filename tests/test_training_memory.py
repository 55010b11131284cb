"""Training memory from first principles: FP8 widths, MLA widths, shared experts, dense layers,
capacity padding, norm bytes. Hand formulas on a tiny model; every number below is worked by hand
from the docstrings of ``moesim.accounting`` (Korthikanti et al. 2022 with flash attention)."""

from __future__ import annotations

import copy

import numpy as np
import pytest

from moesim.accounting import GIB, param_counts
from moesim.activations import (
    activation_bytes_per_token_layer,
    attention_activation_bytes_per_token,
    ffn_activation_bytes_per_token,
    layer_activation_bytes_per_token,
    recompute_working_bytes_per_token,
    routed_slots_per_token,
)
from moesim.engine.training.schedules import schedule_for
from moesim.loader import scenario_from_dict
from moesim.memory import (
    fp8_weight_cache_bytes,
    memory_report,
    training_weight_bytes,
    weight_params_per_device,
)
from moesim.precision import precision
from moesim.schemas import ModelSpec, PlanSpec, RoutingSpec
from moesim.stage_memory import stage_layers

# d 64, 4 heads of 16, 2 KV heads; dense FFN 96, experts 32 (8, top-2), one shared expert of 48;
# layer 0 dense, layers 1-2 MoE. SwiGLU.
TINY = dict(name="tiny", n_layers=3, d_model=64, n_heads=4, n_kv_heads=2, head_dim=16, vocab_size=100,
            ffn_hidden=96, expert_ffn_hidden=32, n_experts=8, top_k=2, n_shared_experts=1,
            shared_expert_ffn_hidden=48, first_dense_layers=1, gated_ffn=True, max_seq_len=2048)
MLA = dict(q_lora_rank=24, kv_lora_rank=16, qk_nope_head_dim=8, qk_rope_head_dim=4, v_head_dim=12)
BF16, FP8, FP32 = precision("bf16"), precision("fp8"), precision("fp32")


def tiny(**changes) -> ModelSpec:
    return ModelSpec(**{**TINY, **changes})


def scenario(model: dict | None = None, plan: dict | None = None, routing: dict | None = None, dtype="bf16"):
    raw = {
        "name": "tiny-train",
        "model": {**TINY, "dtype": dtype, **(model or {})},
        "hardware": {"preset": "h100-sxm"},
        "plan": {"dp": 8, "tp": 1, "pp": 1, "ep": 8, "microbatches": 2, "recompute": "none", **(plan or {})},
        "workload": {"kind": "training", "global_batch_seqs": 16, "seq_len": 1024},  # 1024 tokens per microbatch
        "routing": {"overflow": "dropless", **(routing or {})},
    }
    return scenario_from_dict(copy.deepcopy(raw))


# ---------------------------------------------------------------- attention


def test_attention_standard_hand_formula():
    m = tiny()
    # norm in 64 + QKV GEMM in 64 + Q 64, K 32, V 32 + O 64 = 320 elements
    assert attention_activation_bytes_per_token(m, "none", BF16) == 320 * 2
    # FP8: the QKV GEMM input is cached in FP8 (1 byte), the rest stays bf16
    assert attention_activation_bytes_per_token(m, "none", FP8) == 256 * 2 + 64 * 1
    # selective: Q, K, V (128 elements) are recomputed
    assert attention_activation_bytes_per_token(m, "selective", BF16) == (320 - 128) * 2


def test_mla_attention_uses_the_latent_and_head_widths():
    m = tiny(mla=MLA)
    # norm ins: 64 + 24 + 16; GEMM ins (down-proj, q/kv up-proj): 64 + 24 + 16;
    # Q 4*(8+4) = 48, K 48, V 4*12 = 48; O 48
    norm, gemm, qkv, out = 104, 104, 144, 48
    assert attention_activation_bytes_per_token(m, "none", BF16) == (norm + gemm + qkv + out) * 2
    assert attention_activation_bytes_per_token(m, "none", FP8) == (norm + qkv + out) * 2 + gemm * 1
    assert attention_activation_bytes_per_token(m, "selective", BF16) == (norm + gemm + out) * 2
    no_q_latent = tiny(mla={**MLA, "q_lora_rank": 0})
    assert attention_activation_bytes_per_token(no_q_latent, "none", BF16) == (80 + 80 + qkv + out) * 2


def test_mla_changes_activations_by_what_the_widths_say():
    plain, mla = tiny(), tiny(mla=MLA)
    # MLA minus standard, elements: latents (40 norm + 40 GEMM in) + QKV (144 - 128) + O (48 - 64) = 80
    for rec, delta in (("none", 80), ("selective", 80 - 16)):
        diff = attention_activation_bytes_per_token(mla, rec, BF16) - attention_activation_bytes_per_token(plain, rec, BF16)
        assert diff == delta * 2
    # and at the scenario level, the whole difference is in the activations
    a, b = memory_report(scenario()), memory_report(scenario({"mla": MLA}))
    tokens, layers = 1024, 3
    assert (b.activations_gib - a.activations_gib) * GIB == pytest.approx(80 * 2 * tokens * layers)


def test_deepseek_v3_mla_widths_exceed_the_d_model_guess():
    from moesim.presets import MODELS

    ds = ModelSpec(**MODELS["deepseek-v3"])
    h, d = 128, 7168
    qkv = 2 * h * (128 + 64) + h * 128
    expected = (d + 1536 + 512) * 2 * 2 + qkv * 2 + h * 128 * 2
    assert attention_activation_bytes_per_token(ds, "none", BF16) == expected
    # the old d_model/n_kv_heads-derived guess: 3d + q + 2 kv at head_dim 128
    assert expected > (3 * d + h * 128 + 2 * h * 128) * 2


# ---------------------------------------------------------------- FFN: dense, routed, shared


def test_dense_layer_stores_its_wider_ffn():
    m = tiny()
    # norm in 64 + fc1 in 64 + gate/up 2*96 + fc2 in 96
    assert ffn_activation_bytes_per_token(m, False, BF16) == (64 + 64 + 192 + 96) * 2
    assert ffn_activation_bytes_per_token(m, False, FP8) == (64 + 192) * 2 + (64 + 96) * 1
    plain = ModelSpec(**{**TINY, "n_experts": 1, "top_k": 1, "n_shared_experts": 0, "first_dense_layers": 0})
    assert ffn_activation_bytes_per_token(plain, plain.is_moe_layer(0), BF16) == (64 + 64 + 192 + 96) * 2


def test_moe_layer_stores_routed_rows_and_the_shared_expert():
    m = tiny()
    routed = 2 * (64 + 64 + 32)  # per token: top-2 rows of fc1 in 64, gate/up 64, fc2 in 32
    shared = 96 + 48  # gate/up 2*48, fc2 in 48 (its fc1 input is the saved router input)
    assert ffn_activation_bytes_per_token(m, True, BF16) == (64 + 64 + routed + shared) * 2
    no_shared = tiny(n_shared_experts=0)
    assert ffn_activation_bytes_per_token(m, True, BF16) - ffn_activation_bytes_per_token(no_shared, True, BF16) == shared * 2
    # FP8: row fc1 inputs and fc2 inputs at 1 byte; norm input, router input, gate/up at 2
    fp8 = (64 + 64 + 2 * 64 + 96) * 2 + (2 * (64 + 32) + 48) * 1
    assert ffn_activation_bytes_per_token(m, True, FP8) == fp8
    # a wider shared expert stores more
    assert (ffn_activation_bytes_per_token(tiny(shared_expert_ffn_hidden=96), True, BF16)
            - ffn_activation_bytes_per_token(m, True, BF16)) == 3 * 48 * 2


def test_layer_mix_dense_and_moe():
    m = tiny()
    dense = layer_activation_bytes_per_token(m, 0, 1, "none", BF16)
    moe = layer_activation_bytes_per_token(m, 1, 1, "none", BF16)
    assert dense == (320 + 416) * 2
    assert moe == (320 + 128 + 320 + 144) * 2
    assert activation_bytes_per_token_layer(m, 1, "none", BF16) == pytest.approx((dense + 2 * moe) / 3)
    assert layer_activation_bytes_per_token(m, 1, 4, "none", BF16) == moe / 4  # sequence parallel


# ---------------------------------------------------------------- capacity padding


def test_drop_pads_routed_rows_to_capacity():
    m = tiny()
    drop = RoutingSpec(capacity_factor=1.25, overflow="drop")
    assert routed_slots_per_token(m, RoutingSpec(capacity_factor=1.25, overflow="dropless"), 1024) == 2
    assert routed_slots_per_token(m, drop) == 2.5  # cf * top_k
    assert routed_slots_per_token(m, drop, 1024) == 8 * 320 / 1024  # ceil(1.25 * 1024 * 2 / 8) = 320
    assert routed_slots_per_token(m, drop, 100) == 8 * 32 / 100  # ceil(31.25) = 32
    assert routed_slots_per_token(m, drop, 4) == 8 * 4 / 4  # min_capacity 4 beats ceil(1.25)


def test_drop_mode_with_cf_above_one_holds_more_than_dropless():
    dropless = memory_report(scenario(routing={"capacity_factor": 1.25, "overflow": "dropless"}))
    drop = memory_report(scenario(routing={"capacity_factor": 1.25, "overflow": "drop"}))
    # 2 MoE layers x 1024 tokens x 0.5 extra rows x (64 + 64 + 32) elements x 2 bytes
    extra = 2 * 1024 * 0.5 * 160 * 2
    assert (drop.activations_gib - dropless.activations_gib) * GIB == pytest.approx(extra)
    low = memory_report(scenario(routing={"capacity_factor": 0.5, "overflow": "drop"}))
    assert low.activations_gib < dropless.activations_gib  # cf < 1 pads to fewer rows than top_k


# ---------------------------------------------------------------- bytes per element


def test_every_term_scales_with_bytes_per_element():
    m = tiny(mla=MLA)
    for layer in (0, 1):
        for rec in ("none", "selective", "full"):
            bf16 = layer_activation_bytes_per_token(m, layer, 1, rec, BF16)
            assert layer_activation_bytes_per_token(m, layer, 1, rec, FP32) == 2 * bf16  # norms included
    assert layer_activation_bytes_per_token(m, 1, 2, "full", FP32) == 64 * 4 / 2


def test_norm_inputs_are_16_bit_under_fp8():
    m = tiny()
    # full recompute keeps the layer input (the residual stream), bf16 under FP8 math
    assert layer_activation_bytes_per_token(m, 1, 1, "full", FP8) == 64 * 2


# ---------------------------------------------------------------- FP8 training


def _never_fp8_elements(m: ModelSpec, layer: int) -> int:
    """Elements per token FP8 training keeps in bf16 whatever it caches in FP8 (recompute none):
    norm inputs, Q/K/V, O, router input, fc1 outputs. Standard attention only."""
    d = m.d_model
    attn = d + m.n_heads * m.head_width + 2 * m.kv_heads * m.head_width + m.n_heads * m.head_width
    g = 2 if m.gated_ffn else 1
    if not m.is_moe_layer(layer):
        return attn + d + g * m.ffn_hidden
    return attn + 2 * d + m.top_k * g * m.expert_width + g * m.n_shared_experts * m.shared_width


def _preset_scenario(dtype: str):
    raw = {
        "name": "mixtral-4-layers", "model": {"preset": "mixtral-8x7b", "n_layers": 4, "dtype": dtype},
        "hardware": {"preset": "h100-sxm"},
        "plan": {"dp": 8, "tp": 1, "pp": 1, "ep": 8, "microbatches": 2, "recompute": "none"},
        "workload": {"kind": "training", "global_batch_seqs": 16, "seq_len": 1024},
        "routing": {"overflow": "dropless"},
    }
    return scenario_from_dict(raw)


@pytest.mark.parametrize("make", [lambda dtype: scenario(dtype=dtype), _preset_scenario], ids=["tiny", "mixtral"])
def test_fp8_training_memory_is_at_least_the_bf16_activation_lower_bound(make):
    """Lower bound: the bf16 run's weights, gradients and Adam states, plus the bf16 bytes of every
    activation FP8 training never casts to FP8 (norm inputs, Q/K/V, O, router input, fc1 outputs)."""
    fp8, bf16 = make("fp8"), make("bf16")
    a, b = memory_report(fp8), memory_report(bf16)
    m, tokens = fp8.model, 1024
    keep16 = sum(_never_fp8_elements(m, i) for i in range(m.n_layers)) * 2 * tokens / GIB
    lower = b.weights_gib + b.gradients_gib + b.optimizer_gib + keep16
    assert a.total_gib >= lower
    # bf16 weights, not fp8 ones, and the FP8 casts Transformer Engine caches through the step
    cache = fp8_weight_cache_bytes(fp8, *weight_params_per_device(fp8.model, fp8.plan)) / GIB
    assert cache > 0 and a.weights_gib == pytest.approx(b.weights_gib + cache)
    assert a.gradients_gib == pytest.approx(b.gradients_gib) and a.optimizer_gib == pytest.approx(b.optimizer_gib)
    assert a.activations_gib >= keep16
    assert 0.5 * b.activations_gib < a.activations_gib < b.activations_gib


def test_fp8_training_activations_hand_formula():
    s = scenario(dtype="fp8")
    m = s.model
    attn = (64 + 128 + 64) * 2 + 64 * 1  # norm in, Q/K/V, O at 2 bytes; QKV GEMM input at 1: 576
    dense = attn + (64 + 192) * 2 + (64 + 96) * 1  # + norm in, gate/up; fc1 in, fc2 in: 1248
    moe = attn + (64 + 64 + 2 * 64 + 96) * 2 + (2 * (64 + 32) + 48) * 1  # 1520
    assert (dense, moe) == (1248, 1520)
    assert layer_activation_bytes_per_token(m, 0, 1, "none", FP8) == dense
    assert layer_activation_bytes_per_token(m, 1, 1, "none", FP8) == moe
    # plus the loss's logits: 1,024 tokens x 100 vocabulary x 10 bytes (Megatron's compiled fused loss)
    assert memory_report(s).activations_gib * GIB == pytest.approx(1024 * (dense + 2 * moe) + 1024 * 100 * 10)


def test_training_weights_are_16_bit_and_states_2_plus_12():
    assert training_weight_bytes(FP8) == 2 and training_weight_bytes(BF16) == 2 and training_weight_bytes(FP32) == 4
    s = scenario(dtype="fp8", plan={"zero_stage": 0})
    rep, p = memory_report(s), param_counts(s.model)
    dense, experts = p.dense, p.routed_experts / 8
    cache = fp8_weight_cache_bytes(s, *weight_params_per_device(s.model, s.plan))  # the cached FP8 casts
    assert rep.weights_gib * GIB == pytest.approx((dense + experts) * 2 + cache)
    assert rep.gradients_gib * GIB == pytest.approx((dense + experts) * 2)
    assert rep.optimizer_gib * GIB == pytest.approx((dense + experts) * 12)


# ---------------------------------------------------------------- stage 0's layers


def test_stage_layers_match_the_engine_split():
    for n_layers, pp, v, sched in ((61, 8, 4, "interleaved"), (94, 8, 4, "interleaved"), (7, 3, 1, "1f1b"),
                                   (3, 1, 1, "1f1b"), (10, 2, 1, "gpipe")):
        m = tiny(n_layers=n_layers)
        plan = PlanSpec(pp=pp, virtual_stages=v, schedule=sched, microbatches=2 * pp)
        s = schedule_for(plan)
        chunks = np.array_split(np.arange(n_layers), s.chunks(pp, v))
        for stage in range(pp):
            want = sorted(int(x) for c, ch in enumerate(chunks) if s.stage_of(c, pp) == stage for x in ch)
            assert stage_layers(m, plan, stage) == want
    assert stage_layers(tiny(n_layers=61), PlanSpec(pp=8, virtual_stages=4, schedule="interleaved",
                                                    microbatches=16)) == [0, 1, 16, 17, 32, 33, 48, 49]


def test_activations_count_the_dense_layers_stage_0_holds():
    # 4 layers, pp 2: stage 0 holds layers 0 (dense) and 1 (MoE); 1F1B keeps 2 microbatches in flight
    s = scenario({"n_layers": 4}, plan={"dp": 4, "pp": 2, "ep": 4, "microbatches": 2})
    m = s.model
    tokens = 16 / (4 * 2) * 1024
    per_token = layer_activation_bytes_per_token(m, 0, 1, "none", BF16) + layer_activation_bytes_per_token(m, 1, 1, "none", BF16)
    assert memory_report(s).activations_gib * GIB == pytest.approx(per_token * tokens * 2)
    assert per_token == (736 + 912) * 2


def test_fp32_gradients_double_the_gradient_bytes_and_the_dp_sync_but_not_the_zero3_gathers():
    """``plan.grad_dtype: fp32`` (Megatron-LM's default under bf16): 4 bytes per gradient in memory
    and in the data-parallel reduction; ZeRO-3 still gathers the weights at 2 bytes."""
    from moesim import load_scenario
    from moesim.costmodel import build_cost_model
    from moesim.engine.training.layer_costs import layer_costs

    base = load_scenario("mixtral-8x7b-h100-train")
    fp32 = load_scenario("mixtral-8x7b-h100-train", ["plan.grad_dtype=fp32"])
    bf16 = load_scenario("mixtral-8x7b-h100-train", ["plan.grad_dtype=bf16"])
    m0, m16, m32 = memory_report(base), memory_report(bf16), memory_report(fp32)
    assert m0 == m16  # bf16 is the default
    assert m32.gradients_gib == pytest.approx(2 * m16.gradients_gib, rel=1e-12)
    assert m32.weights_gib == m16.weights_gib and m32.optimizer_gib == m16.optimizer_gib
    assert m32.total_gib - m16.total_gib == pytest.approx(m16.gradients_gib, rel=1e-9)

    z3 = ["plan.zero_stage=3"]
    c16 = layer_costs(load_scenario("mixtral-8x7b-h100-train", z3), build_cost_model(bf16.hardware), None)
    s32 = load_scenario("mixtral-8x7b-h100-train", [*z3, "plan.grad_dtype=fp32"])
    c32 = layer_costs(s32, build_cost_model(s32.hardware), None)
    assert np.allclose(c32.dp_dense_bytes, 2 * c16.dp_dense_bytes)
    assert c16.gather_layer_bytes is None  # equal widths: the gathers are the syncs
    assert np.allclose(c32.gather_layer_bytes, c16.dp_dense_bytes + c16.dp_expert_bytes)


# ---------------------------------------------------------------- the loss's logits


def test_the_loss_adds_one_microbatchs_logits_at_10_bytes_each_with_pp1():
    """1,024 tokens per microbatch x vocab / tp x (16-bit logits + the loss's fp32 copy + the compiled steps' transient)."""
    small, big = scenario(), scenario(model={"vocab_size": 5100})
    extra = (memory_report(big).activations_gib - memory_report(small).activations_gib) * GIB
    assert extra == pytest.approx(1024 * 5000 * 10)
    # TP2 x DP4: 2,048 tokens per microbatch; vocab-parallel, each TP rank holds its slice of the vocabulary
    tp2 = scenario(model={"vocab_size": 5100}, plan={"tp": 2, "dp": 4, "ep": 4})
    tp2_small = scenario(plan={"tp": 2, "dp": 4, "ep": 4})
    assert (memory_report(tp2).activations_gib - memory_report(tp2_small).activations_gib) * GIB == pytest.approx(
        2048 * 5000 / 2 * 10)


def test_with_a_pipeline_the_last_stage_holds_the_logits_and_is_reported_when_it_holds_more():
    plan = {"dp": 4, "pp": 2, "ep": 4, "microbatches": 4}
    small, big = scenario(plan=plan), scenario(model={"vocab_size": 200_100}, plan=plan)
    # the last stage (layer 2, MoE): one microbatch of its activations plus 1,024 x 200,100 x 10 bytes of logits
    assert stage_layers(big.model, big.plan, 1) == [2]
    last = layer_activation_bytes_per_token(big.model, 2, 1, "none", BF16, routed_slots_per_token(big.model, big.routing))
    assert memory_report(big).activations_gib * GIB == pytest.approx(1024 * last + 1024 * 200_100 * 10)
    assert memory_report(big).activations_gib > memory_report(small).activations_gib


# ---------------------------------------------------------------- recompute's working set


def test_full_recompute_holds_one_layers_activations_on_top_of_the_checkpoints():
    """Checkpoints (each layer's 16-bit input, 64 x 2 bytes per token) for the microbatch in flight,
    plus the largest layer re-created for its backward: a MoE layer's 912 elements less its input."""
    s = scenario(plan={"recompute": "full"})
    m = s.model
    assert [recompute_working_bytes_per_token(m, i, 1, "full", BF16) for i in range(3)] == [
        (736 - 64) * 2, (912 - 64) * 2, (912 - 64) * 2]
    tokens = 1024  # 16 sequences / (dp 8 x 2 microbatches) x 1,024; one microbatch in flight without a pipeline
    assert memory_report(s).activations_gib * GIB == pytest.approx(tokens * 3 * 64 * 2 + tokens * (912 - 64) * 2)
    # without recompute nothing is re-created; selective re-creates the attention core's Q, K, V (128 elements)
    assert recompute_working_bytes_per_token(m, 1, 1, "none", BF16) == 0
    assert recompute_working_bytes_per_token(m, 1, 1, "selective", BF16) == 128 * 2
    # TP with sequence parallelism splits the working set like everything else
    assert recompute_working_bytes_per_token(m, 1, 2, "full", BF16) == (912 - 64) * 2 / 2


def test_the_logits_and_the_last_layers_working_set_are_not_live_together():
    """The loss's backward frees the logits before the last layer's recompute: the loss stage adds
    the larger of the two, not both."""
    s = scenario(model={"vocab_size": 200_100}, plan={"recompute": "full"})
    head = 1024 * 200_100 * 10
    assert head > 1024 * (912 - 64) * 2
    assert memory_report(s).activations_gib * GIB == pytest.approx(1024 * 3 * 64 * 2 + head)
    # with a pipeline, the last stage (layer 2) holds one microbatch's checkpoint and the logits, and is
    # the busiest; stage 0 (two microbatches of layers 0-1 plus a MoE layer's working set) holds less
    p = scenario(model={"vocab_size": 200_100}, plan={"recompute": "full", "dp": 4, "pp": 2, "ep": 4, "microbatches": 4})
    assert memory_report(p).activations_gib * GIB == pytest.approx(1024 * 64 * 2 + head)


def test_transformers_loss_holds_12_bytes_per_logit_over_the_whole_vocabulary():
    """Hugging Face's ForCausalLMLoss: fp32 upcast, saved fp32 log-softmax, and in backward the dense
    fp32 gradients: 12 bytes per logit, and its tensor-parallel plans replicate the head's output.
    Megatron-core's vocab-parallel loss splits the vocabulary over tp: 6 bytes in place, 10 compiled."""
    def extra(plan):
        small = scenario(plan=plan)
        big = scenario(model={"vocab_size": 5100}, plan=plan)
        return (memory_report(big).activations_gib - memory_report(small).activations_gib) * GIB

    assert extra({"loss_impl": "transformers"}) == pytest.approx(1024 * 5000 * 12)
    assert extra({"loss_impl": "fused"}) == pytest.approx(1024 * 5000 * 10)
    assert extra({"loss_impl": "inplace"}) == pytest.approx(1024 * 5000 * 6)
    # TP2 x DP4: 2,048 tokens per microbatch; fused splits the vocabulary over tp, transformers does not
    tp2 = {"tp": 2, "dp": 4, "ep": 4}
    assert extra({**tp2, "loss_impl": "transformers"}) == pytest.approx(2048 * 5000 * 12)
    assert extra({**tp2, "loss_impl": "fused"}) == pytest.approx(2048 * 5000 / 2 * 10)
    assert extra({**tp2, "loss_impl": "inplace"}) == pytest.approx(2048 * 5000 / 2 * 6)


def test_loss_impl_defaults_to_transformers_under_the_hf_expert_loop():
    assert PlanSpec().loss_implementation == "fused"
    assert PlanSpec(moe_impl="hf_loop").loss_implementation == "transformers"
    assert PlanSpec(moe_impl="hf_loop", loss_impl="fused").loss_implementation == "fused"
    with pytest.raises(ValueError, match="loss_impl"):
        PlanSpec(loss_impl="liger")
