"""Blackwell Ultra's attention rate: a GB300 runs softmax attention faster than a GB200 at the same
tensor peak. Pure python.

Flash attention alternates tensor-core GEMMs with the softmax's exponentials, which run on the SMs'
special-function units; Blackwell Ultra (B300/GB300) doubles their exponential throughput over
Blackwell (10.7 against 5 tera-exponentials/s per GPU in NVIDIA's per-GPU specification tables)
while its dense BF16 peak stays the GB200's 2.5 PFLOP/s. moesim prices attention at a fraction of
the BF16 peak (``costmodel/flash_attention.py``), so the same fraction on both would miss the gain.

``hardware.device.attention_rate_scale`` multiplies the fraction of peak every attention kernel
reaches (capped at the peak). The gb300-nvl72 preset's value is read off cuDNN's own training SDPA
benchmark, which timed the same shapes on a GB200 and a GB300 with the same cuDNN (9.22, 2026-04-24;
NVIDIA/cudnn-frontend ``benchmark/sdpa_benchmark_training/results``, ``moesim/data/cudnn_sdpa_2026.csv``):
for DeepSeek-V3's MLA, Llama 3.1 405B's and Kimi K2.6's attention at 2k-32k tokens, causal, BF16,
the GB200's forward-plus-backward time over the GB300's has a median of 1.125 over the 15 shapes
(1.09-1.21; forward alone 1.18, backward 1.10). ``tests/test_attention_rate.py`` recomputes it.
Memory-bound decode attention does not move (the scale acts on the compute roofline only).
"""

from __future__ import annotations

import csv
import statistics
from pathlib import Path

#: The published SDPA timings (CSV with ``#`` comment lines above the header).
DATA_CSV = Path(__file__).resolve().parent.parent / "data" / "cudnn_sdpa_2026.csv"

#: GB300 over GB200 attention rate, forward + backward, median over the benchmark's shapes.
GB300_ATTENTION_RATE_SCALE = 1.125


def gb300_over_gb200_rates(path: Path | str = DATA_CSV) -> list[float]:
    """Per shape (model, sequence length): GB200 forward + backward time over GB300's, from the
    rows whose ``use`` is ``gb300_scale`` and the GB200 rows of the same shapes."""
    passes: dict[tuple[str, str, str], dict[str, float]] = {}
    with open(path, newline="") as f:
        for r in csv.DictReader(line for line in f if not line.startswith("#")):
            if r["gpu"] in ("GB200", "GB300"):
                passes.setdefault((r["gpu"], r["model"], r["seq_len"]), {})[r["pass"]] = float(r["time_ms"])
    both = {k: sum(v.values()) for k, v in passes.items() if set(v) == {"fwd", "bwd"}}  # shapes timed both ways
    return [both[("GB200", m, s)] / t for (gpu, m, s), t in both.items()
            if gpu == "GB300" and ("GB200", m, s) in both]


def fitted_gb300_scale(path: Path | str = DATA_CSV) -> float:
    """The median of :func:`gb300_over_gb200_rates`, to three decimals."""
    return round(statistics.median(gb300_over_gb200_rates(path)), 3)
