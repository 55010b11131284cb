"""The fixed GPU time of one serving attention call on Hopper, from published kernel timings.

A serving engine's decode attention is one call per layer: a split-KV kernel and the kernel that
combines its splits (FlashAttention's and FlashInfer's both run two). At a short context the KV
read is a fraction of a microsecond, and what the call takes is fixed: launching both kernels'
grids, their prologues, the reduction. The H100 profile fits every other kernel's floor from
Vidur's timings (``launch_overhead_us`` 1.67 us: a SwiGLU kernel), but Vidur measured no attention
on the H100 (the A100 profile's paged attention table fits its own fixed cost, 13.3 us), so a
decode call was priced at that 1.67 us: ~9 us short per layer, which shows at small batches of many
layers (gpt-oss-120b's TP8 decode of 4 sequences, INF-40, read -26 %).

``HOPPER_ATTENTION_FIXED_US`` is the mean of vLLM PR #43232's four per-call times at one sequence of
1,024 tokens (``benchmarks/attention_benchmarks``, batch spec ``q1s1k``, its Hopper runs; the PR
re-checks on a B200 separately): FLASH_ATTN and FLASHINFER over a BF16 and an FP8 cache. Checks, not
used: TileOPs PR #2084 times a batch-1, 1K-token decode (Qwen3-30B-A3B heads) on an H200 clock-locked
at 1,500 MHz at 16.2 us (FA3) and 9.5 us (FlashInfer), CUPTI device-busy time; TileOPs PR #2090 times
FlashInfer's two activities at 15.7 us (32/4 heads, 1K). The profiles rebased from the H100 (H200,
H800, B200, GB200) keep it: a latency, not a bandwidth. Training's flash-attention calls pay it too
(the same launches, prologue and epilogue; the cuDNN table that prices their work is fitted on long
sequences, ``costmodel/flash_attention.py``), a tenth of a percent of a Mixtral step.
``tests/test_attention_floor.py`` recomputes it.
"""

from __future__ import annotations

#: vLLM PR #43232 (github.com/vllm-project/vllm/pull/43232, 2026): (backend, KV dtype, seconds per call)
#: at batch spec ``q1s1k``.
VLLM_PR43232_Q1S1K_S: tuple[tuple[str, str, float], ...] = (
    ("FLASH_ATTN", "bf16", 1.1029600072652102e-05), ("FLASHINFER", "bf16", 1.0759200016036628e-05),
    ("FLASH_ATTN", "fp8", 1.1170000070706009e-05), ("FLASHINFER", "fp8", 7.615999970585106e-06))

HOPPER_ATTENTION_FIXED_US = round(1e6 * sum(t for *_, t in VLLM_PR43232_Q1S1K_S) / len(VLLM_PR43232_Q1S1K_S), 1)
"""Fixed GPU time of one serving attention call on a Hopper GPU, us (10.1; see above)."""
