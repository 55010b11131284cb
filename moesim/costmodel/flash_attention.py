"""Training's flash attention: its speed by keys per query row and head dimension, from published kernel
benchmarks. Pure numpy.

A flash-attention kernel over contiguous Q/K/V (what training runs) reaches a fraction of peak that
grows with the keys each query row meets: every query row pays a fixed cost (loading its Q tile,
the softmax's final rescale, writing its output; in the backward, dQ's accumulation) on top of work
proportional to its keys. So, for the forward pass::

    span       = kv - q / 2  (causal)   or  kv  (no mask)      mean keys per query row
    efficiency = E(head_dim) * span / (span + K0(head_dim))   fraction of the dtype's dense peak

``E`` is the kernel's rate on very long rows (larger head dimensions use the tensor cores better)
and ``K0`` the fixed cost per row in keys' worth of work. Between measured head dimensions both
interpolate linearly in log2(head_dim) and clamp outside. The backward takes ``ATTN_BWD_FLOPS``
times the forward's FLOPs at ``ATTN_BWD_RATE`` of its rate (``engine.ops.attention_core_op``).

Data: ``moesim/data/flash_attention.csv``, the bars of two published figures (batch 16k tokens /
seq_len, hidden 2048; sequence lengths 512 to 16k):

* ``fa2-a100``: FlashAttention-2 forward + backward on an A100 80GB SXM4, head dims 64 and 128
  (Dao-AILab/flash-attention README; the FlashAttention-2 paper, arXiv:2307.08691, Fig. 4). The
  figure gives the rate of forward and backward together; the forward's is that times
  ``(1 + ATTN_BWD_FACTOR) / (1 + ATTN_BWD_FLOPS)`` (1.11), as the backward runs 2.5x the FLOPs at
  0.866 of the rate. The paper's own text agrees: forward up to 73 % of the A100's peak, backward up
  to 63 %.
* ``cudnn-h100``: cuDNN's fused attention forward on an H100 80GB SXM5, head dims 64, 128 and 256
  (the FlashAttention-3 figure in the same README; arXiv:2407.08608, Fig. 5). cuDNN is what
  Transformer Engine, hence Megatron and NeMo, runs on Hopper.

Fit (``fit_kernel``, log-error least squares on the causal rows only, as training attention is causal;
two constants per head dimension from six sequence lengths): causal rows median 0.4 % (A100) and 0.6 %
(H100) off, max 2.5 %. The non-causal rows are held out: the fitted curves read them 2-18 % slow (cuDNN's unmasked forward
peaks at 2k and then falls; short unmasked rows pay less per row than the fit's masked ones), so
non-causal attention priced here errs on the slow side.

``KERNELS`` holds the fitted constants; ``tests/test_flash_attention.py`` refits them from the CSV
and checks they agree. Devices without a table (Apple, TPU, CPUs) keep the datasheet rate, and the
serving engines' paged-KV kernels keep their own measured tables (``profile.attention``).

Units: tokens (keys, queries) per sequence, efficiencies as fractions of the dense 16-bit peak.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from moesim.costmodel.published import data_path, read_table

#: The published points (CSV with ``#`` comment lines above the header).
DATA_CSV = data_path("flash_attention.csv")

#: Flash attention's backward over its forward, in FLOPs: it recomputes QK^T and runs four more
#: GEMMs (dV, dP, dQ, dK) against the forward's two, 2.5x (FlashAttention's own benchmark
#: convention, Dao-AILab/flash-attention ``benchmarks/benchmark_flash_attention.py``: ``2.5 * f``
#: for bwd).
ATTN_BWD_FLOPS = 2.5
#: The backward kernel's FLOP rate over the forward's at long sequences, H100 SXM5, BF16, head dim
#: 128 (FlashAttention-3 paper, Shah et al. 2024, arXiv:2407.08608, Figs. 5-6, 16k tokens): cuDNN
#: 516 / 595 TFLOP/s (0.867), FlashAttention-3 561 / 648 (0.866); FlashAttention-2 322 / 370 (0.870).
ATTN_BWD_RATE = 0.866
#: Backward seconds of the attention core over its forward seconds: 2.5 / 0.866 = 2.89, not the
#: 2x of a GEMM (dX and dW, each the forward's FLOPs at the forward's rate).
ATTN_BWD_FACTOR = ATTN_BWD_FLOPS / ATTN_BWD_RATE
#: A forward + backward rate times this is the forward's rate.
FWD_OF_FWD_BWD = (1.0 + ATTN_BWD_FACTOR) / (1.0 + ATTN_BWD_FLOPS)

#: Fitted forward constants per kernel: head_dim -> (E, K0 keys). Refit with ``fit_kernel``.
KERNELS: dict[str, dict[int, tuple[float, float]]] = {
    "fa2-a100": {64: (0.6250, 252.4), 128: (0.6888, 242.3)},
    "cudnn-h100": {64: (0.4018, 195.7), 128: (0.5671, 193.7), 256: (0.5278, 175.3)},
}


#: ``KERNELS`` as interpolation axes: kernel -> (log2 head dims ascending, E, K0).
_AXES = {name: (np.log2(sorted(table)), *np.array([table[h] for h in sorted(table)]).T)
         for name, table in KERNELS.items()}


def efficiency(kernel: str, q_tokens, kv_tokens, head_dim: int, causal: bool = True):
    """Forward efficiency (fraction of the dense 16-bit peak) of ``kernel`` for ``q_tokens`` queries
    over ``kv_tokens`` keys per sequence (arrays broadcast); ``E`` and ``K0`` interpolate linearly in
    log2(head_dim), clamped to the measured ones. Raises KeyError for an unknown kernel."""
    log_hd, e_max, k0 = _AXES[kernel]
    x = np.log2(float(head_dim))  # np.interp clamps outside the axis
    e = np.interp(x, log_hd, e_max)
    k = np.interp(x, log_hd, k0)
    q, kv = np.asarray(q_tokens, dtype=float), np.asarray(kv_tokens, dtype=float)
    span = np.maximum(kv - q / 2 if causal else kv, 1.0)
    return e * span / (span + k)


# --------------------------------------------------------------------------------------- the data

def load_points(path: Path | str = DATA_CSV) -> list[dict]:
    """The CSV rows: ``head_dim``/``seq_len`` int, ``tflops``/``peak_tflops`` float, ``causal`` bool."""
    rows = read_table(path)
    for r in rows:
        r["head_dim"], r["seq_len"] = int(r["head_dim"]), int(r["seq_len"])
        r["tflops"], r["peak_tflops"] = float(r["tflops"]), float(r["peak_tflops"])
        r["causal"] = r["causal"] == "true"
    return rows


def measured_forward_efficiency(row: dict) -> float:
    """A row's forward rate as a fraction of its peak (``fwd_bwd`` rows converted, ``FWD_OF_FWD_BWD``)."""
    scale = FWD_OF_FWD_BWD if row["pass"] == "fwd_bwd" else 1.0
    return row["tflops"] * scale / row["peak_tflops"]


def fit_kernel(rows: list[dict], kernel: str) -> dict[int, tuple[float, float]]:
    """Fit (E, K0) per head dimension on ``kernel``'s ``fit`` rows: least squares on log efficiency
    (Gauss-Newton on the two constants; the curve is smooth and the start close)."""
    out = {}
    picked = [r for r in rows if r["kernel"] == kernel and r["split"] == "fit"]
    for hd in sorted({r["head_dim"] for r in picked}):
        pts = [r for r in picked if r["head_dim"] == hd]
        span = np.array([r["seq_len"] / 2 if r["causal"] else r["seq_len"] for r in pts], dtype=float)
        y = np.log([measured_forward_efficiency(r) for r in pts])
        p = np.array([np.exp(y.max()), 200.0])
        for _ in range(100):  # Gauss-Newton in (log E, K0)
            resid = np.log(p[0]) + np.log(span / (span + p[1])) - y
            jac = np.column_stack([np.ones_like(span), -1.0 / (span + p[1])])
            step = np.linalg.lstsq(jac, -resid, rcond=None)[0]
            p = np.array([p[0] * np.exp(step[0]), p[1] + step[1]])
            if np.abs(step).max() < 1e-10:
                break
        out[hd] = (float(p[0]), float(p[1]))
    return out
