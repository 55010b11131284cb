"""plan.moe_impl: hf_loop (engine/training/hf_loop.py): transformers' Python loop over the experts."""

from __future__ import annotations

import csv

import numpy as np
import pytest

import moesim
from moesim.costmodel import build_cost_model
from moesim.engine.routing import sample_routing
from moesim.engine.training import hf_loop
from moesim.engine.training import layer_costs as lc_mod
from moesim.engine.training.layer_costs import EXPERTS, layer_costs
from moesim.schemas.workload import TrainableSpec
from tests.test_training import MOE, scenario

US = 1e-6
SMALL = dict(MOE, hardware=dict(preset="h100-sxm", node=dict(devices_per_node=1)), plan=dict(dp=1, tp=1, pp=1, ep=1, microbatches=2, schedule="1f1b", moe_layer_host_us=0),
             workload=dict(kind="training", global_batch_seqs=4, seq_len=2048, total_tokens=1e10),
             routing=dict(distribution="uniform", overflow="dropless", seed=0))
ALL = TrainableSpec()


def _costs(s):
    p, m = s.plan, s.model
    seqs = s.workload.global_batch_seqs // (p.dp * p.microbatches)
    r = sample_routing(s.routing, m.n_layers, m.n_experts, m.top_k, p.ep, seqs * s.workload.seq_len,
                       p.microbatches, np.random.default_rng(0))
    return layer_costs(s, build_cost_model(s.hardware), r)


def _loop(loads, d=1024, w=2048, tokens=4096.0, **kw):
    cm = build_cost_model(scenario(SMALL).hardware)
    return hf_loop.layer_loop_s(cm, np.asarray(loads, dtype=float), tokens, d, w, 2, True, "bf16", ALL,
                                False, False, False, **kw)


@pytest.mark.parametrize("plan,trainable", [
    (dict(recompute="none"), "all"),
    (dict(recompute="selective"), "all"),
    (dict(recompute="full"), "all"),
    (dict(recompute="full", zero_stage=3), "all"),
    (dict(recompute="full"), dict(mode="lora", rank=16, targets=["attention", "experts"], base_dtype="nf4")),
    (dict(recompute="full"), "experts"),
])
def test_the_loop_is_never_faster_than_grouped_gemms(plan, trainable):
    base = dict(plan=plan, workload=dict(trainable=trainable))
    grouped = moesim.simulate(scenario(SMALL, **base))
    loop = moesim.simulate(scenario(SMALL, **{**base, "plan": {**plan, "moe_impl": "hf_loop"}}))
    assert loop.summary["step_time_s"] > grouped.summary["step_time_s"]


def test_the_exposed_host_time_grows_with_the_busy_experts():
    # 64 tokens per busy expert: kernels shorter than their launches, so each sync exposes host time
    host = [float(_loop([64.0] * n + [0.0] * (16 - n))["host_fwd"]) for n in range(1, 17)]
    assert all(b > a for a, b in zip(host, host[1:]))
    # at least the Linear calls' host time beyond the GPU work of each busy expert, at most all of it
    per_expert = host[1] - host[0]
    launches = sum(h for h, _ in hf_loop.expert_kernels(build_cost_model(scenario(SMALL).hardware), 64.0, 4096.0,
                                                         1024, 2048, 2, True, "bf16", ALL, False, False, False)[0])
    assert 0 < per_expert < launches * US


def test_one_expert_with_long_gpu_work_hides_all_but_the_first_launch():
    out = _loop([200_000.0])
    # the gather after the sync is launched with the GPU idle; every later launch hides behind it
    assert float(out["host_fwd"]) == pytest.approx(hf_loop.OP_US * US, rel=0.05)
    # the backward starts after the recompute's last wait: its first launch too, unless work is queued
    assert float(out["host_bwd"]) == pytest.approx(hf_loop.OP_US * US, rel=0.05)
    assert float(_loop([200_000.0], bwd_lead_s=1e-3)["host_bwd"]) == 0.0


def test_segment_formula():
    assert float(hf_loop.segment_s([1 * US] * 3, [10 * US, 0.1 * US, 0.1 * US])) == pytest.approx(11.2 * US)
    assert float(hf_loop.segment_s([5 * US] * 3, [1 * US] * 3)) == pytest.approx(16 * US)
    assert float(hf_loop.segment_s([], [])) == 0.0


def test_idle_experts_cost_nothing_in_the_loop():
    a, b = _loop([512.0, 0.0]), _loop([512.0])
    for k in ("gpu_bwd", "host_fwd", "host_bwd", "wgrad"):
        assert float(a[k]) == pytest.approx(float(b[k]), rel=1e-12), k
    # the forward differs only by the set-up's one-hot mask, one column per expert
    cm = build_cost_model(scenario(SMALL).hardware)
    pre = hf_loop.pre_loop_s(cm, 4096.0, 1024, 2, 2) - hf_loop.pre_loop_s(cm, 4096.0, 1024, 1, 2)
    assert float(a["gpu_fwd"] - b["gpu_fwd"]) == pytest.approx(float(pre), rel=1e-9)


def test_full_recompute_pays_the_loop_forward_twice():
    s = dict(plan=dict(recompute="full"))
    g = _costs(scenario(SMALL, **s))
    h = _costs(scenario(SMALL, plan=dict(recompute="full", moe_impl="hf_loop")))
    extra_fwd = h.fwd_s.sum(axis=-1) - g.fwd_s.sum(axis=-1)
    assert (extra_fwd > 0).all()
    np.testing.assert_allclose(h.bwd_s[..., 0] - g.bwd_s[..., 0], extra_fwd, rtol=1e-9)
    # only the expert slot moves (the fused permute in the router slot is replaced by the loop's set-up)
    moved = np.abs(h.fwd_s - g.fwd_s).sum(axis=(0, 1))
    assert moved[EXPERTS] > 0 and np.delete(moved, [EXPERTS, lc_mod.ROUTER]).max() == 0


def test_the_default_never_enters_the_loop(monkeypatch):
    before = _costs(scenario(SMALL))

    def boom(*a, **k):
        raise AssertionError("grouped must not price the loop")

    monkeypatch.setattr(lc_mod, "apply_hf_loop", boom)
    after = _costs(scenario(SMALL))
    explicit = _costs(scenario(SMALL, plan=dict(moe_impl="grouped")))
    for x in (after, explicit):
        np.testing.assert_array_equal(x.fwd_s, before.fwd_s)
        np.testing.assert_array_equal(x.bwd_s, before.bwd_s)


def test_the_loop_needs_ep_1():
    with pytest.raises(ValueError, match="hf_loop needs ep = 1"):
        scenario(MOE, plan=dict(moe_impl="hf_loop"))


def test_the_hf_transformers_rows_use_the_loop():
    rows = {r["id"]: r for r in csv.DictReader(open(moesim.__path__[0] + "/data/validation.csv"))}
    assert "plan.moe_impl=hf_loop" in rows["FT-07"]["overrides"]
    assert "plan.moe_impl=hf_loop" in rows["FT-09"]["overrides"]
    assert "hf_loop" not in rows["FT-05"]["overrides"]  # Megatron-SWIFT runs grouped GEMMs
