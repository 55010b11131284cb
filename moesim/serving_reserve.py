"""Memory a serving engine keeps out of its KV pool beyond the weights and one iteration's activations. Pure functions.

vLLM sizes its KV pool from what a profile run leaves (``--gpu-memory-utilization`` of the device less the peak of a
dummy forward at ``max_num_batched_tokens`` and of a dummy sampler run), and that sampler run is large: vLLM V1's
``GPUModelRunner._dummy_sampler_run`` samples ``max_num_seqs`` dummy requests with temperature 0.5, top-p 0.9 and top-k
at the vocabulary less one ("CUDA out of memory occurred when warming up sampler with N dummy requests" is its error),
so the PyTorch-native top-k/top-p path, which vLLM takes unless ``VLLM_USE_FLASHINFER_SAMPLER`` is set, sorts every
row of the logits (``vllm/v1/sample/ops/topk_topp_sampler.py``, ``apply_top_k_top_p``). Bytes live at once per
vocabulary entry and request, counted from that code: the BF16 logits the model returned (2, still held by the caller),
their FP32 copy (4), the sorted values (4) and int64 indices (8), the top-k mask (1), the top-p softmax-cumsum (4) and
mask (1), and the scattered result (4, where the version scatters into a new tensor): **28 bytes**. The sort's own
scratch is left out (a lower bound). Logits are all-gathered on every TP rank in V1, so each rank pays it whatever the
TP degree.

Checked against two public startup logs whose reserve is the whole of what neither weights nor KV took (not fitted):
Qwen3-235B-A22B-FP8 at TP4 on H100, ~7.7 GiB (vllm-project/vllm issue #21348: "Available KV cache memory: 8.11 GiB"
of a 71.3 GiB budget with ~55.5 GiB of weights), where this term is 4.1 GiB; gpt-oss-120b on one H100, ~7.4 GiB (issue
#23278: 65.97 GiB of weights, "Available KV cache memory: -2.14 GiB"), where it is 5.4 GiB. The rest (the forward's
peak with the fused-MoE workspaces, NCCL and cuBLAS buffers) is not priced here.
"""

from __future__ import annotations

#: Bytes live per vocabulary entry and request while vLLM V1's sampler warm-up applies top-k and top-p (see above).
VLLM_SAMPLER_WARMUP_BYTES = 28.0


def sampler_warmup_bytes(s) -> float:
    """Bytes per device vLLM's sampler warm-up holds at its peak: ``max_batch_seqs x vocab x 28`` under
    ``workload.engine: vllm``, else 0 (other engines' reserves are not priced)."""
    w = s.workload
    if getattr(w, "kind", None) != "serving" or getattr(w, "engine", None) != "vllm":
        return 0.0
    return float(w.max_batch_seqs) * s.model.vocab_size * VLLM_SAMPLER_WARMUP_BYTES
