"""``simulate(scenario, seed)``: pick the engine for the workload and run it."""

from __future__ import annotations

from collections.abc import Callable

from moesim.results import SimResult
from moesim.schemas import Scenario


def simulate(scenario: Scenario, seed: int | None = None,
             progress: Callable[[int, int, str], None] | None = None) -> SimResult:
    """Play ``scenario`` and return its SimResult. ``seed`` defaults to ``scenario.routing.seed``.
    ``progress(done, total, what)``: serving runs call it every quarter second of wall clock with the
    requests finished so far (``engine.serving.simulate.simulate_serving``); a training step, which
    takes about a second at most, does not."""
    from moesim.guards import check_size

    check_size(scenario)
    seed = scenario.routing.seed if seed is None else seed
    if scenario.is_training:
        from moesim.engine.training.step import simulate_training

        return simulate_training(scenario, seed=seed)
    from moesim.engine.serving.simulate import simulate_serving

    return simulate_serving(scenario, seed=seed, progress=progress)
