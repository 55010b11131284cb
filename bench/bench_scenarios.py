"""Wall time of one ``simulate`` per shipped scenario, and the validation table: figures, not a test.

    python bench/bench_scenarios.py [--repeats 3] [--baseline bench/baseline_simulate_s.json]
                                    [--write-baseline FILE] [--against GIT_REF] [--skip-validate]

Each scenario is loaded once and simulated ``--repeats`` times in this process (the first run warms
the caches every later simulate of a sweep also finds warm); the median is printed. With
``--baseline`` each time is compared with a saved one (the cost-graph issue allows no shipped
scenario to get more than 20 % slower); ``--write-baseline`` saves this run's medians.

A saved baseline is only as good as the machine it was timed on: the VMs this runs on have timed the
same commit's scenarios 2-3x apart from one day to the next, and 1.5x apart within minutes.
``--against GIT_REF`` times that commit's code (a temporary ``git worktree``) on its own scenario
files against this checkout's, each scenario both ways back to back, alternating which goes first:
the ratio a regression check can trust on a shared machine.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
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
            gc.collect()  # as _TIME_ONE: a collection of earlier garbage is not this scenario's time
            t0 = time.perf_counter()
            moesim.simulate(s)
            runs.append(time.perf_counter() - t0)
        out[sc.name] = statistics.median(runs)
    return out


# One simulate in a fresh process (cold: it pays one-off caches), and a short one again, warm. The
# collector runs before each timed call: otherwise a full collection of the import-time objects
# (~40,000, ~12 ms) lands inside whichever short run crosses its threshold.
WARM_BELOW_S = 2.0  # a cold run shorter than this is run again warm
_TIME_ONE = (
    "import gc, sys, time, moesim\n"
    "s = moesim.load_scenario(sys.argv[1])\n"
    "gc.collect(); t0 = time.perf_counter(); moesim.simulate(s); cold = time.perf_counter() - t0\n"
    "warm = float('nan')\n"
    f"if cold < {WARM_BELOW_S}:\n"
    "    gc.collect(); t0 = time.perf_counter(); moesim.simulate(s); warm = time.perf_counter() - t0\n"
    "print(cold, warm)\n"
)


def _time_in(tree: Path, scenario: Path) -> tuple[float, float]:
    """(cold, warm) seconds of ``simulate`` of ``scenario`` with the moesim of ``tree`` (a subprocess;
    warm is NaN where the cold run took ``WARM_BELOW_S`` or more)."""
    out = subprocess.run([sys.executable, "-c", _TIME_ONE, str(scenario)], cwd=tree, check=True,
                         capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(tree)})
    cold, warm = out.stdout.strip().splitlines()[-1].split()
    return float(cold), float(warm)


def _compared(new: list[tuple[float, float]], old: list[tuple[float, float]]) -> tuple[float, float]:
    """Median seconds of this checkout's runs and the reference's, both warm where every run of both
    has a warm time, else both cold: one rule per scenario, so a cold run just under the threshold on
    one side and just over on the other is never compared with a warm one."""
    warm = all(not math.isnan(w) for _, w in new + old)
    pick = (lambda r: r[1]) if warm else (lambda r: r[0])
    return statistics.median(map(pick, new)), statistics.median(map(pick, old))


def against(ref: str, repeats: int) -> list[str]:
    """Time every shipped scenario of this checkout against the same file at ``ref``, back to back;
    returns the names more than ``SLOWER_LIMIT`` slower."""
    root = Path(__file__).resolve().parents[1]
    slower = []
    with tempfile.TemporaryDirectory() as tmp:
        old = Path(tmp) / "ref"
        subprocess.run(["git", "-C", str(root), "worktree", "add", "--detach", "-q", str(old), ref], check=True)
        try:
            print(f"{'scenario':34s} {'this s':>8s} {ref[:10]:>10s} {'ratio':>6s}")
            for sc in shipped_scenarios():
                then = old / "scenarios" / sc.path.name
                if not then.exists():
                    continue
                new_s, old_s = [], []
                for i in range(repeats):  # alternate which runs first
                    pair = [(new_s, root, sc.path), (old_s, old, then)]
                    for runs, tree, path in (pair if i % 2 == 0 else pair[::-1]):
                        runs.append(_time_in(tree, path))
                a, b = _compared(new_s, old_s)
                flag = a / b > SLOWER_LIMIT
                slower += [sc.name] if flag else []
                print(f"{sc.name:34s} {a:8.3f} {b:10.3f} {a / b:6.2f}" + ("  SLOWER" if flag else ""), flush=True)
        finally:
            subprocess.run(["git", "-C", str(root), "worktree", "remove", "--force", str(old)], check=False)
    print(f"{len(slower)} scenario(s) more than {100 * (SLOWER_LIMIT - 1):.0f} % slower than at {ref}"
          + (f": {', '.join(slower)}" if slower else ""))
    return slower


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--baseline", type=Path, help="JSON {scenario: seconds} to compare with")
    ap.add_argument("--write-baseline", type=Path, help="save this run's medians as JSON")
    ap.add_argument("--skip-validate", action="store_true", help="only the simulate timings")
    ap.add_argument("--against", metavar="GIT_REF",
                    help="time that commit's code on its own scenario files against this checkout's, back to back")
    args = ap.parse_args()
    if args.against:
        against(args.against, max(args.repeats, 1))
        return 0

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
