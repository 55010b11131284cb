"""Grouped-GEMM MoE kernel in Triton: tokens sorted by expert, one launch for all experts.

Triton is imported only when a kernel is first built, so this module imports on machines without
it (``triton_available()`` says whether it can run). On CPU it runs under the Triton interpreter
(``TRITON_INTERPRET=1``) for small correctness checks.

Layout: ``xs`` (N, K) rows sorted by expert, ``counts`` rows per expert, ``w`` (E, K, N_out).
The host splits every expert's rows into blocks of ``BLOCK_M``; program (b, j) multiplies block b
(rows of one expert) by that expert's weight columns j*BLOCK_N..(j+1)*BLOCK_N.
"""

from __future__ import annotations

import importlib.util
from functools import cache

import torch
import torch.nn.functional as F


def triton_available() -> bool:
    """True when the triton package can be imported."""
    return importlib.util.find_spec("triton") is not None


@cache
def _kernel():
    import triton
    import triton.language as tl

    @triton.jit
    def grouped_gemm_kernel(x_ptr, w_ptr, y_ptr, block_expert_ptr, block_start_ptr, block_end_ptr,
                            N, K, stride_xm, stride_xk, stride_we, stride_wk, stride_wn, stride_ym, stride_yn,
                            BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
                            IEEE: tl.constexpr):
        pid_m = tl.program_id(0)
        pid_n = tl.program_id(1)
        expert = tl.load(block_expert_ptr + pid_m).to(tl.int64)
        row_start = tl.load(block_start_ptr + pid_m).to(tl.int64)
        row_end = tl.load(block_end_ptr + pid_m).to(tl.int64)
        rm = row_start + tl.arange(0, BLOCK_M)
        rn = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
        rk = tl.arange(0, BLOCK_K)
        row_ok = rm < row_end
        col_ok = rn < N
        x_ptrs = x_ptr + rm[:, None] * stride_xm + rk[None, :] * stride_xk
        w_ptrs = w_ptr + expert * stride_we + rk[:, None] * stride_wk + rn[None, :] * stride_wn
        acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
        for k0 in range(0, K, BLOCK_K):
            k_ok = (k0 + rk) < K
            a = tl.load(x_ptrs, mask=row_ok[:, None] & k_ok[None, :], other=0.0)
            b = tl.load(w_ptrs, mask=k_ok[:, None] & col_ok[None, :], other=0.0)
            if IEEE:
                acc += tl.dot(a, b, input_precision="ieee")
            else:
                acc += tl.dot(a, b)
            x_ptrs += BLOCK_K * stride_xk
            w_ptrs += BLOCK_K * stride_wk
        y_ptrs = y_ptr + rm[:, None] * stride_ym + rn[None, :] * stride_yn
        tl.store(y_ptrs, acc.to(y_ptr.dtype.element_ty), mask=row_ok[:, None] & col_ok[None, :])

    return triton, grouped_gemm_kernel


def block_map(counts: list[int], block_m: int, device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(expert, first row, end row) of every BLOCK_M block of expert-sorted rows, as int32 tensors."""
    experts, starts, ends = [], [], []
    row = 0
    for e, n in enumerate(counts):
        for b in range(0, n, block_m):
            experts.append(e)
            starts.append(row + b)
            ends.append(row + n)
        row += n
    as_t = lambda v: torch.tensor(v, dtype=torch.int32, device=device)
    return as_t(experts), as_t(starts), as_t(ends)


def grouped_gemm(xs: torch.Tensor, counts: list[int], w: torch.Tensor, block_m: int = 64, block_n: int = 64,
                 block_k: int = 32) -> torch.Tensor:
    """(N, K) expert-sorted rows times each row's expert weight (E, K, N_out) -> (N, N_out), one launch."""
    triton, kernel = _kernel()
    n_rows, k = xs.shape
    n_out = w.shape[-1]
    y = torch.empty(n_rows, n_out, dtype=xs.dtype, device=xs.device)
    if n_rows == 0:
        return y
    be, bs, bend = block_map(counts, block_m, xs.device)
    grid = (be.numel(), triton.cdiv(n_out, block_n))
    kernel[grid](xs, w, y, be, bs, bend, n_out, k, xs.stride(0), xs.stride(1), w.stride(0), w.stride(1),
                 w.stride(2), y.stride(0), y.stride(1), BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_K=block_k,
                 IEEE=xs.dtype == torch.float32)
    return y


def expert_ffn_triton(xs: torch.Tensor, counts: list[int], w_gate_up: torch.Tensor, w_down: torch.Tensor) -> torch.Tensor:
    """Per-expert SwiGLU with two grouped GEMM launches (drop-in for ``moe_ref.expert_ffn_loop``)."""
    gate, up = grouped_gemm(xs, counts, w_gate_up).chunk(2, dim=-1)
    return grouped_gemm((F.silu(gate) * up).contiguous(), counts, w_down)
