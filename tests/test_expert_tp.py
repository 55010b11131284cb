"""Expert tensor parallelism and EP groups formed from TP x DP (x CP) ranks (``plan.etp``,
``moesim/engine/expert_tp.py``): Megatron-core's MoE parallel folding."""

from __future__ import annotations

import numpy as np
import pytest

import moesim
from moesim.accounting import expert_params, param_counts
from moesim.costmodel import build_cost_model
from moesim.costmodel.comm import ep_peer_split
from moesim.engine import cp as ctx
from moesim.engine.expert_tp import expert_dp_group, routing_group_tokens, source_tokens
from moesim.engine.op_types import BlockDims
from moesim.engine.ops import block_ops
from moesim.engine.routing import sample_routing
from moesim.engine.training.layer_costs import (
    DISPATCH,
    EXPERTS,
    ROUTER,
    TP2,
    layer_costs,
    training_dtypes,
)
from moesim.engine.training.layer_params import layer_params_per_device
from moesim.errors import InputError
from moesim.loader import load_scenario
from moesim.memory import memory_report, weight_params_per_device
from moesim.resolve import deep_merge
from tests.conftest import ROOT
from tests.test_training import MOE as _TRAINING_MOE

TRAIN = sorted((ROOT / "scenarios").glob("*train*.yaml"))
QWEN3 = ROOT / "moesim" / "data" / "validation" / "qwen3-235b-a22b-h100-train.yaml"
#: tests/test_training.py's 8-layer, 8-expert top-2 model on one 8-GPU H100 node, no pipeline.
MOE = {**_TRAINING_MOE, "name": "moe-etp", "plan": dict(dp=8, tp=1, pp=1, ep=8, microbatches=4,
                                                                  moe_layer_host_us=0)}  # no host floor: these tests check the engine's other math (tests/test_train_host.py covers it)


def scenario(**plan) -> moesim.Scenario:
    return moesim.scenario_from_dict(deep_merge(MOE, {"plan": plan}))


def _costs(s):
    """Layer costs of ``s`` with the routing the step samples (seed 0)."""
    m, p, w = s.model, s.plan, s.workload
    seqs = w.global_batch_seqs // (p.dp * p.microbatches)
    routing = sample_routing(s.routing, m.n_moe_layers, m.n_experts, m.top_k, p.ep,
                             routing_group_tokens(p, seqs * w.seq_len // p.cp), p.microbatches,
                             np.random.default_rng(0))
    return layer_costs(s, build_cost_model(s.hardware), routing), routing


# ------------------------------------------------------------------ etp unset / = tp: today's layout


@pytest.mark.parametrize("path", TRAIN, ids=lambda p: p.stem)
def test_etp_unset_and_etp_tp_are_bit_identical(path):
    """``etp`` unset and ``etp = tp`` give the same summary and memory. (Bit-identical summaries and
    ``check`` output against the code before ``etp`` were checked with ``moesim simulate --json`` /
    ``moesim check --json`` on every shipped training scenario.)"""
    s = load_scenario(path)
    assert s.plan.etp is None and s.plan.expert_tp == s.plan.tp
    same = load_scenario(path, [f"plan.etp={s.plan.tp}"])
    a, b = moesim.simulate(s).summary, moesim.simulate(same).summary
    assert a.keys() == b.keys() and all(a[k] == b[k] or (a[k] != a[k] and b[k] != b[k]) for k in a)
    assert memory_report(s) == memory_report(same)
    p = s.plan
    assert expert_dp_group(p) == (max(p.dp // p.ep, 1) * p.cp, p.tp * p.ep) == ctx.dp_groups(p)[1]
    T = s.workload.global_batch_seqs // (p.dp * p.microbatches) * s.workload.seq_len // p.cp
    assert source_tokens(p, T) == T and routing_group_tokens(p, T) == p.ep * T


# ------------------------------------------------------------------ EP over TP x DP ranks


@pytest.mark.parametrize("overflow", ["drop", "dropless"])
def test_ep_over_tp_ranks_moves_the_bytes_of_the_carved_out_group(overflow):
    """TP2 x DP4 with EP8, ETP1 on one 8-GPU node sends per device what DP8 with EP8 does: each
    rank dispatches its own 2048 tokens (sequence-parallel half of TP2's 4096, or DP8's whole
    microbatch), the EP group routes the same 16,384 tokens, and every device runs whole experts."""
    routing = {"overflow": overflow}
    folded = moesim.scenario_from_dict(deep_merge(MOE, {"plan": dict(dp=4, tp=2, ep=8, etp=1), "routing": routing}))
    carved = moesim.scenario_from_dict(deep_merge(MOE, {"plan": dict(dp=8, tp=1, ep=8), "routing": routing}))
    (a, ra), (b, rb) = _costs(folded), _costs(carved)
    assert ra.loads.sum() == rb.loads.sum() == 16384 * 2 * a.fwd_s.shape[1] * folded.model.n_moe_layers
    np.testing.assert_array_equal(ra.loads, rb.loads)
    np.testing.assert_array_equal(a.fwd_bytes[:, :, DISPATCH], b.fwd_bytes[:, :, DISPATCH])
    np.testing.assert_array_equal(a.fwd_s[:, :, DISPATCH], b.fwd_s[:, :, DISPATCH])  # same links: one node
    np.testing.assert_array_equal(a.fwd_tokens[:, :, EXPERTS], b.fwd_tokens[:, :, EXPERTS])
    np.testing.assert_allclose(a.fwd_s[:, :, EXPERTS], b.fwd_s[:, :, EXPERTS], rtol=1e-12)  # whole experts
    np.testing.assert_allclose(a.fwd_s[:, :, ROUTER], b.fwd_s[:, :, ROUTER], rtol=1e-12)  # router on 2048 tokens
    assert (a.fwd_bytes[:, :, TP2] == 0).all()  # etp 1: no expert-TP collective after the MoE layer
    if overflow == "dropless":  # hand: 2048 tokens x top-2 x 7/8 remote x d 1024 x 2 bytes, or the busiest receiver
        assert a.fwd_bytes[:, :, DISPATCH].min() >= 2048 * 2 * 7 / 8 * 1024 * 2
    sa, sb = moesim.simulate(folded).summary, moesim.simulate(carved).summary
    assert sa["alltoall_nvlink_bytes"] == sb["alltoall_nvlink_bytes"] > 0
    assert sa["alltoall_nic_bytes"] == sb["alltoall_nic_bytes"] == 0


def test_ep_ranks_sit_etp_apart_on_the_nodes():
    """Megatron's expert ranks run etp, ep, expert-dp: an EP group spans ep * etp consecutive ranks,
    so 8-GPU nodes hold 8 // etp of its members (with etp = tp: 8 // tp, the layout before etp)."""
    for ep, etp, peers in ((8, 1, (7, 0)), (16, 1, (7, 8)), (8, 2, (3, 4)), (4, 2, (3, 0)), (32, 1, (7, 24))):
        assert ep_peer_split(ep, etp, 8) == peers
    s = scenario(dp=4, tp=2, ep=8, etp=1)
    dims = BlockDims.of(s.model, 2, 8, mla_absorbed=False, etp=1)
    ops = block_ops(dims, training_dtypes(s), moe=True, tokens=4096, q_tokens=np.full(2, 2048.0),
                    kv_tokens=np.full(2, 2048.0), expert_tokens=np.full((1,), 2048.0), a2a_bytes=1e6,
                    seq_parallel=True)
    dispatch = next(op for op in ops if op.name == "dispatch")
    assert dispatch.args["tp"] == 1 and dispatch.args["ep"] == 8


def test_expert_width_and_tp_collective_follow_etp():
    """TP4 with ETP2: experts run at half their width; the MoE layer's all-reduce spans the two
    expert-TP ranks over their 2 * T / 4 tokens; attention keeps TP4 over all T tokens."""
    m = scenario(dp=2, tp=4, ep=2, etp=2).model
    dt = training_dtypes(scenario())
    T = 4096.0
    kw = dict(moe=True, tokens=T, q_tokens=np.full(2, 2048.0), kv_tokens=np.full(2, 2048.0),
              expert_tokens=np.full((4,), 100.0), seq_parallel=True)
    for etp, width, ar in ((2, m.expert_width // 2, (2, T / 2)), (4, m.expert_width // 4, (4, T)), (1, m.expert_width, None)):
        dims = BlockDims.of(m, 4, 2, mla_absorbed=False, etp=etp)
        ops = {op.name: op for op in block_ops(dims, dt, **kw)}
        assert dims.expert_w == width and ops["expert_up"].args["n"] == (2 if m.gated_ffn else 1) * width
        assert ops["attn_allreduce"].args["n"] == 4
        assert ops["attn_allreduce"].nbytes == T * m.d_model * dt.act_bytes
        if ar is None:
            assert "ffn_allreduce" not in ops
        else:
            assert (ops["ffn_allreduce"].args["n"], ops["ffn_allreduce"].nbytes) == (ar[0], ar[1] * m.d_model * dt.act_bytes)


# ------------------------------------------------------------------ weights and the expert-DP group


@pytest.mark.parametrize("plan", [dict(dp=8, tp=1, ep=8), dict(dp=4, tp=2, ep=8, etp=1), dict(dp=4, tp=2, ep=4, etp=2),
                                  dict(dp=2, tp=4, ep=4, etp=2), dict(dp=2, tp=4, ep=8, etp=1), dict(dp=2, tp=4, ep=2)])
def test_expert_weights_per_device_follow_one_over_ep_etp(plan):
    s = scenario(**plan)
    p, m = s.plan, s.model
    etp = p.etp or p.tp
    _, experts = weight_params_per_device(m, p)
    assert experts * p.ep * etp * p.pp == pytest.approx(param_counts(m).routed_experts)
    _, per_layer = layer_params_per_device(s)
    assert per_layer.max() * p.ep * etp == pytest.approx(m.n_experts * expert_params(m))
    edp = p.tp * p.cp * p.dp // (p.ep * etp)
    assert expert_dp_group(p) == ctx.dp_groups(p)[1] == (edp, p.ep * etp)
    # ZeRO-1 shards each expert's optimizer states over its expert-DP replicas
    dense, _ = weight_params_per_device(m, p)
    optim = memory_report(s).optimizer_gib * 2**30
    assert optim == pytest.approx(dense * 12 / (p.dp * p.cp) + experts * 12 / edp)


# ------------------------------------------------------------------ rules: one line, naming the field


@pytest.mark.parametrize("plan, needle", [
    (dict(dp=2, tp=4, ep=2, etp=3), "plan.etp = 3: must divide plan.tp (4)"),
    (dict(dp=4, tp=2, ep=16, etp=1), "plan.ep = 16: ep * etp (16 * 1) must divide plan.tp * plan.cp * plan.dp (8)"),
    (dict(dp=4, tp=2, ep=8), "plan.ep = 8: must divide plan.dp (4)"),
    (dict(dp=4, tp=2, ep=8, etp=2), "plan.ep = 8: must divide plan.dp (4)"),
    (dict(dp=2, tp=4, ep=4, etp=4), "plan.ep = 4: must divide plan.dp (2)"),
    (dict(dp=2, tp=1, cp=2, ep=8), "plan.ep = 8: must divide plan.dp * plan.cp (4)"),
])
def test_plan_rules_are_one_line(plan, needle):
    with pytest.raises(InputError) as e:
        scenario(**plan)
    msg = str(e.value)
    assert needle in msg and "\n" not in msg.strip()


def test_expert_parallel_groups_span_the_context_parallel_ranks():
    """Megatron-core forms expert groups from a stage's tp x cp x dp ranks: EP8 over DP2 x CP4 is a plan (the
    expert layers see 8 sources of a quarter sequence each), as EP8 over DP8 is."""
    s = scenario(dp=2, tp=1, cp=4, ep=8, microbatches=4)
    assert s.plan.ep == 8 and expert_dp_group(s.plan)[0] == 1
    summary = moesim.simulate(s).summary
    assert summary["alltoall_s"] > 0 and summary["cp_comm_s"] > 0


@pytest.mark.parametrize("overrides, needle", [
    (["model.n_experts=6", "plan.dp=4", "plan.tp=2", "plan.ep=4", "plan.etp=1"], "plan.ep = 4: must divide model.n_experts (6)"),
    (["plan.dp=4", "plan.tp=2", "plan.ep=8", "plan.etp=1", "workload.seq_len=2047"], "workload.seq_len = 2047"),
    (["plan.etp=70000"], "plan.etp"),
])
def test_scenario_rules_are_one_line(overrides, needle, tmp_path):
    import yaml

    path = tmp_path / "moe.yaml"
    path.write_text(yaml.safe_dump(deep_merge(MOE, {"plan": {"ep": 8}})))
    with pytest.raises(InputError) as e:
        load_scenario(path, overrides)
    msg = str(e.value)
    assert needle in msg and "\n" not in msg.strip()


def test_etp_in_serving_is_tp_or_whole_experts_over_the_tp_group_and_needs_routed_experts():
    serve = ROOT / "scenarios" / "mixtral-8x7b-h100-serve-tp2.yaml"
    with pytest.raises(InputError, match=r"plan.etp = 1: serving splits each expert over tp .* plan.ep = plan.tp = 2") as e:
        load_scenario(serve, ["plan.etp=1"])  # ep 1: not the TP group
    assert "\n" not in str(e.value).strip()
    assert load_scenario(serve, ["plan.etp=2"]).plan.expert_tp == 2
    assert load_scenario(serve, ["plan.etp=1", "plan.ep=2"]).plan.ep_in_tp_group  # tests/test_serving_ep_tp.py
    with pytest.raises(InputError, match=r"plan.etp = 1: needs routed experts"):
        load_scenario(ROOT / "scenarios" / "llama-2-7b-a100-train.yaml", ["plan.dp=4", "plan.tp=2", "plan.etp=1"])


# ------------------------------------------------------------------ Qwen3-235B: the published EP32 ETP1


def test_qwen3_runs_the_published_ep32_etp1():
    """Megatron-Bridge's Qwen3-235B run: TP2 PP8 EP32 ETP1 on 256 H100 (EP16 was the closest
    expressible plan). EP32 spans 4 nodes (8 members each), experts are whole on every device, and
    the MoE layers' TP all-reduce is gone, so TP time halves (every layer is MoE)."""
    ep16 = load_scenario(QWEN3, ["plan.ep=16", "plan.etp=2"])  # EP carved out of DP, experts over TP2
    ep32 = load_scenario(QWEN3, ["plan.ep=32", "plan.etp=1"])  # the validation scenario's (published) plan
    assert load_scenario(QWEN3).plan.expert_tp == 1 and load_scenario(QWEN3).plan.ep == 32
    assert expert_dp_group(ep32.plan) == (1, 32)
    a, b = moesim.simulate(ep16).summary, moesim.simulate(ep32).summary
    assert b["tp_comm_s"] == pytest.approx(a["tp_comm_s"] / 2, rel=0.02)
    total = b["alltoall_nvlink_bytes"] + b["alltoall_nic_bytes"]
    assert b["alltoall_nic_bytes"] / total == pytest.approx(24 / 31)  # flat: 24 of 31 peers off-node
    # same expert weights per device: 128 experts over EP16 x TP2 or EP32 x ETP1
    assert weight_params_per_device(ep16.model, ep16.plan) == weight_params_per_device(ep32.model, ep32.plan)
