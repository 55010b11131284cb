"""The batch limit and token budget ``trtllm-bench build --dataset`` gives an engine. Pure python.

TensorRT-LLM's benchmark sizes an engine from the dataset's mean lengths before it runs
(``tensorrt_llm/bench/build/tuning.py`` @04cba88, ``calc_engine_setting`` and ``finetune_setting``;
the same rule as v0.17's): how many requests of ``ISL + OSL`` tokens the KV cache holds once the
weights are loaded, rounded up a little ("slightly optimistic"), and a token budget that fits that
many requests' share of prompt tokens. The validation rows of TensorRT-LLM's perf-overview tables run
at these limits (``workload.max_batch_seqs`` / ``max_batch_tokens``), and ``tests/test_trtllm_bench.py``
checks that each row's limits are the ones this rule gives for its scenario.

    R         = fraction x (GPUs x device GiB - params x weight bytes / 2**30)
                / (2 x layers x max(tp, kv_heads) x head_dim x kv bytes / 2**30 x (ISL + OSL))
    batch     = min(R, 4096) / pp, rounded up: to 32 below 256 (at least 64), to 128 below 1,024, else to 256
    tokens    = min(batch_raw x (1 + ISL / OSL), 32768), rounded up: to 256 below 4,096 (at least 2,048),
                to 512 below 8,192, else to 1,024

Units: GiB (2**30 bytes) as ``torch.cuda`` reports a device's memory (``DEVICE_GIB``), bytes per element.
"""

from __future__ import annotations

import math

#: Device memory as ``torch.cuda.get_device_properties().total_memory`` reports it (what the benchmark reads), where
#: it differs from the preset's ``mem_gib`` (the A100 80GB's 81,920 MiB and the L40S's 46,068 are their presets'):
#: nvidia-smi's MiB, H100 SXM5 81,559, H200 143,771, GH200 (96 GB HBM3) ~97,900.
DEVICE_GIB: dict[str, float] = {
    "NVIDIA H100 SXM5 80GB": 79.65,
    "NVIDIA H200 SXM 141GB": 140.4,
    "NVIDIA GH200 480GB": 95.6,
}
#: Fraction of the free memory the benchmark's runs give the KV cache (``--kv_cache_free_gpu_mem_fraction``,
#: 0.95 in the perf-overview runs).
KV_FRACTION = 0.95
#: Caps on the raw batch (the decoder's buffers) and tokens (TensorRT's activation buffers).
MAX_BATCH, MAX_TOKENS = 4096, 32768
#: (below, round up to) of the batch and the token budget (the batch's floor 64 applies below 256, the tokens' 2,048
#: below 4,096: the larger steps never round under them).
BATCH_STEPS = ((256, 32), (1024, 128), (math.inf, 256))
TOKEN_STEPS = ((4096, 256), (8192, 512), (math.inf, 1024))


def kv_requests(params: float, layers: int, kv_heads: int, head_dim: int, tp: int, pp: int, device_gib: float,
                weight_bytes: float, kv_bytes: float, isl: int, osl: int, fraction: float = KV_FRACTION) -> float:
    """Requests of ``isl + osl`` tokens the KV cache of ``tp x pp`` GPUs holds after the weights (R above)."""
    kv_gib_per_token = 2 * layers * max(tp, kv_heads) * head_dim * kv_bytes / 2**30
    free_gib = tp * pp * device_gib - params * weight_bytes / 2**30
    return fraction * free_gib / (kv_gib_per_token * (isl + osl))


def finetune(requests: float, isl: int, osl: int, pp: int = 1) -> tuple[int, int]:
    """(max batch, max tokens) from ``requests`` (``finetune_setting`` with its optimistic rounding)."""
    raw_bs = min(requests, MAX_BATCH) / pp
    raw_tokens = min(raw_bs * (1 + isl / osl), MAX_TOKENS)
    return _round_up(raw_bs, BATCH_STEPS, 64), _round_up(raw_tokens, TOKEN_STEPS, 2048)


def _round_up(value: float, steps: tuple[tuple[float, int], ...], floor: int) -> int:
    """``value`` rounded up to the step of the first ``(below, step)`` pair it is below, at least ``floor``."""
    step = next(step for below, step in steps if value < below)
    return max(floor, step * math.ceil(value / step))


def build_limits(params: float, layers: int, kv_heads: int, head_dim: int, tp: int, pp: int, device_gib: float,
                 weight_bytes: float, kv_bytes: float, isl: int, osl: int) -> tuple[float, int, int]:
    """(R, max batch, max tokens) ``trtllm-bench build`` picks; raises ValueError where the weights do not fit."""
    r = kv_requests(params, layers, kv_heads, head_dim, tp, pp, device_gib, weight_bytes, kv_bytes, isl, osl)
    if r < 1:
        raise ValueError(f"the KV cache holds {r:.2f} requests of {isl + osl} tokens: the model needs more GPUs")
    return (r, *finetune(r, isl, osl, pp))
