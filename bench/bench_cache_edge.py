"""Where this CPU's cache edge lies for expert GEMMs: figures, not a test.

    python bench/bench_cache_edge.py [--rows 16] [--experts 2,4,8,16,32,64] [--repeats 3]

For each expert count E it times, on one thread, the reference layer's expert work at ``--rows``
tokens per expert (d_model 256, ffn 512, fp32: the calibration's layer shape):

* ``up``: the gate/up GEMM of every expert alone (``grouped_gemm_loop``, E MiB of weights);
* ``down``: the down GEMM of every expert alone (E/2 MiB);
* ``loop``: both in the layer's per-expert loop (``expert_ffn_loop``, 1.5 E MiB together),

and prints each per expert, with the loop's cold fraction: (loop - hot) / (cold - hot), hot and
cold being the loop at the fewest and the most experts. A profile's ``cold_fraction`` blends the
hot and cold efficiencies by working set over ``cache_bytes``; comparing this table with the
profile's cache (and with the same table taken minutes later: on a shared machine the cache a
process gets moves with its neighbours' load) says how much of a ``calibrate --validate`` miss at
mid-size layers is the cache. Times are the process's CPU time (``time.thread_time``), the best of
``--repeats`` medians.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from moesim.kernels.moe_ref import (
    expert_ffn_loop,
    grouped_gemm_loop,
    init_moe_weights,
    swiglu_activation,
)

D_MODEL, FFN = 256, 512


def cpu_median_us(fn, calls: int = 15) -> float:
    """Median CPU time of ``fn`` over ``calls`` calls after two warm-up calls, microseconds."""
    fn()
    fn()
    samples = []
    for _ in range(calls):
        t0 = time.thread_time()
        fn()
        samples.append(time.thread_time() - t0)
    return statistics.median(samples) * 1e6


def per_expert_us(experts: int, rows: int, repeats: int) -> dict[str, float]:
    """Best-of-``repeats`` median microseconds per expert of up alone, down alone, and the loop."""
    w = init_moe_weights(D_MODEL, FFN, experts, dtype=torch.float32, device="cpu", seed=experts)
    xs = torch.randn(experts * rows, D_MODEL)
    counts = [rows] * experts
    act = swiglu_activation(grouped_gemm_loop(xs, counts, w.w_gate_up))
    calls = {"up": lambda: grouped_gemm_loop(xs, counts, w.w_gate_up),
             "down": lambda: grouped_gemm_loop(act, counts, w.w_down),
             "loop": lambda: expert_ffn_loop(xs, counts, w.w_gate_up, w.w_down)}
    best = {name: min(cpu_median_us(fn) for _ in range(repeats)) for name, fn in calls.items()}
    return {name: us / experts for name, us in best.items()}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=16, help="tokens per expert (default 16)")
    ap.add_argument("--experts", default="2,4,6,8,10,12,16,24,32,64", help="expert counts, comma-separated")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    torch.set_num_threads(1)
    experts = [int(e) for e in args.experts.split(",")]
    with torch.inference_mode():
        rows = {e: per_expert_us(e, args.rows, args.repeats) for e in experts}
    hot, cold = rows[experts[0]]["loop"], rows[experts[-1]]["loop"]
    print(f"{args.rows} rows per expert, d_model {D_MODEL}, ffn {FFN}, fp32, 1 thread; microseconds per expert")
    print(f"{'experts':>7} {'up+down MiB':>11} {'up':>8} {'down':>8} {'loop':>8} {'loop cold':>9}")
    for e in experts:
        r = rows[e]
        mib = e * 3 * D_MODEL * FFN * 4 / 2 ** 20
        frac = (r["loop"] - hot) / (cold - hot) if cold != hot else float("nan")
        print(f"{e:>7} {mib:>11.1f} {r['up']:>8.1f} {r['down']:>8.1f} {r['loop']:>8.1f} {frac:>9.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
