"""Speculative decoding in serving: schema errors, the closed form at batch 1, batch dependence, conservation."""

from __future__ import annotations

import numpy as np
import pytest

import moesim
from moesim.engine.serving.speculative import speedup_curve
from moesim.errors import InputError
from moesim.loader import scenario_from_dict
from moesim.memory import kv_cache_capacity_tokens

DRAFT = {"preset": "llama-2-7b", "n_layers": 4, "n_kv_heads": 8}


def scenario(model="llama-2-7b", spec=None, seqs=1, n=1, prompt=64, output=256, devices=1, **over):
    work = {"kind": "serving", "arrival": {"process": "batch", "n_requests": n},
            "prompt_tokens": {"dist": "fixed", "value": prompt}, "output_tokens": {"dist": "fixed", "value": output},
            "max_batch_seqs": seqs, "max_batch_tokens": 4096}
    if spec is not None:
        work["speculative"] = spec
    d = {"name": "spec", "model": {"preset": model, "dtype": "fp8"} if isinstance(model, str) else model,
         "hardware": {"preset": "h100-sxm", "node": {"devices_per_node": devices}},
         "plan": {"dp": devices}, "workload": work, **over}
    return scenario_from_dict(d)


def spec(alpha=0.8, k=4, method="draft", draft=DRAFT):
    out = {"method": method, "k": k}
    out["acceptance_per_position" if isinstance(alpha, list) else "acceptance"] = alpha
    if draft is not None:
        out["draft"] = draft
    return out


@pytest.mark.parametrize("bad, msg", [
    (spec(alpha=1.0), r"acceptance = 1.0: must be < 1"),
    (spec(alpha=-0.1), r"acceptance = -0.1: Input should be greater than or equal to 0"),
    (spec(alpha=[0.8, 0.7]), r"acceptance_per_position: needs k = 4 rates"),
    (spec(k=0), r"workload.speculative.k"),
    (spec(method="mtp"), r"draft: only for method 'draft'"),
    (spec(draft=None), r"draft: required when method is 'draft'"),
    (spec(draft="no-such-model"), r"workload.speculative.draft.preset = 'no-such-model': unknown preset"),
    (spec(draft={"preset": "llama-2-70b"}), r"workload.speculative: the draft .* does not fit next to the target"),
    (spec(draft={"preset": "mixtral-8x7b"}), r"draft.vocab_size = 32000|does not fit"),
])
def test_bad_values_give_one_line_naming_the_field(bad, msg):
    with pytest.raises(InputError, match=msg) as e:
        scenario(spec=bad)
    assert "\n" not in str(e.value)


def test_vocab_mismatch_is_refused():
    with pytest.raises(InputError, match=r"draft.vocab_size = 1000: must equal the target's \(32000\)"):
        scenario(spec=spec(draft=dict(DRAFT, vocab_size=1000)))


def test_tokens_per_step_closed_form_and_per_position():
    s = scenario(spec=spec(alpha=0.8, k=4)).workload.speculative
    assert s.tokens_per_step == pytest.approx((1 - 0.8**5) / (1 - 0.8))
    p = scenario(spec=spec(alpha=[0.9, 0.5], k=2)).workload.speculative
    assert p.tokens_per_step == pytest.approx(1 + 0.9 + 0.45)


def test_draft_costs_memory_weights_and_kv():
    plain, spec_s = scenario(), scenario(spec=spec())
    assert kv_cache_capacity_tokens(spec_s) < kv_cache_capacity_tokens(plain)
    mp, ms = (moesim.simulate(x).summary for x in (plain, spec_s))
    assert ms["peak_memory_gib"] >= mp["peak_memory_gib"] - 1e-9


@pytest.mark.parametrize("model, draft", [("llama-2-7b", DRAFT), ("mixtral-8x7b", DRAFT)])
def test_alpha_zero_is_never_faster(model, draft):
    c = speedup_curve(scenario(model, spec(alpha=0.0, draft=draft)), [1, 2, 8, 32, 128, 512], 256)
    assert (c["speedup"] <= 1.0 + 1e-9).all()
    assert c["tokens_per_step"] == 1.0


def test_batch1_simulation_matches_the_closed_form():
    s = scenario(spec=spec(alpha=0.8), prompt=32, output=256)
    a = moesim.simulate(s).summary
    b = moesim.simulate(scenario(prompt=32, output=256)).summary
    c = speedup_curve(s, [1], 32 + 128)
    sp = s.workload.speculative
    t_plain, t_spec = float(c["t_plain_s"][0]), float(c["t_spec_s"][0])
    closed = (1 - 0.8**5) / (1 - 0.8) * t_plain / t_spec
    assert float(c["speedup"][0]) == pytest.approx(closed, rel=1e-9)
    # simulated decode time per token, plain over speculative, within a few % of the closed form
    assert b["tpot_mean_s"] / a["tpot_mean_s"] == pytest.approx(closed, rel=0.05)
    assert a["spec_tokens_per_step"] == pytest.approx(sp.tokens_per_step, rel=0.03)
    assert closed > 1.5  # a dense 7B target at batch 1 is memory-bound: a 4-layer draft pays


def test_speedup_falls_as_the_batch_grows_compute_bound():
    # short context: the weights, not the KV reads, set a decode step's time
    batches = [1, 4, 16, 64, 256, 1024, 4096]
    dense = speedup_curve(scenario(spec=spec()), batches, 64)["speedup"]
    assert dense[0] > 1.5 and (np.diff(dense) < 1e-9).all() and dense[-1] < 1.0
    # MoE: the verify's k+1 tokens per sequence touch more experts at batch 1 (MoESD effect), so the
    # speedup peaks once a plain step already reads every expert, then falls as it turns compute-bound
    moe = speedup_curve(scenario("mixtral-8x7b", spec()), batches, 64)["speedup"]
    assert moe[2] > moe[0] and (np.diff(moe[2:]) < 1e-9).all() and moe[-1] < 1.0


@pytest.mark.parametrize("method, model, draft", [("draft", "mixtral-8x7b", DRAFT), ("mtp", "mixtral-8x7b", None)])
def test_requests_and_tokens_are_conserved(method, model, draft):
    s = scenario(model, spec(alpha=[0.9, 0.6], k=2, method=method, draft=draft), seqs=16, n=40,
                 prompt=100, output=77)
    r = moesim.simulate(s)
    req = r.tables["requests"]
    assert r.summary["served_requests"] + r.summary["rejected_requests"] == 40
    assert r.summary["served_requests"] == 40
    first, fin = np.asarray(req["first_token_s"]), np.asarray(req["finish_s"])
    assert (fin >= first).all()
    steps = r.summary["spec_tokens_per_step"]
    assert 1.0 <= steps <= 1 + 0.9 + 0.54 + 1e-9
    it = r.tables["iterations"]
    assert sum(it["prefill_tokens"]) == 40 * 100
    # fewer decode steps than output tokens: each step emits more than one
    assert sum(it["decode_tokens"]) < 40 * 76


def test_mtp_heads_are_cheaper_than_a_draft_model_per_pass():
    s = scenario("mixtral-8x7b", spec(method="mtp", draft=None, alpha=0.85, k=1))
    c = speedup_curve(s, [1, 64], 256)
    assert c["tokens_per_step"] == pytest.approx(1.85)
    assert (c["t_spec_s"] > c["t_plain_s"]).all()


def test_a_dense_draft_ignores_the_target_s_expert_replicas():
    """EPLB's redundant experts copy the target's experts; a dense draft has none to copy, so the draft
    runs on the default placement (it once raised 'redundant_experts = 2: must lie in [0, n_experts (1)]'),
    while an MTP head, whose MoE layer has the target's experts, keeps the target's placement."""
    from moesim.engine.serving.speculative import drafter_scenario

    s = moesim.load_scenario("mixtral-8x7b-h100-serve-spec", ["placement.redundant_experts=2",
                                                             "workload.arrival.n_requests=8"])
    assert drafter_scenario(s).placement.redundant_experts == 0
    r = moesim.simulate(s, seed=0)
    assert r.summary["output_tokens_per_s"] > 0 and r.summary["spec_tokens_per_step"] > 1
    mtp = moesim.load_scenario("deepseek-v3-h200-serve", ["workload.speculative={method: mtp, k: 1, acceptance: 0.8}",
                                                         "placement.redundant_experts=8"])
    assert drafter_scenario(mtp).placement.redundant_experts == 8
