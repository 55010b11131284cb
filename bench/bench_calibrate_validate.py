"""Fidelity benchmark: predicted vs measured reference MoE layer on the held-out validation grid.

    python bench/bench_calibrate_validate.py [--profile PATH] [--device cpu] [--threads 1] [--full]

Without ``--profile`` it first runs a quick calibration (the same as ``moesim calibrate --quick``)
and writes the profile to ``--out`` (default: a temp file). Prints one row per point
(experts 8/16/64 x top-k 1/2 x tokens 1..4096 x capacity factor 1.0/1.25) with its noise (how much
two measurements of the point, in separate rounds, disagree), then the model's median and p90
absolute error and median signed error next to the noise floor's median and p90. Figures, not a
pass/fail test; issue 16's target on a 2-core CPU, run after run: median under 8%, p90 under 20%,
|median signed error| under 3%. ``--json PATH`` also writes every point and the summary.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from moesim.calibrate.microbench import write_measurements
from moesim.calibrate.run import calibrate, plan
from moesim.calibrate.validate import validate

from moesim.costmodel.profile import load_profile, save_profile


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--profile", type=Path, help="validate this profile instead of calibrating first")
    ap.add_argument("--out", type=Path, help="where to write the fresh profile (default: a temp file)")
    ap.add_argument("--measurements", type=Path, help="also write the calibration's raw timings (CSV)")
    ap.add_argument("--device", default="auto", choices=["auto", "cuda", "mps", "cpu"])
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: 1 on CPU, torch's default elsewhere)")
    ap.add_argument("--full", action="store_true", help="calibrate on the full grid, not --quick")
    ap.add_argument("--rounds", type=int, default=4, help="fewest passes over the validation grid (even: half give each "
                    "of the two measurements of the noise floor); more in pairs until each median is known to 3%%")
    ap.add_argument("--json", type=Path, help="also write every point and the summary as JSON")
    args = ap.parse_args(argv)

    if args.profile:
        profile = load_profile(args.profile)
    else:
        p = plan(args.device, quick=not args.full, threads=args.threads)
        t0 = time.perf_counter()
        profile, rows = calibrate(p)
        if args.measurements:
            write_measurements(rows, args.measurements)
        out = args.out or Path(tempfile.mkdtemp(prefix="moesim-")) / "profile.yaml"
        save_profile(profile, out)
        print(f"calibrated {profile.device} ({p.device}, {p.threads} threads) in {time.perf_counter() - t0:.0f} s "
              f"-> {out}")
        for part, e in profile.fit_error.items():
            print(f"  held-out {part:<10} median {e.median_abs_pct:5.1f}%  p90 {e.p90_abs_pct:5.1f}%")
    t0 = time.perf_counter()
    report = validate(profile, args.device, threads=args.threads or None, rounds=args.rounds)
    print("\n".join(report.lines()))
    print(f"validation took {time.perf_counter() - t0:.0f} s")
    if args.json:
        args.json.write_text(json.dumps(report.to_dict(), indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
