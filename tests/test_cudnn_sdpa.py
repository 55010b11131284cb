"""Training attention on Blackwell and Hopper against cuDNN's 2026 SDPA benchmark (held out).

moesim has no Blackwell attention table: the gb200-nvl72 preset prices training attention at the
H100 cuDNN table's fraction of peak (costmodel/flash_attention.py). cudnn-frontend's own training
benchmark timed the same kernel on a GB200 and an H200 (moesim/data/cudnn_sdpa_2026.csv), so these
tests check that rebasing and say how far the table, read off 2024 figures, sits from 2026's cuDNN.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from moesim.costmodel import build_cost_model
from moesim.costmodel.attention_rate import FP8_WINDOW_BACKWARD_IS_FULL, fp8_attention_speedup
from moesim.costmodel.flash_attention import ATTN_BWD_FACTOR
from moesim.costmodel.published import read_table
from moesim.engine.local_attention import local_kv
from moesim.loader import scenario_from_dict
from moesim.presets import HARDWARE
from moesim.schemas import HardwareSpec

DATA = Path(__file__).resolve().parent.parent / "moesim" / "data" / "cudnn_sdpa_2026.csv"
PRESET = {"GB200": "gb200-nvl72", "H200": "h200"}


def _all_rows() -> list[dict]:
    return read_table(DATA)


def _rows() -> list[dict]:
    """The held-out rows (the GB300 ones set the gb300 preset's attention rate: test_attention_rate.py)."""
    return [r for r in _all_rows() if r["use"] == "holdout"]


def _at_benchmark_clock(preset: str) -> HardwareSpec:
    """The preset as a short kernel benchmark runs it: before a power limit holds its clock down."""
    hw = dict(HARDWARE[preset])
    hw["device"] = dict(hw["device"], sustained_compute_fraction=1.0)
    return HardwareSpec(**hw)


@pytest.fixture(scope="module")
def priced() -> list[tuple[dict, float]]:
    """Each published row with moesim's seconds for the same call (one GPU, causal, BF16)."""
    models = {}
    for gpu, preset in PRESET.items():
        # priced at the clock a short benchmark runs at (the GB200 keeps 0.853 of it under sustained load)
        s = scenario_from_dict({"name": "sdpa", "model": {"preset": "mixtral-8x7b"},
                                "hardware": {"preset": preset, "node": {"devices_per_node": 1},
                                             "device": {"sustained_compute_fraction": 1.0}},
                                "workload": {"kind": "training", "global_batch_seqs": 8, "seq_len": 512}})
        models[gpu] = build_cost_model(s.hardware)
    out = []
    for r in _rows():
        cm = models[r["gpu"]]
        q = np.full(int(r["batch"]), float(r["seq_len"]))
        # moesim's attention FLOPs use one width for Q.K and P.V: their mean gives the same count
        head_dim = round((int(r["head_dim_qk"]) + int(r["head_dim_vo"])) / 2)
        fwd = float(cm.attention_batch_s(q, q, int(r["q_heads"]), head_dim, int(r["kv_heads"]), paged=False))
        launch = cm.attention_launch_s
        s = fwd if r["pass"] == "fwd" else (fwd - launch) * ATTN_BWD_FACTOR + launch
        out.append((r, s))
    return out


def test_the_table_holds_both_gpus_and_passes():
    rows = _rows()
    assert {r["gpu"] for r in rows} == set(PRESET)
    assert {r["pass"] for r in rows} == {"fwd", "bwd"}
    assert len(rows) >= 40 and all(float(r["time_ms"]) > 0 for r in rows)


def test_blackwell_is_rebased_as_cudnn_measured_it(priced):
    """For each shape timed on both GPUs, moesim's GB200-over-H200 time ratio against the measured
    one: the rebasing by peak that the gb200 preset does holds within 20 % on every shape and
    within 8 % at the median (measured: GB200 reaches a few percent less of its peak than H200)."""
    by = {(r["model"], r["gpu"], r["seq_len"], r["pass"]): (float(r["time_ms"]) * 1e-3, s) for r, s in priced}
    ratios = []
    for (model, gpu, seq, p), (meas, mo) in by.items():
        h = by.get((model, "H200", seq, p))
        if gpu != "GB200" or h is None:
            continue
        ratios.append((mo / h[1]) / (meas / h[0]) - 1.0)
    assert len(ratios) >= 12
    assert max(abs(x) for x in ratios) < 0.20
    assert abs(float(np.median(ratios))) < 0.08


@pytest.mark.parametrize("gpu", sorted(PRESET))
def test_forward_reads_slow_and_backward_close_against_2026_cudnn(priced, gpu):
    """The H100 table (cuDNN in the FlashAttention-3 paper, 2024) prices 2026's cuDNN forward slow
    at 4k-32k tokens on both GPUs (+6 to +40 %, medians near +20 %) and its backward within 25 %
    (medians within 10 %):
    Blackwell training rows that read fast (docs/validation-misses.md) do not get there through attention."""
    fwd = [s / (float(r["time_ms"]) * 1e-3) - 1.0 for r, s in priced
           if r["gpu"] == gpu and r["pass"] == "fwd" and int(r["seq_len"]) >= 4096]
    bwd = [s / (float(r["time_ms"]) * 1e-3) - 1.0 for r, s in priced if r["gpu"] == gpu and r["pass"] == "bwd"]
    assert fwd and bwd
    assert 0.10 < float(np.median(fwd)) < 0.30
    assert all(x > 0.0 for x in fwd)
    assert abs(float(np.median(bwd))) < 0.10
    assert max(abs(x) for x in bwd) < 0.25


def _window_rows(dtype: str) -> list[dict]:
    return [r for r in _all_rows() if r["model"] == "gpt_oss" and r["dtype"] == dtype]


@pytest.mark.parametrize("gpu, preset", [("GB200", "gb200-nvl72"), ("GB300", "gb300-nvl72")])
def test_the_fp8_backward_over_a_sliding_window_costs_a_full_causal_backward(gpu, preset):
    """gpt-oss's 128-key windows, 64-wide heads: cuDNN 9.22's FP8 backward grows with the square of the length
    (a full causal backward's work), the BF16 one linearly (the window's); moesim's full causal FP8 backward
    at the same shapes is 0-20 % below the measured FP8 times at training's lengths (4k-32k), which is how
    plan.fp8_attention prices a local layer's backward (costmodel/attention_rate.FP8_WINDOW_BACKWARD_IS_FULL)."""

    assert FP8_WINDOW_BACKWARD_IS_FULL
    bwd = {dt: {int(r["seq_len"]): float(r["time_ms"]) * 1e-3 for r in _window_rows(dt) if r["gpu"] == gpu and r["pass"] == "bwd"}
           for dt in ("bf16", "fp8")}
    assert set(bwd["fp8"]) == set(bwd["bf16"]) >= {4096, 32768}
    assert bwd["fp8"][32768] / bwd["fp8"][4096] > 40  # ~8^2 = 64: quadratic in the length
    assert bwd["bf16"][32768] / bwd["bf16"][4096] < 10  # ~8: linear
    cm = build_cost_model(_at_benchmark_clock(preset))
    speed_bwd = fp8_attention_speedup(HARDWARE[preset]["device"]["name"], 64)[1]
    for seq, measured in bwd["fp8"].items():
        if seq < 4096:
            continue
        q = np.full(2, float(seq))
        fwd = float(cm.attention_batch_s(q, q, 128, 64, 128, paged=False)) - cm.attention_launch_s
        priced = fwd * ATTN_BWD_FACTOR / speed_bwd + cm.attention_launch_s
        assert -0.20 < priced / measured - 1.0 < 0.0


def _window_price_over_measured(gpu: str, preset: str) -> dict[tuple[int, str], float]:
    """moesim's price of the benchmark's windowed BF16 calls over the measured time, by (length, pass)."""

    cm = build_cost_model(_at_benchmark_clock(preset))
    out = {}
    for r in _window_rows("bf16"):
        if r["gpu"] != gpu:
            continue
        q = np.full(int(r["batch"]), float(r["seq_len"]))
        kv = local_kv(q, q, int(r["window"]), "sliding")
        fwd = float(cm.attention_batch_s(q, kv, int(r["q_heads"]), int(r["head_dim_qk"]), int(r["kv_heads"]), paged=False))
        launch = cm.attention_launch_s
        s = fwd if r["pass"] == "fwd" else (fwd - launch) * ATTN_BWD_FACTOR + launch
        out[(int(r["seq_len"]), r["pass"])] = s / (float(r["time_ms"]) * 1e-3)
    return out


def test_a_1024_key_window_on_hopper_is_priced_as_cudnn_runs_it():
    """gpt-oss's windowed layers as the H200 run times them (window 1024, 64 query and 8 KV heads,
    cuDNN 9.19): moesim's windowed price (the causal kernel's rate over the window's keys,
    engine/local_attention.py) is within 15 % of both passes at 4k-32k tokens (8-13 % slow)."""
    r = _window_price_over_measured("H200", "h200")
    assert {s for s, _ in r} >= {4096, 32768}
    assert all(abs(x - 1.0) < 0.15 for (s, _), x in r.items() if s >= 4096)


@pytest.mark.parametrize("gpu, preset", [("GB200", "gb200-nvl72"), ("GB300", "gb300-nvl72")])
def test_a_128_key_window_on_blackwell_runs_slower_than_priced(gpu, preset):
    """The known gap (docs/validation-misses.md, gpt-oss training): with only 128 keys a query tile
    meets two key tiles, and cuDNN's windowed kernel on Blackwell takes 1.5-3.4x moesim's price at
    2k-32k tokens (the long-sequence rate read at the window's span). About 1 % of a gpt-oss step at 4k."""
    r = _window_price_over_measured(gpu, preset)
    assert len(r) == 10
    assert all(0.25 < x < 0.8 for x in r.values())
