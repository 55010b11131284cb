"""Keys a query sees under sliding-window or chunked attention (``model.local_attention``). Pure functions.

The op graph prices an attention kernel over ``q`` new tokens at the end of a context of ``kv``
tokens with the causal convention ``pairs = q (kv - q/2)`` (``ops.attention_core_op``), which is the
exact count of (query, key) pairs ``q kv - q (q - 1) / 2`` less ``q / 2``. A local layer's query at
0-based position ``p`` sees fewer keys:

* sliding window ``W``: ``min(p + 1, W)`` (Mistral, gpt-oss, Gemma: the last ``W`` tokens, itself
  included);
* chunked ``C``: ``p mod C + 1`` (Llama 4's ``attention_chunk_size``: the tokens before it in its own
  block of ``C``).

:func:`local_kv` turns ``(q, kv)`` into the context ``kv'`` for which the causal convention counts
exactly the local layer's pairs, ``q (kv' - q/2) = pairs_local - q/2``, so every attention price
(FLOPs, the KV bytes a decode reads, the kernel tables) applies unchanged: a decoding token
(``q = 1``) reads ``min(kv, W)`` keys, a first prompt chunk within the window stays ``kv' = q``.

Tiles: a FlashAttention kernel computes whole tiles of 128 queries x 128 keys, masked where the
mask says so. A causal layer's diagonal tile is half wasted, which the convention's ``q/2`` and the
kernels' measured rates (fitted to that convention) already hold; a sliding window adds a second
partly masked tile at its far edge, so prompt chunks and training see ``W + TILE/2`` keys a query
(:data:`TILE`; FlashAttention-2's forward tiles are 128 x 64-128 for head widths 64-128, Dao 2023,
arXiv:2307.08691 sec. 3.3), which matters for windows of a few tiles (gpt-oss: 128). Chunks start on
tile boundaries (8192 is a multiple of 128): no such waste. A decode reads the window's keys.

Approximate under context parallelism: a CP rank's ``(q, kv)`` (``engine/cp.py``) is mapped as if its
queries were the last ``q`` of ``kv`` keys, and the K/V ring is still priced whole.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import numpy as np

#: Query and key tile of a FlashAttention kernel (tokens): the far edge of a sliding window wastes half a tile.
TILE = 128


def keys_before(n, window: int, kind: str) -> np.ndarray:
    """(Query, key) pairs of the first ``n`` positions of a sequence (``n`` tokens, array-like):
    ``sum_{p < n} keys(p)``; full causal attention when ``window`` is 0."""
    n = np.asarray(n, dtype=float)
    if window <= 0:
        return n * (n + 1) / 2
    w = float(window)
    if kind == "chunked":
        whole, rest = np.floor(n / w), np.mod(n, w)
        return whole * w * (w + 1) / 2 + rest * (rest + 1) / 2
    inside = np.minimum(n, w)
    return inside * (inside + 1) / 2 + np.maximum(n - w, 0.0) * w


def local_kv(q, kv, window: int, kind: str) -> np.ndarray:
    """Context ``kv'`` at which the causal convention ``q (kv' - q/2)`` counts a local layer's pairs
    for ``q`` queries ending at context ``kv`` (both array-like, tokens; ``q <= kv``): a decode's
    (``q == 1``) window exactly, a prompt chunk's or a training row's with the sliding window's edge
    tile (``window + TILE/2``, see the module notes).

    Integer contexts come back as integers (the serving tables index by context): a decode's is exact,
    ``min(kv, W)`` or ``(kv - 1) mod C + 1``; a prompt chunk's is rounded to the nearest token (half a
    token of context, under ``q/2`` of the chunk's pairs)."""
    q_arr, kv_arr = np.asarray(q), np.asarray(kv)
    if kv_arr.dtype.kind in "iu" and np.logical_and.reduce(q_arr == 1, axis=None):
        return _decode_kv(kv_arr, window, kind)  # decodes only (every iteration of a settled batch)
    qf, kvf = q_arr.astype(float), kv_arr.astype(float)
    out = _kv_at(qf, kvf, window, kind)
    if kind == "sliding" and np.any(q_arr > 1):
        out = np.where(q_arr > 1, _kv_at(qf, kvf, window + TILE // 2, kind), out)
    if kv_arr.dtype.kind in "iu":
        return np.rint(out).astype(kv_arr.dtype)
    return out


def _decode_kv(kv: np.ndarray, window: int, kind: str) -> np.ndarray:
    """:func:`local_kv` of decoding tokens (``q == 1``) over integer contexts ``kv``: the keys the
    last position sees, ``min(kv, W)`` or ``(kv - 1) mod C + 1`` (what :func:`_kv_at` computes in
    floats for ``q = 1``, exactly)."""
    if window <= 0:
        return kv.copy()
    if kind == "chunked":
        return (kv - 1) % window + 1
    return np.minimum(kv, window)


def _kv_at(q: np.ndarray, kv: np.ndarray, window: int, kind: str) -> np.ndarray:
    """:func:`local_kv` for keys counted exactly under ``window``."""
    pairs = keys_before(kv, window, kind) - keys_before(kv - q, window, kind)
    return pairs / np.maximum(q, 1.0) + (q - 1) / 2


def kv_slots(ctx, window: int, n_local: int, n_layers: int) -> np.ndarray:
    """KV slots (one token's KV on every layer) a sequence of ``ctx`` tokens holds when its
    ``n_local`` of ``n_layers`` local layers keep only ``window`` tokens: ``ctx - n_local
    max(ctx - window, 0) // n_layers`` (int64, exact; non-decreasing, by 0 or 1 a token). A chunked
    layer is counted at its peak, one whole chunk (moesim does not free the past chunks' blocks)."""
    c = np.asarray(ctx, dtype=np.int64)
    return c - (n_local * np.maximum(c - window, 0)) // n_layers


def slot_map(m, mode: str) -> Callable | None:
    """``kv_slots`` for model ``m`` (a ``ModelSpec``) when its local layers keep only the window's KV
    (``workload.local_attention_mode: kv_window``); None where every token holds one slot."""
    la = m.local_attention
    if la is None or mode != "kv_window" or not m.n_local_layers:
        return None
    return partial(kv_slots, window=la.window, n_local=m.n_local_layers, n_layers=m.n_layers)
