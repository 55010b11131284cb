"""Random streams of the serving engine's sampled expert times, independent of event order.

Under skewed routing an iteration's expert time is one of a pool of load samples drawn for its
batch size (``IterationCost.sampled_experts_s``). Both the pool of a batch size and the sequence
of picks of each engine come from their own generator, keyed under the run's routing generator
without consuming it: a run gives the same result whether its engines advance one iteration per
event or several (``serving.window``), and whichever engine meets a batch size first.
"""

from __future__ import annotations

import numpy as np

#: Picks drawn per refill of an engine's stream.
PICK_BLOCK = 512
#: Picks kept across a refill (``give_back`` returns at most this many: a decode window's length).
KEEP = 256
_BASE_TAG = 1 << 40  # spawn-key tag of these streams under the routing generator
_PICK_TAG = 1 << 32  # spawn-key tag of the engines' pick streams (pools use small batch sizes)


class PoolStreams:
    """Generators for the pools (per routing epoch and batch size) and each engine's picks."""

    def __init__(self, rng: np.random.Generator, pool_size: int):
        ss = rng.bit_generator.seed_seq  # keys below it, apart from Generator.spawn's children
        self.base = np.random.SeedSequence(ss.entropy, spawn_key=(*ss.spawn_key, _BASE_TAG))
        self.pool_size = int(pool_size)
        self._picks: dict[int, tuple[np.ndarray, int]] = {}
        self._gens: dict[int, np.random.Generator] = {}
        self.taken: dict[int, int] = {}  # picks each engine holds (taken less given back)

    def _child(self, *key: int) -> np.random.Generator:
        return np.random.default_rng(np.random.SeedSequence(self.base.entropy,
                                                            spawn_key=(*self.base.spawn_key, *key)))

    def pool_rng(self, epoch: int, tokens: int, kind: int = 0) -> np.random.Generator:
        """The generator a pool of ``tokens``-token batches draws from (``epoch``: routing changes;
        ``kind``: which pool, 0 whole batches, 1 two-batch overlap's halves)."""
        return self._child(epoch, tokens, kind)

    def take(self, engine: int, k: int = 1) -> np.ndarray:
        """The next ``k`` picks (ints in ``[0, pool_size)``) of ``engine``'s stream."""
        block, pos = self._picks.get(engine, (np.zeros(0, np.int64), 0))
        if pos + k > block.size:  # refill, keeping the last picks taken so give_back can return them
            keep = min(pos, KEEP)
            fresh = self._picks_gen(engine).integers(self.pool_size, size=max(PICK_BLOCK, k))
            block, pos = np.concatenate([block[pos - keep:], fresh]), keep
        self._picks[engine] = (block, pos + k)
        self.taken[engine] = self.taken.get(engine, 0) + k
        return block[pos:pos + k]

    def give_back(self, engine: int, k: int) -> None:
        """Return the last ``k`` (at most ``KEEP``) picks of ``engine``: its next ``take`` repeats them."""
        if k > 0:
            block, pos = self._picks[engine]
            self._picks[engine] = (block, pos - k)
            self.taken[engine] -= k

    def _picks_gen(self, engine: int) -> np.random.Generator:
        if engine not in self._gens:
            self._gens[engine] = self._child(_PICK_TAG + engine)
        return self._gens[engine]
