"""The iteration records of one pool's engines: one row per iteration, in ``ITERATION_COLUMNS``.

A decode window's iterations share every field but their start, end, KV and dropped tokens, so a
window is kept as one row of the shared fields plus those four lists (the first pipeline stage
frees at the end: ``pp == 1``), and the rows are built with numpy once the run ends. Each engine
keeps its own records: they arrive in time order, and engines are numbered replica by replica,
slot by slot, so putting the engines one after another gives the (replica, slot, start) order the
metrics read (what a stable sort would give) without sorting.
"""

from __future__ import annotations

import itertools

import numpy as np

from moesim.engine.serving.metrics import ITERATION_COLUMNS

_C = ITERATION_COLUMNS
#: The columns a window's iterations do not share (filled per iteration), and where each goes.
_VARYING = {"start_s": _C.index("start_s"), "end_s": _C.index("end_s"), "kv_tokens": _C.index("kv_tokens"),
            "dropped_slots": _C.index("dropped_slots"), "stage0_end_s": _C.index("stage0_end_s")}


class IterationLog:
    """Per-engine iteration records, as blocks: one iteration (``add``) or a window (``add_window``)."""

    def __init__(self, n_engines: int):
        self._rows: list[list[tuple]] = [[] for _ in range(n_engines)]  # each block's shared fields
        self._counts: list[list[int]] = [[] for _ in range(n_engines)]  # iterations per block
        self._windowed: list[list[bool]] = [[] for _ in range(n_engines)]  # block is a window
        # a window's own fields: its start, and per iteration its end, KV and drops
        self._start: list[list[float]] = [[] for _ in range(n_engines)]
        self._end: list[list[np.ndarray]] = [[] for _ in range(n_engines)]
        self._kv: list[list[np.ndarray]] = [[] for _ in range(n_engines)]
        self._dropped: list[list[float]] = [[] for _ in range(n_engines)]

    def add(self, e: int, record: tuple) -> None:
        """One iteration of engine ``e``: ``record`` holds every field, in ``ITERATION_COLUMNS`` order."""
        self._rows[e].append(record)
        self._counts[e].append(1)
        self._windowed[e].append(False)

    def add_window(self, e: int, shared: tuple, start_s: float, ends_s: np.ndarray, kv_tokens: np.ndarray,
                   dropped: list) -> None:
        """``ends_s.size`` decode iterations of engine ``e`` in a row, the first starting at
        ``start_s``, each the next one's start; ``shared``: the other fields (in
        ``ITERATION_COLUMNS`` order; the varying ones are overwritten); ``kv_tokens`` and
        ``dropped``: one per iteration. The first pipeline stage frees as each ends (``pp == 1``).
        The arrays are kept, not copied."""
        self._rows[e].append(shared)
        self._counts[e].append(ends_s.size)
        self._windowed[e].append(True)
        self._start[e].append(start_s)
        self._end[e].append(ends_s)
        self._kv[e].append(kv_tokens)
        self._dropped[e].extend(dropped)

    def array(self) -> np.ndarray:
        """``(iterations, len(ITERATION_COLUMNS))`` floats, engine by engine, each in time order (a
        column-major view: each column is contiguous)."""
        chain = itertools.chain.from_iterable
        n_blocks = sum(map(len, self._rows))
        shared = np.fromiter(chain(chain(self._rows)), float, n_blocks * len(_C)).reshape(n_blocks, len(_C))
        counts = np.fromiter(chain(self._counts), np.int64, n_blocks)
        cols = np.repeat(shared.T, counts, axis=1)
        windowed = np.fromiter(chain(self._windowed), bool, n_blocks)
        rows = np.flatnonzero(np.repeat(windowed, counts))  # the windows' iterations
        if rows.size:
            ends = np.concatenate(list(chain(self._end)))
            # each iteration starts as the one before it ends, a window's first at the window's start
            starts = np.empty_like(ends)
            starts[1:] = ends[:-1]
            sizes = counts[windowed]
            starts[np.cumsum(sizes) - sizes] = np.fromiter(chain(self._start), float, sizes.size)
            cols[_VARYING["start_s"], rows] = starts
            cols[_VARYING["end_s"], rows] = ends
            cols[_VARYING["stage0_end_s"], rows] = ends
            cols[_VARYING["kv_tokens"], rows] = np.concatenate(list(chain(self._kv)))
            cols[_VARYING["dropped_slots"], rows] = np.fromiter(chain(self._dropped), float, rows.size)
        return cols.T
