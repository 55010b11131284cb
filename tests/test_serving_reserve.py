"""vLLM's sampler warm-up, held out of the KV pool (moesim.serving_reserve)."""

from __future__ import annotations

import pytest

from moesim.accounting import GIB
from moesim.loader import scenario_from_dict
from moesim.memory import memory_report, serving_kv_pool_bytes
from moesim.serving_reserve import VLLM_SAMPLER_WARMUP_BYTES, sampler_warmup_bytes


def serve(model="qwen3-235b-a22b", dtype="fp8", tp=4, engine="vllm", seqs=1024, tokens=8192):
    w = {"kind": "serving", "arrival": {"process": "batch", "n_requests": 4},
         "prompt_tokens": {"dist": "fixed", "value": 512}, "output_tokens": {"dist": "fixed", "value": 64},
         "max_batch_seqs": seqs, "max_batch_tokens": tokens, "memory_utilization": 0.9}
    if engine:
        w["engine"] = engine
    return scenario_from_dict({"name": "reserve", "model": {"preset": model, "dtype": dtype},
                               "hardware": {"preset": "h100-sxm", "node": {"devices_per_node": tp}},
                               "plan": {"tp": tp}, "workload": w})


def test_the_warm_up_is_every_requests_row_of_logits_at_28_bytes_an_entry():
    s = serve()
    assert sampler_warmup_bytes(s) == 1024 * s.model.vocab_size * VLLM_SAMPLER_WARMUP_BYTES
    # the count of the docstring: bf16 logits, fp32 copy, sorted values and int64 indices, top-k mask,
    # softmax-cumsum, top-p mask, scattered result
    assert VLLM_SAMPLER_WARMUP_BYTES == 2 + 4 + 4 + 8 + 1 + 4 + 1 + 4
    # every TP rank holds the all-gathered logits: the same at TP8; half the requests, half the bytes
    assert sampler_warmup_bytes(serve(dtype="bf16", tp=8)) == sampler_warmup_bytes(s)
    assert sampler_warmup_bytes(serve(seqs=512)) == pytest.approx(0.5 * sampler_warmup_bytes(s))


def test_only_vllm_pays_it_and_it_comes_out_of_the_pool():
    vllm, other = serve(), serve(engine=None)
    assert sampler_warmup_bytes(other) == 0.0
    gone = serving_kv_pool_bytes(other) - serving_kv_pool_bytes(vllm)
    # the larger of the forward's working set and the warm-up is held out of the pool
    assert gone == pytest.approx(sampler_warmup_bytes(vllm) - memory_report(other).activations_gib * GIB)
    assert memory_report(vllm).activations_gib * GIB == pytest.approx(sampler_warmup_bytes(vllm))


def test_it_stays_below_what_public_startup_logs_held_out():
    # vLLM issue #21348 (Qwen3-235B-A22B-FP8, TP4, H100): ~7.7 GiB neither weights nor KV; issue #23278
    # (gpt-oss-120b, one H100): ~7.4 GiB. The warm-up is the largest part, not all of it.
    assert 3.5 < sampler_warmup_bytes(serve()) / GIB < 7.7
    assert 4.5 < sampler_warmup_bytes(serve(model="gpt-oss-120b", dtype="bf16", tp=1)) / GIB < 7.4
