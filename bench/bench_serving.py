"""Wall time to simulate 10,000 Mixtral 8x7B requests on 8 H100 (serving engine speed).

Runs the shipped offline scenario (8 FP8 replicas, 128-in / 128-out) and the online one (Poisson,
lognormal lengths) with ``n_requests = 10000`` and prints the best and median wall time of a few
repeats, with the iterations simulated and the headline figures. Target: offline under 2 s.

    python bench/bench_serving.py [--repeats 3] [--requests 10000]
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import moesim

ROOT = Path(__file__).resolve().parents[1]
CASES = {
    "offline": ROOT / "scenarios" / "mixtral-8x7b-h100-serve.yaml",
    "online": ROOT / "scenarios" / "mixtral-8x7b-h100-serve-online.yaml",
}


def bench(path: Path, n_requests: int, repeats: int) -> tuple[list[float], dict]:
    """Wall seconds of each repeat, and the last run's summary."""
    scenario = moesim.load_scenario(path, [f"workload.arrival.n_requests={n_requests}"])
    times, summary = [], {}
    for _ in range(repeats):
        t0 = time.perf_counter()
        summary = moesim.simulate(scenario).summary
        times.append(time.perf_counter() - t0)
    return times, summary


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--requests", type=int, default=10_000)
    args = ap.parse_args()
    for name, path in CASES.items():
        times, s = bench(path, args.requests, args.repeats)
        print(f"{name:8s} {args.requests} requests, 8 H100: best {min(times):.3f} s, median "
              f"{statistics.median(times):.3f} s over {len(times)} runs | {s['iterations']} iterations, "
              f"{s['output_tokens_per_s']:.0f} output tok/s, TTFT p50 {s['ttft_p50_s']:.3f} s, "
              f"TPOT p50 {s['tpot_p50_s'] * 1e3:.1f} ms")
    print("target: offline under 2 s")


if __name__ == "__main__":
    main()
