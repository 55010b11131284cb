"""``simulate(scenario, seed)``: pick the engine for the workload and run it."""

from __future__ import annotations

from collections.abc import Callable

from moesim.errors import InputError
from moesim.results import MAX_SEED, SimResult
from moesim.schemas import Scenario


def simulate(scenario: Scenario, seed: int | None = None,
             progress: Callable[[int, int, str], None] | None = None) -> SimResult:
    """Play ``scenario`` and return its SimResult. ``seed`` defaults to ``scenario.routing.seed``.
    ``progress(done, total, what)``: serving runs call it every quarter second of wall clock with the
    requests finished so far (``engine.serving.simulate.simulate_serving``); a training step, which
    takes about a second at most, does not."""
    from moesim.guards import check_size

    if not isinstance(scenario, Scenario):  # a name or a mapping: say which call makes one
        raise InputError(f"simulate: scenario is a {type(scenario).__name__}; pass a Scenario: "
                         "moesim.load_scenario(name or path, overrides) or moesim.loader.scenario_from_dict(mapping)")
    check_size(scenario)
    seed = scenario.routing.seed if seed is None else _seed(seed)
    if scenario.is_training:
        from moesim.engine.training.step import simulate_training

        return simulate_training(scenario, seed=seed)
    from moesim.engine.serving.simulate import simulate_serving

    return simulate_serving(scenario, seed=seed, progress=progress)


def _seed(seed) -> int:
    """``seed`` as a Python int (NumPy integers too: ``for seed in np.arange(5)``), or a one-line InputError."""
    import numbers

    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or not 0 <= int(seed) <= MAX_SEED:
        raise InputError(f"seed = {seed!r}: expected a whole number from 0 to 2**63 - 1")
    return int(seed)
