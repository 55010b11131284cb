"""One calibration run: pick the device, run every microbenchmark, fit the profile.

``plan`` resolves the device and grid (so a caller can size a progress bar); ``measure`` runs the
benchmarks; ``fit_profile`` (in ``fit_local``) turns the rows into a Profile. Nothing is written
here: the caller saves the profile atomically when everything has succeeded.
"""

from __future__ import annotations

import datetime as _dt
import platform
import subprocess
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from moesim.calibrate.collectives import (
    CollectiveError,
    available_ranks,
    measure_collectives,
    to_measurements,
)
from moesim.calibrate.fit import round_sig
from moesim.calibrate.fit_local import DeviceInfo, fit_profile
from moesim.calibrate.grids import Grid, grid_for
from moesim.calibrate.microbench import (
    InputCache,
    Measurement,
    activation_points,
    attention_points,
    cache_budget,
    copy_points,
    dispatch_points,
    expert_fn_for,
    gemm_points,
    gemm_tile_points,
    grouped_points,
    layer_points,
    measure_points,
    router_points,
    shape_label,
)
from moesim.kernels.timing import Interleaved, PrecisionRule, machine_load, pick_device

from moesim.costmodel.profile import (
    Profile,
    Reference,
    TimedPoint,
    TimingSpec,
    normalise_device_name,
)
from moesim.presets import HARDWARE

DEFAULT_DTYPE = {"cpu": "fp32", "cuda": "bf16", "mps": "fp16"}


@dataclass(frozen=True)
class Plan:
    """A resolved calibration: device, dtype, grouped implementation, grid."""

    device: str
    dtype: str
    impl: str
    grid: Grid
    quick: bool
    threads: int  # torch CPU threads while measuring
    collective_ranks: int = 0  # processes of the all-to-all/all-reduce step (0: skipped)

    def count(self) -> int:
        """Timed points of the whole run (for the progress bar): the grid's and the collectives'."""
        return self.grid.count() + (self.grid.coll_repeats if self.collective_ranks else 0)  # one tick per pass


def plan(device: str = "auto", quick: bool = False, dtype: str | None = None, grid: Grid | None = None,
         threads: int = 0, collectives: bool = True) -> Plan:
    """Resolve ``device`` ('auto' picks cuda, then mps, then cpu) and the grid to measure.

    ``collectives``: also time all-to-all and all-reduce through ``torch.distributed`` where more
    than one rank is possible (``calibrate.collectives.available_ranks``: 2 gloo processes on a CPU
    with 2 or more cores, one NCCL rank per GPU with several GPUs) and the grid has message sizes.

    ``threads`` 0 picks one thread on CPU and torch's default elsewhere. One CPU thread is timed by
    its own CPU clock (``kernels.timing``), which a busy shared machine does not disturb; with
    several threads the clock is wall time and a 2-thread OpenMP region stalls whenever another
    process holds a core.
    """
    dev = pick_device(device)
    impl, _ = expert_fn_for(dev)
    n = threads or (1 if dev == "cpu" else torch.get_num_threads())
    g = grid or grid_for(dev, quick)
    ranks = available_ranks(dev) if collectives and g.coll_bytes else 0
    return Plan(device=dev, dtype=dtype or DEFAULT_DTYPE[dev], impl=impl, grid=g, quick=quick, threads=n,
                collective_ranks=ranks)


@contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Run with ``n`` torch CPU threads, restoring the previous count afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@dataclass(frozen=True)
class Measured:
    """The rows of one measurement run and how it went (``timing``: rounds, precision, load)."""

    rows: list[Measurement]
    timing: TimingSpec


def rule_for(g: Grid) -> PrecisionRule:
    """The grid's precision rule: at least ``rounds`` samples, at most ``max_rounds``, ``precision``."""
    return PrecisionRule(target=g.precision, min_samples=g.rounds, max_samples=max(g.max_rounds, g.rounds))


def grid_points(p: Plan, cache: InputCache) -> list:
    """Every point of the plan's grid (``microbench.Point``), benchmark by benchmark."""
    g = p.grid
    return (copy_points(g, p.device, cache) + gemm_points(g, p.device, p.dtype, cache)
            + gemm_tile_points(g, p.device, p.dtype, cache)
            + grouped_points(g, p.device, p.dtype, p.impl, cache) + attention_points(g, p.device, p.dtype, cache)
            + router_points(g, p.device, cache) + activation_points(g, p.device, p.dtype, cache)
            + dispatch_points(g, p.device, cache)
            + layer_points(g.layer_points, g.layer_d_model, g.layer_ffn, p.device, p.dtype, p.impl, cache))


def measure(p: Plan, tick: Callable[[str], None] = lambda _: None,
            on_round: Callable[[int, int], None] | None = None) -> Measured:
    """Time every microbenchmark of the plan (no autograd), shapes interleaved across rounds.

    Each round samples every point still short of its precision (``rule_for``); a burst of load
    from another process skews one sample of many points rather than every sample of one, and
    an outlying sample is set aside and re-measured. Only the first round is sure to run: past
    ``grid.budget_s`` no round starts (nor sample is taken), so a machine too busy for the
    minimum rounds keeps ``--quick`` within its time and the profile records the points' fewer
    samples. The machine's load before and after is kept.
    """
    g = p.grid
    rule = rule_for(g)
    before = machine_load()
    with torch_threads(p.threads), torch.inference_mode():
        points = grid_points(p, InputCache(cache_budget(p.device)))
        rows, run = measure_points(points, p.device, g.min_time_s, rule, g.budget_s, tick, on_round=on_round,
                                   guaranteed=1)
    return Measured(rows=rows, timing=timing_spec(rows, run, rule, g.budget_s, p.threads, before, machine_load()))


def timing_spec(rows: list[Measurement], run: Interleaved, rule: PrecisionRule, budget_s: float, threads: int,
                before: dict, after: dict) -> TimingSpec:
    """The profile's record of a measurement run: the rule, the rounds, the load, each point's spread."""
    spreads = [100.0 * r.spread for r in rows]
    return TimingSpec(
        precision_pct=round_sig(100 * rule.target, 3), min_rounds=rule.min_samples, max_rounds=rule.max_samples,
        rounds=run.rounds, budget_s=budget_s if budget_s != float("inf") else 0.0, wall_s=round_sig(run.wall_s, 4),
        out_of_time=run.out_of_time, cpus=before["cpus"], threads=threads, load_before=before["loadavg"],
        load_after=after["loadavg"], points=len(rows), converged=run.converged(),
        spread_median_pct=round_sig(float(np.median(spreads)), 3) if spreads else 0.0,
        spread_p90_pct=round_sig(float(np.percentile(spreads, 90)), 3) if spreads else 0.0,
        point_spreads=[TimedPoint(kind=r.kind, shape=shape_label(r.params), us=round_sig(r.time_s * 1e6, 5),
                                  spread_pct=round_sig(100 * r.spread, 3), ci_pct=round_sig(100 * r.ci, 3),
                                  samples=r.samples, outliers=r.outliers) for r in rows])


def calibrate(p: Plan, device_name: str | None = None, tick: Callable[[str], None] = lambda _: None,
              on_round: Callable[[int, int], None] | None = None) -> tuple[Profile, list[Measurement]]:
    """Measure and fit: (profile, measurement rows).

    The collectives step (when the plan has ranks) runs after the kernels; if its processes fail,
    the profile is written without measured collectives and says why in its notes.
    """
    measured = measure(p, tick, on_round)
    rows = measured.rows
    notes = []
    if p.collective_ranks:
        try:
            rows = rows + to_measurements(measure_collectives(
                p.collective_ranks, p.device, sizes=p.grid.coll_bytes, repeats=p.grid.coll_repeats, tick=tick))
        except CollectiveError as exc:
            notes.append(f"collectives not measured: {exc}")
    prof = fit_profile(rows, device_info(p, device_name))
    prof = prof.model_copy(update={"timing": measured.timing})
    if notes:
        prof = prof.model_copy(update={"notes": prof.notes + notes})
    return prof, rows


def device_info(p: Plan, device_name: str | None = None) -> DeviceInfo:
    name = device_name or detect_device_name(p.device)
    mode = "quick" if p.quick else "full"
    return DeviceInfo(name=name, platform=p.device, dtype=p.dtype, framework=framework_versions(p.threads),
                      created=_dt.date.today().isoformat(), source=f"moesim calibrate --device {p.device} ({mode})",
                      impl=p.impl, datasheet=datasheet_for(name) if p.device == "cuda" else None,
                      cache_bytes=last_level_cache_bytes() if p.device == "cpu" else None)


def last_level_cache_bytes() -> float | None:
    """Size of the CPU's largest cache (Linux sysfs, macOS sysctl), or None when unknown."""
    sizes = []
    for f in Path("/sys/devices/system/cpu/cpu0/cache").glob("index*/size"):
        text = f.read_text().strip().upper()
        mult = {"K": 1024, "M": 1024 ** 2, "G": 1024 ** 3}.get(text[-1:], 1)
        try:
            sizes.append(float(text.rstrip("KMG")) * mult)
        except ValueError:
            continue
    if not sizes and platform.system() == "Darwin":
        for key in ("hw.l3cachesize", "hw.perflevel0.l2cachesize", "hw.l2cachesize"):
            try:
                out = subprocess.run(["sysctl", "-n", key], capture_output=True, text=True, timeout=5, check=False)
                if out.stdout.strip().isdigit() and int(out.stdout) > 0:
                    sizes.append(float(out.stdout))
                    break
            except (OSError, subprocess.SubprocessError):
                continue
    return max(sizes) if sizes else None


def detect_device_name(device: str) -> str:
    """The device's marketing name: CUDA device name, Apple chip, or the CPU model."""
    if device == "cuda":
        return torch.cuda.get_device_name(0)
    if device == "mps" or platform.system() == "Darwin":
        try:
            out = subprocess.run(["sysctl", "-n", "machdep.cpu.brand_string"], capture_output=True, text=True,
                                 timeout=5, check=False)
            if out.stdout.strip():
                return out.stdout.strip()
        except (OSError, subprocess.SubprocessError):
            pass
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text(errors="replace").splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine() or "unknown CPU"


def datasheet_for(name: str) -> Reference | None:
    """Datasheet peaks of the hardware preset whose device matches ``name`` (exactly, else by family)."""
    words = set(normalise_device_name(name).split())
    exact = [h for h in HARDWARE.values() if normalise_device_name(h["device"]["name"]) == normalise_device_name(name)]
    family = [h for h in HARDWARE.values() if words & {"a100", "h100", "h200"} & set(normalise_device_name(h["device"]["name"]).split())]
    match = (exact or family or [None])[0]
    if match is None:
        return None
    d = match["device"]
    return Reference(peak_tflops=dict(d["peak_tflops"]), mem_bw_gbps=d["mem_bw_gbps"])


def framework_versions(threads: int) -> dict[str, str]:
    """torch, triton (if present), CUDA, Python versions and the torch thread count measured with."""
    out = {"torch": torch.__version__, "python": platform.python_version(), "threads": str(threads)}
    try:
        import triton

        out["triton"] = triton.__version__
    except ImportError:
        out["triton"] = "absent"
    if torch.version.cuda:
        out["cuda"] = str(torch.version.cuda)
    return out
