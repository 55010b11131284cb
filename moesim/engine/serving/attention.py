"""One serving iteration's attention kernels, with decode sequences' seconds tabulated by context.

A continuous-batching iteration runs one attention kernel per layer over every scheduled sequence
(the op graph's ``attn_core`` op; MLA models run two: absorbed attention for decodes, multi-head
attention over up-projected K/V for prefill chunks). Where the cost model prices a batch as the sum
of its sequences plus one launch (``CostModel.attention_seq_s`` is not None: every GPU profile
and the datasheet), a decoding sequence's seconds depend only on its context, so they are
tabulated once per context length: an iteration then costs a table lookup and a sum instead of a
vectorised roofline, and a run of ``k`` decode iterations (``decode_window_s``) one lookup of a
``(k, n)`` matrix. Cache-aware profiles (a CPU's KV read slows as the batch's working set outgrows
the cache) price the whole batch as before.

:class:`ModelAttention` adds the layers up: every layer full, or ``model.local_attention``'s layers at
their window's keys beside the full ones.

Units: seconds of one layer (``ModelAttention``: of all layers); token counts are ints (contexts index
the table).
"""

from __future__ import annotations

import numpy as np

from moesim.costmodel import CostModel
from moesim.engine.local_attention import local_kv
from moesim.engine.op_types import Op
from moesim.engine.ops import op_s


class BatchAttention:
    """Seconds of one layer's attention over a batch: ``batch_s`` per iteration, ``decode_window_s``
    for ``k`` decode-only iterations in a row.

    ``decode_op``: the kernel decodes run (the op graph's ``attn_core`` op); ``prefill_op``: a second
    kernel for prefill chunks (MLA's multi-head form), or None when one kernel runs every sequence.
    ``max_context``: the longest context tabulated (longer ones are priced directly).
    """

    def __init__(self, cm: CostModel, decode_op: Op, prefill_op: Op | None, max_context: int,
                 max_chunk: int = 0):
        self.cm, self.decode_op, self.prefill_op = cm, decode_op, prefill_op
        self.launch_s = float(cm.attention_launch_s)
        ctx = np.arange(int(max_context) + 1, dtype=float)
        table = self._seq_s(decode_op, np.ones_like(ctx), ctx)
        #: seconds of one decoding sequence by context (tokens after this iteration); None: not separable
        self.decode_table = None if table is None else np.asarray(table, dtype=float)
        # seconds of a prompt's first chunk (no context before it: kv == q) by length, up to ``max_chunk``
        chunk = np.arange(int(max_chunk) + 1, dtype=float)
        first = None if table is None else self._seq_s(prefill_op or decode_op, chunk, chunk)
        self.first_chunk_table = None if first is None else np.asarray(first, dtype=float)
        # every tabulated context costs time: a window's rows (n > 0 sequences) never sum to 0
        self._table_positive = self.decode_table is not None and bool((self.decode_table > 0).all())
        self._steps = np.arange(0)[:, None]  # (k, 1) iteration offsets of a window, grown on demand

    def _seq_s(self, op: Op, q: np.ndarray, kv: np.ndarray):
        a = op.args
        return self.cm.attention_seq_s(q, kv, a["n_heads"], a["head_dim"], a["kv_heads"], a["dtype"],
                                       kv_bytes=a.get("kv_bytes"))

    def _core_sum(self, op: Op, q: np.ndarray, kv: np.ndarray) -> float:
        """Summed per-sequence seconds of ``op`` over the given sequences (no launch)."""
        if q.size == 0:
            return 0.0
        if kv.dtype.kind in "iu" and np.logical_and.reduce(q == 1) and np.maximum.reduce(kv) < self.decode_table.size:
            return float(np.add.reduce(self.decode_table[kv]))
        if kv.dtype.kind in "iu" and op is (self.prefill_op or self.decode_op):  # prompts' first chunks
            if q.size == 1:
                first = self._first_chunk_s(int(q[0]), int(kv[0]))
                if first is not None:
                    return first
            elif (q == kv).all() and q.max() < self.first_chunk_table.size:
                return float(self.first_chunk_table[q].sum())
        return float(np.asarray(self._seq_s(op, q.astype(float), kv.astype(float))).sum())

    def _first_chunk_s(self, q: int, kv: int) -> float | None:
        """Seconds of one prompt's first chunk of ``q`` tokens (``kv == q``: no context before it)
        from the table, or None where the table does not hold it."""
        return float(self.first_chunk_table[q]) if q == kv and q < self.first_chunk_table.size else None

    def _decode_sum(self, op: Op, kv: np.ndarray) -> float:
        """:meth:`_core_sum` of sequences that each decode one token (``q == 1``), over contexts ``kv``."""
        if kv.size == 0:
            return 0.0
        if kv.dtype.kind in "iu" and np.maximum.reduce(kv) < self.decode_table.size:  # (ufunc reductions:
            return float(np.add.reduce(self.decode_table[kv]))  # this runs once per iteration)
        return float(np.asarray(self._seq_s(op, np.ones(kv.size), kv.astype(float))).sum())

    def batch_s(self, q_tokens: np.ndarray, kv_tokens: np.ndarray) -> float:
        """One layer's attention seconds for a batch: ``q_tokens[i]`` new tokens of sequence ``i``
        attend over ``kv_tokens[i]`` (its context after this iteration); both ``(n,)`` (the table
        serves integer contexts; floats are priced directly)."""
        if self.decode_table is None:
            return self._batch_direct(q_tokens, kv_tokens)
        q, kv = np.asarray(q_tokens), np.asarray(kv_tokens)
        if self.prefill_op is None:
            dec = q == 1
            if dec.all():
                secs = self._decode_sum(self.decode_op, kv)
            else:
                secs = self._decode_sum(self.decode_op, kv[dec]) + self._core_sum(self.decode_op, q[~dec], kv[~dec])
            return secs + self.launch_s if secs > 0 else 0.0
        pre = q > 1
        total = 0.0
        for op, sel in ((self.decode_op, ~pre), (self.prefill_op, pre)):
            if sel.any():
                secs = self._core_sum(op, q[sel], kv[sel])
                total += secs + self.launch_s if secs > 0 else 0.0
        return total

    def with_prefill_s(self, decode_kv: np.ndarray, q, kv) -> float | None:
        """:meth:`batch_s` of ``decode_kv.size`` decoding sequences (contexts ``decode_kv``) followed
        by prefill chunks of ``q > 1`` tokens each over ``kv`` (ints for one chunk, arrays for
        several), from the same lookups in the same order (the first iteration of a window that
        admits requests); None where only ``batch_s`` applies."""
        one = isinstance(q, int)
        if self.decode_table is None or (q <= 1 if one else int(q.min()) <= 1) or decode_kv.dtype.kind not in "iu":
            return None
        pre = self._first_chunk_s(q, kv) if one else None
        if pre is None:
            pre = self._core_sum(self.prefill_op or self.decode_op, np.atleast_1d(q), np.atleast_1d(kv))
        if self.prefill_op is None:  # one kernel: the decodes' sum, then the chunk, then one launch
            secs = self._decode_sum(self.decode_op, decode_kv) + pre
            return secs + self.launch_s if secs > 0 else 0.0
        total = 0.0
        if decode_kv.size:
            dec = self._core_sum(self.decode_op, np.ones(decode_kv.size, np.int64), decode_kv)
            total += dec + self.launch_s if dec > 0 else 0.0
        total += pre + self.launch_s if pre > 0 else 0.0
        return total

    def _batch_direct(self, q: np.ndarray, kv: np.ndarray) -> float:
        """The cost model's batched kernel over every sequence (working-set-coupled profiles)."""
        if self.prefill_op is None:
            return float(op_s(self.cm, self.decode_op, q_tokens=q, kv_tokens=kv))
        pre = q > 1
        return sum(float(op_s(self.cm, op, q_tokens=q[sel], kv_tokens=kv[sel]))
                   for op, sel in ((self.decode_op, ~pre), (self.prefill_op, pre)) if sel.any())

    def decode_window_s(self, context: np.ndarray, k: int, keys=None) -> np.ndarray:
        """``(k,)`` seconds of one layer for ``k`` decode-only iterations in a row: in iteration
        ``j`` sequence ``i`` attends over ``context[i] + j`` tokens, or over ``keys(context[i] + j)``
        (an elementwise map of integer contexts: a local layer's window). Equal to ``batch_s`` of each
        iteration (same lookups, same summation order)."""
        context = np.asarray(context)
        if (self.decode_table is None or context.size == 0 or context.dtype.kind not in "iu"
                or int(np.maximum.reduce(context)) + k > self.decode_table.size):
            ctx = context[None, :] + np.arange(k)[:, None]
            ones = np.ones(ctx.shape[1], np.int64)
            return np.array([self.batch_s(ones, row if keys is None else keys(row)) for row in ctx])
        if k > self._steps.shape[0]:
            self._steps = np.arange(max(k, 2 * self._steps.shape[0]))[:, None]
        ctx = context[None, :] + self._steps[:k]
        secs = np.add.reduce(self.decode_table[ctx if keys is None else keys(ctx)], axis=1)
        if self._table_positive:  # (this runs once per decode window: spare the mask)
            return secs + self.launch_s
        return np.where(secs > 0, secs + self.launch_s, 0.0)


class ModelAttention:
    """Every layer's attention of one iteration: :class:`BatchAttention` once for the full layers and
    once at the window's keys for ``model.local_attention``'s layers (``local_attention.local_kv``).

    ``local``: (local layers, window, kind) or None (every layer full); ``local_decode``: decodes of
    the local layers attend within the window too (False: TensorRT-LLM's chunked attention, prompt
    chunks only). Each method sums the local layers' seconds, then the full layers', in one order, so
    a decode window equals its iterations priced one by one.
    """

    def __init__(self, layer: BatchAttention, n_layers: int, local: tuple[int, int, str] | None = None,
                 local_decode: bool = True):
        self.layer, self.n_layers, self.local_decode = layer, n_layers, local_decode
        self.local = None if local is None or not local[0] else local
        self.n_full = n_layers - (self.local[0] if self.local else 0)

    def _keys(self, q, kv):
        """The local layers' contexts for ``q`` new tokens over ``kv`` (decodes unchanged unless
        ``local_decode``)."""
        _, window, kind = self.local
        out = local_kv(q, kv, window, kind)
        return out if self.local_decode else np.where(np.asarray(q) == 1, kv, out)

    def batch_s(self, q_tokens: np.ndarray, kv_tokens: np.ndarray) -> float:
        """All layers' attention seconds for a batch (:meth:`BatchAttention.batch_s` per layer kind)."""
        if self.local is None:
            return self.n_layers * self.layer.batch_s(q_tokens, kv_tokens)
        secs = self.local[0] * self.layer.batch_s(q_tokens, self._keys(q_tokens, kv_tokens))
        return secs + self.n_full * self.layer.batch_s(q_tokens, kv_tokens) if self.n_full else secs

    def decode_window_s(self, context: np.ndarray, k: int) -> np.ndarray:
        """``(k,)`` all layers' seconds of ``k`` decode-only iterations (:meth:`batch_s` of each)."""
        if self.local is None:
            return self.n_layers * self.layer.decode_window_s(context, k)
        n_local, window, kind = self.local
        full = self.layer.decode_window_s(context, k) if self.n_full or not self.local_decode else None
        local = (self.layer.decode_window_s(context, k, keys=lambda c: local_kv(1, c, window, kind))
                 if self.local_decode else full)
        return n_local * local + self.n_full * full if self.n_full else n_local * local

    def with_prefill_s(self, context: np.ndarray, q_tokens, kv_tokens) -> float | None:
        """All layers' :meth:`BatchAttention.with_prefill_s`, or None where only :meth:`batch_s` applies."""
        if self.local is None:
            one = self.layer.with_prefill_s(context, q_tokens, kv_tokens)
            return None if one is None else self.n_layers * one
        n_local, window, kind = self.local
        kv_local = local_kv(q_tokens, kv_tokens, window, kind)
        local = self.layer.with_prefill_s(local_kv(1, context, window, kind) if self.local_decode else context,
                                          q_tokens, int(kv_local) if isinstance(q_tokens, int) else kv_local)
        full = self.layer.with_prefill_s(context, q_tokens, kv_tokens) if self.n_full else 0.0
        if local is None or full is None:
            return None
        return n_local * local + self.n_full * full if self.n_full else n_local * local
