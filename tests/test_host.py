"""Host-side iteration cost: scheduler time, eager launches vs CUDA-graph replay, overlap with the GPU."""

from __future__ import annotations

import numpy as np
import pytest

from moesim.costmodel import host
from moesim.costmodel.host import (
    default_host_spec,
    exposed_host_s,
    host_spec_for,
    iteration_host_s,
    kernel_launch_s,
    launch_added_s,
    launch_terms,
    overlaps,
    platform_of,
    uses_cuda_graph,
)
from moesim.costmodel.profile import (
    HostSpec,
    load_default_profile,
    load_profile,
    profile_from_dict,
    save_profile,
)
from moesim.errors import InputError
from moesim.schemas import DeviceSpec


@pytest.fixture
def cuda():
    return default_host_spec("cuda")


# ---------------------------------------------------------------- defaults are the cited numbers
def test_cuda_defaults_are_the_cited_measurements(cuda):
    assert HostSpec() == cuda
    # vLLM PR #42131: schedule 0.2 ms + _update_states 0.18 ms + _prepare_inputs 0.05 ms
    assert cuda.iteration_fixed_us == pytest.approx(430.0)
    # vLLM PR #46112: update_from_output 0.142 ms at 128 sequences, 0.287 ms at 256
    assert cuda.per_seq_us == pytest.approx((287 - 142) / 128, rel=1e-9)
    assert cuda.eager_launch_us == 5.0  # HTA docs: 5-20 us CPU-side, low end
    assert cuda.graph_launch_us == 8.0  # CUDA.jl: graph launch keeps the CPU 8 us
    assert cuda.graph_node_us == pytest.approx(70 / 80)  # CUDA.jl: 80 kernels in 70 us as a graph
    assert cuda.graph_max_batch == 512  # vLLM: min(2 * max_num_seqs, 512)
    assert cuda.overlap_decode and not cuda.overlap_prefill  # async scheduling: decode only


def test_mps_and_cpu_have_no_graphs_nor_overlap(cuda):
    mps, cpu = default_host_spec("mps"), default_host_spec("CPU")
    assert mps.graph_max_batch == 0 and cpu.graph_max_batch == 0
    assert not mps.overlap_decode and not cpu.overlap_decode
    assert mps.eager_launch_us == 10.0  # between Metal-shader (1.3 us) and MPSGraph (20.7 us) dispatch
    assert host.MPS_METAL_DISPATCH_US < mps.eager_launch_us < host.MPS_GRAPH_DISPATCH_US
    assert cpu.eager_launch_us == 0.9  # pytorch#148219: a 1-element CPU op
    assert mps.iteration_fixed_us == cpu.iteration_fixed_us == cuda.iteration_fixed_us  # same scheduler
    assert not uses_cuda_graph(1, True, mps)


def test_unknown_platform_is_an_input_error():
    with pytest.raises(InputError, match="unknown platform"):
        default_host_spec("tpu")


def test_platform_of_device_names():
    assert platform_of("NVIDIA H100 SXM5 80GB") == "cuda"
    assert platform_of("Apple M2 Ultra") == "mps"
    assert platform_of("Intel Xeon 8480") == "cpu"


# ---------------------------------------------------------------- host time
def test_host_time_is_fixed_plus_per_sequence(cuda):
    assert iteration_host_s(0, "decode", cuda) == 0.0  # no batch, no iteration
    one, many = iteration_host_s(1, "decode", cuda), iteration_host_s(257, "decode", cuda)
    assert one == pytest.approx((430 + cuda.per_seq_us) * 1e-6)
    assert many - one == pytest.approx(256 * cuda.per_seq_us * 1e-6)
    assert iteration_host_s(8, "prefill", cuda) == iteration_host_s(8, "decode", cuda)  # V1: one path
    arr = iteration_host_s(np.array([0, 1, 257]), "mixed", cuda)
    np.testing.assert_allclose(arr, [0.0, one, many])


def test_bad_phase_and_negative_counts_raise(cuda):
    with pytest.raises(ValueError, match="phase"):
        iteration_host_s(4, "generate", cuda)
    with pytest.raises(ValueError):
        iteration_host_s(-1, "decode", cuda)
    with pytest.raises(ValueError):
        kernel_launch_s(-1, False, cuda)


# ---------------------------------------------------------------- launches and graphs
@pytest.mark.parametrize("n", [16, 100, 550])
def test_graph_replay_cheaper_than_eager_for_the_same_kernels(cuda, n):
    eager, graph = kernel_launch_s(n, False, cuda), kernel_launch_s(n, True, cuda)
    assert eager == pytest.approx(n * 5e-6)
    assert graph == pytest.approx((8.0 + n * 0.875) * 1e-6)
    assert graph < eager


def test_no_kernels_no_launch(cuda):
    assert kernel_launch_s(0, True, cuda) == 0.0 and kernel_launch_s(0, False, cuda) == 0.0
    np.testing.assert_allclose(kernel_launch_s(np.array([0, 10]), True, cuda), [0.0, (8 + 8.75) * 1e-6])


def test_a_graph_keeps_a_profiles_kernel_time_and_adds_its_node_gaps(cuda):
    """A profile prices each kernel at its measured GPU time: a graph adds its launch and node gaps;
    eagerly the same gaps unless the CPU's launches take longer than the GPU work."""
    n = 900
    graph, gap, cpu = launch_terms(n, cuda, cpu_priced_s=0.0)
    assert graph == pytest.approx((8.0 + n * 0.875) * 1e-6) and gap == pytest.approx(n * 0.875e-6)
    assert cpu == pytest.approx(n * 5e-6)
    assert launch_added_s((graph, gap, cpu), 1e-3, True) == graph
    assert launch_added_s((graph, gap, cpu), 1e-3, False) == pytest.approx(cpu - 1e-3)  # CPU-bound: 4.5 > 1 ms
    assert launch_added_s((graph, gap, cpu), 50e-3, False) == gap  # the GPU work hides the launches
    np.testing.assert_allclose(launch_added_s((graph, gap, cpu), np.array([1e-3, 50e-3]), False), [cpu - 1e-3, gap])
    # eager never beats the graph on a step the CPU cannot outrun
    assert launch_added_s((graph, gap, cpu), 1e-3, False) > graph


def test_a_graph_saves_the_cpu_launches_a_datasheet_prices(cuda):
    """The datasheet's fixed cost per kernel is the CPU launch (5 us): a graph swaps it for its node
    cost, and eager iterations add nothing to what the kernels are priced at."""
    n = 550
    graph, gap, cpu = launch_terms(n, cuda, cpu_priced_s=5e-6)
    assert graph == pytest.approx((8.0 + n * 0.875 - n * 5.0) * 1e-6) and graph < 0
    assert gap == 0.0
    assert launch_added_s((graph, gap, cpu), n * 5e-6, False) == 0.0  # priced kernels already cover the CPU


def test_graph_only_for_decode_up_to_the_capture_limit(cuda):
    assert uses_cuda_graph(1, True, cuda) and uses_cuda_graph(512, True, cuda)
    assert not uses_cuda_graph(513, True, cuda)  # above the capture limit: eager
    assert not uses_cuda_graph(8, False, cuda)  # prefill / mixed: eager
    assert not uses_cuda_graph(0, True, cuda)
    np.testing.assert_array_equal(uses_cuda_graph(np.array([1, 512, 513]), True, cuda), [True, True, False])
    assert not uses_cuda_graph(np.array([1, 2]), False, cuda).any()
    small = cuda.model_copy(update={"graph_max_batch": 160})  # SGLang's fallback default
    assert not uses_cuda_graph(200, True, small)


# ---------------------------------------------------------------- overlap
def test_exposed_host_is_zero_when_gpu_time_covers_it():
    assert exposed_host_s(0.4e-3, 5e-3, overlap=True) == 0.0
    assert exposed_host_s(0.4e-3, 5e-3, overlap=False) == pytest.approx(0.4e-3)
    assert exposed_host_s(2e-3, 0.5e-3, overlap=True) == pytest.approx(1.5e-3)
    np.testing.assert_allclose(exposed_host_s(np.array([1e-3, 3e-3]), 2e-3, True), [0.0, 1e-3])


def test_overlap_by_phase(cuda):
    assert overlaps("decode", cuda) and not overlaps("prefill", cuda) and not overlaps("mixed", cuda)
    sglang = cuda.model_copy(update={"overlap_prefill": True})
    assert overlaps("mixed", sglang)


# ---------------------------------------------------------------- specs from profiles and devices
def test_profile_host_section_round_trips_and_wins(tmp_path):
    a100 = load_default_profile("a100.yaml")
    assert a100.host is None  # shipped profiles carry no host section
    data = a100.model_dump(mode="json")
    data["host"] = {"iteration_fixed_us": 200.0, "graph_max_batch": 0}
    prof = profile_from_dict(data)
    spec = host_spec_for(prof)
    assert spec.iteration_fixed_us == 200.0 and spec.graph_max_batch == 0
    assert spec.per_seq_us == HostSpec().per_seq_us  # omitted fields take the CUDA defaults
    assert load_profile(save_profile(prof, tmp_path / "p.yaml")) == prof
    data["host"] = {"graph_max_batch": -1}
    with pytest.raises(InputError, match="host.graph_max_batch"):
        profile_from_dict(data)


def test_eager_launch_is_the_cpus_for_a_profile_and_the_datasheets_without_one():
    a100 = load_default_profile("a100.yaml")
    spec = host_spec_for(a100)
    assert spec.eager_launch_us == 5.0  # a profile's fixed cost is GPU time: the CPU launch stays HTA's
    assert spec.graph_max_batch == 512 and spec.iteration_fixed_us == pytest.approx(430.0)
    m2 = DeviceSpec(name="Apple M2", peak_tflops={"fp16": 3.6}, mem_bw_gbps=100, mem_gib=24,
                    power_w=20, usd_per_hour=0.1, launch_overhead_us=12.0)
    spec = host_spec_for(None, m2)
    assert spec.graph_max_batch == 0 and spec.eager_launch_us == 12.0
    assert host_spec_for() == default_host_spec("cuda")
