"""The dgx-spark preset: its one fitted constant comes out of its source row, and the GGUF byte
accounting the batch-1 decodes rest on matches the published file sizes.

``moesim/presets/gb10_llamacpp.py`` fits the weight-streaming efficiency of llama.cpp's CUDA backend
on a GB10 to one dense llama-bench row (Qwen2.5-Coder-7B Q8_0 tg32); the MoE rows of the same page
are validation rows (SPK-01..06), not checked here.
"""

from __future__ import annotations

from pathlib import Path

import pytest

import moesim
from moesim.accounting import param_counts
from moesim.precision import parameter_bytes
from moesim.presets import gb10_llamacpp
from moesim.presets.hardware import HARDWARE
from moesim.validation import DEFAULT_CSV, scenario_ref

SOURCE = Path(__file__).parent / "data" / "qwen2.5-7b-gb10-llama-bench.yaml"
GPT_OSS = scenario_ref("validation/gpt-oss-120b-gb10-llama-bench.yaml", DEFAULT_CSV.parent)
QWEN3 = scenario_ref("validation/qwen3-30b-a3b-gb10-llama-bench.yaml", DEFAULT_CSV.parent)


def tokens_per_s(scenario, overrides=()) -> float:
    """Decode speed of a llama-bench tg32 scenario: one over the mean time per output token."""
    s = moesim.load_scenario(scenario, list(overrides))
    return 1.0 / moesim.simulate(s).summary["tpot_mean_s"]


def test_the_preset_reproduces_its_source_row_and_the_efficiency_decides_it():
    published = gb10_llamacpp.SOURCE_ROW[3]
    assert HARDWARE["dgx-spark"]["device"]["memory_efficiency"] == gb10_llamacpp.MEMORY_EFFICIENCY
    assert tokens_per_s(SOURCE) == pytest.approx(published, rel=0.005)
    # a dense batch-1 token is bound by the weights it streams: 5 % less efficiency, ~5 % slower
    slower = tokens_per_s(SOURCE, [f"hardware.device.memory_efficiency={0.95 * gb10_llamacpp.MEMORY_EFFICIENCY}"])
    assert 0.94 < slower / published < 0.965


@pytest.mark.parametrize(("scenario", "overrides", "gib"), [
    (SOURCE, [], 7.54),                                 # Qwen2.5-Coder-7B Q8_0
    (QWEN3, [], 30.25),                                 # Qwen3-Coder-30B-A3B Q8_0
    (GPT_OSS, [], 59.02),                               # gpt-oss-120b: MXFP4 experts, the rest Q8_0
    (GPT_OSS, ["model.preset=gpt-oss-20b"], 11.27),     # gpt-oss-20b
])
def test_weights_take_what_the_gguf_files_take(scenario, overrides, gib):
    """Q8_0 at 8.5 bits and MXFP4 at 4.25 on the dgx-spark preset give each model the size its
    GGUF file has (benches/dgx-spark.md), within 2 % (norms, biases and sinks are not counted)."""
    s = moesim.load_scenario(scenario, overrides)
    c = param_counts(s.model)
    weights_gib = parameter_bytes(s, c.total - c.routed_experts, c.routed_experts) / 2**30
    assert weights_gib == pytest.approx(gib, rel=0.02)


def test_llama_cpp_graphs_only_batch_one():
    """The scenarios capture a CUDA graph for batch 1 only, without padding, as llama.cpp does; a
    device without graphs would refuse the list, so the preset must be a CUDA device."""
    s = moesim.load_scenario(GPT_OSS)
    assert s.workload.cuda_graph_batch_sizes == [1] and s.workload.cuda_graph_padding is False
    from moesim.costmodel.host import platform_of

    assert platform_of(s.hardware.device.name) == "cuda"


def test_the_spark_is_a_desktop_machine_for_advice():
    """Advice to take a bigger device stays on the same side: a datacenter plan is not sent to a DGX
    Spark (119 GiB, between the H100 and the H200), nor a Spark plan to a datacenter GPU."""
    from moesim.presets.hardware import is_desktop_device

    assert is_desktop_device("NVIDIA GB10") and is_desktop_device("Apple M2 Ultra")
    assert not is_desktop_device(HARDWARE["h100-sxm"]["device"]["name"])


def test_the_preset_reproduces_its_prefill_source_row():
    """The compute efficiency is fitted on the same model's pp2048 row: one 2,048-token prompt."""
    assert HARDWARE["dgx-spark"]["device"]["compute_efficiency"] == gb10_llamacpp.COMPUTE_EFFICIENCY
    s = moesim.load_scenario(SOURCE, ["workload.prompt_tokens.value=2048", "workload.output_tokens.value=1"])
    prompt_tokens_per_s = moesim.simulate(s).summary["output_tokens_per_s"] * 2048
    assert prompt_tokens_per_s == pytest.approx(gb10_llamacpp.PREFILL_SOURCE_TOKENS_PER_S, rel=0.01)
