"""Close names for a mistyped one: the "did you mean ...?" of every one-line error.

difflib alone misses names typed with their words in another order or with a word left out
(``usd_run`` for ``run_cost_usd``, ``memory_peak`` for ``peak_memory_gib``), which is how metric and
field names are usually misremembered; names that hold every word typed are offered first.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from difflib import get_close_matches

_SPLIT = re.compile(r"[._\-\s]+")


def words(name: str) -> list[str]:
    """The lower-case words of a name split at ``_``, ``.``, ``-`` and spaces."""
    return [w for w in _SPLIT.split(name.lower()) if w]


def close_names(name: str, candidates: Iterable[str], n: int = 3, cutoff: float = 0.6) -> list[str]:
    """Up to ``n`` of ``candidates`` most like ``name``, best first: those holding every word of
    ``name`` (fewest other words first), then difflib's matches at ``cutoff``. ``name`` itself is
    never offered."""
    pool = [c for c in dict.fromkeys(candidates) if c != name]
    typed = set(words(name))
    holding = sorted((c for c in pool if typed and typed <= set(words(c))), key=lambda c: len(words(c)))
    similar = get_close_matches(name, pool, n=n, cutoff=cutoff)
    return list(dict.fromkeys([*holding, *similar]))[:n]


def did_you_mean(name: str, candidates: Iterable[str], n: int = 3, cutoff: float = 0.6, joiner: str = ", ") -> str:
    """``"did you mean a, b?"`` for the :func:`close_names` of ``name`` (joined by ``joiner``), or "" when
    none is close: the hint every one-line error about a mistyped name ends with."""
    close = close_names(name, candidates, n=n, cutoff=cutoff)
    return f"did you mean {joiner.join(close)}?" if close else ""
