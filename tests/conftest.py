"""Shared fixtures: paths and a small valid scenario mapping to mutate in tests."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest

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
