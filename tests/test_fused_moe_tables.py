"""Serving's routed-expert time of one MoE layer against published fused-MoE kernel timings
(moesim/data/fused_moe.csv: vLLM's benchmark_moe.py and SGLang's fused-MoE tuning script, one GPU,
M tokens, both expert GEMMs with their routing and activation)."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest

from moesim.costmodel import build_cost_model
from moesim.costmodel.fused_moe import FUSED_MOE_FIXED_US, fused_moe_fixed_us
from moesim.costmodel.published import read_table
from moesim.engine.ops import block_ops, op_s
from moesim.engine.serving.decode_cost import IterationCost
from moesim.loader import scenario_from_dict

DATA = Path(__file__).resolve().parent.parent / "moesim" / "data" / "fused_moe.csv"
PRESET = {"H100": "h100-sxm", "H200": "h200", "A100-SXM4-80GB": "a100-80gb"}
DTYPE = {"bf16": "bf16", "fp8_w8a8": "fp8", "fp8 block [128,128]": "fp8"}
# Tables timed on an eager microbenchmark with a ~180 us (Gemma4) or ~840 us (HunyuanImage, 16 of
# its experts per GPU under EP) floor that no batch moves: not the fused-MoE kernels' own time at the
# batches these tests hold (Gemma4's rows past its floor have a test of their own, below).
NOT_KERNEL_TIME = ("Gemma4", "Hunyuan")
#: The op graph's kernels a fused-MoE benchmark times besides the routed experts.
ROUTING_OPS = ("router_topk", "permute", "unpermute")


def tables() -> dict[tuple, list[tuple[int, float]]]:
    """Published rows by (gpu, model, d_model, intermediate, experts, top_k, tp, dtype): (tokens, us)."""
    out = defaultdict(list)
    for r in read_table(DATA):
        if r["gpu"] in PRESET and r["dtype"] in DTYPE and r["tp"] and not any(x in r["model"] for x in NOT_KERNEL_TIME):
            key = (r["gpu"], r["model"], int(r["d_model"]), int(r["moe_intermediate"]), int(r["n_experts"]),
                   int(r["top_k"]), int(r["tp"]), DTYPE[r["dtype"]])
            out[key].append((int(r["batch_tokens"]), float(r["kernel_us"])))
    return out


def layer_us(key: tuple, tokens: list[int]) -> dict[int, float]:
    """moesim's microseconds of what the benchmark times, one layer on one TP rank at each token
    count: the routed experts (with the fused layer's fixed latency) and the routing kernels around
    them (top-k, permute, un-permute; the router's GEMM is not in the benchmark)."""
    gpu, _, d, inter, experts, top_k, tp, dtype = key
    model = dict(name="m", n_layers=2, d_model=d, n_heads=16, n_kv_heads=4, head_dim=128, vocab_size=32000,
                 ffn_hidden=4 * d, expert_ffn_hidden=inter, n_experts=experts, top_k=top_k, gated_ffn=True,
                 max_seq_len=8192, dtype=dtype)
    # a kernel benchmark's few milliseconds run at the device's benchmark clock: no sustained-load share
    burst = {"sustained_compute_fraction": 1.0, "sustained_fp4_fraction": None}
    s = scenario_from_dict({"name": "k", "model": model,
                            "hardware": {"preset": PRESET[gpu], "device": burst, "node": {"devices_per_node": tp}},
                            "plan": {"tp": tp}, "workload": {"kind": "serving", "prompt_tokens": {"dist": "fixed", "value": 8},
                                                             "output_tokens": {"dist": "fixed", "value": 8}}})
    cm = build_cost_model(s.hardware)
    cost = IterationCost(s, cm, np.random.default_rng(0), max_tokens=max(tokens))
    t = np.array(tokens, dtype=float)
    experts, _ = cost.uniform_experts_s(t)
    one = np.ones(1)
    routing = sum(op_s(cm, op) for op in block_ops(cost.dims, cost.dtypes, True, t, one, one, expert_tokens=one)
                  if op.name in ROUTING_OPS)
    return dict(zip(tokens, (experts / s.model.n_moe_layers * 1e6 + routing * 1e6).tolist()))


@pytest.fixture(scope="module")
def errors() -> dict[str, list[float]]:
    """Relative errors (moesim / published - 1) at decode batches of 8-512 tokens; microseconds
    published less moesim at 1-2 tokens (Hopper tables)."""
    out = {"mid": [], "tiny_us": []}
    for key, rows in tables().items():
        pred = layer_us(key, sorted({m for m, _ in rows}))
        for m, us in rows:
            if 8 <= m <= 512:
                out["mid"].append(pred[m] / us - 1)
            elif m <= 2 and key[0] != "A100-SXM4-80GB":
                out["tiny_us"].append(us - pred[m])
    return out


def test_the_tables_cover_several_gpus_shapes_and_dtypes():
    keys = tables()
    assert len(keys) >= 6
    assert {k[0] for k in keys} >= {"H100", "H200", "A100-SXM4-80GB"} and {k[-1] for k in keys} == {"bf16", "fp8"}
    assert {k[6] for k in keys} >= {1, 2, 8}  # experts whole and sliced by TP


def test_decode_batches_agree(errors):
    """8-512 tokens (many experts with a few tokens each): a grouped kernel runs all their tiles at
    once, so the call prices as one wide GEMM, not as one small GEMM per expert (which read these
    rows 46 % slow at the median)."""
    e = np.abs(errors["mid"])
    assert len(e) >= 50
    assert np.median(e) <= 0.10 and np.percentile(e, 75) <= 0.25


def test_the_tiniest_batches_fit_the_fixed_latency(errors):
    """At 1-2 tokens the weights read are few and the layer's fixed latency shows:
    FUSED_MOE_FIXED_US is the median of what the published times leave over moesim's price without
    it, so with it the median residual is ~0."""
    r = np.array(errors["tiny_us"])
    assert len(r) >= 15
    assert abs(np.median(r)) <= 1.0 and np.percentile(np.abs(r), 90) <= 12.0


def floor_table_rows() -> list[tuple[str, int, float, float]]:
    """The Gemma4 table's rows whose kernel outgrows its eager floor: (config, tokens, published us, moesim us).

    vLLM PR #44818 times 128 experts of 704 (top-8, BF16, H200, default and tuned configs) in a
    harness whose 1-8-token times sit at ~185-205 us, a floor no batch below moves: a floor under the
    kernel (the host's loop), not a cost added to it. Where the published time clears that floor by a
    quarter (16 tokens and more) the kernel is what is timed; the 1,024-4,096-token rows, where moesim
    reads 16-38 % short (``bench/bench_fused_moe_tables.py``, docs/validation-misses.md), are left to the
    bench, as the other tables' are."""
    rows = [r for r in read_table(DATA) if "Gemma4" in r["model"]]
    floor_us = min(float(r["kernel_us"]) for r in rows)
    key = ("H200", "Gemma4", 2816, 704, 128, 8, 1, "bf16")
    kept = [r for r in rows if float(r["kernel_us"]) >= 1.25 * floor_us and int(r["batch_tokens"]) <= 512]
    pred = layer_us(key, sorted({int(r["batch_tokens"]) for r in kept}))
    return [(r["config"], int(r["batch_tokens"]), float(r["kernel_us"]), pred[int(r["batch_tokens"])]) for r in kept]


def test_a_tuned_bf16_h200_table_agrees_once_past_its_floor():
    """Held out of the fit of FUSED_MOE_FIXED_US and of every constant: Gemma4's experts (K 2,816 and
    704) on an H200, both configs, 16-512 tokens."""
    rows = floor_table_rows()
    assert {c for c, *_ in rows} == {"default", "tuned"} and len(rows) >= 16
    assert min(m for _, m, _, _ in rows) == 16  # 1-8 tokens sit on the floor and are out
    errors = np.array([pred / us - 1 for _, _, us, pred in rows])
    assert np.all(np.abs(errors) <= 0.12) and abs(np.median(errors)) <= 0.06


def test_the_fixed_latency_is_cuda_only():
    assert fused_moe_fixed_us("cuda") == FUSED_MOE_FIXED_US > 0
    assert fused_moe_fixed_us("mps") == 0.0 and fused_moe_fixed_us("cpu") == 0.0
