"""What a serving iteration does with the logits after the head's GEMM (``serving/head_tail.py``): the
all-gather of the vocabulary shards over TP and a greedy sampler's passes, priced in every iteration."""

from __future__ import annotations

import numpy as np
import pytest

from moesim.costmodel import build_cost_model
from moesim.engine.serving.decode_cost import IterationCost
from moesim.engine.serving.head_tail import (
    GREEDY_BYTES_PER_LOGIT,
    head_tail_s,
    logits_gather_s,
    sampler_s,
)
from moesim.loader import scenario_from_dict

VOCAB = 128_256  # Llama 3's vocabulary


def _scenario(tp: int = 1, engine: str | None = None):
    w = {"kind": "serving", "arrival": {"process": "batch", "n_requests": 64},
         "prompt_tokens": {"dist": "fixed", "value": 300}, "output_tokens": {"dist": "fixed", "value": 40},
         "max_batch_seqs": 512, "max_batch_tokens": 4096, "engine": engine}
    return scenario_from_dict({"model": {"preset": "mixtral-8x7b", "dtype": "fp8"},
                               "hardware": {"preset": "h100-sxm", "node": {"devices_per_node": 8}},
                               "plan": {"dp": 8 // tp, "tp": tp}, "workload": w})


def test_one_rank_gathers_nothing_and_tp_ranks_gather_every_shard():
    cm = build_cost_model(_scenario().hardware)
    seqs = np.array([0, 1, 256, 2048])
    assert np.all(logits_gather_s(cm, seqs, VOCAB, tp=1) == 0.0)
    eight = logits_gather_s(cm, seqs, VOCAB, tp=8)
    assert eight[0] == 0.0 and np.all(np.diff(eight) > 0)
    # the gathered buffer: seqs x ceil(V / tp) x tp 16-bit entries, over the TP group's ring
    expected = cm.allgather_s(2048 * (-(-VOCAB // 8)) * 8 * 2.0, 8)
    assert eight[-1] == pytest.approx(float(expected), rel=1e-12)


def test_greedy_sampler_moves_its_engine_s_bytes_per_logit():
    cm = build_cost_model(_scenario().hardware)
    n = 4096.0
    for engine in ("vllm", "trtllm", None):
        assert float(sampler_s(cm, n, VOCAB, engine)) == pytest.approx(
            float(cm.memory_s(n * VOCAB * GREEDY_BYTES_PER_LOGIT[engine])), rel=1e-12)
    # TensorRT-LLM's head writes fp32 (no cast pass): fewer bytes than vLLM's cast-then-argmax
    assert sampler_s(cm, n, VOCAB, "trtllm") < sampler_s(cm, n, VOCAB, "vllm")
    assert float(sampler_s(cm, 0, VOCAB, "vllm")) == 0.0


@pytest.mark.parametrize("tp", [1, 8])
def test_the_iteration_prices_the_head_s_tail_on_top_of_its_gemm(tp):
    s = _scenario(tp=tp)
    cost = IterationCost(s, build_cost_model(s.hardware), np.random.default_rng(0), max_tokens=1024)
    seqs = np.array([1.0, 512.0])
    tail = cost.head_s(seqs) - cost.head_gemm_s(seqs)
    assert tail == pytest.approx(head_tail_s(cost.cm, seqs, s.model.vocab_size, tp, None), rel=1e-12)
    assert np.all(tail > 0) and tail[1] > tail[0]
    # the anatomy's output head is what the iteration pays for it
    parts = cost.anatomy_s(512, 500)
    assert parts["output_head"] == pytest.approx(float(cost.head_s(512.0)), rel=1e-12)


def test_a_large_tp8_decode_batch_pays_the_gather_a_single_gpu_does_not():
    one, eight = (IterationCost(s, build_cost_model(s.hardware), np.random.default_rng(0), max_tokens=1024)
                  for s in (_scenario(tp=1), _scenario(tp=8)))
    gather8 = float(logits_gather_s(eight.cm, 512.0, eight.s.model.vocab_size, 8))
    assert gather8 > 0.0
    tail1 = float(one.head_s(512.0) - one.head_gemm_s(512.0))
    tail8 = float(eight.head_s(512.0) - eight.head_gemm_s(512.0))
    assert tail8 == pytest.approx(tail1 + gather8, rel=1e-9)  # the same sampler on every rank, plus the gather


def test_apple_devices_pay_no_sampler_pass():
    s = scenario_from_dict({"model": {"preset": "llama-2-7b"}, "hardware": {"preset": "m2-ultra"},
                            "workload": {"kind": "serving", "arrival": {"process": "batch", "n_requests": 1},
                                         "prompt_tokens": {"dist": "fixed", "value": 16},
                                         "output_tokens": {"dist": "fixed", "value": 8}}})
    cost = IterationCost(s, build_cost_model(s.hardware), np.random.default_rng(0), max_tokens=64)
    assert float(cost.head_s(1.0)) == float(cost.head_gemm_s(1.0))  # llama-bench samples nothing
    assert float(sampler_s(cost.cm, 1.0, VOCAB, None, "mps")) == 0.0 < float(sampler_s(cost.cm, 1.0, VOCAB, None))
