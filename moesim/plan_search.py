"""Branch and bound over the plans of :mod:`moesim.plan_space`: the cheapest plan that meets the SLO.

Every evaluation unit starts with an analytic bound (:mod:`moesim.plan_bounds`: an optimistic
objective value). The search runs the units with the best bounds on the sweep executors
(:mod:`moesim.sweep_exec`: local processes or Dask, a dead worker's unit retried; ``--workers 1``
runs in this process) and records each run in a :class:`~moesim.sweep_store.ResultStore` keyed by
what it ran, so ``resume`` reuses finished runs (a capacity search stopped early only where the
best it had to beat was no better than the best now). A serving unit (one replica,
:mod:`moesim.plan_runs`) is refined in steps, each one simulation or search:

1. saturation: every request at t=0; its output tokens/s per device times ``SAT_SLACK`` bounds what
   the replica serves at capacity;
2. capacity: :func:`moesim.capacity.max_goodput` with its default probe sizes: the objective. Once a
   best plan exists, the search of a unit stops at the first probe that fails below the rate the
   unit needs to beat it (over ``NEEDED_SLACK``): pruned as ``needed-rate``.

3. re-check (``verify``, the CLI's ``--verify``, default 1): the best plans' capacity search again on
   the whole plan (every replica, at its fewest devices), which ranks them: the replicas of a plan
   share its router, which the one-replica search leaves out.

A training unit is simulated once. Whenever a worker is free, the open units whose bound cannot
beat the best objective found are pruned and the best-bounded other one runs its next step
(:func:`moesim.sweep_exec.drive`'s ``refill``); the search ends when none is left. ``exhaustive``
runs step 2 to the end on every valid unit (no pruning): the brute force the tests compare with.

Probes of a fixed, smaller size (``max_goodput(n_requests=...)``) were tried for the search stage and
rejected: 400 requests per probe put Mixtral 8x7B on one H100 at 31 req/s against 18.9 with the
default sizes (too short a run to see the queue grow), so they cannot rank plans.
"""

from __future__ import annotations

import math
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from moesim.plan_bounds import ServingBounds, mean_output_tokens, rate_to_objective, training_bound
from moesim.plan_runs import (
    PLAN_RESUME_KEYS,
    RunSession,
    capacity_runner,
    reusable,
    run_key,
    saturation_of,
    saturation_runner,
)
from moesim.plan_space import Candidate, Objective, Space, build
from moesim.sweep_exec import PointTask
from moesim.sweep_store import check_resume, read_rows, scenario_fingerprint

#: Saturation throughput times this bounds the throughput at capacity. A plan serves at most its
#: saturated throughput; in the README's Mixtral search the 15 shapes searched to the end served
#: 0.65-0.97 of it at capacity (1.2 until one replica was judged for its plan, when up to ~1.1 held).
SAT_SLACK = 1.1
#: A capacity search stops below the rate needed to beat the best divided by this (noise in the
#: window's tokens per request).
NEEDED_SLACK = 1.1
BOUND, SATURATION, EXACT, VERIFY = 0, 1, 2, 3  # a unit's levels: what is known of it
PRUNE_REASONS = ("invalid", "no-fit", "slo-unreachable", "dominated", "bound", "bound-saturation", "needed-rate")
#: Objective values equal to this many significant digits are a tie (the tables show at most 5), which
#: the memory headroom breaks: ZeRO-1 and ZeRO-2 often price the same step, and ZeRO-2 holds less.
TIE_DIGITS = 6


def tie_value(objective: Objective, value: float) -> float:
    """``value``'s sort key (smaller is better) rounded to :data:`TIE_DIGITS` significant digits:
    plans whose objectives differ by float noise only compare equal on it."""
    key = objective.sort_key(value)
    return float(f"{key:.{TIE_DIGITS}g}") if math.isfinite(key) else key


def rank_key(objective: Objective, u: Unit) -> tuple[float, float]:
    """How units rank before their devices and labels: the objective (to :data:`TIE_DIGITS` digits),
    then the more memory left free on each device (GiB; unknown counts as none)."""
    return tie_value(objective, u.value), -(u.headroom_gib if u.headroom_gib is not None else -math.inf)


@dataclass
class Unit:
    """One evaluation: its scenario mapping, the candidates that share it, its bound and result."""

    index: int
    key: str
    raw: dict
    scenario: Any
    candidates: list[Candidate]
    bound: float
    level: int = BOUND
    status: str = "open"  # open | pruned | done | failed
    running: int | None = None  # the level of its run in flight
    row: dict[str, Any] | None = None
    saturation: Any = None  # moesim.saturation.Saturation of its saturation run, handed to its capacity search
    value: float | None = None  # the objective, when done and ranked (per replica, or re-checked)
    estimate: float | None = None  # the one-replica objective, once the whole plan re-checked it
    checked_devices: int | None = None  # devices of the whole plan the re-check played
    headroom_gib: float | None = None  # device memory its screened peak leaves free (GiB per device)

    @property
    def devices(self) -> int:
        return min(c.devices for c in self.candidates)

    @property
    def label(self) -> str:
        c = self.candidates[0]  # serving: the replica's shape (every candidate's but dp); training: the plan
        return f"{c.hardware} {c.plan_text if 'plan.zero_stage' in c.values else c.plan_text.split(' ', 1)[-1]}"


@dataclass
class PlanProgress:
    candidates: int
    decided: int = 0
    pruned: Counter = field(default_factory=Counter)
    evaluated: Counter = field(default_factory=Counter)  # ranked / slo-fails / failed candidates
    runs: Counter = field(default_factory=Counter)  # simulations by stage (this run, not reused)
    reused: int = 0
    best_value: float | None = None
    best_label: str = ""
    elapsed_s: float = 0.0

    @property
    def left(self) -> int:
        return self.candidates - self.decided


@dataclass
class PlanOutcome:
    space: Space
    objective: Objective
    units: list[Unit]
    progress: PlanProgress
    wall_s: float
    slo_text: str = ""
    exhaustive: bool = False

    def ranked(self) -> list[tuple[Candidate, Unit]]:
        """Candidates of units with an objective value, best first: the plans re-checked whole
        first, then the others (ties, equal to TIE_DIGITS digits: more memory headroom first, then fewer
        devices)."""
        pairs = [(c, u) for u in self.units if u.value is not None for c in u.candidates]
        return sorted(pairs, key=lambda cu: (cu[1].checked_devices is None, *rank_key(self.objective, cu[1]),
                                             cu[0].devices, cu[0].hardware, cu[0].plan_text))

    @property
    def best(self) -> tuple[Candidate, Unit] | None:
        r = self.ranked()
        return r[0] if r else None


class _Search:
    """The state of one search: units, the best one, the store, progress."""

    def __init__(self, space: Space, objective: Objective, slo, seed: int, exhaustive: bool,
                 on_progress: Callable[[PlanProgress], None] | None) -> None:
        self.space, self.objective, self.seed, self.exhaustive = space, objective, seed, exhaustive
        self.slo_text = slo.text if slo is not None else ""
        self.on_progress = on_progress
        self.t0 = time.perf_counter()
        self.progress = PlanProgress(len(space.candidates))
        for c in space.candidates:
            if c.status == "pruned":
                self.progress.pruned[c.reason] += 1
                self.progress.decided += 1
        self.units = _units(space, objective, slo, self.progress)
        self.best: Unit | None = None
        self.mean_output = None if space.training else mean_output_tokens(space.units)

    def note(self) -> None:
        self.progress.elapsed_s = time.perf_counter() - self.t0
        if self.on_progress:
            self.on_progress(self.progress)

    def settle(self, u: Unit, status: str, reason: str = "", detail: str = "") -> None:
        u.status = status
        for c in u.candidates:
            c.status = "pruned" if status == "pruned" else "evaluated"
            c.reason = reason
            c.detail = detail or c.detail
            self.progress.decided += 1
            (self.progress.pruned if status == "pruned" else self.progress.evaluated)[reason] += 1

    def apply(self, u: Unit, level: int, row: dict[str, Any]) -> None:
        """Fold one run's row into its unit."""
        obj = self.objective
        if row.get("status") != "ok":
            self.settle(u, "failed", "failed", str(row.get("reason", "")))
            return
        if level == SATURATION:
            u.saturation = saturation_of(row)  # the capacity search starts from this run
            sat = rate_to_objective(obj, float(row["sat_output_tokens_per_s_per_device"]) * SAT_SLACK, u.scenario)
            u.bound = max(u.bound, sat) if obj.direction == "min" else min(u.bound, sat)
            u.level = SATURATION
            return
        if row.get("hopeless"):
            self.settle(u, "pruned", "needed-rate", f"fails at {row['failed_at_req_s']:.4g} req/s per replica, below "
                                                    f"the {row['needed_req_s']:.4g} it needs to beat the best: "
                                                    f"{row.get('capacity_limit', '')}")
            return
        u.row, u.level = row, EXACT
        value = row.get(obj.key)
        slo_fails = not self.space.training and not (row.get("max_goodput_req_s") or 0) > 0
        if slo_fails or not isinstance(value, (int, float)) or not math.isfinite(value):
            self.settle(u, "done", "slo-fails" if slo_fails else "failed",
                        str(row.get("capacity_limit", "")) if slo_fails else f"no {obj.key}")
            return
        u.value = float(value)
        self.settle(u, "done", "ranked")
        b = self.best
        if b is None or obj.better(u.value, b.value) or (u.value == b.value and u.devices < b.devices):
            self.best = u
            self.progress.best_value, self.progress.best_label = u.value, u.label

    def next_step(self, u: Unit) -> tuple[int, float | None]:
        """(level of the unit's next run, output tokens/s per device it needs to beat the best, or None)."""
        if self.space.training or self.exhaustive or self.objective.name == "ttft_p99_s":
            return EXACT, None
        if u.level == BOUND:
            return SATURATION, None
        return EXACT, self.needed_tokens(u) if self.best is not None and self.mean_output else None

    def needed_tokens(self, u: Unit) -> float | None:
        """Output tokens/s per device at which ``u`` would match the best objective."""
        best = self.best.value
        if self.objective.name == "tokens_per_s_per_device":
            tok = best
        else:
            tok = u.scenario.hardware.device.usd_per_hour / 3600.0 / best * 1e6 if best > 0 else None
        if tok is None or not math.isfinite(tok) or tok <= 0:
            return None
        return float(f"{tok:.6g}")

    def pick(self, size: int) -> list[Unit]:
        """Prune the open units whose bound cannot beat the best; the ``size`` best-bounded idle others.

        Until a best exists, one evaluation at a time runs (without a best to beat it cannot stop
        early); the other workers run the cheaper steps of the next units."""
        open_units = [u for u in self.units if u.status == "open" and u.running is None]
        if self.best is not None and not self.exhaustive:
            for u in open_units:
                if not self.objective.better(u.bound, self.best.value):
                    self.settle(u, "pruned", "bound" if u.level == BOUND else "bound-saturation",
                                f"bound {u.bound:.4g} cannot beat {self.best.value:.4g}")
            open_units = [u for u in open_units if u.status == "open"]
        open_units.sort(key=lambda u: (self.objective.sort_key(u.bound), u.devices, u.label))
        if self.best is None and not self.exhaustive:
            exact = sum(1 for u in self.units if u.running == EXACT)
            picked = []
            for u in open_units:
                if self.next_step(u)[0] == EXACT:
                    if exact:
                        continue
                    exact += 1
                picked.append(u)
            open_units = picked
        return open_units[:size]

    def checked(self, u: Unit, c: Candidate, row: dict[str, Any]) -> None:
        """Fold the re-check of ``u``'s whole plan (candidate ``c``) into it: its objective replaces the
        one-replica one; its capacity per replica scales the unit's other candidates."""
        u.estimate, u.checked_devices, u.level = u.value, c.devices, VERIFY
        value = row.get(self.objective.key) if row.get("status") == "ok" else None
        ok = (row.get("max_goodput_req_s") or 0) > 0 and isinstance(value, (int, float)) and math.isfinite(value)
        if not ok:
            u.value = None
            for x in u.candidates:
                x.reason = "slo-fails" if row.get("status") == "ok" else "failed"
                x.detail = f"re-checked on {c.devices} devices: {row.get('capacity_limit') or row.get('reason', '')}"
                self.progress.evaluated["ranked"] -= 1
                self.progress.evaluated[x.reason] += 1
            return
        u.row = row  # capacity_runner reports capacity per replica: the unit's other candidates scale it
        u.value = float(value)

    def runner(self, level: int, rate: float | None, plan_dp: int | None = None, saturation=None):
        if self.space.training:
            return None  # moesim.simulate
        if level == SATURATION:
            return saturation_runner
        return partial(capacity_runner, slo_text=self.slo_text, needed_tok_s=rate,
                       tokens_per_request=self.mean_output, slack=NEEDED_SLACK, plan_dp=plan_dp, saturation=saturation)


def search(space: Space, objective: Objective, *, slo=None, seed: int = 0, workers: int = 2,
           dask: str | None = None, store_dir: str | Path | None = None, resume: bool = False,
           overwrite: bool = False, exhaustive: bool = False, verify: int = 0,
           on_progress: Callable[[PlanProgress], None] | None = None, durable: bool = False) -> PlanOutcome:
    """Run the branch and bound over ``space`` (already screened), re-check the ``verify`` best serving
    plans whole, and return every unit's state."""
    if hasattr(space, "pools"):  # disaggregated: pool plans, then the split (moesim.plan_disagg_search)
        from moesim.plan_disagg_search import search_disagg

        return search_disagg(space, objective, slo=slo, seed=seed, workers=workers, dask=dask, store_dir=store_dir,
                             resume=resume, overwrite=overwrite, exhaustive=exhaustive, verify=verify,
                             on_progress=on_progress, durable=durable)
    st = _Search(space, objective, slo, seed, exhaustive, on_progress)
    st.note()  # what screening and the SLO check pruned, before any run
    with RunSession(store_dir, durable=durable, workers=workers, dask=dask) as runs:
        _play(st, space, runs, seed, verify, resume, overwrite)
    st.progress.elapsed_s = time.perf_counter() - st.t0
    return PlanOutcome(space, objective, st.units, st.progress, st.progress.elapsed_s, st.slo_text, exhaustive)


def _play(st: _Search, space: Space, runs: RunSession, seed: int, verify: int, resume: bool, overwrite: bool) -> None:
    """The runs of one search: the branch and bound's, then the re-checks of the best plans whole."""
    store = runs.store
    manifest = {"tool": "plan", "scenario": space.raw.get("name", ""), "kind": "training" if space.training else "serving",
                "objective": st.objective.name, "slo": st.slo_text, "seed": seed,
                "fingerprint": scenario_fingerprint(space.raw), "units": len(st.units)}
    if resume:
        check_resume(store.dir, manifest, PLAN_RESUME_KEYS)
    done_rows = {r.get("key"): r for r in store.open(resume=resume, overwrite=overwrite)}
    store.write_manifest(manifest)
    names = {SATURATION: "saturation", EXACT: "simulate" if space.training else "capacity", VERIFY: "re-check"}
    in_flight: dict[int, tuple[Unit, int, str]] = {}

    def on_row(row: dict[str, Any]) -> None:
        u, level, key = in_flight.pop(row["point"])
        u.running = None
        row = dict(row, key=key)
        store.append(row)
        st.progress.runs[names[level]] += 1
        st.apply(u, level, row)
        st.note()

    def refill(free: int) -> list[PointTask]:
        tasks: list[PointTask] = []
        while len(tasks) < free and (picked := st.pick(free - len(tasks))):
            for u in picked:
                level, rate = st.next_step(u)
                plan_dp = None if space.training else smallest_dp(u)
                key = run_key(u.raw, level, seed, st.slo_text, plan_dp)
                if reusable(done_rows.get(key), rate):  # resume: this run is already in the store
                    st.apply(u, level, done_rows[key])
                    st.progress.reused += 1
                    st.note()
                    continue
                point = 3 * u.index + level
                in_flight[point] = (u, level, key)
                u.running = level
                c = u.candidates[0]
                tasks.append(PointTask(point, key, seed, {"level": level, "hardware": c.hardware, "plan": c.plan_text,
                                                          "devices": u.devices, "needed_tok_s": rate},
                                       u.raw, str(space.base_dir), st.runner(level, rate, plan_dp, u.saturation)))
        return tasks

    def on_check(row: dict[str, Any]) -> None:
        u, c, key = checks.pop(row["point"])
        row = dict(row, key=key)
        store.append(row)
        st.progress.runs[names[VERIFY]] += 1
        st.checked(u, c, row)
        st.note()

    checks: dict[int, tuple[Unit, Candidate, str]] = {}
    runs.drive(refill(max(1, runs.workers)), on_row, refill=refill)
    tasks = []
    for u in _top_units(st, verify if not space.training else 0):
        c = min(u.candidates, key=lambda x: (x.devices, x.plan_text))
        _, whole = build(space.raw, c.overrides(), space.base_dir)
        key = run_key(whole, VERIFY, seed, st.slo_text)
        if reusable(done_rows.get(key), None):
            st.checked(u, c, done_rows[key])
            st.progress.reused += 1
            continue
        point = 3 * len(st.units) + u.index
        checks[point] = (u, c, key)
        tasks.append(PointTask(point, key, seed, {"level": VERIFY, "hardware": c.hardware, "plan": c.plan_text,
                                                  "devices": c.devices},
                               whole, str(space.base_dir), partial(capacity_runner, slo_text=st.slo_text, whole=True)))
    runs.drive(tasks, on_check)


def smallest_dp(u: Unit) -> int | None:
    """Replicas of the smallest plan of ``u`` (a serving unit's capacity search is judged for them, see
    :func:`moesim.plan_runs.capacity_runner`); None without candidates."""
    dps = [x.values["plan.dp"] for x in u.candidates if "plan.dp" in x.values]
    return min(dps) if dps else None


def _top_units(st: _Search, k: int) -> list[Unit]:
    """The ``k`` best evaluated units (distinct replica shapes)."""
    done = sorted((u for u in st.units if u.value is not None), key=lambda u: (*rank_key(st.objective, u),
                                                                               u.devices, u.label))
    return done[:max(0, k)]


def _units(space: Space, objective: Objective, slo, progress: PlanProgress) -> list[Unit]:
    """Units with their analytic bounds; serving units whose SLO cannot hold are pruned here."""
    groups: dict[str, list[Candidate]] = {}
    for c in space.candidates:
        if c.status == "open":
            groups.setdefault(c.unit, []).append(c)
    bounds = ServingBounds()
    units = []
    for i, (key, cands) in enumerate(groups.items()):
        info = space.units[key]
        s = info["scenario"]
        if space.training:
            bound = training_bound(s, objective)
        elif objective.name == "ttft_p99_s":
            bound = bounds.ttft_lower(s)
        else:
            bound = rate_to_objective(objective, bounds.tokens_per_s_per_device(s), s)
        u = Unit(i, key, info["raw"], s, cands, float(bound), headroom_gib=info.get("headroom_gib"))
        why = bounds.slo_unreachable(s, slo) if slo is not None and not space.training else ""
        if why:
            u.status = "pruned"
            for c in cands:
                c.status, c.reason, c.detail = "pruned", "slo-unreachable", why
                progress.pruned["slo-unreachable"] += 1
                progress.decided += 1
        units.append(u)
    return units


def stored_runs(store_dir: str | Path) -> list[dict[str, Any]]:
    """The runs recorded in a plan's store (for inspection and tests)."""
    return read_rows(store_dir)
