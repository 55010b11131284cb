"""Alpha-beta models of collectives. Pure functions; seconds out, bytes and GB/s in.

Bandwidths are per device per direction (1e9 bytes/s); latencies in seconds.

Ring collectives over ``n`` ranks (``bytes`` = the full buffer each rank holds before a
reduce-scatter or after an all-gather): all-reduce ``2(n-1)/n * bytes / bw + 2(n-1) * latency``;
reduce-scatter and all-gather are each exactly half of it, so ZeRO's reduce-scatter of gradients
plus all-gather of parameters move one all-reduce's bytes.
"""

from __future__ import annotations

import numpy as np


def p2p_s(nbytes, bw_gbps: float, latency_s: float):
    """One point-to-point message (pipeline send/recv)."""
    nbytes = np.asarray(nbytes, dtype=float)
    return np.where(nbytes > 0, latency_s + nbytes / (bw_gbps * 1e9), 0.0)


def ring_allreduce_s(nbytes, n: int, bw_gbps: float, latency_s: float):
    """Ring all-reduce of ``nbytes`` over ``n`` ranks: 2(n-1)/n * bytes / bw + 2(n-1) * latency."""
    if n <= 1:
        return np.zeros_like(np.asarray(nbytes, dtype=float))
    nbytes = np.asarray(nbytes, dtype=float)
    return 2 * (n - 1) / n * nbytes / (bw_gbps * 1e9) + 2 * (n - 1) * latency_s


def ring_reduce_scatter_s(nbytes, n: int, bw_gbps: float, latency_s: float):
    """Ring reduce-scatter of an ``nbytes`` buffer over ``n`` ranks (each keeps ``nbytes/n``):
    (n-1)/n * bytes / bw + (n-1) * latency, half a ring all-reduce. An all-gather of the same
    buffer (each rank contributes ``nbytes/n``) costs the same."""
    return 0.5 * ring_allreduce_s(nbytes, n, bw_gbps, latency_s)


ring_allgather_s = ring_reduce_scatter_s


def one_shot_allreduce_s(nbytes, n: int, bw_gbps: float, latency_s: float):
    """One-shot all-reduce through peer memory (inference engines' custom all-reduce): every rank
    reads its ``n - 1`` peers' whole buffers over its own link and sums them locally, in one kernel:
    ``latency + (n-1) * bytes / bw``. Cheapest for small messages (one synchronisation, no ring
    steps); its bytes grow with ``n``, so a larger message is better served by a two-shot or ring."""
    nbytes = np.asarray(nbytes, dtype=float)
    if n <= 1:
        return np.zeros_like(nbytes)
    return np.where(nbytes > 0, latency_s + (n - 1) * nbytes / (bw_gbps * 1e9), 0.0)


def two_shot_allreduce_s(nbytes, n: int, bw_gbps: float, latency_s: float):
    """Two-shot all-reduce through peer memory: a reduce-scatter (each rank reads and sums its
    ``1/n`` slice from every peer) then an all-gather of the slices, ``latency + 2(n-1)/n * bytes /
    bw``: a ring's bytes with two synchronisations instead of ``2(n-1)`` ring steps."""
    nbytes = np.asarray(nbytes, dtype=float)
    if n <= 1:
        return np.zeros_like(nbytes)
    return np.where(nbytes > 0, latency_s + 2 * (n - 1) / n * nbytes / (bw_gbps * 1e9), 0.0)


def ring_bus_gbps(members_per_node: int, intra_bw_gbps: float, nic_bw_gbps: float) -> float:
    """Bus bandwidth per rank (GB/s) of a ring collective whose group spans nodes with
    ``members_per_node`` ranks on each node, each rank owning one NIC of ``nic_bw_gbps`` (its rail).

    NCCL runs one ring per NIC (channels): each ring leaves a node once, through a different
    member's NIC, so a rank sends ``1/r`` of the ring traffic over its NIC and ``(r-1)/r`` over
    NVLink (``r = members_per_node``). Both run at once; the slower sets the pace:
    ``1 / max((r-1)/(r * intra), 1/(r * nic))``. ``r = 1`` (one member per node, e.g. a DP group
    strided by TP = 8) is one NIC per rank. Measured: 2 x 8 H100 with 8 x 400 Gb/s NICs reach
    ~470 GB/s all-reduce busbw (NVIDIA/nccl-tests#309), not one NIC's 50; 2 HGX A100 with 4 x 200
    Gb/s reach 91 GB/s (NVIDIA/nccl-tests#100), about 4 NICs' 100.
    """
    r = max(int(members_per_node), 1)
    per_byte = max((r - 1) / (r * intra_bw_gbps), 1.0 / (r * nic_bw_gbps))
    return 1.0 / per_byte


def prefetched_wait_s(gather_s, compute_s, prefetch: bool = True, compute_ready_s: float = 0.0):
    """Seconds each block waits for its parameters when an all-gather stream feeds a compute stream.

    ``gather_s`` / ``compute_s``: ``[..., n_blocks]`` seconds in execution order (the layers of a
    pass). The first gather starts at 0 and the compute stream is free from ``compute_ready_s``.
    With ``prefetch`` (FSDP / DeepSpeed ZeRO-3, Megatron's overlapped param gather) block ``j+1``'s
    gather is issued when block ``j`` starts computing, behind the previous gather on its stream;
    block ``j`` computes once its own gather is done. Without, each gather runs just before its
    block and is fully exposed. Returns ``[..., n_blocks]`` waits (their sum is the exposed gather
    time); while the gathers keep up this is ``g_0 + sum_j max(0, g_j - c_{j-1})``.
    """
    g, c = np.broadcast_arrays(np.asarray(gather_s, dtype=float), np.asarray(compute_s, dtype=float))
    if not prefetch:
        return g.copy()
    wait = np.zeros_like(g)
    gather_end = np.zeros(g.shape[:-1])
    compute_end = np.full(g.shape[:-1], float(compute_ready_s))
    issue = np.zeros(g.shape[:-1])
    for j in range(g.shape[-1]):
        gather_end = np.maximum(gather_end, issue) + g[..., j]
        start = np.maximum(compute_end, gather_end)
        wait[..., j] = start - compute_end
        issue = start  # the next block's gather is issued as this block starts
        compute_end = start + c[..., j]
    return wait


def alltoall_bytes_per_rank(tokens, top_k: int, d_model: int, dtype_bytes: float, ep: int):
    """Bytes one rank sends in one uniform all-to-all: tokens * top_k * d_model * bytes * (ep-1)/ep."""
    return np.asarray(tokens, dtype=float) * top_k * d_model * dtype_bytes * (ep - 1) / ep


def ep_peer_split(ep: int, tp: int, devices_per_node: int) -> tuple[int, int]:
    """(intra-node, inter-node) EP peers of one rank, excluding itself.

    ``tp`` is the spacing of EP ranks in rank order, the expert tensor-parallel size: Megatron's
    expert ranks are ordered etp, ep, expert-dp, pp (``engine/expert_tp.py``), so an EP group spans
    ``ep * etp`` consecutive ranks and one node holds ``devices_per_node // etp`` of its members
    (``etp = tp`` unless ``plan.etp`` is set: EP carved out of the data-parallel ranks, tp apart).
    """
    if ep <= 1:
        return 0, 0
    per_node = max(1, min(ep, devices_per_node // max(tp, 1)))
    return per_node - 1, ep - per_node


def distinct_node_fraction(top_k: int, nodes: float, n_experts: int = 0, max_nodes: int | None = None) -> float:
    """NIC bytes of a node-deduplicated all-to-all over those of a flat one, under uniform routing.

    A token picks ``k = top_k`` distinct experts out of ``E = n_experts`` spread evenly over the
    ``N = nodes`` nodes of the EP group (``e = E / N`` per node). A flat all-to-all sends one copy
    per remote assignment, ``k (N-1)/N`` per token on average; a hierarchical one (DeepEP's
    node-limited dispatch, DeepSeek-V3) sends one copy per distinct remote node, ``(N-1) p`` with
    ``p = 1 - C(E-e, k) / C(E, k) = 1 - prod_{j<k} (E-e-j)/(E-j)`` the chance that a given node
    holds at least one of the ``k`` experts. The ratio is ``N p / k`` (1 for ``k = 1``, at most 1).
    ``n_experts = 0``: draws with replacement, the large-``E`` limit ``p = 1 - (1 - 1/N)^k``.
    The product is taken over real ``e``, so a group whose size is not a multiple of the node's
    share still gets a number.

    ``max_nodes = M < N``: node-limited routing (DeepSeek-V3, arXiv:2412.19437 sec. 2.1.2: each
    token goes to at most ``M = 4`` nodes; DeepSeek-V2/V3's ``n_group`` / ``topk_group``): the router
    first picks ``M`` nodes, then the ``k`` experts among their ``M e`` experts. Under uniform
    affinities those are a uniform ``k``-subset of the ``M`` nodes' experts, so the token reaches
    :func:`expected_distinct_nodes` ``D_M = M p_M`` nodes, ``p_M`` as above over ``M`` nodes and ``M e``
    experts (at most ``M``, at most the unlimited ``N p``); the picked nodes are spread evenly, so
    the remote ones are ``D_M (N-1)/N`` and the ratio ``D_M / k``. ``M >= N`` (or None) limits nothing.
    """
    k, n = max(int(top_k), 1), float(nodes)
    if n <= 1 or k == 1:
        return 1.0
    if max_nodes is not None and max_nodes < n:  # the k experts among the M chosen nodes' M e experts
        return min(1.0, expected_distinct_nodes(k, max_nodes, n_experts * max_nodes / n) / k)
    return min(1.0, expected_distinct_nodes(k, n, n_experts) / k)


def expected_distinct_nodes(top_k: int, nodes: float, n_experts: float = 0) -> float:
    """Expected distinct nodes (own node included) a token's ``top_k`` distinct experts sit on, the
    ``n_experts`` experts spread evenly over ``nodes`` nodes: ``N (1 - prod_{j<k} (E-e-j)/(E-j))``,
    ``e = E / N`` (``n_experts = 0``: with replacement, ``N (1 - (1 - 1/N)^k)``)."""
    k, n = max(int(top_k), 1), float(nodes)
    if n <= 1:
        return min(n, 1.0) if n > 0 else 0.0
    if n_experts:
        E = float(n_experts)
        e = E / n
        miss = 1.0
        for j in range(k):
            miss *= max(E - e - j, 0.0) / (E - j) if E - j > 0 else 0.0
    else:
        miss = (1.0 - 1.0 / n) ** k
    return n * (1.0 - miss)


def gathered_bytes(bytes_to_peers, ep: int, top_k: int):
    """Bytes one rank receives when the EP group all-gathers its tokens instead of an all-to-all
    sending each token's ``top_k`` rows to their experts' ranks (``allgather``: vLLM's default
    ``allgather_reducescatter`` backend for DP + EP, SGLang's DP-attention gather, TensorRT-LLM's
    attention-DP MoE without its all-to-all, Megatron's ``allgather`` dispatcher): every peer's tokens
    whole, ``(ep - 1) t d b``, where the all-to-all's ``bytes_to_peers`` is ``t top_k d b (ep-1)/ep``.
    The combine reduce-scatters the same volume of outputs."""
    return np.asarray(bytes_to_peers, dtype=float) * ep / max(int(top_k), 1)


def alltoall_link_bytes(bytes_to_peers, ep: int, tp: int, devices_per_node: int, algorithm: str = "flat",
                        top_k: int = 1, n_experts: int = 0, max_nodes: int | None = None):
    """(NVLink bytes, NIC bytes) one rank moves in an all-to-all where it sends ``bytes_to_peers``.

    Flat (and ``deepep_low_latency``, which sends one message per (token, expert), no dedup): the
    bytes split over the ``ep - 1`` peers evenly, intra-node peers over NVLink, the others over the
    NIC. ``deepep_normal``: NVLink carries one copy per distinct destination rank (DeepEP's
    ``is_token_in_rank``; the flat bytes times ``distinct_node_fraction(top_k, ep, n_experts)``), the
    NIC one per distinct remote node, as hierarchical. Hierarchical: every byte crosses NVLink once (regrouped per node), and the NIC
    carries one copy per distinct remote node a token goes to, the flat NIC bytes times
    :func:`distinct_node_fraction` (``top_k = 1``: the same bytes as flat).

    ``max_nodes``: node-limited routing (``routing.max_nodes_per_token``; None: unlimited). It caps
    the distinct nodes a token reaches, so it lowers the deduplicated bytes only: hierarchical's
    and ``deepep_normal``'s NIC bytes (at most ``max_nodes`` copies per token), and
    ``deepep_normal``'s NVLink bytes (the token's distinct ranks lie within ``max_nodes`` nodes'
    ranks). Flat and ``deepep_low_latency`` send one copy per (token, expert) whatever the nodes,
    and a remote expert is still ``(N-1)/N`` of them, so their bytes do not change. ``allgather``:
    every peer's tokens whole (:func:`gathered_bytes`), split over the links as flat's.
    """
    b = np.asarray(bytes_to_peers, dtype=float)
    intra, inter = ep_peer_split(ep, tp, devices_per_node)
    peers = intra + inter
    if peers == 0:
        return np.zeros_like(b), np.zeros_like(b)
    if algorithm == "allgather":  # a ring: every peer's tokens whole, split over the links as flat's
        b = gathered_bytes(b, ep, top_k)
    b_inter = b * inter / peers
    if algorithm == "hierarchical" and inter:
        nodes = ep / (intra + 1)
        return b, b_inter * distinct_node_fraction(top_k, nodes, n_experts, max_nodes)
    if algorithm == "deepep_normal":
        # One copy per distinct destination rank over NVLink, one per distinct remote node over RDMA.
        max_ranks = None if max_nodes is None else max_nodes * (intra + 1)
        b_nvl = b * distinct_node_fraction(top_k, ep, n_experts, max_ranks)
        if not inter:
            return b_nvl, np.zeros_like(b)
        return b_nvl, b_inter * distinct_node_fraction(top_k, ep / (intra + 1), n_experts, max_nodes)
    return b * intra / peers, b_inter


def alltoall_s(bytes_to_peers, ep: int, tp: int, devices_per_node: int,
               intra_bw_gbps: float, intra_latency_s: float,
               inter_bw_gbps: float, inter_latency_s: float, algorithm: str = "flat",
               intra_peer_s: float = 0.0, inter_peer_s: float = 0.0, top_k: int = 1, n_experts: int = 0,
               max_nodes: int | None = None):
    """Time of one all-to-all where each rank sends ``bytes_to_peers`` in total to its ep-1 peers.

    The bytes split over peers evenly; intra-node bytes go over NVLink, inter-node bytes over the
    rank's NIC; the two streams run concurrently, so the slower one sets the time. Messages to all
    peers are in flight at once (NCCL's all-to-all is grouped send/recv, whose calls "progress
    independently": NCCL user guide, point-to-point communication), so each stream pays its link's
    latency once, plus ``*_peer_s`` per peer (0 from the datasheet; a measured all-to-all fitted as
    ``peers * latency``, ``calibrate.collectives``, passes its latency there). ``hierarchical``
    first regroups per node over NVLink, then exchanges one message per remote node, each token
    crossing the NIC once per distinct remote node its ``top_k`` experts sit on (of ``n_experts``;
    :func:`alltoall_link_bytes`, :func:`distinct_node_fraction`); ``top_k = 1`` moves the flat
    NIC bytes; ``max_nodes`` (node-limited routing) caps those distinct nodes. ``deepep_normal`` /
    ``deepep_low_latency``: DeepEP's two kernel families (:func:`_deepep_s`).
    """
    b = np.asarray(bytes_to_peers, dtype=float)
    intra, inter = ep_peer_split(ep, tp, devices_per_node)
    peers = intra + inter
    if peers == 0:
        return np.zeros_like(b)
    b_nvl, b_nic = alltoall_link_bytes(b, ep, tp, devices_per_node, algorithm, top_k, n_experts, max_nodes)
    lat_nvl = (intra_latency_s if intra else 0.0) + intra * intra_peer_s
    if algorithm in DEEPEP_ALGORITHMS:
        return _deepep_s(b, b_nvl, b_nic, algorithm, intra, inter, lat_nvl, intra_bw_gbps, inter_bw_gbps,
                         inter_latency_s, inter_peer_s, intra + 1)
    if algorithm == "hierarchical" and inter:
        nodes = inter // (intra + 1)
        # Stage 1: regroup inside the node (all bytes cross NVLink once); stage 2: one message per node.
        t_nvl = b_nvl / (intra_bw_gbps * 1e9) + lat_nvl
        t_net = b_nic / (inter_bw_gbps * 1e9) + inter_latency_s + nodes * inter_peer_s
        return np.where(b > 0, t_nvl + t_net, 0.0)
    t_nvl = b_nvl / (intra_bw_gbps * 1e9) + lat_nvl
    t_net = (b_nic / (inter_bw_gbps * 1e9) + inter_latency_s + inter * inter_peer_s) if inter else np.zeros_like(b)
    return np.where(b > 0, np.maximum(t_nvl, t_net), 0.0)


# DeepEP (deepseek-ai/DeepEP V1, docs/legacy.md @0297fc80; rows in moesim/data/deepep.csv).
# Fitted: the achieved fraction of each link's bandwidth (NVLink from DEEPEP-01, the normal EP8
# row; RDMA from DEEPEP-03, the normal EP32 row) and the fixed cost of one GPU-initiated exchange
# kernel (from the low-latency dispatch EP16 / EP64 / EP256 rows). Every other row is held out
# (tests/test_deepep.py): normal EP16 / EP64, low-latency dispatch EP8 / EP32 / EP128 and all six
# low-latency combine rows.
# Fit (H800: NVLink 160 GB/s, CX7 50 GB/s, latencies 2 / 5 us; top-8 of 256 experts): the normal
# rows reproduced exactly (EP16 +2.5%, EP64 -1.3% held out); low-latency dispatch within 4.2%
# (EP8 -4.2%, EP32 +0.9%, EP128 -2.0% held out); combine (all held out) within 9% (EP128 -8.9%).
DEEPEP_NVL_EFFICIENCY = 0.882
DEEPEP_RDMA_EFFICIENCY = 0.898
DEEPEP_KERNEL_S = 24.7e-6
DEEPEP_ALGORITHMS = ("deepep_normal", "deepep_low_latency")


def _deepep_s(b, b_nvl, b_nic, algorithm, intra, inter, lat_nvl, intra_bw_gbps, inter_bw_gbps,
              inter_latency_s, inter_peer_s, ranks_per_node,
              nvl_eff=None, rdma_eff=None, kernel_s=None):
    """DeepEP dispatch / combine time (both directions cost the same; pass the direction's bytes).

    Both families keep NVLink and RDMA busy at once (the slower sets the pace) at a fitted
    fraction of each link (``DEEPEP_NVL_EFFICIENCY``, ``DEEPEP_RDMA_EFFICIENCY``), and each
    GPU-initiated exchange (send, then wait for every peer's arrival flag) pays a fixed
    ``DEEPEP_KERNEL_S`` plus the links' latency.

    ``deepep_low_latency``: one kernel, one RDMA message per (token, expert) straight to the
    expert's rank, no forwarding and no dedup; same-node peers' messages do not cross the NIC wire
    (the published EP8 row moves 98 GB/s, twice one CX7's 50 GB/s, so they go over NVLink P2P).
    ``deepep_normal``: a notify kernel first exchanges the per-rank / per-node counts (one more
    exchange: fixed cost plus latency), then the data kernel sends one copy per distinct remote
    node over RDMA (rail-aligned) which the receiving GPU forwards over NVLink to each distinct
    destination rank, pipelined in chunks so the two legs overlap.
    """
    nvl_eff = DEEPEP_NVL_EFFICIENCY if nvl_eff is None else nvl_eff
    rdma_eff = DEEPEP_RDMA_EFFICIENCY if rdma_eff is None else rdma_eff
    kernel_s = DEEPEP_KERNEL_S if kernel_s is None else kernel_s
    t_nvl = b_nvl / (nvl_eff * intra_bw_gbps * 1e9) + lat_nvl
    if inter:
        peers_net = inter if algorithm == "deepep_low_latency" else inter // max(ranks_per_node, 1)
        lat_net = inter_latency_s + peers_net * inter_peer_s
        t_net = b_nic / (rdma_eff * inter_bw_gbps * 1e9) + lat_net
    else:
        lat_net, t_net = 0.0, np.zeros_like(b)
    t = kernel_s + np.maximum(t_nvl, t_net)
    if algorithm == "deepep_normal":
        t = t + kernel_s + max(lat_nvl, lat_net)  # the notify kernel's count exchange
    return np.where(b > 0, t, 0.0)


#: SMs an all-to-all algorithm's kernels occupy while they run. DeepEP normal: 20 (DeepSeek-V3
#: report, arXiv:2412.19437 sec. 3.2.2: "only 20 SMs are sufficient to fully utilize the bandwidths
#: of IB and NVLink"; DeepEP's README example sets 24). DeepEP low-latency: none (hook-based receive,
#: RDMA in the background, "without occupying any SM", DeepEP README). NCCL's flat and hierarchical
#: all-to-alls run on SMs too (one block per channel) but no measured count is cited here: 0.
ALLTOALL_SMS = {"deepep_normal": 20}

#: SM-occupying seconds of one DeepEP low-latency dispatch (its send and receive kernels) at the
#: shape measured: SGLang's large-scale EP blog (lm-sys/lm-sys.github.io
#: blog/2025-05-05-large-scale-ep.md, "Dispatch Optimization Potential": "unit tests with DeepEP
#: reveal a potential of 0.06ms occupying SMs") at its decode shape, 128 tokens per micro-batch of
#: DeepSeek-V3 (hidden 7168, top-8 experts).
LL_DISPATCH_SM_S = 60e-6
LL_DISPATCH_SM_SHAPE = (128, 7168, 8)  # tokens, hidden, top-k of that measurement


def ll_dispatch_sm_s(tokens, hidden: int, top_k: int):
    """Seconds a DeepEP low-latency dispatch of ``tokens`` (per rank) holds every SM: its send kernel
    (cast, one message per (token, expert)) and receive kernel (unpack), between which the transfer
    flies with no SM (hook mode, ``return_recv_hook``: DeepEP docs/en/low-latency.md; the blog above:
    decode communication kernels "either fully utilize SMs (during send/receive) or none"). Under
    two-batch overlap those kernels run on the compute stream, in series with the other micro-batch's
    compute. :data:`LL_DISPATCH_SM_S` scaled by the bytes sent, tokens x top-k x hidden (assumed
    proportional: one measured shape). The combine's send and receive are not measured: not priced."""
    t0, h0, k0 = LL_DISPATCH_SM_SHAPE
    return LL_DISPATCH_SM_S * np.asarray(tokens, dtype=float) * top_k * hidden / (t0 * k0 * h0)


def overlap_slowdown(algorithm: str, sm_count: int | None) -> float:
    """Extra compute seconds per second that compute overlaps the all-to-all: ``phi / (1 - phi)``.

    ``phi`` = the SMs the all-to-all kernels hold / the device's SMs: the overlapped compute runs on
    the rest (132 - 20 of an H800's SMs for DeepEP's normal kernels: +18 %). 0 when the algorithm
    holds no SMs or the device's SM count is unknown.
    """
    sms = ALLTOALL_SMS.get(algorithm, 0)
    if not sms or not sm_count:
        return 0.0
    phi = min(sms / sm_count, 0.9)
    return phi / (1.0 - phi)
