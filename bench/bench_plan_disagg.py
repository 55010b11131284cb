"""Wall time of a disaggregated ``moesim plan``: Mixtral 8x7B on H100, a prefill and a decode pool.

scenarios/mixtral-8x7b-h100-serve-online.yaml (FP8, lognormal 512-in / 256-out chat traffic) made
disaggregated (its top-level plan replaced by a prefill and a decode pool of one node each), planned
over ``--devices 16,24,32`` (2-4 nodes of 8 H100), TP 1/2, PP 1, EP 1-8 and ``max_batch_seqs``
64/256 per pool under ``ttft_p99=2,tpot_p99=0.2``, cheapest $/Mtok at capacity; the best plan is
re-checked whole (``--verify 1``, as the CLI):

    python bench/bench_plan_disagg.py                    # 2 local workers
    python bench/bench_plan_disagg.py --workers 1 --devices 16,24 --tp 1
    python bench/bench_plan_disagg.py --exhaustive --verify 0   # brute force over the same pool plans

Prints the counts (whole plans, pool plans, pruned by reason, runs), the wall seconds and the best
plan's separable estimate against its whole-plan re-check. Not a pass/fail test.
"""

from __future__ import annotations

import argparse
import copy
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench_plan import print_run_times  # a script beside this one

from moesim.plan_options import prepare
from moesim.plan_report import counts
from moesim.plan_search import search, stored_runs

SCENARIO = ROOT / "scenarios" / "mixtral-8x7b-h100-serve-online.yaml"


def disaggregated(path: Path) -> dict:
    """The online scenario with one node per pool instead of its top-level plan."""
    raw = copy.deepcopy(yaml.safe_load(path.read_text()))
    raw.pop("plan", None)
    raw["name"] = "mixtral-8x7b-h100-serve-disagg-bench"
    raw["description"] = "Mixtral 8x7B FP8 on 2 H100 nodes, one prefill and one decode node (8 replicas each)."
    raw["hardware"] = {"preset": "h100-sxm", "cluster": {"nodes": 2}}
    raw["workload"]["disaggregation"] = {"prefill": {"plan": {"dp": 8}}, "decode": {"plan": {"dp": 8}}}
    return raw


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--devices", default="16,24,32")
    ap.add_argument("--tp", default="1,2")
    ap.add_argument("--max-batch-seqs", default="64,256")
    ap.add_argument("--slo", default="ttft_p99=2,tpot_p99=0.2")
    ap.add_argument("--verify", type=int, default=1)
    ap.add_argument("--exhaustive", action="store_true", help="evaluate every pool plan (brute force, to compare)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        scenario = Path(tmp) / "disagg.yaml"
        scenario.write_text(yaml.safe_dump(disaggregated(SCENARIO), sort_keys=False))
        t0 = time.perf_counter()
        space, obj, slo = prepare(scenario, devices=args.devices, tp=args.tp, pp="1", batch=args.max_batch_seqs,
                                  slo=args.slo)
        t_prepare = time.perf_counter() - t0
        outcome = search(space, obj, slo=slo, workers=args.workers, store_dir=Path(tmp) / "runs", verify=args.verify,
                         exhaustive=args.exhaustive)
        runs = stored_runs(Path(tmp) / "runs")
    wall = time.perf_counter() - t0
    n = counts(outcome)
    fmt = lambda d: ", ".join(f"{k} {v}" for k, v in sorted(d.items())) or "none"  # noqa: E731
    print(f"whole plans: {n['candidates']} over --devices {args.devices}; pool plans: {n['pool_plans']}")
    print(f"whole plans pruned: {n['pruned_total']} ({fmt(n['pruned'])}); evaluated: {n['simulated']} ({fmt(n['evaluated'])})")
    print(f"pool plans: {fmt({**n['pool_plans_pruned'], **n['pool_plans_evaluated']})}")
    print(f"runs: {fmt(n['runs'])}")
    print_run_times(runs, ((2, "pool capacity"), (3, "whole re-check")))
    print(f"wall: {wall:.1f} s on {args.workers} workers (enumeration and screening {t_prepare:.1f} s)")
    best = outcome.best
    if best is not None:
        est = best.split.capacity_req_s
        print(f"best: {best.devices} devices, {best.split.prefill_grains} x prefill [{best.prefill.plan_text}] + "
              f"{best.split.decode_grains} x decode [{best.decode.plan_text}] on {best.hardware}")
        print(f"  estimate: {est:.4g} req/s, {obj.name} {best.estimate:.4g}")
        if best.checked:
            whole = best.row.get("max_goodput_req_s") or 0.0
            print(f"  whole plan re-checked: {whole:.4g} req/s, {obj.name} "
                  + (f"{best.value:.4g}" if best.value is not None else "- (SLO fails)")
                  + (f"; estimate / whole = {est / whole:.3f}" if whole > 0 else ""))


if __name__ == "__main__":
    main()
