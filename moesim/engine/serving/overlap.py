"""Two-batch overlap (TBO) of a serving iteration's expert all-to-alls. Pure numpy.

With ``plan.overlap_alltoall`` and ``ep > 1`` an iteration of ``T`` tokens runs as two
micro-batches of ``ceil(T/2)`` and ``floor(T/2)`` tokens (SGLang's two-batch overlap,
``--enable-two-batch-overlap``, lmsys.org/blog/2025-05-05-large-scale-ep; DeepSeek's dual
micro-batch overlap, DeepSeek-V3 report sec. 3.4, and its ``profile-data`` traces): while one
micro-batch computes, the other's EP dispatch or combine runs on the ``ep_comm`` stream. Every op
runs once per micro-batch at that micro-batch's tokens, so each GEMM reads its weights twice: at
decode batches of a few tokens (memory-bound) an iteration costs up to twice the compute and TBO
is slower; it pays at large batches (prefill chunks, large decode batches), where SGLang and
DeepSeek use it. Iterations of fewer than two tokens cannot be split and run without it.

**Per MoE layer** one micro-batch runs four pieces in order: compute ``s1`` (the layer's non-expert
ops: norms, QKV, attention over half of the sequences, output projection, TP all-reduces, router,
permute, un-permute, shared experts), dispatch ``d``, compute ``s2`` (the routed experts of the
busiest EP rank), combine ``c``. The two micro-batches alternate strictly (one's attention or
experts under the other's dispatch or combine, as DeepSeek's prefill describes it): the compute
stream runs ``A.s1, B.s1, A.s2, B.s2`` and the ``ep_comm`` stream
``A.d, B.d, A.c, B.c``, each piece also waiting for its own micro-batch's previous piece. This
max-plus system has closed forms (checked against the recurrence in ``tests/test_serving_tbo.py``);
with ``S = s1 + s2``, ``A = d + c`` and ``p = (s1, d, s2, c)``:

* steady-state period per layer (the max cycle mean: compute-bound, comm-bound, or one
  micro-batch's chain plus the wait its largest piece forces on its smallest):
  ``P = max(2S, 2A, S + A + max(p) - min(p))``;
* ``n`` layers: ``min(s1, c) + sum_l P(p_l)``, the pipeline's fill and drain being the shorter of
  one micro-batch's first compute piece and the other's last combine. Exact also when the
  expert time ``s2`` differs per layer (skewed routing), ``s1``, ``d``, ``c`` being the same in
  every MoE layer. (With ``s1 = s2 = s`` and ``d = c = a``: two jobs through ``2n`` alternating
  compute/comm stages, the textbook ``4n max(s, a) + min(s, a)``.)

Dense layers have nothing to hide: both micro-batches run them one after the other. The output
head (over the sequences that emit a token) and the pipeline hand-offs run once on the whole batch.
The two micro-batches are priced as their mean (exact for the compute- and comm-bound terms).
The ``ep_comm`` time an iteration reports is the exposed part, ``pipeline - sum_l 2 S_l`` (what
the compute stream idles waiting for a dispatch or combine), so spans and ``alltoall_fraction``
add up to the iteration. The overlapped compute loses the SMs the all-to-all kernels hold
(DeepEP's normal kernels: 20 of an H800's 132, ``costmodel.comm.overlap_slowdown``) for the time
both streams run; DeepEP's low-latency dispatch holds every SM while its send and receive kernels
run (``costmodel.comm.ll_dispatch_sm_s``), which moves that time from ``d`` to ``s1``; its combine's
are not measured; memory-bandwidth contention is not modelled.
"""

from __future__ import annotations

import numpy as np

from moesim.costmodel.comm import alltoall_bytes_per_rank, ll_dispatch_sm_s, overlap_slowdown
from moesim.engine.ops import EXPERT_OPS, block_ops, op_s

#: Load samples per batch size under skewed routing (``routed_experts.SKEW_POOL``'s role).
TBO_POOL = 8


def period_s(s1, d, s2, c, sm_slowdown: float = 0.0):
    """Steady-state seconds per MoE layer of two alternating micro-batches (arrays broadcast).

    ``sm_slowdown`` (``costmodel.comm.overlap_slowdown``): compute seconds lost per second the two
    streams run together (``2S + 2A - P`` of a period), to the SMs the all-to-all kernels hold.
    """
    s1, d, s2, c = (np.asarray(x, dtype=float) for x in (s1, d, s2, c))
    big = np.maximum(np.maximum(s1, d), np.maximum(s2, c))
    small = np.minimum(np.minimum(s1, d), np.minimum(s2, c))
    S, A = s1 + s2, d + c
    P = np.maximum(np.maximum(2 * S, 2 * A), S + A + big - small)
    return P + sm_slowdown * np.maximum(2 * S + 2 * A - P, 0.0) if sm_slowdown else P


def moe_layers_s(s1, d, s2, c, n_layers: int, sm_slowdown: float = 0.0):
    """Makespan of ``n_layers`` MoE layers of two alternating micro-batches: ``min(s1, c) + sum_l P_l``.

    ``s1``, ``d``, ``c`` broadcast together; ``s2`` either broadcasts with them (every layer alike:
    ``n P``) or has one more trailing axis of length ``n_layers`` (each layer's expert seconds).
    """
    s1, d, c = (np.asarray(x, dtype=float) for x in (s1, d, c))
    if n_layers <= 0:
        return np.zeros(np.broadcast_shapes(s1.shape, d.shape, c.shape))
    s2 = np.asarray(s2, dtype=float)
    if s2.ndim > s1.ndim and s2.shape[-1] == n_layers:
        each = period_s(s1[..., None], d[..., None], s2, c[..., None], sm_slowdown).sum(axis=-1)
    else:
        each = n_layers * period_s(s1, d, s2, c, sm_slowdown)
    return np.minimum(s1, c) + each


def layer_pieces(cost, tokens) -> dict[str, np.ndarray]:
    """Seconds per layer of one micro-batch of ``tokens`` (array), from the op graph.

    ``moe``: an MoE block's compute and TP all-reduces, leaving out the attention core (per
    iteration), the routed experts (sampled or expected separately) and the all-to-alls;
    ``moe_tp`` its TP all-reduces; ``dispatch`` / ``combine`` its all-to-alls; ``dense`` /
    ``dense_tp`` the same for a dense block. ``cost`` is the iteration's ``IterationCost``.
    """
    m, cm, tp = cost.s.model, cost.cm, cost.tp
    t = np.asarray(tokens, dtype=float)
    one = np.ones(1)
    a2a = alltoall_bytes_per_rank(t / tp, m.top_k, m.d_model, cost.dtypes.gemm_in_bytes, cost.ep)
    out = {k: np.zeros_like(t) for k in ("moe", "moe_tp", "dispatch", "combine", "dense", "dense_tp")}
    for moe, key in ((False, "dense"), (True, "moe")):
        ops = block_ops(cost.dims, cost.dtypes, moe, t, one, one, expert_tokens=one, a2a_bytes=a2a,
                        algorithm=cost.s.plan.alltoall)
        for op in ops:
            if op.name == "attn_core" or op.name in EXPERT_OPS:
                continue
            secs = np.asarray(op_s(cm, op), dtype=float)
            if op.stream == "ep_comm":
                out[op.name] = out[op.name] + secs
                continue
            out[key] = out[key] + secs
            if op.stream == "tp_comm":
                out[f"{key}_tp"] = out[f"{key}_tp"] + secs
    return out


class TwoBatchOverlap:
    """TBO pricing of one replica's iterations, tabulated per token count like ``IterationCost``."""

    def __init__(self, cost, max_tokens: int):
        m = cost.s.model
        self.cost, self.n_moe, self.n_dense, self.n_layers = cost, m.n_moe_layers, m.n_dense_layers, m.n_layers
        self.max_tokens = int(max_tokens)
        self.sm_slowdown = overlap_slowdown(cost.s.plan.alltoall, cost.s.hardware.device.sm_count)
        self.pool: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        t = np.arange(self.max_tokens + 1)
        self.pieces, self.experts, self.dropped = self._tables(t)
        self.pp = np.array([c[2] for c in cost._comm], dtype=float)
        gpu, exposed, tp = self._price(self.pieces, 0.0, self.experts)
        self._comm = list(zip(tp.tolist(), exposed.tolist(), self.pp.tolist(), strict=True))

    def _tables(self, t: np.ndarray) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]:
        """(mean micro-batch pieces, expected expert seconds per layer, dropped tokens) per ``t``."""
        hi, lo = (t + 1) // 2, t // 2
        ph, pl = layer_pieces(self.cost, hi), layer_pieces(self.cost, lo)
        (eh, dh), (el, dl) = self.cost.uniform_experts_s(hi), self.cost.uniform_experts_s(lo)
        pieces = {k: (ph[k] + pl[k]) / 2 for k in ph}
        if self.cost.s.plan.alltoall == "deepep_low_latency":
            # the dispatch's send and receive kernels hold every SM: compute-stream time, not overlap
            m, tp = self.cost.s.model, self.cost.tp
            sm = (ll_dispatch_sm_s(hi / tp, m.d_model, m.top_k) + ll_dispatch_sm_s(lo / tp, m.d_model, m.top_k)) / 2
            sm = np.minimum(sm, pieces["dispatch"])
            pieces["moe"] = pieces["moe"] + sm
            pieces["dispatch"] = pieces["dispatch"] - sm
        return pieces, (eh + el) / 2 / max(self.n_moe, 1), dh + dl

    def applies(self, tokens: int) -> bool:
        """True when an iteration of ``tokens`` tokens is split (it needs two non-empty micro-batches)."""
        return tokens >= 2

    def _price(self, pieces: dict, attn_layer_s, experts_s, attn_fixed_s: float = 0.0):
        """(GPU seconds without the head and pp hand-offs, exposed EP seconds, TP seconds).

        ``attn_layer_s``: one layer's attention core over the whole batch (each micro-batch runs
        half of its work and pays the call's fixed time ``attn_fixed_s`` itself); ``experts_s``: one
        micro-batch's routed-expert seconds per layer (scalar / per ``t``, or a trailing axis over the
        MoE layers).
        """
        half_attn = (np.asarray(attn_layer_s, dtype=float) - attn_fixed_s) / 2 + attn_fixed_s
        s1 = pieces["moe"] + half_attn
        moe = moe_layers_s(s1, pieces["dispatch"], experts_s, pieces["combine"], self.n_moe, self.sm_slowdown)
        e = np.asarray(experts_s, dtype=float)
        e_sum = e.sum(axis=-1) if e.ndim > np.ndim(s1) else self.n_moe * e
        exposed = np.maximum(moe - 2 * (self.n_moe * s1 + e_sum), 0.0) if self.n_moe else np.zeros_like(moe)
        dense = self.n_dense * 2 * (pieces["dense"] + half_attn)
        tp = 2 * (self.n_dense * pieces["dense_tp"] + self.n_moe * pieces["moe_tp"])
        return dense + moe, exposed, tp

    def _at(self, tokens: int) -> tuple[dict, float, float, float]:
        """(pieces, expected expert seconds per layer, dropped, pp seconds) at ``tokens``."""
        if tokens <= self.max_tokens:
            return ({k: v[tokens] for k, v in self.pieces.items()}, self.experts[tokens], self.dropped[tokens],
                    self.pp[tokens])
        p, e, d = self._tables(np.array([tokens]))
        pp = float(self.cost.fixed_by_stream(np.array([tokens]))["pp_comm"][0])
        return {k: v[0] for k, v in p.items()}, float(e[0]), float(d[0]), pp

    def sampled_experts(self, tokens: int, engine: int = 0) -> tuple[np.ndarray, float]:
        """(per-layer expert seconds of the mean micro-batch ``[L]``, dropped tokens) under skewed routing.

        As ``IterationCost.sampled_experts_s``: a pool of ``TBO_POOL`` draws per batch size (each
        micro-batch's loads sampled at its own tokens), one picked per iteration of ``engine``
        (its stream of picks, ``serving.pools``).
        """
        pool = self.pool.get(tokens)
        if pool is None:
            rng = self.cost.streams.pool_rng(self.cost.epoch, tokens, 1)
            (sh, dh), (sl, dl) = (self.cost.sample_expert_times(h, TBO_POOL, per_layer=True, rng=rng)
                                  for h in ((tokens + 1) // 2, tokens // 2))
            pool = self.pool[tokens] = ((sh + sl) / 2, dh + dl)
        j = int(self.cost.streams.take(engine)[0]) % TBO_POOL
        return pool[0][j], float(pool[1][j])

    def kernel_s(self, tokens: int, attn_s: float, head_s: float,
                 engine: int = 0) -> tuple[float, float, tuple[float, float, float]]:
        """(GPU seconds, dropped tokens, (TP, exposed EP, PP) seconds) of an iteration of ``tokens`` tokens.

        ``attn_s``: all layers' attention core over the whole batch; ``head_s``: the output head.
        """
        pieces, experts, dropped, pp = self._at(tokens)
        if self.cost.skewed:
            experts, dropped = self.sampled_experts(tokens, engine)
        fixed = self.cost.cm.attention_launch_s if attn_s > 0 else 0.0  # each micro-batch's own call
        gpu, exposed, tp = self._price(pieces, attn_s / self.n_layers, experts, fixed)
        return float(gpu) + pp + head_s, dropped, (float(tp), float(exposed), pp)

    def comm_s(self, tokens: int) -> tuple[float, float, float]:
        """(TP, exposed EP, PP) seconds at ``tokens`` without attention, at the expected expert load."""
        if tokens <= self.max_tokens:
            return self._comm[tokens]
        p, e, _d, pp = self._at(tokens)
        _gpu, exposed, tp = self._price(p, 0.0, e)
        return float(tp), float(exposed), pp
