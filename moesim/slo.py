"""A serving SLO: latency limits in seconds on summary percentiles, and ``--slo`` text parsing.

``parse_slo("ttft_p99=2,tpot_p99=0.2")`` -> ``Slo({"ttft_p99_s": 2.0, "tpot_p99_s": 0.2})``. Keys are the
serving summary's latency names without ``_s`` (:data:`SLO_METRICS`); every bad item is one InputError
line naming it. Pure logic; the capacity search under an SLO is :mod:`moesim.capacity`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from moesim.engine.serving.itl import ITL_STATS
from moesim.engine.serving.steady import LATENCIES, STATS
from moesim.errors import InputError

#: Metrics an SLO may limit (``--slo`` keys; the summary's names without ``_s``).
SLO_METRICS = tuple(f"{name}_{stat}" for name in LATENCIES for stat in STATS) + tuple(f"itl_{s}" for s in ITL_STATS)


@dataclass(frozen=True)
class Slo:
    """Limits in seconds keyed by summary name (``{"ttft_p99_s": 2.0}``); see :data:`SLO_METRICS`."""

    limits: dict[str, float]

    def __post_init__(self) -> None:
        if not self.limits:
            raise InputError("--slo: no limit given; e.g. ttft_p99=2,tpot_p99=0.2")
        for key, value in self.limits.items():
            if key.removesuffix("_s") not in SLO_METRICS or not key.endswith("_s"):
                hint = f" (a limit's key ends in _s here: {key}_s)" if key in SLO_METRICS else ""
                raise InputError(f"--slo: unknown metric {key!r}{hint}; allowed: {', '.join(SLO_METRICS)}")
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise InputError(f"--slo: {key.removesuffix('_s')}={value!r} must be a positive number of seconds")
        object.__setattr__(self, "limits", {k: float(v) for k, v in self.limits.items()})

    @property
    def text(self) -> str:
        return ",".join(f"{k.removesuffix('_s')}={v:g}" for k, v in self.limits.items())

    ttft_p99_s = property(lambda self: self.limits.get("ttft_p99_s"))
    tpot_p99_s = property(lambda self: self.limits.get("tpot_p99_s"))
    e2e_p99_s = property(lambda self: self.limits.get("e2e_p99_s"))

    def violations(self, values: dict[str, float]) -> list[str]:
        """``"ttft_p99 3.1 s > 2 s"`` for each limit ``values`` exceed (NaN: nothing to judge); a value just
        over its limit gets the digits that tell them apart (``"tpot_p99 0.2002 s > 0.2 s"``)."""
        return [f"{k.removesuffix('_s')} {_above(values[k], v)} s > {v:g} s" for k, v in self.limits.items()
                if values[k] > v]


def _above(value: float, limit: float) -> str:
    """``value`` at 3 significant digits, or as many more as it takes to print above ``limit``."""
    for digits in range(3, 16):
        text = f"{value:.{digits}g}"
        if float(text) > limit:
            return text
    return repr(value)


def parse_slo(text: str) -> Slo:
    """``"ttft_p99=2,tpot_p99=0.2"`` -> Slo; values in seconds (``0.2``, ``0.2s`` or ``200ms``)."""
    limits: dict[str, float] = {}
    for item in (text or "").split(","):
        item = item.strip()
        if not item:
            continue
        key, eq, value = (part.strip() for part in item.partition("="))
        if not eq or not key:
            raise InputError(f"--slo: {item!r} is not metric=seconds; e.g. ttft_p99=2,tpot_p99=0.2")
        key = key.lower().removesuffix("_s")
        if key not in SLO_METRICS:
            raise InputError(f"--slo: unknown metric {key!r}; allowed: {', '.join(SLO_METRICS)}")
        if f"{key}_s" in limits:
            raise InputError(f"--slo: {key} given twice")
        scale = 1e-3 if value.lower().endswith("ms") else 1.0
        try:
            seconds = float(value.lower().removesuffix("ms").removesuffix("s")) * scale
        except ValueError:
            raise InputError(f"--slo: {item!r} is not a number of seconds (e.g. 2, 0.2s, 200ms)") from None
        if not (math.isfinite(seconds) and seconds > 0):
            raise InputError(f"--slo: {item!r}: the limit must be a positive, finite number of seconds")
        limits[f"{key}_s"] = seconds
    return Slo(limits)
