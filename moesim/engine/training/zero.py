"""What ZeRO's sharding costs in time: gradient reduce-scatters and parameter all-gathers. Pure numpy.

Memory sharding by ``plan.zero_stage`` lives in ``moesim.memory.memory_report``; this module
gives the matching collectives (DeepSpeed ZeRO, Megatron's distributed optimizer, PyTorch FSDP).
Every all-gather and reduce-scatter is a ring over the same data-parallel group as the gradient
all-reduce it replaces (dense params over ``dp``, expert params over the expert-DP group), so each costs
exactly half of that layer's all-reduce (``comm.ring_reduce_scatter_s``):

- stage 0: gradients all-reduced once per step (overlapped with backward, as before);
- stage 1: gradients reduce-scattered once per step (each rank keeps the full gradient buffer and
  updates its 1/dp of the parameters), then the updated parameters all-gathered after the optimizer
  step: one all-reduce's bytes in all. With ``overlap_dp_comm`` the gather hides behind the next
  step's first forward (Megatron's ``overlap_param_gather``: layer ``j+1``'s gather runs while layer
  ``j`` computes); without, it runs after the optimizer;
- stage 2: gradients are sharded too, so each microbatch's gradients are reduce-scattered as its
  backward produces them (there is no full buffer to accumulate into); parameters gathered as stage 1;
- stage 3: parameters are sharded, so every microbatch gathers each layer's parameters before its
  forward and again before its backward (FSDP / DeepSpeed free them after use), prefetched one
  layer ahead; a layer waits for the part of its gather the previous layer's compute did not hide.
  Gradients are reduce-scattered per microbatch as in stage 2; no gather after the step.

A parameter gather moves the weights at their width: 16-bit, fp32 when the model trains in fp32, and under FP8
training the 16-bit copies (Megatron's default) or, with ``plan.fp8_param_gather``, the FP8 weights, 1 byte. The
gradient sync moves the gradients at theirs (fp32 by default under 16-bit training, ``plan.grad_dtype``); where the
two differ the gathers are priced apart (``LayerCosts.gather_*``, ``gathers.weight_gathers``).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from moesim.costmodel.comm import prefetched_wait_s
from moesim.engine.training.buckets import bucket_pieces
from moesim.engine.training.layer_costs import LayerCosts
from moesim.engine.training.timeline import OpTable

#: Op kind of a wait for a ZeRO-3 parameter gather (inserted before the layer it feeds).
GATHER_KIND = "zero_gather"


@dataclass(frozen=True)
class ZeroPlan:
    """The collectives a ZeRO stage adds or changes, for one step."""

    stage: int
    reduce_every_microbatch: bool  # stage >= 2: gradient reduce-scatter after every microbatch
    gather_after_step: bool  # stages 1-2: parameters all-gathered after the optimizer step
    gather_per_pass: bool  # stage 3: parameters all-gathered before every forward and backward pass


def zero_plan(stage: int) -> ZeroPlan:
    """The :class:`ZeroPlan` of ``plan.zero_stage``."""
    return ZeroPlan(stage, stage >= 2, stage in (1, 2), stage >= 3)


def sharded_costs(costs: LayerCosts, stage: int) -> LayerCosts:
    """``costs`` with each gradient all-reduce replaced by a reduce-scatter (half of it) for ZeRO >= 1.

    The halved ``dp_*_s`` are also each layer's parameter all-gather (same group, same bytes).
    """
    if stage < 1:
        return costs
    out = replace(costs, dp_dense_s=costs.dp_dense_s / 2, dp_expert_s=costs.dp_expert_s / 2,
                  embed_dp_s=costs.embed_dp_s / 2, head_dp_s=costs.head_dp_s / 2,
                  dp_latency_s=(costs.dp_latency_s[0] / 2, costs.dp_latency_s[1] / 2))
    if costs.gather_layer_s is None:
        return out
    return replace(out, gather_layer_s=costs.gather_layer_s / 2, gather_embed_s=costs.gather_embed_s / 2,
                   gather_head_s=costs.gather_head_s / 2,
                   gather_expert_s=costs.gather_expert_s / 2)


def segments(table: OpTable) -> tuple[np.ndarray, np.ndarray]:
    """(first column, model layer) of each block of ``table``: runs of ops of one layer; the
    embedding and the output head (layer -1) are blocks of their own."""
    layers = np.asarray(table.layers)
    if len(layers) == 0:
        return np.zeros(0, dtype=int), np.zeros(0, dtype=int)
    change = np.ones(len(layers), dtype=bool)
    change[1:] = layers[1:] != layers[:-1]  # embedding and head never touch: layers lie between
    starts = np.flatnonzero(change)
    return starts, layers[starts]


def block_gather_s(table: OpTable, starts: np.ndarray, block_layers: np.ndarray, costs: LayerCosts) -> np.ndarray:
    """Seconds of the parameter all-gather each block needs (``costs`` already sharded): ``[n_blocks]``.

    The gathered weights are ``LayerCosts.gather_layer_s`` where it is set (fine-tuning: every weight
    under ZeRO-3, frozen ones too, the trainable ones under ZeRO-1/2, ``finetune_params``; or weights
    moved at another width than their gradients), the gradient syncs' seconds otherwise."""
    ends = np.append(starts[1:], len(table.kinds))
    out = np.zeros(len(starts))
    ft = costs.gather_layer_s is not None
    embed_s, head_s = (costs.gather_embed_s, costs.gather_head_s) if ft else (costs.embed_dp_s, costs.head_dp_s)
    layer_s = zero12_bucket_gathers(costs, block_layers) if costs.dp_bucket_bytes != (None, None) else (
        costs.gather_layer_s if ft else costs.dp_dense_s + costs.dp_expert_s)
    for j, (a, b, layer) in enumerate(zip(starts, ends, block_layers)):
        if layer >= 0:
            out[j] = layer_s[layer]
        else:
            kinds = set(table.kinds[a:b])
            out[j] = embed_s * ("embedding" in kinds) + head_s * ("lm_head" in kinds)
    return out


def zero12_bucket_gathers(costs: LayerCosts, block_layers: np.ndarray) -> np.ndarray:
    """``[L]`` seconds of ZeRO-1/2's parameter all-gathers, bucketed as the gradient syncs are
    (``buckets.bucket_pieces`` over the chunk's layers, ``block_layers``, from the last): each bucket
    is one collective, gathered before the first (lowest) of its layers, which carries its time; the
    other layers carry none. The weights move at their width (``gather_layer_s``) where it differs."""
    (dense_b, expert_b), (dense_lat, expert_lat) = costs.dp_bucket_bytes, costs.dp_latency_s
    if costs.gather_layer_s is not None:  # set with its experts' part (gathers.weight_gathers)
        expert = costs.gather_expert_s
        dense = costs.gather_layer_s - expert
    else:
        dense, expert = costs.dp_dense_s, costs.dp_expert_s
    out = np.zeros(len(costs.dp_dense_s))
    rev = np.array([x for x in block_layers if x >= 0], dtype=int)[::-1]
    for secs, nbytes, bucket, latency in ((dense, costs.dp_dense_bytes, dense_b, dense_lat),
                                          (expert, costs.dp_expert_bytes, expert_b, expert_lat)):
        for j, t, _ in bucket_pieces(secs[rev], nbytes[rev], latency, bucket):
            out[rev[j]] += t
    return out


def chunk_gather_s(fwd: OpTable, costs: LayerCosts) -> float:
    """ZeRO-1/2: seconds of all the parameter all-gathers of one model chunk after the optimizer step (``costs``
    sharded; ``fwd``: the chunk's forward table), its blocks' as :func:`block_gather_s` prices them."""
    starts, block_layers = segments(fwd)
    return float(block_gather_s(fwd, starts, block_layers, costs).sum()) if len(starts) else 0.0


def block_compute_s(table: OpTable, starts: np.ndarray) -> np.ndarray:
    """Seconds each block occupies the compute stream per microbatch: ``[M, n_blocks]``."""
    cum = np.concatenate([np.zeros((table.dur_s.shape[0], 1)), np.cumsum(table.dur_s, axis=1)], axis=1)
    ends = np.append(starts[1:], table.dur_s.shape[1])
    return cum[:, ends] - cum[:, starts]


def with_gather_waits(table: OpTable, costs: LayerCosts, prefetch: bool) -> tuple[OpTable, float]:
    """ZeRO-3: ``table`` with a ``zero_gather`` op before every block holding its wait for the
    block's parameters (``comm.prefetched_wait_s``), and the gather seconds of one pass summed over
    microbatches (hidden or not)."""
    starts, block_layers = segments(table)
    if len(starts) == 0:
        return table, 0.0
    gather = block_gather_s(table, starts, block_layers, costs)
    wait = prefetched_wait_s(gather[None, :], block_compute_s(table, starts), prefetch)
    M = table.dur_s.shape[0]
    at = starts
    ins = lambda a, vals: np.insert(a, at, vals, axis=-1)
    zeros = np.zeros((M, len(starts)))
    whole = (costs.dp_dense_bytes + costs.dp_expert_bytes) if costs.gather_layer_bytes is None else costs.gather_layer_bytes
    gather_bytes = np.array([float(whole[x]) if x >= 0 else 0.0 for x in block_layers])
    shifted = table.dp_col + np.searchsorted(starts, table.dp_col, side="right")
    new = replace(
        table,
        kinds=np.insert(table.kinds.astype(object), at, GATHER_KIND),
        layers=ins(table.layers, block_layers),
        dur_s=ins(table.dur_s, wait),
        nbytes=ins(table.nbytes, np.broadcast_to(gather_bytes, (M, len(starts)))),
        tokens=ins(table.tokens, zeros),
        dropped=ins(table.dropped, zeros),
        dp_col=shifted,
    )
    return new, float(gather.sum()) * M


def gather_wait_s(table: OpTable) -> np.ndarray:
    """Seconds of ``zero_gather`` waits in ``table`` per microbatch: ``[M]``."""
    sel = np.asarray(table.kinds) == GATHER_KIND
    return table.dur_s[:, sel].sum(axis=1)


def after_step_gather(fwd: OpTable, costs: LayerCosts, stage_total_s: float, first_start_s: float,
                      prefetch: bool) -> float:
    """ZeRO-1/2: seconds the parameter all-gather after the optimizer step adds to the step of one stage.

    ``stage_total_s``: all the stage's gathers. With ``prefetch`` they start when the step ends and
    feed the next step's first forward unit ``fwd`` (microbatch 0 of the stage's first chunk), which
    may start ``first_start_s`` later (pipeline warm-up): only its waits count; gathers of later
    chunks are assumed hidden behind the forwards before them. Without, the whole gather is exposed.
    """
    if not prefetch:
        return stage_total_s
    starts, block_layers = segments(fwd)
    if len(starts) == 0:
        return 0.0
    gather = block_gather_s(fwd, starts, block_layers, costs)
    compute = block_compute_s(fwd, starts)[0]
    return float(prefetched_wait_s(gather, compute, True, compute_ready_s=first_start_s).sum())
