"""Ulysses context parallelism (``plan.cp_comm: a2a``, ``moesim/engine/cp.py``): all-to-alls of Q, K,
V and the output over the CP group instead of the ring, one attention kernel over the whole sequence
for 1/cp of the heads, nothing to merge."""

from __future__ import annotations

import numpy as np
import pytest

from moesim.costmodel import build_cost_model
from moesim.engine import cp as ctx
from moesim.engine.op_types import BlockDims
from moesim.engine.ops import attention_core_op
from moesim.engine.training.layer_costs import layer_costs, training_dtypes
from moesim.errors import InputError
from moesim.invariants import violations
from moesim.loader import load_scenario
from moesim.simulate import simulate
from tests.conftest import ROOT

LLAMA = ROOT / "scenarios" / "llama-2-7b-a100-train.yaml"  # dense 7B (32 heads), one 8 x A100 node, DP8
#: Llama-2-7B at 32K tokens, one sequence per microbatch per replica, full recompute.
LONG = ["model.max_seq_len=32768", "workload.seq_len=32768", "workload.global_batch_seqs=32",
        "plan.microbatches=4", "plan.recompute=full"]
S = 32768


def _long(cp: int, comm: str, *extra: str):
    return load_scenario(LLAMA, [*LONG, f"plan.cp={cp}", f"hardware.cluster.nodes={cp}", f"plan.cp_comm={comm}", *extra])


def test_one_kernel_over_the_sequence_for_a_share_of_the_heads():
    """The Ulysses core is one causal kernel over all S tokens for heads / cp heads: exactly the
    ring's FLOPs (1/cp of the whole), at S/2 keys a row, so no slower than the ring's cp steps."""
    s = _long(1, "p2p")
    cm = build_cost_model(s.hardware)
    dims, dt = BlockDims.of(s.model, 1, 1, mla_absorbed=False), training_dtypes(s)
    whole = attention_core_op(dims, dt, np.full(1, float(S)), np.full(1, float(S)))
    for cp in (2, 4, 8):
        piece, kernels = ctx.ring_kernels(S, cp, "a2a")
        assert (piece, kernels) == (S, 1) == (ctx.attention_tokens(S, cp, "a2a")[0], 1)
        cd = ctx.core_dims(dims, cp, "a2a")
        assert (cd.heads, cd.kv_heads) == (dims.heads / cp, dims.kv_heads // cp)
        ulysses = attention_core_op(cd, dt, np.full(1, piece), np.full(1, piece))
        assert ulysses.flops * cp == pytest.approx(whole.flops, rel=1e-12)
        rp, rk = ctx.ring_kernels(S, cp)
        ring = attention_core_op(dims, dt, np.full(rk, rp), np.full(rk, rp))
        assert float(cm.attention_batch_s(**ulysses.args)) <= float(cm.attention_batch_s(**ring.args))
        assert ctx.merge_ops(dims, dt, S / cp, cp, comm="a2a") == []
    assert ctx.core_dims(dims, 1, "a2a") is dims and ctx.core_dims(dims, 4, "p2p") is dims


def test_a2a_bytes_closed_form_and_spans():
    """Each pass sends (cp - 1)/cp of the rank's Q, K, V and O (forward) or their gradients
    (backward), fully exposed on the attention's critical path; the all-to-alls appear as cp_comm
    spans of the CP group: forward, backward and full recompute's forward re-run per layer and
    microbatch."""
    for cp in (2, 4):
        s = _long(cp, "a2a", "plan.tp=2", "plan.dp=4")
        c = layer_costs(s, build_cost_model(s.hardware), None)
        m = s.model
        T = c.tokens_per_microbatch
        per_token = (2 * m.n_heads // 2 + 2 * m.kv_heads // 2) * m.head_width * 2  # per TP shard, bf16
        one = (cp - 1) / cp * T * per_token
        assert c.cp_ring_bytes == (pytest.approx(one), pytest.approx(one))
        assert c.cp_exposed_s[:2] == pytest.approx(c.cp_ring_s)  # nothing hides an all-to-all
        assert c.cp_ring_s[0] > 0
        r = simulate(s)
        sp = r.spans
        on = np.asarray(sp["stream"]).astype(str) == "cp_comm"
        L, M = m.n_layers, s.plan.microbatches
        assert on.sum() == 3 * L * M
        assert np.asarray(sp["bytes"])[on].sum() == pytest.approx(3 * L * M * one)
        assert set(np.asarray(sp["rank_group"])[on].astype(str)) == {"cp"}
        assert violations(r) == []


def test_ulysses_trades_ring_overheads_for_exposed_all_to_alls():
    """Against the ring on the same plan: less attention compute (no per-step kernels, no merges),
    more exposed CP communication; cp = 1 ignores cp_comm."""
    ring, uly = simulate(_long(4, "p2p")).summary, simulate(_long(4, "a2a")).summary
    assert uly["compute_s"] < ring["compute_s"]
    assert uly["cp_comm_s"] > 0 and ring["cp_comm_s"] > 0
    one_p2p, one_a2a = simulate(_long(1, "p2p")).summary, simulate(_long(1, "a2a")).summary
    assert one_p2p["step_time_s"] == one_a2a["step_time_s"] and one_a2a["cp_comm_s"] == 0.0


@pytest.mark.parametrize("sets, words", [
    (["plan.cp=8", "plan.tp=8", "plan.dp=1", "hardware.cluster.nodes=8"],
     r"^plan.cp_comm = a2a: model.n_heads per TP rank \(4\) must be a multiple of plan.cp \(8\)"),
    (["model.n_kv_heads=8", "plan.cp=4", "plan.tp=4", "plan.dp=2", "hardware.cluster.nodes=4"],
     r"^plan.cp_comm = a2a: model.n_kv_heads per TP rank \(2\) must be a multiple of plan.cp \(4\)"),
    (["plan.cp_comm=ring"], r"^plan.cp_comm"),
])
def test_bad_ulysses_heads_are_one_line(sets, words):
    with pytest.raises(InputError, match=words) as info:
        load_scenario(LLAMA, [*LONG, "plan.cp_comm=a2a", *sets])
    assert "\n" not in str(info.value)
