"""What llama.cpp's Metal backend costs on Apple M2 GPUs: the Apple presets' memory efficiency and
per-kernel cost, derived from measurements that are not in ``moesim validate``.

A batch-1 decode token of llama.cpp on an M2-family GPU takes (moesim's roofline, datasheet cost
model)::

    t = bytes_per_token / (memory_efficiency * bandwidth) + n_kernels * launch_overhead + host

with ``n_kernels`` the op graph's compute kernels (289 for Llama-2-7B: 9 per layer and the head)
and ``host`` the MPS iteration's host time (0.43 ms, ``costmodel/host.py``). Two llama-bench tg128
rows of one machine and one build, differing only in the weights' bits, fix the two unknowns:

* **Source** (:data:`SOURCE_ROWS`): ggml-org/llama.cpp pull request #2917 ("metal : slight speed-up
  for add and mul kernels", 2023-08-30), the ``master`` table on an M2 Ultra: LLaMA 7B Q8_0 62.05
  tokens/s, Q4_0 88.54 and Q4_1 83.63 (model sizes 6.67, 3.56 and 3.95 GiB). An August 2023 build;
  the validation rows APL-01..10 come from discussion #4167's November build (8e672ef), so they are
  not used here.
* **Fit** (:func:`fit_stream_and_fixed`, re-run by ``tests/test_apple_metal.py`` against moesim's
  own bytes per token): Q8_0 and Q4_0 give a memory efficiency of 0.856 (685 of 800 GB/s) and
  5.81 ms fixed per token, i.e. ``(5.81 - 0.43) / 289`` = 18.6 us per op-graph kernel (20.9 over 257
  until 2026-12-01, when the op graph gained serving's RoPE and KV-cache write kernel). Q4_1, held
  out, is then within 0.5 %.
* **Why the fixed cost is that large** (a bottom-up check, not used in the fit): ggml's Metal graph
  dispatches each non-view node as its own kernel. A Llama layer is 25 of them in that build (RMS
  norm and its weight multiply twice, Q/K/V/O and three FFN mat-vecs, two RoPEs, two copies into
  the KV cache, K.Q, scale, mask add, softmax, K.Q.V, a contiguous copy of the heads, two residual
  adds, SiLU and the gate multiply; llama.cpp ``llm_build_llama`` and ``llm_build_kqv`` of late 2023,
  23 once the scale and mask moved into the softmax kernel), so :data:`DISPATCHES_LLAMA2_7B`
  = 25 x 32 + 4 (embedding rows, final norm and multiply, head) = 804 per token, 2.8 per op-graph
  kernel. Each extra dispatch costs 5.16 us of GPU time on an M2 Pro (antonellof/ferrox issue #149:
  832 inert RMS-norm dispatches added 4.30 ms per token): 804 x 5.16 us + 0.43 ms = 4.6 ms of the
  5.8 ms fitted; the rest is host work (graph build, encoding, commit and wait) not hidden behind
  the GPU.

The same constants serve the M2, M2 Max and M2 Ultra presets (one GPU design, LPDDR5 on each).
A framework that fuses more (MLX with ``mx.compile``) or dispatches through MPSGraph (PyTorch MPS,
~20 us per op: pytorch/pytorch #148219) pays another per-kernel cost; a calibrated profile
(``moesim calibrate --device mps``) measures its own.
"""

from __future__ import annotations

#: llama.cpp PR #2917, master, M2 Ultra 76-core GPU: (llama.cpp type, bits per weight, tg128 tokens/s).
SOURCE_ROWS: tuple[tuple[str, float, float], ...] = (
    ("Q8_0", 8.5, 62.05),
    ("Q4_0", 4.5, 88.54),
    ("Q4_1", 5.0, 83.63),  # held out: checks the fit
)
#: Peak bandwidth of the source machine, GB/s (HW-13).
SOURCE_BANDWIDTH_GBPS = 800.0

#: Fraction of peak bandwidth llama.cpp's Metal mat-vec kernels stream weights at (fit, rounded).
MEMORY_EFFICIENCY = 0.856
#: Cost per op-graph compute kernel, us: llama.cpp's ~2.8 Metal dispatches per kernel (fit, rounded).
LAUNCH_OVERHEAD_US = 18.6

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
