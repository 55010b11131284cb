"""Sweeps: run one scenario over a grid of field values and keep a tidy, resumable table.

``run_sweep(path, experts="8,16", capacity_factor="1.0,1.25", grid=["plan.ep=1,8"])`` expands the
cartesian product (:mod:`moesim.sweep_grid`), skips points already in the store when resuming
(:mod:`moesim.sweep_store`), runs the rest on local processes or Dask (:mod:`moesim.sweep_exec`)
and reports progress through a callback (the CLI draws it; this module never imports rich).
Invalid points (a plan that no longer divides, a model that no longer fits) become rows with
``status: invalid`` and their reason; they never stop the sweep.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any

from moesim.errors import InputError
from moesim.fileio import check_runs_folder, folder_name
from moesim.loader import read_scenario
from moesim.metrics import METRICS, direction_of
from moesim.suggest import did_you_mean
from moesim.sweep_exec import (
    DaskBackend,
    LocalBackend,
    PointTask,
    Runner,
    capacity_point,
    check_scheduler,
    drive,
)
from moesim.sweep_grid import (
    Dimension,
    Point,
    apply_point,
    build_dimensions,
    column_value,
    expand,
    flatten_override,
    parse_seeds,
)
from moesim.sweep_store import (
    ROW_COLUMNS,
    ResultStore,
    check_resume,
    read_rows,
    scenario_fingerprint,
)

__all__ = [
    "SweepOutcome",
    "SweepProgress",
    "best_row",
    "infer_direction",
    "resolve_direction",
    "parse_best",
    "plan_points",
    "read_rows",
    "run_sweep",
]


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
    best_direction: str | None = None  # "min" or "max" when --best was given


#: Most points one sweep may hold: at the ~1,000 plans a minute a sweep runs, 100,000 take hours, and
#: the grid is expanded in memory before the first point runs.
MAX_POINTS = 100_000


def plan_points(scenario_path: str | Path, dims: list[Dimension], seeds: str | None = None,
                sets: Iterable[str] = ()) -> tuple[dict, Path, list[Point], Any]:
    """Read the scenario (plus ``--set`` overrides), check it, and expand the grid.

    Returns ``(raw mapping, base folder, points, base Scenario)``.
    """
    try:
        raw, base_dir, base = read_scenario(Path(scenario_path), sets)
    except InputError as exc:
        raise InputError(f"{exc}{_grid_hint(sets, str(exc))}") from None
    seed_list = parse_seeds(seeds, base.routing.seed)
    n = math.prod(len(d.values) for d in dims) * len(seed_list)
    if n > MAX_POINTS:
        sizes = " x ".join(f"{len(d.values)} {d.path}" for d in dims) + (f" x {len(seed_list)} seeds" if len(seed_list) > 1 else "")
        raise InputError(f"the grid has {n:,} points ({sizes}); at most {MAX_POINTS:,}: sweep fewer values, "
                         "or split it into several sweeps")
    return raw, base_dir, expand(dims, seed_list), base


def _grid_hint(sets: Iterable[str], message: str) -> str:
    """A hint for the common slip of listing several values in a --set (fixed) override: the error
    names that field, and its value has a comma, so the user meant to sweep it with --grid."""
    for text in sets:
        path, _, value = text.partition("=")
        path, value = path.strip(), value.strip()
        if "," in value and not value.startswith(("[", "{")) and message.startswith(path):
            return f" (--set fixes one value; to sweep several use --grid {path}={value})"
    return ""


def _check_same_sweep(out: Path, manifest: dict[str, Any]) -> None:
    """--resume continues the sweep ``out`` holds: the same scenario, swept fields and fixed --set
    overrides (more values of the same fields are fine); anything else would mix two sweeps."""
    check_resume(out, manifest, (("name", "scenario"), ("dims", "swept fields"), ("sets", "--set overrides"),
                                 ("slo", "--slo"), ("fingerprint", "scenario contents")))


def _check_sets_not_swept(dims, sets: Iterable[str]) -> None:
    """A field is either fixed (--set) or swept: the grid's value would silently win over the --set. A swept mapping
    (``--grid 'plan={tp: 1, dp: 8},...'``) is merged into its section, so it sweeps only the fields it names: a --set
    of another field of that section (``plan.recompute``) stands beside it."""
    for text in sets:
        path = text.split("=", 1)[0].strip()
        for d in dims:
            if path == d.path or (path.startswith(d.path + ".") and _names(d, path)):
                raise InputError(f"--set {path}: {d.path} is also swept; fix it with --set or sweep it, not both")


def _names(dim, path: str) -> bool:
    """Whether a value of ``dim`` sets the field ``path`` (or a section holding it, or one inside it): every value
    does unless it is a mapping, which sets only the fields it names (``flatten_override``'s paths)."""
    swept = (item.partition("=")[0] for value in dim.values for item in flatten_override(dim.path, value))
    return any(f == path or f.startswith(path + ".") or path.startswith(f + ".") for f in swept)


def run_sweep(scenario_path: str | Path, *, experts: str | None = None,
              capacity_factor: str | None = None, grid: Iterable[str] = (), seeds: str | None = None,
              sets: Iterable[str] = (), out_dir: str | Path | None = None, resume: bool = False,
              overwrite: bool = False, executor: str = "local", workers: int = 2,
              scheduler: str | None = None, retries: int = 2, best: str | None = None,
              runner: Runner | None = None, on_progress: Callable[[SweepProgress], None] | None = None,
              durable: bool = True, dask_processes: bool = True, slo: str | None = None) -> SweepOutcome:
    """Run a sweep and return its outcome. Values are the CLI's strings (``"8,16,32"``).

    ``runner(scenario, seed) -> SimResult`` replaces ``moesim.simulate`` (must be picklable);
    ``durable`` fsyncs each row (safe against power loss, slower on some disks); ``slo``
    (``"ttft_p99=2,tpot_p99=0.2"``, serving): each point is its run at capacity under it.
    """
    if executor not in ("local", "dask"):
        raise InputError(f"--executor {executor!r}: allowed: local, dask")
    if scheduler and executor != "dask":
        raise InputError("--scheduler needs --executor dask")
    if scheduler:
        check_scheduler(scheduler)
    if retries < 0:
        raise InputError(f"--retries {retries}: must be >= 0")
    if resume and overwrite:
        raise InputError("--resume and --overwrite: pass one (--resume keeps the rows in --out, --overwrite drops them)")
    metric, direction = parse_best(best) if best else (None, None)
    dims = build_dimensions(experts, capacity_factor, grid)
    _check_sets_not_swept(dims, sets)
    raw, base_dir, points, base = plan_points(scenario_path, dims, seeds, sets)
    if slo is not None:
        from moesim.capacity import parse_slo

        if base.is_training:
            raise InputError(f"--slo applies to serving scenarios; {base.name} is a training scenario")
        slo = parse_slo(slo).text  # a bad limit is refused before any point runs
    if metric and runner is None:  # the real engines: their summary keys are all registered
        direction = _check_best(metric, direction, "training" if base.is_training else "serving",
                                [*ROW_COLUMNS, *(d.path for d in dims)], slo=slo is not None)
    out = check_runs_folder(out_dir if out_dir is not None else Path("sweeps") / folder_name(base.name))
    manifest = {"tool": "sweep", "scenario": str(scenario_path), "name": base.name,
                "kind": "training" if base.is_training else "serving",
                "dims": [d.path for d in dims], "seeds": sorted({p.seed for p in points}),
                "sets": list(sets), "n_points": len(points), "slo": slo,
                "fingerprint": scenario_fingerprint(raw)}
    if resume:
        _check_same_sweep(out, manifest)
    # a Dask scheduler is reached before --out is touched: one that does not answer leaves the folder as it was
    dask = DaskBackend(workers, scheduler, processes=dask_processes) if executor == "dask" else None
    store = ResultStore(out, durable=durable)
    kept = store.open(resume=resume, overwrite=overwrite)
    done_keys = {r.get("key") for r in kept}
    # the folder's sweep after this run: the rows kept from before (a resume with more values) and these points
    manifest["n_points"] = len(done_keys | {p.key for p in points})
    manifest["seeds"] = sorted({p.seed for p in points} | {r["seed"] for r in kept if isinstance(r.get("seed"), int)})
    store.write_manifest(manifest)
    todo = _numbered_after(kept, [p for p in points if p.key not in done_keys])
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

    if slo is not None and runner is None:
        runner = partial(capacity_point, slo_text=slo)
    keys = {p.index: p.key for p in todo}
    tasks = [PointTask(p.index, p.key, p.seed, {k: column_value(v) for k, v in p.values.items()},
                       apply_point(raw, p), str(base_dir), runner) for p in todo]
    if on_progress:
        on_progress(progress)
    try:
        if tasks:
            backend = dask or LocalBackend(workers)
            try:
                drive(backend, tasks, on_row, max_retries=retries)
            except BaseException:  # Ctrl-C or a RunError: do not wait for running points
                backend.close(wait=False)
                raise
            backend.close()
        elif dask is not None:  # a resumed sweep with nothing left to run
            dask.close()
    finally:
        store.close()
    rows = read_rows(out)
    outcome = SweepOutcome(out, rows, progress, time.perf_counter() - t0, [d.path for d in dims])
    if metric:
        outcome.best_direction = direction or resolve_direction(metric, None, _columns(rows))
        outcome.best = best_row(rows, metric, outcome.best_direction)
    return outcome


def _numbered_after(kept: list[dict[str, Any]], todo: list[Point]) -> list[Point]:
    """``todo`` with each point whose number a kept row already has (a resumed sweep given more values:
    its grid is numbered afresh) renumbered after the kept rows', so that every row keeps its own."""
    taken = {r["point"] for r in kept if isinstance(r.get("point"), int)}
    free = max(taken | {p.index for p in todo}, default=-1) + 1  # past every number in use or kept
    out = []
    for p in todo:
        if p.index in taken:
            p, free = replace(p, index=free), free + 1
        out.append(p)
    return out


# ------------------------------------------------------------------------ best point
def infer_direction(metric: str) -> str:
    """Which end of ``metric`` is best: the registry's direction (:mod:`moesim.metrics`); for an
    unregistered name, the name's hint (``_per_s``: max; ``_s``, ``usd``, ``fraction``: min)."""
    direction = direction_of(metric)
    if direction is None:
        why = "neither is better" if metric in METRICS else "cannot tell whether smaller or larger is better"
        raise InputError(f"--best {metric}: {why}; write {metric}:min or {metric}:max")
    return direction


def parse_best(text: str) -> tuple[str, str | None]:
    """``"usd_per_mtok"`` -> ``("usd_per_mtok", "min")``; ``"x:max"`` sets the direction.

    The direction comes from the registry; it is None for an unregistered metric without one,
    to be read from its name once it is known to be a column (:func:`resolve_direction`).
    """
    metric, _, direction = text.partition(":")
    metric = metric.strip()
    if not metric:
        raise InputError(f"--best {text!r}: name a summary metric, e.g. tokens_per_s")
    if direction and direction not in ("min", "max"):
        raise InputError(f"--best {text!r}: direction must be min or max")
    if direction:
        return metric, direction
    return metric, infer_direction(metric) if metric in METRICS else None


def resolve_direction(metric: str, direction: str | None, columns: Iterable[str]) -> str:
    """``direction``, else the registry's, else (for a column of the results) the name's hint.

    A metric that is neither registered nor one of ``columns`` is an InputError naming close
    matches, whatever the direction.
    """
    columns = list(columns)
    if metric not in METRICS and metric not in columns:
        hint = did_you_mean(metric, [*METRICS, *columns], n=4) or "python -m moesim.metrics lists the metrics"
        raise InputError(f"--best {metric}: not a summary metric nor a column of the sweep results; {hint}")
    return direction or infer_direction(metric)


def _check_best(metric: str, direction: str | None, kind: str, columns: list[str], slo: bool = False) -> str:
    """Before running: the direction of ``--best metric`` for a sweep of ``kind`` whose rows will
    have ``columns`` besides the summary (``slo``: and the capacity keys); InputError when such rows
    cannot carry the metric."""
    m = METRICS.get(metric)
    kinds = (kind, "capacity") if slo else (kind,)
    if m is not None and not set(kinds) & set(m.kinds) and metric not in columns:
        hint = "; sweep with --slo for the capacity keys" if "capacity" in m.kinds and not slo else ""
        raise InputError(f"--best {metric}: not in a {kind} summary (only in {', '.join(m.kinds)} summaries){hint}")
    return resolve_direction(metric, direction, columns)


def _columns(rows: list[dict[str, Any]]) -> list[str]:
    return list(dict.fromkeys(k for r in rows for k in r))


def best_row(rows: list[dict[str, Any]], metric: str, direction: str | None = None) -> dict[str, Any] | None:
    """The ok row with the best ``metric`` (None when no ok row has it as a number), among the serving rows
    that kept up with their arrivals (``overloaded`` false) when there are any."""
    direction = resolve_direction(metric, direction, _columns(rows))
    ok = [r for r in rows if r.get("status") == "ok"]
    scored = [r for r in ok if isinstance(r.get(metric), (int, float)) and not isinstance(r.get(metric), bool)]
    if ok and not scored and not any(metric in r for r in ok):
        known = sorted({k for r in ok for k, v in r.items() if isinstance(v, (int, float))})
        raise InputError(f"--best {metric}: not a metric of these results; known: {', '.join(known)}")
    if not scored:
        return None
    pick = min if direction == "min" else max
    # a serving point that did not keep up with its arrivals reads cheap per token only because its queue grew:
    # the best is one that kept up, where any did
    kept_up = [r for r in scored if r.get("overloaded") is not True] or scored
    return pick(kept_up, key=lambda r: r[metric])
