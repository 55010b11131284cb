"""Two-batch overlap (TBO) in serving: closed forms, speed-ups where they are due, and consistency."""

from __future__ import annotations

import numpy as np
import pytest

import moesim
from moesim.costmodel import build_cost_model
from moesim.engine.serving.decode_cost import IterationCost
from moesim.engine.serving.overlap import moe_layers_s, period_s
from moesim.resolve import deep_merge
from tests.conftest import ROOT


def _cost(scenario: str, tbo: bool, ep: int = 8, alltoall: str = "deepep_normal", max_tokens: int = 8192,
          **sections) -> IterationCost:
    base = moesim.load_scenario(ROOT / "scenarios" / scenario)
    raw = deep_merge(base.model_dump(mode="json", exclude_none=True),
                     {"plan": {"dp": 8, "tp": 1, "ep": ep, "alltoall": alltoall, "overlap_alltoall": tbo}, **sections})
    s = moesim.scenario_from_dict(raw)
    return IterationCost(s, build_cost_model(s.hardware), np.random.default_rng([0, 1]), max_tokens)


MIXTRAL, DEEPSEEK = "mixtral-8x7b-h100-serve.yaml", "deepseek-v3-h200-serve.yaml"


def _decode(n: int, context: int = 1000) -> tuple[np.ndarray, np.ndarray]:
    return np.ones(n, dtype=np.int64), np.full(n, context, dtype=np.int64)


def _alternating(s1: float, d: float, s2s, c: float) -> float:
    """Reference: play two micro-batches piece by piece, compute A.s1 B.s1 A.s2 B.s2, comm A.d B.d A.c B.c."""
    free = [0.0, 0.0]  # compute, ep_comm
    ready = [0.0, 0.0]  # micro-batch A, B
    for s2 in s2s:
        for dur, stream in ((s1, 0), (d, 1), (s2, 0), (c, 1)):
            for mb in (0, 1):
                ready[mb] = free[stream] = max(ready[mb], free[stream]) + dur
    return max(ready)


def test_closed_form_matches_the_alternating_schedule():
    rng = np.random.default_rng(0)
    for _ in range(500):
        s1, d, s2, c = rng.exponential(1.0, 4) * rng.choice([0.01, 1.0, 100.0], 4)
        n = int(rng.integers(1, 30))
        assert moe_layers_s(s1, d, s2, c, n) == pytest.approx(_alternating(s1, d, [s2] * n, c), rel=1e-12)
        s2s = s2 * rng.exponential(1.0, n)  # skewed routing: every layer's expert time its own
        assert moe_layers_s(s1, d, s2s, c, n) == pytest.approx(_alternating(s1, d, s2s, c), rel=1e-12)
    # s1 = s2 = s, d = c = a: 2n alternating stages, the textbook 4n max(s, a) + min(s, a)
    assert moe_layers_s(1.0, 3.0, 1.0, 3.0, 5) == pytest.approx(4 * 5 * 3.0 + 1.0)
    assert period_s(10.0, 1.0, 10.0, 1.0) == 40.0  # compute-bound: both micro-batches' compute
    assert period_s(1.0, 1.0, 1.0, 10.0) == 22.0  # comm-bound: both combines dominate
    assert period_s(1.0, 10.0, 0.0, 0.0) == 21.0  # chain-bound: s1 + d, plus d waiting on an empty s2


@pytest.mark.parametrize("scenario", [MIXTRAL, DEEPSEEK])
@pytest.mark.parametrize("alltoall", ["deepep_normal", "deepep_low_latency"])
def test_a_prefill_batch_runs_faster_with_tbo_but_never_faster_than_its_compute(scenario, alltoall):
    plain, tbo = _cost(scenario, False, alltoall=alltoall), _cost(scenario, True, alltoall=alltoall)
    q, kv = np.array([8192]), np.array([8192])
    t_plain, _ = plain.kernel_s(q, kv, 1)
    ep_plain = plain.last_comm_s[1]
    t_tbo, _ = tbo.kernel_s(q, kv, 1)
    assert ep_plain > 0
    assert t_tbo < t_plain
    assert t_tbo >= t_plain - ep_plain  # the compute alone (weights read twice cannot be cheaper)
    # most of the all-to-all hidden; what DeepEP's normal kernels' SMs cost the overlapped compute is exposed
    assert tbo.last_comm_s[1] < 0.1 * ep_plain + tbo.tbo.sm_slowdown * t_plain
    assert (tbo.tbo.sm_slowdown > 0) == (alltoall == "deepep_normal")


@pytest.mark.parametrize("scenario, alltoall", [(MIXTRAL, "deepep_normal"), (MIXTRAL, "deepep_low_latency"),
                                                (MIXTRAL, "flat"), (DEEPSEEK, "deepep_low_latency")])
def test_small_decode_batches_are_not_faster_with_tbo(scenario, alltoall):
    """Each micro-batch reads every weight again: at a few tokens (memory-bound) that costs more than
    the all-to-all it hides, as SGLang reports TBO only pays at larger batches."""
    plain, tbo = _cost(scenario, False, alltoall=alltoall, max_tokens=64), _cost(scenario, True, alltoall=alltoall,
                                                                               max_tokens=64)
    for n in (1, 2, 3, 4):
        q, kv = _decode(n)
        assert tbo.time_s(q, kv, n)[0] >= plain.time_s(q, kv, n)[0]
    q, kv = _decode(1)  # one token cannot be split: the plain iteration exactly
    assert tbo.time_s(q, kv, 1) == plain.time_s(q, kv, 1) and tbo.comm_s(1) == plain.comm_s(1)


def test_ep1_is_unchanged_exactly():
    off, on = _cost(MIXTRAL, False, ep=1, max_tokens=256), _cost(MIXTRAL, True, ep=1, max_tokens=256)
    assert on.tbo is None
    for n in (1, 2, 7, 64, 256):
        q, kv = _decode(n, 300 + n)
        assert on.time_s(q, kv, n) == off.time_s(q, kv, n)
        assert on.comm_s(n) == off.comm_s(n)
    q, kv = np.array([200, 1]), np.array([200, 900])  # a mixed batch
    assert on.time_s(q, kv, 2) == off.time_s(q, kv, 2)


@pytest.mark.parametrize("n", [2, 64, 512])
def test_tbo_iteration_is_consistent_with_its_parts(n):
    """GPU time = both micro-batches' compute (each a plain iteration of half the batch without its
    all-to-all) + the head and hand-offs once + the exposed all-to-all; spans fit in the iteration."""
    tbo, plain = _cost(MIXTRAL, True, max_tokens=1024), _cost(MIXTRAL, False, max_tokens=1024)
    q, kv = _decode(n)
    gpu, _ = tbo.kernel_s(q, kv, n)
    tp, ep, pp = tbo.last_comm_s
    assert 0 <= ep and tp + ep + pp <= gpu
    head = float(plain._head[n])
    hq, hkv = _decode(n // 2)
    half, _ = plain.kernel_s(hq, hkv, n // 2)
    half_compute = half - plain.last_comm_s[1] - float(plain._head[n // 2]) - plain.last_comm_s[2]
    # attention of half the sequences is priced as half of the whole batch's: same up to its efficiency curve
    assert gpu - ep - head - pp == pytest.approx(2 * half_compute, rel=0.01)
    # never slower than the two micro-batches one after the other, each with its all-to-all
    assert gpu <= 2 * (half_compute + plain.last_comm_s[1]) + head + pp + 1e-12
    # comm_s reports the exposed all-to-all (here at the expected load, without attention: at least as much)
    assert tbo.comm_s(n)[1] >= ep - 1e-12 and tbo.comm_s(n)[1] <= plain.comm_s(n)[1]


def test_tbo_under_skewed_routing_samples_each_layer():
    skew = {"routing": {"distribution": "zipf", "zipf_s": 1.2, "overflow": "dropless"}}
    tbo, plain = _cost(MIXTRAL, True, max_tokens=4096, **skew), _cost(MIXTRAL, False, max_tokens=4096, **skew)
    q, kv = np.array([4096]), np.array([4096])
    t_tbo = np.mean([tbo.kernel_s(q, kv, 1)[0] for _ in range(20)])
    t_plain = np.mean([plain.kernel_s(q, kv, 1)[0] for _ in range(20)])
    assert t_tbo < t_plain
    per_layer, _ = tbo.tbo.pool[4096]
    assert per_layer.shape == (8, tbo.s.model.n_moe_layers)
    # per-layer samples sum to the whole-iteration samples drawn from the same stream
    a = tbo.sample_expert_times(100, 4, per_layer=True)
    tbo.rng = np.random.default_rng([0, 1])
    first = tbo.sample_expert_times(100, 4, per_layer=True)[0].sum(axis=1)
    tbo.rng = np.random.default_rng([0, 1])
    np.testing.assert_allclose(tbo.sample_expert_times(100, 4)[0], first)
    assert a[0].shape == (4, tbo.s.model.n_moe_layers)


def test_serving_run_with_tbo_reports_less_alltoall():
    base = moesim.load_scenario(ROOT / "scenarios" / MIXTRAL)
    over = {"plan": {"dp": 8, "tp": 1, "ep": 8, "alltoall": "deepep_normal"},
            "workload": {"arrival": {"process": "poisson", "rate_per_s": 40.0, "n_requests": 60}}}
    runs = {}
    for tbo in (False, True):
        raw = deep_merge(base.model_dump(mode="json", exclude_none=True),
                         deep_merge(over, {"plan": {"overlap_alltoall": tbo}}))
        runs[tbo] = moesim.simulate(moesim.scenario_from_dict(raw), seed=0).summary
    assert runs[True]["alltoall_fraction"] < runs[False]["alltoall_fraction"]
    assert runs[True]["served_requests"] == runs[False]["served_requests"]


def test_low_latency_dispatch_holds_the_sms_under_overlap(monkeypatch):
    """DeepEP's low-latency send and receive kernels hold every SM (hook mode: only the transfer in
    flight is free), so under TBO they are compute-stream time: moved from the dispatch to the
    compute piece (the micro-batch's work is the same), never hidden, and scaled by the bytes sent."""
    from moesim.costmodel import comm

    assert comm.ll_dispatch_sm_s(128, 7168, 8) == pytest.approx(60e-6)
    assert comm.ll_dispatch_sm_s(256, 7168, 8) == pytest.approx(120e-6)
    assert comm.ll_dispatch_sm_s(128, 4096, 8) == pytest.approx(60e-6 * 4096 / 7168)

    q, kv = _decode(256, 2000)
    held = _cost(DEEPSEEK, True, alltoall="deepep_low_latency", max_tokens=512)
    monkeypatch.setattr(comm, "LL_DISPATCH_SM_S", 0.0)
    free = _cost(DEEPSEEK, True, alltoall="deepep_low_latency", max_tokens=512)
    a, b = held.tbo.pieces, free.tbo.pieces
    sm = a["moe"][256] - b["moe"][256]
    assert sm > 0
    assert a["dispatch"][256] == pytest.approx(b["dispatch"][256] - sm)
    assert held.time_s(q, kv, 256)[0] > free.time_s(q, kv, 256)[0]
