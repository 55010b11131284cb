"""Sweeps: run one scenario over a grid of field values and keep a tidy, resumable table.

``run_sweep(path, experts="8,16", capacity_factor="1.0,1.25", grid=["plan.ep=1,8"])`` expands the
cartesian product (:mod:`moesim.sweep_grid`), skips points already in the store when resuming
(:mod:`moesim.sweep_store`), runs the rest on local processes or Dask (:mod:`moesim.sweep_exec`)
and reports progress through a callback (the CLI draws it; this module never imports rich).
Invalid points (a plan that no longer divides, a model that no longer fits) become rows with
``status: invalid`` and their reason; they never stop the sweep.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from moesim.errors import InputError
from moesim.loader import apply_override, read_yaml_mapping, scenario_from_dict
from moesim.sweep_exec import DaskBackend, LocalBackend, PointTask, Runner, drive
from moesim.sweep_grid import (
    Dimension,
    Point,
    apply_point,
    build_dimensions,
    column_value,
    expand,
    parse_seeds,
)
from moesim.sweep_store import ResultStore, read_rows

__all__ = [
    "SweepOutcome",
    "SweepProgress",
    "best_row",
    "infer_direction",
    "parse_best",
    "plan_points",
    "read_rows",
    "run_sweep",
]

#: Metric name patterns whose best value is the largest (checked before the "min" ones).
_MAX_HINTS = ("per_s", "throughput", "mfu", "hfu", "goodput")
#: Metric name patterns whose best value is the smallest.
_MIN_HINTS = ("usd", "cost", "_s", "_ms", "_us", "_days", "fraction", "_gib", "_bytes", "latency",
              "ttft", "tpot", "e2e", "bubble", "dropped", "energy", "joules")


@dataclass
class SweepProgress:
    """Where a running sweep stands. Counts cover the points this run executes."""

    total: int
    ok: int = 0
    invalid: int = 0
    failed: int = 0
    skipped: int = 0  # already in the store (resume)
    elapsed_s: float = 0.0

    @property
    def done(self) -> int:
        return self.ok + self.invalid + self.failed

    @property
    def rate_per_s(self) -> float:
        """Points finished per second of wall time."""
        return self.done / self.elapsed_s if self.elapsed_s > 0 else 0.0

    @property
    def eta_s(self) -> float | None:
        """Seconds left at the current rate (None before the first point finishes)."""
        return (self.total - self.done) / self.rate_per_s if self.rate_per_s > 0 else None


@dataclass
class SweepOutcome:
    """What a sweep left behind: every row in the store (old and new) and this run's counts."""

    out_dir: Path
    rows: list[dict[str, Any]]
    progress: SweepProgress
    wall_s: float
    dims: list[str] = field(default_factory=list)
    best: dict[str, Any] | None = None


def plan_points(scenario_path: str | Path, dims: list[Dimension], seeds: str | None = None,
                sets: Iterable[str] = ()) -> tuple[dict, Path, list[Point], Any]:
    """Read the scenario (plus ``--set`` overrides), check it, and expand the grid.

    Returns ``(raw mapping, base folder, points, base Scenario)``.
    """
    path = Path(scenario_path)
    raw = read_yaml_mapping(path)
    for item in sets:
        apply_override(raw, item)
    base_dir = path.resolve().parent
    base = scenario_from_dict(raw, base_dir=base_dir)
    return raw, base_dir, expand(dims, parse_seeds(seeds, base.routing.seed)), base


def run_sweep(scenario_path: str | Path, *, experts: str | None = None,
              capacity_factor: str | None = None, grid: Iterable[str] = (), seeds: str | None = None,
              sets: Iterable[str] = (), out_dir: str | Path | None = None, resume: bool = False,
              overwrite: bool = False, executor: str = "local", workers: int = 2,
              scheduler: str | None = None, retries: int = 2, best: str | None = None,
              runner: Runner | None = None, on_progress: Callable[[SweepProgress], None] | None = None,
              durable: bool = True, dask_processes: bool = True) -> SweepOutcome:
    """Run a sweep and return its outcome. Values are the CLI's strings (``"8,16,32"``).

    ``runner(scenario, seed) -> SimResult`` replaces ``moesim.simulate`` (must be picklable);
    ``durable`` fsyncs each row (safe against power loss, slower on some disks).
    """
    if executor not in ("local", "dask"):
        raise InputError(f"--executor {executor!r}: allowed: local, dask")
    if scheduler and executor != "dask":
        raise InputError("--scheduler needs --executor dask")
    if retries < 0:
        raise InputError(f"--retries {retries}: must be >= 0")
    metric, direction = parse_best(best) if best else (None, None)
    dims = build_dimensions(experts, capacity_factor, grid)
    raw, base_dir, points, base = plan_points(scenario_path, dims, seeds, sets)
    out = Path(out_dir) if out_dir is not None else Path("sweeps") / base.name
    store = ResultStore(out, durable=durable)
    done_keys = {r.get("key") for r in store.open(resume=resume, overwrite=overwrite)}
    store.write_manifest({"scenario": str(scenario_path), "name": base.name,
                          "kind": "training" if base.is_training else "serving",
                          "dims": [d.path for d in dims], "seeds": sorted({p.seed for p in points}),
                          "sets": list(sets), "n_points": len(points)})
    todo = [p for p in points if p.key not in done_keys]
    progress = SweepProgress(total=len(todo), skipped=len(points) - len(todo))
    t0 = time.perf_counter()

    def on_row(row: dict[str, Any]) -> None:
        row = dict(row, key=keys[row["point"]])
        store.append(row)
        status = row.get("status") if row.get("status") in ("ok", "invalid") else "failed"
        setattr(progress, status, getattr(progress, status) + 1)
        progress.elapsed_s = time.perf_counter() - t0
        if on_progress:
            on_progress(progress)

    keys = {p.index: p.key for p in todo}
    tasks = [PointTask(p.index, p.key, p.seed, {k: column_value(v) for k, v in p.values.items()},
                       apply_point(raw, p), str(base_dir), runner) for p in todo]
    if on_progress:
        on_progress(progress)
    try:
        if tasks:
            backend = (LocalBackend(workers) if executor == "local"
                       else DaskBackend(workers, scheduler, processes=dask_processes))
            try:
                drive(backend, tasks, on_row, max_retries=retries)
            except BaseException:  # Ctrl-C or a RunError: do not wait for running points
                backend.close(wait=False)
                raise
            backend.close()
    finally:
        store.close()
    rows = read_rows(out)
    outcome = SweepOutcome(out, rows, progress, time.perf_counter() - t0, [d.path for d in dims])
    if metric:
        outcome.best = best_row(rows, metric, direction)
    return outcome


# ------------------------------------------------------------------------ best point
def infer_direction(metric: str) -> str:
    """``"max"`` for throughput-like metrics, ``"min"`` for costs, times and fractions."""
    name = metric.lower()
    if any(h in name for h in _MAX_HINTS):
        return "max"
    if any(name.endswith(h) if h.startswith("_") else h in name for h in _MIN_HINTS):
        return "min"
    raise InputError(f"--best {metric}: cannot tell whether smaller or larger is better; "
                     f"write {metric}:min or {metric}:max")


def parse_best(text: str) -> tuple[str, str]:
    """``"usd_per_mtok"`` -> ``("usd_per_mtok", "min")``; ``"x:max"`` sets the direction."""
    metric, _, direction = text.partition(":")
    metric = metric.strip()
    if not metric:
        raise InputError(f"--best {text!r}: name a summary metric, e.g. tokens_per_s")
    if direction and direction not in ("min", "max"):
        raise InputError(f"--best {text!r}: direction must be min or max")
    return metric, direction or infer_direction(metric)


def best_row(rows: list[dict[str, Any]], metric: str, direction: str | None = None) -> dict[str, Any] | None:
    """The ok row with the best ``metric`` (None when no ok row has it as a number)."""
    direction = direction or infer_direction(metric)
    ok = [r for r in rows if r.get("status") == "ok"]
    scored = [r for r in ok if isinstance(r.get(metric), (int, float)) and not isinstance(r.get(metric), bool)]
    if ok and not scored and not any(metric in r for r in ok):
        known = sorted({k for r in ok for k, v in r.items() if isinstance(v, (int, float))})
        raise InputError(f"--best {metric}: not a metric of these results; known: {', '.join(known)}")
    if not scored:
        return None
    pick = min if direction == "min" else max
    return pick(scored, key=lambda r: r[metric])
