"""Gradient buckets of the data-parallel sync: how many collectives a step launches. Pure functions.

Megatron-Core's DDP (and its distributed optimizer, whose parameter all-gathers use the same
buffers) puts the gradients of the parameters that require one into buckets of
``max(40e6, 1e6 x dp)`` parameters, filled in backward order (the last layer's first), and reduces
each bucket with one collective once its gradients are all ready; with ``overlap_grad_reduce`` off,
everything is one bucket (NVIDIA/Megatron-LM ``megatron/core/distributed/distributed_data_parallel.py``
@d98e8a64: ``bucket_size = max(40000000, 1000000 * dp_group.size())``, ``None`` without the overlap;
frozen parameters are skipped when the buffers are built). A collective pays its latency once,
whatever its size, and runs when its bucket closes: layers smaller than a bucket share one
collective (a LoRA step over 64 ranks syncs its adapters in one or two, not one per layer), and the
bucket that closes last, at the first layers, is reduced after the backward has ended.

moesim keeps each layer's sync priced as a collective of its own (``LayerCosts.dp_dense_s``) and the
latency of one collective of the group (``LayerCosts.dp_latency_s``); :func:`bucket_pieces` merges a
model chunk's layers into buckets in backward order (a bucket of ``k`` layers: their seconds less
``k - 1`` latencies), which the step reduces when the bucket's last layer's gradients are ready
(``timeline.chunk_tables``) and, under ZeRO-1/2, gathers after the optimizer step before its first
layer's forward (``zero.zero12_bucket_gathers``). ZeRO-3 keeps one collective per layer (FSDP and
DeepSpeed gather and reduce per module).
"""

from __future__ import annotations

#: Megatron-Core's default bucket: at least 40M parameters, and 1M per data-parallel rank.
MIN_BUCKET_PARAMS = 40e6
BUCKET_PARAMS_PER_RANK = 1e6


def bucket_params(dp: int, overlap: bool, total_params: float, size: float | None = None) -> float:
    """Parameters per bucket of a group of ``dp`` ranks whose device holds ``total_params``
    parameters with gradients: ``size`` (``plan.dp_bucket_params``) or Megatron's default, or all of
    them in one bucket without the overlap (and when they are fewer than a bucket)."""
    whole = max(float(total_params), 1.0)
    if not overlap:
        return whole
    return min(float(size) if size else max(MIN_BUCKET_PARAMS, BUCKET_PARAMS_PER_RANK * dp), whole)


def bucket_pieces(seconds, nbytes, latency_s: float, bucket_bytes: float | None) -> list[tuple[int, float, float]]:
    """The collectives of layers in backward order (``seconds``, ``nbytes``: one entry a layer, each
    priced as a collective of its own): ``(index of the layer that closes the bucket, seconds,
    bytes)`` per bucket, in order. A bucket closes once it holds ``bucket_bytes`` or at the last
    layer; ``k`` layers cost their seconds less ``k - 1`` latencies. Layers without bytes join no
    bucket; without buckets (``None``) each layer with bytes is one."""
    out: list[tuple[int, float, float]] = []
    acc_s = acc_b = 0.0
    k = 0
    for i, (s, b) in enumerate(zip(seconds, nbytes)):
        if b > 0:
            acc_s, acc_b, k = acc_s + float(s), acc_b + float(b), k + 1
        if k and (bucket_bytes is None or acc_b >= bucket_bytes or i == len(nbytes) - 1):
            out.append((i, acc_s - (k - 1) * latency_s, acc_b))
            acc_s = acc_b = 0.0
            k = 0
    return out
