"""The CUDA-graph batch sizes a serving engine captures, from the workload's list and batch limits."""

from __future__ import annotations


def captured_sizes(w) -> list[int] | None:
    """The workload's captured CUDA-graph batch sizes within its batch limits; None: no list, graphs at
    each batch's own size.

    TensorRT-LLM keeps the sizes at most ``min(max_batch_size, max_num_tokens)``; with padding on and
    a listed size above that bound it captures the bound itself too, so the batches between the last
    kept size and the limit pad to it instead of running eagerly (``_filter_cuda_graph_batch_sizes``
    in ``tensorrt_llm/_torch/pyexecutor/model_engine.py``: "padding to max_cuda_graph_bs is acceptable").
    """
    sizes = getattr(w, "cuda_graph_batch_sizes", None)
    if sizes is None:
        return None
    bound = min(w.max_batch_seqs, w.max_batch_tokens)
    kept = [b for b in sorted(sizes) if b <= bound]
    if getattr(w, "cuda_graph_padding", True) and max(sizes) > bound and (not kept or kept[-1] != bound):
        kept.append(bound)
    return kept
