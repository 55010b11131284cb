"""workload.memory_utilization: vLLM's --gpu-memory-utilization (SGLang's --mem-fraction-static), a share of the
whole device for weights, activations and the KV pool, against kv_cache_fraction, a share of what weights leave."""

from __future__ import annotations

import pytest

from moesim.accounting import GIB
from moesim.errors import InputError
from moesim.loader import load_scenario, scenario_from_dict
from moesim.memory import memory_report, serving_kv_pool_bytes
from moesim.serving_reserve import COMM_BUFFER_GIB_PER_DOUBLING, CUDA_CONTEXT_GIB, CUDA_UNSEEN_GIB


def serve(model: str = "mixtral-8x7b", **workload):
    w = {"kind": "serving", "arrival": {"process": "batch", "n_requests": 4},
         "prompt_tokens": {"dist": "fixed", "value": 512}, "output_tokens": {"dist": "fixed", "value": 64},
         "max_batch_seqs": 256, "max_batch_tokens": 8192, **workload}
    return scenario_from_dict({"name": "mem", "model": {"preset": model, "dtype": "bf16"},
                               "hardware": {"preset": "h100-sxm", "node": {"devices_per_node": 2}},
                               "plan": {"tp": 2}, "workload": w})


def taken_bytes(s) -> float:
    """Bytes of weights and working activations a device holds beside its KV pool."""
    mem = memory_report(s)
    return (mem.weights_gib + mem.activations_gib) * GIB


def test_the_pool_is_what_weights_and_activations_leave_of_the_share():
    s = serve(memory_utilization=0.9)
    seen = (s.hardware.device.mem_gib - CUDA_UNSEEN_GIB) * GIB  # what cudaMemGetInfo reports as the total
    assert serving_kv_pool_bytes(s) == pytest.approx(0.9 * seen - taken_bytes(s))
    # kv_cache_fraction's pool is the same share of what they leave of the memory free once the CUDA context and
    # the TP2 communicator's buffers (one doubling) are allocated
    f = serve(kv_cache_fraction=0.9)
    free = seen - (CUDA_CONTEXT_GIB + COMM_BUFFER_GIB_PER_DOUBLING) * GIB
    assert serving_kv_pool_bytes(f) == pytest.approx(0.9 * (free - taken_bytes(f)))
    # a full share of free memory holds more than 90 % of the whole whenever weights take more than the buffers
    assert serving_kv_pool_bytes(serve(kv_cache_fraction=1.0)) > serving_kv_pool_bytes(s)


def test_a_share_below_the_weights_leaves_no_pool_and_does_not_fit():
    s = serve(memory_utilization=0.3)  # Mixtral's ~47 GB of bf16 weights a GPU at TP2 exceed 0.3 x 80 GB
    assert serving_kv_pool_bytes(s) == 0.0
    assert not memory_report(s).fits
    # the engine's budget: the share of what CUDA reports
    assert memory_report(s).capacity_gib == pytest.approx(0.3 * (s.hardware.device.mem_gib - CUDA_UNSEEN_GIB))


def test_setting_both_is_refused_in_one_line():
    with pytest.raises(InputError, match="memory_utilization and kv_cache_fraction: set one"):
        serve(memory_utilization=0.9, kv_cache_fraction=0.8)


@pytest.mark.parametrize("bad, said", [(0, "greater than 0"), (1.5, "must be <= 1")])
def test_a_share_outside_0_to_1_is_refused_in_one_line(bad, said):
    with pytest.raises(InputError, match="memory_utilization") as e:
        serve(memory_utilization=bad)
    assert said in str(e.value) and "\n" not in str(e.value)


def test_a_shipped_vllm_scenario_uses_it(root):
    s = load_scenario(root / "scenarios" / "qwen3-30b-a3b-h100-serve.yaml")
    assert s.workload.memory_utilization == 0.9


def test_the_advice_offers_a_larger_share_when_that_fits():
    from moesim.fit_advice import fit_explanation

    s = serve(memory_utilization=0.5)  # 43.5 GiB of weights a GPU leave no pool in 0.5 x 80 GiB; 0.95 x 80 does
    assert not memory_report(s).fits
    reason, advice = fit_explanation(s)
    assert "workload.memory_utilization 0.5" in reason
    assert "workload.memory_utilization 0.5 -> 0.95" in advice
