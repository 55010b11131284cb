"""Expert tensor parallelism and the expert layers' rank grid (``plan.etp``, MoE parallel folding). Pure.

Sources (NVIDIA/Megatron-LM):

- ``megatron/core/transformer/moe/README.md``, "MoE Parallel Folding" (and Liu et al. 2025,
  arXiv:2504.14960): attention layers use ``TP x CP x DP x PP``, MoE layers ``ETP x EP x EDP x PP``
  over the same GPUs, which lifts the ``EP <= DP`` constraint (e.g. ETP 1, EP 64 under TP 4 x CP 2
  x DP 8).
- ``megatron/core/parallel_state.py``, ``initialize_model_parallel``: a second ``RankGenerator``
  for expert layers with ``tp = expert_tensor_parallel_size`` (default ``tp``), ``ep``, ``dp =
  world / (etp * ep * pp)`` (the expert-DP size, so ``etp * ep * pp`` must divide the world) and
  ``cp = 1``, in the same order as the dense one (default ``tp-cp-ep-dp-pp``; pipeline groups
  must match). So within a pipeline stage's ``tp * cp * dp`` consecutive ranks, expert-TP groups
  are ``etp`` adjacent ranks, an EP group is ``ep`` ranks ``etp`` apart (``ep * etp`` consecutive
  ranks) and the expert-DP group ``tp * cp * dp / (ep * etp)`` ranks ``ep * etp`` apart.
- ``megatron/core/transformer/moe/token_dispatcher.py``, ``MoEAlltoAllTokenDispatcher``: permute
  the rank's local tokens, all-to-all over EP, all-gather over the expert-TP group, the experts,
  reduce-scatter over expert TP, all-to-all back, un-permute. ``moe_layer.py`` requires sequence
  parallelism with TP > 1 in training, so a rank's local tokens are its ``1/tp`` slice.

Per device and microbatch, with ``T = seqs * seq_len / cp`` tokens of the CP rank (shared by its TP
group, each TP rank holding ``T / tp`` under sequence parallelism):

- an EP *source* is one expert-TP group: ``etp`` devices with ``etp * T / tp`` tokens
  (:func:`source_tokens`); an EP group routes ``ep`` sources, ``ep * etp * T / tp`` tokens
  (:func:`routing_group_tokens`). ``etp = tp``: ``T`` and ``ep * T``, the layout before ``etp``.
- all-to-all: each device sends its own ``T / tp`` tokens' ``top_k`` rows (``(ep-1)/ep`` of them
  to other EP ranks) and receives ``1/etp`` of the rows its EP rank's experts get
  (``alltoall_bytes.alltoall_bytes_dropless`` / ``alltoall_bytes_padded``);
- experts: every device of an EP rank computes all tokens routed to the rank's experts (after the
  expert-TP all-gather) at ``expert_ffn_hidden / etp``; the gather before and the reduce-scatter
  after are one all-reduce of ``etp * T / tp`` tokens over ``etp`` adjacent ranks
  (``ops.expert_allreduce_op``; ``etp = tp``: the TP all-reduce of ``T`` tokens as before; ``etp = 1``:
  none). Attention, the router, permutes and shared experts stay on ``tp``;
- weights: a device holds ``(E + N) / ep`` expert slots split over ``etp`` ranks; the expert
  gradient sync and ZeRO span the expert-DP group (:func:`expert_dp_group`);
- placement on nodes: EP ranks sit ``etp`` apart, so a node of ``D`` devices holds
  ``min(ep, D // etp)`` members of an EP group (``comm.ep_peer_split(ep, etp, D)``); the group is
  inside one node when ``ep * etp <= D``.

Not modelled: the routed rows' fc1 input that the expert-TP all-gather multiplies by ``etp`` in
activation memory (``memory.py`` keeps ``1/tp`` of every row, exact for ``etp = 1``).
"""

from __future__ import annotations


def source_tokens(plan, tokens: int) -> int:
    """Tokens one EP source (an expert-TP group of ``etp`` devices) routes per microbatch:
    ``tokens * etp / tp``, ``tokens`` being the CP rank's ``seqs * seq_len / cp``."""
    return tokens * plan.expert_tp // plan.tp


def routing_group_tokens(plan, tokens: int) -> int:
    """Tokens one EP group routes per microbatch: ``ep`` sources of :func:`source_tokens` each."""
    return plan.ep * source_tokens(plan, tokens)


def expert_dp_group(plan) -> tuple[int, int]:
    """``(ranks, stride)`` of the expert gradient sync / ZeRO group, as ``CostModel.allreduce_s``
    takes them: ``tp * cp * dp / (ep * etp)`` ranks ``ep * etp`` apart. ``etp = tp``: ``dp / ep * cp``
    ranks ``tp * ep`` apart when ``ep`` divides ``dp`` (else ``ep`` spans the CP ranks too)."""
    etp = plan.expert_tp
    return max(plan.tp * plan.cp * plan.dp // (plan.ep * etp), 1), plan.ep * etp

