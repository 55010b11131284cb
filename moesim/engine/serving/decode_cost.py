"""Seconds of one continuous-batching iteration of one serving replica, priced on the op graph.

An iteration runs every layer once over the batch's ``T`` new tokens (prefill chunks plus one
token per decoding sequence) on one replica of ``tp x pp`` devices. Each layer's ops are the op
graph's block (``ops.block_ops``, the list the training step and ``calibrate.predict`` price too):

* fused residual-add + RMSNorm before attention and before the FFN, the QKV and O projections
  (TP-sharded GEMMs), a kernel that rotates Q and K and writes the new K and V to the cache, one
  attention kernel reading every sequence's KV cache, and two TP all-reduces of the hidden states
  (MLA: its absorbed form's kernels, ``ops.mla_projection_ops``);
* dense layers: the FFN as two GEMMs and the activation kernel between them; MoE layers: the
  router GEMM and top-k, the token permute (each token copied to its ``top_k`` expert rows), the EP
  dispatch and combine all-to-alls (latency-bound at decode sizes) when ``ep > 1``, the routed
  experts as grouped GEMMs that read only the experts the batch touches (expected
  ``E(1-(1-k/E)^B)`` under uniform routing, sampled per iteration under skew), the un-permute
  (the ``top_k`` expert outputs read back and summed per token) and the shared experts;
* the output head over the sequences that emit a token (its GEMM, the logits' all-gather over TP and
  a greedy sampler's passes, ``serving.head_tail``), and ``pp - 1`` pipeline hand-offs;
* the host: the scheduler's time per iteration, exposed where it does not overlap the GPU, and
  CUDA-graph replay (a gap per kernel on top of its GPU time) instead of eager launches (the CPU's
  launches where they outlast the GPU work) for decode-only batches (``host_s``,
  ``costmodel.host``, each default cited there).

Pipeline choice: the latency of an iteration is the sum over its ``pp`` stages (every layer in
sequence) plus the hand-offs; a replica keeps ``pp`` such micro-batches in flight (vLLM's virtual
engines), each entering the first stage once the previous one has left it (``serving.py``), so
with equal stages a replica finishes one micro-batch per stage time.

Expert parallelism in serving: ``ep`` replicas share their experts, laid out by a
:class:`~moesim.engine.placement.Placement` (contiguous ``E/ep`` per rank, or with
``placement.redundant_experts: N`` EPLB's ``(E + N)/ep`` slots per rank holding copies of each
layer's hottest experts, a replicated expert's tokens split over its copies). An iteration's experts
on one rank serve the batches of all ``ep`` replicas of its group, assumed equal to this replica's
batch (replicas iterate on their own); under ``plan.dp_attention`` the group runs in lock-step and
``group_time_s`` prices the experts at the group's mean tokens per rank (``serving.lockstep``). With ``plan.ep_in_tp_group`` (``etp`` 1, ``ep = tp``)
the EP group is the replica's own TP group instead: each rank holds the batch after attention, runs
its ``E/ep`` whole experts on the tokens routed to them (no dispatch or combine) and the TP all-reduce
sums the outputs (``ep_sources`` 1: the group serves one batch).

Capacity (``overflow: drop``) is per source rank, the rule training uses
(``routing.capacity_per_expert``): each replica's batch of ``T`` tokens gets
``max(ceil(cf * T * k / E), routing.min_capacity)`` slots per expert and drops per (replica,
expert); the dropped tokens reported are this replica's. ``min_capacity`` (4 by default, as
DeepSpeed) keeps decode batches of a few tokens from dropping.

Precision (``moesim.precision``): weights are read at the model dtype's bytes per parameter
(scales included). GEMM outputs, the residual stream, norms, the router, TP all-reduces and PP
hand-offs are 16-bit (``act_b`` bytes) even for fp8 models (FP8 serving quantizes weights and GEMM
inputs only, e.g. TensorRT-LLM / ModelOpt FP8); tensors that feed a GEMM, the EP all-to-all and
the KV cache are in the compute dtype (``b`` bytes: fp8 under native fp8, 16-bit when int8/int4
or fp8 without fp8 tensor cores run weight-only).

Everything that depends only on ``T`` (and, for the head, on the number of sequences emitting a
token) is tabulated once with vectorised cost-model calls; per iteration only attention (a vector
over the batch's sequences) and, under skew, the expert loads are evaluated.

Two-batch overlap (``plan.overlap_alltoall``, ``ep > 1``): ``serving.overlap``. The routed experts'
loads, capacity and drops, and the popularity drift and periodic EPLB rebalancing that move routing
and layout in simulated time (:meth:`advance`, ``serving.drift``): ``serving.routed_experts``.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from moesim.costmodel import CostModel
from moesim.costmodel.comm import alltoall_bytes_per_rank
from moesim.costmodel.fused_moe import fused_moe_fixed_us
from moesim.costmodel.host import (
    engine_host_spec,
    exposed_host_s,
    graph_rows,
    host_cpu_spec,
    host_spec_for,
    iteration_host_s,
    launch_added_s,
    launch_cpu_s,
    launch_terms,
    overlaps,
    platform_of,
)
from moesim.engine.op_types import BlockDims, OpDtypes
from moesim.engine.ops import (
    EXPERT_OPS,
    attention_core_op,
    block_ops,
    op_s,
)
from moesim.engine.serving.attention import BatchAttention, ModelAttention
from moesim.engine.serving.cuda_graphs import captured_sizes
from moesim.engine.serving.head_tail import head_tail_s
from moesim.engine.serving.overlap import TwoBatchOverlap
from moesim.engine.serving.routed_experts import RoutedExperts
from moesim.errors import InputError
from moesim.precision import expert_gemm_dtype, kv_cache_dtype, scenario_precision
from moesim.schemas import Scenario

#: Streams of a serving iteration's ops (the op graph's, plus the pipeline hand-offs).
SERVING_STREAMS = ("compute", "tp_comm", "ep_comm", "pp_comm")


class IterationCost(RoutedExperts):
    """Iteration time of one replica. ``time_s`` is called once per simulated iteration.

    The routed experts' loads, layout and drift are :class:`~moesim.engine.serving.routed_experts.RoutedExperts`'."""

    def __init__(self, s: Scenario, cm: CostModel, rng: np.random.Generator, max_tokens: int,
                 max_context: int | None = None):
        """``rng``: the routing generator (popularity, drift; the skew pools spawn from it);
        ``max_tokens``: the most new tokens an iteration runs (tables cover 0..max_tokens);
        ``max_context``: the longest context a sequence reaches (default ``min(max_seq_len, 65536)``)."""
        m, p = s.model, s.plan
        self.s, self.cm = s, cm
        prec = scenario_precision(s)
        # weights' dtype (GEMMs resolve it); GEMM inputs and the all-to-all in the compute dtype; the
        # activations between kernels (norms, all-reduces, hand-offs) 16-bit
        # the KV cache in its own dtype when the workload names one (otherwise the attention dtype's)
        kv_bytes = prec.kv_bytes if kv_cache_dtype(s, prec) != "auto" else None
        self.dtypes = OpDtypes(weights=m.dtype, gemm_in_bytes=prec.act_bytes, act_bytes=max(prec.act_bytes, 2.0),
                               act_dtype=prec.act_dtype, attn_dtype=prec.attention_dtype, kv_bytes=kv_bytes,
                               expert_weights=expert_gemm_dtype(s))
        self.tp, self.pp, self.ep = p.tp, p.pp, p.ep
        # replicas whose batches an EP rank's experts serve: the ep replicas of a group carved out of
        # dp, or one when the EP group is the replica's own TP group (its tokens on every rank)
        self.ep_sources = 1 if p.ep_in_tp_group else p.ep
        self.dims = BlockDims.of(m, p.tp, p.ep, mla_absorbed=True, max_nodes_per_token=s.routing.max_nodes_per_token,
                                 etp=p.expert_tp, local_dispatch=p.ep_in_tp_group,
                                 allreduce=s.workload.tp_allreduce,
                                 # a fused MoE layer's fixed latency (costmodel/fused_moe.py)
                                 moe_fixed_us=fused_moe_fixed_us(platform_of(s.hardware.device.name)))
        self._attention = attention_core_op(self.dims, self.dtypes, np.ones(1), np.ones(1))
        # MLA prefill chunks run as multi-head attention over up-projected K/V, decode absorbed (vLLM, SGLang)
        self._mha = (attention_core_op(BlockDims.of(m, p.tp, p.ep, mla_absorbed=False), self.dtypes, np.ones(1),
                                       np.ones(1)) if m.mla is not None else None)
        self.n_kernels = 1 + sum(count * sum(op.stream == "compute" and op.name != "moe_overhead" for op in
                                             block_ops(self.dims, self.dtypes, moe, 1, np.ones(1), np.ones(1),
                                                       np.ones(1)))
                                 for moe, count in ((False, m.n_dense_layers), (True, m.n_moe_layers)))
        self.host = spec = host_cpu_spec(engine_host_spec(host_spec_for(cm.profile, s.hardware.device),
                                                          s.workload.engine, s.hardware.device.name),
                                         s.hardware.node.host_cpu)
        # under plan.dp_attention the scheduler's per-sequence time counts the group's sequences (TensorRT-LLM)
        self._group_host = bool(spec.per_seq_group)
        # whether the host work hides behind the GPU, by phase (read once per iteration)
        self._overlap_decode, self._overlap_mixed = overlaps("decode", spec), overlaps("mixed", spec)
        seqs = np.arange(int(max_tokens) + 1)
        self._host_by_seqs = np.asarray(iteration_host_s(seqs, "mixed", spec), dtype=float).tolist()
        # CUDA graphs: the rows a decode batch's graph replays by its sequences (0: eager); with the
        # workload's captured sizes a batch pads up to one (``costmodel.host.graph_rows``)
        self._captured = captured_sizes(s.workload)
        if self._captured is not None and spec.graph_max_batch == 0:
            raise InputError(f"workload.cuda_graph_batch_sizes: {s.hardware.device.name} runs no CUDA graphs (its host "
                             "spec's graph_max_batch is 0, as on Apple MPS and CPUs); remove the list")
        self.pads = self._captured is not None
        self._padding = bool(getattr(s.workload, "cuda_graph_padding", True))
        self._graph_rows = np.asarray(graph_rows(seqs, spec, self._captured, self._padding)).tolist()
        # the CPU launch already in each kernel's price (the datasheet's fixed cost; none of a profile's)
        cpu_priced_s = float(cm.launch_s) - float(cm.kernel_floor_s)
        # (graph, eager gap, eager CPU) launch seconds of a step's kernels, and of a TBO step's (both micro-batches)
        self._launch = launch_terms(self.n_kernels, spec, cpu_priced_s)
        self._launch_tbo = launch_terms(2 * self.n_kernels, spec, cpu_priced_s)
        self.tbo = None  # set below, once the tables it reads exist
        self._init_routing(rng)  # popularity, layout, drift, skew pools (RoutedExperts)
        ctx = min(m.max_seq_len, 65536) if max_context is None else int(max_context)
        self.attn = BatchAttention(cm, self._attention, self._mha, ctx, max_chunk=int(max_tokens))
        # every layer's attention; sliding-window or chunked layers over their window's keys, decodes
        # too unless the engine runs them over the whole cache (``local_attention_mode: prefill``)
        la = m.local_attention
        self.layers = ModelAttention(self.attn, m.n_layers, None if la is None else (m.n_local_layers, la.window, la.kind),
                                     local_decode=s.workload.local_attention_mode != "prefill")
        self.max_tokens = int(max_tokens)
        t = np.arange(self.max_tokens + 1, dtype=float)
        parts = self.fixed_by_stream(t)
        self._fixed = sum(parts.values())
        self._comm = list(zip(*(parts[k].tolist() for k in SERVING_STREAMS[1:]), strict=True))
        self._experts, self._dropped = (self.uniform_experts_s(t) if not self.skewed
                                        else (np.zeros_like(t), np.zeros_like(t)))
        seqs = np.arange(self.max_tokens + 1, dtype=float)
        self._head = self.head_s(seqs)
        tbo = p.overlap_alltoall and p.ep > 1 and m.n_moe_layers > 0 and m.n_experts > 1
        self.tbo = TwoBatchOverlap(self, self.max_tokens) if tbo else None
        #: (TP, EP, PP) seconds of the latest iteration ``kernel_s`` priced (EP: exposed under TBO)
        self.last_comm_s: tuple[float, float, float] = (0.0, 0.0, 0.0)

    def head_gemm_s(self, seqs):
        """Seconds of the output head's GEMM for ``seqs`` sequences (array-like): ``seqs x d_model`` times
        the rank's vocabulary shard, ``ceil(vocab_size / tp)`` columns (vocab-parallel engines pad the
        vocabulary to a multiple of tp)."""
        m = self.s.model
        return np.asarray(self.cm.gemm_s(seqs, -(-m.vocab_size // self.tp), m.d_model, self.dtypes.weights))

    def head_s(self, seqs):
        """Seconds of the output head for ``seqs`` emitting sequences (array-like): its GEMM, the logits'
        all-gather over TP and the greedy sampler's passes (``serving.head_tail``)."""
        m = self.s.model
        return self.head_gemm_s(seqs) + head_tail_s(self.cm, seqs, m.vocab_size, self.tp, self.s.workload.engine,
                                                    platform_of(self.s.hardware.device.name))

    # ------------------------------------------------------------ T-only parts (vectorised)
    def fixed_s(self, tokens) -> np.ndarray:
        """Seconds of everything but attention, routed experts and the head, for ``tokens`` (array)."""
        return sum(self.fixed_by_stream(tokens).values())

    def fixed_by_stream(self, tokens) -> dict[str, np.ndarray]:
        """:meth:`fixed_s` split by stream (``compute``, ``tp_comm``, ``ep_comm``, ``pp_comm``).

        Prices the op graph's blocks (``ops.block_ops``) at every token count at once, leaving out
        the attention core (per iteration) and the routed experts' ops (``EXPERT_OPS``: their loads
        are sampled or expected separately); adds the ``pp - 1`` pipeline hand-offs. An iteration
        runs its ops one after another: the streams do not overlap.
        """
        m, cm, tp = self.s.model, self.cm, self.tp
        t = np.asarray(tokens, dtype=float)
        one = np.ones(1)
        a2a = alltoall_bytes_per_rank(t / tp, m.top_k, m.d_model, self.dtypes.gemm_in_bytes, self.ep) if self.ep > 1 else 0.0
        out = {k: np.zeros_like(t) for k in SERVING_STREAMS}
        for moe, count in ((False, m.n_dense_layers), (True, m.n_moe_layers)):
            if count:
                ops = block_ops(self.dims, self.dtypes, moe, t, one, one, expert_tokens=one, a2a_bytes=a2a,
                                algorithm=self.s.plan.alltoall)
                for op in ops:
                    if op.name != "attn_core" and op.name not in EXPERT_OPS:
                        out[op.stream] = out[op.stream] + count * op_s(cm, op)
        if self.pp > 1:
            intra = tp * self.pp <= self.s.hardware.node.devices_per_node
            out["pp_comm"] = out["pp_comm"] + (self.pp - 1) * cm.p2p_s(t * m.d_model * self.dtypes.act_bytes / tp, intra)
        return {k: np.asarray(v, dtype=float) for k, v in out.items()}

    def comm_s(self, tokens: int) -> tuple[float, float, float]:
        """(TP all-reduce, EP all-to-all, PP hand-off) seconds of an iteration of ``tokens`` tokens.

        Under TBO the EP part is the exposed all-to-all at the expected expert load without attention
        (an iteration's own split is ``last_comm_s``, right after its ``time_s``).
        """
        if self.tbo is not None and self.tbo.applies(tokens):
            return self.tbo.comm_s(tokens)
        if tokens <= self.max_tokens:
            return self._comm[tokens]
        parts = self.fixed_by_stream(np.array([tokens]))
        return tuple(float(parts[k][0]) for k in SERVING_STREAMS[1:])

    # ------------------------------------------------------------ per iteration
    def attention_s(self, q_tokens: np.ndarray, kv_tokens: np.ndarray) -> float:
        """All layers' attention for one batch: one kernel per layer over every sequence.

        ``q_tokens[i]`` new tokens of sequence ``i`` attend over ``kv_tokens[i]`` cached tokens
        (including the new ones): the op graph's ``attn_core`` op at this batch (MLA: absorbed for
        decodes, multi-head for prefill chunks; local layers at their window's keys, ``ModelAttention``).
        """
        return self.layers.batch_s(q_tokens, kv_tokens)

    def time_s(self, q_tokens: np.ndarray, kv_tokens: np.ndarray, n_out: int, engine: int = 0,
               tokens: int | None = None, decode: bool | None = None) -> tuple[float, float]:
        """(seconds, dropped expert tokens) of one iteration: its kernels plus what the host adds.

        ``q_tokens`` (n,) new tokens per scheduled sequence, ``kv_tokens`` (n,) their context after
        this iteration, ``n_out`` sequences that emit a token (they go through the output head);
        ``engine``: whose stream of skew picks it uses. ``tokens`` (``q_tokens`` summed) and
        ``decode`` (every ``q_tokens`` is 1) where the caller has them (the scheduler counts them).
        """
        if tokens is None:
            tokens = int(q_tokens.sum())
        if decode is None:
            decode = bool(q_tokens.max() == 1)
        rows = self._rows_at(tokens) if decode else 0
        priced = rows or tokens  # a padded graph runs its dummy rows through every op but attention
        gpu, dropped = self._kernel_at(priced, n_out + priced - tokens, self.attention_s(q_tokens, kv_tokens), engine)
        if priced != tokens:  # the dummy rows' dropped tokens are nobody's
            dropped *= tokens / priced
        return gpu + self._host_at(q_tokens.size, decode, priced, gpu, rows > 0), dropped

    def anatomy_s(self, seqs: int, context: int) -> dict[str, float]:
        """Seconds of one decode-only iteration of ``seqs`` sequences, each over ``context`` cached
        tokens, by part (``serving.anatomy.PARTS``): the terms :meth:`time_s` adds, so they sum to
        its seconds (the routed experts at their expected load: the mean of the skew pool under
        skewed routing, where :meth:`time_s` draws one). ``two_batch_overlap``: what TBO's two
        micro-batches add (+: the weights read twice) or hide (-) against the parts run one
        after another, 0 without it."""
        q, kv = np.ones(seqs, np.int64), np.full(seqs, int(context), np.int64)
        rows = self._rows_at(seqs)
        p = rows or seqs  # a padded graph's dummy rows run every op but attention
        attn = self.attention_s(q, kv)
        experts = float(self._skew_samples(p)[0].mean()) if self.skewed else float(self._experts_at(p, 0)[0])
        head = float(self._head[min(p, self.max_tokens)])  # as _kernel_at reads it
        parts = {k: float(v[0]) for k, v in self.fixed_by_stream(np.array([float(p)])).items()}
        out = {"attention": attn, "routed_experts": experts, "other_kernels": parts["compute"],
               "tp_comm": parts["tp_comm"], "ep_comm": parts["ep_comm"], "pp_comm": parts["pp_comm"],
               "output_head": head, "two_batch_overlap": 0.0}
        gpu = sum(out.values())
        if self.tbo is not None and self.tbo.applies(p):
            out["two_batch_overlap"] = self.tbo.kernel_s(p, attn, head)[0] - gpu
            gpu += out["two_batch_overlap"]
        out["host_and_launch"] = self._host_at(seqs, True, p, gpu, rows > 0)
        return out

    def group_time_s(self, tokens: list[int], pairs: list[float], batch: Callable[[int], tuple], expert_tokens: int,
                     decode: bool, engine: int = 0) -> tuple[float, float]:
        """(seconds, dropped expert tokens per rank) of one iteration of a lock-step attention-DP group.

        Each rank that runs something has ``tokens`` new tokens and ``pairs`` (query, key) pairs;
        ``batch(i)`` gives the ``i``-th one's ``(q_tokens, kv_tokens, n_out)``. A rank runs its own
        attention, dense layers, dispatch and head over its sequences; the routed experts serve the
        group's tokens, ``expert_tokens`` from each of the group's ranks (their mean: an EP rank
        receives its share of every rank's tokens), drawn once for the group. Each layer's combine
        waits for the slowest rank, so the iteration is the slowest rank's time (its own work, the
        shared experts and its host time). Two ranks are priced: the one with the most new tokens
        and the one with the most (query, key) pairs (a long context). ``decode``: every rank
        decodes only (a CUDA graph replays only then). ``last_comm_s``: the slowest rank's. Under
        TBO each rank's experts are priced at its own tokens (an upper bound for the ranks above
        the mean).
        """
        picks = sorted({int(np.argmax(tokens)), int(np.argmax(pairs))})
        # the group's sequences, for an engine whose host loop counts them all (HostSpec.per_seq_group); a
        # decode-only rank's new tokens are its sequences, so only mixed batches are asked for theirs
        group_seqs = None
        if self._group_host:
            group_seqs = sum(tokens) if decode else sum(batch(i)[0].size for i in range(len(tokens)))
        rows = self._rows_at(max(tokens)) if decode and self.pads else 0
        real_expert_tokens = expert_tokens
        if rows:  # every rank pads to the group's largest batch, then to a captured size (TensorRT-LLM)
            tokens, expert_tokens = [rows] * len(tokens), rows
        if self.tbo is not None and self.tbo.applies(expert_tokens):
            best = None
            for i in picks:
                q, kv, n_out = batch(i)
                dt, dropped = self.time_s(q, kv, n_out + (rows - q.size if rows else 0), engine, tokens[i], decode)
                if best is None or dt > best[0]:
                    best = (dt, dropped, self.last_comm_s)
            self.last_comm_s = best[2]
            return best[0], best[1]
        experts, dropped = self._experts_at(expert_tokens, engine)
        if rows:
            dropped *= real_expert_tokens / rows
        best_dt, best_t = -1.0, 0
        for i in picks:
            q, kv, n_out = batch(i)
            t = tokens[i]
            n_head = n_out + (rows - q.size if rows else 0)
            gpu = self._fixed_at(t) + experts + self._head[min(n_head, self.max_tokens)] + self.attention_s(q, kv)
            graphed = rows > 0 if self.pads else decode and self._rows_at(q.size) > 0
            dt = gpu + self._host_at(q.size if group_seqs is None else group_seqs, decode, t, gpu, graphed)
            if dt > best_dt:
                best_dt, best_t = dt, t
        self.last_comm_s = self.comm_s(best_t)
        return float(best_dt), float(dropped)

    def decode_window(self, context: np.ndarray, k: int, engine: int = 0) -> tuple[np.ndarray, list, tuple]:
        """(seconds ``(k,)``, dropped tokens (a list of ``k``), (TP, EP, PP) comm seconds of each) of ``k``
        decode-only iterations in a row of one batch: in iteration ``j`` each sequence emits one
        token over ``context + j`` (``context``: ``(n,)`` contexts of the first iteration). Equal,
        iteration by iteration, to ``time_s`` and ``last_comm_s`` (``serving.window`` relies on
        it): the same terms added in the same order, as vectors over the ``k`` iterations."""
        n = int(np.asarray(context).size)
        rows = self._rows_at(n)
        p = rows or n  # the rows priced: a padded graph's dummy rows run every op but attention
        share = n / p  # of the dropped tokens, the real rows'
        att = self.layers.decode_window_s(context, k)
        if (self.tbo is not None and self.tbo.applies(p)) or p > self.max_tokens:
            secs, drops = np.empty(k), []
            for j, a in enumerate(att.tolist()):
                gpu, dropped = self._kernel_at(p, p, a, engine)
                secs[j] = gpu + self._host_at(n, True, p, gpu, rows > 0)
                drops.append(float(dropped) * share if p != n else float(dropped))
            return secs, drops, self.last_comm_s
        self.last_comm_s = comm = self.comm_s(p)
        experts, dropped = self._experts[p], [float(self._dropped[p])] * k
        if self.skewed:
            pool, picks = self._skew_samples(p), self.streams.take(engine, k)
            experts, dropped = pool[0][picks], pool[1][picks].tolist()
        if p != n:
            dropped = [d * share for d in dropped]
        gpu = self._fixed[p] + experts + self._head[p] + att
        graphed = rows > 0
        launch = launch_added_s(self._launch, gpu, graphed)
        cpu = launch_cpu_s(self._launch, graphed, self.host) if self._overlap_decode else 0.0
        host = exposed_host_s(self._host_by_seqs[min(n, self.max_tokens)] + cpu, gpu + launch, self._overlap_decode)
        return gpu + (launch + host), dropped, comm

    def admission_step_s(self, context: np.ndarray, q_tokens, kv_tokens,
                         engine: int = 0) -> tuple[float, float, tuple]:
        """(seconds, dropped tokens, (TP, EP, PP) comm seconds) of a window's first iteration: the
        running sequences each decode one token over ``context`` ``(n,)`` and the admitted requests
        run ``q_tokens`` over ``kv_tokens`` (ints for one, ``(a,)`` arrays for several), every
        sequence emitting. :meth:`time_s` of that batch."""
        n = context.size
        one = isinstance(q_tokens, int)
        a = 1 if one else q_tokens.size
        attn = self.layers.with_prefill_s(context, q_tokens, kv_tokens)
        if attn is None:  # a one-token prefill, or a profile without the tables: the batch as it is
            q = np.ones(n + a, np.int64)
            q[n:] = q_tokens
            secs, dropped = self.time_s(q, np.concatenate((context, np.atleast_1d(kv_tokens))), n + a, engine)
            return secs, dropped, self.last_comm_s
        # time_s of that batch from its scalars (every q_tokens > 1: eager, not a decode-only batch)
        total = n + (q_tokens if one else int(q_tokens.sum()))
        gpu, dropped = self._kernel_at(total, n + a, attn, engine)
        return gpu + self._host_at(n + a, False, total, gpu, False), dropped, self.last_comm_s

    def unprice(self, engine: int, iterations: int) -> None:
        """Forget the last ``iterations`` priced for ``engine`` (a decode window cut short): their
        skew picks come again, so the run matches one priced iteration by iteration."""
        if self.skewed:
            self.streams.give_back(engine, iterations)

    def kernel_s(self, q_tokens: np.ndarray, kv_tokens: np.ndarray, n_out: int, engine: int = 0) -> tuple[float, float]:
        """(seconds, dropped expert tokens) of the iteration's kernels, each launched eagerly."""
        return self._kernel_at(int(q_tokens.sum()), n_out, self.attention_s(q_tokens, kv_tokens), engine)

    def _kernel_at(self, total: int, n_out: int, attn_s: float, engine: int) -> tuple[float, float]:
        """:meth:`kernel_s` of ``total`` new tokens, ``n_out`` emitting, ``attn_s`` of attention."""
        if self.tbo is not None and self.tbo.applies(total):
            head = float(self._head[min(n_out, self.max_tokens)])
            gpu, dropped, self.last_comm_s = self.tbo.kernel_s(total, attn_s, head, engine)
            return gpu, dropped
        self.last_comm_s = self.comm_s(total)
        experts, dropped = self._experts_at(total, engine)
        head = self._head[min(n_out, self.max_tokens)]
        return self._fixed_at(total) + experts + head + attn_s, dropped

    def _fixed_at(self, tokens: int) -> float:
        """:meth:`fixed_s` of ``tokens``: the table, or evaluated directly past it (a whole prompt over
        the token budget without chunked prefill)."""
        return self._fixed[tokens] if tokens <= self.max_tokens else float(self.fixed_s(np.array([tokens]))[0])

    def _rows_at(self, seqs: int) -> int:
        """Rows the CUDA graph of a decode-only batch of ``seqs`` sequences replays (0: eager)."""
        if seqs <= self.max_tokens:
            return self._graph_rows[seqs]
        if self.pads:
            return int(graph_rows(seqs, self.host, self._captured, self._padding))
        return seqs if self._graph_rows[self.max_tokens] else 0

    def host_s(self, q_tokens: np.ndarray, gpu_s: float) -> float:
        """Seconds the host adds to an iteration of ``gpu_s`` kernel time (``costmodel.host``).

        A decode-only batch of at most ``graph_max_batch`` sequences replays a CUDA graph: its
        kernels add a graph launch and a node gap each, less the CPU launch a datasheet prices in
        them; other batches run eagerly, adding the same gaps or the CPU's launches where those take
        longer than the GPU work (``costmodel.host.launch_added_s``; the kernels are the op graph's
        compute ops, counted in ``n_kernels``). The scheduler's time per iteration
        (fixed plus per sequence) hides behind the GPU where the engine schedules one step ahead
        (``exposed_host_s``: decode by default), together with the CPU's launches (one thread does
        both, ``launch_cpu_s``), and adds in full otherwise (prefill and mixed batches). May be
        negative on a datasheet: a graph saves more launch time than the host costs. The
        per-batch-size terms are tabulated in ``__init__`` (this runs once per iteration).
        """
        decode = bool(q_tokens.max() == 1)
        return self._host_at(q_tokens.size, decode, int(q_tokens.sum()), gpu_s, decode and self._rows_at(q_tokens.size) > 0)

    def _host_at(self, seqs: int, decode: bool, total: int, gpu_s: float, graphed: bool) -> float:
        """:meth:`host_s` of ``seqs`` sequences and ``total`` rows priced (``decode``: one token each;
        ``graphed``: the batch replays a CUDA graph)."""
        tbo = self.tbo is not None and self.tbo.applies(total)
        terms = self._launch_tbo if tbo else self._launch
        launch = launch_added_s(terms, float(gpu_s), graphed)
        overlap = self._overlap_decode if decode else self._overlap_mixed
        # one CPU thread schedules and launches: overlapped, both hide behind the step together
        cpu = launch_cpu_s(terms, graphed, self.host) if overlap else 0.0
        # a lock-step group's sequences (HostSpec.per_seq_group) may outnumber the tabulated batch sizes
        sched = self._host_by_seqs[seqs] if seqs <= self.max_tokens else iteration_host_s(seqs, "mixed", self.host)
        return launch + exposed_host_s(sched + cpu, float(gpu_s + launch), overlap)
