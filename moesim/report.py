"""Rich tables from accounting summaries and simulation results (no computation of its own)."""

from __future__ import annotations

import math
from typing import Any

from rich.table import Table

from moesim.metrics import unit_of

#: How a unit is written after a number, where not as itself ("" for none: counts, tokens, text).
_UNIT_TEXT = {"/s": "/s", "tokens/s": "/s", "requests/s": "/s", "USD/1M tokens": "USD/1M tok",
              "USD/1K tokens": "USD/1K tok", "count": "", "tokens": "", "sequences": "", "text": "",
              "bool": ""}


def fmt_value(key: str, value: Any) -> str:
    """Human formatting by the key's unit (:mod:`moesim.metrics`): big counts with B/T suffixes,
    bytes in KiB/MiB, fractions in %, seconds with sensible precision."""
    if isinstance(value, bool) or value is None:
        return {True: "yes", False: "NO", None: "-"}[value]
    unit = unit_of(key)
    if isinstance(value, int) and unit != "params":
        return f"{value:,}"
    if isinstance(value, (int, float)):
        v = float(value)
        if math.isnan(v):
            return "n/a"  # e.g. run_time_days without workload.total_tokens
        if abs(v) < 1e-12:
            v = 0.0  # float residue of a difference (a bubble of 8.9e-16 s is no bubble)
        if unit == "params":
            return f"{v / 1e12:.3f} T" if v >= 1e12 else f"{v / 1e9:.2f} B"
        if unit == "TFLOP/s":
            return f"{v:,.1f} TFLOP/s"
        if unit == "FLOP":
            return f"{v / 1e9:,.1f} GFLOP"
        if unit == "bytes/param":
            return f"{v:.4g} B ({8 * v:g} bits)"  # quantized weights: scales included
        if unit.startswith("bytes"):
            return f"{v / 2**20:,.2f} MiB" if v >= 2**20 else f"{v / 1024:,.1f} KiB"
        if unit == "fraction":
            return f"{100 * v:.2f} %"
        if abs(v) >= 1e6:
            text = f"{v:,.0f}"
        elif abs(v) >= 100:
            text = f"{v:,.1f}"
        elif abs(v) >= 0.01 or v == 0:
            text = f"{v:.3f}"
        else:
            text = f"{v:.3e}"
        return f"{text} {_UNIT_TEXT.get(unit, unit)}".strip()
    return str(value)


def summary_table(title: str, summary: dict[str, Any], skip: tuple[str, ...] = ()) -> Table:
    """Two-column table of a flat summary; nested mappings become indented rows."""
    t = Table(title=title, show_header=True, header_style="bold")
    t.add_column("quantity")
    t.add_column("value", justify="right")
    for key, value in summary.items():
        if key in skip or value == "":  # an empty note (e.g. precision_note of a native dtype) is no row
            continue
        if isinstance(value, dict):
            for sub, v in value.items():
                t.add_row(f"  {key}.{sub}", fmt_value(f"{key}.{sub}", v))
        else:
            t.add_row(key, fmt_value(key, value), style="red" if value is False else None)
    return t


def presets_table(models: dict[str, dict], hardware: dict[str, dict]) -> tuple[Table, Table]:
    """Tables listing model and hardware presets."""
    from moesim.accounting import param_counts
    from moesim.schemas import ModelSpec

    mt = Table(title="Model presets", header_style="bold")
    for col in ("name", "layers", "d_model", "experts", "top_k", "total", "active"):
        mt.add_column(col, justify="left" if col == "name" else "right")
    for name, data in models.items():
        m = ModelSpec(**data)
        p = param_counts(m)
        mt.add_row(name, str(m.n_layers), str(m.d_model), str(m.n_experts), str(m.top_k),
                   fmt_value("total_params", p.total), fmt_value("active_params", p.active))
    ht = Table(title="Hardware presets", header_style="bold")
    for col in ("name", "device", "bf16 TFLOP/s", "mem GB/s", "mem GiB", "dev/node", "$/h"):
        ht.add_column(col, justify="left" if col in ("name", "device") else "right")
    for name, data in hardware.items():
        d = data["device"]
        peak = d["peak_tflops"].get("bf16", d["peak_tflops"].get("fp32"))
        ht.add_row(name, d["name"], f"{peak:g}", f"{d['mem_bw_gbps']:g}", f"{d['mem_gib']:g}",
                   str(data["node"]["devices_per_node"]), f"{d['usd_per_hour']:.2f}")
    return mt, ht
