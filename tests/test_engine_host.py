"""``workload.engine``: the serving engine's host time per iteration, and where it shows.

TensorRT-LLM's PyTorch backend spends ~2.3 ms plus ~14 us per sequence of host time per iteration
(``costmodel/host.py``, a line through TensorRT-LLM PR #14622's batch-1 step and PR #10273's
host-bound step of 3,072 sequences over two attention-DP ranks); under attention DP the sequences
are the lock-step group's. The overlap scheduler hides it behind the GPU step, so it shows only
where it is longer: at large batches of a small model.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import moesim
from moesim.costmodel import build_cost_model, host
from moesim.costmodel.host import (
    default_host_spec,
    engine_host_spec,
    exposed_host_s,
    iteration_host_s,
)
from moesim.engine.serving.decode_cost import IterationCost
from moesim.errors import InputError
from moesim.validation import DEFAULT_CSV, scenario_ref

QWEN3_B200 = scenario_ref("validation/qwen3-30b-a3b-b200-fp4-offline.yaml", DEFAULT_CSV.parent)


def test_trtllm_host_line_goes_through_its_two_published_points():
    spec = engine_host_spec(default_host_spec("cuda"), "trtllm")
    n1, ms1 = host.TRTLLM_STEP_BATCH1_MS
    n2, ms2 = host.TRTLLM_HOST_STEP_MS
    assert iteration_host_s(n1, "decode", spec) == pytest.approx(ms1 * 1e-3)
    assert iteration_host_s(n2, "decode", spec) == pytest.approx(ms2 * 1e-3)
    # the checks the line was not fitted to: PR #14622's whole step at concurrency 64 (3.85 ms) holds its host time
    assert iteration_host_s(64, "decode", spec) < 3.85e-3
    assert spec.overlap_decode and spec.overlap_prefill and spec.per_seq_group
    # four TP1 runs of gpt-oss-20b bound the slope: a step of B sequences at T tokens/s takes B / T (the fastest, 60,925)
    assert spec.per_seq_us * 1e-6 <= 1 / 60925


def test_an_engine_changes_the_host_time_and_trtllms_eager_launches_only():
    cuda = default_host_spec("cuda")
    trt = engine_host_spec(cuda, "trtllm")
    assert engine_host_spec(cuda, None) is cuda
    assert engine_host_spec(cuda, "vllm") == cuda  # the CUDA defaults are vLLM V1's
    changed = {k for k in type(cuda).model_fields if getattr(cuda, k) != getattr(trt, k)}
    assert changed == {"iteration_fixed_us", "per_seq_us", "overlap_prefill", "eager_launch_us", "per_seq_group"}
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


#: Decoding sequences of the host-bound test: enough that TensorRT-LLM's host time (~14 us each) outgrows the GPU step.
HOST_BOUND_SEQS = 2048


def _cost(overrides) -> IterationCost:
    """One serving iteration's cost model for the B200 Qwen3-30B-A3B scenario with ``overrides``."""
    s = moesim.load_scenario(QWEN3_B200, ["workload.max_batch_tokens=4096", *overrides])
    return IterationCost(s, build_cost_model(s.hardware), np.random.default_rng(0), max_tokens=s.workload.max_batch_tokens)


def test_a_host_bound_decode_step_lasts_the_host_time():
    """2,048 decoding sequences of a 3B-active model on a B200: the GPU step (what vLLM's hidden host
    leaves, ~27 ms) is shorter than TensorRT-LLM's host time (2.3 ms + 2,048 x 14 us ~ 31 ms), so the
    step lasts the host time and the launches the same thread issues; vLLM's host hides behind the GPU."""
    q, kv = np.ones(HOST_BOUND_SEQS, np.int64), np.full(HOST_BOUND_SEQS, 600, np.int64)
    trt = _cost(["workload.engine=trtllm"]).time_s(q, kv, HOST_BOUND_SEQS)[0]
    vllm = _cost(["workload.engine=vllm"]).time_s(q, kv, HOST_BOUND_SEQS)[0]
    default = _cost(["workload.engine=null"]).time_s(q, kv, HOST_BOUND_SEQS)[0]
    assert default == vllm
    host_s = iteration_host_s(HOST_BOUND_SEQS, "decode", engine_host_spec(default_host_spec("cuda"), "trtllm"))
    assert vllm < host_s < trt < 1.3 * host_s


def test_an_attention_dp_group_pays_the_host_time_of_all_its_sequences():
    """Under plan.dp_attention TensorRT-LLM's per-sequence host time counts the lock-step group's
    sequences (costmodel/host.py): four ranks of 512 decoding sequences pay the host time of 2,048,
    while vLLM's ranks hide their own (per_seq_group False)."""
    sets = ["hardware.node.devices_per_node=4", "plan.dp=4", "plan.ep=4", "plan.dp_attention=true",
            "workload.max_batch_tokens=4096"]
    q, kv = np.ones(512, np.int64), np.full(512, 600, np.int64)

    def group(engine):
        cost = _cost([*sets, f"workload.engine={engine}"])
        return cost.group_time_s([512] * 4, [float(kv.sum())] * 4, lambda i: (q, kv, 512), 512, True)[0]

    host_group = iteration_host_s(4 * 512, "decode", engine_host_spec(default_host_spec("cuda"), "trtllm"))
    assert group("trtllm") > host_group > group("vllm")


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


def test_a_bad_per_seq_group_in_a_profile_is_one_line_naming_the_field(tmp_path):
    """HostSpec.per_seq_group is a profile field: a value that is not a boolean is refused in one line."""
    import yaml

    d = yaml.safe_load((Path(moesim.__file__).parent / "data" / "profiles" / "h100.yaml").read_text())
    d.setdefault("host", {})["per_seq_group"] = "maybe"
    bad = tmp_path / "p.yaml"
    bad.write_text(yaml.safe_dump(d))
    with pytest.raises(InputError, match=r"invalid profile field host\.per_seq_group: Input should be a valid boolean") as e:
        moesim.load_scenario(QWEN3_B200, [f"hardware.profile={bad}"])
    assert "\n" not in str(e.value)
