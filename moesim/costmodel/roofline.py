"""Roofline time of one kernel: max(compute, memory) + launch overhead. Pure, numpy-vectorised.

All functions accept scalars or numpy arrays (broadcast) and return seconds.
"""

from __future__ import annotations

import numpy as np


def roofline_s(flops, bytes_moved, peak_flops: float, mem_bw_bytes_s: float,
               eff_compute=1.0, eff_mem=1.0, overhead_s: float = 0.0):
    """Seconds for a kernel of ``flops`` FLOPs moving ``bytes_moved`` bytes.

    ``t = max(flops / (peak * eff_compute), bytes / (bw * eff_mem)) + overhead``. Zero work costs
    nothing (no launch): a kernel with no tokens is not launched.
    """
    flops = np.asarray(flops, dtype=float)
    bytes_moved = np.asarray(bytes_moved, dtype=float)
    t = np.maximum(flops / (peak_flops * eff_compute), bytes_moved / (mem_bw_bytes_s * eff_mem))
    return np.where((flops > 0) | (bytes_moved > 0), t + overhead_s, 0.0)


def roofline_ratio(flops, new_bytes, new_peak: float, new_bw: float, old_bytes, old_peak: float, old_bw: float):
    """Ideal roofline time ``max(flops/peak, bytes/bw)`` on the new terms over the old ones (1 where
    the old time is 0): how a measured kernel's time scales when only its bytes, peak or bandwidth
    change while it keeps its measured fraction of the roofline."""
    new = np.maximum(flops / new_peak, np.asarray(new_bytes, dtype=float) / new_bw)
    old = np.maximum(flops / old_peak, np.asarray(old_bytes, dtype=float) / old_bw)
    return np.where(old > 0, new / np.where(old > 0, old, 1.0), 1.0)


def gemm_flops(m, n: int, k: int):
    """FLOPs of an (m x k) @ (k x n) matrix product."""
    return 2.0 * np.asarray(m, dtype=float) * n * k


def gemm_bytes(m, n: int, k: int, dtype_bytes: float, weight_bytes: float | None = None):
    """Bytes a GEMM reads and writes at least once: A (m x k), B (k x n), C (m x n).

    A and C take ``dtype_bytes`` per element; the weight B takes ``weight_bytes`` per element
    (quantized weights, scales included; default ``dtype_bytes``).
    """
    m = np.asarray(m, dtype=float)
    if weight_bytes is None or weight_bytes == dtype_bytes:
        return dtype_bytes * (m * k + k * n + m * n)
    return dtype_bytes * (m * k + m * n) + weight_bytes * (k * n)
