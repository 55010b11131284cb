"""Training engine speed and fidelity: figures to read, not a pass/fail test.

1. Wall time to simulate one GPT-4-rumour step (15 stages x 36 microbatches x 8 layers per stage)
   on this machine: best and median of a few repeats (target under 0.5 s on 2 cores); and one
   DeepSeek-V3 step on 2048 H800 with DualPipe (target under 1 s).
2. Key figures of every shipped training scenario.
3. Predicted vs published for the training rows of shared/validation/dev_points.csv:
   TRN-04 (DeepSeek-V3, 1024 H100), TRN-05 (Qwen3-235B-A22B, 256 H100), SW-01..03 (Switch-Base-128
   speed vs capacity factor, compared as ratios to CF 1.0), SYS-01 (dropless vs padded MoE).

    python bench/bench_training.py [--repeats 5] [--skip-validation]
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import moesim

ROOT = Path(__file__).resolve().parents[1]
GPT4 = ROOT / "scenarios" / "gpt4-rumour-a100-train.yaml"
DEEPSEEK_DUALPIPE = ROOT / "scenarios" / "deepseek-v3-h800-train.yaml"
SWITCH_TPU = ROOT / "moesim" / "data" / "validation" / "switch-base-128-tpuv3.yaml"
FIGURES = ("step_time_s", "tokens_per_s", "tokens_per_s_per_device", "mfu", "model_tflops_per_device",
           "bubble_fraction", "analytic_bubble_fraction", "dropped_fraction", "peak_memory_gib",
           "run_time_days", "run_cost_usd", "compute_s", "alltoall_s", "tp_comm_s", "pp_comm_s",
           "bubble_s", "dp_sync_exposed_s", "straggler_wait_s")

# SYS-01 (MegaBlocks, Gale et al. 2023, Sec. 6.1): MoE-Small = GPT-3 Small (12 layers, d 768, 12 heads)
# with 64 experts of 3072 top-1 in every layer, 8 A100-80GB, EP8 + DP8, 512 x 2048 tokens per batch.
MOE_SMALL = dict(
    name="megablocks-moe-small",
    model=dict(name="MoE-Small", n_layers=12, d_model=768, n_heads=12, vocab_size=51200, ffn_hidden=3072,
               n_experts=64, top_k=1, gated_ffn=False, max_seq_len=2048),
    hardware="a100-80gb",
    plan=dict(dp=8, tp=1, pp=1, ep=8, microbatches=2, zero_stage=1, recompute="none"),
    workload=dict(kind="training", global_batch_seqs=512, seq_len=2048),
    routing=dict(distribution="uniform", capacity_factor=1.0, overflow="drop"),
)


def time_gpt4(repeats: int, path: Path = GPT4) -> list[float]:
    scenario = moesim.load_scenario(path)
    moesim.simulate(scenario)  # warm imports and caches
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        moesim.simulate(scenario)
        times.append(time.perf_counter() - t0)
    return times


def scenario_figures() -> None:
    for path in sorted((ROOT / "scenarios").glob("*-train.yaml")):
        t0 = time.perf_counter()
        r = moesim.simulate(moesim.load_scenario(path))
        wall = time.perf_counter() - t0
        print(f"\n{path.name}  (simulated in {wall:.2f} s, {len(r.spans['kind']):,} spans)")
        print("  " + "  ".join(f"{k}={_fmt(r.summary[k])}" for k in FIGURES))


def _fmt(v) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def _row(label: str, predicted: float, published: float, unit: str) -> None:
    err = (predicted - published) / published
    print(f"  {label:<44} predicted {predicted:>10.4g}  published {published:>10.4g} {unit:<14} error {err:+.0%}")


def validation() -> None:
    print("\nPredicted vs published (dev_points.csv training rows)")
    ds = moesim.simulate(moesim.load_scenario(ROOT / "scenarios" / "deepseek-v3-h100-train.yaml")).summary
    _row("TRN-04 DeepSeek-V3, 1024 H100 tok/s/GPU", ds["tokens_per_s_per_device"], 1297, "tok/s/GPU")
    _row("TRN-04 model TFLOP/s per GPU", ds["model_tflops_per_device"], 338, "TFLOP/s/GPU")
    qw = moesim.simulate(moesim.load_scenario(ROOT / "scenarios" / "qwen3-235b-a22b-h100-train.yaml")).summary
    _row("TRN-05 Qwen3-235B-A22B, 256 H100 tok/s/GPU", qw["tokens_per_s_per_device"], 1633, "tok/s/GPU")
    _row("TRN-05 model TFLOP/s per GPU", qw["model_tflops_per_device"], 242, "TFLOP/s/GPU")
    for name, s in (("TRN-04", ds), ("TRN-05", qw)):
        share = {k: s[k] / s["step_time_s"] for k in ("compute_s", "alltoall_s", "tp_comm_s", "bubble_s")}
        print(f"  {name} step shares: " + "  ".join(f"{k}={v:.0%}" for k, v in share.items()))

    published = {1.0: 1000, 1.25: 910, 2.0: 860}
    for label, path in (("Switch-Base-128, 8 A100 (shipped)", ROOT / "scenarios" / "switch-base-128-train.yaml"),
                        ("Switch-Base-128, 32 TPUv3 cores", SWITCH_TPU)):
        if not path.exists():
            print(f"  {label}: {path} not found, skipped")
            continue
        speed = {cf: moesim.simulate(moesim.load_scenario(path, [f"routing.capacity_factor={cf}"])).summary["tokens_per_s"] / 512
                 for cf in published}
        print(f"  SW-01..03 {label}: examples/s at CF 1.0 / 1.25 / 2.0 = "
              + " / ".join(f"{speed[cf]:.0f}" for cf in published))
        for cf, pub in published.items():
            _row(f"SW speed ratio CF {cf} / CF 1.0 ({label.split(',')[1].strip()})",
                 speed[cf] / speed[1.0], pub / published[1.0], "x")
        if path == SWITCH_TPU:
            _row("SW-01 absolute, 32 TPUv3 cores, CF 1.0", speed[1.0], 1000, "examples/s")

    base = moesim.scenario_from_dict(MOE_SMALL)
    dropless = moesim.simulate(base.model_copy(update={"routing": base.routing.model_copy(update={"overflow": "dropless"})}))
    t_dropless = dropless.summary["step_time_s"]
    print(f"  SYS-01 MoE-Small dropless: step {t_dropless:.3f} s")
    best = None
    for cf in (1.0, 1.5, 2.0):
        r = moesim.simulate(base.model_copy(update={"routing": base.routing.model_copy(update={"capacity_factor": cf})}))
        t = r.summary["step_time_s"]
        print(f"  SYS-01 MoE-Small padded CF {cf}: step {t:.3f} s ({t / t_dropless:.2f}x dropless), "
              f"dropped {r.summary['dropped_fraction']:.2%}")
        best = t if best is None else min(best, t)
    _row("SYS-01 dropless vs best padded CF (MoE-Small)", best / t_dropless, 1.37, "x speedup")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--skip-validation", action="store_true")
    args = ap.parse_args()
    times = time_gpt4(args.repeats)
    print(f"GPT-4-rumour step (15 stages x 36 microbatches x 8 layers/stage): best {min(times):.3f} s, "
          f"median {statistics.median(times):.3f} s over {len(times)} runs (target < 0.5 s)")
    times = time_gpt4(args.repeats, DEEPSEEK_DUALPIPE)
    print(f"DeepSeek-V3 step on 2048 H800 (PP16 DualPipe x 120 microbatches, EP64): best {min(times):.3f} s, "
          f"median {statistics.median(times):.3f} s over {len(times)} runs (target < 1 s)")
    scenario_figures()
    if not args.skip_validation:
        validation()


if __name__ == "__main__":
    main()
