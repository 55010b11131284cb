"""Training-side communication physics (issue 12, "one cost graph"), each against a hand calculation.

ZeRO's reduce-scatters and parameter all-gathers; a cross-node DP ring over every NIC of the node;
all-to-all latency paid once, not per peer; full recompute's collectives booked as communication;
MFU against the bf16 peak; ``moesim check``'s serving FLOPs at the workload's mean context; the
hierarchical all-to-all's per-node deduplication of NIC bytes.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

import moesim
from moesim.accounting import flops_per_token
from moesim.check import summary
from moesim.costmodel import build_cost_model, cost_model
from moesim.costmodel.comm import (
    distinct_node_fraction,
    prefetched_wait_s,
    ring_allgather_s,
    ring_allreduce_s,
    ring_bus_gbps,
    ring_reduce_scatter_s,
)
from moesim.loader import load_scenario
from moesim.presets.hardware import HARDWARE
from moesim.resolve import deep_merge
from moesim.schemas import HardwareSpec
from moesim.schemas.workload import LengthDist
from tests.test_training import MOE as _TRAINING_MOE

ROOT = Path(__file__).resolve().parents[1]

# tests/test_training.py's 8-layer, 8-expert top-2 model on one 8-GPU H100 node, without pipeline.
MOE = {**_TRAINING_MOE, "name": "moe-comm", "plan": dict(dp=8, tp=1, pp=1, ep=4, microbatches=4, schedule="1f1b",
                                                                   moe_layer_host_us=0)}  # no host floor: these tests check the engine's other math (tests/test_train_host.py covers it)


def sim(**sections) -> dict:
    return moesim.simulate(moesim.scenario_from_dict(deep_merge(MOE, sections))).summary


def h100(nodes: int) -> HardwareSpec:
    h = HARDWARE["h100-sxm"]
    return HardwareSpec.model_validate({**h, "cluster": {**h["cluster"], "nodes": nodes}})


# ------------------------------------------------------------------ pure functions
def test_reduce_scatter_and_all_gather_are_each_half_a_ring_all_reduce():
    for n in (2, 8, 64):
        hand = (n - 1) / n * 1e9 / 50e9 + (n - 1) * 5e-6
        assert ring_reduce_scatter_s(1e9, n, 50.0, 5e-6) == pytest.approx(hand)
        assert ring_allgather_s(1e9, n, 50.0, 5e-6) == pytest.approx(hand)
        assert 2 * hand == pytest.approx(ring_allreduce_s(1e9, n, 50.0, 5e-6))


def test_prefetched_gather_waits_by_hand():
    # gathers 1, 3, 1 s feeding blocks of 2 s: the first waits 1 s, the second 3 - 2 = 1 s, the third 0
    np.testing.assert_allclose(prefetched_wait_s([1, 3, 1], [2, 2, 2]), [1, 1, 0])
    # gathers longer than the blocks pile up behind each other: 1, 5 - 1, 5 - 1
    np.testing.assert_allclose(prefetched_wait_s([1, 5, 5], [1, 1, 1]), [1, 4, 4])
    np.testing.assert_allclose(prefetched_wait_s([1, 3, 1], [2, 2, 2], prefetch=False), [1, 3, 1])
    # the compute stream is busy until 10 s: the first gather is done by then; the second, issued at
    # 10 s, ends at 13 s, one second after the first block
    np.testing.assert_allclose(prefetched_wait_s([1, 3, 1], [2, 2, 2], compute_ready_s=10.0), [0, 1, 0])
    g, c = np.array([0.5, 0.7, 0.2, 0.9]), np.array([1.0, 0.3, 0.8, 0.4])  # gathers keep up:
    closed_form = g[0] + np.maximum(0.0, g[1:] - c[:-1]).sum()  # g_0 + sum max(0, g_j - c_{j-1})
    assert prefetched_wait_s(g, c).sum() == pytest.approx(closed_form)


# ------------------------------------------------------------------ item 7: DP ring over every NIC
def test_cross_node_dp_all_reduce_runs_one_ring_per_nic():
    """2 nodes x 8 H100, DP16, 1 GB: 8 rings, one per 400 Gb/s NIC, so the bus bandwidth per GPU is
    8 x 50 = 400 GB/s (under NVLink's 450), not one NIC's 50 GB/s."""
    cm = cost_model(h100(2))  # datasheet
    t = float(cm.allreduce_s(1e9, 16, 1))
    latency = 2 * 15 * 5e-6
    assert t == pytest.approx(2 * 15 / 16 * 1e9 / 400e9 + latency)  # 4.84 ms
    one_nic = 2 * 15 / 16 * 1e9 / 50e9 + latency  # 37.6 ms: the costing before
    assert t < one_nic / 7
    busbw = 2 * 15 / 16 * 1e9 / (t - latency) / 1e9
    # NVIDIA/nccl-tests#309: 2 x 8 H100 with 8 x 400G reach ~470 GB/s (NVLS tree), 4 nodes ~366
    assert 360 <= busbw <= 470
    # one member per node (DP strided by TP 8): each rank rings over its own NIC
    assert float(cm.allreduce_s(1e9, 2, 8)) == pytest.approx(1e9 / 50e9 + 2 * 5e-6)
    assert ring_bus_gbps(1, 450.0, 50.0) == 50.0 and ring_bus_gbps(8, 300.0, 50.0) == pytest.approx(300 * 8 / 7)


def test_cross_node_dp_sync_in_the_engine_uses_the_node_nics():
    """The engine's dense gradient all-reduces over DP16 on 2 nodes: one ring per NIC, at the
    shipped H100 profile's measured 8-rank NVLink ring (~338 GB/s) or 8 NICs (400 GB/s), the slower."""
    s = moesim.scenario_from_dict(deep_merge(MOE, {"hardware": {"cluster": {"nodes": 2}},
                                                   "plan": {"dp": 16, "ep": 1, "zero_stage": 0},
                                                   "workload": {"global_batch_seqs": 64}}))
    r = moesim.simulate(s)
    bw, lat = build_cost_model(s.hardware)._link(16, 1)
    assert 300 < bw <= 400  # 1 / max(7/(8 x 337.8), 1/400): NVLink-bound, 7x one NIC's 50 GB/s
    sp = r.spans
    dense = np.asarray(sp["kind"]) == "dp_sync_dense"
    dur = np.asarray(sp["end_s"])[dense] - np.asarray(sp["start_s"])[dense]
    nbytes = np.asarray(sp["bytes"])[dense]
    np.testing.assert_allclose(dur, 2 * 15 / 16 * nbytes / (bw * 1e9) + 30 * lat, rtol=1e-9)


# ------------------------------------------------------------------ item 4: all-to-all latency
def test_ep64_alltoall_of_tiny_messages_costs_about_one_message_latency():
    cm = cost_model(h100(8))  # 64 GPUs, datasheet
    p2p = float(cm.p2p_s(64.0, intra=False))  # 5 us + 64 B / 50 GB/s
    t = float(cm.alltoall_s(63 * 64.0, 64, 1))  # 64 B to each of 63 peers
    assert t < 1.1 * p2p  # peers are sent to concurrently
    assert t < 63 * p2p / 50  # not 63 x the p2p latency (315 us before)
    hier = float(cm.alltoall_s(63 * 64.0, 64, 1, "hierarchical"))
    assert hier == pytest.approx(63 * 64.0 / 450e9 + 2e-6 + 56 * 64.0 / 50e9 + 5e-6)


def test_full_recompute_books_its_rerun_collectives_as_communication():
    """Full recompute re-runs each layer's forward, collectives included: backward then holds the
    forward's all-to-alls and TP all-reduces twice (re-run + gradient), so the layers' grow by half
    (the embedding's TP all-reduce, forward and backward, is not recomputed)."""
    plan = {"tp": 2, "dp": 4, "ep": 4}
    none = sim(plan={**plan, "recompute": "none"})
    full = sim(plan={**plan, "recompute": "full"})
    assert none["alltoall_s"] > 0 and none["tp_comm_s"] > 0
    assert full["alltoall_s"] == pytest.approx(1.5 * none["alltoall_s"], rel=1e-9)
    tokens = 32 // (4 * 4) * 2048  # per microbatch
    embed_tp = 2 * 4 * float(build_cost_model(h100(1)).allreduce_s(tokens * 1024 * 2.0, 2, 1))
    assert full["tp_comm_s"] - none["tp_comm_s"] == pytest.approx(0.5 * (none["tp_comm_s"] - embed_tp), rel=1e-9)
    parts = full["compute_s"] + full["alltoall_s"] + full["tp_comm_s"] + full["pp_comm_s"] + full["bubble_s"]
    assert parts == pytest.approx(full["pipeline_s"], rel=1e-9)


# ------------------------------------------------------------------ item 3: ZeRO costs time
def test_zero1_reduce_scatter_plus_gather_is_one_all_reduce():
    z0, z1 = sim(plan={"zero_stage": 0}), sim(plan={"zero_stage": 1})
    assert z0["zero_gather_s"] == 0 and z0["zero_gather_exposed_s"] == 0
    assert z1["dp_sync_s"] == pytest.approx(z0["dp_sync_s"] / 2, rel=1e-9)  # reduce-scatter
    assert z1["zero_gather_s"] == pytest.approx(z0["dp_sync_s"] / 2, rel=1e-9)  # all-gather after the step
    assert 0 < z1["zero_gather_exposed_s"] < z1["zero_gather_s"]  # hidden behind the next forward
    assert z1["step_time_s"] == pytest.approx(z1["pipeline_s"] + z1["dp_sync_exposed_s"] + z1["optimizer_s"]
                                              + z1["zero_gather_exposed_s"], rel=1e-12)


def test_zero2_reduce_scatters_every_microbatch():
    z1, z2 = sim(plan={"zero_stage": 1}), sim(plan={"zero_stage": 2})
    assert z2["dp_sync_s"] == pytest.approx(4 * z1["dp_sync_s"], rel=1e-9)  # 4 microbatches
    assert z2["zero_gather_s"] == pytest.approx(z1["zero_gather_s"], rel=1e-9)


def test_zero3_step_exceeds_zero1_by_the_extra_all_gathers():
    """One microbatch, no overlap: ZeRO-1 = P + RS1 + opt + AG1; ZeRO-3 = (P + AG3_fwd + AG3_bwd) + RS3 + opt.
    ZeRO-1 reduces and gathers each group's parameters in one bucket (buckets.py), ZeRO-3 one layer at a
    time: the same bytes with a latency per layer more, D = AG3 - AG1 = RS3 - RS1. So ZeRO-3 is longer by
    AG1 + 3 D."""
    from tests.test_finetune import costs_of

    plan = {"microbatches": 1, "overlap_dp_comm": False}
    work = {"global_batch_seqs": 8}
    z1, z3 = sim(plan={**plan, "zero_stage": 1}, workload=work), sim(plan={**plan, "zero_stage": 3}, workload=work)
    g = z1["zero_gather_s"]
    assert g > 0 and z1["zero_gather_exposed_s"] == pytest.approx(g, rel=1e-9)
    c = costs_of(moesim.scenario_from_dict(deep_merge(MOE, {"plan": {**plan, "zero_stage": 1}, "workload": work})))
    layers_with = lambda b: int((b > 0).sum())  # noqa: E731
    d = ((layers_with(c.dp_dense_bytes) - 1) * c.dp_latency_s[0] + (layers_with(c.dp_expert_bytes) - 1) * c.dp_latency_s[1]) / 2
    assert d > 0
    assert z3["zero_gather_s"] == pytest.approx(2 * (g + d), rel=1e-9)  # forward and backward, per layer
    assert z3["zero_gather_exposed_s"] == pytest.approx(2 * (g + d), rel=1e-9)  # nothing overlaps
    assert z3["dp_sync_s"] == pytest.approx(z1["dp_sync_s"] + d, rel=1e-9)
    assert z3["step_time_s"] - z1["step_time_s"] == pytest.approx(g + 3 * d, rel=1e-6)
    assert z3["pipeline_s"] == pytest.approx(z1["pipeline_s"] + 2 * (g + d), rel=1e-9)
    parts = z3["compute_s"] + z3["alltoall_s"] + z3["tp_comm_s"] + z3["pp_comm_s"] + z3["bubble_s"]
    assert parts + z3["zero_gather_exposed_s"] == pytest.approx(z3["pipeline_s"], rel=1e-9)


def test_zero3_prefetch_hides_all_but_what_compute_cannot_cover():
    off = sim(plan={"zero_stage": 3, "overlap_dp_comm": False})
    on = sim(plan={"zero_stage": 3, "overlap_dp_comm": True})
    z1 = sim(plan={"zero_stage": 1, "overlap_dp_comm": True})
    assert on["zero_gather_s"] == pytest.approx(off["zero_gather_s"])
    assert off["zero_gather_exposed_s"] == pytest.approx(off["zero_gather_s"])
    assert 0 < on["zero_gather_exposed_s"] < 0.5 * on["zero_gather_s"]
    assert on["step_time_s"] > z1["step_time_s"]  # ZeRO-3 is not free


# ------------------------------------------------------------------ item 8: MFU convention
def test_mfu_is_against_the_bf16_peak_and_mfu_dtype_peak_against_the_compute_dtype():
    s = moesim.scenario_from_dict(deep_merge(MOE, {"model": {"dtype": "fp8"}}))
    sm = moesim.simulate(s).summary
    flops = sm["model_tflops_per_device"] * 1e12
    assert sm["compute_dtype"] == "fp8"
    assert sm["mfu"] == pytest.approx(flops / 989.4e12)
    assert sm["mfu_dtype_peak"] == pytest.approx(flops / 1978.9e12)
    bf16 = sim()
    assert bf16["mfu"] == pytest.approx(bf16["mfu_dtype_peak"])
    fp32 = moesim.simulate(moesim.scenario_from_dict(deep_merge(MOE, {
        "model": {"dtype": "fp32"}, "hardware": {"preset": "a100-80gb"}}))).summary
    a100 = HARDWARE["a100-80gb"]["device"]["peak_tflops"]
    assert fp32["mfu_dtype_peak"] / fp32["mfu"] == pytest.approx(a100["bf16"] / a100["fp32"])


def test_check_prices_serving_flops_at_the_mean_context():
    s = load_scenario(ROOT / "scenarios" / "mixtral-8x7b-h100-serve.yaml",
                      ["workload.prompt_tokens.value=1000", "workload.output_tokens.value=200"])
    got = summary(s)["flops_per_token"]
    assert got == pytest.approx(flops_per_token(s.model, context_tokens=1000 + 200 / 2))
    assert got < flops_per_token(s.model)  # at max_seq_len (32768): what it printed before
    train = load_scenario(ROOT / "scenarios" / "mixtral-8x7b-h100-train.yaml")
    assert summary(train)["flops_per_token"] == pytest.approx(flops_per_token(train.model, train.workload.seq_len))


def test_mean_length_of_each_distribution():
    assert LengthDist(dist="fixed", value=7).mean_tokens(0.0) == 7
    assert LengthDist(dist="uniform", low=10, high=30).mean_tokens(0.0) == 20
    ln = LengthDist(dist="lognormal", median=100, sigma=1.0)
    assert ln.mean_tokens(0.0) == pytest.approx(100 * math.exp(0.5))
    clipped = LengthDist(dist="lognormal", median=100, sigma=1.0, max=150)
    x = np.minimum(np.random.default_rng(0).lognormal(math.log(100), 1.0, 400_000), 150)
    assert clipped.mean_tokens(0.0) == pytest.approx(x.mean(), rel=3e-3)
    assert LengthDist(dist="trace").mean_tokens(5.0) == 5.0
    assert LengthDist(dist="trace").mean_tokens(5.0, np.array([1, 2, 6])) == 3.0


# ------------------------------------------------------------------ hierarchical all-to-all: per-node dedup
def _monte_carlo_node_fraction(E: int, N: int, k: int, tokens: int, rng) -> float:
    """Distinct remote nodes over remote assignments per token, by sampling: ``k`` of ``E`` experts
    without replacement, expert ``x`` on node ``x // (E/N)``, the token on node 0."""
    picks = np.argsort(rng.random((tokens, E)), axis=1)[:, :k]
    nodes = picks // (E // N)
    remote = (nodes != 0).sum()
    distinct = sum(int((nodes == n).any(axis=1).sum()) for n in range(1, N))
    return distinct / remote


@pytest.mark.parametrize("E, N, k", [(256, 8, 8), (64, 4, 2), (8, 2, 2), (160, 4, 6), (16, 8, 4), (32, 4, 8)])
def test_distinct_node_fraction_matches_a_monte_carlo_estimate(E, N, k):
    """N p / k with p = 1 - C(E - E/N, k) / C(E, k): DeepSeek-V3's 256 experts top-8 over 8 nodes
    cross the NIC 0.66 times per remote assignment."""
    mc = _monte_carlo_node_fraction(E, N, k, 40_000, np.random.default_rng(E + N + k))
    assert distinct_node_fraction(k, N, E) == pytest.approx(mc, abs=0.01)
    e = E // N
    hand = N * (1 - math.comb(E - e, k) / math.comb(E, k)) / k
    assert distinct_node_fraction(k, N, E) == pytest.approx(hand, rel=1e-12)
    assert distinct_node_fraction(k, N) == pytest.approx(N * (1 - (1 - 1 / N) ** k) / k)  # E -> infinity
    assert distinct_node_fraction(1, N, E) == 1.0  # one expert per token: nothing to share
    assert distinct_node_fraction(k, 1, E) == 1.0  # one node: no NIC


def test_hierarchical_alltoall_moves_fewer_nic_bytes_than_flat_when_tokens_share_destination_nodes():
    """EP64 on 8 nodes of 8 H100, 256 experts top-8: the hierarchical all-to-all sends each token
    once per distinct remote node, 0.66 of the flat all-to-all's NIC bytes; with top-1 the same."""
    cm = cost_model(h100(8))
    b = 1e9
    nvl_flat, nic_flat = cm.alltoall_split(b, 64, 1)
    assert (nvl_flat, nic_flat) == pytest.approx((b * 7 / 63, b * 56 / 63))
    nvl, nic = cm.alltoall_split(b, 64, 1, "hierarchical", top_k=8, n_experts=256)
    f = distinct_node_fraction(8, 8, 256)
    assert nic == pytest.approx(nic_flat * f) and f < 0.67
    assert nvl == b  # stage 1 regroups every byte inside the node
    assert cm.alltoall_split(b, 64, 1, "hierarchical", top_k=1, n_experts=256) == pytest.approx((b, nic_flat))
    assert cm.alltoall_split(b, 64, 1, "flat", top_k=8, n_experts=256) == (nvl_flat, nic_flat)  # flat: no dedup
    # Time: NIC-bound, so the deduplicated exchange is faster by about the saved bytes.
    t1 = float(cm.alltoall_s(b, 64, 1, "hierarchical"))
    t8 = float(cm.alltoall_s(b, 64, 1, "hierarchical", top_k=8, n_experts=256))
    nic_s = nic_flat / 50e9
    assert t1 - t8 == pytest.approx(nic_s * (1 - f), rel=1e-9)
    assert float(cm.alltoall_s(b, 64, 1, "hierarchical", top_k=1, n_experts=256)) == t1
    assert float(cm.alltoall_s(b, 64, 1, "flat", top_k=8, n_experts=256)) == float(cm.alltoall_s(b, 64, 1))


def test_training_summary_reports_the_deduplicated_nic_bytes():
    """EP8 over two 4-GPU nodes, 8 experts top-2: the summary's NIC bytes of the hierarchical
    all-to-all are the flat ones times 2 (1 - C(4,2)/C(8,2)) / 2 = 22/28; its NVLink bytes are all of them."""
    two_nodes = {"hardware": {"node": {"devices_per_node": 4}, "cluster": {"nodes": 2}}, "plan": {"dp": 8, "ep": 8}}
    flat = sim(**two_nodes)
    hier = sim(**deep_merge(two_nodes, {"plan": {"alltoall": "hierarchical"}}))
    assert flat["alltoall_nic_bytes"] > 0
    assert hier["alltoall_nic_bytes"] == pytest.approx(flat["alltoall_nic_bytes"] * 22 / 28, rel=1e-12)
    assert hier["alltoall_nvlink_bytes"] == pytest.approx(flat["alltoall_nvlink_bytes"] + flat["alltoall_nic_bytes"])
