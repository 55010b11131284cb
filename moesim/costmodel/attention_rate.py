"""Attention rates the 16-bit table does not give: Blackwell Ultra's faster softmax (a GB300 runs
attention faster than a GB200 at the same tensor peak) and FP8 attention's speed over BF16. Pure python.

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

FP8 attention (Transformer Engine's ``fp8_dot_product_attention``: cuDNN's FP8 SDPA, Q/K/V and the
softmax output in FP8 E4M3) is no 2x: the same benchmark times it against BF16 on the same shapes, and
its speedup depends on the architecture, the head width and the pass (``FP8_ATTENTION_SPEEDUP``:
forward 1.3-1.7x on Blackwell, backward 1.2-1.8x; on an H200 the forward 1.5x but the backward 0.72x,
slower than BF16). Heads wider than 128 (DeepSeek-V3's MLA, 192) have no FP8 backward on Hopper in
cuDNN 9.19 (the benchmark's H200 runs fail with "hidden_dim should be equal to 128"), so Hopper keeps
BF16 speed there; B200 and B300 take their rack siblings' figures (the same chips); heads narrower than
128 take the 128-wide ones (not measured).

Sliding windows (gpt-oss: 128 keys on every other layer) change the FP8 picture. The same benchmark times
gpt-oss's windowed layers (64-wide heads) on a GB200 and a GB300: the FP8 forward runs at the BF16 one's speed
or faster (1.08-1.95x), but the FP8 backward takes 1.73, 6.18, 23.2 and 90.3 ms at 4k, 8k, 16k and 32k tokens
on the GB200 against BF16's 0.47, 0.91, 1.82 and 3.69 ms: it grows with the square of the length, as a full
causal backward does, where the windowed BF16 one grows linearly. It does not skip the tiles outside the window,
so it costs what the full causal FP8 backward costs (moesim's price of that is 2-19 % below the measured times at
4k-32k tokens on both GPUs, ``tests/test_cudnn_sdpa.py``). ``FP8_WINDOW_BACKWARD_IS_FULL``: under ``plan.fp8_attention`` a local
layer's backward is priced as a full causal layer's; its forward keeps the window.
"""

from __future__ import annotations

import statistics
from pathlib import Path

from moesim.costmodel.published import data_path, read_table

#: The published SDPA timings (CSV with ``#`` comment lines above the header).
DATA_CSV = data_path("cudnn_sdpa_2026.csv")

#: GB300 over GB200 attention rate, forward + backward, median over the benchmark's shapes.
GB300_ATTENTION_RATE_SCALE = 1.125
#: FP8 over BF16 attention speed, (forward, backward), by (device family, head width class): medians over
#: the benchmark's 4k-32k-token shapes (``fitted_fp8_speedups`` recomputes them; ``tests/test_attention_rate.py``).
FP8_ATTENTION_SPEEDUP: dict[tuple[str, str], tuple[float, float]] = {
    ("hopper", "128"): (1.498, 0.721),
    ("blackwell", "128"): (1.291, 1.16),
    ("blackwell", "wide"): (1.485, 1.684),
    ("blackwell-ultra", "128"): (1.576, 1.296),
    ("blackwell-ultra", "wide"): (1.692, 1.828),
}
#: Device families by a name token (first match wins): the benchmark's GPUs and their siblings.
FAMILIES: tuple[tuple[str, str], ...] = (("GB300", "blackwell-ultra"), ("B300", "blackwell-ultra"), ("GB200", "blackwell"),
                                         ("B200", "blackwell"), ("H100", "hopper"), ("H200", "hopper"), ("H800", "hopper"))
#: cuDNN 9.22's FP8 SDPA backward over a sliding window runs the full causal backward (measured on GB200 and GB300;
#: Hopper's FP8 backward of 64-wide heads does not run at all in cuDNN 9.19, so nothing there says otherwise).
FP8_WINDOW_BACKWARD_IS_FULL = True
#: Shortest sequence the FP8 speedups are read at: training's lengths (4k and up).
FP8_MIN_SEQ = 4096


def device_family(name: str) -> str | None:
    """The family of a device name (``FAMILIES``), None for one the benchmark says nothing about."""
    return next((fam for token, fam in FAMILIES if token in name), None)


def width_class(head_dim: float) -> str:
    """'wide' for heads wider than 128 (the benchmark's 192-wide MLA rows), else '128'."""
    return "wide" if head_dim > 128 else "128"


def fp8_attention_speedup(device_name: str, head_dim: float) -> tuple[float, float]:
    """(forward, backward) speed of FP8 attention over BF16 on ``device_name`` at ``head_dim``; (1, 1)
    where unmeasured or unsupported (Hopper's wide heads, other devices)."""
    fam = device_family(device_name)
    return FP8_ATTENTION_SPEEDUP.get((fam, width_class(head_dim)), (1.0, 1.0)) if fam else (1.0, 1.0)


def fitted_fp8_speedups(path: Path | str = DATA_CSV) -> dict[tuple[str, str], tuple[float, float]]:
    """``FP8_ATTENTION_SPEEDUP`` from the CSV: each ``fp8_speedup`` row's BF16 twin (same GPU, model, pass,
    length and determinism) over it, medians per family, width class and pass, to three decimals."""
    rows = read_table(path)
    bf16 = {_shape(r): float(r["time_ms"]) for r in rows if r["dtype"] == "bf16"}
    ratios: dict[tuple[str, str, str], list[float]] = {}
    for r in rows:
        if r["use"] != "fp8_speedup" or int(r["seq_len"]) < FP8_MIN_SEQ or _shape(r) not in bf16:
            continue
        key = (device_family(r["gpu"]), width_class(int(r["head_dim_qk"])), r["pass"])
        ratios.setdefault(key, []).append(bf16[_shape(r)] / float(r["time_ms"]))
    return {(fam, w): (round(statistics.median(ratios[(fam, w, "fwd")]), 3), round(statistics.median(ratios[(fam, w, "bwd")]), 3))
            for fam, w, p in ratios if p == "fwd"}


def _shape(r: dict) -> tuple:
    return r["gpu"], r["model"], r["pass"], r["seq_len"], r["deterministic_bwd"]


def gb300_over_gb200_rates(path: Path | str = DATA_CSV) -> list[float]:
    """Per shape (model, sequence length): GB200 forward + backward time over GB300's, from the
    rows whose ``use`` is ``gb300_scale`` and the GB200 rows of the same shapes."""
    passes: dict[tuple[str, str, str], dict[str, float]] = {}
    for r in read_table(path):
        if r["gpu"] in ("GB200", "GB300") and r["dtype"] == "bf16" and r["window"] == "0":  # full causal shapes
            passes.setdefault((r["gpu"], r["model"], r["seq_len"]), {})[r["pass"]] = float(r["time_ms"])
    both = {k: sum(v.values()) for k, v in passes.items() if set(v) == {"fwd", "bwd"}}  # shapes timed both ways
    return [both[("GB200", m, s)] / t for (gpu, m, s), t in both.items()
            if gpu == "GB300" and ("GB200", m, s) in both]


def fitted_gb300_scale(path: Path | str = DATA_CSV) -> float:
    """The median of :func:`gb300_over_gb200_rates`, to three decimals."""
    return round(statistics.median(gb300_over_gb200_rates(path)), 3)
