"""Expert load balancing (EPLB): redundant copies of hot experts, split loads, schema and engines."""

from __future__ import annotations

import numpy as np
import pytest

import moesim
from moesim.cli import main
from moesim.costmodel import build_cost_model
from moesim.engine.placement import Placement
from moesim.engine.routing import sample_routing
from moesim.engine.serving.decode_cost import IterationCost
from moesim.memory import memory_report, weight_params_per_device
from moesim.resolve import deep_merge
from moesim.schemas import RoutingSpec
from tests.conftest import ROOT


def zipf_popularity(n_layers: int, n_experts: int, s: float, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    w = np.arange(1, n_experts + 1, dtype=float) ** -s
    p = np.stack([w[rng.permutation(n_experts)] for _ in range(n_layers)])
    return p / p.sum(axis=-1, keepdims=True)


@pytest.mark.parametrize("n_experts, ep, n_red", [(256, 144, 32), (256, 64, 64), (64, 8, 8), (8, 8, 8)])
def test_eplb_lowers_max_over_mean_on_a_zipf_layer_and_never_loses_tokens(n_experts, ep, n_red):
    pop = zipf_popularity(4, n_experts, 1.0)
    loads = np.random.default_rng(1).multinomial(4096 * 8, pop[:, None, :].repeat(3, axis=1))  # [L, M, E]
    eplb = Placement.balanced(pop, ep, n_red)
    assert eplb.experts_per_rank == (n_experts + n_red) // ep and eplb.redundant_experts == n_red
    split = eplb.split(loads, layer_axis=0)
    assert split.shape == (4, 3, ep, eplb.experts_per_rank)
    np.testing.assert_allclose(split.sum(axis=(-1, -2)), loads.sum(axis=-1), rtol=1e-12)
    np.testing.assert_allclose(eplb.per_rank(loads, layer_axis=0).sum(axis=-1), loads.sum(axis=-1), rtol=1e-12)
    # every expert keeps a slot in every layer; the copies add up to the slots
    assert (eplb.copies >= 1).all() and (eplb.copies.sum(axis=-1) == n_experts + n_red).all()
    # the loads' axes may come in another order (serving: [samples, layers, E])
    swapped = eplb.split(loads.transpose(1, 0, 2), layer_axis=1)
    np.testing.assert_allclose(swapped, split.transpose(1, 0, 2, 3))
    if n_experts % ep == 0:  # 256 over 144 has no layout without copies
        base = Placement.contiguous(n_experts, ep)
        assert eplb.imbalance(loads, layer_axis=0).mean() < base.imbalance(loads).mean()
        assert eplb.imbalance(pop, layer_axis=0).mean() < base.imbalance(pop).mean()


def test_greedy_gives_each_extra_slot_to_the_highest_load_per_copy():
    pop = np.array([[0.5, 0.2, 0.2, 0.1]])
    p = Placement.balanced(pop, 2, 2)  # 6 slots: 0.5 -> 2 copies (0.25), then 0.25 vs 0.2: expert 0 again
    np.testing.assert_array_equal(p.copies, [[3, 1, 1, 1]])
    per_rank = p.per_rank(pop)
    np.testing.assert_allclose(per_rank.sum(), 1.0)
    assert per_rank.max() / per_rank.mean() < 1.1  # contiguous: 0.7 / 0.5 = 1.4
    assert p.experts_per_rank == 3 and set(p.rank_of().tolist()) <= {0, 1}


def test_no_redundant_experts_is_the_contiguous_layout():
    pop = zipf_popularity(3, 16, 1.2)
    p = Placement.balanced(pop, 4, 0)
    assert p == Placement.contiguous(16, 4) and p.slot_expert is None and p.redundant_experts == 0
    spec = RoutingSpec(distribution="zipf", zipf_s=1.2, overflow="dropless")
    a = sample_routing(spec, 3, 16, 2, 4, 4096, 2, np.random.default_rng(3))
    b = sample_routing(spec, 3, 16, 2, 4, 4096, 2, np.random.default_rng(3), redundant_experts=0)
    np.testing.assert_array_equal(a.compute_tokens, b.compute_tokens)
    assert a.compute_tokens.dtype == b.compute_tokens.dtype


@pytest.mark.parametrize("overflow", ["dropless", "drop"])
def test_routing_sample_with_replicas_keeps_every_token(overflow):
    spec = RoutingSpec(distribution="zipf", zipf_s=1.0, overflow=overflow)
    r = sample_routing(spec, 3, 16, 2, 4, 4096, 2, np.random.default_rng(3), redundant_experts=4)
    assert r.compute_tokens.shape == (3, 2, 4, 5)
    if overflow == "dropless":
        np.testing.assert_allclose(r.rank_tokens.sum(axis=-1), r.loads.sum(axis=-1))
    else:  # padded: every expert's capacity, shared by its copies
        np.testing.assert_allclose(r.rank_tokens.sum(axis=-1), r.capacity * 16)
    base = sample_routing(spec, 3, 16, 2, 4, 4096, 2, np.random.default_rng(3))
    np.testing.assert_array_equal(base.loads, r.loads)  # same draws: only the layout differs
    if overflow == "dropless":
        assert r.rank_tokens.max(axis=-1).mean() < base.rank_tokens.max(axis=-1).mean()


# ---------------------------------------------------------------- schema
def _deepseek_ep144(n_red: int, ep: int = 144) -> dict:
    return {
        "name": "ds-ep144",
        "model": {"preset": "deepseek-v3"},
        "hardware": {"preset": "h800", "cluster": {"nodes": 18}},
        "plan": {"dp": 144, "tp": 1, "pp": 1, "ep": ep},
        "workload": {"kind": "serving", "arrival": {"process": "batch", "n_requests": 10},
                     "prompt_tokens": {"dist": "fixed", "value": 128},
                     "output_tokens": {"dist": "fixed", "value": 16}},
        "placement": {"redundant_experts": n_red},
    }


def test_ep_dividing_n_experts_plus_redundant_is_accepted():
    s = moesim.scenario_from_dict(_deepseek_ep144(32))  # 256 + 32 = 288 = 2 x 144
    assert s.placement.redundant_experts == 32
    with pytest.raises(moesim.InputError, match=r"plan.ep = 144: must divide model.n_experts \(256\)"):
        moesim.scenario_from_dict(_deepseek_ep144(0))


@pytest.mark.parametrize("value, needle", [
    ("-1", "placement.redundant_experts = -1"),
    ("300", "placement.redundant_experts = 300: must be at most model.n_experts (256); allowed: 0 to 256"),
    ("3", "plan.ep = 64: must divide model.n_experts + placement.redundant_experts (256 + 3 = 259)"),
])
def test_bad_redundant_experts_is_one_line(value, needle, capsys):
    code = main(["check", str(ROOT / "scenarios" / "deepseek-v3-h100-train.yaml"),
                 "--set", f"placement.redundant_experts={value}"])
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert code == 2 and len(lines) == 1 and needle in lines[0], err
    assert "Traceback" not in err


def test_each_rank_holds_its_slots_weights():
    s = moesim.scenario_from_dict(_deepseek_ep144(32))
    dense, experts = weight_params_per_device(s.model, s.plan, 32)
    _, plain = weight_params_per_device(s.model, s.plan)
    assert experts == pytest.approx(plain * 288 / 256)
    raw = _deepseek_ep144(32, ep=16) | {"placement": {"redundant_experts": 0}}
    without = moesim.scenario_from_dict(raw)
    with_copies = moesim.scenario_from_dict(raw | {"placement": {"redundant_experts": 16}})  # 272 = 17 x 16
    assert memory_report(with_copies).total_gib > memory_report(without).total_gib


# ---------------------------------------------------------------- engines
def _train(n_red: int):
    s = moesim.load_scenario(ROOT / "scenarios" / "mixtral-8x7b-h100-train.yaml",
                             ["routing.overflow=dropless", "routing.zipf_s=1.0", "model.n_layers=4",
                              f"placement.redundant_experts={n_red}"])
    return moesim.simulate(s).summary


def test_training_step_with_eplb_under_zipf_is_no_slower():
    plain, eplb = _train(0), _train(8)
    assert eplb["expert_load_imbalance"] < plain["expert_load_imbalance"]
    assert eplb["step_time_s"] <= plain["step_time_s"]
    assert eplb["straggler_wait_s"] < plain["straggler_wait_s"]
    assert eplb["peak_memory_gib"] > plain["peak_memory_gib"]  # twice the expert weights per rank


def _serving_cost(n_red: int, distribution: str = "zipf") -> IterationCost:
    base = moesim.load_scenario(ROOT / "scenarios" / "mixtral-8x7b-h100-serve.yaml")
    raw = deep_merge(base.model_dump(mode="json", exclude_none=True),
                     {"plan": {"ep": 8}, "placement": {"redundant_experts": n_red},
                      "routing": {"distribution": distribution, "zipf_s": 1.0}})
    s = moesim.scenario_from_dict(raw)
    return IterationCost(s, build_cost_model(s.hardware), np.random.default_rng([0, 1]), 64)


def test_serving_expert_time_and_imbalance_fall_with_eplb():
    plain, eplb = _serving_cost(0), _serving_cost(8)
    assert eplb.placement.experts_per_rank == 2
    assert eplb.layer_imbalance.mean() < plain.layer_imbalance.mean()
    t_plain = plain.sample_expert_times(256, 16)[0].mean()
    t_eplb = eplb.sample_expert_times(256, 16)[0].mean()
    assert t_eplb < t_plain


def test_uniform_serving_with_replicas_reads_more_expert_weights():
    """Under uniform routing copies only spread each rank's tokens over more (half-loaded) experts:
    the rank routes the same tokens but reads up to twice the expert weights (decode is memory-bound)."""
    plain, eplb = _serving_cost(0, "uniform"), _serving_cost(8, "uniform")
    assert plain.layer_imbalance.mean() == eplb.layer_imbalance.mean() == 1.0
    t = np.array([1.0, 64.0])
    assert np.all(eplb.uniform_experts_s(t)[0] >= plain.uniform_experts_s(t)[0])


def test_knee_batch_runs_on_a_per_layer_replicated_layout():
    from moesim.engine.serving.knee import knee_batch

    assert knee_batch(_serving_cost(8)) >= 1
