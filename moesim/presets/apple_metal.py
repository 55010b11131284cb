"""What llama.cpp's Metal backend costs on Apple M2 GPUs: the Apple presets' memory efficiency and
per-kernel cost, derived from measurements that are not in ``moesim validate``; and how much of the unified
memory macOS lets the GPU wire (:func:`gpu_wired_limit_gib`, at the end).

A batch-1 decode token of llama.cpp on an M2-family GPU takes (moesim's roofline, datasheet cost
model)::

    t = bytes_per_token / (memory_efficiency * bandwidth) + n_kernels * launch_overhead + host

with ``n_kernels`` the op graph's compute kernels (289 for Llama-2-7B: 9 per layer and the head;
253 for Llama-3.2-3B) and ``host`` the MPS iteration's host time (0.43 ms, ``costmodel/host.py``).
Two llama-bench tg128 rows of one machine and one build, differing only in the weights' bits, fix
the two unknowns. llama.cpp's Metal backend got faster per kernel between builds, so there are two
fits; the presets carry the newer one (what llama.cpp runs today), and the validation rows of 2023
builds pin the older one in their scenarios (``hardware.device``), as they measured it.

* **Current builds** (:data:`SOURCE_ROWS`, the presets' :data:`MEMORY_EFFICIENCY` and
  :data:`LAUNCH_OVERHEAD_US`): ggml-org/llama.cpp pull request #10238 ("metal : refactor kernel args
  into structs", November 2024, after #10171 of 2024-11-04), ``master`` column on an M2 Ultra:
  "llama 3B" F16 tg128 72.29 tokens/s and Q4_0 155.86 (the author's llama-3.2-3b-instruct GGUFs of
  #10171's command line) (:func:`fit_stream_and_fixed` against moesim's own bytes per token,
  re-run by ``tests/test_apple_metal.py``): 0.778 of 800 GB/s and 3.49 ms fixed per token, i.e.
  ``(3.49 - 0.43) / 253`` = 12.1 us per op-graph kernel. Held out (not fitted, in ``moesim
  validate``): the fine-grained MoE decodes of 2025 builds on the same machine, Qwen3-30B-A3B
  (APL-13, -1 %) and DeepSeek-V2-Lite (APL-15, -8 %), which the 2023 constants read -22 and -28 %.
* **2023 builds** (:data:`SOURCE_ROWS_2023`, :data:`MEMORY_EFFICIENCY_2023`,
  :data:`LAUNCH_OVERHEAD_US_2023`): pull request #2917 ("metal : slight speed-up for add and mul
  kernels", 2023-08-30), ``master`` on an M2 Ultra: LLaMA 7B Q8_0 62.05 tokens/s, Q4_0 88.54 and Q4_1
  83.63 (model sizes 6.67, 3.56 and 3.95 GiB): 0.856 of 800 GB/s and 5.81 ms fixed per token, i.e.
  ``(5.81 - 0.43) / 289`` = 18.6 us per op-graph kernel; Q4_1, held out, is then within 0.5 %. The
  validation rows APL-01..12 come from builds of November and December 2023 (discussion #4167's
  8e672ef, PR #4406's 9fb13f9) and run with these.
* **Why the fixed cost is that large** (a bottom-up check of the 2023 fit, not used in it): ggml's
  Metal graph dispatches each non-view node as its own kernel. A Llama layer is 25 of them in that
  build (RMS norm and its weight multiply twice, Q/K/V/O and three FFN mat-vecs, two RoPEs, two
  copies into the KV cache, K.Q, scale, mask add, softmax, K.Q.V, a contiguous copy of the heads,
  two residual adds, SiLU and the gate multiply; llama.cpp ``llm_build_llama`` and ``llm_build_kqv``
  of late 2023, 23 once the scale and mask moved into the softmax kernel), so
  :data:`DISPATCHES_LLAMA2_7B` = 25 x 32 + 4 (embedding rows, final norm and multiply, head) = 804
  per token, 2.8 per op-graph kernel. Each extra dispatch costs 5.16 us of GPU time on an M2 Pro
  (antonellof/ferrox issue #149: 832 inert RMS-norm dispatches added 4.30 ms per token): 804 x 5.16
  us + 0.43 ms = 4.6 ms of the 5.8 ms fitted; the rest is host work (graph build, encoding, commit
  and wait) not hidden behind the GPU. Later builds dispatch fewer kernels per layer (the scale and
  mask moved into the softmax kernel, for one), hence the smaller per-kernel cost; not broken down.

MoE prompts (:data:`EXPERT_TILE_TOKENS`, :data:`EXPERT_MATVEC_TOKENS`): from 32 tokens a batch's
experts run llama.cpp's ``mul_mm_id``, which computes each expert's tokens in 32-token tiles; smaller
batches run ``mul_mv_id``, token by token. Priced so (``hardware.device.expert_tile_tokens``), the
Qwen3-30B-A3B pp512 row (APL-14) reads +2 % where the untiled grouped GEMM read +29 %; not fitted.

The same constants serve the M2, M2 Max and M2 Ultra presets (one GPU design, LPDDR5 on each); the
newer fit's F16 row and the older fit's quantized rows both stream at the fit's efficiency (the
2023 F16 decode rows read as the quantized ones, APL-01/06/09). A framework that fuses more (MLX
with ``mx.compile``) or dispatches through MPSGraph (PyTorch MPS, ~20 us per op:
pytorch/pytorch #148219) pays another per-kernel cost; a calibrated profile (``moesim calibrate
--device mps``) measures its own.
"""

from __future__ import annotations

#: llama.cpp PR #10238 (Nov 2024), master, M2 Ultra: (llama.cpp type, bits per weight, tg128 tokens/s), Llama-3.2-3B.
SOURCE_ROWS: tuple[tuple[str, float, float], ...] = (
    ("F16", 16.0, 72.29),
    ("Q4_0", 4.5, 155.86),
)
#: llama.cpp PR #2917 (Aug 2023), master, M2 Ultra 76-core GPU: (llama.cpp type, bits per weight, tg128 tokens/s), LLaMA 7B.
SOURCE_ROWS_2023: tuple[tuple[str, float, float], ...] = (
    ("Q8_0", 8.5, 62.05),
    ("Q4_0", 4.5, 88.54),
    ("Q4_1", 5.0, 83.63),  # held out: checks the fit
)
#: Peak bandwidth of the source machine, GB/s (HW-13).
SOURCE_BANDWIDTH_GBPS = 800.0

#: Fraction of peak bandwidth llama.cpp's Metal mat-vec kernels stream weights at (Nov 2024 fit, rounded).
MEMORY_EFFICIENCY = 0.778
#: Cost per op-graph compute kernel, us (Nov 2024 fit, rounded).
LAUNCH_OVERHEAD_US = 12.1
#: The same two constants fitted on an August 2023 build (rows of 2023 builds pin them).
MEMORY_EFFICIENCY_2023 = 0.856
LAUNCH_OVERHEAD_US_2023 = 18.6

#: ggml Metal dispatches of one Llama-2-7B decode token in the November 2023 build (see above).
DISPATCHES_LLAMA2_7B = 25 * 32 + 4
#: GPU time per extra Metal dispatch on an M2 Pro, us (ferrox issue #149).
GPU_US_PER_DISPATCH = 5.16


def fit_stream_and_fixed(t_a_s: float, t_b_s: float, stream_a_s: float, stream_b_s: float) -> tuple[float, float]:
    """``(memory_efficiency, fixed_s)`` from two decode tokens of one machine: ``t_*_s`` measured
    seconds per token, ``stream_*_s`` seconds their bytes take at full bandwidth. Solves
    ``t = stream / efficiency + fixed`` for both rows; the two must differ in bytes."""
    if stream_a_s == stream_b_s:
        raise ValueError("the two rows must move different bytes")
    efficiency = (stream_a_s - stream_b_s) / (t_a_s - t_b_s)
    return efficiency, t_b_s - stream_b_s / efficiency

#: Tokens llama.cpp's Metal mul_mm_id computes each expert's rows in (kernel_mul_mm's BLOCK_SIZE_N 32,
#: ggml/src/ggml-metal/ggml-metal.metal), used from batches of 32 tokens up (ne21_mm_id_min = 32,
#: ggml/src/ggml-metal/ggml-metal-ops.cpp); smaller batches run mul_mv_id, one token at a time.
EXPERT_TILE_TOKENS = 32
EXPERT_MATVEC_TOKENS = 31


#: macOS's default share of unified memory the GPU may wire (Metal's ``recommendedMaxWorkingSetSize``), as
#: llama.cpp's ``ggml_metal_init`` logs it: 10,922.67 MiB on a 16 GB Mac (llama-cpp-python issue #687) and
#: 21,845.34 on 32 GB ones (ollama issue #434, llama.cpp PR #2011), 2/3; 49,152 MiB on 64 GB (llama.cpp issue
#: #1870) and 73,728 on a 96 GB M2 Max (issue #3213), 3/4. Newer macOS may give more (a 128 GB M5 Max under
#: macOS 26 reports 107.52 GiB, antirez/ds4 PR #893); the M2-era presets keep the rule of their logs.
WIRED_SHARE_SMALL, WIRED_SHARE_LARGE = 2 / 3, 3 / 4
#: Unified memory (GiB) up to which the smaller share applies.
WIRED_SMALL_UP_TO_GIB = 36.0


def gpu_wired_limit_gib(device) -> float:
    """GiB the GPU of an Apple-silicon ``device`` (a ``DeviceSpec``) may wire: its ``gpu_wired_limit_gib`` when
    set, else macOS's default share of ``mem_gib`` (:data:`WIRED_SHARE_SMALL` up to :data:`WIRED_SMALL_UP_TO_GIB`,
    :data:`WIRED_SHARE_LARGE` above)."""
    if device.gpu_wired_limit_gib is not None:
        return device.gpu_wired_limit_gib
    share = WIRED_SHARE_SMALL if device.mem_gib <= WIRED_SMALL_UP_TO_GIB else WIRED_SHARE_LARGE
    return share * device.mem_gib
