"""What PyTorch's caching allocator reserves beyond the live tensors (moesim/allocator.py)."""

from __future__ import annotations

import statistics

import pytest

from moesim import allocator
from moesim.cli import main
from moesim.loader import load_scenario
from moesim.memory import memory_report
from moesim.simulate import simulate

QLORA = "mixtral-8x7b-qlora-1xa100"  # LoRA with full recompute: the recompute share applies


def test_shares_come_from_gmlake_readings():
    readings = allocator.GMLAKE_UTILIZATION_RECOMPUTE + allocator.GMLAKE_UTILIZATION_PLAIN
    assert all(0.5 < r < 1.0 for r in readings)
    assert len(allocator.GMLAKE_UTILIZATION_RECOMPUTE) == 47
    assert allocator.UNUSED_RECOMPUTE == pytest.approx(1 - statistics.median(allocator.GMLAKE_UTILIZATION_RECOMPUTE))
    assert allocator.UNUSED_PLAIN == pytest.approx(1 - statistics.median(allocator.GMLAKE_UTILIZATION_PLAIN))
    assert 0.2 < allocator.UNUSED_RECOMPUTE < 0.3 and allocator.UNUSED_PLAIN < 0.1  # recompute fragments more


@pytest.mark.parametrize(("alloc", "recompute", "mode", "share"), [
    ("caching", "full", "all", allocator.UNUSED_RECOMPUTE),
    ("caching", "selective", "all", allocator.UNUSED_PLAIN),  # parts of a layer, not whole layers
    ("caching", "none", "lora", allocator.UNUSED_RECOMPUTE),  # a frozen base fragments as recompute does
    ("caching", "none", "all", allocator.UNUSED_PLAIN),
    ("expandable_segments", "full", "lora", 0.0),
])
def test_unused_fraction_by_allocator_and_strategy(alloc, recompute, mode, share):
    assert allocator.unused_fraction(alloc, recompute, mode != "all") == share


def test_reserved_is_live_tensors_over_what_they_use():
    assert allocator.reserved_gib(60.0, 0.25) == pytest.approx(80.0)
    assert allocator.reserved_gib(60.0, 0.0) == 60.0


def test_training_summary_reports_reserved_and_fits_on_live_tensors():
    s = load_scenario(QLORA)
    caching = simulate(s, None).summary
    expandable = simulate(load_scenario(QLORA, ["plan.allocator=expandable_segments"]), None).summary
    assert caching["peak_reserved_gib"] == pytest.approx(
        caching["peak_memory_gib"] / (1 - allocator.UNUSED_RECOMPUTE))
    assert expandable["peak_reserved_gib"] == pytest.approx(expandable["peak_memory_gib"])
    # the allocator moves only what is reserved: the tensors, the verdict and the step stay
    for key in ("peak_memory_gib", "fits", "step_time_s"):
        assert caching[key] == expandable[key]


def test_serving_reserves_what_it_holds():
    mem = memory_report(load_scenario("mixtral-8x7b-h100-serve-online"))
    assert mem.reserved_gib == mem.total_gib


def _tight(extra: list[str]) -> list[str]:
    """A device just big enough for the QLoRA run's tensors, too small for the cache around them."""
    mem = memory_report(load_scenario(QLORA))
    assert mem.reserved_gib < mem.capacity_gib  # uncapped on the 80 GiB A100
    # the device is what the tensors may have plus what CUDA and NCCL hold beside them (moesim.train_reserve)
    gib = (mem.total_gib + mem.reserved_gib) / 2 + load_scenario(QLORA).hardware.device.mem_gib - mem.capacity_gib
    return [f"hardware.device.mem_gib={gib:.2f}", *extra]


def test_tight_fit_advises_expandable_segments(capsys):
    s = load_scenario(QLORA, _tight([]))
    summary = simulate(s, None).summary
    assert summary["fits"] is True and summary["fits_reason"] == ""
    assert "expandable_segments:True" in summary["fits_advice"]
    # the allocator frees its cache before it fails, so what it reserves stops at the device
    assert summary["peak_reserved_gib"] == summary["memory_capacity_gib"] > summary["peak_memory_gib"]
    assert summary["memory_capacity_gib"] < s.hardware.device.mem_gib  # less the CUDA context on one GPU
    fixed = simulate(load_scenario(QLORA, _tight(["plan.allocator=expandable_segments"])), None).summary
    assert fixed["fits"] is True and fixed["fits_advice"] == ""
    assert main(["simulate", QLORA, *sum((["--set", o] for o in _tight([])), [])]) == 0
    out = capsys.readouterr().out
    assert "tight:" in out and "does not fit" not in out


def test_bad_allocator_is_one_line(capsys):
    assert main(["check", QLORA, "--set", "plan.allocator=cudaMalloc"]) == 2
    lines = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert len(lines) == 1 and "plan.allocator" in lines[0]


def test_tpu_has_no_caching_allocator(root):
    s = load_scenario(str(root / "moesim" / "data" / "validation" / "switch-base-128-tpuv3.yaml"))
    assert s.plan.allocator == "caching"  # the default, which XLA has no use for
    mem = memory_report(s)
    assert mem.reserved_gib == mem.total_gib
