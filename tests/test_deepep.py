"""DeepEP's two all-to-all modes (plan.alltoall: deepep_normal / deepep_low_latency) against the
published V1 kernel tables in moesim/data/deepep.csv (deepseek-ai/DeepEP docs/legacy.md @0297fc80).

Setup of every row: H800, NVLink 160 GB/s, one CX7 (50 GB/s) per GPU, 8 GPUs per node, hidden 7168,
top-8 of 256 experts. Fitted (moesim.costmodel.comm): DEEPEP_NVL_EFFICIENCY on DEEPEP-01,
DEEPEP_RDMA_EFFICIENCY on DEEPEP-03, DEEPEP_KERNEL_S on low-latency dispatch EP16 / EP64 / EP256;
every other row is held out.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from moesim.costmodel import comm
from moesim.costmodel.published import read_table
from moesim.schemas.plan import PlanSpec as Plan

CSV = Path(comm.__file__).resolve().parent.parent / "data" / "deepep.csv"
HIDDEN, TOP_K, N_EXPERTS, GPUS_PER_NODE = 7168, 8, 256, 8
NVL_GBPS, NIC_GBPS, NVL_LAT, NIC_LAT = 160.0, 50.0, 2e-6, 5e-6
FP8_NORMAL = HIDDEN * (1 + 4 / 128)  # FP8 payload + per-128 scales (DeepEP's tests' fp8 factor)
FP8_LL = HIDDEN + HIDDEN / 128 * 4 + 16  # low-latency message per (token, expert)
BF16 = HIDDEN * 2

NORMAL_TOL = 0.05  # bottleneck bandwidth, fit and held-out rows
LL_TOL = 0.05  # low-latency dispatch latency
LL_COMBINE_TOL = 0.10  # low-latency combine latency (all held out)


def _rows():
    return read_table(CSV)


def _t(algorithm, tokens, ep, token_bytes):
    b = tokens * TOP_K * token_bytes * (ep - 1) / ep
    return float(comm.alltoall_s(b, ep, 1, GPUS_PER_NODE, NVL_GBPS, NVL_LAT, NIC_GBPS, NIC_LAT, algorithm,
                                 top_k=TOP_K, n_experts=N_EXPERTS))


def _normal_bw_gbps(ep, tokens=4096, token_bytes=FP8_NORMAL):
    """DeepEP's 'bottleneck bandwidth' of the modelled kernel: its logical bytes over the model's time."""
    if ep <= GPUS_PER_NODE:  # tokens received per rank (distinct ranks, self included)
        units = ep * comm.distinct_node_fraction(TOP_K, ep, N_EXPERTS) * TOP_K / ep
    else:  # distinct (token, node) pairs, own node included
        units = TOP_K * comm.distinct_node_fraction(TOP_K, ep // GPUS_PER_NODE, N_EXPERTS)
    return tokens * units * token_bytes / _t("deepep_normal", tokens, ep, token_bytes) / 1e9


def test_csv_records_sources_and_splits():
    rows = _rows()
    assert len(rows) == 20
    assert all("@0297fc801788b14b338a46554faca28d419e518a" in r["source"] for r in rows)
    assert {r["split"] for r in rows} == {"fit", "holdout"}
    assert sum(r["split"] == "fit" for r in rows) == 5


@pytest.mark.parametrize("row", [r for r in _rows() if r["kernel"] == "normal"], ids=lambda r: r["id"])
def test_normal_reproduces_bottleneck_bandwidth(row):
    ep = int(row["ep"])
    token_bytes = FP8_NORMAL if row["dtype"] == "fp8" else BF16
    pred = _normal_bw_gbps(ep, int(row["tokens_per_rank"]), token_bytes)
    assert pred == pytest.approx(float(row["value"]), rel=NORMAL_TOL)


def test_normal_matches_dev_points():
    dev = Path(__file__).resolve().parents[2] / "shared" / "validation" / "dev_points.csv"
    if not dev.exists():
        pytest.skip("shared validation points not present")
    with open(dev, newline="") as f:
        rows = {r["id"]: r for r in csv.DictReader(f) if r["id"].startswith("DEEPEP-0")}
    assert len(rows) == 4
    for row in rows.values():
        ep = int(row["parallelism"].removeprefix("EP"))
        assert _normal_bw_gbps(ep) == pytest.approx(float(row["value"]), rel=NORMAL_TOL), row["id"]


@pytest.mark.parametrize("row", [r for r in _rows() if r["kernel"] == "low_latency"], ids=lambda r: r["id"])
def test_low_latency_reproduces_latency(row):
    ep = int(row["ep"])
    dispatch = row["direction"] == "dispatch"
    pred_us = _t("deepep_low_latency", int(row["tokens_per_rank"]), ep, FP8_LL if dispatch else BF16) * 1e6
    assert pred_us == pytest.approx(float(row["value"]), rel=LL_TOL if dispatch else LL_COMBINE_TOL)


def test_low_latency_grows_with_ep_then_flattens():
    eps = [8, 16, 32, 64, 128, 256]
    t = np.array([_t("deepep_low_latency", 128, ep, FP8_LL) for ep in eps])
    assert np.all(np.diff(t) > 0)
    # Published: 77 -> 118 us from EP8 to EP16, 192 -> 194 us from EP128 to EP256.
    assert t[1] / t[0] > 1.4
    assert t[-1] / t[-2] < 1.05
    # Large EP is NIC-bound: the table's derived RDMA bandwidth approaches 39 GB/s.
    assert 128 * TOP_K * FP8_LL / t[-1] / 1e9 == pytest.approx(39, rel=LL_TOL)


@pytest.mark.parametrize("ep", [16, 64, 256])
def test_low_latency_wins_small_batches_loses_large(ep):
    assert _t("deepep_low_latency", 8, ep, FP8_LL) < _t("deepep_normal", 8, ep, FP8_NORMAL)
    assert _t("deepep_low_latency", 4096, ep, FP8_LL) > _t("deepep_normal", 4096, ep, FP8_NORMAL)


def test_low_latency_moves_flat_bytes_normal_dedups():
    b = 4096 * TOP_K * FP8_NORMAL * 63 / 64
    flat = comm.alltoall_link_bytes(b, 64, 1, 8, "flat", TOP_K, N_EXPERTS)
    ll = comm.alltoall_link_bytes(b, 64, 1, 8, "deepep_low_latency", TOP_K, N_EXPERTS)
    hier = comm.alltoall_link_bytes(b, 64, 1, 8, "hierarchical", TOP_K, N_EXPERTS)
    normal = comm.alltoall_link_bytes(b, 64, 1, 8, "deepep_normal", TOP_K, N_EXPERTS)
    assert np.allclose(ll, flat)
    assert normal[1] == pytest.approx(hier[1])  # node dedup on the NIC, as hierarchical
    assert normal[0] < b  # rank dedup on NVLink


def test_zero_bytes_and_single_rank_cost_nothing():
    for alg in comm.DEEPEP_ALGORITHMS:
        assert float(comm.alltoall_s(0.0, 64, 1, 8, NVL_GBPS, NVL_LAT, NIC_GBPS, NIC_LAT, alg, top_k=8)) == 0.0
        assert float(comm.alltoall_s(1e6, 1, 1, 8, NVL_GBPS, NVL_LAT, NIC_GBPS, NIC_LAT, alg, top_k=8)) == 0.0


def test_default_stays_flat():
    assert Plan().alltoall == "flat"
    b = 1e8
    args = (b, 64, 1, 8, NVL_GBPS, NVL_LAT, NIC_GBPS, NIC_LAT)
    flat = float(comm.alltoall_s(*args))
    assert flat == pytest.approx(max(b * 7 / 63 / 160e9 + NVL_LAT, b * 56 / 63 / 50e9 + NIC_LAT))
    assert Plan(alltoall="deepep_normal").alltoall == "deepep_normal"
    assert Plan(alltoall="deepep_low_latency").alltoall == "deepep_low_latency"
