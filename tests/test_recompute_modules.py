"""Megatron-core's selective recompute modules (``plan.recompute_modules``) and flash attention's
backward: what each module stops keeping (hand formulas on the tiny model of
``test_training_memory``), what it re-runs in backward (op-graph seconds), and the collectives a
re-run MoE block books as communication."""

from __future__ import annotations

import copy
import types

import numpy as np
import pytest

from moesim.activations import (
    attention_activation_bytes_per_token,
    ffn_activation_bytes_per_token,
    layer_activation_bytes_per_token,
    recomputed_bytes_per_token,
)
from moesim.costmodel import build_cost_model
from moesim.engine.expert_tp import routing_group_tokens
from moesim.engine.op_types import BlockDims, OpDtypes
from moesim.engine.ops import (
    ATTN_BWD_FACTOR,
    attention_core_op,
    backward_s,
    forward_s,
    price,
)
from moesim.engine.routing import sample_routing
from moesim.engine.training.layer_costs import layer_costs
from moesim.engine.training.recompute import RECOMPUTE_OPS, mla_up_share
from moesim.errors import InputError
from moesim.loader import scenario_from_dict
from moesim.simulate import simulate
from tests.test_training_memory import BF16, FP8, MLA, TINY, scenario, tiny

D = TINY["d_model"]  # 64


# ---------------------------------------------------------------- memory: what each module drops


def test_layernorm_drops_the_outputs_of_norms_that_are_layers_of_their_own():
    m, mla = tiny(), tiny(mla=MLA)
    # Transformer Engine fuses the attention's and a dense FFN's pre-norm into their GEMM: nothing
    # to drop; a MoE block's pre-norm is a layer: the router's 16-bit input goes
    assert recomputed_bytes_per_token(m, True, BF16, None, ["layernorm"]) == D * 2
    assert recomputed_bytes_per_token(m, False, BF16, None, ["layernorm"]) == 0
    # MLA's input norm is a layer too: its down-projection input goes (b8: under FP8 the GEMM keeps
    # its 16-bit input instead of an FP8 copy, which the checkpoint then frees)
    assert recomputed_bytes_per_token(mla, True, BF16, None, ["layernorm"]) == D * 2 + D * 2
    assert recomputed_bytes_per_token(mla, False, FP8, None, ["layernorm"]) == D * 1
    assert recomputed_bytes_per_token(mla, True, FP8, None, ["layernorm"]) == D * 1 + D * 2


def test_moe_drops_the_block_but_its_input_and_overlaps_count_once():
    m = tiny()
    routed = 2 * (D + 2 * 32 + 32)  # top-2 rows: fc1 input, gate+up, fc2 input
    shared = 2 * 48 + 48
    moe = recomputed_bytes_per_token(m, True, BF16, None, ["moe"])
    assert moe == (routed + shared) * 2
    assert recomputed_bytes_per_token(m, True, BF16, None, ["moe", "moe_act", "shared_experts"]) == moe
    # what a MoE layer keeps with the block recomputed: the norm's and the router's inputs
    assert ffn_activation_bytes_per_token(m, True, BF16) - moe == 2 * D * 2
    assert recomputed_bytes_per_token(m, False, BF16, None, ["moe"]) == 0  # a dense layer has no MoE block


def test_moe_act_and_shared_experts_and_mlp():
    m = tiny()
    assert recomputed_bytes_per_token(m, True, BF16, None, ["moe_act"]) == 2 * 32 * 2  # top-2 fc2 inputs
    assert recomputed_bytes_per_token(m, True, FP8, None, ["moe_act"]) == 2 * 32 * 1
    assert recomputed_bytes_per_token(m, True, BF16, None, ["shared_experts"]) == (2 * 48 + 48) * 2
    assert recomputed_bytes_per_token(m, False, BF16, None, ["mlp"]) == (2 * 96 + 96) * 2
    assert recomputed_bytes_per_token(m, True, BF16, None, ["mlp"]) == 0  # mlp is the dense layers' FFN


def test_core_attn_frees_nothing_and_mla_up_proj_is_the_classic_selective_saving():
    plain, mla = tiny(), tiny(mla=MLA)
    assert recomputed_bytes_per_token(plain, True, BF16, None, ["core_attn"]) == 0
    classic = attention_activation_bytes_per_token(mla, "none", BF16) - attention_activation_bytes_per_token(mla, "selective", BF16)
    assert recomputed_bytes_per_token(mla, True, BF16, None, ["mla_up_proj"]) == classic > 0


def test_layer_bytes_with_modules_and_sequence_parallel():
    m = tiny()
    none = layer_activation_bytes_per_token(m, 1, 1, "none", BF16)
    mods = ["layernorm", "moe"]
    assert layer_activation_bytes_per_token(m, 1, 1, "selective", BF16, None, mods) == \
        none - recomputed_bytes_per_token(m, True, BF16, None, mods)
    assert layer_activation_bytes_per_token(m, 1, 4, "selective", BF16, None, mods) == \
        pytest.approx(layer_activation_bytes_per_token(m, 1, 1, "selective", BF16, None, mods) / 4)
    # modules are read only under selective; an empty list keeps what recompute: none keeps
    assert layer_activation_bytes_per_token(m, 1, 1, "none", BF16, None, mods) == none
    assert layer_activation_bytes_per_token(m, 1, 1, "selective", BF16, None, []) == none


# ---------------------------------------------------------------- time: what each module re-runs


def _costs(plan: dict, model: dict | None = None):
    s = scenario(model, {"moe_layer_host_us": 0, **plan})  # no host floor: the slots hold GPU work only
    cm = build_cost_model(s.hardware)
    m, p = s.model, s.plan
    moe_layers = sum(m.is_moe_layer(i) for i in range(m.n_layers))
    seqs = s.workload.global_batch_seqs // (p.dp * p.microbatches)
    routing = sample_routing(s.routing, moe_layers, m.n_experts, m.top_k, p.ep,
                             routing_group_tokens(p, seqs * s.workload.seq_len), p.microbatches, np.random.default_rng(0))
    return s, cm, layer_costs(s, cm, routing)


def test_recompute_slot_holds_the_modules_forward_ops():
    s, cm, none = _costs({"recompute": "selective", "recompute_modules": []})
    _, _, moe = _costs({"recompute": "selective", "recompute_modules": ["moe"]})
    _, _, ln = _costs({"recompute": "selective", "recompute_modules": ["layernorm", "moe_act"]})
    assert np.all(none.bwd_s[:, :, 0] == 0)
    is_moe = np.array([s.model.is_moe_layer(i) for i in range(s.model.n_layers)])
    assert np.all(moe.bwd_s[~is_moe, :, 0] == 0)  # the dense layer has no MoE block to re-run
    # the MoE layers re-run router, dispatch, experts, combine: their forward slots, collectives included
    fwd = moe.fwd_s[is_moe]
    block = fwd[..., 2:6].sum(axis=-1)  # router, dispatch, experts, combine slots (shared experts in experts)
    assert moe.bwd_s[is_moe, :, 0] == pytest.approx(block)
    assert np.all(moe.recompute_comm_s[is_moe, :, 0] == pytest.approx(fwd[..., 3] + fwd[..., 5]))
    # the MoE block's pre-norm and the expert activation are small kernels: a little recompute, no
    # collectives; a dense layer has neither (its pre-norm is fused into fc1)
    assert np.all(ln.bwd_s[is_moe, :, 0] > 0) and np.all(ln.bwd_s[is_moe, :, 0] < 0.2 * block.mean())
    assert np.all(ln.bwd_s[~is_moe, :, 0] == 0)
    assert np.all(ln.recompute_comm_s == 0)


def test_moe_recompute_books_a_third_all_to_all_pass_as_communication():
    base = scenario(plan={"recompute": "selective", "recompute_modules": [], "moe_layer_host_us": 0})
    moe = scenario(plan={"recompute": "selective", "recompute_modules": ["moe"], "moe_layer_host_us": 0})
    a, b = simulate(base, None).summary, simulate(moe, None).summary
    # forward and backward each move the tokens twice; re-running the MoE forward adds one pass
    assert b["alltoall_s"] == pytest.approx(1.5 * a["alltoall_s"], rel=1e-6)
    assert b["step_time_s"] > a["step_time_s"]
    assert b["peak_memory_gib"] < a["peak_memory_gib"]


def test_core_attn_module_times_as_classic_selective_but_keeps_qkv():
    classic = scenario(plan={"recompute": "selective", "moe_layer_host_us": 0})
    core = scenario(plan={"recompute": "selective", "recompute_modules": ["core_attn"], "moe_layer_host_us": 0})
    a, b = simulate(classic, None).summary, simulate(core, None).summary
    assert b["step_time_s"] == pytest.approx(a["step_time_s"], rel=1e-12)
    assert b["peak_memory_gib"] > a["peak_memory_gib"]


def test_mla_up_share_is_the_up_projections_share_of_the_qkv_flops():
    m = tiny(mla=MLA)
    h, a = m.n_heads, m.mla
    up = a.q_lora_rank * h * (a.qk_nope_head_dim + a.qk_rope_head_dim) + a.kv_lora_rank * h * (a.qk_nope_head_dim + a.v_head_dim)
    down = D * a.q_lora_rank + D * (a.kv_lora_rank + a.qk_rope_head_dim) + a.q_lora_rank + a.kv_lora_rank
    assert mla_up_share(m) == pytest.approx(up / (up + down))
    assert mla_up_share(tiny()) == 0.0
    _, _, costs = _costs({"recompute": "selective", "recompute_modules": ["mla_up_proj"]}, {"mla": MLA})
    assert np.all(costs.bwd_s[:, :, 0] > 0)
    assert set(RECOMPUTE_OPS) == {"core_attn", "layernorm", "mla_up_proj", "moe_act", "moe", "shared_experts", "mlp"}


# ---------------------------------------------------------------- flash attention's backward


def test_attention_backward_is_two_and_a_half_forwards_at_the_slower_backward_rate():
    assert ATTN_BWD_FACTOR == pytest.approx(2.5 / 0.866)
    m = tiny()
    dims = BlockDims.of(m, 1)
    dt = OpDtypes(weights="bf16", gemm_in_bytes=2, act_bytes=2, act_dtype="bf16", attn_dtype="bf16")
    op = attention_core_op(dims, dt, np.array([1024.0]), np.array([1024.0]))
    cm = build_cost_model(scenario().hardware)
    t = price(cm, [op])["attn_core"]
    assert backward_s(op, t) == pytest.approx(ATTN_BWD_FACTOR * forward_s(op, t))


# ---------------------------------------------------------------- input errors


@pytest.mark.parametrize("plan, model, message", [
    ({"recompute_modules": ["moe", "moe"]}, {}, "moe listed twice"),
    ({"recompute_modules": ["attention"]}, {}, "Input should be 'core_attn'"),
    ({"recompute_modules": ["mla_up_proj"]}, {}, "mla_up_proj needs multi-head latent attention"),
    ({"recompute_modules": ["moe"], "ep": 1, "moe_impl": "hf_loop"}, {}, "not with plan.moe_impl: hf_loop"),
])
def test_bad_recompute_modules_are_one_line_errors(plan, model, message):
    with pytest.raises(InputError, match=message) as err:
        scenario(model, {"recompute": "selective", **plan})
    assert "\n" not in str(err.value)


def test_recompute_modules_are_for_training(raw):
    serve = copy.deepcopy(raw)
    serve["workload"] = {"kind": "serving", "arrival": {"process": "batch", "n_requests": 8},
                         "prompt_tokens": {"dist": "fixed", "value": 100}, "output_tokens": {"dist": "fixed", "value": 4}}
    serve["plan"]["recompute_modules"] = ["moe"]
    with pytest.raises(InputError, match="plan.recompute_modules: activation recomputation is for training"):
        scenario_from_dict(serve)


def test_modules_are_ignored_outside_selective():
    full = simulate(scenario(plan={"recompute": "full", "moe_layer_host_us": 0}), None).summary
    with_mods = simulate(scenario(plan={"recompute": "full", "recompute_modules": ["moe"], "moe_layer_host_us": 0}),
                         None).summary
    assert with_mods["step_time_s"] == full["step_time_s"]
    assert with_mods["peak_memory_gib"] == full["peak_memory_gib"]


def test_fit_advice_offers_moe_recompute_for_moe_models_only():
    from moesim.fit_advice import fit_explanation
    from moesim.loader import load_scenario

    long = ["workload.seq_len=16384", "model.max_seq_len=32768"]  # 16K tokens: activations do not fit
    moe = load_scenario("mixtral-8x7b-h100-train", long)
    reason, advice = fit_explanation(moe)
    assert "activations" in reason
    assert "plan.recompute_modules: [layernorm, moe] (recompute: selective)" in advice
    fixed = load_scenario("mixtral-8x7b-h100-train", long + ["plan.recompute_modules=[layernorm,moe]"])
    assert fit_explanation(fixed) == ("", "")  # the advice fits, as it says
    dense = load_scenario("llama-2-7b-a100-train", ["plan.zero_stage=0", "model.n_layers=200"])
    assert "recompute_modules" not in fit_explanation(dense)[1]


# ---------------------------------------------------------------- plan search


def test_plan_search_tries_moe_block_recompute_between_selective_and_full(tmp_path):
    from moesim.engine.training.recompute import MOE_RECOMPUTE_MODULES
    from moesim.memory import memory_report
    from moesim.plan_options import prepare
    from moesim.plan_space import recompute_variants

    moe = load_scenario_("mixtral-8x7b-h100-train")
    labels = [label for label, _, _ in recompute_variants(moe)]
    assert labels == ["none", "selective", "layernorm+moe", "full"]
    mems = [memory_report(moe.model_copy(update={"plan": moe.plan.model_copy(update=u)})).total_gib
            for _, u, _ in recompute_variants(moe)]
    assert mems == sorted(mems, reverse=True)  # each frees more here (at 4K tokens)
    works = {label: work for label, _, work in recompute_variants(moe)}
    assert works["none"] < works["selective"] < works["full"] and works["layernorm+moe"] < works["full"]
    assert not works["selective"] < works["layernorm+moe"]  # neither re-runs a subset of the other's
    assert [label for label, _, _ in recompute_variants(load_scenario_("llama-2-7b-a100-train"))] == \
        ["none", "selective", "full"]  # a dense model has no MoE block to re-run
    already = load_scenario_("mixtral-8x7b-h100-train", [f"plan.recompute_modules={list(MOE_RECOMPUTE_MODULES)}"])
    assert "layernorm+moe" not in [label for label, _, _ in recompute_variants(already)]
    hf = load_scenario_("mixtral-8x7b-h100-train", ["plan.ep=1", "plan.moe_impl=hf_loop"])
    assert "layernorm+moe" not in [label for label, _, _ in recompute_variants(hf)]  # takes no modules
    # DeepSeek-V3 caches its SwiGLU inputs in FP8 for moe_act's recompute: re-running the whole MoE block drops that
    # cache rather than making every plan of the variant invalid
    ds = load_scenario_("deepseek-v3-h800-train")
    assert ds.plan.fp8_moe_act_input
    for _label, u, _ in recompute_variants(ds):
        ds.plan.model_validate({**ds.plan.model_dump(), **u})  # raises on a variant the rules refuse
    # at 16K tokens only the heavier recompute fits one H100 layout: the MoE blocks' is found, full dominated
    path = tmp_path / "long.yaml"
    path.write_text("name: long\nmodel: {preset: mixtral-8x7b, max_seq_len: 32768}\nhardware: {preset: h100-sxm, "
                    "cluster: {nodes: 8}}\nplan: {dp: 64, ep: 8, microbatches: 16}\nworkload: {kind: training, "
                    "global_batch_seqs: 1024, seq_len: 16384}\nrouting: {overflow: dropless}\n")
    space, _, _ = prepare(str(path), objective="step_time_s", devices="64", tp="1", pp="1")
    by_text = {c.plan_text: c for c in space.candidates}
    # (micro-batches of one sequence fit with selective recompute alone: there selective dominates full)
    open_moe = [c for t, c in by_text.items() if "rc-layernorm+moe" in t and c.status == "open"
                and by_text[t.replace("rc-layernorm+moe", "rc-selective")].reason == "no-fit"]
    assert open_moe
    for c in open_moe:
        full = by_text[c.plan_text.replace("rc-layernorm+moe", "rc-full")]
        assert full.status == "pruned" and full.reason == "dominated" and "layernorm+moe" in full.detail


def load_scenario_(name, overrides=()):
    from moesim.loader import load_scenario

    return load_scenario(name, list(overrides))


def test_mla_up_share_without_a_q_latent_counts_the_q_projection():
    m = tiny(mla={**MLA, "q_lora_rank": 0})
    a, h = m.mla, m.n_heads
    qk = a.qk_nope_head_dim + a.qk_rope_head_dim
    up = D * h * qk + a.kv_lora_rank * h * (a.qk_nope_head_dim + a.v_head_dim)
    down = D * (a.kv_lora_rank + a.qk_rope_head_dim) + a.kv_lora_rank
    assert mla_up_share(m) == pytest.approx(up / (up + down))


def test_plan_search_keeps_selective_and_moe_block_recompute_apart(tmp_path, monkeypatch):
    """Neither of selective and the MoE blocks' recompute re-runs a subset of the other's work (which
    costs more depends on the sequence length), so when both fit both are simulated; full is
    dominated by either, everything by none."""
    import moesim.memory
    from moesim.plan_options import prepare

    def fits_unless_none(s, *args, **kwargs):  # a stand-in where every recompute but none fits
        fits = s.plan.recompute != "none"
        return types.SimpleNamespace(fits=fits, total_gib=90.0 if not fits else 70.0, capacity_gib=80.0)

    monkeypatch.setattr(moesim.memory, "memory_report", fits_unless_none)
    path = tmp_path / "mid.yaml"
    path.write_text("name: mid\nmodel: mixtral-8x7b\nhardware: {preset: h100-sxm, cluster: {nodes: 8}}\n"
                    "plan: {dp: 64, ep: 8, microbatches: 16}\nworkload: {kind: training, global_batch_seqs: 1024, "
                    "seq_len: 4096}\nrouting: {overflow: dropless}\n")
    space, _, _ = prepare(str(path), objective="step_time_s", devices="64", tp="1", pp="1")
    by_rc = {}
    for c in space.candidates:
        if c.reason != "invalid":
            by_rc.setdefault(c.plan_text.split()[-1], set()).add((c.status, c.reason, c.detail))
    assert by_rc["rc-selective"] == {("open", "", "")}
    assert by_rc["rc-layernorm+moe"] == {("open", "", "")}
    assert by_rc["rc-full"] == {("pruned", "dominated", "recompute selective fits")}
    assert {r for _, r, _ in by_rc["rc-none"]} == {"no-fit"}


def test_fit_advice_skips_moe_block_recompute_for_transformers_loop():
    from moesim.fit_advice import fit_explanation

    s = load_scenario_("mixtral-8x7b-h100-train", ["workload.seq_len=16384", "model.max_seq_len=32768",
                                                    "plan.ep=1", "plan.moe_impl=hf_loop"])
    assert "recompute_modules" not in fit_explanation(s)[1]
