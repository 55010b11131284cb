"""Shared fixtures: paths and a small valid scenario mapping to mutate in tests."""

from __future__ import annotations

import copy
from contextlib import contextmanager
from pathlib import Path

import pytest


def _has(device: str) -> bool:
    try:
        import torch
    except ImportError:
        return False
    if device == "gpu":
        return torch.cuda.is_available()
    mps = getattr(torch.backends, "mps", None)
    return mps is not None and mps.is_available()


def pytest_collection_modifyitems(config, items):
    """Tests marked ``gpu`` (CUDA) or ``mps`` (Apple) are skipped where torch sees no such device."""
    for marker, what in (("gpu", "a CUDA GPU"), ("mps", "Apple MPS")):
        marked = [item for item in items if marker in item.keywords]
        if marked and not _has(marker):
            skip = pytest.mark.skip(reason=f"needs {what}; torch sees none here")
            for item in marked:
                item.add_marker(skip)

ROOT = Path(__file__).resolve().parents[1]
SCENARIOS = sorted((ROOT / "scenarios").glob("*.yaml"))

_BASE = {
    "name": "tiny",
    "model": {"preset": "mixtral-8x7b", "n_layers": 4},
    "hardware": {"preset": "h100-sxm"},
    "plan": {"dp": 8, "tp": 1, "pp": 1, "ep": 8, "microbatches": 2},
    "workload": {"kind": "training", "global_batch_seqs": 16, "seq_len": 1024},
    "routing": {"capacity_factor": 1.25},
}


@pytest.fixture
def raw() -> dict:
    """A valid training scenario as plain data (a fresh copy per test)."""
    return copy.deepcopy(_BASE)


@pytest.fixture
def root() -> Path:
    return ROOT


@contextmanager
def console_columns(console, columns: int):
    """A rich ``Console`` printing as on a terminal ``columns`` wide, whatever runs the tests (restored after)."""
    saved = console._width, console._height
    console.size = (columns, 25)
    try:
        yield
    finally:
        console._width, console._height = saved


@pytest.fixture
def eighty_columns():
    """The CLI's tables printed as on an 80-column terminal (what the README quotes), whatever runs the tests."""
    from moesim import cli

    with console_columns(cli.out, 80):
        yield


def engine_reserve_gib(s) -> float:
    """GiB of a serving scenario's device outside its engine's budget (what CUDA does not report, and under
    kv_cache_fraction the CUDA context and communicator buffers): add it to a device's mem_gib to keep a pool a
    test was sized for (moesim.serving_reserve.engine_budget_bytes)."""
    from moesim.accounting import GIB
    from moesim.serving_reserve import engine_budget_bytes

    return s.hardware.device.mem_gib - engine_budget_bytes(s) / GIB
