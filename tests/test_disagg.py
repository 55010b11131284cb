"""Disaggregated prefill/decode serving, lock-step DP-attention groups and prefix caching."""

from __future__ import annotations

import copy

import numpy as np
import pytest

import moesim
from moesim.accounting import kv_bytes_per_token
from moesim.costmodel import build_cost_model
from moesim.engine.serving.decode_cost import IterationCost
from moesim.engine.serving.disagg import kv_transfer_s
from moesim.errors import InputError
from moesim.loader import scenario_from_dict
from moesim.memory import kv_cache_capacity_tokens
from moesim.precision import scenario_precision
from moesim.schemas.scenario import pool_scenario


def doc(n=1, prompt=1000, output=10, prefill=None, decode=None, nodes=2, arrival=None, **work) -> dict:
    w = {"kind": "serving", "arrival": arrival or {"process": "batch", "n_requests": n},
         "prompt_tokens": {"dist": "fixed", "value": prompt}, "output_tokens": {"dist": "fixed", "value": output},
         "max_batch_seqs": 64, "max_batch_tokens": 4096,
         "disaggregation": {"prefill": {"plan": prefill or {"dp": 8}}, "decode": {"plan": decode or {"dp": 8}}}}
    if "kv_transfer_gbps" in work:
        w["disaggregation"]["kv_transfer_gbps"] = work.pop("kv_transfer_gbps")
    w.update(work)
    return {"name": "disagg", "model": "llama-2-7b", "hardware": {"preset": "a100-80gb", "cluster": {"nodes": nodes}},
            "workload": w}


def run(d: dict, seed: int = 0):
    return moesim.simulate(scenario_from_dict(d), seed=seed)


def test_one_request_ttft_is_prefill_plus_transfer_closed_form():
    s = scenario_from_dict(doc())
    r = moesim.simulate(s)
    sp = pool_scenario(s, "prefill")
    prefill_s = IterationCost(sp, build_cost_model(sp.hardware), np.random.default_rng(0), 4096).time_s(
        np.array([1000]), np.array([1000]), 1)[0]
    hw = s.hardware
    nbytes = 1000 * kv_bytes_per_token(s.model, scenario_precision(s))
    transfer = hw.cluster.nic_latency_us * 1e-6 + nbytes / (hw.cluster.nic_bw_gbps * 1e9)  # tp 1: one NIC sends
    req = r.tables["requests"]
    assert req["ttft_s"][0] == pytest.approx(prefill_s + transfer, rel=1e-9)
    assert req["kv_transfer_s"][0] == pytest.approx(transfer, rel=1e-9)
    assert r.summary["kv_transfer_mean_s"] == pytest.approx(transfer, rel=1e-9)
    assert r.summary["kv_transfer_gib"] == pytest.approx(nbytes / 2**30)
    # the other 9 tokens come from the decode pool, one step each, after the KV landed
    assert req["e2e_s"][0] > req["ttft_s"][0] and np.isfinite(req["tpot_s"][0])


def test_a_faster_link_shortens_ttft_and_tp_sends_over_more_nics():
    slow = run(doc(prompt=4000, kv_transfer_gbps=1.0)).summary
    fast = run(doc(prompt=4000, kv_transfer_gbps=100.0)).summary
    assert slow["kv_transfer_mean_s"] == pytest.approx(100 * fast["kv_transfer_mean_s"], rel=0.01)
    assert slow["ttft_mean_s"] - fast["ttft_mean_s"] == pytest.approx(
        slow["kv_transfer_mean_s"] - fast["kv_transfer_mean_s"], rel=1e-6)
    tp4 = run(doc(prompt=4000, kv_transfer_gbps=1.0, prefill={"dp": 2, "tp": 4})).summary
    assert tp4["kv_transfer_mean_s"] < 0.3 * slow["kv_transfer_mean_s"]  # 4 KV-head shards, 4 NICs


def test_kv_transfers_queue_on_their_link():
    start, done = kv_transfer_s(np.array([0.0, 0.0, 1.0, 0.5]), np.array([0, 0, 1, 0]), np.array([10.0, 10, 10, 10]),
                                bandwidth_bps=10.0, latency_s=0.5)
    np.testing.assert_allclose(start, [0.0, 1.5, 1.0, 3.0])
    np.testing.assert_allclose(done, [1.5, 3.0, 2.5, 4.5])


def test_requests_and_tokens_are_conserved_across_pools():
    d = doc(n=300, arrival={"process": "poisson", "rate_per_s": 30.0, "n_requests": 300},
            prompt_tokens={"dist": "lognormal", "median": 800, "sigma": 0.8, "max": 3000},
            output_tokens={"dist": "lognormal", "median": 100, "sigma": 0.8, "max": 1000},
            prefill={"dp": 4, "tp": 2}, decode={"dp": 2, "tp": 4})
    r = run(d)
    s, req, it = r.summary, r.tables["requests"], r.tables["iterations"]
    assert s["served_requests"] + s["rejected_requests"] == 300 and s["served_requests"] == 300
    assert s["prefill_devices"] + s["decode_devices"] == s["devices"] == 16
    prefill_rows = np.asarray(it["replica"]) < 4
    prompt, output = np.asarray(req["prompt_tokens"]), np.asarray(req["output_tokens"])
    assert np.asarray(it["prefill_tokens"])[prefill_rows].sum() == prompt.sum()
    assert np.asarray(it["decode_tokens"])[prefill_rows].sum() == 0
    assert np.asarray(it["prefill_tokens"])[~prefill_rows].sum() == 0  # no preemption here: nothing recomputed
    assert np.asarray(it["decode_tokens"])[~prefill_rows].sum() == (output - 1).sum()
    assert np.all(np.asarray(req["first_token_s"]) >= np.asarray(req["arrival_s"]) + np.asarray(req["kv_transfer_s"]))
    assert 0 < s["prefill_utilisation"] <= 1 and 0 < s["decode_utilisation"] <= 1
    assert s["usd_per_day"] == pytest.approx(16 * 24 * scenario_from_dict(d).hardware.device.usd_per_hour)


def test_decode_admission_is_limited_by_the_decode_pool_kv():
    d = doc(n=64, prompt=3000, output=400, decode={"dp": 8}, kv_cache_fraction=0.1)
    r = run(d)
    s = scenario_from_dict(d)
    cap = int(kv_cache_capacity_tokens(pool_scenario(s, "decode")))
    it = r.tables["iterations"]
    dec = np.asarray(it["replica"]) >= 8
    kv, capacity = np.asarray(it["kv_tokens"])[dec], np.asarray(it["kv_capacity_tokens"])[dec]
    assert (capacity == cap).all() and (kv <= cap).all()
    assert np.asarray(it["running"])[dec].max() <= cap // 3000  # each running sequence holds its prompt's KV
    assert np.asarray(it["queued"])[dec].max() > 0  # the rest waited for KV to free up
    assert r.summary["served_requests"] == 64


def test_prefix_cache_hits_are_not_recomputed():
    base = run(doc(n=32, prompt=2000)).summary
    d = doc(n=32, prompt=2000, prefix_cache_hit=0.5)
    cached = run(d)
    it = cached.tables["iterations"]
    assert np.asarray(it["prefill_tokens"]).sum() == 32 * 1000
    assert cached.summary["ttft_mean_s"] < base["ttft_mean_s"]
    assert cached.summary["kv_transfer_gib"] == pytest.approx(base["kv_transfer_gib"])  # the whole prompt's KV moves


def test_single_pool_prefix_cache_keeps_the_whole_prompt_in_kv():
    d = {"model": "llama-2-7b", "hardware": "a100-80gb", "plan": {"dp": 8},
         "workload": {"kind": "serving", "arrival": {"process": "batch", "n_requests": 8},
                      "prompt_tokens": {"dist": "fixed", "value": 1000}, "output_tokens": {"dist": "fixed", "value": 4},
                      "prefix_cache_hit": 0.75}}
    it = moesim.simulate(scenario_from_dict(d)).tables["iterations"]
    assert sum(it["prefill_tokens"]) == 8 * 250
    assert max(it["kv_tokens"]) >= 1000


def test_dp_attention_runs_an_expert_parallel_group_in_lock_step():
    d = {"model": {"preset": "mixtral-8x7b", "dtype": "fp8"}, "hardware": "h100-sxm",
         "plan": {"dp": 8, "ep": 8},
         "workload": {"kind": "serving", "arrival": {"process": "batch", "n_requests": 256},
                      "prompt_tokens": {"dist": "fixed", "value": 256}, "output_tokens": {"dist": "fixed", "value": 64},
                      "max_batch_seqs": 32}}
    apart = moesim.simulate(scenario_from_dict(d))
    d2 = copy.deepcopy(d)
    d2["plan"]["dp_attention"] = True
    together = moesim.simulate(scenario_from_dict(d2))
    a, t = apart.summary, together.summary
    assert t["served_requests"] == a["served_requests"] == 256
    assert set(together.tables["iterations"]["replica"]) == {0}  # one engine for the 8 replicas
    assert max(together.tables["iterations"]["batch_seqs"]) == 8 * 32  # their batch limits add up
    assert t["iterations"] < a["iterations"] / 4
    # each replica runs an even share: same work, similar pace
    assert t["output_tokens_per_s"] == pytest.approx(a["output_tokens_per_s"], rel=0.35)


@pytest.mark.parametrize("change, msg", [
    (lambda d: d.update(plan={"dp": 16}), r"plan: leave it out when workload.disaggregation is set"),
    (lambda d: d["workload"]["disaggregation"]["decode"]["plan"].update(dp=16),
     r"workload.disaggregation: prefill \(8 devices\) \+ decode \(16\) = 24 must equal the devices in hardware"),
    (lambda d: d["workload"]["disaggregation"]["prefill"]["plan"].update(dp=4),
     r"workload.disaggregation.prefill.plan: dp\*tp\*pp\*cp = 4 devices must be whole nodes"),
    (lambda d: d["workload"]["disaggregation"]["decode"]["plan"].update(dp=4, tp=3),
     r"workload.disaggregation.decode.plan.tp = 3: must divide model.n_heads"),
    (lambda d: d["workload"].update(prefix_cache_hit=1.0), r"workload.prefix_cache_hit = 1.0"),
    (lambda d: d["workload"]["disaggregation"].update(kv_transfer_gbps=0), r"kv_transfer_gbps = 0"),
    (lambda d: d["workload"]["disaggregation"]["decode"]["plan"].update(dp_attention=True),
     r"dp_attention: needs plan.ep > 1"),
    (lambda d: d["workload"]["disaggregation"]["decode"]["plan"].update(ep=16),  # a plan rule names the pool once
     r"^workload\.disaggregation\.decode\.plan\.ep = 16: must divide plan\.dp \(8\)"),
])
def test_bad_disaggregation_gives_one_line_naming_the_field(change, msg):
    d = doc()
    change(d)
    with pytest.raises(InputError, match=msg) as e:
        scenario_from_dict(d)
    assert "\n" not in str(e.value)


def test_pool_redundant_experts_are_checked_per_pool():
    d = doc()
    d["model"] = {"preset": "mixtral-8x7b", "dtype": "fp8"}
    d["hardware"] = {"preset": "h100-sxm", "cluster": {"nodes": 2}}
    d["workload"]["disaggregation"]["decode"] = {"plan": {"dp": 8, "ep": 8}, "placement": {"redundant_experts": 9}}
    with pytest.raises(InputError, match=r"workload.disaggregation.decode.placement.redundant_experts = 9: must be "
                                         r"at most model.n_experts \(8\)"):
        scenario_from_dict(d)


def test_shipped_deepseek_disaggregated_scenario_small():
    s = moesim.load_scenario("deepseek-v3-h800-serve-disagg", ["workload.arrival.n_requests=200"])
    r = moesim.simulate(s)
    out = r.summary
    assert out["fits"] and out["served_requests"] == 200
    assert out["prefill_devices"] == 96 and out["decode_devices"] == 144
    assert out["prefill_input_tokens_per_s_per_node"] > 0 and out["decode_output_tokens_per_s_per_node"] > 0
    assert out["alltoall_fraction"] > 0  # both pools pay the EP all-to-all
    layers = r.tables["expert_layers"]
    assert set(layers["pool"]) == {"prefill", "decode"} and len(layers["pool"]) == 2 * s.model.n_moe_layers
    imb = np.asarray(layers["expert_load_imbalance"])
    assert (imb >= 1.0 - 1e-9).all()
    decode = imb[np.asarray(layers["pool"]) == "decode"]
    assert out["expert_load_imbalance"] == pytest.approx(decode.mean())
