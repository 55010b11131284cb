"""The op graph: the training step, the serving iteration and calibrate.predict price one op list."""

from __future__ import annotations

import numpy as np
import pytest
from moesim.calibrate.predict import moe_layer_s, reference_layer_ops

import moesim
from moesim.costmodel import build_cost_model
from moesim.engine.op_types import BlockDims, OpDtypes
from moesim.engine.ops import (
    EXPERT_OPS,
    backward_s,
    block_ops,
    moe_ops,
    price,
    total_s,
)
from moesim.engine.routing import sample_routing
from moesim.engine.serving.decode_cost import IterationCost
from moesim.engine.training.layer_costs import DISPATCH, layer_costs, training_dtypes
from moesim.resolve import deep_merge

TRAIN = dict(
    name="moe",
    model=dict(name="moe", n_layers=4, d_model=1024, n_heads=8, vocab_size=1024, ffn_hidden=4096,
               expert_ffn_hidden=2048, n_experts=8, top_k=2, n_shared_experts=1, first_dense_layers=1,
               max_seq_len=2048),
    hardware=dict(preset="h100-sxm", cluster=dict(nodes=1)),
    plan=dict(dp=4, tp=2, pp=1, ep=4, microbatches=2, moe_layer_host_us=0),  # no host floor: these tests check the engine's other math (tests/test_train_host.py covers it)
    workload=dict(kind="training", global_batch_seqs=16, seq_len=1024, total_tokens=1e10),
    routing=dict(distribution="zipf", zipf_s=1.0, capacity_factor=1.25, overflow="drop", seed=0),
)


def serving(tp: int = 1, ep: int = 1, dp: int = 1) -> moesim.Scenario:
    return moesim.scenario_from_dict(dict(
        name="serve", model=dict(preset="mixtral-8x7b", dtype="bf16"),
        hardware=dict(preset="h100-sxm", node=dict(devices_per_node=dp * tp)),
        plan=dict(dp=dp, tp=tp, ep=ep),
        workload=dict(kind="serving", arrival=dict(process="batch", n_requests=1),
                      prompt_tokens=dict(dist="fixed", value=16), output_tokens=dict(dist="fixed", value=8)),
    ))


def test_training_layer_is_the_op_graph_block():
    """Each training layer's forward slots add up to the op graph's block at the same shape."""
    s = moesim.scenario_from_dict(TRAIN)
    m, plan, w = s.model, s.plan, s.workload
    cm = build_cost_model(s.hardware)
    seqs = w.global_batch_seqs // (plan.dp * plan.microbatches)
    T = seqs * w.seq_len
    routing = sample_routing(s.routing, m.n_moe_layers, m.n_experts, m.top_k, plan.ep, plan.ep * T,
                             plan.microbatches, np.random.default_rng(0))
    costs = layer_costs(s, cm, routing)
    dims, dt = BlockDims.of(m, plan.tp, plan.ep, mla_absorbed=False), training_dtypes(s)
    q = np.full(seqs, float(w.seq_len))
    dense = total_s(cm, block_ops(dims, dt, False, T, q, q, seq_parallel=True))
    assert costs.fwd_s[0].sum(axis=-1) == pytest.approx(np.full(plan.microbatches, dense), rel=1e-12)
    for j, layer in enumerate(range(1, m.n_layers)):
        for mb in range(plan.microbatches):
            ops = block_ops(dims, dt, True, T, q, q, expert_tokens=routing.busiest_rank_expert_tokens[j, mb],
                            a2a_bytes=costs.fwd_bytes[layer, mb, DISPATCH], seq_parallel=True)
            assert costs.fwd_s[layer, mb].sum() == pytest.approx(float(total_s(cm, ops)), rel=1e-12)
    # backward: compute twice, collectives once, plus the recompute slot (selective: the attention core)
    ops = block_ops(dims, dt, False, T, q, q, seq_parallel=True)
    secs = price(cm, ops)
    want = sum(float(backward_s(op, t)) for op, t in zip(ops, secs.values(), strict=True)) + secs["attn_core"]
    assert plan.recompute == "selective"
    assert costs.bwd_s[0, 0].sum() == pytest.approx(want, rel=1e-12)


@pytest.mark.parametrize("tp,ep,dp", [(1, 1, 1), (2, 1, 1), (1, 2, 2)])
def test_serving_iteration_is_the_op_graph_block(tp, ep, dp):
    """The serving iteration's parts (fixed table, routed experts, attention) add up to the blocks."""
    s = serving(tp, ep, dp)
    cm = build_cost_model(s.hardware)
    cost = IterationCost(s, cm, np.random.default_rng(0), max_tokens=64)
    m = s.model
    q, kv = np.array([1.0, 1.0, 30.0]), np.array([100.0, 300.0, 30.0])
    T = int(q.sum())
    loads = np.array([[3.0, 9.0, 0.0, 12.0, 2.0, 6.0, 0.0, 32.0][: 8 // ep]])
    a2a = T / tp * m.top_k * m.d_model * 2.0 * (ep - 1) / ep
    block = block_ops(cost.dims, cost.dtypes, True, T, q, kv, expert_tokens=loads[0], a2a_bytes=a2a)
    want = m.n_layers * float(total_s(cm, block))
    got = float(cost.fixed_s(np.array([T]))[0] + m.n_moe_layers * cost._expert_gemms_s(loads)[0]
                + cost.attention_s(q, kv))
    assert got == pytest.approx(want, rel=1e-12)
    if ep > 1:
        assert {"dispatch", "combine"} <= {op.name for op in block}


def test_calibration_prices_the_engines_ops_but_the_glue():
    """calibrate.predict's layer is ops.moe_ops with the reference glue: every other op is priced
    exactly as the engines price it."""
    cm = build_cost_model(serving().hardware)
    counts = np.array([40, 0, 25, 35, 12, 8, 0, 8])
    ref = price(cm, reference_layer_ops(64, 512, 1024, 8, 2, counts, dtype="bf16", loop=False))
    dims = BlockDims(d_model=512, expert_w=1024, n_experts=8, top_k=2)
    engine = price(cm, moe_ops(dims, OpDtypes("bf16", 2.0, 2.0, "bf16", "bf16"), 64, counts))
    for name in ("router", "router_topk", "expert_act", "expert_down", "moe_overhead"):
        assert ref[name] == pytest.approx(engine[name], rel=1e-12)
    assert ref["permute"] != pytest.approx(engine["permute"])  # the reference gathers; the engines fuse
    assert moe_layer_s(cm, 64, 512, 1024, 8, 2, counts, dtype="bf16", loop=False) == pytest.approx(
        float(sum(ref.values())), rel=1e-12)
    assert set(EXPERT_OPS) <= set(ref)


def test_tp8_decode_pays_two_allreduces_per_layer():
    """A TP8 decode step is slower than a TP1 step split eight ways by at least its all-reduces."""
    one, eight = serving(tp=1), serving(tp=8)
    t = np.array([8.0])
    cost1 = IterationCost(one, build_cost_model(one.hardware), np.random.default_rng(0), max_tokens=8)
    cm8 = build_cost_model(eight.hardware)
    cost8 = IterationCost(eight, cm8, np.random.default_rng(0), max_tokens=8)
    m = eight.model
    # serving's TP all-reduce is the engines' custom kernel by default (workload.tp_allreduce)
    allreduce = 2 * m.n_layers * float(cm8.allreduce_s(8 * m.d_model * 2.0, 8, 1, "custom"))
    ops = block_ops(cost8.dims, cost8.dtypes, True, 8, np.ones(8), np.ones(8), expert_tokens=np.ones(8))
    comm = [op for op in ops if op.stream == "tp_comm"]
    assert [op.name for op in comm] == ["attn_allreduce", "ffn_allreduce"]
    assert m.n_layers * float(total_s(cm8, comm)) == pytest.approx(allreduce)
    step1 = float(cost1.fixed_s(t)[0] + cost1.uniform_experts_s(t)[0][0])
    step8 = float(cost8.fixed_s(t)[0] + cost8.uniform_experts_s(t)[0][0])
    assert step8 - step1 / 8 >= allreduce > 0


def test_unknown_moe_implementation_is_refused():
    with pytest.raises(ValueError, match="impl"):
        moe_ops(BlockDims(d_model=8), OpDtypes("bf16", 2.0, 2.0, "bf16", "bf16"), 4, np.ones(1), impl="magic")


def test_training_scenario_fixture_is_valid():
    assert moesim.scenario_from_dict(deep_merge(TRAIN, {"plan": {"ep": 2}})).plan.ep == 2


def test_fp8_training_block_adds_te_casts_and_split_accumulation():
    """FP8 training: a forward cast op and a backward cast op after every FP8 GEMM (not the router);
    the backward-only op adds nothing to the forward; the GEMMs' backward pays split accumulation."""
    from moesim.costmodel.fp8 import SPLIT_ACCUMULATION_SLOWDOWN
    from moesim.engine.ops import forward_s
    from moesim.engine.training.fp8 import fp8_training_ops

    s = moesim.scenario_from_dict(deep_merge(TRAIN, {"model": {"dtype": "fp8"}}))
    cm = build_cost_model(s.hardware)
    dims, dt = BlockDims.of(s.model, 2, 4, mla_absorbed=False), training_dtypes(s)
    q = np.full(2, 1024.0)
    plain = block_ops(dims, dt, True, 2048, q, q, expert_tokens=np.full(2, 1024.0), a2a_bytes=1e6)
    ops = fp8_training_ops(plain, "delayed", 1.0)
    names = [op.name for op in ops]
    gemms = [op.name for op in plain if op.kind in ("gemm", "grouped_gemm") and op.name != "router"]
    assert gemms and all(f"{g}_cast" in names and f"{g}_cast_bwd" in names for g in gemms)
    assert "router_cast" not in names
    secs = price(cm, ops)
    by = {op.name: op for op in ops}
    assert float(forward_s(by["o_proj_cast_bwd"], secs["o_proj_cast_bwd"])) == 0.0
    assert float(backward_s(by["o_proj_cast"], secs["o_proj_cast"])) == 0.0
    assert float(backward_s(by["o_proj"], secs["o_proj"])) == pytest.approx(
        2 * SPLIT_ACCUMULATION_SLOWDOWN * float(secs["o_proj"]))
    # the QKV input cast is fused into the norm: only the weight's cast is left in its forward op
    assert float(by["qkv_proj_cast"].nbytes) < float(by["o_proj_cast"].nbytes) + 1
    assert float(total_s(cm, ops)) > float(total_s(cm, plain))


def test_blackwell_fp8_backward_has_no_split_accumulation():
    """Blackwell's tensor cores accumulate FP8 in FP32 (no split-accumulation mode on sm100): its presets
    price an FP8 GEMM's backward at twice its forward, Hopper's at the split-accumulation slowdown on top;
    a whole FP8 training step is shorter on a B200 without it, by less than that slowdown."""
    from moesim.costmodel.fp8 import SPLIT_ACCUMULATION_SLOWDOWN
    from moesim.engine.training.fp8 import fp8_training_ops
    from moesim.presets import HARDWARE

    assert HARDWARE["h100-sxm"]["device"].get("fp8_split_accumulation", True)
    for preset in ("b200", "gb200-nvl72", "b300", "gb300-nvl72"):
        assert HARDWARE[preset]["device"]["fp8_split_accumulation"] is False
    s = moesim.scenario_from_dict(deep_merge(TRAIN, {"model": {"dtype": "fp8"}, "hardware": {"preset": "b200"}}))
    cm = build_cost_model(s.hardware)
    dims, dt = BlockDims.of(s.model, 2, 4, mla_absorbed=False), training_dtypes(s)
    q = np.full(2, 1024.0)
    plain = block_ops(dims, dt, False, 2048, q, q)
    for split, factor in ((True, 2 * SPLIT_ACCUMULATION_SLOWDOWN), (False, 2.0)):
        ops = fp8_training_ops(plain, "current", 1.0, split)
        secs, by = price(cm, ops), {op.name: op for op in ops}
        assert float(backward_s(by["ffn_up"], secs["ffn_up"])) == pytest.approx(factor * float(secs["ffn_up"]))
    steps = [moesim.simulate(moesim.scenario_from_dict(deep_merge(
        TRAIN, {"model": {"dtype": "fp8"}, "hardware": {"preset": "b200", "device": {"fp8_split_accumulation": f}}})))
        .summary["step_time_s"] for f in (True, False)]
    assert steps[1] < steps[0] < steps[1] * SPLIT_ACCUMULATION_SLOWDOWN


def test_blackwell_fp8_casts_write_no_transposes_but_mxfp8_keeps_both_copies():
    """FP8 GEMMs that take any layout (Blackwell: TE's is_non_tn_fp8_gemm_supported) need no transposed
    copies: a tensor-scaled cast writes 1 byte per element less and the transpose-only pass goes; MXFP8
    quantizes along both axes wherever it runs. A B200 FP8 step is shorter without the transposes."""
    from moesim.costmodel.fp8 import fp8_cast_bytes
    from moesim.presets import HARDWARE

    assert not HARDWARE["h100-sxm"]["device"].get("fp8_non_tn_gemm", False)
    assert all(HARDWARE[p]["device"]["fp8_non_tn_gemm"] for p in ("b200", "gb200-nvl72", "b300", "gb300-nvl72"))
    t, k, n = 4096.0, 2048, 6144
    for recipe in ("delayed", "current", "mxfp8"):
        for fused in (False, True):
            tn = fp8_cast_bytes(t, k, n, recipe=recipe, norm_fused=fused)
            any_layout = fp8_cast_bytes(t, k, n, recipe=recipe, norm_fused=fused, transposes=False)
            if recipe == "mxfp8":
                assert all(float(any_layout[key]) == float(tn[key]) for key in tn)
                continue
            assert float(tn["weight_bytes"]) - float(any_layout["weight_bytes"]) == pytest.approx(k * n)
            # the output gradient's transpose always; the input's in its forward cast or a transpose-only pass
            assert float(tn["bwd_bytes"] + tn["fwd_bytes"]) - float(any_layout["bwd_bytes"] + any_layout["fwd_bytes"]) \
                == pytest.approx(t * n + (2 if fused and recipe == "delayed" else 1) * t * k)
    # FP8 primary weights (plan.fp8_param_gather): no layer casts a weight; TN-only GEMMs still transpose it
    for recipe in ("delayed", "current"):
        with_params = fp8_cast_bytes(t, k, n, recipe=recipe, fp8_params=True)
        assert float(with_params["weight_bytes"]) == pytest.approx(2.0 * k * n)
        assert float(fp8_cast_bytes(t, k, n, recipe=recipe, fp8_params=True, transposes=False)["weight_bytes"]) == 0.0
        assert float(with_params["fwd_bytes"]) == float(fp8_cast_bytes(t, k, n, recipe=recipe)["fwd_bytes"])
    assert float(fp8_cast_bytes(t, k, n, recipe="mxfp8", fp8_params=True)["weight_bytes"]) == pytest.approx(4.0 * k * n)
    steps = [moesim.simulate(moesim.scenario_from_dict(deep_merge(
        TRAIN, {"model": {"dtype": "fp8"}, "plan": {"fp8_recipe": "current"},
                "hardware": {"preset": "b200", "device": {"fp8_non_tn_gemm": f}}}))).summary["step_time_s"]
        for f in (False, True)]
    assert steps[1] < steps[0]


@pytest.mark.parametrize("device_name", [None, "Datasheet GPU"])
def test_fp8_gemms_reach_a_smaller_fraction_of_their_peak(device_name):
    """Measured FP8/BF16 pairs: an FP8 GEMM on an H100 is faster than BF16 but less than 2x."""
    hw = {"preset": "h100-sxm"} | ({"device": {"name": device_name, "default_profile": "datasheet"}}
                                   if device_name else {})
    s = moesim.scenario_from_dict(deep_merge(TRAIN, {"hardware": hw}))
    cm = build_cost_model(s.hardware)
    for m in (1.0, 8192.0):
        bf16, fp8 = float(cm.gemm_s(m, 8192, 8192, "bf16")), float(cm.gemm_s(m, 8192, 8192, "fp8"))
        assert bf16 / 2 < fp8 < bf16


def test_fp8_serving_dispatches_fp8_and_combines_16_bit():
    """DeepEP's convention: the dispatch moves FP8 rows, the combine the experts' BF16 outputs."""
    dims = BlockDims(d_model=1024, ep=8, expert_w=2048, n_experts=8, top_k=2)
    fp8 = OpDtypes("fp8", 1.0, 2.0, "bf16", "fp8")
    ops = {op.name: op for op in moe_ops(dims, fp8, 64, np.full(1, 16.0), a2a_bytes=1e6)}
    assert float(ops["dispatch"].nbytes) == 1e6 and float(ops["combine"].nbytes) == 2e6
    bf16 = OpDtypes("bf16", 2.0, 2.0, "bf16", "bf16")
    ops = {op.name: op for op in moe_ops(dims, bf16, 64, np.full(1, 16.0), a2a_bytes=1e6)}
    assert float(ops["combine"].nbytes) == float(ops["dispatch"].nbytes)


def _deepseek_dims(tp: int, absorbed: bool) -> tuple[BlockDims, object]:
    m = moesim.scenario_from_dict(dict(
        name="ds", model=dict(preset="deepseek-v3", dtype="bf16"), hardware=dict(preset="h200"),
        plan=dict(dp=1, tp=8, pp=1, ep=1),
        workload=dict(kind="serving", prompt_tokens=dict(value=64), output_tokens=dict(value=8)))).model
    return BlockDims.of(m, tp=tp, mla_absorbed=absorbed), m


@pytest.mark.parametrize("tp", [1, 8])
def test_serving_mla_runs_its_own_kernels_on_the_same_weights_but_the_replicated_down_projection(tp):
    """Absorbed MLA (serving): the replicated down-projection, two latent norms, the query
    up-projection, the absorbed key and value up-projections and the RoPE/cache kernel; the weights are
    the folded training form's at TP1, and TP splits all but the down-projection."""
    from moesim.accounting import attention_params

    dims, m = _deepseek_dims(tp, absorbed=True)
    a = m.mla
    dt = OpDtypes("bf16", 2.0, 2.0, "bf16", "bf16")
    ops = {op.name: op for op in block_ops(dims, dt, False, 4.0, np.ones(4), np.full(4, 100.0))}
    names = [op.name for op in block_ops(dims, dt, False, 4.0, np.ones(4), np.full(4, 100.0))]
    assert names[:9] == ["attn_norm", "qkv_a_proj", "q_a_norm", "kv_a_norm", "q_b_proj", "q_absorb",
                         "rope_kv_write", "attn_core", "v_absorb"]
    weights = {n: ops[n].args["n"] * ops[n].args["k"] for n in ("qkv_a_proj", "q_b_proj", "q_absorb", "v_absorb")}
    down = m.d_model * (a.q_lora_rank + a.kv_lora_rank + a.qk_rope_head_dim)
    assert weights["qkv_a_proj"] == down  # every TP rank holds the whole down-projection
    up = a.q_lora_rank * m.n_heads * (a.qk_nope_head_dim + a.qk_rope_head_dim) + \
        m.n_heads * a.kv_lora_rank * (a.qk_nope_head_dim + a.v_head_dim)
    assert sum(weights.values()) - down == pytest.approx(up / tp)
    norms = a.kv_lora_rank + a.q_lora_rank
    assert down + up == attention_params(m) - m.n_heads * a.v_head_dim * m.d_model - norms
    folded = BlockDims.of(m, tp=1, mla_absorbed=False).qkv_n * m.d_model  # training's one GEMM (norms rounded in)
    assert abs(folded - (down + up)) < m.d_model
    for n in weights:  # a GEMM's FLOPs: two per weight per token
        assert float(ops[n].flops) == pytest.approx(2 * 4 * weights[n])


@pytest.mark.parametrize("tp", [1, 2, 8])
def test_memory_holds_the_mla_down_projection_whole_on_every_tp_rank(tp):
    """What the serving op graph reads (the whole down-projection on each rank) is what memory keeps:
    a device's dense weights are the rest over TP plus the down-projections and latent norms whole."""
    from moesim.accounting import param_counts, tp_replicated_attention_params
    from moesim.memory import weight_params_per_device

    dims, m = _deepseek_dims(tp, absorbed=True)
    dt = OpDtypes("bf16", 2.0, 2.0, "bf16", "bf16")
    ops = {op.name: op for op in block_ops(dims, dt, False, 4.0, np.ones(4), np.full(4, 100.0))}
    whole = tp_replicated_attention_params(m)
    a = m.mla
    assert whole == ops["qkv_a_proj"].args["n"] * ops["qkv_a_proj"].args["k"] + a.q_lora_rank + a.kv_lora_rank
    plan = moesim.schemas.PlanSpec(dp=1, tp=tp, pp=1, ep=1)
    dense, _ = weight_params_per_device(m, plan)
    assert dense == pytest.approx((param_counts(m).dense - whole * m.n_layers) / tp + whole * m.n_layers)
    mixtral = moesim.load_scenario("mixtral-8x7b-h100-train").model  # standard attention: all split
    assert tp_replicated_attention_params(mixtral) == 0
    assert weight_params_per_device(mixtral, plan)[0] == pytest.approx(param_counts(mixtral).dense / tp)


def test_training_mla_keeps_the_folded_projection():
    dims, m = _deepseek_dims(2, absorbed=False)
    dt = OpDtypes("bf16", 2.0, 2.0, "bf16", "bf16", paged_kv=False)
    ops = block_ops(dims, dt, False, 4.0, np.ones(4), np.full(4, 100.0))
    names = [op.name for op in ops]
    assert "qkv_proj" in names and "q_absorb" not in names and "rope_kv_write" not in names
    # the rope parts of the 64 query heads on a rank and of the one shared key, read and written
    rope = ops[names.index("rope")]
    assert names.index("rope") == names.index("qkv_proj") + 1
    assert float(rope.nbytes) == pytest.approx(2 * 4.0 * (m.n_heads / 2 + 1) * m.mla.qk_rope_head_dim * 2)


def test_training_rotates_queries_and_keys_in_a_kernel_whose_backward_moves_the_same_bytes():
    """Mixtral at TP2 (16 query and 4 KV heads of 128 per rank), bf16: Megatron-core's fused RoPE."""
    from moesim.engine.ops import backward_s
    from moesim.engine.training.recompute import RECOMPUTE_OPS

    s = serving(tp=2)
    dims = BlockDims.of(s.model, tp=2, mla_absorbed=False)
    dt = OpDtypes("bf16", 2.0, 2.0, "bf16", "bf16", paged_kv=False)
    ops = {op.name: op for op in block_ops(dims, dt, False, 1024.0, np.ones(1), np.full(1, 1024.0))}
    assert float(ops["rope"].nbytes) == 2 * 1024 * (16 + 4) * 128 * 2
    assert backward_s(ops["rope"], 3.0) == 3.0  # not the 2x of a GEMM
    assert "rope" in RECOMPUTE_OPS["mla_up_proj"] and "rope" not in RECOMPUTE_OPS["core_attn"]


def test_serving_rotates_and_caches_the_new_keys_in_a_kernel_of_its_own():
    """Mixtral at TP2, bf16: Q (16 heads) and K (4 heads) of 128 read and written to rotate them, K and V
    (4 heads each) read and written to the cache; training's flash attention has no such kernel."""
    s = serving(tp=2)
    cost = IterationCost(s, build_cost_model(s.hardware), np.random.default_rng(0), max_tokens=8)
    t = 8.0
    ops = {op.name: op for op in block_ops(cost.dims, cost.dtypes, False, t, np.ones(8), np.full(8, 50.0))}
    rotate = 2 * t * (16 + 4) * 128 * 2
    write = t * 2 * 4 * 128 * (2 + 2)
    assert float(ops["rope_kv_write"].nbytes) == pytest.approx(rotate + write)
    fp8_cache = OpDtypes("bf16", 2.0, 2.0, "bf16", "bf16", kv_bytes=1.0)
    ops8 = {op.name: op for op in block_ops(cost.dims, fp8_cache, False, t, np.ones(8), np.full(8, 50.0))}
    assert float(ops8["rope_kv_write"].nbytes) == pytest.approx(rotate + t * 2 * 4 * 128 * (2 + 1))


def test_a_model_without_rotary_embedding_runs_no_rope_kernel():
    """Switch (T5's relative position bias): no rotation in training, only the cache write in serving."""
    m = moesim.load_scenario("switch-base-128-train").model
    assert not m.rotary
    dims = BlockDims.of(m, tp=1, mla_absorbed=False)
    assert dims.rotated == 0.0
    train = OpDtypes("bf16", 2.0, 2.0, "bf16", "bf16", paged_kv=False)
    assert "rope" not in [op.name for op in block_ops(dims, train, False, 8.0, np.ones(1), np.full(1, 8.0))]
    serve = OpDtypes("bf16", 2.0, 2.0, "bf16", "bf16")
    ops = {op.name: op for op in block_ops(dims, serve, False, 8.0, np.ones(1), np.full(1, 8.0))}
    assert float(ops["rope_kv_write"].nbytes) == 8.0 * 2 * 12 * 64 * (2 + 2)  # K and V copied, nothing rotated


def test_a_bad_rotary_value_names_the_field():
    from moesim.errors import InputError

    with pytest.raises(InputError, match=r"^model.rotary = 'sometimes': Input should be a valid boolean"):
        moesim.load_scenario("switch-base-128-train", ["model.rotary=sometimes"])
