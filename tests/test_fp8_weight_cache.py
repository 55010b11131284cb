"""FP8 training keeps each linear weight's FP8 cast (and, on Hopper, its transpose) through the step: Transformer
Engine caches it across microbatches, as the step's time already assumes (one weight cast a step)."""

from __future__ import annotations

import pytest

from moesim.accounting import GIB, param_counts
from moesim.costmodel.fp8 import cached_weight_bytes
from moesim.loader import load_scenario
from moesim.memory import memory_report, weight_params_per_device
from moesim.train_bytes import fp8_weight_cache_bytes
from moesim.validation import DEFAULT_CSV

H100_RUN = DEFAULT_CSV.parent / "validation" / "llama3-8b-flagperf-h100.yaml"  # Llama 3 8B, TP2 DP4, ZeRO-1


def test_bytes_per_weight_by_recipe_and_device():
    assert cached_weight_bytes("delayed", transposes=True) == 2.0  # Hopper: the FP8 copy and its transpose
    assert cached_weight_bytes("current", transposes=False) == 1.0  # Blackwell takes any layout
    assert cached_weight_bytes("mxfp8", transposes=False) == 2.0  # row- and column-wise MXFP8 copies
    assert cached_weight_bytes("delayed", transposes=True, fp8_params=True) == 0.0  # the weights are FP8 already
    assert cached_weight_bytes("mxfp8", transposes=False, fp8_params=True) == 2.0  # MXFP8 weights keep their casts


def test_the_cache_is_the_block_weights_at_two_bytes_on_hopper():
    s = load_scenario(H100_RUN, ["model.dtype=fp8", "plan.fp8_recipe=delayed"])
    dense, experts = weight_params_per_device(s.model, s.plan)
    p = param_counts(s.model)
    blocks = dense * (p.dense - p.embedding) / p.dense  # a dense model: no experts
    assert experts == 0.0
    assert fp8_weight_cache_bytes(s, dense, experts) == pytest.approx(2.0 * blocks)
    # Llama 3 8B's blocks are 6.98B parameters, over TP2: ~6.5 GiB of FP8 copies a GPU
    assert fp8_weight_cache_bytes(s, dense, experts) / GIB == pytest.approx(6.98e9 / GIB, rel=0.01)


def test_fp8_weights_term_grows_by_the_cache_and_nothing_else_does():
    fp8 = memory_report(load_scenario(H100_RUN, ["model.dtype=fp8", "plan.fp8_recipe=delayed"]))
    bf16 = memory_report(load_scenario(H100_RUN))
    s = load_scenario(H100_RUN, ["model.dtype=fp8"])
    cache = fp8_weight_cache_bytes(s, *weight_params_per_device(s.model, s.plan)) / GIB
    assert fp8.weights_gib == pytest.approx(bf16.weights_gib + cache)
    assert (fp8.gradients_gib, fp8.optimizer_gib) == pytest.approx((bf16.gradients_gib, bf16.optimizer_gib))


@pytest.mark.parametrize("override", ["model.dtype=bf16", "plan.zero_stage=3", "plan.fp8_param_gather=true"])
def test_no_cache_without_fp8_casts_or_under_zero3(override):
    s = load_scenario(H100_RUN, ["model.dtype=fp8", "plan.fp8_recipe=delayed", override])
    assert fp8_weight_cache_bytes(s, *weight_params_per_device(s.model, s.plan)) == 0.0


def test_blackwell_keeps_one_copy():
    s = load_scenario(H100_RUN, ["hardware.preset=b200", "model.dtype=fp8", "plan.fp8_recipe=current"])
    dense, experts = weight_params_per_device(s.model, s.plan)
    hopper = load_scenario(H100_RUN, ["model.dtype=fp8", "plan.fp8_recipe=current"])
    assert fp8_weight_cache_bytes(s, dense, experts) == pytest.approx(
        0.5 * fp8_weight_cache_bytes(hopper, *weight_params_per_device(hopper.model, hopper.plan)))


def test_without_the_cache_every_microbatch_casts_and_nothing_is_kept():
    """plan.fp8_weight_cache false: the memory of the casts goes and their time comes back each microbatch."""
    from moesim.simulate import simulate

    cached = load_scenario(H100_RUN, ["model.dtype=fp8", "plan.fp8_recipe=delayed"])
    fresh = load_scenario(H100_RUN, ["model.dtype=fp8", "plan.fp8_recipe=delayed", "plan.fp8_weight_cache=false"])
    assert fp8_weight_cache_bytes(fresh, *weight_params_per_device(fresh.model, fresh.plan)) == 0.0
    assert memory_report(fresh).weights_gib < memory_report(cached).weights_gib
    assert simulate(fresh, None).summary["step_time_s"] > simulate(cached, None).summary["step_time_s"]


def test_advice_offers_to_drop_the_cache_when_that_fits():
    from moesim.fit_advice import fit_explanation

    # DeepSeek-V3 on 2,048 H800 keeping the casts, on a device 14.5 GiB larger: the live tensors fit, the allocator's
    # reserve would not, without the casts it would (stage 0's two chunks, embedding and head: 8.8 GiB of casts)
    cached = load_scenario("deepseek-v3-h800-train", ["plan.fp8_weight_cache=true", "hardware.device.mem_gib=94.5"])
    _, advice = fit_explanation(cached)
    assert "expandable_segments" in advice and "or plan.fp8_weight_cache: false, which frees 8.8 GiB" in advice
    # Llama 3 8B in FP8 on 8 H100 without TP at 4,096 tokens: 88 GiB, and dropping the casts is one way to fit
    over = load_scenario(H100_RUN, ["model.dtype=fp8", "plan.fp8_recipe=delayed", "plan.tp=1", "plan.dp=8",
                                    "plan.microbatches=64", "workload.seq_len=4096"])
    assert not memory_report(over).fits
    assert "plan.fp8_weight_cache: false (every microbatch casts its weights again)" in fit_explanation(over)[1]
    # a BF16 run has no casts to drop
    bf16 = load_scenario(H100_RUN, ["plan.tp=1", "plan.dp=8", "plan.microbatches=64"])
    assert "fp8_weight_cache" not in fit_explanation(bf16)[1]


def test_a_bad_value_is_one_line_naming_the_field(capsys):
    from moesim.cli import main
    from tests.test_front_door import _one_error_line

    assert main(["simulate", "mixtral-8x7b-h100-train", "--set", "plan.fp8_weight_cache=maybe"]) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert "plan.fp8_weight_cache" in line and "boolean" in line
