"""Grouped expert kernels that tile each expert's tokens (llama.cpp's Metal mul_mm_id and CUDA MMQ):
the tile a batch gets, the rows a binomial load computes on average, and what it does to a price."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import binom

from moesim.costmodel import build_cost_model
from moesim.costmodel.grouped_eff import expected_padded_tokens, expert_tiles
from moesim.presets.hardware import HARDWARE
from moesim.schemas import HardwareSpec
from tests.conftest import ROOT


def test_tiles_follow_the_batch_and_stop_below_the_matvec_threshold():
    assert expert_tiles(None, 0, [1, 2048]) is None  # devices without their own tiles
    cuda = expert_tiles(128, 8, np.array([1, 8, 9, 100, 2048]))  # MMQ: mmq_x in steps of 8, at most 128
    assert cuda.tolist() == [1, 1, 16, 104, 128]
    metal = expert_tiles(32, 31, np.array([16, 31, 32, 512]))  # mul_mm_id from 32 tokens, 32-token tiles
    assert metal.tolist() == [1, 1, 32, 32]


def brute_force(mean: float, n: int, tile: int) -> float:
    x = np.arange(n + 1)
    return float((binom.pmf(x, n, mean / n) * np.ceil(x / tile) * tile).sum())


@pytest.mark.parametrize(("mean", "n", "tile"), [(64.0, 2048, 128), (128.0, 2048, 128), (32.0, 512, 32),
                                                  (40.0, 46, 32), (1.0, 46, 32), (2048.0, 8192, 32)])
def test_expected_padding_is_the_binomial_mean_of_whole_tiles(mean, n, tile):
    got = float(expected_padded_tokens([mean], n, tile)[0])
    assert got == pytest.approx(brute_force(mean, n, tile), rel=2e-3)
    assert got >= mean


def test_padding_leaves_idle_experts_and_untiled_batches_alone():
    out = expected_padded_tokens([[64.0, 0.0, 5.0]], [2048], [1])
    assert out.tolist() == [[64.0, 0.0, 5.0]]
    assert expected_padded_tokens([[64.0, 0.0]], [2048], [128])[0, 1] == 0.0


def test_a_tiled_device_prices_the_padded_rows_of_a_prompt_and_not_of_a_decode():
    spark = HardwareSpec(**HARDWARE["dgx-spark"])
    plain = spark.model_copy(update={"device": spark.device.model_copy(update={"expert_tile_tokens": None})})
    tiled_cm, plain_cm = build_cost_model(spark), build_cost_model(plain)
    n, k = 2 * 2880, 2880  # gpt-oss's gate+up projection
    # 2,048 tokens x 4 of 128 experts (64 rows each) and 1,024 tokens (32 each) both compute one whole
    # 128-token tile per expert: the same seconds, and compute-bound at the padded rows where the
    # untiled price is set by the 2.3 GB of weights it reads
    full = tiled_cm.grouped_gemm_s(np.full((1, 128), 64.0), n, k, "int8", batch_tokens=[2048.0])[0]
    half = tiled_cm.grouped_gemm_s(np.full((1, 128), 32.0), n, k, "int8", batch_tokens=[1024.0])[0]
    assert half == pytest.approx(full, rel=0.05)
    plain_full = plain_cm.grouped_gemm_s(np.full((1, 128), 64.0), n, k, "int8", batch_tokens=[2048.0])[0]
    assert full > 1.3 * plain_full
    decode = np.zeros((1, 128))
    decode[0, :4] = 1.0  # one token, 4 experts: mat-vec kernels, no tile
    assert tiled_cm.grouped_gemm_s(decode, n, k, "int8", batch_tokens=[1.0])[0] == pytest.approx(
        plain_cm.grouped_gemm_s(decode, n, k, "int8", batch_tokens=[1.0])[0], rel=0.05)


def test_batch_tokens_change_nothing_on_a_device_without_tiles():
    cm = build_cost_model(HardwareSpec(**HARDWARE["h100-sxm"]))
    loads = np.full((2, 16), 37.0)
    assert np.array_equal(cm.grouped_gemm_s(loads, 4096, 2048, "bf16"),
                          cm.grouped_gemm_s(loads, 4096, 2048, "bf16", batch_tokens=[1.0, 9999.0]))


def test_tiles_on_a_profiled_device_are_a_one_line_error():
    from moesim.errors import InputError

    h100 = HardwareSpec(**HARDWARE["h100-sxm"])
    tiled = h100.model_copy(update={"device": h100.device.model_copy(update={"expert_tile_tokens": 64})})
    with pytest.raises(InputError, match=r"^hardware\.device\.expert_tile_tokens: only the datasheet cost model"):
        build_cost_model(tiled)
    datasheet = tiled.model_copy(update={"device": tiled.device.model_copy(update={"default_profile": "datasheet"})})
    assert build_cost_model(datasheet).grouped_gemm_s(np.full((1, 4), 10.0), 256, 256) > 0


def test_a_calibration_profile_replaces_a_presets_tiles(tmp_path):
    """An Apple preset names llama.cpp's tiles; a profile calibrated on the user's own machine measured
    the kernels they run, so it prices the experts and the tiles are not an error."""
    from moesim.costmodel.model import ProfiledCostModel

    m2 = HardwareSpec(**HARDWARE["m2-ultra"])
    profiles = list((ROOT / "moesim" / "data" / "profiles").glob("*.yaml"))
    assert m2.device.expert_tile_tokens == 32 and profiles
    calibrated = m2.model_copy(update={"profile": profiles[0], "force_profile": True})
    assert isinstance(build_cost_model(calibrated), ProfiledCostModel)


@pytest.mark.parametrize(("field", "value", "words"), [
    ("expert_tile_tokens", 2000, "1024 tokens"), ("expert_tile_tokens", 0, "greater than 0"),
    ("expert_matvec_tokens", -1, "greater than or equal to 0"), ("expert_matvec_tokens", 1 << 17, "65536 tokens")])
def test_bad_tile_fields_are_one_line_errors_naming_the_field(field, value, words):
    from moesim.errors import InputError
    from moesim.loader import load_scenario

    with pytest.raises(InputError) as info:
        load_scenario("gpt-oss-120b-dgx-spark-serve", [f"hardware.device.{field}={value}"])
    message = str(info.value)
    assert "\n" not in message and f"hardware.device.{field}" in message and words in message


@pytest.mark.parametrize(("field", "value"), [("memory_efficiency", 0.4), ("compute_efficiency", 0.35),
                                              ("launch_overhead_us", 50)])
def test_a_datasheet_only_field_on_a_profile_priced_device_is_one_clear_error(field, value):
    """An H100 is priced by its shipped profile, which reads none of these: set, they changed nothing (TPOT stayed
    6.8411 ms). Simulate and check refuse them in one line naming the field; on the datasheet model they work."""
    from moesim.check import summary
    from moesim.errors import InputError
    from moesim.loader import load_scenario

    s = load_scenario("mixtral-8x7b-h100-serve", [f"hardware.device.{field}={value}"])
    with pytest.raises(InputError) as info:
        build_cost_model(s.hardware)
    message = str(info.value)
    assert "\n" not in message and message.startswith(f"hardware.device.{field}: only the datasheet cost model")
    with pytest.raises(InputError, match=f"hardware.device.{field}"):
        summary(s)
    datasheet = load_scenario("mixtral-8x7b-h100-serve", [f"hardware.device.{field}={value}",
                                                          "hardware.device.default_profile=datasheet"])
    assert build_cost_model(datasheet.hardware) is not None
