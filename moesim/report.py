"""Rich tables from accounting summaries and simulation results (no computation of its own)."""

from __future__ import annotations

from typing import Any

from rich.table import Table

from moesim.formatting import fmt_value, time_unit
from moesim.metrics import direction_of
from moesim.presets.hardware import display_name

__all__ = ["decode_step_view", "presets_table", "summary_table", "train_step_view"]


#: Keys whose value at their default says nothing worth a row (a device that sustains its whole benchmarked rate).
QUIET_AT = {"sustained_compute_fraction": 1.0}
#: Groups of keys left out together when every one is at its idle value: a feature the run did not use
#: (no speculative decoding: one token a step, nothing accepted; no expert rebalancing).
QUIET_GROUPS = ({"spec_tokens_per_step": 1.0, "spec_acceptance": 0.0},
                {"eplb_rebalances": 0, "eplb_moved_gib": 0.0, "eplb_stall_s": 0.0})


def quiet_keys(summary: dict[str, Any]) -> set[str]:
    """The keys of ``summary`` :func:`summary_table` leaves out: :data:`QUIET_AT` at that value, and
    each :data:`QUIET_GROUPS` group whose keys are all present at their idle values."""
    out = {k for k, v in QUIET_AT.items() if summary.get(k, object()) == v}
    for group in QUIET_GROUPS:
        if all(k in summary and summary[k] == v for k, v in group.items()):
            out |= set(group)
    return out


def summary_table(title: str, summary: dict[str, Any], skip: tuple[str, ...] = ()) -> Table:
    """Two-column table of a flat summary; nested mappings become indented rows. :func:`quiet_keys` (a
    default, a feature not used) are left out, as empty notes are."""
    t = Table(title=title, show_header=True, header_style="bold")
    t.add_column("quantity")
    t.add_column("value", justify="right")
    quiet = quiet_keys(summary)
    for key, value in summary.items():
        if key in skip or value == "" or key in quiet:  # an empty note is no row
            continue
        if isinstance(value, dict):
            for sub, v in value.items():
                t.add_row(f"  {key}.{sub}", fmt_value(f"{key}.{sub}", v))
        else:
            text = display_name(value, summary.get("devices")) if key == "hardware" else fmt_value(key, value)
            # a flag in red when it reads badly: False (fits), or True where lower is better (overloaded)
            t.add_row(key, text, style="red" if value is (direction_of(key) == "min") else None)
    return t


def decode_step_view(step: dict[str, list]) -> Table:
    """The serving result's ``decode_step`` table (``serving.anatomy``): part, milliseconds, share."""
    from moesim.engine.serving.anatomy import caption, part_labels

    return _parts_view(step, part_labels(step), caption(step), 1e3, "ms")


def train_step_view(step: dict[str, list]) -> Table:
    """The training result's ``train_step`` table (``training.anatomy``): part, time, share; seconds
    where the step takes one or more, milliseconds below."""
    from moesim.engine.training.anatomy import PART_LABELS, caption

    return _parts_view(step, PART_LABELS, caption(step), *time_unit(step["seconds"][-1]))


def _parts_view(step: dict[str, list], labels: dict[str, str], title: str, scale: float, unit: str) -> Table:
    """A step table part by part (``labels`` names them), its time column in ``unit`` (seconds x ``scale``), the
    ``total`` row last in bold below a rule."""
    t = Table(title=title, show_header=True, header_style="bold")
    t.add_column("part")
    t.add_column(unit, justify="right")
    t.add_column("share", justify="right")
    for part, secs, share in zip(step["part"], step["seconds"], step["share"], strict=True):
        t.add_row(labels.get(part, part), f"{secs * scale:,.3f}", f"{share:.1%}",
                  style="bold" if part == "total" else None, end_section=part == step["part"][-2])
    return t


def presets_table(models: dict[str, dict], hardware: dict[str, dict]) -> tuple[Table, Table]:
    """Tables listing model and hardware presets."""
    from moesim.accounting import param_counts
    from moesim.schemas import ModelSpec

    mt = Table(title="Model presets", header_style="bold")
    for col in ("name", "layers", "d_model", "experts", "top_k", "total", "active"):
        # a preset's name is what a scenario types: never cut or wrapped, whatever the terminal's width
        mt.add_column(col, justify="left" if col == "name" else "right", no_wrap=col == "name")
    for name, data in models.items():
        m = ModelSpec(**data)
        p = param_counts(m)
        mt.add_row(name, str(m.n_layers), str(m.d_model), str(m.n_experts), str(m.top_k),
                   fmt_value("total_params", p.total), fmt_value("active_params", p.active))
    ht = Table(title="Hardware presets", header_style="bold",
               caption="per device: dense BF16 peak, memory GB/s and GiB, $ an hour")
    for col in ("name", "device", "bf16 TF/s", "GB/s", "GiB", "per node", "$/h"):
        ht.add_column(col, justify="left" if col in ("name", "device") else "right", no_wrap=col != "device")
    for name, data in hardware.items():
        d = data["device"]
        peak = d["peak_tflops"].get("bf16", d["peak_tflops"].get("fp32"))
        ht.add_row(name, d["name"], f"{peak:g}", f"{d['mem_bw_gbps']:g}", f"{d['mem_gib']:g}",
                   str(data["node"]["devices_per_node"]), f"{d['usd_per_hour']:.2f}")
    return mt, ht


def print_trust(console, lines: list[str], lead: str = "") -> None:
    """Print ``validation_results.trust_lines`` under a run (``simulate``) or a plan table (``plan``,
    ``lead`` "best plan: "): the header in bold, the rows as they are; nothing for no lines."""
    from rich.markup import escape

    if not lines:
        return
    console.print(f"[bold]{escape(lead + lines[0])}[/bold]", highlight=False, soft_wrap=True)  # its command whole
    for line in lines[1:]:
        console.print(escape(line), highlight=False, soft_wrap=True)
