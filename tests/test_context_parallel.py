"""Context parallelism in training (``plan.cp``, ``moesim/engine/cp.py``): the sequence split over cp
ranks, the ring attention's K/V exchange, activation memory and the DP x CP gradient group."""

from __future__ import annotations

import numpy as np
import pytest

from moesim.accounting import GIB
from moesim.costmodel import build_cost_model
from moesim.engine import cp as ctx
from moesim.engine.expert_tp import expert_dp_group
from moesim.engine.op_types import BlockDims
from moesim.engine.ops import attention_core_op
from moesim.engine.routing import sample_routing
from moesim.engine.training.layer_costs import FWD_SLOTS, layer_costs, training_dtypes
from moesim.errors import InputError
from moesim.invariants import violations
from moesim.loader import load_scenario
from moesim.memory import memory_report
from moesim.metrics import METRICS
from moesim.schemas import PlanSpec
from moesim.simulate import simulate
from moesim.zero3_gather import zero3_block_bytes
from tests.conftest import ROOT

LLAMA = ROOT / "scenarios" / "llama-2-7b-a100-train.yaml"  # dense 7B, one 8 x A100 node, DP8
MIXTRAL = ROOT / "scenarios" / "mixtral-8x7b-h100-train.yaml"  # DP64 x EP8 on 8 nodes
TRAIN = sorted((ROOT / "scenarios").glob("*train*.yaml"))
#: Shipped training scenarios without context parallelism (grok-1 and mixtral-8x22b use it).
TRAIN_CP1 = [p for p in TRAIN if load_scenario(p).plan.cp == 1]
#: Llama-2-7B at 32K tokens, one sequence per microbatch per replica, full recompute (so cp = 1 fits).
LONG = ["model.max_seq_len=32768", "workload.seq_len=32768", "workload.global_batch_seqs=32",
        "plan.microbatches=4", "plan.recompute=full"]


def _long(cp: int, *extra: str):
    """LONG on ``cp`` times the nodes (same dp, same global batch)."""
    return load_scenario(LLAMA, [*LONG, f"plan.cp={cp}", f"hardware.cluster.nodes={cp}", *extra])


def _costs(s, routing=None):
    return layer_costs(s, build_cost_model(s.hardware), routing)


# ------------------------------------------------------------------ cp = 1 is the model before CP


@pytest.mark.parametrize("path", TRAIN_CP1, ids=lambda p: p.stem)
def test_cp1_adds_nothing(path):
    """cp = 1 (the default) leaves every number as it was: no ring, no cp_comm spans, the DP groups
    and token counts of the plan without CP. (Bit-identical summaries against the code before CP
    were checked with ``moesim simulate --json`` on every shipped training scenario.)"""
    s = load_scenario(path)
    assert s.plan.cp == 1 and s.plan.n_devices == s.plan.dp * s.plan.tp * s.plan.pp
    r = simulate(s)
    explicit = simulate(load_scenario(path, ["plan.cp=1"]))
    assert r.summary == explicit.summary or _same_with_nan(r.summary, explicit.summary)
    assert r.summary["cp_comm_s"] == 0.0
    assert not (np.asarray(r.spans["stream"]).astype(str) == "cp_comm").any()
    (dpn, dps), (edp, edps) = ctx.dp_groups(s.plan)
    assert (dpn, dps) == (s.plan.dp, s.plan.tp)
    assert (edp, edps) == (max(s.plan.dp // s.plan.ep, 1), s.plan.tp * s.plan.ep)
    assert ctx.attention_tokens(s.workload.seq_len, 1) == (float(s.workload.seq_len),) * 2


def _same_with_nan(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(a[k] == b[k] or (a[k] != a[k] and b[k] != b[k]) for k in a)


def test_cp_comm_s_is_a_registered_metric():
    assert "cp_comm_s" in METRICS and "training" in METRICS["cp_comm_s"].kinds


# ------------------------------------------------------------------ the physics


def test_attention_flops_per_rank_are_the_whole_over_cp():
    """Load-balanced causal split: each rank does exactly 1/cp of the sequence's attention FLOPs."""
    s = _long(1)
    dims, dt = BlockDims.of(s.model, 1, 1, mla_absorbed=False), training_dtypes(s)
    S = 32768
    whole = attention_core_op(dims, dt, np.full(1, float(S)), np.full(1, float(S))).flops
    for cp in (2, 4, 8, 16):
        q, kv = ctx.attention_tokens(S, cp)
        assert q == S / cp
        part = attention_core_op(dims, dt, np.full(1, q), np.full(1, kv)).flops
        assert part * cp == pytest.approx(whole, rel=1e-12)


def test_ring_steps_are_priced_as_their_own_kernels():
    """Transformer Engine runs one fused-attention kernel per ring step: cp kernels of S/cp queries
    over S/cp keys (causal convention) carry the rank's FLOPs exactly, at S/(2cp) keys per query row
    where one long kernel would see S/2, so the flash kernel's fixed cost per row makes them slower."""
    s = _long(1)
    cm = build_cost_model(s.hardware)
    dims, dt = BlockDims.of(s.model, 1, 1, mla_absorbed=False), training_dtypes(s)
    S = 32768
    for cp in (2, 4, 8):
        q, kv = ctx.attention_tokens(S, cp)
        one = attention_core_op(dims, dt, np.full(1, q), np.full(1, kv))
        piece, kernels = ctx.ring_kernels(S, cp)
        assert (piece, kernels) == (S / cp, cp)
        steps = attention_core_op(dims, dt, np.full(kernels, piece), np.full(kernels, piece))
        assert steps.flops == pytest.approx(one.flops, rel=1e-12)
        t_one = float(cm.attention_batch_s(**one.args))
        t_steps = float(cm.attention_batch_s(**steps.args))
        assert t_one < t_steps < 1.25 * t_one


def test_ring_merges_are_memory_passes_over_the_output_and_gradients():
    """The steps' outputs are rescaled and summed into one (2 + 3 (cp - 1) passes of the output),
    and the backward accumulates dQ, dK, dV the same way; nothing at cp = 1. The attention slot of
    the step grows by their seconds: forward once, backward once, and selective recompute re-runs
    the forward merge with the core."""
    s = _long(2, "plan.recompute=selective")
    dims, dt = BlockDims.of(s.model, 1, 1, mla_absorbed=False), training_dtypes(s)
    T = 16384
    assert ctx.merge_ops(dims, dt, T, 1) == []
    fwd, bwd = ctx.merge_ops(dims, dt, T, 4)
    o = T * dims.heads * dims.head_dim * dt.act_bytes
    k = T * dims.kv_heads * dims.head_dim * dt.act_bytes
    assert (fwd.phase, bwd.phase) == ("fwd", "bwd")
    assert fwd.nbytes == pytest.approx(11 * o) and bwd.nbytes == pytest.approx(11 * (o + 2 * k))
    f8, b8 = ctx.merge_ops(dims, dt, T, 4, fp8_attention=True)  # FP8 attention merges in FP32
    assert f8.nbytes == pytest.approx(fwd.nbytes * 4 / dt.act_bytes)
    assert b8.nbytes == pytest.approx(bwd.nbytes * 4 / dt.act_bytes)
    with_merge = _costs(s)
    saved = ctx.merge_ops
    try:
        ctx.merge_ops = lambda *a, **kw: []
        without = _costs(s)
    finally:
        ctx.merge_ops = saved
    att = FWD_SLOTS.index("attention")
    grew_f = with_merge.fwd_s[..., att] - without.fwd_s[..., att]
    assert (grew_f > 0).all()
    grew_rc = with_merge.bwd_s[..., 0] - without.bwd_s[..., 0]  # the recompute slot
    assert grew_rc == pytest.approx(grew_f)


def test_ring_exposed_closed_form():
    """(cp - 1) * max(0, step - block) + latency; nothing without CP."""
    assert ctx.ring_exposed_s(1.0, 0.5, 1, 0.1) == 0.0
    assert ctx.ring_exposed_s(1.0, 2.0, 4, 0.1) == pytest.approx(0.1)  # hidden: only the latency
    assert ctx.ring_exposed_s(3.0, 1.0, 4, 0.1) == pytest.approx(3 * 2.0 + 0.1)


def test_cp2_adds_the_ring_bytes():
    """Each ring step sends the rank's K and V (per TP shard); cp - 1 steps forward, twice the bytes
    backward (K/V and dK/dV); the transfers appear as cp_comm spans with those bytes."""
    one, two = _long(1, "plan.tp=2", "plan.dp=4"), _long(2, "plan.tp=2", "plan.dp=4")
    c1, c2 = _costs(one), _costs(two)
    m = two.model
    seqs = two.workload.global_batch_seqs // (two.plan.dp * two.plan.microbatches)
    T = seqs * 32768 // 2
    assert c2.tokens_per_microbatch == T == c1.tokens_per_microbatch // 2
    step = 2 * (m.kv_heads // 2) * m.head_width * T * 2  # K and V, kv heads / tp, bf16
    assert c2.cp_ring_bytes == (pytest.approx(step), pytest.approx(2 * step))
    assert c1.cp_ring_bytes == (0.0, 0.0) and c1.cp_ring_s == (0.0, 0.0) and c1.cp_exposed_s == (0.0,) * 3
    assert all(x >= 0 for x in c2.cp_exposed_s) and c2.cp_ring_s[1] > c2.cp_ring_s[0] > 0
    # the per-token ops halve: TP all-reduce bytes and the pipeline send
    tp_slot = FWD_SLOTS.index("tp_allreduce")
    np.testing.assert_allclose(c2.fwd_bytes[..., tp_slot], c1.fwd_bytes[..., tp_slot] / 2)
    assert c2.p2p_bytes == c1.p2p_bytes / 2
    r = simulate(two)
    sp = r.spans
    on = np.asarray(sp["stream"]).astype(str) == "cp_comm"
    L, M = m.n_layers, two.plan.microbatches
    # forward, backward, and full recompute's forward re-run: one span each per layer and microbatch
    assert on.sum() == 3 * L * M
    assert np.asarray(sp["bytes"])[on].sum() == pytest.approx(L * M * (step + 2 * step + step))
    assert set(np.asarray(sp["rank_group"])[on].astype(str)) == {"cp"}
    assert violations(r) == []


def test_cp2_halves_activation_memory():
    for extra in ((), ("plan.recompute=selective",), ("plan.zero_stage=2",)):
        one, two = memory_report(_long(1, *extra)), memory_report(_long(2, *extra))
        assert two.activations_gib == pytest.approx(one.activations_gib / 2, rel=1e-12)
    # ZeRO-3 adds the output head, gathered whole while the loss runs: the same bytes at any cp
    gathered = [memory_report(_long(cp, "plan.zero_stage=3")).activations_gib
                - memory_report(_long(cp, "plan.zero_stage=2")).activations_gib for cp in (1, 2)]
    assert gathered[0] > 0 and gathered[1] == pytest.approx(gathered[0], rel=1e-12)
    # ZeRO shards over dp * cp: ZeRO-3 weights, gradients and optimizer states halve too (the shards: the block
    # running, gathered whole, is the whole block less its shard at either cp)
    z3 = ("plan.zero_stage=3", "plan.recompute=selective")
    one, two = memory_report(_long(1, *z3)), memory_report(_long(2, *z3))
    assert two.optimizer_gib == pytest.approx(one.optimizer_gib / 2, rel=1e-12)
    for key, i in (("weights_gib", 0), ("gradients_gib", 1)):
        shards = []
        for cp, mem in ((1, one), (2, two)):
            s = _long(cp, *z3)
            g = 4.0 if s.plan.grad_dtype == "fp32" else 2.0
            gathered = zero3_block_bytes(s, 2.0, 2.0, g, s.plan.dp * cp, expert_dp_group(s.plan)[0])[i] / GIB
            shards.append(getattr(mem, key) - gathered)
        assert shards[1] == pytest.approx(shards[0] / 2, rel=1e-9)
    assert not one.fits and two.fits  # 32K tokens with selective recompute: CP is what makes it fit
    # MoE (padded to capacity: per-rank rounding), about half
    m1 = memory_report(load_scenario(MIXTRAL))
    m2 = memory_report(load_scenario(MIXTRAL, ["plan.cp=2", "hardware.cluster.nodes=16"]))
    assert m2.activations_gib == pytest.approx(m1.activations_gib / 2, rel=0.02)


def test_gradient_sync_spans_dp_times_cp():
    s = load_scenario(MIXTRAL, ["plan.cp=2", "hardware.cluster.nodes=16"])
    (dpn, dps), (edp, edps) = ctx.dp_groups(s.plan)
    assert (dpn, dps) == (128, 1) and (edp, edps) == (16, 8)
    llama = load_scenario(LLAMA, ["plan.cp=2", "hardware.cluster.nodes=2"])
    cm, c = build_cost_model(llama.hardware), _costs(llama)
    dense = c.dp_dense_bytes[0]
    assert c.dp_dense_s[0] == pytest.approx(float(cm.allreduce_s(dense, 16, 1)))
    assert c.opt_params[0] == pytest.approx(dense / 2 / 16)  # ZeRO-1 over dp * cp (bf16 grads: 2 B)


def test_long_sequence_cp_is_faster_per_token():
    """Llama-2-7B at 32K tokens: cp = 2 on twice the devices nearly doubles tokens/s (the ring hides
    behind the attention), exposes >= 0 s of ring, and no step is shorter than its compute."""
    one, two = simulate(_long(1)).summary, simulate(_long(2)).summary
    assert one["fits"] and two["fits"]
    assert two["tokens_per_s"] > 1.9 * one["tokens_per_s"]
    assert two["tokens_per_s_per_device"] == pytest.approx(one["tokens_per_s_per_device"], rel=0.05)
    assert two["tokens_per_step"] == one["tokens_per_step"] and two["devices"] == 2 * one["devices"]
    assert two["mfu"] == pytest.approx(one["mfu"], rel=0.05)  # model FLOPs unchanged
    for sm in (one, two):
        assert sm["cp_comm_s"] >= 0
        assert sm["step_time_s"] >= sm["pipeline_s"] >= (sm["compute_s"] + sm["cp_comm_s"]) * (1 - 1e-12)
        parts = sm["compute_s"] + sm["alltoall_exposed_s"] + sm["tp_comm_s"] + sm["cp_comm_s"] + sm["pp_comm_s"] + sm["bubble_s"]
        assert parts == pytest.approx(sm["pipeline_s"], rel=1e-9)


@pytest.mark.parametrize("extra", [
    ("plan.tp=8", "plan.dp=1", "workload.global_batch_seqs=8", "plan.microbatches=8",
     "model.max_seq_len=4096", "workload.seq_len=4096", "plan.cp=16", "hardware.cluster.nodes=16"),
    ("plan.cp=4", "hardware.cluster.nodes=4", "plan.pp=2", "plan.dp=4", "plan.schedule=interleaved",
     "plan.virtual_stages=2", "plan.recompute=selective"),
    ("plan.cp=2", "hardware.cluster.nodes=2", "plan.zero_stage=3", "plan.recompute=none"),
], ids=["short-seq-across-nodes", "pp-interleaved", "zero3"])
def test_exposed_ring_is_bounded_and_consistent(extra):
    """Short sequences over a cross-node ring expose communication; the breakdown still adds up and
    spans never overlap on a stream. Exposed ring <= the whole ring, never negative."""
    s = load_scenario(LLAMA, list(extra))
    c = _costs(s)
    assert 0 <= c.cp_exposed_s[0] <= c.cp_ring_s[0] + 1e-3 and 0 <= c.cp_exposed_s[1] <= c.cp_ring_s[1] + 1e-3
    r = simulate(s)
    sm = r.summary
    assert violations(r) == []
    parts = sm["compute_s"] + sm["alltoall_exposed_s"] + sm["tp_comm_s"] + sm["cp_comm_s"] + sm["pp_comm_s"] + sm["bubble_s"]
    if s.plan.zero_stage == 3:
        parts += sm["zero_gather_exposed_s"]
    assert parts == pytest.approx(sm["pipeline_s"], rel=1e-9)
    assert sm["step_time_s"] >= (sm["compute_s"] + sm["cp_comm_s"]) * (1 - 1e-12)
    if "short-seq" in str(extra) or s.plan.cp == 16:
        assert sm["cp_comm_s"] > 0.1 * sm["compute_s"]  # 256 tokens per rank: the ring shows


def test_moe_alltoall_bytes_follow_the_local_tokens():
    """Each EP rank (a CP x DP rank) routes its tokens / cp: with routing sampled for those tokens,
    the dispatch moves half the bytes at cp = 2 (dropless, same seed)."""
    out = []
    for cp in (1, 2):
        s = load_scenario(MIXTRAL, [f"plan.cp={cp}", f"hardware.cluster.nodes={8 * cp}", "routing.overflow=dropless"])
        m, p = s.model, s.plan
        T = s.workload.global_batch_seqs // (p.dp * p.microbatches) * s.workload.seq_len // cp
        routing = sample_routing(s.routing, m.n_moe_layers, m.n_experts, m.top_k, p.ep, p.ep * T, p.microbatches,
                                 np.random.default_rng(0))
        out.append(_costs(s, routing).fwd_bytes[1:, :, FWD_SLOTS.index("alltoall_dispatch")].mean())
    assert out[1] == pytest.approx(out[0] / 2, rel=0.05)


def test_moe_step_routes_the_local_tokens():
    s = load_scenario(MIXTRAL, ["plan.cp=2", "hardware.cluster.nodes=16"])
    r = simulate(s)
    routed = np.asarray(r.tables["layers"]["routed"])  # per MoE layer, mean over microbatches
    T = s.workload.global_batch_seqs // (s.plan.dp * s.plan.microbatches) * s.workload.seq_len // 2
    np.testing.assert_allclose(routed, s.plan.ep * T * s.model.top_k, rtol=1e-9)


# ------------------------------------------------------------------ the rules


def test_devices_count_cp():
    assert PlanSpec(dp=2, tp=2, pp=2, cp=4).n_devices == 32
    with pytest.raises(InputError, match=r"plan: dp\*tp\*pp\*cp = 8\*1\*1\*2 = 16 must equal the devices"):
        load_scenario(LLAMA, ["plan.cp=2"])


@pytest.mark.parametrize("sets, words", [
    (["plan.cp=3", "hardware.cluster.nodes=3"],
     r"^workload.seq_len = 4096: must be a multiple of 2 \* plan.cp \(6\); context parallelism splits"),
    (["plan.cp=4", "hardware.cluster.nodes=4", "workload.seq_len=1028"],
     r"^workload.seq_len = 1028: must be a multiple of 2 \* plan.cp \(8\)"),
    (["plan.cp=0"], r"^plan.cp"),
])
def test_bad_cp_is_one_line(sets, words):
    with pytest.raises(InputError, match=words) as info:
        load_scenario(LLAMA, sets)
    assert "\n" not in str(info.value)


def test_odd_sequences_need_no_cp_rule():
    assert load_scenario(LLAMA, ["workload.seq_len=4095"]).workload.seq_len == 4095  # cp = 1: any length


def test_serving_refuses_cp():
    with pytest.raises(InputError, match=r"^plan.cp = 2: context parallelism is for training; serving") as info:
        load_scenario(ROOT / "scenarios" / "llama-2-7b-a100-serve.yaml", ["plan.cp=2"])
    assert "\n" not in str(info.value)
