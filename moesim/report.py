"""Rich tables from accounting summaries and simulation results (no computation of its own)."""

from __future__ import annotations

import math
from typing import Any

from rich.table import Table

# Units shown next to a key, chosen by its suffix (names carry their units).
_SUFFIX_UNITS = (("_per_s", "/s"), ("_gib", "GiB"), ("_s", "s"), ("_usd", "USD"), ("_days", "days"),
                 ("_gbps", "GB/s"), ("_j_per_token", "J/token"), ("usd_per_mtok", "USD/1M tok"),
                 ("usd_per_1k_tokens", "USD/1K tok"), ("usd_per_step", "USD"), ("_w", "W"))


def fmt_value(key: str, value: Any) -> str:
    """Human formatting: big counts with B/T suffixes, seconds with sensible precision."""
    if isinstance(value, bool) or value is None:
        return {True: "yes", False: "NO", None: "-"}[value]
    if isinstance(value, int) and not key.endswith("params"):
        return f"{value:,}"
    if isinstance(value, (int, float)):
        v = float(value)
        if math.isnan(v):
            return "n/a"  # e.g. run_time_days without workload.total_tokens
        if abs(v) < 1e-12:
            v = 0.0  # float residue of a difference (a bubble of 8.9e-16 s is no bubble)
        if key.endswith("params"):
            return f"{v / 1e12:.3f} T" if v >= 1e12 else f"{v / 1e9:.2f} B"
        if "tflops" in key:
            return f"{v:,.1f} TFLOP/s"
        if "flops" in key:
            return f"{v / 1e9:,.1f} GFLOP"
        if key.endswith("_bytes") or "bytes_per" in key:
            return f"{v / 2**20:,.2f} MiB" if v >= 2**20 else f"{v / 1024:,.1f} KiB"
        if key.endswith("fraction") or key == "mfu" or key.endswith("utilisation"):
            return f"{100 * v:.2f} %"
        unit = next((u for s, u in _SUFFIX_UNITS if key.endswith(s)), "")
        if abs(v) >= 1e6:
            text = f"{v:,.0f}"
        elif abs(v) >= 100:
            text = f"{v:,.1f}"
        elif abs(v) >= 0.01 or v == 0:
            text = f"{v:.3f}"
        else:
            text = f"{v:.3e}"
        return f"{text} {unit}".strip()
    return str(value)


def summary_table(title: str, summary: dict[str, Any], skip: tuple[str, ...] = ()) -> Table:
    """Two-column table of a flat summary; nested mappings become indented rows."""
    t = Table(title=title, show_header=True, header_style="bold")
    t.add_column("quantity")
    t.add_column("value", justify="right")
    for key, value in summary.items():
        if key in skip:
            continue
        if isinstance(value, dict):
            for sub, v in value.items():
                t.add_row(f"  {key}.{sub}", fmt_value(sub, v))
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
