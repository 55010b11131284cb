"""``workload.engine``: the serving engine's host time per iteration, and where it shows.

TensorRT-LLM's PyTorch backend spends ~2.3 ms plus ~28 us per sequence of host time per iteration
(``costmodel/host.py``, a line through TensorRT-LLM PR #14622's batch-1 step and PR #10273's
host-bound 1,536-sequence step). The overlap scheduler hides it behind the GPU step, so it shows
only where it is longer: at large batches of a small model.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

import moesim
from moesim.costmodel import host
from moesim.costmodel.host import (
    default_host_spec,
    engine_host_spec,
    exposed_host_s,
    iteration_host_s,
)
from moesim.errors import InputError
from moesim.validation import DEFAULT_CSV, scenario_ref

QWEN3_B200 = scenario_ref("validation/qwen3-30b-a3b-b200-fp4-offline.yaml", DEFAULT_CSV.parent)


def test_trtllm_host_line_goes_through_its_two_published_points():
    spec = engine_host_spec(default_host_spec("cuda"), "trtllm")
    n1, ms1 = host.TRTLLM_STEP_BATCH1_MS
    n2, ms2 = host.TRTLLM_HOST_STEP_MS
    assert iteration_host_s(n1, "decode", spec) == pytest.approx(ms1 * 1e-3)
    assert iteration_host_s(n2, "decode", spec) == pytest.approx(ms2 * 1e-3)
    # the checks the line was not fitted to: PR #14622 at concurrency 64 (3.85 ms) and issue #13957 (~4.6 ms)
    assert 3.85e-3 < iteration_host_s(64, "decode", spec) < 4.6e-3
    assert spec.overlap_decode and spec.overlap_prefill


def test_an_engine_changes_the_host_time_and_trtllms_eager_launches_only():
    cuda = default_host_spec("cuda")
    trt = engine_host_spec(cuda, "trtllm")
    assert engine_host_spec(cuda, None) is cuda
    assert engine_host_spec(cuda, "vllm") == cuda  # the CUDA defaults are vLLM V1's
    changed = {k for k in type(cuda).model_fields if getattr(cuda, k) != getattr(trt, k)}
    assert changed == {"iteration_fixed_us", "per_seq_us", "overlap_prefill", "eager_launch_us"}
    # TensorRT-LLM's custom-op dispatch (PR #13149), within PR #18645's 1- to 11-argument ops on another x86
    assert trt.eager_launch_us == host.TRTLLM_CUSTOM_OP_US and 9.32 <= trt.eager_launch_us <= 13.07


def test_a_grace_host_pays_more_cpu_per_launch_and_the_same_scheduler_time():
    """TransformerEngine #2053: a PyTorch op's CPU side takes 37.1 us on a GB200's Grace, 13.5 us on
    a DGX H100's Xeon: the launches scale by that ratio; the scheduler's line is one for every CPU."""
    spec = engine_host_spec(default_host_spec("cuda"), "trtllm")
    assert host.host_cpu_spec(spec, "x86") is spec
    grace = host.host_cpu_spec(spec, "grace")
    ratio = 37.1 / 13.5
    assert grace.eager_launch_us == pytest.approx(spec.eager_launch_us * ratio)
    assert grace.graph_launch_us == pytest.approx(spec.graph_launch_us * ratio)
    changed = {k for k in type(spec).model_fields if getattr(spec, k) != getattr(grace, k)}
    assert changed == {"eager_launch_us", "graph_launch_us"}
    with pytest.raises(InputError, match=r"^hardware\.node\.host_cpu: unknown host 'power9'; allowed: x86, grace"):
        host.host_cpu_spec(spec, "power9")


def test_a_host_bound_run_is_slower_on_a_grace_host():
    """The same B200 run, host-bound at large batches under TensorRT-LLM, on a Grace host: eager
    (mixed) iterations launch slower, so fewer tokens/s; the GB200 preset's host is a Grace."""
    big = ["workload.engine=trtllm", "workload.arrival.n_requests=600", "workload.max_batch_seqs=512",
           "workload.max_batch_tokens=2048", "workload.prompt_tokens.value=512", "workload.output_tokens.value=128"]
    x86 = moesim.simulate(moesim.load_scenario(QWEN3_B200, big)).summary
    grace = moesim.simulate(moesim.load_scenario(QWEN3_B200, [*big, "hardware.node.host_cpu=grace"])).summary
    assert grace["output_tokens_per_s"] < 0.97 * x86["output_tokens_per_s"]
    assert moesim.load_scenario(QWEN3_B200, ["hardware.preset=gb200-nvl72"]).hardware.node.host_cpu == "grace"


@pytest.mark.parametrize("device", ["Apple M2 Ultra", "Intel Xeon CPU"])
def test_a_cuda_engine_on_another_device_is_a_one_line_error(device):
    with pytest.raises(InputError, match=r"^workload\.engine: trtllm runs on CUDA GPUs; .* is not one"):
        engine_host_spec(default_host_spec("cuda"), "trtllm", device)
    with pytest.raises(InputError, match="unknown engine 'tgi'; allowed: vllm, trtllm"):
        engine_host_spec(default_host_spec("cuda"), "tgi")


#: Sequences in flight for the host-bound test: enough that TensorRT-LLM's host time (28 us each) outgrows the GPU step.
HOST_BOUND_SEQS = 256


def _run(overrides):
    s = moesim.load_scenario(QWEN3_B200, [f"workload.arrival.n_requests={HOST_BOUND_SEQS}", "workload.output_tokens.value=64",
                                          "workload.prompt_tokens.value=128", *overrides])
    return s, moesim.simulate(s).summary


def test_a_host_bound_decode_step_lasts_the_host_time():
    """256 sequences of a 3B-active model on a B200: the GPU step (~8.3 ms) is shorter than TensorRT-LLM's
    host time (2.3 ms + 256 x 28 us ~ 9.4 ms), so each decode step lasts the host time (and the graph
    launches the same thread issues); vLLM's host time hides behind the GPU step."""
    s, trt = _run(["workload.engine=trtllm"])
    _, vllm = _run(["workload.engine=vllm"])
    _, default = _run(["workload.engine=null"])
    assert default["tpot_mean_s"] == vllm["tpot_mean_s"]
    spec = engine_host_spec(default_host_spec("cuda"), "trtllm")
    host_s = iteration_host_s(HOST_BOUND_SEQS, "decode", spec)
    assert vllm["tpot_p50_s"] < host_s  # the GPU step is shorter: host-bound under TensorRT-LLM
    # the step lasts the host time and the same thread's own graph launches (under 10 % of it)
    assert host_s < trt["tpot_p50_s"] < 1.1 * host_s
    assert trt["output_tokens_per_s"] < 0.9 * vllm["output_tokens_per_s"]


def test_overlap_never_makes_the_step_shorter_than_the_gpu_or_the_host():
    for gpu in (1e-3, 5e-3, 20e-3):
        exposed = exposed_host_s(7.7e-3, gpu, True)
        assert gpu + exposed == pytest.approx(max(gpu, 7.7e-3))


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "moesim.cli", *args], capture_output=True, text=True, timeout=120)


def test_cli_engine_on_an_apple_scenario_is_one_line_no_traceback():
    r = _cli("simulate", "mixtral-8x7b-m2-ultra-serve", "--set", "workload.engine=trtllm")
    assert r.returncode == 2 and r.stdout == ""
    err = r.stderr.strip()
    assert err.count("\n") == 0 and "workload.engine: trtllm runs on CUDA GPUs" in err and "Traceback" not in err


def test_cli_unknown_engine_names_the_field_and_the_choices():
    r = _cli("simulate", "mixtral-8x7b-h100-serve", "--set", "workload.engine=tgi")
    assert r.returncode == 2
    assert "workload.engine" in r.stderr and "vllm" in r.stderr and "trtllm" in r.stderr
    assert "Traceback" not in r.stderr


def test_the_thread_that_schedules_also_launches():
    """TensorRT-LLM overlaps every iteration's host work with the GPU, but one Python thread both
    schedules and launches an eager (mixed) step's kernels: such a step lasts at least the two
    together, even where the GPU work outlasts either alone. A graphed decode step launches once."""
    import numpy as np

    from moesim.costmodel import build_cost_model
    from moesim.engine.serving.decode_cost import IterationCost

    s = moesim.load_scenario(QWEN3_B200, ["workload.engine=trtllm"])
    cost = IterationCost(s, build_cost_model(s.hardware), np.random.default_rng(0), 512)
    mixed = np.r_[np.ones(191, np.int64), 128]  # 191 decodes and one prompt: eager
    host_s = iteration_host_s(192, "mixed", cost.host)
    cpu_launch_s = cost.n_kernels * cost.host.eager_launch_us * 1e-6
    assert cpu_launch_s > 0
    gpu_s = host_s + 0.5 * cpu_launch_s  # longer than the host work alone, shorter than host + launches
    assert gpu_s + cost.host_s(mixed, gpu_s) == pytest.approx(host_s + cpu_launch_s, rel=1e-6)
    # the GPU outlasting both: only the gaps between eager kernels show, no host time
    long_s = 10 * (host_s + cpu_launch_s)
    assert 0 <= cost.host_s(mixed, long_s) <= cost.n_kernels * cost.host.graph_node_us * 1e-6 < cpu_launch_s
    decode = np.ones(192, np.int64)  # a graphed decode step: the host plus one graph launch
    graph_cpu_s = cost.host.graph_launch_us * 1e-6
    step = host_s + 0.5 * graph_cpu_s
    assert step + cost.host_s(decode, step) >= host_s + graph_cpu_s
