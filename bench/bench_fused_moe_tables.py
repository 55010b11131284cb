"""moesim's routed-expert layer against every published fused-MoE kernel table, at every batch.

``tests/test_fused_moe_tables.py`` holds the decode batches (8-512 tokens) and the fixed latency
(1-2 tokens) to their bounds; this prints the rest too, the prefill-sized batches (1,024-4,096
tokens, 64-512 tokens per expert) where no test looks:

    python bench/bench_fused_moe_tables.py

One line per table (GPU, model, experts, top-k, TP, dtype, the two expert GEMMs' inner dimensions
K: gate/up reads ``d_model``, down reads the expert's intermediate over TP) and its errors,
moesim / published - 1, per token count. The tables the test leaves out (eager microbenchmarks with a
fixed floor no batch moves: Gemma4's ~180 us, HunyuanImage's ~840 us) are printed too, marked
``floor`` (Gemma4's rows from 16 to 512 tokens, past its floor, are held by a test of their own:
the floor is the host's loop, under the kernel, not added to it). Figures, not a pass/fail test.
"""

from __future__ import annotations

import sys
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from moesim.costmodel.published import read_table  # noqa: E402
from tests.test_fused_moe_tables import DATA, DTYPE, NOT_KERNEL_TIME, PRESET, layer_us  # noqa: E402


def all_tables() -> dict[tuple, list[tuple[int, float]]]:
    """As ``tests.test_fused_moe_tables.tables``, with the floor-carrying tables kept."""
    out = defaultdict(list)
    for r in read_table(DATA):
        if r["gpu"] in PRESET and r["dtype"] in DTYPE and r["tp"]:
            key = (r["gpu"], r["model"], int(r["d_model"]), int(r["moe_intermediate"]), int(r["n_experts"]),
                   int(r["top_k"]), int(r["tp"]), DTYPE[r["dtype"]], r["config"])
            out[key].append((int(r["batch_tokens"]), float(r["kernel_us"])))
    return out


def main() -> None:
    for key, rows in sorted(all_tables().items()):
        gpu, model, d, inter, experts, top_k, tp, dtype, config = key
        pred = layer_us(key[:8], sorted({m for m, _ in rows}))
        floor = any(x in model for x in NOT_KERNEL_TIME)
        print(f"{gpu} {model.split('/')[-1]} E={experts} top{top_k} tp{tp} {dtype} {config}: "
              f"K gate/up {d}, K down {inter // tp}{'  (floor)' if floor else ''}")
        print("   " + "  ".join(f"{m}:{pred[m] / us - 1:+.0%}" for m, us in sorted(rows)))


if __name__ == "__main__":
    main()
