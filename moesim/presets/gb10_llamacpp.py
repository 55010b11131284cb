"""What llama.cpp's CUDA backend streams weights at on an NVIDIA GB10 (DGX Spark): the ``dgx-spark``
preset's memory efficiency, derived from one dense measurement that is not in ``moesim validate``.

Source: ggml-org/llama.cpp ``benches/dgx-spark.md`` @4c7e989 (build 2f68ce7cf, b6918, 2025-11-02;
CUDA 13.0, flash attention on, ``n_ubatch`` 2048), ``llama-bench`` on one DGX Spark. A batch-1
decode token of a dense model there is bound by the weights it streams from the 273 GB/s LPDDR5x,
so one row fixes the one unknown:

* :data:`SOURCE_ROW`: Qwen2.5-Coder-7B Q8_0 (7.54 GiB) tg32, 29.30 tokens/s. moesim's datasheet
  roofline reproduces it with the weights streamed at :data:`MEMORY_EFFICIENCY` = 0.813 of 273 GB/s
  (``tests/test_gb10.py`` re-runs the fit from ``tests/data/qwen2.5-7b-gb10-llama-bench.yaml``);
  the rest of the token is moesim's CUDA defaults, not fitted: the replayed graph's 8 us launch
  and 0.875 us gap per kernel (``costmodel/host.py``), the host's step hidden behind the GPU.
* Prefill: the same model's pp2048 row (one 2,048-token prompt, 2,276 tokens/s) fixes
  :data:`COMPUTE_EFFICIENCY`: llama.cpp's quantized (MMQ) GEMMs reach 0.262 of the preset's assumed
  125 TFLOP/s BF16 peak, 33 TFLOP/s. Only the product is known (NVIDIA publishes no dense peak).
  MoE prompts run the experts through MMQ's MUL_MAT_ID, which walks each expert's tokens in tiles of
  :data:`EXPERT_TILE_TOKENS` (``hardware.device.expert_tile_tokens``): priced so, the page's MoE
  pp2048 rows (SPK-07..09) read -5 to +10 %, where without the tiles they read +22 to +59 %.
* Held out (rows SPK-01..06 of ``moesim validate``; SPK-07..09 are the prompts above): the same page's MoE decodes, gpt-oss-20b and
  gpt-oss-120b in MXFP4 (experts at 4.25 bits, the rest Q8_0) and Qwen3-Coder-30B-A3B in Q8_0, each
  at an empty context and at 32,768 tokens of context: each token reads the attention, the 4 or 8
  experts its router picks per layer and, at depth, the KV cache.

Not used, and why (``moesim/data/validation_pending.csv``): the page's gemma-3-4b QAT Q4_0 rows keep
the tied embedding in Q8_0 under Q4_0 layers, which one model dtype cannot say; its
``llama-batched-bench`` rows decode token 0 at the same position in every sequence, so all
sequences route to the same experts (a routing moesim's distributions do not produce) and their
batches above 1 run without CUDA graphs through other kernels.

llama.cpp captures CUDA graphs for batch-1 decode only (``ggml/src/ggml-cuda/ggml-cuda.cu``
``check_node_graph_compatibility``: "disabling CUDA graphs due to batch size > 1"), so the
scenarios set ``workload.cuda_graph_batch_sizes: [1]`` without padding.
"""

from __future__ import annotations

#: llama.cpp benches/dgx-spark.md @4c7e989: (model, GGUF type, GiB, tg32 tokens/s).
SOURCE_ROW: tuple[str, str, float, float] = ("Qwen2.5-Coder-7B", "Q8_0", 7.54, 29.30)
#: Peak LPDDR5x bandwidth of the DGX Spark, GB/s (NVIDIA DGX Spark product page).
SOURCE_BANDWIDTH_GBPS = 273.0
#: Fraction of the peak bandwidth llama.cpp's CUDA mat-vec kernels stream weights at (fit, rounded).
MEMORY_EFFICIENCY = 0.813
#: The same model's pp2048 (one 2,048-token batch), prompt tokens/s: the prefill source row.
PREFILL_SOURCE_TOKENS_PER_S = 2276.28
#: Fraction of the preset's assumed BF16 peak (125 TFLOP/s) llama.cpp's quantized GEMMs reach in
#: prefill (fit, rounded): 33 TFLOP/s.
COMPUTE_EFFICIENCY = 0.262
#: llama.cpp's CUDA MMQ token tile for MUL_MAT_ID: mmq_x up to 128 (get_mmq_x_max_host on tensor-core
#: GPUs), chosen by the batch's tokens (ggml/src/ggml-cuda/mmq.cuh mul_mat_q_case, ncols_max = ne12);
#: batches of up to 8 tokens run MMVQ mat-vecs (MMVQ_MAX_BATCH_SIZE).
EXPERT_TILE_TOKENS = 128
EXPERT_MATVEC_TOKENS = 8
