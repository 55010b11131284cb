"""How fast a device's GEMMs run next to the device its shipped profile was measured on. Pure numpy.

A shipped profile rebased on a sibling device (``Profile.rebased``) keeps each kernel's measured
fraction of the roofline. That holds for devices built on the profile's die (H200 and H800 on the
H100's GH100), not for a new architecture: a B200 has 2.27x an H100's BF16 peak, but a GEMM too small
to fill its 148 SMs, or bound by a kernel's fixed latency, gains far less. This module holds the
measured ratio

    r(F) = (B200 time on its roofline / B200 measured time) / (the same on the H100)

of the two devices' fractions of their rooflines for GEMMs of ``F`` FLOPs, and the rebased profile
divides each GEMM's time by it (``ProfiledCostModel``): ``r = 1`` keeps today's rebase, ``r = 0.5``
makes a GEMM take twice the rebased time.

Data: ``moesim/data/xla_gemm.csv``, XLA's GPU cost model tables (openxla/xla
``xla/service/gpu/model/matmul_interpolator_data.h`` @71feeddf): BF16 GEMM throughput measured on an
H100 and on a B200 at the same 375 shapes, batch 1-4 and m, n, k from 256 to 4096 (3.4e7 to 5.5e11
FLOPs). Each shape's ratio is taken on each device's datasheet roofline (H100 SXM 989.4 TFLOP/s and
3,350 GB/s; B200 2,250 TFLOP/s and 7,672 GB/s; 2-byte operands); the ratios are grouped by half a
decade of FLOPs and their medians interpolated in log FLOPs (nothing fitted: the curve is the table's):

    FLOPs (bin median)  6.7e7  2.7e8  5.4e8  2.1e9  4.3e9  1.7e10  3.4e10  1.4e11 (and above)
    r                   0.46   0.43   0.45   0.49   0.58   0.67    0.71    0.80

(the spread within a bin: interquartile range 0.01-0.07). Small GEMMs run at about the same
speed on both devices (``0.45 x 2.27 ~ 1``); the largest reach 80 % of the H100's fraction. The B200
table first published (1088d5ab, measured separately) gives the same medians within 0.03.

Held out: pytorch/ao PR #2427 (benchmarks/float8/bench_matmul.py on a B200) measures BF16 4096^3,
6144^3 and 8192^3 GEMMs at 62.7 %, 64.6 % and 63.1 % of the 2,250 TFLOP/s peak; the H100 profile
rebased with this ratio gives them within 10 % (``tests/test_sibling_gemm.py``), mid-sized ones
(1024^3-3072^3, 19-67 % measured there) 27-29 % slower than measured; XLA's own B200 table is slower
than pytorch/ao's there too (2048^3: 44 % against 50 %). A third B200 measurement is slower still:
meta-pytorch/tritonbench PR #1009 times aten's BF16 8192 x 8192 x 8192 at 934 TFLOP/s (42 % of peak). The
published B200 figures spread by about as much as this ratio corrects.

What is assumed: the ratio is measured in BF16 and applied to every dtype (the same table's B200 FP8
GEMMs reach the BF16 fraction of their own peak on large shapes, 0.97-0.98 of it at 4096^3, and less
on mid-sized ones: 0.72 at 2048^3, so FP8 may be slower still); a grouped expert GEMM is one call of
its experts' summed FLOPs; attention and memory-bound kernels keep the rebase (no B200 measurement).
A GB200's B200 runs at 1,200 W and its datasheet peak is 11 % above the HGX B200's (2,500 against 2,250
dense BF16 TFLOP/s), but the best GEMM each reaches is only 4-5 % apart: the Maximum Achievable Matmul FLOPS
(``moesim/data/mamf.csv``, stas00/ml-engineering's table) of a GB200 is 72.9 % of its BF16 peak (72.3 % of
FP8), a B200's 77.6 % (76.3 %). The ``gb200-vs-h100`` ratio is therefore the B200's curve times the GB200's
BF16 MAMF fraction over the B200's (0.94; FP8's, 0.95, is the held-out check): a GB200 GEMM gets the B200's
measured throughput scaled by their best GEMMs, not by their datasheets. No GB300 is in the table; its
preset takes the GB200's ratio (the same dense peaks; the B300 reaches the B200's fraction within 2 %).
"""

from __future__ import annotations

from functools import cache

import numpy as np

from moesim.costmodel.hbm import B200_HBM_GBPS
from moesim.costmodel.published import data_path, read_table
from moesim.costmodel.roofline import roofline_s

#: Datasheet roofline of each device of the table: (dense BF16 FLOP/s, memory bytes/s).
#: The B200's bandwidth is its 7,680-bit bus at 3,996 MHz, the b200 preset's (``costmodel.hbm``).
ROOFLINES: dict[str, tuple[float, float]] = {"h100": (989.4e12, 3350e9), "b200": (2250e12, B200_HBM_GBPS * 1e9)}
#: Ratio tables a device may name (``DeviceSpec.profile_gemm_ratio``): (device of the GEMM table, the profile's
#: device, the device whose MAMF fraction over the table device's scales the curve: None for the table device).
PAIRS: dict[str, tuple[str, str, str | None]] = {"b200-vs-h100": ("b200", "h100", None),
                                                 "gb200-vs-h100": ("b200", "h100", "gb200")}
#: dtype of the GEMM tables (and of the MAMF fractions that scale them).
TABLE_DTYPE = "bf16"
#: Half-decade bins of log10 FLOPs; the last one takes every larger GEMM.
BIN_WIDTH_LOG10 = 0.5


@cache
def _table() -> dict[str, np.ndarray]:
    """``moesim/data/xla_gemm.csv`` as columns: b, m, n, k and TFLOP/s per device."""
    rows = read_table(data_path("xla_gemm.csv"))
    return {key: np.array([float(r[key]) for r in rows]) for key in rows[0]}


def shape_ratios(pair: str = "b200-vs-h100") -> tuple[np.ndarray, np.ndarray]:
    """(FLOPs, ratio of roofline fractions) per table shape, ``(375,)`` each."""
    dev, base, _ = PAIRS[pair]
    t = _table()
    flops = 2.0 * t["b"] * t["m"] * t["n"] * t["k"]
    moved = 2.0 * t["b"] * (t["m"] * t["k"] + t["k"] * t["n"] + t["m"] * t["n"])

    def fraction(name: str) -> np.ndarray:
        peak, bw = ROOFLINES[name]
        return roofline_s(flops, moved, peak, bw) / (flops / (t[f"{name}_bf16_tflops"] * 1e12))

    return flops, fraction(dev) / fraction(base)


@cache
def ratio_curve(pair: str = "b200-vs-h100") -> tuple[np.ndarray, np.ndarray]:
    """(log10 FLOPs, ratio): each half-decade bin's median log FLOPs and median ratio, ascending."""
    flops, ratio = shape_ratios(pair)
    lf = np.log10(flops)
    edges = np.arange(np.floor(lf.min() / BIN_WIDTH_LOG10) * BIN_WIDTH_LOG10, lf.max(), BIN_WIDTH_LOG10)
    xs, ys = [], []
    for i, lo in enumerate(edges):
        hi = edges[i + 1] if i + 1 < len(edges) else np.inf
        inside = (lf >= lo) & (lf < hi)
        if inside.sum() >= 5:
            xs.append(float(np.median(lf[inside])))
            ys.append(float(np.median(ratio[inside])))
        elif xs and inside.any():  # too few shapes for a bin of their own: join the one below
            prev = (lf >= edges[i - 1]) & (lf < hi)
            xs[-1], ys[-1] = float(np.median(lf[prev])), float(np.median(ratio[prev]))
    return np.array(xs), np.array(ys)


@cache
def _mamf() -> dict[tuple[str, str], tuple[float, float]]:
    """``moesim/data/mamf.csv``: (device, dtype) -> (MAMF TFLOP/s, datasheet dense TFLOP/s)."""
    return {(r["device"], r["dtype"]): (float(r["mamf_tflops"]), float(r["theory_tflops"]))
            for r in read_table(data_path("mamf.csv"))}


def mamf_fraction(device: str, dtype: str = TABLE_DTYPE) -> float:
    """A device's Maximum Achievable Matmul FLOPS over its datasheet dense peak (``moesim/data/mamf.csv``)."""
    mamf, theory = _mamf()[(device, dtype)]
    return mamf / theory


def mamf_scale(pair: str, dtype: str = TABLE_DTYPE) -> float:
    """The pair's device's MAMF fraction over its GEMM table device's (1 when it is that device)."""
    table_dev, _, dev = PAIRS[pair]
    return 1.0 if dev is None else mamf_fraction(dev, dtype) / mamf_fraction(table_dev, dtype)


def gemm_ratio(flops, pair: str | None):
    """This device's fraction of its roofline over the profile device's, for GEMMs of ``flops`` FLOPs
    (any shape; 1 where ``pair`` is None or a GEMM does nothing). Clamped at the table's ends."""
    f = np.asarray(flops, dtype=float)
    if pair is None:
        return np.ones_like(f)
    xs, ys = ratio_curve(pair)
    return np.where(f > 0, np.interp(np.log10(np.maximum(f, 1.0)), xs, ys) * mamf_scale(pair), 1.0)
