"""Wall time of a 1,000-point Mixtral sweep (experts x capacity factor x plans) on local workers.

5 expert counts x 5 capacity factors x 40 plans of scenarios/mixtral-8x7b-h100-train.yaml (64 H100),
every row written to the store as it finishes (fsync per row unless --no-fsync).

    python bench/bench_sweep.py                 # 1,000 training points on 2 workers
    python bench/bench_sweep.py --workers 4 --profile

Prints the figures; it is not a pass/fail test (target on a 2-core machine: under 60 s).
``--profile`` also runs one point under cProfile in this process and prints where its time goes.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from moesim.sweep import run_sweep

SCENARIO = ROOT / "scenarios" / "mixtral-8x7b-h100-train.yaml"  # 64 H100, dp64 ep8
EXPERTS = "8,16,24,32,48"
CAPACITY = "1.0,1.1,1.25,1.5,2.0"
# 10 (tp, pp) shapes of 64 GPUs x 4 expert-parallel degrees = 40 plans; ZeRO-3 and full
# recompute so every point fits in 80 GB and is simulated (none is skipped as invalid).
SHAPES = [(1, 1), (2, 1), (4, 1), (8, 1), (1, 2), (2, 2), (1, 4), (2, 4), (4, 2), (1, 8)]
PLANS = ",".join(f"{{dp: {64 // (tp * pp)}, tp: {tp}, pp: {pp}, ep: {ep}, zero_stage: 3, recompute: full}}"
                 for tp, pp in SHAPES for ep in (1, 2, 4, 8))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--scenario", type=Path, default=SCENARIO)
    ap.add_argument("--profile", action="store_true", help="cProfile one point and print the top functions")
    ap.add_argument("--no-fsync", action="store_true", help="do not fsync each row (faster on slow disks)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        out = run_sweep(args.scenario, experts=EXPERTS, capacity_factor=CAPACITY, grid=[f"plan={PLANS}"],
                        out_dir=Path(tmp) / "sweep", workers=args.workers, best="tokens_per_s",
                        durable=not args.no_fsync)
        wall = time.perf_counter() - t0
    p = out.progress
    sim = [r["sim_wall_s"] for r in out.rows if isinstance(r.get("sim_wall_s"), float)]
    print(f"points: {p.total} (ok {p.ok}, invalid {p.invalid}, failed {p.failed}) on {args.workers} local workers")
    print(f"wall time: {wall:.1f} s  ({p.total / wall:.1f} points/s)")
    if sim:
        print(f"per point in a worker: median {1e3 * statistics.median(sim):.1f} ms, "
              f"max {1e3 * max(sim):.1f} ms, sum {sum(sim):.1f} s")
    failed = [r for r in out.rows if r["status"] == "failed"]
    if failed:
        print(f"first failure: {failed[0]['reason']}")
    if out.best:
        b = out.best
        print(f"best tokens/s: {b['tokens_per_s']:,.0f} at experts={b['model.n_experts']}, "
              f"cf={b['routing.capacity_factor']}, plan={b['plan']}")
    if args.profile:
        profile_one(args.scenario)


def profile_one(path: Path) -> None:
    """Run the base scenario once (after a warm-up run) under cProfile; print the top 15 functions."""
    from moesim import load_scenario, simulate

    scenario = load_scenario(path)
    simulate(scenario, seed=0)  # imports and caches out of the measurement
    prof = cProfile.Profile()
    prof.enable()
    simulate(scenario, seed=0)
    prof.disable()
    buf = io.StringIO()
    pstats.Stats(prof, stream=buf).sort_stats("tottime").print_stats(15)
    print(buf.getvalue())


if __name__ == "__main__":
    main()
