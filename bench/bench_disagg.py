"""Wall time and per-node throughput of the disaggregated DeepSeek-V3 scenario (10,000 requests).

Runs the shipped ``deepseek-v3-h800-serve-disagg`` (3 prefill EP32 units and 1 decode EP144 unit,
H800, FP8) with ``n_requests = 10000``, prints the best and median wall time of a few repeats
(target: under 10 s) and each pool's throughput per node next to the published figures, with the
relative error:

* DeepSeek, open-infra-index "Day 6: DeepSeek-V3/R1 Inference System Overview" (2025-03-01),
  H800, 24-hour average of the production service: ~73.7k input tokens/s per prefill node (cache
  hits included), ~14.8k output tokens/s per decode node;
* for scale only (different hardware, not compared): SGLang, "Deploying DeepSeek with PD
  Disaggregation and Large-scale Expert Parallelism on 96 H100 GPUs" (LMSYS blog, 2025-05-05):
  52.3k input tokens/s per prefill node and 22.3k output tokens/s per decode node (2k-token inputs).

The published figures are day averages at whatever load the service had; the simulation's are
over the central 80 % of each pool's tokens at the scenario's arrival rate, so the decode figure
depends on how full that rate keeps the decode pool (its mean batch per GPU is printed).

    python bench/bench_disagg.py [--repeats 2] [--requests 10000]
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np

import moesim

ROOT = Path(__file__).resolve().parents[1]
SCENARIO = ROOT / "scenarios" / "deepseek-v3-h800-serve-disagg.yaml"
#: (summary key, published value, source), H800 production averages.
PUBLISHED = (
    ("prefill_input_tokens_per_s_per_node", 73_700.0, "DeepSeek Day-6 overview, prefill, per H800 node"),
    ("decode_output_tokens_per_s_per_node", 14_800.0, "DeepSeek Day-6 overview, decode, per H800 node"),
)
SGLANG_H100 = {"prefill_input_tokens_per_s_per_node": 52_300.0, "decode_output_tokens_per_s_per_node": 22_300.0}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--requests", type=int, default=10_000)
    args = ap.parse_args()
    scenario = moesim.load_scenario(SCENARIO, [f"workload.arrival.n_requests={args.requests}"])
    times = []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        r = moesim.simulate(scenario)
        times.append(time.perf_counter() - t0)
    s, it = r.summary, r.tables["iterations"]
    # decode pool rows: replicas numbered after the prefill pool's engines
    d = scenario.workload.disaggregation
    first_decode = d.prefill.plan.dp // (d.prefill.plan.ep if d.prefill.plan.dp_attention else 1)
    dec = np.asarray(it["replica"]) >= first_decode
    dur = (np.asarray(it["end_s"]) - np.asarray(it["start_s"]))[dec]
    per_gpu = float((np.asarray(it["decode_tokens"])[dec] * dur).sum() / dur.sum()) / s["decode_devices"] * (
        1 if d.decode.plan.dp_attention else d.decode.plan.dp)
    print(f"{scenario.name}: {args.requests} requests on {s['devices']} H800 "
          f"({s['prefill_devices']} prefill + {s['decode_devices']} decode): best {min(times):.2f} s, "
          f"median {statistics.median(times):.2f} s over {len(times)} runs (target < 10 s) | "
          f"{s['iterations']} iterations")
    print(f"  TTFT p50 {s['ttft_p50_s']:.3f} s, TPOT p50 {s['tpot_p50_s'] * 1e3:.1f} ms, KV transfer mean "
          f"{s['kv_transfer_mean_s'] * 1e3:.2f} ms, prefill busy {s['prefill_utilisation']:.0%}, decode busy "
          f"{s['decode_utilisation']:.0%}, mean decode batch per decode GPU "
          f"{per_gpu:.1f}, ${s['usd_per_day']:,.0f}/day")
    cap = capacity_per_node(scenario)
    print(f"  {'figure':40s} {'at load':>10s} {'capacity':>10s} {'published':>10s} {'error (load)':>13s}"
          f" {'error (cap)':>12s}  source")
    for key, value, source in PUBLISHED:
        sim = s[key]
        print(f"  {key:40s} {sim:10,.0f} {cap[key]:10,.0f} {value:10,.0f} {sim / value - 1:+13.1%} "
              f"{cap[key] / value - 1:+12.1%}  {source} (SGLang on H100 for scale: {SGLANG_H100[key]:,.0f})")
    print(f"  capacity: prefill replicas full ({cap['prefill_tokens']} new tokens each, mean prompt); decode at "
          f"{cap['decode_batch']} sequences per GPU, where a step takes 1/{USER_TOKENS_PER_S:g} s (DeepSeek's "
          f"published 20-22 tokens/s per user), context {cap['context']:.0f}")


#: DeepSeek's published average output speed per user (Day-6 overview: 20-22 tokens/s).
USER_TOKENS_PER_S = 21.0


def capacity_per_node(s) -> dict:
    """Each pool's tokens/s per node when full: prefill replicas at their token budget of mean prompts
    (cached share not recomputed), decode at the batch whose step takes 1 / USER_TOKENS_PER_S."""
    from moesim.costmodel import build_cost_model
    from moesim.engine.serving.decode_cost import IterationCost
    from moesim.schemas.scenario import pool_scenario

    w = s.workload
    prompt = w.prompt_tokens.mean_tokens(1000.0)
    context = prompt + w.output_tokens.mean_tokens(200.0) / 2
    out = {"context": context}
    sp, sd = pool_scenario(s, "prefill"), pool_scenario(s, "decode")
    per_node = s.hardware.node.devices_per_node
    new = max(1, round(prompt * (1 - w.prefix_cache_hit)))
    n = max(1, sp.workload.max_batch_tokens // new)
    c = IterationCost(sp, build_cost_model(sp.hardware), np.random.default_rng(0), n * new)
    t = c.time_s(np.full(n, new), np.full(n, round(prompt)), n)[0]
    out["prefill_tokens"] = n * new
    out["prefill_input_tokens_per_s_per_node"] = n * prompt / t * per_node / (sp.plan.tp * sp.plan.pp)
    c = IterationCost(sd, build_cost_model(sd.hardware), np.random.default_rng(0), 4096)
    batch, rate = 1, 0.0
    for b in range(1, sd.workload.max_batch_seqs + 1):
        t = c.time_s(np.ones(b, np.int64), np.full(b, round(context)), b)[0]
        if t > 1.0 / USER_TOKENS_PER_S:
            break
        batch, rate = b, b / t
    out["decode_batch"] = batch
    out["decode_output_tokens_per_s_per_node"] = rate * per_node / (sd.plan.tp * sd.plan.pp)
    return out


if __name__ == "__main__":
    main()
