"""Capacity searches of 17 Mixtral 8x7B replica shapes: capacity against saturated rate, probes, seconds.

scenarios/mixtral-8x7b-h100-serve-online.yaml on 8 H100 as TP 1-8, PP 1-4, EP 1-8 and ``max_batch_seqs``
64-512, each searched as ``moesim plan`` searches it (one replica, judged for the plan's replicas) under
``ttft_p99=2,tpot_p99=0.2``:

    python bench/bench_capacity.py              # 2 local processes
    python bench/bench_capacity.py --workers 1

Prints one line per shape (capacity and saturated rate in requests/s per replica played, their
ratio, probes played, wall seconds) and the totals. The search guesses ``capacity.GUESS_FACTOR`` of
the saturated rate first, so the ratio tells how good a guess that is. Not a pass/fail test.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from multiprocessing import Pool
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SCENARIO = ROOT / "scenarios" / "mixtral-8x7b-h100-serve-online.yaml"
SLO = "ttft_p99=2,tpot_p99=0.2"
#: (tp, pp, ep, max_batch_seqs) on 8 devices: dp = 8 / (tp pp).
SHAPES = [(1, 1, 1, 64), (1, 1, 1, 256), (1, 1, 2, 128), (1, 1, 4, 256), (1, 1, 8, 512), (2, 1, 1, 128),
          (2, 1, 2, 512), (2, 1, 4, 64), (4, 1, 1, 256), (4, 1, 2, 128), (8, 1, 1, 512), (8, 1, 1, 64),
          (1, 2, 1, 256), (1, 2, 4, 512), (2, 2, 2, 128), (1, 4, 1, 256), (1, 1, 2, 64)]


def search(shape: tuple[int, int, int, int]) -> tuple[tuple, float, float, int, float]:
    """(shape, capacity req/s, saturated req/s, probes, wall s) of one replica of the shape."""
    from moesim.capacity import max_goodput, parse_slo
    from moesim.loader import load_scenario
    from moesim.plan_runs import replica_of

    tp, pp, ep, batch = shape
    dp = 8 // (tp * pp)
    plan = load_scenario(SCENARIO, [f"plan.tp={tp}", f"plan.pp={pp}", f"plan.dp={dp}", f"plan.ep={ep}",
                                    f"workload.max_batch_seqs={batch}"])
    s, played, _ = replica_of(plan)
    t0 = time.perf_counter()
    cap = max_goodput(s, parse_slo(SLO), replicas=max(1, dp // played))
    return shape, cap.max_goodput_req_s, cap.saturation_req_s, len(cap.probes), time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()
    t0 = time.perf_counter()
    ratios, probes = [], []
    with Pool(args.workers) as pool:
        for (tp, pp, ep, batch), cap, sat, n, wall in pool.imap(search, SHAPES):
            ratios.append(cap / sat)
            probes.append(n)
            print(f"tp{tp} pp{pp} ep{ep} batch{batch}: capacity {cap:.4g} req/s, saturated {sat:.4g} req/s, "
                  f"ratio {cap / sat:.3f}, {n} probes, {wall:.1f} s", flush=True)
    print(f"{len(SHAPES)} shapes: ratio {min(ratios):.3f}-{max(ratios):.3f} (median {statistics.median(ratios):.3f}), "
          f"probes {min(probes)}-{max(probes)} (median {statistics.median(probes):g}); "
          f"wall {time.perf_counter() - t0:.1f} s on {args.workers} workers")


if __name__ == "__main__":
    main()
