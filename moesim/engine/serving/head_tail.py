"""What a serving iteration does with the logits after the output head's GEMM. Pure numpy.

Every emitting sequence's logits (``vocab_size`` entries) leave the head's GEMM and, before a
token comes out, pass through two more steps that the GEMM's price does not hold:

* **The all-gather over TP.** The head is vocabulary-parallel (each TP rank computes
  ``ceil(vocab / tp)`` columns), and the sampler wants whole rows: vLLM's ``LogitsProcessor``
  all-gathers the shards on every rank (``vllm/model_executor/layers/logits_processor.py``,
  ``_gather_logits``: ``tensor_model_parallel_all_gather`` where ``use_all_gather``, on CUDA), and
  TensorRT-LLM's PyTorch backend builds its ``LMHead`` with ``gather_output=True``
  (``tensorrt_llm/_torch/modules/embedding.py``), an all-gather too. ``seqs x vocab`` 16-bit logits
  land on each rank; none under ``plan.dp_attention``, whose ranks run the head whole (tp 1).
* **The sampler's passes.** Greedy decoding (the harnesses of the validation table decode
  greedily: ``trtllm-bench``, MLPerf's Offline runs, ``vllm bench serve``'s temperature 0) casts
  and reads every logit: vLLM V1's ``Sampler`` makes them fp32 (``logits.to(torch.float32)``: 2
  bytes read, 4 written) and takes the argmax of an all-greedy batch (4 read),
  10 bytes a logit (``vllm/v1/sample/sampler.py``); TensorRT-LLM's head writes fp32 logits (2
  bytes beyond the 16-bit write the GEMM is priced with) and its top-1 reads them (4), 6 bytes.
  Random sampling (temperature, top-k/top-p) moves several times more and is not priced.
  Apple and CPU devices (``costmodel.host.platform_of``) get none: llama.cpp's ``llama-bench``, which
  the Apple presets are fitted on, samples nothing, and llama.cpp's server samples on the CPU.

Both grow with the emitting sequences and the vocabulary, not with the model's depth: small for
one sequence, a few milliseconds a step for thousands of sequences of a 128-200k vocabulary.
"""

from __future__ import annotations

import numpy as np

from moesim.costmodel import CostModel

#: Bytes moved per logit by a greedy sampler beyond the head GEMM's 16-bit write, by serving engine
#: (``workload.engine``; ``None`` is the platform default, a vLLM V1-class engine). See the module doc.
GREEDY_BYTES_PER_LOGIT = {None: 10.0, "vllm": 10.0, "trtllm": 6.0}
_LOGIT_BYTES = 2.0  #: the head's 16-bit output, what the all-gather moves


def logits_gather_s(cm: CostModel, seqs, vocab: int, tp: int) -> np.ndarray:
    """Seconds of the all-gather of ``seqs`` (array-like) sequences' logits over ``tp`` ranks.

    The gathered buffer is ``seqs x ceil(vocab / tp) x tp`` 16-bit entries (vocab-parallel engines
    pad the vocabulary to a multiple of tp); 0 at tp 1 or no sequence.
    """
    n = np.asarray(seqs, dtype=float)
    if tp <= 1:
        return np.zeros_like(n)
    nbytes = n * (-(-vocab // tp)) * tp * _LOGIT_BYTES
    return np.where(n > 0, np.asarray(cm.allgather_s(nbytes, tp), dtype=float), 0.0)


def sampler_s(cm: CostModel, seqs, vocab: int, engine: str | None, platform: str = "cuda") -> np.ndarray:
    """Seconds of a greedy sampler's passes over ``seqs`` (array-like) sequences' logits (whole rows,
    on every rank), as streaming memory kernels; none off CUDA (``platform`` 'mps' or 'cpu')."""
    n = np.asarray(seqs, dtype=float)
    if platform != "cuda":
        return np.zeros_like(n)
    nbytes = n * vocab * GREEDY_BYTES_PER_LOGIT[engine]
    return np.where(n > 0, np.asarray(cm.memory_s(nbytes), dtype=float), 0.0)


def head_tail_s(cm: CostModel, seqs, vocab: int, tp: int, engine: str | None, platform: str = "cuda") -> np.ndarray:
    """:func:`logits_gather_s` plus :func:`sampler_s`: what follows the head's GEMM, seconds."""
    return logits_gather_s(cm, seqs, vocab, tp) + sampler_s(cm, seqs, vocab, engine, platform)
