"""The runs ``moesim plan`` sends to the sweep executors: one function per stage, picklable.

Each runner takes ``(scenario, seed)`` (the sweep executors' runner signature,
:func:`moesim.sweep_exec.run_point`) and returns a SimResult whose summary holds per-replica and
per-device numbers. Serving runs play **one replica** of the plan: the scenario (a valid plan of one
expert-parallel group, ``dp = ep``) with ``dp`` set to 1 and the group's hardware kept, so an expert
all-to-all still crosses the links it would. Replicas do not interact in the serving engine (the
router spreads requests; an EP rank's experts are priced as serving equal batches from every replica
of its group), so a plan of ``dp`` replicas serves ``dp`` times one replica's rate at the same cost
per token. Under ``plan.dp_attention`` the group's replicas run in lock-step, and the whole group
is played.
"""

from __future__ import annotations

import hashlib
import json
import math
from typing import Any

from moesim.slo import SLO_METRICS

FORMAT = 15  # part of every run's key: bump when a runner's output changes meaning

#: Probes at the rate needed to beat the best before a capacity search (each sized like the search's).
GATE_PROBES = 3


def replica_of(s) -> tuple[Any, int, int]:
    """(scenario of the replicas played, replicas played, devices they occupy)."""
    p = s.plan
    if p.dp_attention:
        return s, p.dp, p.n_devices
    return s.model_copy(update={"plan": p.model_copy(update={"dp": 1})}), 1, p.tp * p.pp


def plan_result(s, seed: int, summary: dict[str, Any]):
    """A plan-search measurement as a serving result of ``s`` (``summary`` plus ``fits``)."""
    from moesim.results import SimResult

    return SimResult("serving", s.name, seed, {**summary, "fits": True})


def saturation_runner(scenario, seed: int):
    """Every request at t=0 (:func:`moesim.saturation.saturate` of the replicas played, the run the
    capacity search starts from): output tokens generated per second per device while the queue still
    held requests, and what the capacity search reads from the run (``sat_*``, handed to
    :func:`capacity_runner` so that it does not play the run again)."""
    from moesim.saturation import saturate

    s, replicas, devices = replica_of(scenario)
    sat = saturate(s, seed)
    return plan_result(s, seed, {"sat_output_tokens_per_s_per_device": sat.output_tokens_per_s / devices,
                                 "sat_requests": sat.n_requests, "sat_output_tokens_per_s": sat.output_tokens_per_s,
                                 "sat_req_s": sat.rate_req_s, "sat_decode_p90_s": sat.decode_p90_s})


def saturation_of(row: dict[str, Any] | None):
    """The :class:`moesim.saturation.Saturation` a saturation run's ``row`` holds (None without one)."""
    from moesim.saturation import Saturation

    if not row or row.get("sat_req_s") is None:
        return None
    return Saturation(int(row["sat_requests"]), float(row["sat_output_tokens_per_s"]), float(row["sat_req_s"]),
                      float(row["sat_decode_p90_s"]))


#: Keys a capacity run keeps from the steady-state window at capacity: every latency ``--slo`` may limit, so the
#: limit that binds is in plans.csv and the table whichever it is.
WINDOW_KEYS = tuple(f"{m}_s" for m in SLO_METRICS)


class _Hopeless(Exception):
    """Raised from ``on_probe``: a probe failed below the rate the plan needs to beat the best."""

    def __init__(self, probe, needed: float) -> None:
        super().__init__(probe.reason)
        self.probe, self.needed = probe, needed


def capacity_runner(scenario, seed: int, slo_text: str, needed_tok_s: float | None = None,
                    tokens_per_request: float | None = None, slack: float = 1.1, whole: bool = False,
                    plan_dp: int | None = None, saturation=None):
    """:func:`moesim.capacity.max_goodput` with its defaults on one replica: per-replica capacity,
    the window's latencies, output tokens/s per device and $/Mtok at capacity.

    ``needed_tok_s``: output tokens/s per device the plan must serve at capacity to beat the best
    plan found. Then the rate that needs is probed first (:func:`moesim.capacity.measure`): at the
    workload's mean ``tokens_per_request``, then at the output tokens per offered request the
    probes that held served, each probe sized by the last one's e2e p90 as ``max_goodput`` sizes
    its own (at most ``GATE_PROBES``); and the capacity search stops at any probe that fails below
    that rate (all over ``slack``). A failure there means a capacity below it, where the window
    serves fewer tokens per offered request, not more (long requests are the ones left queued):
    ``hopeless``. ``whole``: play every replica of the plan (the re-check of the best plans).

    ``plan_dp``: replicas of the smallest plan the run stands for (default the scenario's). The
    replicas played are judged as that plan's sum would be (``max_goodput(replicas=...)``), so that
    an overload the whole plan's larger window shows is not lost in one replica's noise. The early
    stop, which no later run revisits, takes a probe that fails only that test once it fails again
    with twice the requests. ``saturation``: the replicas' run with every request at t=0
    (:func:`saturation_runner`'s, :func:`saturation_of`), which the capacity search would otherwise
    play again; it also tells where the search's first probe at load will be, which makes the gate
    probes at a needed rate above it redundant (that probe failing prunes the same way)."""
    from moesim.capacity import (
        first_guess_req_s,
        max_goodput,
        measure,
        parse_slo,
        probe_requests,
        verdict,
    )

    s, replicas, devices = (scenario, scenario.plan.dp, scenario.plan.n_devices) if whole else replica_of(scenario)
    judged = 1 if whole else max(1, (plan_dp or scenario.plan.dp) // replicas)  # plays stand for this many
    slo = parse_slo(slo_text)
    # tokens/s of the replicas played: ``devices`` they occupy is all of them (a lock-step group's dp x tp x pp)
    need = needed_tok_s * devices if needed_tok_s else None
    per_request = [tokens_per_request]

    def needed_rate() -> float | None:
        return need / per_request[0] / slack if need and per_request[0] else None

    def on_probe(p) -> None:
        if p.holds and p.rate_req_s > 0 and p.window.output_tokens_per_s > 0:
            per_request[0] = min(per_request[0] or math.inf, p.window.output_tokens_per_s / p.rate_req_s)
        rate = needed_rate()
        if rate is not None and not p.holds and p.rate_req_s <= rate * (1 + 1e-9):  # the gate probes at ``rate``
            # a pruned plan is never looked at again: where only the plan-wide test (its noise term
            # shrunk) fails, the window may have seen the batches still filling up, so the probe is
            # played again twice as long, and prunes only if that one fails too
            if judged > 1 and p.result is not None and not verdict(p.result.tables["requests"], slo, 1, p.result.tables.get("iterations"))[2]:
                again = measure(s, p.rate_req_s, slo, seed=seed, n_requests=2 * p.n_requests, replicas=judged)
                if again.holds:
                    return
                p = again
            raise _Hopeless(p, rate / replicas)

    first = first_guess_req_s(saturation.rate_req_s) if saturation is not None else None
    try:
        tried: set[tuple[float, int]] = set()
        e2e = None  # the last holding probe's e2e p90 sizes the next probe, as max_goodput sizes its probes
        while (rate := needed_rate()) is not None and len(tried) < GATE_PROBES:
            if first is not None and rate >= first:
                break  # the search's first probe at load is at or below the needed rate: it is the gate
            n = probe_requests(s, rate, e2e, judged)
            if (rate, n) in tried:
                break
            tried.add((rate, n))
            probe = measure(s, rate, slo, seed=seed, n_requests=n, replicas=judged)
            on_probe(probe)
            e2e = probe.window.e2e_p90_s
        cap = max_goodput(s, slo, seed=seed, on_probe=on_probe, replicas=judged, saturation=saturation)
    except _Hopeless as h:
        return plan_result(s, seed, {"hopeless": True, "needed_req_s": h.needed, "failed_at_req_s": h.probe.rate_req_s / replicas,
                                 "capacity_limit": h.probe.reason})
    ok = cap.max_goodput_req_s > 0
    tok = cap.probe.window.output_tokens_per_s / devices if ok else 0.0
    usd = s.hardware.device.usd_per_hour / 3600.0 / tok * 1e6 if ok and tok > 0 else math.nan
    return plan_result(s, seed, {
        "hopeless": False, "max_goodput_req_s": cap.max_goodput_req_s / replicas,  # per replica
        "usd_per_mtok_at_capacity": usd, "tokens_per_s_per_device_at_capacity": tok,
        **{k: cap.probe.latencies.get(k) for k in WINDOW_KEYS},
        "capacity_probes": len(cap.probes), "capacity_limit": cap.limit,
        "saturation_req_s": cap.saturation_req_s / replicas, "replicas_played": replicas,
        "replicas_judged": replicas * judged})


def run_key(unit_raw: dict, level: int, seed: int, slo_text: str, plan_dp: int | None = None) -> str:
    """A run's identity in the store: what it played (the SLO and ``plan_dp``, the replicas a capacity
    search is judged for, only matter to capacity searches, level 2 up)."""
    text = json.dumps({"raw": unit_raw, "level": level, "seed": seed, "slo": slo_text if level >= 2 else "",
                       "plan_dp": plan_dp if level >= 2 else None, "format": FORMAT}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def reusable(row: dict[str, Any] | None, needed: float | None) -> bool:
    """A stored run answers this step: any finished run, or a search stopped early (``hopeless``)
    for a best at least as easy to beat as the one now (``needed`` tokens/s at least its own)."""
    if row is None:
        return False
    if not row.get("hopeless"):
        return True
    stored = row.get("needed_tok_s")
    return needed is not None and stored is not None and needed >= stored


class InlineBackend:
    """:func:`moesim.sweep_exec.drive`'s backend interface, run in this process (``--workers 1``)."""

    broken = False
    workers = 1

    def submit(self, task):
        from moesim.sweep_exec import run_point

        return _Done(run_point(task))

    def wait_some(self, handles: list) -> list:
        return list(handles)

    def outcome(self, handle) -> dict[str, Any]:
        return handle.row

    def recover(self) -> None:
        return None

    def close(self, wait: bool = True) -> None:
        return None


class _Done:
    """A finished handle (hashable by identity: ``drive`` keys its in-flight map by handle)."""

    def __init__(self, row: dict[str, Any]) -> None:
        self.row = row

    def done(self) -> bool:
        return True


#: What a plan folder must match for ``--resume`` to continue it (``sweep_store.check_resume``): the
#: runs depend on the scenario, its kind and the seed; objectives and SLOs only rank them.
PLAN_RESUME_KEYS = (("scenario", "scenario"), ("kind", "kind"), ("seed", "seed"),
                    ("fingerprint", "scenario contents"))


class RunSession:
    """Where a plan search's runs are kept and what plays them: a result store (in a temporary
    folder unless ``store_dir``; ``resume`` / ``overwrite`` as sweeps) and a backend started at
    the first run (inline for one worker, local processes, or Dask). Used as a context manager:
    on leaving, the backend is closed (without waiting for runs in flight when an error ends the
    search), the store closed and the temporary folder removed."""

    def __init__(self, store_dir, *, durable: bool, workers: int, dask: str | None):
        import tempfile
        from pathlib import Path

        from moesim.sweep_store import ResultStore

        self.workers, self.dask, self.backend = workers, dask, None
        if dask:  # Dask reached (or found missing) before --out is touched: a failure leaves the folder as it was
            from moesim.sweep_exec import DaskBackend

            self.backend = DaskBackend(workers, None if dask == "local" else dask, option="--dask")
        self.tmp = tempfile.TemporaryDirectory(prefix="moesim-plan-") if store_dir is None else None
        self.store = ResultStore(Path(store_dir) if store_dir is not None else Path(self.tmp.name), durable=durable)

    def drive(self, tasks: list, on_row, refill=None) -> None:
        """Play ``tasks`` (and whatever ``refill`` adds) on the backend, ``on_row`` as each ends."""
        from moesim.sweep_exec import LocalBackend, drive

        if not tasks:
            return
        if self.backend is None:  # Dask's was started with the session
            self.backend = InlineBackend() if self.workers == 1 else LocalBackend(self.workers)
        drive(self.backend, tasks, on_row, window=max(1, self.workers), refill=refill)

    def __enter__(self) -> RunSession:
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        try:
            if self.backend is not None:
                self.backend.close(wait=exc_type is None)
        finally:
            self.store.close()
            if self.tmp is not None:
                self.tmp.cleanup()
        return False
