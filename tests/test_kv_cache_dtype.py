"""workload.kv_cache_dtype: the serving KV cache stored in a dtype of its own (vLLM/SGLang
--kv-cache-dtype, TensorRT-LLM kv_cache_config.dtype)."""

from __future__ import annotations

import numpy as np
import pytest

import moesim
from moesim.accounting import kv_bytes_per_token
from moesim.costmodel import build_cost_model
from moesim.engine.serving.decode_cost import IterationCost
from moesim.errors import InputError
from moesim.loader import scenario_from_dict
from moesim.memory import kv_bytes_per_token_per_device
from moesim.precision import kv_cache_dtype, scenario_precision

# A device name no shipped profile matches: the datasheet roofline, so bytes and time are exact.
DATASHEET = {"name": "Datasheet GPU", "default_profile": "datasheet"}


def serve(kv: str | None = None, dtype: str = "fp16", n_requests: int = 1, prompt: int = 512, output: int = 64,
          engine: str | None = None):
    w = {"kind": "serving", "arrival": {"process": "batch", "n_requests": n_requests},
         "prompt_tokens": {"dist": "fixed", "value": prompt}, "output_tokens": {"dist": "fixed", "value": output},
         "max_batch_seqs": 1024, "max_batch_tokens": 16384}
    if kv is not None:
        w["kv_cache_dtype"] = kv
    if engine is not None:
        w["engine"] = engine
    return scenario_from_dict({"name": "kv", "model": {"preset": "llama-2-7b", "dtype": dtype},
                               "hardware": {"preset": "h100-sxm", "node": {"devices_per_node": 1}, "device": DATASHEET},
                               "plan": {"dp": 1}, "workload": w})


def test_auto_keeps_the_activation_width():
    assert scenario_precision(serve()).kv_bytes == 2.0  # fp16 model
    assert scenario_precision(serve(dtype="fp8")).kv_bytes == 1.0  # fp8 on fp8 tensor cores
    assert scenario_precision(serve(dtype="int4")).kv_bytes == 2.0  # weight-only: 16-bit activations


def test_vllms_auto_keeps_a_16_bit_cache_for_an_fp8_checkpoint():
    # vLLM's --kv-cache-dtype auto "will use model data type": BF16 for an FP8 checkpoint; TensorRT-LLM's
    # ModelOpt checkpoints carry an FP8 cache
    assert kv_cache_dtype(serve(dtype="fp8", engine="vllm")) == "bf16"
    assert scenario_precision(serve(dtype="fp8", engine="vllm")).kv_bytes == 2.0
    assert scenario_precision(serve(dtype="fp8", engine="trtllm")).kv_bytes == 1.0
    assert scenario_precision(serve("fp8", dtype="fp8", engine="vllm")).kv_bytes == 1.0  # --kv-cache-dtype fp8
    assert kv_cache_dtype(serve(dtype="fp16", engine="vllm")) == "auto"  # a 16-bit model's cache is already 16-bit
    # the 16-bit cache costs vLLM's FP8 run half the tokens of the same pool with an FP8 cache
    auto8, vllm8 = moesim.simulate(serve(dtype="fp8")).summary, moesim.simulate(serve(dtype="fp8", engine="vllm")).summary
    named8 = moesim.simulate(serve("fp8", dtype="fp8", engine="vllm")).summary
    assert vllm8["kv_cache_capacity_tokens"] == pytest.approx(0.5 * named8["kv_cache_capacity_tokens"], rel=1e-3)
    # the summary names the cache the run kept
    assert (vllm8["kv_cache_dtype"], auto8["kv_cache_dtype"]) == ("bf16", "fp8")
    assert moesim.simulate(serve()).summary["kv_cache_dtype"] == "fp16"


@pytest.mark.parametrize("dtype, kv, ratio", [("fp16", "fp8", 0.5), ("fp8", "bf16", 2.0), ("fp16", "fp16", 1.0)])
def test_kv_bytes_per_token_follow_the_cache_dtype(dtype, kv, ratio):
    auto, named = serve(dtype=dtype), serve(kv, dtype=dtype)
    assert kv_bytes_per_token(named.model, scenario_precision(named)) == \
        pytest.approx(ratio * kv_bytes_per_token(auto.model, scenario_precision(auto)))
    assert kv_bytes_per_token_per_device(named) == pytest.approx(ratio * kv_bytes_per_token_per_device(auto))
    # the weights and the GEMMs' dtype do not change
    assert scenario_precision(named).weight_bytes == scenario_precision(auto).weight_bytes
    assert scenario_precision(named).compute_dtype == scenario_precision(auto).compute_dtype


def test_fp8_cache_doubles_the_pool_and_halves_the_decode_attention_reads():
    s16, s8 = serve(), serve("fp8")
    r16, r8 = moesim.simulate(s16).summary, moesim.simulate(s8).summary
    assert r8["kv_cache_capacity_tokens"] == pytest.approx(2 * r16["kv_cache_capacity_tokens"], rel=1e-3)
    # one decode step of 256 sequences at 4096 tokens of context: the attention kernel reads the KV
    c16 = IterationCost(s16, build_cost_model(s16.hardware), np.random.default_rng(0), max_tokens=256)
    c8 = IterationCost(s8, build_cost_model(s8.hardware), np.random.default_rng(0), max_tokens=256)
    q, kv = np.ones(256), np.full(256, 4096.0)
    t16, t8 = c16.attention_s(q, kv), c8.attention_s(q, kv)
    launch = float(c16.cm.attention_launch_s) * s16.model.n_layers
    assert (t8 - launch) == pytest.approx(0.5 * (t16 - launch), rel=0.02)  # memory-bound at batch 256


def test_a_kv_bound_offline_run_serves_faster_with_an_fp8_cache():
    # 2,000 requests of 512 + 64 tokens do not fit a 16-bit pool at once: fp8 holds twice as many
    slow = moesim.simulate(serve(n_requests=2000)).summary
    fast = moesim.simulate(serve("fp8", n_requests=2000)).summary
    assert fast["output_tokens_per_s"] > 1.2 * slow["output_tokens_per_s"]
    assert fast["served_requests"] == slow["served_requests"] == 2000


def test_naming_the_auto_width_changes_nothing():
    auto, same = moesim.simulate(serve(n_requests=200)).summary, moesim.simulate(serve("fp16", n_requests=200)).summary
    for key in ("output_tokens_per_s", "tpot_p50_s", "ttft_p50_s", "kv_cache_capacity_tokens"):
        assert same[key] == pytest.approx(auto[key], rel=1e-9)


def test_a_bad_cache_dtype_is_one_clear_error():
    with pytest.raises(InputError) as err:
        serve("int8")
    msg = str(err.value)
    assert "kv_cache_dtype" in msg and "fp8" in msg and "\n" not in msg.strip()
