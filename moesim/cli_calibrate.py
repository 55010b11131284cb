"""``moesim calibrate``: measure this machine's kernels and write a profile (registered by cli.py).

The CLI owner registers it with ``app.command("calibrate")(calibrate_command)``. torch, the
benchmarks and rich's progress bar are imported only when the command runs. Failures raise
``InputError`` (bad flags or files, exit 2) or ``RunError`` (exit 1) with a one-line message.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from moesim.cli_output import write_stdout
from moesim.errors import InputError, RunError

_DEVICES = ("auto", "cuda", "mps", "cpu")
_DTYPES = ("fp32", "bf16", "fp16")


def calibrate_command(
    device: Annotated[str, typer.Option("--device", help="Device to measure: auto (cuda, then mps, then cpu), cuda, mps or cpu.")] = "auto",
    quick: Annotated[bool, typer.Option("--quick", help="Small grid: under 3 minutes on 2 CPU cores.")] = False,
    out: Annotated[Path, typer.Option("--out", help="Profile YAML to write (atomically: an interrupted run leaves none).")] = Path("profile.yaml"),
    validate: Annotated[bool, typer.Option("--validate", help="Then measure the reference MoE layer on a held-out grid and print predicted vs measured.")] = False,
    profile: Annotated[Path | None, typer.Option("--profile", help="With --validate: check this existing profile instead of calibrating.")] = None,
    force: Annotated[bool, typer.Option("--force", help="Overwrite --out; accept a --profile measured on another device.")] = False,
    device_name: Annotated[str | None, typer.Option("--device-name", help="Device name to record (match your scenario's hardware.device.name); default: detected.")] = None,
    dtype: Annotated[str | None, typer.Option("--dtype", help="fp32, bf16 or fp16 (default: fp32 on CPU, bf16 on CUDA, fp16 on MPS).")] = None,
    threads: Annotated[int, typer.Option("--threads", min=0, help="torch CPU threads while measuring (0: 1 on CPU, timed by its CPU clock so other processes do not skew it; torch's default elsewhere).")] = 0,
    measurements: Annotated[Path | None, typer.Option("--measurements", help="Also write the raw timings as CSV.")] = None,
    collectives: Annotated[bool, typer.Option("--collectives/--no-collectives", help="Also time all-to-all and all-reduce through torch.distributed where more than one rank is possible (2 gloo processes on a CPU with 2+ cores, NCCL across GPUs) and record their latency and bandwidth.")] = True,
    json_out: Annotated[bool, typer.Option("--json", help="Print one JSON object on stdout (messages and the progress bar go to stderr): the profile written, and with --validate every point (shape, measured, predicted, error, spread, the two measurements) and the summary (median_abs_error, p90_abs_error, median_signed_error, noise_median, noise_p90; percent; with the drift since calibration and the cache as measured now).")] = False,
) -> None:
    """Measure GEMMs, grouped expert GEMMs, memory copies, attention and the MoE layer; fit a profile."""
    if device not in _DEVICES:
        raise InputError(f"--device {device}: expected one of {', '.join(_DEVICES)}")
    if dtype is not None and dtype not in _DTYPES:
        raise InputError(f"--dtype {dtype}: expected one of {', '.join(_DTYPES)}")
    if profile is not None and not validate:
        raise InputError("--profile: only used with --validate (to check an existing profile)")
    from moesim.fileio import check_writable

    if profile is None:  # before minutes of timing kernels, not after
        if out.is_dir():
            raise InputError(f"--out {out}: a folder; name the profile YAML to write")
        if out.exists() and not force:
            raise InputError(f"--out {out}: file exists; pass --force to overwrite it")
        check_writable(out)
    if measurements is not None:  # checked as --out is: not after the run, with the profile already written
        if profile is not None:
            raise InputError("--measurements: writes the timings of a calibration; with --profile nothing is timed")
        if measurements.is_dir():
            raise InputError(f"--measurements {measurements}: a folder; name the CSV to write")
        if measurements.resolve() == out.resolve():
            raise InputError(f"--measurements {measurements}: the same file as --out; name another")
        check_writable(measurements, "--measurements")
    try:
        import torch  # noqa: F401  (lazy: the rest of moesim never imports torch)
    except ImportError:
        raise RunError("calibrate needs PyTorch: pip install 'moesim[calibrate]'") from None
    from moesim.calibrate.run import plan as make_plan

    try:
        p = make_plan(device, quick=quick, dtype=dtype, threads=threads, collectives=collectives and profile is None)
    except ValueError as exc:
        raise InputError(str(exc)) from None
    written: list[Path] = []
    try:
        _run(p, out, validate, profile, force, device_name, measurements, written, json_out)
    except KeyboardInterrupt:
        if written or profile is not None:
            raise RunError("interrupted during validation" + (f"; profile {out} was written" if written else "")) from None
        raise RunError(f"interrupted: no profile written ({out} untouched)") from None


#: Seconds each sample of a held-out layer point takes at least under ``--quick --validate`` (0.05 without it).
QUICK_VALIDATE_SAMPLE_S = 0.02


def _run(p, out: Path, validate: bool, profile_path: Path | None, force: bool, device_name: str | None,
         measurements: Path | None, written: list[Path], json_out: bool = False) -> None:
    import json
    import time

    from rich.console import Console

    from moesim.calibrate.microbench import write_measurements
    from moesim.calibrate.run import calibrate, detect_device_name
    from moesim.calibrate.validate import validate as run_validation
    from moesim.costmodel.profile import check_device, load_profile, save_profile

    console = Console(stderr=json_out)
    if profile_path is not None:
        prof = load_profile(profile_path)
        check_device(prof, device_name or detect_device_name(p.device), label=f"--profile {profile_path}", force=force,
                     how_to_force="pass --force")
    calib_s = None
    with _progress(console) as bar:
        # the total grows round by round (how many rounds a point needs is known only as they run)
        task = bar.add_task("calibrating", total=0 if profile_path else p.count() - p.grid.count())

        def tick(what: str) -> None:
            bar.update(task, advance=1, description=what)

        def new_round(_rnd: int, n: int) -> None:
            bar.update(task, total=next(t.total for t in bar.tasks if t.id == task) + n)

        if profile_path is None:
            t0 = time.perf_counter()
            try:
                prof, rows = calibrate(p, device_name=device_name, tick=tick, on_round=new_round)
            except (RuntimeError, ValueError) as exc:
                raise RunError(f"calibration failed on {p.device}: {str(exc).splitlines()[0]}") from None
            calib_s = time.perf_counter() - t0
            save_profile(prof, out)
            written.append(out)
            if measurements is not None:
                write_measurements(rows, measurements)
        # --quick: each held-out point in the four rounds the noise floor needs and shorter samples, not eight
        quick = {"min_time_s": QUICK_VALIDATE_SAMPLE_S, "max_rounds": 4} if p.quick else {}
        report = run_validation(prof, p.device, tick=tick, on_round=new_round, **quick) if validate else None
    if profile_path is None:
        console.print(f"profile for {prof.device!r} written to {out}")
        for note in prof.notes:
            if note.startswith("collectives not"):
                console.print(f"  {note}", highlight=False)
        for part, e in prof.fit_error.items():
            console.print(f"  held-out {part:<10} median {e.median_abs_pct:5.1f}%  p90 {e.p90_abs_pct:5.1f}%  "
                          f"({e.rows_held_out} of {e.rows_fit + e.rows_held_out} points)")
        if prof.timing is not None:
            t = prof.timing
            console.print(f"  timed {t.points} points in {t.rounds} rounds ({t.converged} within +-{t.precision_pct:g}%), "
                          f"spread median {t.spread_median_pct:.1f}% p90 {t.spread_p90_pct:.1f}%; load average "
                          f"{_load(t.load_before)} -> {_load(t.load_after)} on {t.cpus} CPUs", highlight=False,
                          soft_wrap=True)
        console.print("use it from a scenario: this hardware section (power_w and usd_per_hour are placeholders: "
                      "put in yours, the energy and cost figures rest on them)", soft_wrap=True, highlight=False)
        console.print(hardware_block(prof.device, dict(prof.reference.peak_tflops), prof.reference.mem_bw_gbps,
                                     _memory_gib(p.device), out), highlight=False, soft_wrap=True)
    if report is not None:
        for line in report.lines():
            console.print(line, highlight=False, soft_wrap=True)
    if json_out:
        doc: dict = {"profile": str(profile_path or out), "device": prof.device}
        if calib_s is not None:
            doc["calibration"] = {"wall_s": round(calib_s, 2), "fit_error": {k: v.model_dump() for k, v in prof.fit_error.items()},
                                  "timing": prof.timing.model_dump(exclude={"point_spreads"}) if prof.timing else None}
        if report is not None:
            doc.update(report.to_dict())
        write_stdout(json.dumps(doc, indent=1) + "\n")


def hardware_block(device: str, peak_tflops: dict, mem_bw_gbps: float, mem_gib: float, profile: Path) -> str:
    """A scenario's ``hardware:`` section for one device priced by the calibrated ``profile``, as YAML ready to paste:
    the profile's measured peaks and bandwidth, ``mem_gib`` of memory, and placeholder power and price (marked)."""
    import yaml

    peaks = ", ".join(f"{k}: {v:g}" for k, v in peak_tflops.items())
    name = yaml.safe_dump(device, default_style='"').strip()  # quoted: a name with a colon or a brace stays one
    return (f"hardware:\n  name: {name}\n"
            f"  device: {{name: {name}, peak_tflops: {{{peaks}}}, mem_bw_gbps: {mem_bw_gbps:g}, mem_gib: {mem_gib:g},\n"
            f"           power_w: 100, usd_per_hour: 0.05}}  # placeholders: your device's power and price\n"
            f"  node: {{devices_per_node: 1, intra_bw_gbps: {mem_bw_gbps:g}}}\n"
            f"  profile: {yaml.safe_dump(str(Path(profile).absolute()), default_style=chr(34)).strip()}")


def _memory_gib(device: str) -> float:
    """The memory a scenario on this machine's ``device`` may hold, GiB: a CUDA device's own, else the machine's RAM
    (a CPU's, and Apple's unified memory)."""
    if device == "cuda":
        import torch

        return round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1)
    try:
        return round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    except (ValueError, OSError, AttributeError):  # no sysconf (Windows): a size to edit
        return 16.0


def _load(loadavg: list[float]) -> str:
    return "/".join(f"{x:.2f}" for x in loadavg) if loadavg else "unknown"


def _progress(console):
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(TextColumn("{task.description:<22}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    console=console, transient=True)
