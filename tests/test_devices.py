"""Calibration on each device: CPU, CUDA (marker ``gpu``) and Apple MPS (marker ``mps``).

Skipped where torch sees no such device (see ``conftest.py``); on a machine with one,
``python -m pytest -m gpu`` (or ``-m mps``) runs them. Each runs the tiny grid end to end on the
device: microbenchmarks, fit, profile round trip, validation of the reference layer.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import moesim.calibrate.run as run_mod
from moesim.calibrate import validate as validate_mod
from moesim.calibrate.grids import tiny_grid
from moesim.kernels.moe_ref import init_moe_weights, moe_forward
from moesim.kernels.timing import pick_device, time_fn

from moesim.costmodel.profile import load_profile, save_profile
from moesim.engine.routing import capacity_per_expert


def _calibrate_tiny(device: str):
    grid = replace(tiny_grid(), rounds=1)
    p = run_mod.plan(device, grid=grid, collectives=False)
    return p, *run_mod.calibrate(p, device_name=f"test {device}")


def _check_device_run(device: str, tmp_path, monkeypatch) -> None:
    p, prof, rows = _calibrate_tiny(device)
    assert prof.platform == device and prof.dtype == run_mod.DEFAULT_DTYPE[device]
    assert {"memory", "gemm", "grouped", "attention", "moe_layer"} <= set(prof.fit_error)
    assert all(r.time_s > 0 for r in rows)
    assert load_profile(save_profile(prof, tmp_path / f"{device}.yaml")) == prof
    monkeypatch.setattr(validate_mod, "grid_for", lambda dev, quick: tiny_grid())
    report = validate_mod.validate(prof, device, points=[(8, 2, 64, 1.0), (8, 1, 256, None)], min_time_s=0.005,
                                   rounds=1)
    assert len(report.rows) == 2 and all(np.isfinite(r.error_pct) and r.measured_s > 0 for r in report.rows)


DEVICES = [pytest.param("cpu", torch.float32, id="cpu"),  # the same path, exercised where CI runs
           pytest.param("cuda", torch.bfloat16, marks=pytest.mark.gpu, id="cuda"),
           pytest.param("mps", torch.float16, marks=pytest.mark.mps, id="mps")]


@pytest.mark.parametrize("device, dtype", DEVICES)
def test_timing_and_calibration_on_device(device, dtype, tmp_path, monkeypatch):
    assert pick_device(device) == device
    a = torch.randn(512, 512, device=device, dtype=dtype)
    t = time_fn(lambda: a @ a, device, min_time_s=0.01)
    assert 0 < t.median_s < 0.05
    _check_device_run(device, tmp_path, monkeypatch)


@pytest.mark.parametrize("device, dtype", DEVICES)
def test_capacity_layer_drops_like_the_simulator_on_device(device, dtype):
    w = init_moe_weights(64, 128, 8, dtype=dtype, device=device, seed=3)
    x = torch.randn(96, 64, device=device, dtype=dtype)
    out = moe_forward(x, w, 2, 1.0)
    cap = capacity_per_expert(96, 2, 8, 1.0)
    assert out.dispatch.counts == [min(n, cap) for n in out.dispatch.loads]
    assert out.out.device.type == device
