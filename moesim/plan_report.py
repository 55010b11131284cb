"""What ``moesim plan`` leaves behind: the table of every candidate, the Pareto frontier, best.yaml.

``plans.csv`` / ``plans.json``: one row per candidate (ranked, pruned with its reason, or failing
the SLO at every rate). ``pareto.png``: serving, output tokens/s per device against tokens/s per
user (1 / mean TPOT) at capacity of every evaluated plan, the frontier joined; training, cost per
token against step time. ``best.yaml``: the best plan as a scenario for ``moesim simulate`` (serving:
Poisson arrivals at the plan's capacity).
"""

from __future__ import annotations

import copy
import csv
import io
import json
import math
import textwrap
from itertools import groupby
from pathlib import Path
from typing import Any

import yaml

from moesim.fileio import atomic_write_text
from moesim.plan_runs import WINDOW_KEYS
from moesim.plan_search import EXACT, PlanOutcome, Unit
from moesim.plan_space import Candidate, build
from moesim.resolve import path_fields

SERVING_COLUMNS = ("max_goodput_req_s", "usd_per_mtok_at_capacity", "tokens_per_s_per_device_at_capacity",
                   *WINDOW_KEYS)  # every latency --slo may limit, so the binding one is seen
TRAINING_COLUMNS = ("step_time_s", "usd_per_mtok", "mfu", "tokens_per_s_per_device", "peak_memory_gib")


def candidate_row(c: Candidate, u: Unit | None, outcome: PlanOutcome, rank: int | None) -> dict[str, Any]:
    """One candidate as a flat row: identity, status, the objective and the unit's results."""
    row: dict[str, Any] = {"rank": rank, "hardware": c.hardware, "devices": c.devices, "plan": c.plan_text,
                           "status": "ranked" if rank is not None else (c.reason or c.status),
                           "detail": c.detail, **c.values}
    if u is None:
        return row
    row["bound"] = u.bound
    row["objective"] = u.value
    r = u.row or {}
    if outcome.space.training:
        row.update({k: r.get(k) for k in TRAINING_COLUMNS})
    else:
        row.update({k: r.get(k) for k in SERVING_COLUMNS if k != "max_goodput_req_s"})
        row["capacity_per_replica_req_s"] = r.get("max_goodput_req_s")
        if r.get("max_goodput_req_s") is not None:  # per replica, times the plan's replicas
            row["capacity_req_s"] = r["max_goodput_req_s"] * c.values["plan.dp"]
        tpot = r.get("tpot_mean_s")
        row["tokens_per_s_per_user"] = 1.0 / tpot if isinstance(tpot, (int, float)) and tpot > 0 else None
        row["checked_on_devices"] = u.checked_devices  # the whole plan re-checked (else: one replica x replicas)
        row["one_replica_objective"] = u.estimate if u.checked_devices else u.value
        row["whole_plan_objective"] = u.value if u.checked_devices else None
    return row


def all_rows(outcome: PlanOutcome) -> list[dict[str, Any]]:
    """Every candidate: ranked ones first (best first), then the rest in enumeration order."""
    if getattr(outcome, "disagg", False):
        from moesim.plan_disagg_report import all_rows as disagg_rows

        return disagg_rows(outcome)
    unit_of = {c.index: u for u in outcome.units for c in u.candidates}
    ranked = outcome.ranked()
    rows = [candidate_row(c, u, outcome, i + 1) for i, (c, u) in enumerate(ranked)]
    seen = {c.index for c, _ in ranked}
    rows += [candidate_row(c, unit_of.get(c.index), outcome, None) for c in outcome.space.candidates
             if c.index not in seen]
    return rows


def counts(outcome: PlanOutcome) -> dict[str, Any]:
    if getattr(outcome, "disagg", False):
        from moesim.plan_disagg_report import counts as disagg_counts

        return disagg_counts(outcome)
    p = outcome.progress
    return {"candidates": p.candidates, "pruned": dict(p.pruned), "pruned_total": sum(p.pruned.values()),
            "evaluated": dict(p.evaluated), "simulated": sum(p.evaluated.values()),
            "units_evaluated": sum(1 for u in outcome.units if u.level >= EXACT),
            "runs": dict(p.runs), "runs_reused": p.reused, "wall_s": outcome.wall_s}


def write_tables(outcome: PlanOutcome, out_dir: Path) -> list[Path]:
    kind = "training" if outcome.space.training else "serving"
    return write_plan_rows(outcome, all_rows(outcome), counts(outcome), kind, out_dir)


def write_plan_rows(outcome, rows: list[dict[str, Any]], tallies: dict[str, Any], kind: str, out_dir: Path) -> list[Path]:
    """plans.csv (one row per plan, the union of the rows' keys as columns) and plans.json (the
    search's objective, SLO, ``tallies`` and the rows) in ``out_dir``; returns their paths."""
    cols: list[str] = []
    for r in rows:
        cols.extend(k for k in r if k not in cols)
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(cols)
    for r in rows:
        w.writerow(["" if r.get(k) is None else _cell(r.get(k)) for k in cols])
    csv_path, json_path = out_dir / "plans.csv", out_dir / "plans.json"
    atomic_write_text(csv_path, buf.getvalue())
    doc = {"scenario": outcome.space.raw.get("name", ""), "kind": kind,
           "objective": outcome.objective.name, "objective_key": outcome.objective.key,
           "direction": outcome.objective.direction, "slo": outcome.slo_text, **tallies, "plans": rows}
    atomic_write_text(json_path, json.dumps(_jsonable(doc), indent=1) + "\n")
    return [csv_path, json_path]


def _cell(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return ""
    if isinstance(v, (list, dict)):  # JSON, as --set takes it back (plan.recompute_modules)
        return json.dumps(v)
    return v


def _jsonable(v: Any) -> Any:
    if isinstance(v, dict):
        return {k: _jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    if hasattr(v, "item") and not isinstance(v, (str, bytes)):
        v = v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


# --------------------------------------------------------------------------------- best.yaml
def absolute_paths(data: dict, base_dir: Path) -> dict:
    """``data`` (a scenario mapping, changed in place) with each relative path field made absolute
    from ``base_dir``, the scenario's folder: ``best.yaml`` is written elsewhere. Returns ``data``."""
    for _, node, key in path_fields(data):
        if isinstance(node[key], str) and not Path(node[key]).is_absolute():
            node[key] = str((base_dir / node[key]).resolve())
    return data


def best_scenario(outcome: PlanOutcome) -> dict | None:
    """The best plan as a scenario mapping (None when no plan was ranked)."""
    best = outcome.best
    if best is None:
        return None
    c, u = best
    space = outcome.space
    _, data = build(space.raw, c.overrides(), space.base_dir)
    data = absolute_paths(copy.deepcopy(data), space.base_dir)
    name = str(space.raw.get("name", "scenario"))
    data["name"] = f"{name}-plan"
    what = f"{outcome.objective.name} {u.value:.6g}"
    if space.training and c.values.get("plan.pipeline_layout"):  # written out by plan_space.uneven_layout
        what += "; " + uneven_text(c.values["plan.pipeline_layout"], c.values["plan.pp"])
    if space.training and u.row.get("fits") is True and _tight_fixed_by_expandable(data, space.base_dir):
        data.setdefault("plan", {})["allocator"] = "expandable_segments"
        what += "; plan.allocator: expandable_segments, as the caching allocator's reserve would not fit"
    if not space.training:
        rate = u.row["max_goodput_req_s"] * c.values["plan.dp"]
        arrival = data["workload"].setdefault("arrival", {})
        if arrival.get("process", "batch") != "trace":  # n_requests kept: --slo sizes its probes from it
            arrival.update(process="poisson", rate_per_s=float(f"{rate:.6g}"))
        what += f", capacity {rate:.4g} req/s under {outcome.slo_text}"
    data["description"] = f"moesim plan: best of {outcome.progress.candidates} plans for {name} ({what})."
    return data


def uneven_text(layout: list[int], pp: int) -> str:
    """best.yaml's word on an uneven layer split: ``layout`` (layers per model chunk) over ``pp`` stages."""
    return (f"plan.pipeline_layout {layout}: {sum(layout)} layers do not split evenly over "
            f"{len(layout)} model chunk{'s' if len(layout) != 1 else ''} on {pp} pipeline stages, "
            "so the split is written out (Megatron-core refuses an uneven split it is not given: pass it as "
            "--pipeline-model-parallel-layout)")


def _tight_fixed_by_expandable(data: dict, base_dir: Path) -> bool:
    """Whether the training scenario ``data`` fits but is tight (PyTorch's caching allocator would reserve more
    than the device has: ``fit_advice``) and ``plan.allocator: expandable_segments`` makes it fit without."""
    from moesim.fit_advice import fit_explanation
    from moesim.loader import scenario_from_dict

    s = scenario_from_dict(copy.deepcopy(data), base_dir)
    if s.plan.allocator == "expandable_segments" or not fit_explanation(s)[1]:
        return False
    lean = copy.deepcopy(data)
    lean.setdefault("plan", {})["allocator"] = "expandable_segments"
    return not fit_explanation(scenario_from_dict(lean, base_dir))[1]


def write_best(outcome: PlanOutcome, path: Path) -> Path | None:
    """Write best.yaml and check it loads back as a scenario."""
    from moesim.loader import load_scenario

    data = best_scenario(outcome)
    if data is None:
        return None
    header = f"# {data['description']}\n# Written by moesim plan; run it with: moesim simulate {path.name}\n"
    atomic_write_text(path, header + yaml.safe_dump(data, sort_keys=False))
    load_scenario(path)  # raises InputError if it does not load back
    return path


# --------------------------------------------------------------------------------- Pareto
def pareto_points(outcome: PlanOutcome) -> list[dict[str, Any]]:
    """Evaluated units as (x, y, label, on_frontier): serving x = tokens/s per user, y = tokens/s per
    device (both larger is better); training x = step time, y = $/Mtok (both smaller is better)."""
    pts = []
    best = outcome.best
    for u in outcome.units:
        r = u.row or {}
        if u.value is None:
            continue
        if outcome.space.training:
            x, y = r.get("step_time_s"), r.get("usd_per_mtok")
        else:
            x, y = per_user_tok_s(r.get("tpot_mean_s")), r.get("tokens_per_s_per_device_at_capacity")
        add_point(pts, x, y, u.label, best is not None and u is best[1])
    return mark_frontier(pts, maximise=not outcome.space.training)


#: Axis labels of a serving Pareto plot (x, y).
SERVING_AXES = ("tokens/s per user (1 / mean TPOT at capacity)", "output tokens/s per device at capacity")


def per_user_tok_s(tpot_s) -> float | None:
    """Tokens/s one user sees: 1 / mean TPOT (None where there is none)."""
    return 1.0 / tpot_s if isinstance(tpot_s, (int, float)) and tpot_s > 0 else None


def add_point(pts: list, x, y, label: str, best: bool) -> None:
    """Append a plot point when both coordinates are finite numbers."""
    if isinstance(x, (int, float)) and isinstance(y, (int, float)) and math.isfinite(x) and math.isfinite(y):
        pts.append({"x": float(x), "y": float(y), "label": label, "best": best})


def mark_frontier(pts: list[dict[str, Any]], maximise: bool = True) -> list[dict[str, Any]]:
    """Set ``frontier`` on each point: no other point is at least as good on both axes (and differs);
    larger is better when ``maximise``, else smaller. One sort and a sweep (searches ranking
    thousands of plans plot them all)."""
    sign = 1.0 if maximise else -1.0
    best_y = -math.inf  # the best y of the points better on x (or equal on x and better on y)
    ordered = sorted(pts, key=lambda p: (-sign * p["x"], -sign * p["y"]))
    for _, group in groupby(ordered, key=lambda p: (p["x"], p["y"])):  # equal points judged together
        group = list(group)
        y = sign * group[0]["y"]
        for p in group:
            p["frontier"] = y > best_y
        best_y = max(best_y, y)
    return pts


def plot_pareto(outcome: PlanOutcome, base: Path) -> list[Path]:
    """The Pareto PNG (matplotlib imported here only); [] when nothing was evaluated."""
    training = outcome.space.training
    what = "cost vs step time" if training else f"throughput vs interactivity at capacity ({outcome.slo_text})"
    shown = "every valid plan" if outcome.exhaustive else "plans the search evaluated (pruned ones not shown)"
    axes = ("step time (s)", "cost ($ per 1M tokens)") if training else SERVING_AXES
    return draw_pareto(pareto_points(outcome), f"{outcome.space.raw.get('name', '')}: {what}\n{shown}", *axes, base)


def draw_pareto(pts: list[dict[str, Any]], title: str, xlabel: str, ylabel: str, base: Path) -> list[Path]:
    """Draw ``pts`` (from :func:`mark_frontier`): every plan in grey, the frontier joined, the best
    starred; [] when there is no point."""
    if not pts:
        return []
    from matplotlib.figure import Figure

    from moesim.plots import save_figure

    fig = Figure(figsize=(7.5, 5.0), layout="constrained")  # the house style of moesim.plots
    ax = fig.add_subplot()
    # a long scenario name or SLO wraps instead of running off the figure
    ax.set_title("\n".join(textwrap.fill(line, 90) for line in title.split("\n")), fontsize=10)
    ax.grid(True, alpha=0.3)
    ax.scatter([p["x"] for p in pts], [p["y"] for p in pts], s=14, color="0.65", label="evaluated plans")
    front = sorted((p for p in pts if p["frontier"]), key=lambda p: p["x"])
    ax.plot([p["x"] for p in front], [p["y"] for p in front], marker="o", ms=5, color="C0", label="Pareto frontier")
    for p in (p for p in pts if p["best"]):
        ax.scatter([p["x"]], [p["y"]], s=120, marker="*", color="C3", zorder=3, label=f"best: {p['label']}")
    mid = (min(p["x"] for p in pts) + max(p["x"] for p in pts)) / 2
    alike: dict[tuple[float, float], list[str]] = {}  # plans tied on both axes share one label
    for p in front:
        alike.setdefault((p["x"], p["y"]), []).append(p["label"])
    notes = []
    for (x, y), labels in list(alike.items())[:12]:  # labels point inwards so none runs off the axes
        right = x > mid
        text = labels[0] + (f" (+{len(labels) - 1} alike)" if len(labels) > 1 else "")
        notes.append(ax.annotate(text, (x, y), fontsize=6, xytext=(-4 if right else 4, 3),
                                 textcoords="offset points", ha="right" if right else "left"))
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    fig.legend(fontsize=8, loc="outside lower center")  # below the axes: never over a plan's label
    separate_labels(fig, notes)
    return save_figure(fig, base, ["png"])


def separate_labels(fig, notes: list, tries: int = 8) -> None:
    """Move each annotation in ``notes`` (offset in points) down, then up, by its own height until
    its box clears the ones placed before it: frontier plans close together keep readable labels."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    renderer = FigureCanvasAgg(fig).get_renderer()
    fig.draw_without_rendering()  # the constrained layout places the axes; boxes are measured after it
    placed = []
    for note in notes:
        dx, dy = note.xyann
        box = note.get_window_extent(renderer)
        step = box.height * 72.0 / fig.dpi + 1.0  # points
        for k in range(tries + 1):
            shift = (-1) ** k * ((k + 1) // 2) * step  # 0, -1, +1, -2, +2 ... heights
            note.xyann = (dx, dy + shift)
            box = note.get_window_extent(renderer)
            if not any(box.overlaps(other) for other in placed):
                break
        placed.append(box)


def write_outputs(outcome: PlanOutcome, out_dir: Path) -> list[Path]:
    if getattr(outcome, "disagg", False):
        from moesim.plan_disagg_report import write_outputs as disagg_outputs

        return disagg_outputs(outcome, out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = write_tables(outcome, out_dir)
    paths += plot_pareto(outcome, out_dir / "pareto")
    best = write_best(outcome, out_dir / "best.yaml")
    return paths + ([best] if best else [])


# --------------------------------------------------------------------------------- no plan
def nearest_fit(candidates: list[Candidate], headroom_gib: float = 0.0) -> Candidate | None:
    """The ``no-fit`` candidate whose screened memory per device is the smallest multiple of what its
    device offers (``peak_gib / (capacity_gib - headroom_gib)``, GiB): the plan nearest to fitting;
    None without one."""
    short = [c for c in candidates if c.reason == "no-fit" and c.peak_gib is not None and c.capacity_gib]
    return min(short, key=lambda c: (c.peak_gib / max(c.capacity_gib - headroom_gib, 1e-9), c.devices, c.index),
               default=None)


def bigger_devices(peak_gib: float, devices: int, tried: set[str], n: int = 3) -> list[str]:
    """Up to ``n`` hardware presets not in ``tried`` whose device memory (GiB) holds ``peak_gib`` and
    whose node takes ``devices`` devices (or a full node of 8): smallest memory first, then cheapest."""
    from moesim.presets import HARDWARE

    fits = [(hw["device"]["mem_gib"], hw["device"].get("usd_per_hour") or 0.0, name) for name, hw in HARDWARE.items()
            if name not in tried and hw["device"]["mem_gib"] > peak_gib
            and hw["node"]["devices_per_node"] >= min(devices, 8)]
    return [name for *_, name in sorted(fits)[:n]]


def devices_to_fit(devices: int, peak_gib: float, capacity_gib: float) -> int:
    """The fewest devices, ``devices`` times a power of two, over which ``peak_gib`` per device (GiB)
    would come under ``capacity_gib`` if it shrank in proportion: sharding over k times the devices
    divides memory per device by k at most, so fewer devices cannot fit."""
    k = 1
    while peak_gib / k > capacity_gib:
        k *= 2
    return devices * k


def unusable_gib(c: Candidate) -> float:
    """Device memory (GiB) that ``c``'s screening did not count as usable (the CUDA context, a serving
    engine's unused share): its preset's ``mem_gib`` less ``capacity_gib``; 0 for a custom device."""
    from moesim.presets import HARDWARE

    hw = HARDWARE.get(c.preset or c.hardware)
    return max(float(hw["device"]["mem_gib"]) - c.capacity_gib, 0.0) if hw and c.capacity_gib else 0.0


def no_fit_hint(candidates: list[Candidate], headroom_gib: float = 0.0) -> dict[str, Any] | None:
    """How short the plan nearest to fitting falls and what to change: ``{"plan", "devices",
    "hardware", "peak_gib", "capacity_gib", "devices_at_least", "text"}``; None when no candidate was
    screened as not fitting. ``headroom_gib``: the memory ``--headroom`` keeps free (GiB per device)."""
    c = nearest_fit(candidates, headroom_gib)
    if c is None:
        return None
    usable = c.capacity_gib - headroom_gib
    need = (f"needs {c.peak_gib:.1f} GiB of the {c.capacity_gib:.1f} GiB usable per device"
            + (f", less the --headroom {headroom_gib:g} GiB" if headroom_gib else ""))
    head = f"the plan nearest to fitting, {c.plan_text} on {c.devices} {c.hardware}, {need}"
    hint = {"plan": c.plan_text, "devices": c.devices, "hardware": c.hardware, "peak_gib": c.peak_gib,
            "capacity_gib": c.capacity_gib, "devices_at_least": None}
    if usable <= 0:
        return hint | {"text": f"{head}; --headroom {headroom_gib:g} GiB leaves no memory: give less"}
    most = max(x.devices for x in candidates)
    least = devices_to_fit(c.devices, c.peak_gib, usable)
    tried = {x.preset or x.hardware for x in candidates}
    bigger = bigger_devices(c.peak_gib + headroom_gib + unusable_gib(c), c.devices, tried)
    ways = [f"more devices (at least {least}, as memory per device shrinks at most in proportion: "
            f"--devices {max(least, 2 * most)},{2 * max(least, 2 * most)})"]
    if bigger:
        ways.append(f"a device with more memory (--hardware {','.join(bigger)})")
    if headroom_gib:
        ways.append(f"less --headroom (this plan leaves {max(c.capacity_gib - c.peak_gib, 0.0):.1f} GiB free)")
    return hint | {"devices_at_least": least, "text": f"{head}; try {' or '.join(ways)}"}
