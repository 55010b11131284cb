"""Context parallelism in training (``plan.cp``): the sequence split and ring attention. Pure numpy.

Sources:

- Megatron-core's context parallelism (``--context-parallel-size``; developer guide, "context_parallel
  package"): every CP rank holds ``seq_len / cp`` tokens of each sequence. Under a causal mask the
  sequence is cut into ``2 * cp`` chunks and rank ``r`` keeps chunks ``r`` and ``2cp - 1 - r`` (so
  ``seq_len`` must be a multiple of ``2 * cp`` when ``cp > 1``, as Megatron asserts), which gives
  every rank the same attention work. Everything but the attention core works per token, so GEMMs, norms, the router,
  the experts and the all-to-all bytes follow the rank's ``tokens / cp``. The weights are the same on
  every CP rank: gradients are reduced, and the distributed optimizer shards, over DP x CP ranks.
  Ranks are ordered ``tp-cp-ep-dp-pp`` (``parallel_state``'s ``RankGenerator`` default): a CP group
  is ``cp`` ranks ``tp`` apart and the dense DP x CP group ``dp * cp`` ranks ``tp`` apart. Expert
  layers use a second generator with ``cp = 1`` over the same ranks (expert-DP = ``tp * cp * dp /
  (etp * ep)``, ``engine/expert_tp.py``): with ``etp = tp`` EP groups are carved out of the CP x DP
  ranks, EP ranks sit ``tp`` apart as without CP (the all-to-all's layout is unchanged) and the
  expert-DP group is ``dp / ep * cp`` ranks ``tp * ep`` apart.
- Transformer Engine's ``DotProductAttention(cp_comm_type=...)``: ``"p2p"`` (the default, modelled
  here) passes K/V blocks around a ring of the CP group and overlaps each transfer with the
  attention of the block in hand; ``"all_gather"`` gathers K/V first, ``"a2a"`` is DeepSpeed-Ulysses'
  head redistribution, ``"a2a+p2p"`` the hierarchical mix (not modelled).
- Ring Attention (Liu, Zaharia, Abbeel 2023, "Ring Attention with Blockwise Transformers for
  Near-Infinite Context"): ``cp - 1`` steps, in each a rank sends its K/V block to the next rank
  and receives the previous one's while it computes attention against the block it has; the
  transfer is hidden when a block's compute outlasts it.

Per layer and microbatch on one device (one TP shard), with ``T = seqs * seq_len / cp`` local tokens:

- attention core FLOPs = the whole causal attention's / cp (load-balanced), run as one kernel per
  ring step (:func:`ring_kernels`): Transformer Engine's ``AttnFuncWithCPAndKVP2P`` calls the fused
  attention once per step, step 0 causal over the local ``2c`` tokens (``c = seq_len / 2cp``, one
  chunk), each later step unmasked over the local queries and half the received keys, or half the
  queries and all of them: ``2c^2`` (query, key) pairs every step, at ``c`` or ``2c`` keys per
  query row where one long kernel would see ``seq_len / 2``. The flash kernel's fixed cost per
  query row (``costmodel/flash_attention.py``) is paid every step, so each step is priced as a
  causal kernel of ``2c`` queries over ``2c`` keys (the same pairs and ``c`` keys a row, the
  slowest rank's steps); every ring step does ``1 / cp`` of the core (``a = core / cp``);
- merging the steps (:func:`merge_ops`): each step's partial output is rescaled by its softmax
  statistics and added into the running output (``flash_attn_fwd_out_correction``: read both,
  write one), and the backward accumulates each step's dQ, dK and dV the same way, memory-bound
  kernels over the rank's Q-sized and K/V-sized tensors;
- forward ring step: ``B = 2 * kv_heads_per_tp * head_dim * T * act_bytes`` (K and V of the local
  block); backward: K/V again plus the dK/dV accumulators, ``2 * B`` per step, against
  ``flash_attention.ATTN_BWD_FACTOR * a`` of attention backward (:func:`ring_bytes`);
- exposed seconds (added to the layer): ``(cp - 1) * max(0, step_s - a) + latency`` per pass
  (:func:`ring_exposed_s`); the ring spans ``(cp - 1) * step_s`` on the ``cp_comm`` stream.

``plan.cp_comm: a2a`` (DeepSpeed-Ulysses, Jacobs et al. 2023; Transformer Engine's
``AttnFuncWithCPAndQKVOA2A``) trades the ring for four all-to-alls over the CP group (``cp`` ranks
``tp`` apart, as an EP group): forward, Q, K and V go from ``T`` tokens of every head to the whole
sequence of ``1 / cp`` of the heads, and the output back; backward, the output gradient the same way
in, and dQ, dK, dV back. Each moves ``(cp - 1) / cp`` of the rank's tensors (:func:`a2a_bytes`) and
nothing overlaps them: attention needs its inputs whole. The core is then one causal kernel over the
whole sequence for ``heads / cp`` heads (:func:`core_dims`): the same FLOPs as the ring's, at
``seq_len / 2`` keys a query row, with no per-step kernels and no merges.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from moesim.costmodel import CostModel
from moesim.engine.expert_tp import expert_dp_group
from moesim.engine.op_types import BlockDims, Op, OpDtypes
from moesim.engine.ops import ATTN_BWD_FACTOR, price

#: Op names of one ring step's K/V send (forward) and K/V + dK/dV send (backward).
RING_FWD, RING_BWD = "cp_ring", "cp_ring_bwd"
#: Op names of a pass's Ulysses all-to-alls (``cp_comm`` a2a): Q/K/V in and O out (forward),
#: dO in and dQ/dK/dV out (backward).
A2A_FWD, A2A_BWD = "cp_a2a", "cp_a2a_bwd"


def attention_tokens(seq_len: int, cp: int, comm: str = "p2p") -> tuple[float, float]:
    """(queries, keys) per sequence of one CP rank's attention core as one kernel, as
    ``ops.attention_core_op`` takes them (its causal FLOPs are ``4 h d q (kv - q/2)``).

    The rank's ``q = seq_len / cp`` queries (two chunks of ``seq_len / 2cp``, ``r`` and ``2cp-1-r``)
    see on average ``seq_len / 2`` keys, so ``kv - q/2 = seq_len / 2``: the FLOPs are exactly the
    whole sequence's ``4 h d S^2 / 2`` over ``cp``. ``cp = 1``, or ``comm`` a2a (Ulysses, the whole
    sequence for :func:`core_dims`'s ``1 / cp`` of the heads): ``(seq_len, seq_len)``.
    """
    if cp == 1 or comm == "a2a":
        return float(seq_len), float(seq_len)
    q = seq_len / cp
    return q, seq_len / 2 + q / 2


def ring_kernels(seq_len: int, cp: int, comm: str = "p2p") -> tuple[float, int]:
    """(tokens, kernels): each sequence's ring attention on one CP rank as ``kernels`` causal
    kernels of ``tokens`` queries over ``tokens`` keys (``ops.attention_core_op``'s convention):
    one per ring step, ``seq_len / cp`` each (see the module notes; their FLOPs sum to
    :func:`attention_tokens`'s). ``cp = 1``, or ``comm`` a2a: one kernel over the whole sequence
    (a2a: for :func:`core_dims`'s ``1 / cp`` of the heads)."""
    if comm == "a2a":
        return float(seq_len), 1
    return float(seq_len) / cp, int(cp)


def core_dims(dims: BlockDims, cp: int, comm: str = "p2p") -> BlockDims:
    """The block widths the attention core kernel runs at: ``dims``, or under Ulysses (``comm``
    a2a, ``cp > 1``) ``1 / cp`` of the query and KV heads (the schema checks that they divide)."""
    if cp <= 1 or comm != "a2a":
        return dims
    return replace(dims, heads=dims.heads / cp, kv_heads=max(int(dims.kv_heads // cp), 1))


def a2a_bytes(dims: BlockDims, dt: OpDtypes, tokens, cp: int) -> float:
    """Bytes one device sends in one pass's Ulysses all-to-alls (``comm`` a2a): ``(cp - 1) / cp`` of
    its Q, K, V and attention output (forward), or of the output gradient and dQ, dK, dV (backward,
    the same sizes), ``tokens`` of them per TP shard at the activations' width."""
    per_token = (2.0 * dims.heads + 2.0 * dims.kv_heads) * dims.head_dim * dt.act_bytes
    return (cp - 1) / cp * float(tokens) * per_token


def a2a_ops(dims: BlockDims, dt: OpDtypes, tokens, cp: int) -> list[Op]:
    """The Ulysses all-to-alls of each pass as one op each on the ``cp_comm`` stream, over the CP
    group of ``cp`` ranks ``tp`` apart (priced as an all-to-all of that group)."""
    b = a2a_bytes(dims, dt, tokens, cp)
    args = dict(bytes_to_peers=b, ep=cp, tp=dims.tp)
    return [Op(A2A_FWD, "alltoall", "cp_comm", args, 0.0, b, phase="fwd"),
            Op(A2A_BWD, "alltoall", "cp_comm", dict(args), 0.0, b, phase="bwd")]


def merge_ops(dims: BlockDims, dt: OpDtypes, tokens, cp: int, fp8_attention: bool = False,
              comm: str = "p2p") -> list[Op]:
    """Memory-bound kernels that merge the ring steps on one device (``cp > 1``; none otherwise),
    Transformer Engine's ``AttnFuncWithCPAndKVP2P`` on the rank whose every step is whole (the
    last; the others merge half-steps and wait for it at the next ring transfer):

    - forward (``cp_merge``): the first step's output rescaled into the running output (read one,
      write one), each later one rescaled and added (read two, write one): ``(2 + 3 (cp - 1)) O``
      bytes, ``O`` the rank's attention output (``tokens x heads x head_dim`` 16-bit elements);
    - backward (``cp_merge_bwd``): dQ, dK and dV accumulated the same way over the steps,
      ``(2 + 3 (cp - 1)) (O + 2 K)`` bytes, ``K`` one of the rank's K or V.

    With FP8 attention (``fp8_attention``) the steps' outputs are dequantized and merged, and the
    gradients accumulated, in FP32: 4 bytes an element instead of the activations' 16 bits. The
    softmax statistics' merges (one float per query row and head) are left out: 1/head_dim of these.
    Ulysses (``comm`` a2a) runs one kernel, so there is nothing to merge.
    """
    if cp <= 1 or comm == "a2a":
        return []
    t = float(tokens)
    elem = 4.0 if fp8_attention else dt.act_bytes
    o = t * dims.heads * dims.head_dim * elem
    k = t * dims.kv_heads * dims.head_dim * elem
    passes = 2.0 + 3.0 * (cp - 1)
    fwd, bwd = passes * o, passes * (o + 2.0 * k)
    return [Op("cp_merge", "memory", "compute", dict(nbytes=fwd), 0.0, fwd, phase="fwd"),
            Op("cp_merge_bwd", "memory", "compute", dict(nbytes=bwd), 0.0, bwd, phase="bwd")]


def ring_bytes(dims: BlockDims, dt: OpDtypes, tokens) -> float:
    """Bytes one device sends in one forward ring step: its K and V block (per TP shard)."""
    return 2.0 * dims.kv_heads * dims.head_dim * float(tokens) * dt.act_bytes


def ring_ops(dims: BlockDims, dt: OpDtypes, tokens, intra: bool) -> list[Op]:
    """One ring step of each pass as a point-to-point op on the ``cp_comm`` stream: forward sends
    the local K/V (:func:`ring_bytes`), backward K/V and dK/dV (twice the bytes). ``intra``: the
    whole ring stays inside a node (NVLink); else its slowest hop crosses the NIC."""
    b = ring_bytes(dims, dt, tokens)
    return [Op(RING_FWD, "p2p", "cp_comm", dict(nbytes=b, intra=intra), 0.0, b, phase="fwd"),
            Op(RING_BWD, "p2p", "cp_comm", dict(nbytes=2 * b, intra=intra), 0.0, 2 * b, phase="bwd")]


def ring_exposed_s(step_s, block_s, cp: int, latency_s: float = 0.0):
    """Seconds a ring pass adds to the layer: ``(cp - 1) * max(0, step_s - block_s) + latency_s``.

    ``step_s``: one step's transfer; ``block_s``: the attention of one block (``1 / cp`` of the
    core), which the transfer of the next block overlaps; ``latency_s``: one message's latency, the
    part no compute hides. 0 when ``cp == 1``.
    """
    if cp <= 1:
        return np.zeros_like(np.asarray(step_s, dtype=float))
    return (cp - 1) * np.maximum(np.asarray(step_s, dtype=float) - block_s, 0.0) + latency_s


def ring_intra(plan, devices_per_node: int) -> bool:
    """Whether the CP ring (``cp`` ranks ``tp`` apart) stays inside one node."""
    return plan.cp * plan.tp <= devices_per_node


def dp_groups(plan) -> tuple[tuple[int, int], tuple[int, int]]:
    """``((ranks, stride), (ranks, stride))`` of the dense and the expert gradient sync, as
    ``CostModel.allreduce_s`` takes them: ``dp * cp`` ranks ``tp`` apart, and the expert-DP group
    (``expert_tp.expert_dp_group``: ``dp / ep * cp`` ranks ``tp * ep`` apart when ``etp = tp``, see
    the module docstring). ``cp = 1``: as before CP."""
    return (plan.dp * plan.cp, plan.tp), expert_dp_group(plan)


def ring_costs(cm: CostModel, dims: BlockDims, dtypes: OpDtypes, tokens: int, cp: int, core_s: float,
               intra: bool, comm: str = "p2p") -> dict[str, tuple[float, float]]:
    """The ring attention of one layer and microbatch: ``exposed`` (forward, backward) seconds added
    to the attention slot, ``ring_s`` the whole transfers, ``bytes`` one device sends; all 0 without
    context parallelism. ``core_s``: the layer's attention core forward seconds on this rank.
    ``comm`` a2a: Ulysses' all-to-alls instead (:func:`a2a_ops`), every second of them exposed.

    A forward step overlaps one block's attention (``core_s / cp``), a backward step (twice the
    bytes: K/V and dK/dV) its backward (``flash_attention.ATTN_BWD_FACTOR`` times that). One
    message's latency stays exposed per pass: with alpha-beta links it is ``2 * fwd_step - bwd_step``.
    """
    if cp <= 1:
        return {"exposed": (0.0, 0.0), "ring_s": (0.0, 0.0), "bytes": (0.0, 0.0)}
    if comm == "a2a":
        ops = a2a_ops(dims, dtypes, tokens, cp)
        secs = price(cm, ops)
        f, b = float(secs[A2A_FWD]), float(secs[A2A_BWD])
        return {"exposed": (f, b), "ring_s": (f, b), "bytes": (float(ops[0].nbytes), float(ops[1].nbytes))}
    ops = ring_ops(dims, dtypes, tokens, intra)
    secs = price(cm, ops)
    f, b = float(secs[RING_FWD]), float(secs[RING_BWD])
    latency = max(2 * f - b, 0.0)
    block = core_s / cp
    exposed = (float(ring_exposed_s(f, block, cp, latency)), float(ring_exposed_s(b, ATTN_BWD_FACTOR * block, cp, latency)))
    nb = [float(op.nbytes) * (cp - 1) for op in ops]
    return {"exposed": exposed, "ring_s": ((cp - 1) * f, (cp - 1) * b), "bytes": (nb[0], nb[1])}
