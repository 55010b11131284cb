"""Inference engines' custom all-reduce inside an NVLink node: one-shot and two-shot through peer memory.

Serving engines do not run their tensor-parallel all-reduces on NCCL's ring when the message is
small. vLLM and SGLang register an IPC buffer on every GPU of the node and run their own kernels
(vLLM's ``custom_all_reduce``: a one-stage kernel for small messages, a two-stage one above;
SGLang's TensorRT-LLM-derived kernel), and TensorRT-LLM's ``AUTO`` strategy picks ``ONESHOT`` or
``TWOSHOT``. A ring pays ``2(n-1)`` steps of latency; these pay one or two synchronisations, and a
decode step's messages (``tokens x d_model`` x 2 bytes: 8 KiB to a few MiB) are latency-bound:

    one-shot    latency_1 + (n-1) * bytes / (link * fraction_1)        (every rank reads every peer)
    two-shot    latency_2 + 2(n-1)/n * bytes / (link * fraction_2)     (reduce-scatter + all-gather)
    custom      min(one-shot, two-shot, NCCL ring)                     (the engine's size switch)

``link`` is the node's NVLink bandwidth per device per direction (``hardware.node.intra_bw_gbps``:
300 GB/s A100, 450 GB/s H100/H200). Units: bytes per rank, GB/s, seconds (``_us``: microseconds).

Data: ``moesim/data/custom_allreduce.csv``, 313 published timings, each citing its pull request
or issue; its ``use`` column marks the rows ``fit_points`` fits and the held-out ones.

* Fit (49 rows, H100, CUDA graph: vLLM PR #24111's ``benchmark_device_communicators.py`` tables at
  TP 2/4/6, the engine's ``ca_1stage``/``ca_2stage`` and PyTorch symmetric-memory two-shot, plus
  PR #42324's two-shot at TP 8, 0.5-128 MiB): one-shot 5.39 us + 0.76 of the link (13 rows:
  median |error| 3 %, max 11 %); two-shot 12.7 us + 0.58 of the link (36 rows: median 8 %, max 27 %,
  the two implementations differing by up to 40 % between themselves).
* Held out (26 rows): SGLang PR #2904's TensorRT-LLM-derived kernel on 2/4/8 H100, 2 KiB-4 MiB
  (host-timed over an eager loop, so an upper bound on the kernel time) and the MSCCL++ one-shot of
  SGLang PR #22734 on H200 (CUDA graph) up to 256 KiB: at 8 ranks -18..+21 %; at 2 and 4 ranks and
  16-128 KiB the measured 3.7-4.8 us undercut the model's 5.4-6.5 us (a smaller barrier than at 6).
* Not this model: PyTorch's own symmetric-memory one-shot (``one_shot_all_reduce``; and gpt-fast's
  ``ENABLE_INTRA_NODE_COMM`` one-shot) runs ~16 us at 8-64 KiB on 8 H100 (pytorch/helion PR #245;
  ~17 us in pytorch/pytorch issue #131739), three times the engines' kernels; NVLS ``multimem``
  (vLLM's symm-mem default at TP 6/8 on Hopper for 0.5-48 MiB) runs 11-27 % under two-shot there
  and is not priced (two-shot stands in for it).
* A100: no CUDA-graph timings of these kernels were found; the A100 takes the same latencies and
  fractions of its 300 GB/s link (an assumption).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from moesim.costmodel import comm
from moesim.costmodel.published import data_path, read_table

#: The algorithm names ``CostModel.allreduce_s`` takes: NCCL's ring, or the engine's custom kernels.
ALLREDUCE_ALGORITHMS: tuple[str, ...] = ("nccl", "custom")

#: Published timings (CSV with ``#`` comment lines above the header).
DATA_CSV = data_path("custom_allreduce.csv")

ONE_SHOT_LATENCY_US = 5.39
"""Fixed cost of a one-shot all-reduce under a CUDA graph (its barrier and ramp), microseconds.
Fitted (see the module docstring)."""

ONE_SHOT_LINK_FRACTION = 0.76
"""Fraction of the per-direction NVLink bandwidth the one-shot's peer reads reach. Fitted."""

TWO_SHOT_LATENCY_US = 12.7
"""Fixed cost of a two-shot all-reduce (two barriers), microseconds. Fitted."""

TWO_SHOT_LINK_FRACTION = 0.58
"""Fraction of the per-direction NVLink bandwidth the two-shot's two phases reach. Fitted."""

#: Per-direction NVLink bandwidth (GB/s) of the GPUs the data name (as ``presets/hardware.py``).
DATA_LINK_GBPS = {"A100": 300.0, "H100": 450.0, "H200": 450.0, "H100_or_H200": 450.0}


def one_shot_s(nbytes, n: int, link_gbps: float, latency_us: float = ONE_SHOT_LATENCY_US,
               fraction: float = ONE_SHOT_LINK_FRACTION):
    """Seconds of a one-shot all-reduce of ``nbytes`` per rank over ``n`` ranks of one node."""
    return comm.one_shot_allreduce_s(nbytes, n, link_gbps * fraction, latency_us * 1e-6)


def two_shot_s(nbytes, n: int, link_gbps: float, latency_us: float = TWO_SHOT_LATENCY_US,
               fraction: float = TWO_SHOT_LINK_FRACTION):
    """Seconds of a two-shot all-reduce of ``nbytes`` per rank over ``n`` ranks of one node."""
    return comm.two_shot_allreduce_s(nbytes, n, link_gbps * fraction, latency_us * 1e-6)


def engine_kernel_s(nbytes, n: int, link_gbps: float):
    """Seconds of the faster of the engine's one-shot and two-shot kernels (no NCCL fallback)."""
    return np.minimum(one_shot_s(nbytes, n, link_gbps), two_shot_s(nbytes, n, link_gbps))


def custom_allreduce_s(nbytes, n: int, link_gbps: float, ring_s):
    """Seconds of an engine's custom all-reduce: the fastest of one-shot, two-shot and the NCCL ring
    (``ring_s``, the same shape as ``nbytes``), as the engines switch by message size."""
    return np.minimum(engine_kernel_s(nbytes, n, link_gbps), np.asarray(ring_s, dtype=float))


# ---------------------------------------------------------------- the published points
_KERNELS = {"one_shot": one_shot_s, "two_shot": two_shot_s}


def load_points(path: Path | str = DATA_CSV, use: str | None = None) -> list[dict]:
    """Published rows of a GPU with a known link (dicts of the CSV's columns; ``bytes``,
    ``world_size`` and ``latency_us`` numeric); ``use``: only the rows marked so (fit, holdout)."""
    rows = read_table(path)
    return [{**r, "bytes": float(r["bytes"]), "world_size": int(r["world_size"]), "latency_us": float(r["latency_us"])}
            for r in rows if r["gpu"] in DATA_LINK_GBPS and (use is None or r["use"] == use)]


def predict_us(row: dict, latency_us: float | None = None, fraction: float | None = None) -> float:
    """The model's microseconds for one published row: its algorithm at ``latency_us``/``fraction``
    (each defaulting to the shipped constant); ``custom_auto`` rows (a kernel choosing by itself) the faster."""
    link, nbytes, n = DATA_LINK_GBPS[row["gpu"]], row["bytes"], row["world_size"]
    if row["algorithm"] == "custom_auto":
        return 1e6 * float(engine_kernel_s(nbytes, n, link))
    given = {k: v for k, v in (("latency_us", latency_us), ("fraction", fraction)) if v is not None}
    return 1e6 * float(_KERNELS[row["algorithm"]](nbytes, n, link, **given))


def fit_points(rows: list[dict], algorithm: str) -> tuple[float, float]:
    """(latency_us, link fraction) of ``algorithm`` minimising the squared log error over its ``rows``:
    on a 0.01 grid of fractions, the latency is the mean residual of the bandwidth term (clipped at
    0), and the fraction with the smallest log error wins."""
    pts = [r for r in rows if r["algorithm"] == algorithm]
    if not pts:
        raise ValueError(f"no {algorithm} rows to fit")
    y = np.array([r["latency_us"] for r in pts])
    best = (np.inf, 0.0, 0.0)
    for fraction in np.arange(0.05, 1.0001, 0.01):
        bandwidth_us = np.array([predict_us(r, 0.0, fraction) for r in pts])
        latency = max(float(np.mean(y - bandwidth_us)), 0.0)
        err = float(np.sum(np.log((latency + bandwidth_us) / y) ** 2))
        if err < best[0]:
            best = (err, latency, float(fraction))
    return round(best[1], 2), round(best[2], 2)
