"""Bytes one device moves in a training step's expert all-to-all (dispatch or combine). Pure numpy.

Padded (``routing.overflow: drop``: every source rank fills its capacity slots of every expert) and
dropless (the real loads; the busiest rank's tokens set the time). Units: bytes, tokens.
"""

from __future__ import annotations

import numpy as np


def alltoall_bytes_padded(capacity: int, n_experts: int, ep: int, d_model: int, act_bytes: float, tp: int) -> float:
    """Bytes one device sends in a padded all-to-all: ``capacity/ep`` slots to each remote expert.

    ``capacity`` is an expert's slots over the EP group, ``ep`` times each source rank's
    (``RoutingSample.capacity``), so ``capacity/ep`` is what one source rank fills per expert.
    ``capacity * E * (ep-1)/ep^2 * d_model * bytes / tp``; with ``capacity = tokens*ep*top_k/E``
    (capacity factor 1) this is DESIGN's ``tokens * top_k * d_model * bytes * (ep-1)/ep`` per rank.
    ``tp``: the devices of one source, which split its rows (the expert-TP group: ``plan.expert_tp``).
    """
    if ep <= 1:
        return 0.0
    return capacity * n_experts * (ep - 1) / ep**2 * d_model * act_bytes / tp


def alltoall_bytes_dropless(rank_tokens, tokens: int, top_k: int, ep: int, d_model: int,
                            act_bytes: float, tp: int, etp: int | None = None) -> np.ndarray:
    """Bytes one device moves in a dropless all-to-all, for each entry of ``rank_tokens``.

    A TP group's device sends its ``tokens / tp`` (sequence parallelism) times ``top_k``
    assignments but the ``1/ep`` for its own experts, and receives ``(ep-1)/ep`` of its ``1/etp``
    share (``etp``: expert TP, default ``tp``) of the ``rank_tokens`` that land on its EP rank's
    experts; the larger of the two sets its time. Pass the busiest rank's tokens to get the bytes
    the collective waits for.
    """
    if ep <= 1:
        return np.zeros(np.shape(rank_tokens))
    send = tokens * top_k * (ep - 1) / ep
    recv = np.asarray(rank_tokens, dtype=float) * (ep - 1) / ep
    if etp is not None and etp != tp:
        recv = recv * (tp / etp)
    return np.maximum(send, recv) * d_model * act_bytes / tp
