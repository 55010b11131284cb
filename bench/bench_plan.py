"""Wall time of ``moesim plan`` over 520 serving plans of Mixtral 8x7B on up to 64 H100.

scenarios/mixtral-8x7b-h100-serve-online.yaml (FP8, lognormal 512-in / 256-out chat traffic) with
``--devices 8..64`` (8, 16, 32, 64 H100), TP 1-8, PP 1/2/4, EP 1-8 and ``max_batch_seqs`` 64-512
under ``ttft_p99=2,tpot_p99=0.2``, cheapest $/Mtok at capacity, the best re-checked on the whole plan (as the CLI):

    python bench/bench_plan.py                  # 2 local workers
    python bench/bench_plan.py --workers 1 --devices 8,16

Prints the figures (candidates, pruned by reason, simulated, runs by stage, wall seconds); it is
not a pass/fail test (target on a 2-core machine: under 60 s).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from moesim.plan_options import prepare
from moesim.plan_report import counts
from moesim.plan_search import search, stored_runs

SCENARIO = ROOT / "scenarios" / "mixtral-8x7b-h100-serve-online.yaml"


def print_run_times(runs: list[dict], stages) -> None:
    """Per ``(level, name)`` of ``stages``: how many stored runs, their median and summed wall seconds."""
    for level, stage in stages:
        secs = [r["sim_wall_s"] for r in runs if r.get("sim_wall_s") is not None and r.get("level") == level]
        if secs:
            print(f"  {stage}: {len(secs)} runs, median {statistics.median(secs):.2f} s, sum {sum(secs):.1f} s")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--devices", default="8..64")
    ap.add_argument("--slo", default="ttft_p99=2,tpot_p99=0.2")
    ap.add_argument("--scenario", type=Path, default=SCENARIO)
    ap.add_argument("--verify", type=int, default=1, help="best plan shapes re-checked on the whole plan (CLI default 1)")
    args = ap.parse_args()
    t0 = time.perf_counter()
    space, obj, slo = prepare(args.scenario, devices=args.devices, slo=args.slo)
    t_prepare = time.perf_counter() - t0
    with tempfile.TemporaryDirectory() as tmp:
        outcome = search(space, obj, slo=slo, workers=args.workers, store_dir=Path(tmp) / "runs", verify=args.verify)
        runs = stored_runs(Path(tmp) / "runs")
    wall = time.perf_counter() - t0
    n = counts(outcome)
    pruned = ", ".join(f"{k} {v}" for k, v in sorted(n["pruned"].items()))
    print(f"candidates: {n['candidates']} ({len(space.units)} evaluation units: one replica per plan shape)")
    print(f"pruned: {n['pruned_total']} ({pruned})")
    print(f"simulated: {n['simulated']} candidates ({', '.join(f'{k} {v}' for k, v in n['evaluated'].items())}) "
          f"in {n['units_evaluated']} capacity searches to the end")
    print("runs: " + ", ".join(f"{k} {v}" for k, v in sorted(n["runs"].items())))
    print_run_times(runs, ((1, "saturation"), (2, "capacity"), (3, "re-check")))
    print(f"wall: {wall:.1f} s on {args.workers} workers (enumeration and screening {t_prepare:.1f} s)")
    best = outcome.best
    if best is not None:
        c, u = best
        print(f"best: {c.hardware} {c.plan_text} on {c.devices} devices: {obj.name} {u.value:.4g} "
              f"(capacity {u.row['max_goodput_req_s'] * c.values['plan.dp']:.4g} req/s"
              + (f"; one replica x {c.values['plan.dp']}: {u.estimate:.4g})" if u.checked_devices else ")"))


if __name__ == "__main__":
    main()
