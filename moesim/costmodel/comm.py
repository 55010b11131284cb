"""Alpha-beta models of collectives. Pure functions; seconds out, bytes and GB/s in.

Bandwidths are per device per direction (1e9 bytes/s); latencies in seconds.
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


def alltoall_bytes_per_rank(tokens, top_k: int, d_model: int, dtype_bytes: float, ep: int):
    """Bytes one rank sends in one uniform all-to-all: tokens * top_k * d_model * bytes * (ep-1)/ep."""
    return np.asarray(tokens, dtype=float) * top_k * d_model * dtype_bytes * (ep - 1) / ep


def ep_peer_split(ep: int, tp: int, devices_per_node: int) -> tuple[int, int]:
    """(intra-node, inter-node) EP peers of one rank, excluding itself.

    EP ranks are data-parallel ranks, laid out tp-fastest (Megatron order tp, ep, dp, pp), so one
    node holds ``devices_per_node // tp`` members of an EP group.
    """
    if ep <= 1:
        return 0, 0
    per_node = max(1, min(ep, devices_per_node // max(tp, 1)))
    return per_node - 1, ep - per_node


def alltoall_s(bytes_to_peers, ep: int, tp: int, devices_per_node: int,
               intra_bw_gbps: float, intra_latency_s: float,
               inter_bw_gbps: float, inter_latency_s: float, algorithm: str = "flat"):
    """Time of one all-to-all where each rank sends ``bytes_to_peers`` in total to its ep-1 peers.

    The bytes split over peers evenly; intra-node bytes go over NVLink, inter-node bytes over the
    rank's NIC; the two streams run concurrently, so the slower one sets the time. Latency grows with
    the number of peers (one message each). ``hierarchical`` first gathers per node over NVLink,
    then exchanges one message per remote node.
    """
    b = np.asarray(bytes_to_peers, dtype=float)
    intra, inter = ep_peer_split(ep, tp, devices_per_node)
    peers = intra + inter
    if peers == 0:
        return np.zeros_like(b)
    b_intra = b * intra / peers
    b_inter = b * inter / peers
    if algorithm == "hierarchical" and inter:
        nodes = inter // (intra + 1)
        # Stage 1: regroup inside the node (all bytes cross NVLink once); stage 2: one message per node.
        t_nvl = b / (intra_bw_gbps * 1e9) + intra * intra_latency_s
        t_net = b_inter / (inter_bw_gbps * 1e9) + nodes * inter_latency_s
        return np.where(b > 0, t_nvl + t_net, 0.0)
    t_nvl = b_intra / (intra_bw_gbps * 1e9) + intra * intra_latency_s
    t_net = b_inter / (inter_bw_gbps * 1e9) + inter * inter_latency_s if inter else np.zeros_like(b)
    return np.where(b > 0, np.maximum(t_nvl, t_net), 0.0)
