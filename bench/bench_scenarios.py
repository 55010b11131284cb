"""Wall time of one ``simulate`` per shipped scenario, and the validation table: figures, not a test.

    python bench/bench_scenarios.py [--repeats 3] [--baseline bench/baseline_simulate_s.json]
                                    [--write-baseline FILE] [--skip-validate]

Each scenario is loaded once and simulated ``--repeats`` times in this process (the first run warms
the caches every later simulate of a sweep also finds warm); the median is printed. With
``--baseline`` each time is compared with a saved one (the cost-graph issue allows no shipped
scenario to get more than 20 % slower); ``--write-baseline`` saves this run's medians.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import moesim
from moesim.shipped import shipped_scenarios

SLOWER_LIMIT = 1.20  # a shipped scenario may not get more than 20 % slower than its baseline


def time_scenarios(repeats: int) -> dict[str, float]:
    """Median wall seconds of ``simulate`` per shipped scenario name."""
    out = {}
    for sc in shipped_scenarios():
        s = moesim.load_scenario(sc.path)
        runs = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            moesim.simulate(s)
            runs.append(time.perf_counter() - t0)
        out[sc.name] = statistics.median(runs)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--baseline", type=Path, help="JSON {scenario: seconds} to compare with")
    ap.add_argument("--write-baseline", type=Path, help="save this run's medians as JSON")
    ap.add_argument("--skip-validate", action="store_true", help="only the simulate timings")
    args = ap.parse_args()

    times = time_scenarios(max(args.repeats, 1))
    base = json.loads(args.baseline.read_text()) if args.baseline else {}
    print(f"{'scenario':34s} {'simulate s':>10s}" + (f" {'baseline s':>10s} {'ratio':>6s}" if base else ""))
    slower = []
    for name, secs in times.items():
        line = f"{name:34s} {secs:10.3f}"
        if name in base:
            ratio = secs / base[name]
            line += f" {base[name]:10.3f} {ratio:6.2f}" + ("  SLOWER" if ratio > SLOWER_LIMIT else "")
            if ratio > SLOWER_LIMIT:
                slower.append(name)
        print(line)
    print(f"total {sum(times.values()):.2f} s over {len(times)} scenarios")
    if base:
        print(f"{len(slower)} scenario(s) more than {100 * (SLOWER_LIMIT - 1):.0f} % slower than the baseline"
              + (f": {', '.join(slower)}" if slower else ""))
    if args.write_baseline:
        args.write_baseline.write_text(json.dumps(times, indent=2) + "\n")
        print(f"wrote {args.write_baseline}")
    if not args.skip_validate:
        from moesim.cli import main as cli

        print()
        t0 = time.perf_counter()
        cli(["validate"])
        print(f"validate took {time.perf_counter() - t0:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
