"""Fine-tuning (``workload.trainable``): trainable counts against hand formulas, memory and
gradient-sync bytes of frozen weights, QLoRA's nf4 bytes, the skipped weight-gradient GEMMs."""

from __future__ import annotations

import numpy as np
import pytest

from moesim.accounting import GIB, param_counts
from moesim.costmodel import build_cost_model
from moesim.engine.expert_tp import routing_group_tokens
from moesim.engine.routing import sample_routing
from moesim.engine.training.finetune_ops import finetune_ops, frozen_op_names
from moesim.engine.training.layer_costs import BWD_SLOTS, layer_costs
from moesim.engine.training.layer_params import layer_params_per_device
from moesim.errors import InputError
from moesim.finetune import NF4_BITS, NF4_DQ_BITS, device_shares, trainable_counts
from moesim.loader import load_scenario
from moesim.memory import memory_report, weight_params_per_device
from moesim.schemas.workload import TrainableSpec
from moesim.simulate import simulate

MIXTRAL_TRAIN = "mixtral-8x7b-h100-train"
LORA16 = "workload.trainable={mode: lora, rank: 16, targets: [attention, experts]}"


def scen(name: str = MIXTRAL_TRAIN, *sets: str):
    return load_scenario(name, list(sets))


def costs_of(s, seed: int = 0):
    """``layer_costs`` of one step of ``s`` with routing sampled as the engine samples it."""
    m, plan = s.model, s.plan
    seqs = s.workload.global_batch_seqs // (plan.dp * plan.microbatches)
    routing = sample_routing(s.routing, m.n_moe_layers, m.n_experts, m.top_k, plan.ep,
                             routing_group_tokens(plan, seqs * s.workload.seq_len // plan.cp), plan.microbatches,
                             np.random.default_rng(seed), redundant_experts=s.placement.redundant_experts)
    return layer_costs(s, build_cost_model(s.hardware), routing)


# ------------------------------------------------------------------ counts


def test_lora_rank16_attention_only_mixtral_matches_hand_formula():
    m = scen().model
    # per layer: Q 4096->4096, K and V 4096->1024 (8 KV heads of 128), O 4096->4096; r (d_in + d_out) each
    per_layer = 16 * ((4096 + 4096) + 2 * (4096 + 1024) + (4096 + 4096))
    c = trainable_counts(m, TrainableSpec(mode="lora", rank=16, targets=["attention"]))
    assert c.trainable == 32 * per_layer == 13_631_488
    assert c.trainable_experts == 0
    assert c.frozen == param_counts(m).total  # every base weight is frozen under LoRA


def test_lora_rank16_experts_only_mixtral_matches_hand_formula():
    m = scen().model
    # per expert: w1 and w3 4096->14336, w2 14336->4096; 8 experts x 32 layers
    per_expert = 3 * 16 * (4096 + 14336)
    c = trainable_counts(m, TrainableSpec(mode="lora", rank=16, targets=["experts"]))
    assert c.trainable == 32 * 8 * per_expert == 226_492_416
    assert c.trainable_dense == 0


def test_frozen_modes_count_the_parts_they_train():
    m = scen().model
    p = param_counts(m)
    assert trainable_counts(m, TrainableSpec()).trainable == p.total
    assert trainable_counts(m, TrainableSpec(mode="experts")).trainable == p.routed_experts
    assert trainable_counts(m, TrainableSpec(mode="non_experts")).trainable == p.total - p.routed_experts
    assert trainable_counts(m, TrainableSpec(mode="non_experts")).frozen == p.routed_experts


# ------------------------------------------------------------------ schema


@pytest.mark.parametrize("value, words", [
    ("bogus", ["workload.trainable", "all, experts, non_experts"]),
    ("{mode: lora}", ["workload.trainable.rank", "required"]),
    ("{mode: experts, rank: 8}", ["workload.trainable.rank", "only for mode 'lora'"]),
    ("{rank: 8}", ["workload.trainable.rank", "mode 'all', the default", "set mode: lora"]),
    ("{mode: lora, rank: 8, targets: [attention, mlp]}", ["workload.trainable.targets", "'dense_ffn'"]),
    ("{mode: lora, rank: 8, base_dtype: int4}", ["workload.trainable.base_dtype", "'nf4'"]),
    ("{mode: lora, rank: 100000}", ["workload.trainable.rank", "65536"]),
])
def test_bad_trainable_is_a_one_line_error_naming_the_field(value, words):
    with pytest.raises(InputError) as err:
        scen(MIXTRAL_TRAIN, f"workload.trainable={value}")
    msg = str(err.value)
    assert "\n" not in msg
    for w in words:
        assert w in msg, msg


# ------------------------------------------------------------------ memory


def test_optimizer_and_gradients_only_for_trainable_parameters():
    s_all = scen()
    s_ne = scen(MIXTRAL_TRAIN, "workload.trainable=non_experts")
    full, ne = memory_report(s_all), memory_report(s_ne)
    dense, _experts = weight_params_per_device(s_ne.model, s_ne.plan)
    dp = s_ne.plan.dp * s_ne.plan.cp
    assert ne.optimizer_gib == pytest.approx(dense * 12 / dp / GIB, rel=1e-12)  # ZeRO-1: Adam sharded over dp
    assert ne.gradients_gib == pytest.approx(dense * 2 / GIB, rel=1e-12)
    assert ne.weights_gib == pytest.approx(full.weights_gib, rel=1e-12)  # frozen experts are still held
    assert ne.optimizer_gib < 0.2 * full.optimizer_gib


def test_lora_optimizer_memory_scales_with_rank():
    r16 = memory_report(scen(MIXTRAL_TRAIN, LORA16))
    r32 = memory_report(scen(MIXTRAL_TRAIN, LORA16, "workload.trainable.rank=32"))
    assert r32.optimizer_gib == pytest.approx(2 * r16.optimizer_gib, rel=1e-9)
    assert r32.gradients_gib == pytest.approx(2 * r16.gradients_gib, rel=1e-9)


def test_qlora_base_weights_take_nf4_bits():
    m = scen().model
    nf4 = device_shares(m, TrainableSpec(mode="lora", rank=16, targets=["attention"], base_dtype="nf4"), 2.0)
    assert nf4.expert_weight_bytes == pytest.approx(NF4_DQ_BITS / 8)  # no expert adapters: pure nf4
    assert nf4.expert_weight_bytes / 2.0 == pytest.approx(4.127 / 16, rel=1e-3)
    no_dq = device_shares(m, TrainableSpec(mode="lora", rank=16, targets=["attention"], base_dtype="nf4",
                                           double_quant=False), 2.0)
    assert no_dq.expert_weight_bytes / 2.0 == pytest.approx(NF4_BITS / 16) == pytest.approx(4.5 / 16)
    # the whole model on one device: ~4.1-4.5 bits per weight, the 16-bit embeddings and adapters on top
    one = ("plan.dp=1", "plan.ep=1", "hardware.cluster.nodes=1", "hardware.node.devices_per_node=1",
           "workload.global_batch_seqs=16")
    bf16 = memory_report(scen(MIXTRAL_TRAIN, *one, LORA16)).weights_gib
    q = memory_report(scen(MIXTRAL_TRAIN, *one, LORA16, "workload.trainable.base_dtype=nf4")).weights_gib
    assert 4.127 / 16 < q / bf16 < 4.5 / 16


# ------------------------------------------------------------------ gradient sync and ZeRO


def test_frozen_weights_add_no_gradient_allreduce_bytes():
    base = costs_of(scen())
    ex = costs_of(scen(MIXTRAL_TRAIN, "workload.trainable=experts"))
    ne = costs_of(scen(MIXTRAL_TRAIN, "workload.trainable=non_experts"))
    assert base.dp_dense_bytes.sum() > 0 and base.dp_expert_bytes.sum() > 0
    assert ex.dp_dense_bytes.sum() == 0 and ex.dp_dense_s.sum() == 0
    assert ex.embed_dp_s == 0 and ex.head_dp_s == 0  # embedding and head frozen too
    np.testing.assert_array_equal(ex.dp_expert_bytes, base.dp_expert_bytes)
    assert ne.dp_expert_bytes.sum() == 0 and ne.dp_expert_s.sum() == 0
    np.testing.assert_array_equal(ne.dp_dense_bytes, base.dp_dense_bytes)
    lora = costs_of(scen(MIXTRAL_TRAIN, LORA16))
    dense_p, _ = layer_params_per_device(scen())
    per_layer = 16 * ((4096 + 4096) + 2 * (4096 + 1024) + (4096 + 4096))  # attention adapters, 2 bytes each
    np.testing.assert_array_equal(lora.dp_dense_bytes, np.full(32, 2.0 * per_layer))
    assert lora.dp_dense_bytes.sum() < 0.011 * dense_p.sum() * 2  # ~1% of the dense weights' gradient bytes


def test_zero3_still_gathers_frozen_weights():
    z3 = ("plan.zero_stage=3",)
    full = simulate(scen(MIXTRAL_TRAIN, *z3), None).summary
    ne = simulate(scen(MIXTRAL_TRAIN, *z3, "workload.trainable=non_experts"), None).summary
    assert ne["zero_gather_s"] == pytest.approx(full["zero_gather_s"], rel=1e-9)
    assert ne["dp_sync_s"] < 0.2 * full["dp_sync_s"]


# ------------------------------------------------------------------ time


def test_frozen_experts_skip_their_weight_gradient_gemms():
    base = costs_of(scen())
    ne = costs_of(scen(MIXTRAL_TRAIN, "workload.trainable=non_experts"))
    e = BWD_SLOTS.index("experts")
    skipped = base.wgrad_s[..., e]
    assert skipped.sum() > 0
    # backward of the expert slot loses exactly its weight-gradient half; the forward is unchanged
    np.testing.assert_allclose(ne.bwd_s[..., e], base.bwd_s[..., e] - skipped, rtol=1e-12)
    np.testing.assert_array_equal(ne.fwd_s, base.fwd_s)
    assert ne.wgrad_s[..., e].sum() == 0
    # a weight gradient is one forward GEMM: a third of a GEMM's forward + backward, a bit less of the
    # expert slot's (its activation, permutes and host overhead have no weight gradient)
    share = skipped.sum() / (base.fwd_s[..., 4].sum() + base.bwd_s[..., e].sum())
    assert 0.25 < share <= 1 / 3


def test_frozen_experts_step_is_faster_by_the_skipped_weight_gradients():
    full = simulate(scen(), None).summary
    ne = simulate(scen(MIXTRAL_TRAIN, "workload.trainable=non_experts"), None).summary
    skipped = costs_of(scen()).wgrad_s[..., BWD_SLOTS.index("experts")].sum()  # all microbatches, seed 0
    saved = full["compute_s"] - ne["compute_s"]
    assert saved == pytest.approx(skipped, rel=0.02)
    assert ne["step_time_s"] < full["step_time_s"] - 0.9 * skipped


def test_lora_adds_adapter_gemms_and_qlora_dequantisation():
    lora = costs_of(scen(MIXTRAL_TRAIN, LORA16))
    frozen_all = costs_of(scen(MIXTRAL_TRAIN, "workload.trainable={mode: lora, rank: 16, targets: [router]}"))
    qlora = costs_of(scen(MIXTRAL_TRAIN, LORA16, "workload.trainable.base_dtype=nf4"))
    att = 0  # forward slot of the attention projections
    assert lora.fwd_s[..., att].sum() > frozen_all.fwd_s[..., att].sum()  # adapter GEMMs on attention
    assert qlora.fwd_s.sum() > lora.fwd_s.sum()  # nf4 -> bf16 dequantisation before each frozen GEMM
    assert lora.embed_s[2] == 0.0  # frozen embedding: no backward


def test_trainable_all_leaves_the_engine_as_it_was():
    s = scen()
    ops = ["any", "list"]
    assert finetune_ops(ops, s.workload.trainable, True) is ops
    assert frozen_op_names(s.workload.trainable) == frozenset()
    summary = simulate(s, None).summary
    explicit = simulate(scen(MIXTRAL_TRAIN, "workload.trainable=all"), None).summary
    assert "trainable_params" not in summary  # pre-training summaries keep their keys
    assert summary == explicit
    mem = memory_report(s)
    dense, experts = weight_params_per_device(s.model, s.plan)
    edp = s.plan.dp * s.plan.tp // (s.plan.ep * s.plan.expert_tp)
    assert mem.weights_gib == pytest.approx((dense + experts) * 2 / GIB, rel=1e-12)
    assert mem.optimizer_gib == pytest.approx((dense * 12 / s.plan.dp + experts * 12 / edp) / GIB, rel=1e-12)


def test_finetune_summary_reports_trainable_parameters_and_run_cost():
    out = simulate(scen("mixtral-8x7b-qlora-1xa100"), None).summary
    assert out["trainable_params"] == 240_123_904  # rank 16 on attention + experts (hand counts above)
    assert out["fits"] is True and out["peak_memory_gib"] < 40
    assert out["run_time_days"] == pytest.approx(1e8 / out["tokens_per_s"] / 86400)
    assert out["run_cost_usd"] > 0


def test_finetune_flops_split_the_weight_gradients_between_experts_and_the_rest():
    from moesim.accounting import attention_core_flops, flops_per_token
    from moesim.finetune import finetune_flops_per_token

    m = scen().model
    f, core = flops_per_token(m, 4096), attention_core_flops(m, 2048)
    full = finetune_flops_per_token(m, TrainableSpec(), 4096)
    ex = finetune_flops_per_token(m, TrainableSpec(mode="experts"), 4096)
    ne = finetune_flops_per_token(m, TrainableSpec(mode="non_experts"), 4096)
    assert full == 3 * f
    # forward + input gradients (2 f + the weight-free attention core) + each part's weight gradients
    assert ex + ne - (2 * f + core) == pytest.approx(3 * f, rel=1e-12)
    lora = finetune_flops_per_token(m, TrainableSpec(mode="lora", rank=16, targets=["attention"]), 4096)
    assert lora == pytest.approx(2 * f + core + 6 * 13_631_488, rel=1e-12)


# ------------------------------------------------------------------ packing vs padding

QLORA = "mixtral-8x7b-qlora-1xa100"


def test_padded_fixed_length_samples_train_half_the_tokens_of_packed_rows():
    half = ("workload.sample_tokens={dist: fixed, value: 1024}",)  # seq_len 2048
    # whole_row: the packed row attends as one sequence, as a padded row does (per_sample is
    # tests/test_packed_attention.py's)
    packed = simulate(scen(QLORA, *half, "workload.packed_attention=whole_row"), None).summary
    padded = simulate(scen(QLORA, *half, "workload.packing=false"), None).summary
    plain = simulate(scen(QLORA), None).summary
    assert padded["step_time_s"] == packed["step_time_s"] == plain["step_time_s"]  # same rows computed
    assert packed["tokens_per_s"] == plain["tokens_per_s"] and packed["sequence_padding_fraction"] == 0.0
    assert padded["tokens_per_s"] == pytest.approx(plain["tokens_per_s"] / 2, rel=1e-12)
    assert padded["sequence_padding_fraction"] == pytest.approx(0.5)
    assert padded["run_time_days"] == pytest.approx(2 * plain["run_time_days"], rel=1e-12)
    assert "sequence_padding_fraction" not in plain


def test_padding_truncates_long_samples_at_seq_len():
    from moesim.packing import real_token_fraction

    w = scen(QLORA, "workload.sample_tokens={dist: uniform, low: 1024, high: 4096}", "workload.packing=false").workload
    # E[min(U, 2048)] for U uniform on [1024, 4096]: (2048^2 - 1024^2) / 2 / 3072 + 2048 * 2048 / 3072
    expect = ((2048**2 - 1024**2) / 2 / 3072 + 2048 * 2048 / 3072) / 2048
    assert real_token_fraction(w) == pytest.approx(expect, rel=5e-3)
    with pytest.raises(InputError, match="sample_tokens.dist"):
        scen(QLORA, "workload.sample_tokens={dist: trace}")


def test_training_nothing_is_an_input_error():
    with pytest.raises(InputError, match="workload.trainable: 'experts' trains no parameter"):
        simulate(scen("llama-2-7b-a100-train", "workload.trainable=experts"), None)


def test_a_target_the_model_lacks_is_named_in_the_error():
    with pytest.raises(InputError, match="lora on dense_ffn trains no parameter of Mixtral 8x7B: it has no dense FFN "
                                         "layers or shared experts"):
        s = scen(QLORA, "workload.trainable.targets=[dense_ffn]")
        trainable_counts(s.model, s.workload.trainable)


def test_lora_adapts_the_shared_experts_as_one_mlp_of_their_summed_width():
    # DeepSeek-V2-Lite: 1 dense layer (FFN 10944), 26 MoE layers with 2 shared experts of 1408, d_model 2048;
    # Hugging Face builds the shared experts as one MLP of 2 x 1408: gate, up and down adapters of rank 16
    s = scen(QLORA, "model=deepseek-v2-lite", "workload.trainable.targets=[dense_ffn]")
    assert trainable_counts(s.model, s.workload.trainable).trainable == (
        26 * 3 * 16 * (2048 + 2 * 1408) + 3 * 16 * (2048 + 10944))
