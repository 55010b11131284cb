"""One formatting rule per unit, for every human table moesim prints (summary, sweep, plan).

The unit of a key comes from the metric registry (:func:`moesim.metrics.unit_of`); the rule for
the unit lives here, once. No rule uses scientific notation: costs are dollars with three
significant digits (``$0.00793 / 1K tok``), fractions are percentages (``4.96 %``, ``0.049 %``),
token counts are whole tokens (``534,135``: a KV cache holds no half token), times, rates and
sizes keep three decimals down to 0.01 and two significant digits below. ``--json`` output never
passes through here: it stays numeric.
"""

from __future__ import annotations

import math
from typing import Any

from moesim.metrics import direction_of, unit_of

__all__ = ["fmt_number", "fmt_value", "time_unit", "unit_text"]

#: Units written in dollars: what follows the number (the "$" goes in front).
_USD_SUFFIX = {"USD": "", "USD/1M tokens": " / 1M tok", "USD/1K tokens": " / 1K tok", "USD/device-hour": " / device-hour"}
#: How a unit is written after a number, where not as itself ("" for none: counts, text).
_UNIT_TEXT = {"/s": "/s", "tokens/s": "/s", "requests/s": "/s", "count": "", "index": "", "tokens": "",
              "sequences": "", "text": "", "bool": ""}
#: Whole-number units: a fractional value is cut to the whole units it holds.
_WHOLE = ("tokens",)


def time_unit(seconds: float) -> tuple[float, str]:
    """(scale, unit) to show a step's parts in: seconds where the step (``seconds``) takes one or more, else
    milliseconds (``seconds * scale`` is then in ``unit``)."""
    return (1.0, "s") if seconds >= 1.0 else (1e3, "ms")


def unit_text(unit: str) -> str:
    """The short unit a table header shows for ``unit`` ("$ / 1M tok", "%", "GiB"; "" for none)."""
    if unit in _USD_SUFFIX:
        return "$" + _USD_SUFFIX[unit]
    if unit == "fraction":
        return "%"
    return _UNIT_TEXT.get(unit, unit)


def plain(v: float) -> str:
    """A number without a unit and without scientific notation: thousands separators from 100,
    three decimals from 0.01, two significant digits below (0.0077), 0.000 for zero."""
    a = abs(v)
    if a >= 1e6:
        return f"{v:,.0f}"
    if a >= 100:
        return f"{v:,.1f}"
    if a >= 0.01 or a == 0:
        return f"{v:.3f}"
    decimals = 1 - math.floor(math.log10(a))  # two significant digits
    return f"{v:.{decimals}f}" if decimals <= 12 else f"{v:.1e}"  # below 1e-12: no fixed form reads


def usd(v: float) -> str:
    """Dollars: whole dollars from $1,000, cents from $1, three significant digits below
    ($0.135, $0.180, $0.00793, $0.0000648: a column of costs keeps its digits aligned)."""
    a = abs(v)
    sign = "-" if v < 0 else ""
    if a >= 1000:
        return f"{sign}${a:,.0f}"
    if a >= 1 or a == 0:
        return f"{sign}${a:,.2f}"
    decimals = max(2, 2 - math.floor(math.log10(a)))  # three significant digits
    return f"{sign}${a:.{decimals}f}"


def percent(v: float) -> str:
    """A fraction as a percentage: two decimals, two significant digits under 0.1 % (0.049 %), and in
    powers of ten under 0.0001 % (6.0e-09 %, not a row of zeros)."""
    p = 100 * v
    if p == 0 or abs(p) >= 0.1:
        return f"{p:.2f} %"
    if abs(p) < 1e-4:
        return f"{p:.1e} %"
    return f"{p:.{1 - math.floor(math.log10(abs(p)))}f} %"


def fmt_number(v: float, unit: str, with_unit: bool = True) -> str:
    """``v`` (finite) by the rule of ``unit``; ``with_unit`` False leaves the unit to a header
    (a fraction keeps its "%" and a whole count its separators either way)."""
    if unit in _USD_SUFFIX:
        return usd(v) + _USD_SUFFIX[unit] if with_unit else usd(v).replace("$", "")
    if unit == "fraction":
        return percent(v)
    if unit in _WHOLE:
        return f"{math.floor(v + 1e-9):,}"
    if unit == "params":
        return f"{v / 1e12:.3f} T" if v >= 1e12 else f"{v / 1e9:.2f} B"
    if unit == "TFLOP/s":
        return f"{v:,.1f} TFLOP/s" if with_unit else f"{v:,.1f}"
    if unit == "FLOP":
        return f"{v / 1e9:,.1f} GFLOP"
    if unit == "bytes/param":
        return f"{v:.4g} B ({8 * v:g} bits)"  # quantized weights: scales included
    if unit.startswith("bytes"):  # the binary unit that keeps the figure under ~10,000
        if v >= 2**40:
            return f"{v / 2**40:,.2f} TiB"
        if v >= 10 * 2**30:
            return f"{v / 2**30:,.2f} GiB"
        return f"{v / 2**20:,.2f} MiB" if v >= 2**20 else f"{v / 1024:,.1f} KiB"
    if unit in ("count", "index", "sequences") and float(v).is_integer():
        return f"{int(v):,}"
    if unit == "s" and with_unit and 1e-5 <= abs(v) < 0.0995:  # a TPOT of 0.038 s reads 37.5 ms (3 digits)
        return f"{v * 1e3:#.3g}".rstrip(".") + " ms"
    text = plain(v)
    return f"{text} {_UNIT_TEXT.get(unit, unit)}".strip() if with_unit else text


def fmt_value(key: str, value: Any, with_unit: bool = True) -> str:
    """A summary value for a table, by the unit of ``key`` in the metric registry: a boolean as
    yes/no, the bad answer in capitals (``fits`` NO, ``overloaded`` YES: the metric's direction says
    which is bad), "-" for None, "n/a" for NaN, the number by its unit's rule, text as itself."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        bad = direction_of(key) == "min"  # True is the bad answer of a lower-is-better flag
        return ("YES" if bad else "yes") if value else ("no" if bad else "NO")
    unit = unit_of(key)
    if isinstance(value, int) and unit not in ("params", "bytes/param") and not unit.startswith("bytes") \
            and unit not in _USD_SUFFIX and unit != "fraction":
        return f"{value:,}" + (f" {_UNIT_TEXT.get(unit, unit)}".rstrip() if with_unit and unit else "")
    if isinstance(value, (int, float)):
        v = float(value)
        if math.isnan(v):
            return "n/a"  # e.g. run_time_days without workload.total_tokens
        if math.isinf(v):
            return "inf"
        if abs(v) < 1e-12:
            v = 0.0  # float residue of a difference (a bubble of 8.9e-16 s is no bubble)
        return fmt_number(v, unit, with_unit)
    return str(value)


def swept_mapping(value: Any) -> dict | None:
    """A swept value that is a mapping, as one: a dict, or the compact JSON the results keep of one
    (``'{"dp":8,"tp":1}'``); None for anything else."""
    import json

    if isinstance(value, str) and value.startswith("{"):
        try:
            value = json.loads(value)
        except ValueError:
            return None
    return value if isinstance(value, dict) else None


def swept_text(value: Any) -> str:
    """A swept value as a table cell or plot tick: a mapping (:func:`swept_mapping`) as ``dp=8 tp=1``, its
    ``preset`` first, nested mappings inline; anything else as ``str``."""
    import json

    mapping = swept_mapping(value)
    if mapping is None:
        return str(value)
    items = sorted(mapping.items(), key=lambda kv: kv[0] != "preset")  # the preset first: what the rest changes
    return " ".join(f"{k}={{{swept_text(v)}}}" if isinstance(v, dict) else
                    f"{k}={json.dumps(v) if isinstance(v, list) else v}" for k, v in items)
