"""One calibration run: pick the device, run every microbenchmark, fit the profile.

``plan`` resolves the device and grid (so a caller can size a progress bar); ``measure`` runs the
benchmarks; ``fit_profile`` (in ``fit_local``) turns the rows into a Profile. Nothing is written
here: the caller saves the profile atomically when everything has succeeded.
"""

from __future__ import annotations

import datetime as _dt
import platform
import statistics
import subprocess
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from moesim.calibrate.collectives import (
    CollectiveError,
    available_ranks,
    measure_collectives,
    to_measurements,
)
from moesim.calibrate.fit_local import DeviceInfo, fit_profile
from moesim.calibrate.grids import Grid, grid_for
from moesim.calibrate.microbench import (
    Measurement,
    bench_activation,
    bench_attention,
    bench_copy,
    bench_gemm,
    bench_grouped,
    bench_router,
    expert_fn_for,
    time_layer,
)
from moesim.kernels.timing import pick_device

from moesim.costmodel.profile import Profile, Reference, normalise_device_name
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


def measure(p: Plan, tick: Callable[[str], None] = lambda _: None) -> list[Measurement]:
    """Run every microbenchmark of the plan (no autograd) ``grid.rounds`` times; median per point.

    Rounds spread each point's samples over the run, so a burst of load from another process
    skews one sample of a point rather than all of them.
    """
    g = p.grid
    rounds = []
    with torch_threads(p.threads), torch.inference_mode():
        for _ in range(g.rounds):
            rows = bench_copy(g, p.device, tick)
            rows += bench_gemm(g, p.device, p.dtype, tick)
            rows += bench_grouped(g, p.device, p.dtype, p.impl, tick)
            rows += bench_attention(g, p.device, p.dtype, tick)
            rows += bench_router(g, p.device, tick)
            rows += bench_activation(g, p.device, p.dtype, tick)
            rows += time_layer(g.layer_points, g.layer_d_model, g.layer_ffn, p.device, p.dtype, p.impl,
                               g.min_time_s, tick)
            rounds.append(rows)
    return median_rows(rounds)


def median_rows(rounds: list[list[Measurement]]) -> list[Measurement]:
    """Point-wise median time over rounds of the same points in the same order."""
    return [replace(same[0], time_s=float(statistics.median(r.time_s for r in same))) for same in zip(*rounds)]


def calibrate(p: Plan, device_name: str | None = None, tick: Callable[[str], None] = lambda _: None) -> tuple[Profile, list[Measurement]]:
    """Measure and fit: (profile, measurement rows).

    The collectives step (when the plan has ranks) runs after the kernels; if its processes fail,
    the profile is written without measured collectives and says why in its notes.
    """
    rows = measure(p, tick)
    notes = []
    if p.collective_ranks:
        try:
            rows = rows + to_measurements(measure_collectives(
                p.collective_ranks, p.device, sizes=p.grid.coll_bytes, repeats=p.grid.coll_repeats, tick=tick))
        except CollectiveError as exc:
            notes.append(f"collectives not measured: {exc}")
    prof = fit_profile(rows, device_info(p, device_name))
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
