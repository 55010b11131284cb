"""Branch and bound over the pool plans of :mod:`moesim.plan_disagg`, then the whole-plan re-check.

Every pool plan starts with an analytic bound on its requests/s per device
(:meth:`moesim.plan_bounds.ServingBounds.tokens_per_s_per_device` on its stand-in: output tokens
per device, one per request for the prefill stand-in, the workload's mean per request for the
decode one; over ``1 - SERVED_TOL``, as a capacity is an offered rate). A pair of pool plans on one hardware can at best reach the continuous split of those
rates (:func:`moesim.plan_disagg.harmonic_rate`), so a pool plan whose bound, paired with the best
optimistic rate of any plan of the other pool still in play, cannot beat the best whole plan found
is pruned (``bound``). The others are evaluated best-potential first, one capacity search each
(:func:`moesim.plan_runs.capacity_runner` on the stand-in under the pool's part of the SLO), on
the sweep executors; each result is paired with every evaluated plan of the other pool at every
device budget (:func:`moesim.plan_disagg.best_split`). Once a best exists, a pool plan's search
also stops at the first probe that fails below the rate it needs to beat it, paired with that
optimistic rate (:meth:`_State.needed_tok_s`; pruned as ``needed-rate``, as the single-pool search
does). ``exhaustive`` evaluates every pool plan: the brute force the tests compare with.

Then the best ``verify`` whole plans are played whole: :func:`moesim.capacity.max_goodput` on the
disaggregated scenario under the whole SLO (:func:`whole_capacity_runner`); they rank first, by it.
Runs are kept in a :class:`~moesim.sweep_store.ResultStore` keyed by what they played (``resume``).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from moesim.engine.serving.steady import SERVED_TOL
from moesim.errors import InputError
from moesim.plan_disagg import (
    ROLES,
    DisaggSpace,
    PoolPlan,
    Split,
    best_split,
    check_slo,
    harmonic_rate,
    objective_value,
    pool_slo,
    system_raw,
)
from moesim.plan_runs import PLAN_RESUME_KEYS, RunSession, capacity_runner, reusable, run_key
from moesim.plan_search import EXACT, NEEDED_SLACK, VERIFY, PlanProgress
from moesim.plan_space import Objective, hardware_sets
from moesim.sweep_exec import PointTask
from moesim.sweep_store import check_resume, scenario_fingerprint

OBJECTIVES = ("usd_per_mtok", "tokens_per_s_per_device")
#: A capacity is an offered rate, which may exceed the rate served by ``SERVED_TOL`` (the capacity
#: search's overload test): a bound on what a plan serves, over ``1 - SERVED_TOL``, bounds its capacity.
OFFERED_SLACK = 1.0 / (1.0 - SERVED_TOL)
#: Why a pool plan left the search, in the order a whole plan takes its reason from its two pool plans.
REASONS = ("invalid", "no-fit", "slo-unreachable", "bound", "needed-rate", "failed", "slo-fails")


@dataclass
class System:
    """A whole plan: a prefill and a decode plan on one hardware, a budget and its best split."""

    hardware: str
    devices: int
    prefill: PoolPlan
    decode: PoolPlan
    split: Split
    estimate: float  # the objective of the separable estimate
    value: float | None = None  # the objective of the whole-plan re-check (None: not re-checked or failed)
    row: dict[str, Any] | None = None  # the re-check's summary row

    @property
    def label(self) -> str:
        return (f"{self.hardware} P{self.split.prefill_grains}x[{self.prefill.plan_text}] "
                f"D{self.split.decode_grains}x[{self.decode.plan_text}]")

    @property
    def checked(self) -> bool:
        return self.row is not None

    @property
    def headroom_req_s(self) -> float:
        """Requests/s the pool that does not bind could serve (more: a safer split)."""
        sp = self.split
        return max(sp.prefill_grains * self.prefill.grain_devices * self.prefill.rate_per_device,
                   sp.decode_grains * self.decode.grain_devices * self.decode.rate_per_device)

    def rank_key(self, obj: Objective, value: float | None = None) -> tuple:
        """Best first: the objective (the estimate unless ``value``), fewer devices, more headroom."""
        return obj.sort_key(self.estimate if value is None else value), self.devices, -self.headroom_req_s, self.label


@dataclass
class DisaggOutcome:
    space: DisaggSpace
    objective: Objective
    systems: list[System]  # the best split of every pair of evaluated pool plans, at every budget
    progress: PlanProgress
    wall_s: float
    slo_text: str = ""
    exhaustive: bool = False
    disagg: bool = True  # what plan_report and cli_plan test for

    def ranked(self) -> list[System]:
        """Systems with capacity, best first: the re-checked ones (by the re-check) before the others
        (by the estimate); re-checks that failed the SLO are left out."""
        ok = [x for x in self.systems if x.split.capacity_req_s > 0 and (not x.checked or x.value is not None)]
        return sorted(ok, key=lambda x: (not x.checked, x.rank_key(self.objective, x.value)))

    @property
    def best(self) -> System | None:
        r = self.ranked()
        return r[0] if r else None


class _State:
    """The pool plans in play, the best whole plan so far and the progress counts."""

    def __init__(self, space: DisaggSpace, objective: Objective, slo, exhaustive: bool) -> None:
        self.space, self.obj, self.exhaustive = space, objective, exhaustive
        self.progress = PlanProgress(len(space.pools))
        self.systems: dict[tuple, System] = {}
        self.best: System | None = None
        self.shared: dict[str, list[PoolPlan]] = {}  # stand-in key -> plans sharing it
        _bound_pools(space, slo, self.progress)
        for c in space.pools:
            if c.status == "pruned":
                self.progress.decided += 1
                self.progress.pruned[c.reason] += 1
            elif c.status == "open":
                self.shared.setdefault(c.key, []).append(c)

    def rate(self, c: PoolPlan) -> float:
        """The plan's requests/s per device: measured when known, else its bound."""
        return c.rate_per_device if c.rate_per_device is not None else c.bound

    def top_rates(self) -> dict[tuple[str, str], float]:
        """(hardware, role) -> the highest optimistic rate of a plan still in play (open or evaluated)."""
        top: dict[tuple[str, str], float] = {}
        for x in self.space.pools:
            if x.status in ("open", "done") and self.rate(x) > 0:
                top[x.hardware, x.role] = max(top.get((x.hardware, x.role), 0.0), self.rate(x))
        return top

    def potential(self, c: PoolPlan, top: dict[tuple[str, str], float]) -> float:
        """The best objective any whole plan with ``c`` can reach (continuous split, optimistic rates)."""
        other = top.get((c.hardware, "decode" if c.role == "prefill" else "prefill"))
        if not other:
            return self.worst
        return objective_value(self.obj.name, harmonic_rate(self.rate(c), other),
                               self.space.prices[c.hardware], self.space.output_tokens_per_request)

    def needed_tok_s(self, c: PoolPlan, top: dict[tuple[str, str], float]) -> float | None:
        """Output tokens/s per device of ``c``'s stand-in below which no whole plan with ``c`` beats the
        best (paired with the other pool's best optimistic rate): its capacity search stops there."""
        other = top.get((c.hardware, "decode" if c.role == "prefill" else "prefill"))
        if self.best is None or self.exhaustive or not other:
            return None
        tok = self.space.output_tokens_per_request
        b = self.best.estimate
        if self.obj.name == "tokens_per_s_per_device":
            target = b / tok  # requests/s per device of the whole plan
        else:
            target = self.space.prices[c.hardware] / (b * 1e-6) / tok if b > 0 else math.inf
        if not math.isfinite(other) or not math.isfinite(target):
            return None
        if target >= other:
            return None  # pruned by its bound already; let the search run
        need = target * other / (other - target)  # harmonic_rate(need, other) == target
        return float(f"{need * (1.0 if c.role == 'prefill' else tok):.6g}")

    @property
    def worst(self) -> float:
        return math.inf if self.obj.direction == "min" else 0.0

    def settle(self, c: PoolPlan, status: str, reason: str, detail: str = "") -> None:
        c.status, c.reason, c.detail = status, reason, detail or c.detail
        self.progress.decided += 1
        (self.progress.pruned if status == "pruned" else self.progress.evaluated)[reason] += 1

    def apply(self, c: PoolPlan, row: dict[str, Any]) -> None:
        """Fold a pool plan's capacity search into it and pair it with the other pool's plans."""
        c.row = row
        if row.get("status") != "ok":
            self.settle(c, "failed", "failed", str(row.get("reason", "")))
            return
        if row.get("hopeless"):
            self.settle(c, "pruned", "needed-rate", f"fails at {row['failed_at_req_s']:.4g} req/s per replica, below the "
                                                    f"{row['needed_req_s']:.4g} it needs to beat the best")
            return
        per_replica = float(row.get("max_goodput_req_s") or 0.0)
        t, p = c.values["plan.tp"], c.values["plan.pp"]
        c.rate_per_device = per_replica / (t * p)
        if per_replica <= 0:
            self.settle(c, "done", "slo-fails", str(row.get("capacity_limit", "")))
            return
        self.settle(c, "done", "ranked")
        for x in self.space.pools:
            if x.hardware == c.hardware and x.role != c.role and x.status == "done" and (x.rate_per_device or 0) > 0:
                pre, dec = (c, x) if c.role == "prefill" else (x, c)
                self.pair(pre, dec)

    def pair(self, pre: PoolPlan, dec: PoolPlan) -> None:
        price, tok = self.space.prices[pre.hardware], self.space.output_tokens_per_request
        for n in self.space.budgets[pre.hardware]:
            split = best_split(n, pre.grain_devices, dec.grain_devices, pre.rate_per_device, dec.rate_per_device)
            if split is None or split.capacity_req_s <= 0:
                continue
            x = System(pre.hardware, n, pre, dec, split,
                       objective_value(self.obj.name, split.capacity_req_s / n, price, tok))
            self.systems[(pre.index, dec.index, n)] = x
            if self.best is None or x.rank_key(self.obj) < self.best.rank_key(self.obj):
                self.best = x
                self.progress.best_value, self.progress.best_label = x.estimate, f"{n} devices: {x.label}"

    def pick(self, size: int) -> list[PoolPlan]:
        """Prune the open plans that cannot beat the best; the ``size`` best-potential others."""
        open_plans = [c for c in self.space.pools if c.status == "open" and not c.running]
        top = self.top_rates()
        if self.best is not None and not self.exhaustive:
            for c in open_plans:
                pot = self.potential(c, top)
                if self.obj.better(self.best.estimate, pot):  # strictly: a tie may still win on headroom
                    self.settle(c, "pruned", "bound", f"paired at best {pot:.4g}, cannot beat {self.best.estimate:.4g}")
            open_plans = [c for c in open_plans if c.status == "open"]
            top = self.top_rates()
        open_plans.sort(key=lambda c: (self.obj.sort_key(self.potential(c, top)), c.role, c.index))
        return open_plans[:size]


def _bound_pools(space: DisaggSpace, slo, progress: PlanProgress) -> None:
    """Each open plan's pool SLO and analytic bound; plans whose pool SLO cannot hold are pruned."""
    from moesim.plan_bounds import ServingBounds
    from moesim.slo import parse_slo

    bounds = ServingBounds()
    disagg = space.disagg_spec
    for c in space.pools:
        if c.status != "open":
            continue
        c.slo_text, why = pool_slo(slo, c.role, c.scenario, disagg)
        why = why or bounds.slo_unreachable(c.scenario, parse_slo(c.slo_text))
        if why:
            c.status, c.reason, c.detail = "pruned", "slo-unreachable", f"{c.role} pool: {why}"
            continue
        tok = bounds.tokens_per_s_per_device(c.scenario) * OFFERED_SLACK  # output tokens/s per device
        c.bound = tok if c.role == "prefill" else tok / space.output_tokens_per_request


def whole_capacity_runner(scenario, seed: int, slo_text: str):
    """:func:`moesim.capacity.max_goodput` on the whole disaggregated scenario: its capacity (req/s),
    cost and throughput at capacity (the summary keys ``simulate --slo`` reports) and the window's
    latencies."""
    from moesim.capacity import max_goodput, parse_slo
    from moesim.plan_runs import WINDOW_KEYS, plan_result

    cap = max_goodput(scenario, parse_slo(slo_text), seed=seed)
    keys = cap.summary_keys()
    keys.pop("capacity_note", None)
    return plan_result(scenario, seed, {**keys, **{k: cap.probe.latencies.get(k) for k in WINDOW_KEYS},
                                    "saturation_req_s": cap.saturation_req_s})


def _pool_task(c: PoolPlan, point: int, key: str, seed: int, base_dir: str, needed_tok_s: float | None,
               tokens_per_request: float) -> PointTask:
    """The capacity search of ``c``'s stand-in (stopping below ``needed_tok_s``, when given), judged
    for the replicas of one grain (the smallest pool of the plan)."""
    per_request = 1.0 if c.role == "prefill" else tokens_per_request
    return PointTask(point, key, seed, {"level": EXACT, "role": c.role, "hardware": c.hardware, "plan": c.plan_text,
                                        "devices": c.grain_devices, "needed_tok_s": needed_tok_s}, c.raw, base_dir,
                     partial(capacity_runner, slo_text=c.slo_text, needed_tok_s=needed_tok_s,
                             tokens_per_request=per_request, slack=NEEDED_SLACK, plan_dp=grain_replicas(c)))


def grain_replicas(c: PoolPlan) -> int:
    """Replicas of one grain of pool plan ``c``."""
    return int(c.pool_values(1)["plan"]["dp"])


def search_disagg(space: DisaggSpace, objective: Objective, *, slo=None, seed: int = 0, workers: int = 2,
                  dask: str | None = None, store_dir: str | Path | None = None, resume: bool = False,
                  overwrite: bool = False, exhaustive: bool = False, verify: int = 0,
                  on_progress: Callable[[PlanProgress], None] | None = None, durable: bool = False) -> DisaggOutcome:
    """The branch and bound over ``space``'s pool plans (already screened) and the whole-plan
    re-check of the ``verify`` best whole plans (see the module docstring)."""
    if objective.name not in OBJECTIVES:
        raise InputError(f"--objective {objective.name}: a disaggregated plan is ranked at capacity; allowed: "
                         f"{', '.join(OBJECTIVES)}")
    check_slo(slo)
    t0 = time.perf_counter()
    st = _State(space, objective, slo, exhaustive)
    slo_text = slo.text

    def note() -> None:
        st.progress.elapsed_s = time.perf_counter() - t0
        if on_progress:
            on_progress(st.progress)

    note()
    with RunSession(store_dir, durable=durable, workers=workers, dask=dask) as runs:
        store = runs.store
        manifest = {"tool": "plan", "scenario": space.raw.get("name", ""), "kind": "serving-disaggregated",
                    "objective": objective.name, "slo": slo_text, "seed": seed,
                    "fingerprint": scenario_fingerprint(space.raw), "units": len(st.shared)}
        if resume:
            check_resume(store.dir, manifest, PLAN_RESUME_KEYS)
        done_rows = {r.get("key"): r for r in store.open(resume=resume, overwrite=overwrite)}
        store.write_manifest(manifest)
        in_flight: dict[int, tuple[list[PoolPlan], str]] = {}

        def fold(plans: list[PoolPlan], row: dict[str, Any]) -> None:
            for c in plans:  # equal stand-ins (e.g. ep 1 with and without dp_attention) share one run
                c.running = False
                if c.status == "open":
                    st.apply(c, row)

        def on_row(row: dict[str, Any]) -> None:
            plans, key = in_flight.pop(row["point"])
            row = dict(row, key=key)
            store.append(row)
            st.progress.runs["capacity"] += 1
            fold(plans, row)
            note()

        def refill(free: int) -> list[PointTask]:
            tasks: list[PointTask] = []
            while len(tasks) < free and (picked := st.pick(free - len(tasks))):
                top = st.top_rates()
                for c in picked:
                    plans = [x for x in st.shared[c.key] if x.status == "open" and not x.running]
                    key = run_key(c.raw, EXACT, seed, c.slo_text, grain_replicas(c))
                    need = st.needed_tok_s(c, top)
                    if reusable(done_rows.get(key), need):
                        st.progress.reused += 1
                        fold(plans, done_rows[key])
                        note()
                        continue
                    for x in plans:
                        x.running = True
                    in_flight[c.index] = (plans, key)
                    tasks.append(_pool_task(c, c.index, key, seed, str(space.base_dir), need,
                                            space.output_tokens_per_request))
            return tasks

        checks: dict[int, tuple[System, str]] = {}

        def on_check(row: dict[str, Any]) -> None:
            x, key = checks.pop(row["point"])
            row = dict(row, key=key)
            store.append(row)
            st.progress.runs["re-check"] += 1
            _checked(x, row, objective)
            note()

        runs.drive(refill(max(1, workers)), on_row, refill=refill)
        tasks = []
        top = sorted(st.systems.values(), key=lambda x: x.rank_key(objective))
        for i, x in enumerate(top[:max(0, verify)]):
            whole = whole_raw(space, x)
            key = run_key(whole, VERIFY, seed, slo_text)
            if reusable(done_rows.get(key), None):
                _checked(x, done_rows[key], objective)
                st.progress.reused += 1
                continue
            point = len(space.pools) + i
            checks[point] = (x, key)
            tasks.append(PointTask(point, key, seed, {"level": VERIFY, "hardware": x.hardware, "plan": x.label,
                                                      "devices": x.devices}, whole, str(space.base_dir),
                                   partial(whole_capacity_runner, slo_text=slo_text)))
        runs.drive(tasks, on_check)
    st.progress.elapsed_s = time.perf_counter() - t0
    return DisaggOutcome(space, objective, list(st.systems.values()), st.progress, st.progress.elapsed_s, slo_text,
                         exhaustive)


def whole_raw(space: DisaggSpace, x: System) -> dict:
    """The whole plan ``x`` as a scenario mapping (its hardware at ``x.devices`` devices)."""
    sets, _ = hardware_sets(space.raw.get("hardware"), space.presets[x.hardware], x.devices)
    return system_raw(space.raw, sets, x.prefill, x.decode, x.split)


def _checked(x: System, row: dict[str, Any], objective: Objective) -> None:
    """Fold the whole plan's capacity search into ``x`` (value None when the SLO failed there)."""
    x.row = row
    value = row.get(objective.key) if row.get("status") == "ok" else None
    ok = (row.get("max_goodput_req_s") or 0) > 0 and isinstance(value, (int, float)) and math.isfinite(value)
    x.value = float(value) if ok else None


__all__ = ["ROLES", "DisaggOutcome", "System", "search_disagg", "whole_capacity_runner", "whole_raw"]
