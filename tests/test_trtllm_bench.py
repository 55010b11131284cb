"""trtllm-bench's build heuristic (moesim/trtllm_bench.py) and the TensorRT-LLM v0.17 validation rows that run at it."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from moesim.accounting import param_counts
from moesim.loader import load_scenario
from moesim.precision import scenario_precision
from moesim.trtllm_bench import DEVICE_GIB, build_limits, finetune
from moesim.validation import row_overrides, scenario_ref

DATA = Path(__file__).resolve().parent.parent / "moesim" / "data"
V017 = "perf-overview.md @258c7540"  # the v0.17 table: C++ runtime, engines built by trtllm-bench build
#: Rows that model the runtime's dynamic batch tuner below the engine's limit (the row's notes say how).
RUNTIME_TUNED_BATCH = {"INF-05": 768}  # engine 896; the tuner maps a KV capacity of 672-831 requests to 768


def test_the_rounding_follows_tuning_py():
    # batch: min 64, to 32 below 256, to 128 below 1,024, to 256 above, capped at 4,096 requests
    assert finetune(26, 20000, 2000) == (64, 2048)
    assert finetune(196, 20000, 2000) == (224, 2304)  # 196 x 11 = 2,156 tokens: to 256
    assert finetune(725, 500, 2000) == (768, 2048)
    assert finetune(1978, 2048, 128) == (2048, 32768)  # 1,978 x 17 tokens: capped at 32,768
    assert finetune(16812, 128, 128) == (4096, 8192)  # R above the 4,096 cap
    assert finetune(810, 2048, 128) == (896, 14336)  # 13,770 tokens: to 1,024
    assert finetune(5000, 128, 128, pp=2) == (2048, 4096)  # the batch is per pipeline stage


def test_requests_follow_the_free_memory_and_the_kv_bytes():
    # Mixtral 8x7B in FP16 on 8 A100-80GB (INF-325): 553.0 GiB free x 0.95 over 32 MiB a 256-token request
    r, batch, tokens = build_limits(46.7e9, 32, 8, 128, 8, 1, 80.0, 2, 2, 128, 128)
    assert r == pytest.approx(0.95 * (640 - 46.7e9 * 2 / 2**30) * 32, rel=1e-9) and (batch, tokens) == (4096, 8192)
    # an FP8 cache holds twice the requests of an FP16 one
    assert build_limits(46.7e9, 32, 8, 128, 8, 1, 80.0, 2, 1, 128, 128)[0] == pytest.approx(2 * r)
    with pytest.raises(ValueError, match="more GPUs"):
        build_limits(70.6e9, 80, 8, 128, 1, 1, 80.0, 2, 2, 128, 128)  # 70B in FP16 on one 80 GB GPU


def _v017_rows() -> list[dict]:
    with open(DATA / "validation.csv") as f:
        rows = list(csv.DictReader(line for line in f if not line.startswith("#")))
    return [r for r in rows if V017 in r["source"] and r["metric"] == "output_tokens_per_s"]


def test_every_v017_row_runs_at_the_limits_its_scenario_gives():
    rows = _v017_rows()
    assert len(rows) >= 290
    wrong = []
    for r in rows:
        s = load_scenario(scenario_ref(r["scenario"], DATA), list(row_overrides(r)))
        m, w, dev = s.model, s.workload, s.hardware.device
        p = scenario_precision(s)  # FP8 engines keep an FP8 cache, FP16 ones an FP16 one
        isl, osl = int(w.prompt_tokens.value), int(w.output_tokens.value)
        r_req, _, _ = build_limits(param_counts(m).total, m.n_layers, m.n_kv_heads, m.head_dim, s.plan.tp,
                                   s.plan.pp, DEVICE_GIB.get(dev.name, dev.mem_gib), p.weight_bytes, p.kv_bytes, isl, osl)
        # device memory is known to ~0.05 GiB: where R sits on a rounding step, either side is the rule's
        allowed = set()
        for req in (r_req * 0.999, r_req, r_req * 1.001):
            batch, tokens = finetune(req, isl, osl, s.plan.pp)
            # a prompt and a full batch do not fit the budget: the prompts are chunked; the page ran GH200 with
            # the legacy gptManagerBenchmark flow and its --enable_chunked_context
            chunked = isl + batch > tokens or "GH200" in dev.name
            allowed.add((RUNTIME_TUNED_BATCH.get(r["id"], batch), tokens, chunked))
        if (w.max_batch_seqs, w.max_batch_tokens, w.chunked_prefill) not in allowed:
            wrong.append(f"{r['id']}: {(w.max_batch_seqs, w.max_batch_tokens, w.chunked_prefill)} not in {allowed}")
    assert not wrong, wrong
