"""Stand-in engines for sweep tests: fast, deterministic, picklable by reference.

``fake_simulate`` derives a summary from the scenario's fields (no SimPy), so tests of the
sweep machinery do not depend on the real engines' speed. Environment knobs (inherited by
worker processes): ``MOESIM_FAKE_SLEEP_S`` sleeps per point; ``MOESIM_FAKE_DIE_ONCE=path`` makes
the first worker to run a point with n_experts == 16 kill itself (SIGKILL), leaving ``path``
behind so the retry succeeds; ``MOESIM_FAKE_DIE_ALWAYS=1`` kills every worker that runs one.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

from moesim.results import SimResult


def fake_simulate(scenario, seed: int) -> SimResult:
    """A SimResult whose numbers are simple functions of experts, capacity factor and seed."""
    sleep = float(os.environ.get("MOESIM_FAKE_SLEEP_S", "0") or 0)
    if sleep:
        time.sleep(sleep)
    marker = os.environ.get("MOESIM_FAKE_DIE_ONCE")
    if scenario.model.n_experts == 16:
        if os.environ.get("MOESIM_FAKE_DIE_ALWAYS"):
            os.kill(os.getpid(), signal.SIGKILL)
        if marker and not Path(marker).exists():
            Path(marker).write_text(str(os.getpid()))
            os.kill(os.getpid(), signal.SIGKILL)
    e, cf = scenario.model.n_experts, scenario.routing.capacity_factor
    tokens_per_s = 1.0e6 * (1 + 0.01 * seed) * min(cf, 1.5) / (1 + 0.02 * e)
    summary = {
        "step_time_s": 4.0e6 / tokens_per_s, "tokens_per_s": tokens_per_s, "mfu": 0.4 / (1 + 0.01 * e),
        "dropped_fraction": max(0.0, 0.2 - 0.1 * cf) * (1 + e / 64), "fits": True,
        "usd_per_mtok": 3600.0 / tokens_per_s * cf, "compute_s": 2.0, "alltoall_s": 0.1 * e / 8,
        "bubble_s": 0.3, "peak_memory_gib": 40.0 + e,
    }
    return SimResult("training", scenario.name, seed, summary)


def failing_simulate(scenario, seed: int) -> SimResult:
    """Raises for 32 experts (an engine bug), otherwise behaves like ``fake_simulate``."""
    if scenario.model.n_experts == 32:
        raise ZeroDivisionError("division by zero in a fake engine")
    return fake_simulate(scenario, seed)
