"""Op tables of pipeline chunks and their expansion into spans. Pure numpy.

A chunk's forward (or backward) is one coarse unit of pipeline work; its op table lists the ops
inside it in execution order with their durations per microbatch. Once the pipeline simulation
has fixed when each unit starts, every op's span follows from ``start + cumsum(durations)``.

With ``plan.overlap_alltoall`` (Megatron-core's combined 1F1B) a forward unit and the backward unit
of another microbatch run as one: :func:`combine_units` lays their two op chains on two streams,
``compute`` (everything else, TP all-reduces included: they block it) and ``ep_comm`` (the EP
dispatch and combine), so one chain's all-to-all runs while the other computes.

Schedules that split the backward (``Schedule.splits_backward``: ZB-H1, DualPipe) get backward
tables where each layer's slots are followed by its weight-gradient columns, one per slot holding
GEMMs (``<slot>_wgrad``, ``wgrad.wgrad_costs``), the slot keeping the rest: a whole backward plays
every column, its ``B`` the others (:func:`wgrad_mask` false), its ``W`` the ``_wgrad`` columns
(:func:`split_op_end_s`); a layer's gradient-sync pieces are ready after its last ``_wgrad`` column.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from moesim.engine.training.buckets import bucket_pieces
from moesim.engine.training.layer_costs import BWD_SLOTS, CATEGORY, FWD_SLOTS, LayerCosts
from moesim.engine.training.wgrad import Wgrad
from moesim.results import SpanRecorder

_RANK_GROUP = {"tp_allreduce": "tp", "alltoall_dispatch": "ep", "alltoall_combine": "ep", "zero_gather": "dp"}
#: Op kinds that run on the ``ep_comm`` stream when all-to-alls overlap compute.
A2A_KINDS = tuple(k for k, cat in CATEGORY.items() if cat == "alltoall")
#: Suffix of the weight-gradient ops of a split backward (``attention_wgrad``, ``experts_wgrad``, ...).
WGRAD_SUFFIX = "_wgrad"


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
    host_wait_s: np.ndarray | None = None  # [M] of dur_s, the GPU waiting for the host (train_host.py)

    @property
    def unit_s(self) -> np.ndarray:
        """Seconds of the whole unit per microbatch: ``[M]``."""
        return self.dur_s.sum(axis=1)

    def only_rows(self, rows: np.ndarray) -> OpTable:
        """This table with the microbatches not in ``rows`` (a ``[M]`` mask) costing nothing (DualPipe:
        a chunk carries one direction's microbatches)."""
        keep = np.asarray(rows, dtype=bool)[:, None]
        return replace(self, dur_s=self.dur_s * keep, nbytes=self.nbytes * keep, tokens=self.tokens * keep,
                       dropped=self.dropped * keep, straggler_s=self.straggler_s * keep[:, 0],
                       host_wait_s=None if self.host_wait_s is None else self.host_wait_s * keep[:, 0])

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


def _layer_block(costs: LayerCosts, layers: np.ndarray, backward: bool, wgrad: Wgrad | None = None) -> dict:
    """The ops of ``layers`` (already in execution order) as one block, layer-major. With ``wgrad``
    each backward layer ends with the weight-gradient columns of its GEMM slots."""
    M = costs.fwd_s.shape[1]
    slots = BWD_SLOTS if backward else FWD_SLOTS
    nbytes, tokens, dur = costs.fwd_bytes, costs.fwd_tokens, costs.bwd_s if backward else costs.fwd_s
    if backward and costs.bwd_bytes is not None:  # an FP8 forward dispatch's gradient moves at 16 bits
        nbytes = costs.bwd_bytes
    if backward:  # backward slots are the forward ones reversed, behind one recompute slot
        lead = np.zeros(nbytes.shape[:2] + (1,))
        nbytes = np.concatenate([lead, nbytes[:, :, ::-1]], axis=2)
        tokens = np.concatenate([lead + costs.tokens_per_microbatch, tokens[:, :, ::-1]], axis=2)
    dropped = np.zeros(costs.fwd_s.shape[:2] + (len(slots),))
    dropped[:, :, slots.index("experts")] = costs.dropped
    if backward and wgrad is not None:
        cols = [k for k in range(len(slots)) if wgrad.slot_s[..., k].any()]
        w = wgrad.slot_s[..., cols]
        dur = np.concatenate([np.maximum(dur - wgrad.slot_s, 0.0), w], axis=2)
        nbytes = np.concatenate([nbytes, np.zeros_like(w)], axis=2)
        tokens = np.concatenate([tokens, tokens[..., cols]], axis=2)
        dropped = np.concatenate([dropped, np.zeros_like(w)], axis=2)
        slots = slots + tuple(slots[k] + WGRAD_SUFFIX for k in cols)
    n = len(layers) * len(slots)
    flat = lambda a: a[layers].transpose(1, 0, 2).reshape(M, n)
    return _block(slots * len(layers), np.repeat(layers, len(slots)), flat(dur), flat(nbytes), flat(tokens),
                  flat(dropped))


def _table(blocks: list[dict], straggler_s, dp=((), (), (), (), ()), opt_params: float = 0.0,
           host_wait_s=None) -> OpTable:
    cat = lambda key: np.concatenate([b[key] for b in blocks], axis=-1)
    dp_col, dp_s, dp_bytes, dp_kinds, dp_layers = dp
    return OpTable(np.asarray([k for b in blocks for k in b["kinds"]], dtype=object), cat("layers"),
                   cat("dur"), cat("nbytes"), cat("tokens"), cat("dropped"), straggler_s,
                   np.asarray(dp_col, dtype=int), np.asarray(dp_s, dtype=float),
                   np.asarray(dp_bytes, dtype=float), tuple(dp_kinds),
                   np.asarray(dp_layers, dtype=int), opt_params, host_wait_s)


def chunk_tables(costs: LayerCosts, layers: np.ndarray, first: bool, last: bool,
                 wgrad: Wgrad | None = None) -> tuple[OpTable, OpTable]:
    """(forward, backward) op tables of a chunk holding model ``layers`` (ascending ids).

    The first chunk starts with the embedding (lookup + TP all-reduce); the last ends with the
    output head and loss. Backward runs the layers in reverse with ``BWD_SLOTS`` each; the chunk's
    gradient-sync pieces (per layer its dense then its expert params; head; embedding) are ready
    as the op that produces their gradients finishes. ``wgrad``: split each backward layer (and
    the head) into its B columns and its weight-gradient columns after them (module docstring).
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
        if wgrad is None:
            bwd_blocks.append(_block(("lm_head",), (-1,), const([h_b]), tokens=const([T])))
        else:
            h_w = min(wgrad.head_s, h_b)
            bwd_blocks.append(_block(("lm_head", "lm_head" + WGRAD_SUFFIX), (-1, -1), const([h_b - h_w, h_w]),
                                     tokens=const([T, T])))
        dp_col, dp_s, dp_bytes = [len(bwd_blocks[0]["kinds"]) - 1], [costs.head_dp_s], [costs.head_dp_bytes]
        dp_kinds, dp_layers = ["dp_sync_dense"], [-1]
        opt += costs.head_opt_params
    col0 = len(bwd_blocks[0]["kinds"]) if last else 0
    layer_block = _layer_block(costs, rev, backward=True, wgrad=wgrad)
    nb = len(layer_block["kinds"]) // max(len(rev), 1)
    # each group's layers reduced in buckets (buckets.bucket_pieces), each once its last layer's gradients are ready
    pieces = []
    for kind, secs, nbytes, bucket, latency in (
            ("dp_sync_dense", costs.dp_dense_s, costs.dp_dense_bytes, costs.dp_bucket_bytes[0], costs.dp_latency_s[0]),
            ("dp_sync_expert", costs.dp_expert_s, costs.dp_expert_bytes, costs.dp_bucket_bytes[1], costs.dp_latency_s[1])):
        pieces += [(j, kind, s_, b_) for j, s_, b_ in bucket_pieces(secs[rev], nbytes[rev], latency, bucket)]
    for j, kind, s_, b_ in sorted(pieces, key=lambda x: (x[0], x[1])):
        dp_col.append(col0 + (j + 1) * nb - 1)
        dp_s.append(s_)
        dp_bytes.append(b_)
        dp_kinds.append(kind)
        dp_layers.append(int(rev[j]))
    bwd_blocks.append(layer_block)
    if first:
        bwd_blocks.append(_block(("tp_allreduce", "embedding"), (-1, -1), const([e_ar, e_b]), tokens=const([T, T])))
        dp_col.append(col0 + len(rev) * nb + 1)
        dp_s.append(costs.embed_dp_s)
        dp_bytes.append(costs.embed_dp_bytes)
        dp_kinds.append("dp_sync_dense")
        dp_layers.append(-1)
    wait = lambda w: None if w is None else w[layers].sum(axis=0)
    fwd = _table(fwd_blocks, costs.straggler_fwd_s[layers].sum(axis=0), host_wait_s=wait(costs.host_wait_fwd_s))
    bwd = _table(bwd_blocks, costs.straggler_bwd_s[layers].sum(axis=0), (dp_col, dp_s, dp_bytes, dp_kinds, dp_layers), opt,
                 wait(costs.host_wait_bwd_s))
    return fwd, bwd


def add_unit_spans(rec: SpanRecorder, table: OpTable, stage: int, unit_start_s: np.ndarray,
                   backward: bool, offset_s: float = 0.0, op_end_s: np.ndarray | None = None,
                   a2a_stream: str = "compute") -> None:
    """Record every op of ``table`` for all microbatches, given each unit's start: ``[M]`` seconds.

    ``op_end_s [M, n_ops]``: when each op ends after its unit's start (default: one after another,
    ``cumsum``; combined units pass :attr:`Combined.op_end_s`). ``a2a_stream``: the stream of the
    all-to-all ops (``ep_comm`` when they overlap compute).
    """
    rel = np.cumsum(table.dur_s, axis=1) if op_end_s is None else op_end_s
    ends = unit_start_s[:, None] + rel + offset_s
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
    stream = "compute"
    if a2a_stream != "compute":
        streams = np.where(np.isin(table.kinds.astype(str), A2A_KINDS), a2a_stream, "compute").astype(object)
        stream = np.broadcast_to(streams, (M, len(kinds)))[keep]
    rec.add(kind_grid[keep], stage, stream, starts[keep], ends[keep], layer=layer_grid[keep],
            item=item_grid[keep], bytes=table.nbytes[keep], tokens=table.tokens[keep],
            dropped=table.dropped[keep], rank_group=group_grid[keep])


def dp_ready_offsets(table: OpTable, wgrad_only: bool = False) -> np.ndarray:
    """Seconds from a backward unit's start until each gradient-sync piece is ready: ``[M, n_pieces]``.
    ``wgrad_only``: from the start of a ``W`` unit (only the weight-gradient columns play)."""
    dur = table.dur_s * wgrad_mask(table.kinds) if wgrad_only else table.dur_s
    return np.cumsum(dur, axis=1)[:, table.dp_col]


def wgrad_mask(kinds) -> np.ndarray:
    """Which ops of a backward table (its ``kinds``) are weight-gradient columns (played by ``W``)."""
    return np.char.endswith(np.asarray(kinds).astype(str), WGRAD_SUFFIX)


def split_op_end_s(dur: np.ndarray, wmask: np.ndarray, w_start_s) -> np.ndarray:
    """When each op of a backward row ``dur [..., n_ops]`` ends, after its ``B`` unit's start, when
    ``B`` plays the columns ``wmask`` leaves and ``W``, starting ``w_start_s`` later, the others."""
    b_end = np.cumsum(np.where(wmask, 0.0, dur), axis=-1)
    w_end = np.asarray(w_start_s)[..., None] + np.cumsum(np.where(wmask, dur, 0.0), axis=-1)
    return np.where(wmask, w_end, b_end)


@dataclass(frozen=True)
class Combined:
    """A forward unit and a backward unit (of another microbatch) played together on one stage.

    ``op_end_s``: (forward, backward) ``[n_ops]`` seconds from the combined unit's start until each
    op of that unit's table row ends (a zero-length op ends where the op before it does).
    """

    makespan_s: float  # until both parts are done
    end_s: tuple[float, float]  # (forward, backward) part done, after the start
    op_end_s: tuple[np.ndarray, np.ndarray]
    hidden_s: float  # serial time (both units one after the other) - makespan: all-to-all hidden


def _segments(dur: np.ndarray, comm: np.ndarray):
    """Runs of consecutive non-zero ops on one stream: (op ids, run of each op, stream of each run,
    seconds of each run)."""
    idx = np.flatnonzero(dur > 0)
    res = comm[idx]
    new = np.ones(len(idx), dtype=bool)
    new[1:] = res[1:] != res[:-1]
    seg = np.cumsum(new) - 1
    return idx, seg, new, res[new].tolist(), np.add.reduceat(dur[idx], np.flatnonzero(new)).tolist() if len(idx) else []


def a2a_mask(kinds) -> np.ndarray:
    """Which ops of an op table (its ``kinds``) run on the ``ep_comm`` stream."""
    return np.isin(np.asarray(kinds).astype(str), A2A_KINDS)


def combine_units(fwd_dur: np.ndarray, fwd_a2a: np.ndarray, bwd_dur: np.ndarray, bwd_a2a: np.ndarray,
                  sm_slowdown: float = 0.0) -> Combined:
    """Lay two independent op chains (a forward unit's ops and a backward unit's, in order) on the
    ``compute`` and ``ep_comm`` streams, as Megatron-core's combined 1F1B co-schedules the forward
    of one microbatch with the backward of another (``--overlap-moe-expert-parallel-comm``).

    ``*_dur``: seconds of each op; ``*_a2a``: which ops are all-to-alls (:func:`a2a_mask`). Each
    chain runs in its own order; a stream runs one op at a time. Consecutive ops of a chain on
    one stream form a run (e.g. a layer's attention, TP all-reduce and router); runs are started
    greedily, earliest possible start first (ties: the chain with more work left, then forward), so
    a stream idles only while no run of either chain is ready for it. Hence at every instant one
    stream is busy: ``max(compute, a2a, each chain) <= makespan <= both chains one after the
    other``, and the all-to-all exposed in the pair is ``makespan - compute`` (the rest is hidden).

    ``sm_slowdown`` (``costmodel.comm.overlap_slowdown``): compute seconds lost per second both
    streams run, to the SMs the all-to-all kernels hold; the pair's timeline is stretched by
    ``sm_slowdown x overlap`` (overlap = compute + all-to-all - makespan), which counts as exposed
    all-to-all. Memory-bandwidth contention is not modelled.
    """
    durs = (np.asarray(fwd_dur, dtype=float), np.asarray(bwd_dur, dtype=float))
    segs = [_segments(d, np.asarray(m, dtype=bool)) for d, m in zip(durs, (fwd_a2a, bwd_a2a))]
    res, sd = [g[3] for g in segs], [g[4] for g in segs]
    n = [len(r) for r in res]
    starts: list[list[float]] = [[], []]
    left = [sum(sd[0]), sum(sd[1])]
    ptr, ready, free = [0, 0], [0.0, 0.0], [0.0, 0.0]  # free[stream]: 0 compute, 1 ep_comm
    while ptr[0] < n[0] or ptr[1] < n[1]:
        best = None
        for ch in (0, 1):
            j = ptr[ch]
            if j < n[ch]:
                t = ready[ch] if ready[ch] > free[res[ch][j]] else free[res[ch][j]]
                cand = (t, -left[ch], ch)
                if best is None or cand < best:
                    best = cand
        t0, _, ch = best
        j = ptr[ch]
        d = sd[ch][j]
        starts[ch].append(t0)
        ready[ch] = free[res[ch][j]] = t0 + d
        left[ch] -= d
        ptr[ch] += 1
    op_end = []
    for dur, (idx, seg, new, _r, _d), st in zip(durs, segs, starts):
        end = np.zeros(len(dur))
        if len(idx):
            d = dur[idx]
            cs = np.cumsum(d)
            first = cs[new] - d[new]  # cumulative seconds before each run
            end[idx] = np.asarray(st)[seg] + cs - first[seg]
            end = np.maximum.accumulate(end)
        op_end.append(end)
    part_end = tuple(float(e[-1]) if len(e) else 0.0 for e in op_end)
    makespan = max(part_end)
    serial = float(durs[0].sum() + durs[1].sum())
    if sm_slowdown > 0 and makespan > 0:
        comm = sum(float(d[np.asarray(m, dtype=bool)].sum()) for d, m in zip(durs, (fwd_a2a, bwd_a2a)))
        overlap = max(comm - (makespan - (serial - comm)), 0.0)  # both streams busy
        k = 1.0 + sm_slowdown * overlap / makespan
        op_end, part_end, makespan = [e * k for e in op_end], tuple(e * k for e in part_end), makespan * k
    return Combined(makespan, part_end, (op_end[0], op_end[1]), max(serial - makespan, 0.0))
