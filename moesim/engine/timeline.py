"""Op tables of pipeline chunks and their expansion into spans. Pure numpy.

A chunk's forward (or backward) is one coarse unit of pipeline work; its op table lists the ops
inside it in execution order with their durations per microbatch. Once the pipeline simulation
has fixed when each unit starts, every op's span follows from ``start + cumsum(durations)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from moesim.engine.layer_costs import BWD_SLOTS, CATEGORY, FWD_SLOTS, LayerCosts
from moesim.results import SpanRecorder

_RANK_GROUP = {"tp_allreduce": "tp", "alltoall_dispatch": "ep", "alltoall_combine": "ep", "zero_gather": "dp"}


@dataclass(frozen=True)
class OpTable:
    """Ops of one chunk in one direction, in execution order. Arrays are ``[M, n_ops]``."""

    kinds: np.ndarray  # [n_ops] op kind names (object)
    layers: np.ndarray  # [n_ops] model layer (-1: embedding / output head)
    dur_s: np.ndarray
    nbytes: np.ndarray
    tokens: np.ndarray
    dropped: np.ndarray
    straggler_s: np.ndarray  # [M] seconds of the unit spent waiting for the busiest EP rank
    dp_col: np.ndarray  # [n_pieces] op index after which each gradient-sync piece is ready
    dp_s: np.ndarray  # [n_pieces] seconds of each gradient-sync piece
    dp_bytes: np.ndarray  # [n_pieces] gradient bytes of each piece on this device
    dp_kinds: tuple[str, ...]  # [n_pieces] dp_sync_dense | dp_sync_expert
    dp_layers: np.ndarray  # [n_pieces] layer whose gradients each piece carries (-1: embedding/head)
    opt_params: float  # parameters of the chunk this device updates in the optimizer step

    @property
    def unit_s(self) -> np.ndarray:
        """Seconds of the whole unit per microbatch: ``[M]``."""
        return self.dur_s.sum(axis=1)

    def category_s(self) -> dict[str, float]:
        """Seconds summed over microbatches per breakdown category (compute, tp_comm, alltoall)."""
        out = {"compute": 0.0, "tp_comm": 0.0, "alltoall": 0.0}
        totals = self.dur_s.sum(axis=0)
        for kind, t in zip(self.kinds, totals):
            out[CATEGORY.get(kind, "compute")] += float(t)
        return out


def _block(kinds, layers, dur, nbytes=None, tokens=None, dropped=None) -> dict:
    """A run of ops: kinds/layers ``[k]``, numeric columns ``[M, k]`` (missing ones are zeros)."""
    z = np.zeros_like(dur)
    return {"kinds": list(kinds), "layers": np.asarray(layers, dtype=int), "dur": dur,
            "nbytes": z if nbytes is None else nbytes, "tokens": z if tokens is None else tokens,
            "dropped": z if dropped is None else dropped}


def _layer_block(costs: LayerCosts, layers: np.ndarray, backward: bool) -> dict:
    """The ops of ``layers`` (already in execution order) as one block, layer-major."""
    M = costs.fwd_s.shape[1]
    slots = BWD_SLOTS if backward else FWD_SLOTS
    n = len(layers) * len(slots)
    flat = lambda a: a[layers].transpose(1, 0, 2).reshape(M, n)
    nbytes, tokens = costs.fwd_bytes, costs.fwd_tokens
    if backward:  # backward slots are the forward ones reversed, behind one recompute slot
        lead = np.zeros(nbytes.shape[:2] + (1,))
        nbytes = np.concatenate([lead, nbytes[:, :, ::-1]], axis=2)
        tokens = np.concatenate([lead + costs.tokens_per_microbatch, tokens[:, :, ::-1]], axis=2)
    dropped = np.zeros(costs.fwd_s.shape[:2] + (len(slots),))
    dropped[:, :, slots.index("experts")] = costs.dropped
    return _block(slots * len(layers), np.repeat(layers, len(slots)),
                  flat(costs.bwd_s if backward else costs.fwd_s), flat(nbytes), flat(tokens), flat(dropped))


def _table(blocks: list[dict], straggler_s, dp=((), (), (), (), ()), opt_params: float = 0.0) -> OpTable:
    cat = lambda key: np.concatenate([b[key] for b in blocks], axis=-1)
    dp_col, dp_s, dp_bytes, dp_kinds, dp_layers = dp
    return OpTable(np.asarray([k for b in blocks for k in b["kinds"]], dtype=object), cat("layers"),
                   cat("dur"), cat("nbytes"), cat("tokens"), cat("dropped"), straggler_s,
                   np.asarray(dp_col, dtype=int), np.asarray(dp_s, dtype=float),
                   np.asarray(dp_bytes, dtype=float), tuple(dp_kinds),
                   np.asarray(dp_layers, dtype=int), opt_params)


def chunk_tables(costs: LayerCosts, layers: np.ndarray, first: bool, last: bool) -> tuple[OpTable, OpTable]:
    """(forward, backward) op tables of a chunk holding model ``layers`` (ascending ids).

    The first chunk starts with the embedding (lookup + TP all-reduce); the last ends with the
    output head and loss. Backward runs the layers in reverse with ``BWD_SLOTS`` each; the chunk's
    gradient-sync pieces (per layer its dense then its expert params; head; embedding) are ready
    as the op that produces their gradients finishes.
    """
    M = costs.fwd_s.shape[1]
    T = float(costs.tokens_per_microbatch)
    const = lambda vals: np.broadcast_to(np.asarray(vals, dtype=float), (M, len(vals)))
    rev = layers[::-1]
    fwd_blocks, bwd_blocks = [], []
    dp_col: list[int] = []
    dp_s: list[float] = []
    dp_bytes: list[float] = []
    dp_kinds: list[str] = []
    dp_layers: list[int] = []
    opt = float(costs.opt_params[layers].sum())
    if first:
        e_f, e_ar, e_b = costs.embed_s
        fwd_blocks.append(_block(("embedding", "tp_allreduce"), (-1, -1), const([e_f, e_ar]), tokens=const([T, T])))
        opt += costs.embed_opt_params
    fwd_blocks.append(_layer_block(costs, layers, backward=False))
    if last:
        h_f, h_b = costs.head_s
        fwd_blocks.append(_block(("lm_head",), (-1,), const([h_f]), tokens=const([T])))
        bwd_blocks.append(_block(("lm_head",), (-1,), const([h_b]), tokens=const([T])))
        dp_col, dp_s, dp_bytes = [0], [costs.head_dp_s], [costs.head_dp_bytes]
        dp_kinds, dp_layers = ["dp_sync_dense"], [-1]
        opt += costs.head_opt_params
    col0 = 1 if last else 0
    nb = len(BWD_SLOTS)
    for j, layer in enumerate(rev):
        end_col = col0 + (j + 1) * nb - 1
        dp_col += [end_col, end_col]
        dp_s += [float(costs.dp_dense_s[layer]), float(costs.dp_expert_s[layer])]
        dp_bytes += [float(costs.dp_dense_bytes[layer]), float(costs.dp_expert_bytes[layer])]
        dp_kinds += ["dp_sync_dense", "dp_sync_expert"]
        dp_layers += [int(layer), int(layer)]
    bwd_blocks.append(_layer_block(costs, rev, backward=True))
    if first:
        bwd_blocks.append(_block(("tp_allreduce", "embedding"), (-1, -1), const([e_ar, e_b]), tokens=const([T, T])))
        dp_col.append(col0 + len(rev) * nb + 1)
        dp_s.append(costs.embed_dp_s)
        dp_bytes.append(costs.embed_dp_bytes)
        dp_kinds.append("dp_sync_dense")
        dp_layers.append(-1)
    fwd = _table(fwd_blocks, costs.straggler_fwd_s[layers].sum(axis=0))
    bwd = _table(bwd_blocks, costs.straggler_bwd_s[layers].sum(axis=0), (dp_col, dp_s, dp_bytes, dp_kinds, dp_layers), opt)
    return fwd, bwd


def add_unit_spans(rec: SpanRecorder, table: OpTable, stage: int, unit_start_s: np.ndarray,
                   backward: bool, offset_s: float = 0.0) -> None:
    """Record every op of ``table`` for all microbatches, given each unit's start: ``[M]`` seconds."""
    ends = unit_start_s[:, None] + np.cumsum(table.dur_s, axis=1) + offset_s
    starts = ends - table.dur_s
    keep = table.dur_s > 0
    M = table.dur_s.shape[0]
    suffix = "_bwd" if backward else "_fwd"
    kinds = np.array([k + suffix for k in table.kinds], dtype=object)
    groups = np.array([_RANK_GROUP.get(k, "") for k in table.kinds], dtype=object)
    kind_grid = np.broadcast_to(kinds, (M, len(kinds)))
    group_grid = np.broadcast_to(groups, (M, len(kinds)))
    layer_grid = np.broadcast_to(table.layers, (M, len(kinds)))
    item_grid = np.broadcast_to(np.arange(M)[:, None], (M, len(kinds)))
    rec.add(kind_grid[keep], stage, "compute", starts[keep], ends[keep], layer=layer_grid[keep],
            item=item_grid[keep], bytes=table.nbytes[keep], tokens=table.tokens[keep],
            dropped=table.dropped[keep], rank_group=group_grid[keep])


def dp_ready_offsets(table: OpTable) -> np.ndarray:
    """Seconds from a backward unit's start until each gradient-sync piece is ready: ``[M, n_pieces]``."""
    return np.cumsum(table.dur_s, axis=1)[:, table.dp_col]
