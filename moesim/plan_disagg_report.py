"""What ``moesim plan`` prints and writes for a disaggregated scenario (:mod:`moesim.plan_disagg_search`).

``plans.csv`` / ``plans.json``: one row per whole plan evaluated (``kind`` "whole": budget, each
pool's plan, grains and devices, the separable estimate and the whole-plan re-check), then one row
per pool plan (``kind`` "prefill pool" / "decode pool": its grain, requests/s per device at capacity
under its part of the SLO, or why it was pruned). ``best.yaml``: the best whole plan as a scenario
for ``moesim simulate``, Poisson arrivals at its capacity (the re-checked one when re-checked).
``pareto.png``: the ranked whole plans, output tokens/s per device against tokens/s per user
(:func:`pareto_points`).
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

from moesim.fileio import atomic_write_text
from moesim.plan_disagg import PoolPlan, pair_count
from moesim.plan_disagg_search import REASONS, DisaggOutcome, System, whole_raw

#: Keys of the whole-plan re-check copied into a row.
CHECK_KEYS = ("usd_per_mtok_at_capacity", "tokens_per_s_per_device_at_capacity", "ttft_p99_s", "tpot_p99_s",
              "tpot_mean_s")


def system_row(x: System, outcome: DisaggOutcome, rank: int | None) -> dict[str, Any]:
    """One whole plan as a flat row; ``capacity_req_s`` and ``objective`` are the re-check's when it
    ran, else the estimate's."""
    row: dict[str, Any] = {"rank": rank, "kind": "whole", "hardware": x.hardware, "devices": x.devices,
                           "plan": x.label, "status": "ranked" if rank is not None else "slo-fails-whole"}
    for c, grains in ((x.prefill, x.split.prefill_grains), (x.decode, x.split.decode_grains)):
        v = c.pool_values(grains)
        row[f"{c.role}_plan"] = c.plan_text
        row[f"{c.role}_grains"] = grains
        row[f"{c.role}_devices"] = grains * c.grain_devices
        row.update({f"{c.role}.plan.{k}": val for k, val in v["plan"].items()})
        row[f"{c.role}.max_batch_seqs"] = v["max_batch_seqs"]
        row[f"{c.role}_req_s_per_device"] = c.rate_per_device
    row["capacity_estimate_req_s"] = x.split.capacity_req_s
    row["estimate_objective"] = x.estimate
    r = x.row or {}
    row["capacity_whole_req_s"] = r.get("max_goodput_req_s")
    row["whole_plan_objective"] = x.value
    row.update({k: r.get(k) for k in CHECK_KEYS})
    row["checked_on_devices"] = x.devices if x.checked else None
    row["capacity_req_s"] = row["capacity_whole_req_s"] if x.checked else x.split.capacity_req_s
    row["objective"] = x.value if x.checked else x.estimate
    row["estimate_error"] = (x.split.capacity_req_s / r["max_goodput_req_s"] - 1.0
                             if x.checked and (r.get("max_goodput_req_s") or 0) > 0 else None)
    return row


def pool_row(c: PoolPlan) -> dict[str, Any]:
    r = c.row or {}
    return {"rank": None, "kind": f"{c.role} pool", "hardware": c.hardware, "devices": c.grain_devices,
            "plan": c.plan_text, "status": c.reason or c.status, "detail": c.detail, "pool_slo": c.slo_text,
            "bound_req_s_per_device": c.bound, "req_s_per_device": c.rate_per_device,
            "capacity_per_replica_req_s": r.get("max_goodput_req_s"),
            **{k: r.get(k) for k in ("ttft_p99_s", "tpot_p99_s", "tpot_mean_s")}}


def all_rows(outcome: DisaggOutcome) -> list[dict[str, Any]]:
    """Ranked whole plans (best first), the whole plans whose re-check failed, then every pool plan."""
    ranked = outcome.ranked()
    rows = [system_row(x, outcome, i + 1) for i, x in enumerate(ranked)]
    rows += [system_row(x, outcome, None) for x in outcome.systems if x.checked and x.value is None]
    return rows + [pool_row(c) for c in outcome.space.pools]


def best_scenario(outcome: DisaggOutcome) -> dict | None:
    """The best whole plan as a scenario mapping (None when none was ranked)."""
    from moesim.plan_report import absolute_paths

    x = outcome.best
    if x is None:
        return None
    space = outcome.space
    data = absolute_paths(copy.deepcopy(whole_raw(space, x)), space.base_dir)
    name = str(space.raw.get("name", "scenario"))
    data["name"] = f"{name}-plan"
    rate = x.row["max_goodput_req_s"] if x.checked else x.split.capacity_req_s
    data["workload"].setdefault("arrival", {}).update(process="poisson", rate_per_s=float(f"{rate:.6g}"))
    how = "re-checked whole" if x.checked else "separable estimate, not re-checked"
    data["description"] = (f"moesim plan: best of {counts(outcome)['candidates']} disaggregated plans for {name} "
                           f"({outcome.objective.name} {x.value if x.checked else x.estimate:.6g}, capacity "
                           f"{rate:.4g} req/s under {outcome.slo_text}, {how}; {x.split.prefill_grains} prefill + "
                           f"{x.split.decode_grains} decode grains).")
    return data


def pareto_points(outcome: DisaggOutcome) -> list[dict[str, Any]]:
    """Ranked whole plans as (x, y, label, frontier): tokens/s per user (1 / mean TPOT) against output
    tokens/s per device at capacity, both larger is better. A re-checked plan gives the re-check's
    figures; the others the estimate's: the decode pool's mean TPOT at its capacity, and the split's
    capacity x the workload's mean output tokens over the plan's devices."""
    from moesim.plan_report import add_point, mark_frontier, per_user_tok_s

    best, tok, pts = outcome.best, outcome.space.output_tokens_per_request, []
    for x in outcome.ranked():
        if x.checked:
            xv, yv = per_user_tok_s(x.row.get("tpot_mean_s")), x.row.get("tokens_per_s_per_device_at_capacity")
        else:
            xv = per_user_tok_s((x.decode.row or {}).get("tpot_mean_s"))
            yv = x.split.capacity_req_s * tok / x.devices
        add_point(pts, xv, yv, x.label, x is best)
    return mark_frontier(pts)


def plot_pareto(outcome: DisaggOutcome, base: Path) -> list[Path]:
    """``pareto.png`` of the ranked whole plans ([] when none was ranked)."""
    from moesim.plan_report import SERVING_AXES, draw_pareto

    title = (f"{outcome.space.raw.get('name', '')}: disaggregated plans at capacity ({outcome.slo_text})\n"
             "estimates from the pools; plans re-checked whole at the whole run's figures")
    return draw_pareto(pareto_points(outcome), title, *SERVING_AXES, base)


def write_outputs(outcome: DisaggOutcome, out_dir: Path) -> list[Path]:
    """plans.csv, plans.json, pareto.png and best.yaml (checked to load back) in ``out_dir``."""
    from moesim.loader import load_scenario
    from moesim.plan_report import write_plan_rows

    out_dir.mkdir(parents=True, exist_ok=True)
    paths = write_plan_rows(outcome, all_rows(outcome), counts(outcome), "serving-disaggregated", out_dir)
    paths += plot_pareto(outcome, out_dir / "pareto")
    data = best_scenario(outcome)
    if data is not None:
        path = out_dir / "best.yaml"
        header = f"# {data['description']}\n# Written by moesim plan; run it with: moesim simulate {path.name}\n"
        atomic_write_text(path, header + yaml.safe_dump(data, sort_keys=False))
        load_scenario(path)  # raises InputError if it does not load back
        paths.append(path)
    return paths


def counts(outcome: DisaggOutcome) -> dict[str, Any]:
    """Whole plans (budget x prefill plan x decode plan with a split) and how they were decided: by
    the reasons of their two pool plans (the first of ``REASONS`` either has); pool plans by reason;
    runs; wall seconds."""
    space, p = outcome.space, outcome.progress
    total = pair_count(space)
    pruned: dict[str, int] = {}
    left = total
    for i, reason in enumerate(REASONS):  # a whole plan counts under the first reason either pool plan has
        kept = pair_count(space, lambda c, bad=REASONS[:i + 1]: c.reason not in bad)
        if left - kept:
            pruned[reason] = left - kept
        left = kept
    evaluated = {"ranked": left}
    for k in ("failed", "slo-fails"):
        if k in pruned:
            evaluated[k] = pruned.pop(k)
    checked = [x for x in outcome.systems if x.checked]
    return {"candidates": total, "pool_plans": len(space.pools), "pruned": pruned,
            "pruned_total": sum(pruned.values()), "evaluated": evaluated, "simulated": sum(evaluated.values()),
            "pool_plans_pruned": dict(p.pruned), "pool_plans_evaluated": dict(p.evaluated),
            "units_evaluated": sum(p.evaluated.values()), "runs": dict(p.runs), "runs_reused": p.reused,
            "rechecked": len(checked), "wall_s": outcome.wall_s}


# ------------------------------------------------------------------------------ the terminal
def table(rows: list[dict[str, Any]], obj, top: int):
    """The ``top`` best whole plans: each pool as grains x plan, the estimate and the re-check."""
    from rich.table import Table

    from moesim.cli_plan import format_cell

    name = {"usd_per_mtok": "$/Mtok", "tokens_per_s_per_device": "tok/s/device"}.get(obj.name, obj.name)
    t = Table(title=f"best disaggregated plans by {obj.name} ({'lower' if obj.direction == 'min' else 'higher'} "
                    "is better)", header_style="bold")
    heads = ["#", "devices", "hardware", "prefill pool", "decode pool", f"{name} estimate", f"{name} whole",
             "capacity req/s estimate", "capacity req/s whole", "TTFT p99 s", "TPOT p99 s"]
    for h in heads:
        t.add_column(h, justify="left" if h in ("hardware", "prefill pool", "decode pool") else "right", no_wrap=True)
    for i, r in enumerate(rows[:top]):
        pools = [f"{r[f'{role}_grains']} x {r[f'{role}_plan']} ({r[f'{role}_devices']} dev)"
                 for role in ("prefill", "decode")]
        t.add_row(str(i + 1), str(r["devices"]), r["hardware"], *pools,
                  format_cell(obj.key, r["estimate_objective"]), format_cell(obj.key, r["whole_plan_objective"]),
                  format_cell("capacity_req_s", r["capacity_estimate_req_s"]), format_cell("capacity_req_s", r["capacity_whole_req_s"]),
                  format_cell("ttft_p99_s", r["ttft_p99_s"]), format_cell("tpot_p99_s", r["tpot_p99_s"]),
                  style="bold green" if i == 0 else None)
    t.caption = ("estimate: each pool's capacity search alone (prefill under TTFT less the KV transfer, decode under "
                 "TPOT), the split min(n_p cap_p, n_d cap_d); whole: the whole plan re-played (--verify)")
    return t


def counts_line(n: dict[str, Any]) -> str:
    pruned = ", ".join(f"{k} {v}" for k, v in sorted(n["pruned"].items())) or "none"
    evaluated = ", ".join(f"{k} {v}" for k, v in sorted(n["evaluated"].items())) or "none"
    pools = ", ".join(f"{k} {v}" for k, v in sorted({**n["pool_plans_pruned"], **n["pool_plans_evaluated"]}.items()))
    runs = ", ".join(f"{k} {v}" for k, v in sorted(n["runs"].items())) or "none"
    return (f"{n['candidates']} whole plans: pruned {n['pruned_total']} ({pruned}); evaluated {n['simulated']} "
            f"({evaluated}); {n['pool_plans']} pool plans ({pools}); runs: {runs}"
            + (f"; {n['runs_reused']} reused" if n["runs_reused"] else "") + f"; {n['wall_s']:.1f} s")
