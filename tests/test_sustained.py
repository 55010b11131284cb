"""A device's compute under sustained load at its power limit (hardware.device.sustained_compute_fraction).

FlashInfer PR #2899 measured a B200 running FlashAttention-4 back to back: 1,450 TFLOP/s while its clock
held 1,965 MHz, 1,237 TFLOP/s once the 1,000 W limit held it near 1,580 MHz. Compute-bound kernels in a
simulated step run at that sustained rate; memory-bound ones keep the HBM's bandwidth.
"""

from __future__ import annotations

import numpy as np
import pytest

import moesim
from moesim.costmodel import build_cost_model
from moesim.costmodel.sustained import (
    B200_BURST_TFLOPS,
    B200_SUSTAINED_COMPUTE_FRACTION,
    B200_SUSTAINED_TFLOPS,
    GB200_SUSTAINED_COMPUTE_FRACTION,
)
from moesim.errors import InputError
from moesim.presets import HARDWARE
from moesim.schemas import HardwareSpec
from moesim.validation import DEFAULT_CSV, check_row, read_table


def _cost(preset: str, **device):
    data = dict(HARDWARE[preset])
    data["device"] = dict(data["device"], **device)
    return build_cost_model(HardwareSpec(**data))


def test_the_b200_and_gb200_keep_the_measured_share_and_the_other_devices_all_of_it():
    assert B200_SUSTAINED_COMPUTE_FRACTION == pytest.approx(B200_SUSTAINED_TFLOPS / B200_BURST_TFLOPS)
    assert 0.85 < B200_SUSTAINED_COMPUTE_FRACTION < 0.86
    assert HARDWARE["b200"]["device"]["sustained_compute_fraction"] == B200_SUSTAINED_COMPUTE_FRACTION
    assert _cost("gb200-nvl72").hw.device.sustained_compute_fraction == GB200_SUSTAINED_COMPUTE_FRACTION
    for preset in ("h100-sxm", "h200", "gb300-nvl72", "b300", "a100-80gb"):
        assert _cost(preset).hw.device.sustained_compute_fraction == 1.0, preset


def _predicted(*ids: str) -> list[float]:
    """moesim's predictions of validation rows ``ids``, each from its own scenario and overrides."""
    rows = {r["id"]: r for r in read_table(DEFAULT_CSV)}
    return [check_row(rows[i], DEFAULT_CSV.parent).predicted for i in ids]


def test_the_same_dense_training_runs_as_the_measured_twins_say_across_three_blackwell_parts():
    """Same software, model and plan on three devices (Megatron-Bridge 25.11's Llama 3 8B on 8 GPUs, TRN-69..71): a
    GB200 runs 1.01-1.05x a B200's (MLPerf v5.0 LoRA 1.050, these rows 1.029 and 1.009), a GB300 1.19-1.22x a GB200's
    at the same peaks. With the GB200 at its benchmark clock moesim gave 1.20x and 1.02x."""
    b200, gb200, gb300 = _predicted("TRN-69", "TRN-70", "TRN-71")  # tokens/s per GPU
    assert 1.0 < gb200 / b200 < 1.08
    assert 1.12 < gb300 / gb200 < 1.25


def test_mlperfs_gb300_over_gb200_twin_comes_out_of_the_clocks():
    """MLPerf Training v5.1's Llama 3.1 8B on one NVL72 rack (CP2 DP36, one micro-batch, the same config on both racks,
    TRN-80/81, held out): 0.1681 s a step on GB200, 0.1474 on GB300, 1.143x. The two presets share their dense peaks
    and GEMM ratio, so the ratio is the GB200's sustained share (and the GB300's faster attention)."""
    gb200, gb300 = _predicted("TRN-80", "TRN-81")  # seconds a step
    assert gb200 / gb300 == pytest.approx(0.16806 / 0.14736, rel=0.04)


@pytest.mark.parametrize("dtype", ["bf16", "fp8", "nvfp4"])
def test_compute_bound_gemms_slow_by_the_fraction_and_memory_bound_ones_do_not(dtype):
    sustained, burst = _cost("b200"), _cost("b200", sustained_compute_fraction=1.0)
    n = 8192
    big = float(sustained.gemm_s(n, n, n, dtype)) / float(burst.gemm_s(n, n, n, dtype))
    assert big == pytest.approx(1.0 / B200_SUSTAINED_COMPUTE_FRACTION, rel=0.02)
    # a one-token decode GEMM streams its weights: the clock does not set its time
    decode = float(sustained.gemm_s(1, 28672, 8192, dtype)) / float(burst.gemm_s(1, 28672, 8192, dtype))
    assert decode == pytest.approx(1.0, abs=0.01)


def test_compute_bound_attention_slows_too():
    sustained, burst = _cost("b200"), _cost("b200", sustained_compute_fraction=1.0)
    q = np.full(2, 8192.0)
    core = [cm.attention_batch_s(q, q, 128, 128, 128, paged=False) - cm.attention_launch_s for cm in (sustained, burst)]
    assert core[0] / core[1] == pytest.approx(1.0 / B200_SUSTAINED_COMPUTE_FRACTION, rel=0.02)


def test_a_training_step_is_slower_but_its_mfu_is_still_against_the_datasheet_peak():
    runs = {f: moesim.simulate(moesim.load_scenario("mixtral-8x7b-h100-train", [
        "hardware.preset=b200", f"hardware.device.sustained_compute_fraction={f}"])) for f in (1.0, 0.853)}
    slow, fast = runs[0.853].summary, runs[1.0].summary
    assert slow["step_time_s"] > 1.05 * fast["step_time_s"]
    # the same FLOPs over a longer step against the same 2,250 TFLOP/s: MFU falls in proportion
    assert slow["mfu"] / fast["mfu"] == pytest.approx(fast["step_time_s"] / slow["step_time_s"], rel=1e-6)


@pytest.mark.parametrize("value", ["0", "1.5", "-0.2"])
def test_a_fraction_outside_0_to_1_is_refused_in_one_line(value):
    with pytest.raises(InputError) as err:
        moesim.load_scenario("mixtral-8x7b-h100-serve", ["hardware.preset=b200",
                                                         f"hardware.device.sustained_compute_fraction={value}"])
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith("hardware.device.sustained_compute_fraction")


def test_every_summary_says_what_share_of_its_compute_the_device_sustained():
    """Training, serving and check summaries carry the fraction their compute-bound kernels were priced at."""
    from moesim.check import summary as check_summary

    b200 = moesim.load_scenario("mixtral-8x7b-h100-serve", ["hardware.preset=b200"])
    h100 = moesim.load_scenario("mixtral-8x7b-h100-serve")
    assert moesim.simulate(b200).summary["sustained_compute_fraction"] == B200_SUSTAINED_COMPUTE_FRACTION
    assert moesim.simulate(h100).summary["sustained_compute_fraction"] == 1.0
    train = moesim.load_scenario("mixtral-8x7b-h100-train", ["hardware.preset=b200"])
    assert moesim.simulate(train).summary["sustained_compute_fraction"] == B200_SUSTAINED_COMPUTE_FRACTION
    assert check_summary(b200)["sustained_compute_fraction"] == B200_SUSTAINED_COMPUTE_FRACTION


def test_the_printed_table_shows_the_fraction_only_where_the_clock_is_held_down():
    from moesim.report import summary_table

    def keys(summary):
        return summary_table("t", summary).columns[0]._cells

    b200 = moesim.simulate(moesim.load_scenario("mixtral-8x7b-h100-train", ["hardware.preset=b200"])).summary
    h100 = moesim.simulate(moesim.load_scenario("mixtral-8x7b-h100-train")).summary
    assert "sustained_compute_fraction" in keys(b200) and "sustained_compute_fraction" not in keys(h100)
