"""The plans ``moesim plan`` considers, and what can be said of each before simulating it. Pure functions.

A :class:`Candidate` is one full plan: hardware preset, device count and the scenario fields it sets
(``plan.*``, ``workload.max_batch_seqs``), applied with the ``--set`` mechanism
(:func:`moesim.loader.apply_override`) and validated as a scenario; a validation error makes it
``invalid``, a plan whose memory does not fit (serving: a KV pool that cannot hold the longest
request) ``no-fit``.

Serving candidates that differ only in their number of replicas share one evaluation :class:`Unit`:
the replicas of one expert-parallel group (``dp = ep``), on as many devices. Replicas serve requests
independently (the router spreads them; the engine prices an EP group's experts as serving equal
batches), so a plan of ``dp`` replicas has ``dp / ep`` times the unit's capacity at the unit's cost
per token and tokens/s per device. Training candidates are their own units.

Bounds on each unit: :mod:`moesim.plan_bounds`.
"""

from __future__ import annotations

import copy
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from moesim.errors import InputError
from moesim.loader import apply_override, format_validation_error, scenario_from_dict
from moesim.schemas.plan import LAYER_SPLIT_FIELDS

#: Serving objectives: option value -> (row key, direction).
SERVING_OBJECTIVES = {"usd_per_mtok": ("usd_per_mtok_at_capacity", "min"),
                      "tokens_per_s_per_device": ("tokens_per_s_per_device_at_capacity", "max"),
                      "ttft_p99_s": ("ttft_p99_s", "min")}
#: Training objectives: summary keys and their direction.
TRAINING_OBJECTIVES = {"usd_per_mtok": "min", "step_time_s": "min", "mfu": "max", "tokens_per_s": "max",
                       "tokens_per_s_per_device": "max"}
DEFAULT_BATCH_SEQS = (64, 128, 256, 512)
DEFAULT_PP = (1, 2, 4)
MAX_DEVICES = 1 << 20
RECOMPUTE = ("none", "selective", "full")
#: ZeRO stages tried. Stage 0 is left out: its all-reduce moves what stage 1's reduce-scatter and
#: all-gather move, with the optimizer states unsharded (more memory, a longer optimizer step).
ZERO = (1, 2, 3)
#: Context parallelism is tried (cp 2) for sequences at least this long; shorter ones keep cp 1.
CP_MIN_SEQ = 8192


@dataclass(frozen=True)
class Objective:
    name: str  # the option's value
    key: str  # the row key it reads
    direction: str  # min | max

    def better(self, a: float, b: float | None) -> bool:
        """``a`` strictly better than ``b`` (anything beats None)."""
        if b is None:
            return True
        return a < b if self.direction == "min" else a > b

    def sort_key(self, value: float) -> float:
        return value if self.direction == "min" else -value


@dataclass
class Candidate:
    """One full plan; ``values`` are the scenario fields it sets (path -> value)."""

    index: int
    hardware: str  # label: the preset name (or the scenario's hardware name)
    devices: int
    values: dict[str, Any]
    hw_sets: list[str] = field(default_factory=list)
    preset: str | None = None  # None: the scenario's own hardware mapping
    unit: str = ""
    status: str = "open"  # open | pruned | evaluated
    reason: str = ""  # why pruned (invalid, no-fit, slo-unreachable, dominated, bound, ...) or how evaluated
    detail: str = ""
    peak_gib: float | None = None  # screened memory per device (GiB); None until screened or when invalid
    capacity_gib: float | None = None  # the device's memory (GiB), beside peak_gib

    def overrides(self) -> list[str]:
        return [*self.hw_sets, *(f"{k}={json.dumps(v)}" for k, v in self.values.items())]

    @property
    def plan_text(self) -> str:
        """``dp8 tp1 pp1 ep1 batch256``; training: ``dp16 tp2 pp2 cp2 ep8 mb8 interleaved vp2 zero1 rc-none``."""
        v = self.values
        if "plan.dp" not in v:  # a hardware that cannot take the device count: no layout was made
            return "-"
        parts = [f"{name}{v[k]}" for k, name in (("plan.dp", "dp"), ("plan.tp", "tp"), ("plan.pp", "pp"))]
        if v.get("plan.cp", 1) != 1:
            parts.append(f"cp{v['plan.cp']}")
        parts.append(f"ep{v.get('plan.ep', 1)}")
        if "workload.max_batch_seqs" in v:
            parts.append(f"batch{v['workload.max_batch_seqs']}")
        if "plan.microbatches" in v:
            parts.append(f"mb{v['plan.microbatches']}")
        if v.get("plan.schedule") not in (None, "1f1b"):
            parts.append(str(v["plan.schedule"]))
        if v.get("plan.virtual_stages", 1) != 1:
            parts.append(f"vp{v['plan.virtual_stages']}")
        if v.get("plan.pipeline_layout"):  # an uneven split, written out (enumerate_training)
            parts.append("layers " + "/".join(map(str, v["plan.pipeline_layout"])))
        if "plan.zero_stage" in v:
            parts.append(f"zero{v['plan.zero_stage']}")
        if "plan.recompute" in v:
            mods = v.get("plan.recompute_modules")
            parts.append(f"rc-{'+'.join(mods)}" if mods else f"rc-{v['plan.recompute']}")
        return " ".join(parts) if v else "-"


@dataclass
class Space:
    """Everything enumerated: the base scenario mapping, candidates and their evaluation units."""

    raw: dict
    base_dir: Path
    training: bool
    candidates: list[Candidate]
    units: dict[str, dict]  # key -> {"raw": mapping, "devices": n, "dp": replicas, "scenario": Scenario}
    no_layout: list[int] = field(default_factory=list)  # --devices counts no plan splits (said, not searched)
    no_layout_why: str = ""  # the rule they break


def hardware_sets(raw_hw: Any, preset: str | None, devices: int) -> tuple[list[str], str]:
    """``--set`` items giving ``devices`` devices of ``preset`` (None: the scenario's hardware), and its
    label. Fewer devices than a node: one node of that many; else whole nodes (InputError if not)."""
    from moesim.resolve import resolve_presets

    hw = {"preset": preset} if preset else raw_hw
    expanded = resolve_presets({"hardware": copy.deepcopy(hw)})["hardware"]
    if not isinstance(expanded, dict):
        raise InputError("hardware: expected a preset name or a mapping")
    per_node = int((expanded.get("node") or {}).get("devices_per_node", 8))
    label = preset or (raw_hw if isinstance(raw_hw, str) else (raw_hw or {}).get("preset")) or str(expanded.get("name", "scenario"))
    sets = [f"hardware={json.dumps(hw)}"]
    if devices <= per_node:
        sets += [f"hardware.node.devices_per_node={devices}", "hardware.cluster.nodes=1"]
    elif devices % per_node:
        raise InputError(f"{devices} devices are not whole nodes of {per_node} ({label})")
    else:
        sets.append(f"hardware.cluster.nodes={devices // per_node}")
    return sets, label


def build(raw: dict, overrides: list[str], base_dir: Path):
    """The scenario of ``raw`` with ``overrides`` applied (``--set`` items); InputError when invalid."""
    data = copy.deepcopy(raw)
    for item in overrides:
        apply_override(data, item)
    return scenario_from_dict(data, base_dir=base_dir), data


def powers_of_two(limit: int) -> list[int]:
    """1, 2, 4, ... up to ``limit``: the TP / PP / EP degrees plan search tries."""
    return [1 << k for k in range(limit.bit_length()) if 1 << k <= limit]


def tp_values(tp: list[int] | None, limit: int) -> list[int]:
    """The TP degrees tried where ``limit`` devices can take part (a node, or fewer devices): the
    ``--tp`` values up to it, or without ``--tp`` the powers of two up to it."""
    return powers_of_two(limit) if tp is None else [t for t in tp if t <= limit]


def uneven_layout(n_layers: int, schedule: str, pp: int, virtual_stages: int) -> list[int] | None:
    """Layers of each model chunk (``plan.pipeline_layout``'s entries) of the even split when
    ``n_layers`` does not divide evenly over the schedule's model chunks (``numpy.array_split``:
    the first chunks one more, what the engine plays with the layout unset); None when it divides
    (or ``pp`` is 1). Megatron-core refuses an uneven split it is not told (its
    ``--pipeline-model-parallel-layout``, or first/last-stage layer counts), so plan writes it out."""
    from moesim.engine.training.schedules import get_schedule

    if pp < 2:
        return None
    sched = get_schedule(schedule)
    if sched.model_chunks(pp, virtual_stages) > n_layers:  # too many chunks: the plan's rules refuse it
        return None
    sizes = sched.model_chunk_sizes(n_layers, pp, virtual_stages)
    return None if len(set(sizes)) == 1 else sizes


def ep_values(s, dp: int) -> list[int]:
    """1 and the divisors of the model's expert slots (experts + redundant copies) up to ``dp``."""
    n = s.model.n_experts + s.placement.redundant_experts
    if s.model.n_experts <= 1:
        return [1]
    return [d for d in range(1, min(n, dp) + 1) if n % d == 0]


def unit_key(data: dict) -> str:
    text = json.dumps(data, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def enumerate_serving(raw: dict, base_dir: Path, base, hardware: list[str | None], devices: list[int],
                      tp: list[int] | None, pp: list[int], batch: list[int]) -> Space:
    """Serving candidates: replicas x tp x pp x ep x max_batch_seqs per hardware and device count."""
    if base.workload.disaggregation is not None:  # pool plans and the split: moesim.plan_disagg
        from moesim.plan_disagg import enumerate_disagg

        return enumerate_disagg(raw, base_dir, base, hardware, devices, tp, pp, batch)
    cands: list[Candidate] = []
    for hw, n, sets, label, per_node in _hardware_points(raw, hardware, devices, cands):
        for t in tp_values(tp, min(per_node, n)):
            for p in pp:
                if n % (t * p):
                    continue
                dp = n // (t * p)
                for ep in ep_values(base, dp):
                    for b in batch:
                        values = {"plan.dp": dp, "plan.tp": t, "plan.pp": p, "plan.ep": ep,
                                  "workload.max_batch_seqs": b}
                        # an EP group over DP replicas runs in lock-step in every engine that has one (SGLang's,
                        # TensorRT-LLM's, DeepSeek's DP attention; vLLM's DP + EP pads idle ranks with dummy steps)
                        values["plan.dp_attention"] = ep > 1
                        cands.append(Candidate(len(cands), label, n, values, sets, hw))
    return Space(raw, base_dir, False, cands, {})


def _hardware_points(raw: dict, hardware: list[str | None], devices: list[int], cands: list[Candidate]):
    """(preset, devices, overrides, label, devices per node) per hardware and device count; a
    hardware that cannot take a device count is added to ``cands`` as pruned (invalid)."""
    for hw in hardware:
        for n in devices:
            try:
                sets, label = hardware_sets(raw.get("hardware"), hw, n)
            except InputError as exc:
                cands.append(Candidate(len(cands), hw or "scenario", n, {}, status="pruned", reason="invalid",
                                       detail=str(exc)))
                continue
            yield hw, n, sets, label, devices_per_node_of(raw.get("hardware"), hw)


def devices_per_node_of(raw_hw: Any, preset: str | None) -> int:
    """Devices per node of the hardware ``preset`` (or, without one, the scenario's raw ``hardware``)."""
    from moesim.resolve import resolve_presets

    hw = resolve_presets({"hardware": copy.deepcopy({"preset": preset} if preset else raw_hw)})["hardware"]
    return int((hw.get("node") or {}).get("devices_per_node", 8))


def enumerate_training(raw: dict, base_dir: Path, base, hardware: list[str | None], devices: list[int],
                       tp: list[int] | None, pp: list[int]) -> Space:
    """Training layouts (dp, tp, pp, cp, ep, microbatches, schedule, vp) with the global batch fixed;
    :func:`screen_training` expands each into ZeRO stages x recompute."""
    w = base.workload
    cands: list[Candidate] = []
    for hw, n, sets, label, per_node in _hardware_points(raw, hardware, devices, cands):
        for t in tp_values(tp, min(per_node, n)):
            for p in pp:
                for cp in ((1, 2) if w.seq_len >= CP_MIN_SEQ else (1,)):
                    if n % (t * p * cp):
                        continue
                    dp = n // (t * p * cp)
                    mbs = (1, 2, 4, 8) if p == 1 else (2 * p, 4 * p, 8 * p)
                    if w.global_batch_seqs % dp == 0 and w.global_batch_seqs // dp not in mbs:
                        # micro-batches of one sequence: the least activation memory (and pp's smallest bubble)
                        mbs = (*mbs, w.global_batch_seqs // dp)
                    scheds = [("1f1b", 1)] if p == 1 else [("1f1b", 1), ("interleaved", 2), ("zb-h1", 1),
                                                         ("dualpipe", 1)]
                    for ep in ep_values(base, dp):
                        for m in (m for m in mbs if w.global_batch_seqs % (dp * m) == 0):
                            for sched, vp in scheds:
                                values = {"plan.dp": dp, "plan.tp": t, "plan.pp": p, "plan.cp": cp, "plan.ep": ep,
                                          "plan.microbatches": m, "plan.schedule": sched, "plan.virtual_stages": vp,
                                          **{f"plan.{name}": None for name in LAYER_SPLIT_FIELDS}}
                                values["plan.pipeline_layout"] = uneven_layout(base.model.n_layers, sched, p, vp)
                                cands.append(Candidate(len(cands), label, n, values, sets, hw))
    return Space(raw, base_dir, True, cands, {})


# ---------------------------------------------------------------------------- screening
def screen_serving(space: Space) -> None:
    """Validate every open candidate, prune invalid / not fitting ones, group the rest into units."""
    from moesim.memory import memory_report

    if hasattr(space, "pools"):  # disaggregated: each pool plan on its own stand-in
        from moesim.plan_disagg import screen_pools

        return screen_pools(space)

    for c in space.candidates:
        if c.status != "open":
            continue
        try:
            s, full = build(space.raw, c.overrides(), space.base_dir)
        except InputError as exc:
            c.status, c.reason, c.detail = "pruned", "invalid", str(exc)
            continue
        mem = memory_report(s)
        c.peak_gib, c.capacity_gib = mem.total_gib, mem.capacity_gib
        if not mem.fits:
            c.status, c.reason, c.detail = "pruned", "no-fit", f"peak {mem.total_gib:.1f} GiB > {mem.capacity_gib:g} GiB"
            continue
        per_unit = s.plan.tp * s.plan.pp * s.plan.ep
        per_node = s.hardware.node.devices_per_node
        unit_dp = s.plan.ep if per_unit <= per_node or per_unit % per_node == 0 else s.plan.dp
        try:
            sets, _ = hardware_sets(space.raw.get("hardware"), c.preset, s.plan.tp * s.plan.pp * unit_dp)
            unit_s, data = build(space.raw, sets + [f"{k}={json.dumps(v)}" for k, v in c.values.items()
                                                    if k != "plan.dp"] + [f"plan.dp={unit_dp}"], space.base_dir)
        except InputError:  # a rule the unit breaks but the full plan passes: simulate the full plan
            unit_s, data, unit_dp = s, full, s.plan.dp
        c.unit = unit_key(data)
        space.units.setdefault(c.unit, {"raw": data, "devices": unit_s.plan.n_devices, "dp": unit_dp,
                                        "scenario": unit_s, "headroom_gib": mem.capacity_gib - mem.total_gib})


def recompute_variants(s) -> list[tuple[str, dict[str, Any], frozenset[str]]]:
    """The recompute settings a training plan is tried with: (label, plan fields, what it re-runs).

    MoE models add Megatron's ``[layernorm, moe]`` modules (unless the scenario's own selective
    recompute already is that, or the experts run in transformers' loop, which takes no modules).
    What each re-runs orders them only partly: selective re-runs the attention core, the modules
    the MoE blocks, full both; which of the first two costs more depends on the sequence length.
    """
    from moesim.engine.training.recompute import (  # the engine: lazily
        MOE_RECOMPUTE_MODULES,
        moe_recompute_applies,
    )

    out = [("none", {"recompute": "none"}, frozenset()),
           ("selective", {"recompute": "selective"}, frozenset({"attention"}))]
    if moe_recompute_applies(s):
        # the MoE blocks re-run whole, so no SwiGLU input is cached for them (plan.fp8_moe_act_input needs moe_act)
        out.append(("+".join(MOE_RECOMPUTE_MODULES),
                    {"recompute": "selective", "recompute_modules": list(MOE_RECOMPUTE_MODULES),
                     "fp8_moe_act_input": False}, frozenset({"moe"})))
    out.append(("full", {"recompute": "full"}, frozenset({"attention", "moe", "layer"})))
    return out


def screen_training(space: Space, dominance: bool = True, headroom_gib: float = 0.0) -> None:
    """Validate each layout once, then expand it into ZeRO stage x recompute variants
    (:func:`recompute_variants`): those that do not fit, or leave less than ``headroom_gib`` (GiB per
    device) of the device's memory free, are ``no-fit``; of those that fit, one that re-runs a strict
    superset of what a fitting variant with the same ZeRO stage re-runs is ``dominated`` (recompute
    only adds work), unless ``dominance`` is off."""
    from moesim.memory import memory_report

    out: list[Candidate] = []
    for c in space.candidates:
        if c.status != "open":
            out.append(c)
            continue
        try:
            s, data = build(space.raw, c.overrides(), space.base_dir)
        except InputError as exc:
            for z in ZERO:
                for rc in RECOMPUTE:
                    out.append(Candidate(0, c.hardware, c.devices, {**c.values, "plan.zero_stage": z,
                                                                    "plan.recompute": rc}, c.hw_sets, c.preset,
                                         status="pruned", reason="invalid", detail=str(exc)))
            continue
        # ZeRO shards over the dp x cp ranks holding the same weights: with one, every stage is ZeRO-1's
        stages = ZERO if s.plan.dp * s.plan.cp > 1 else ZERO[:1]
        for z in stages:
            fitting: list[tuple[str, frozenset[str]]] = []  # variants that fit, with what they re-run
            for rc, update, work in recompute_variants(s):
                v = {**c.values, "plan.zero_stage": z, **{f"plan.{k}": val for k, val in update.items()}}
                cand = Candidate(0, c.hardware, c.devices, v, c.hw_sets, c.preset)
                try:  # the plan's own rules (e.g. a ZeRO-3-only setting of the base plan at another stage)
                    plan = s.plan.validated_copy(zero_stage=z, **update)
                except ValidationError as exc:
                    cand.status, cand.reason, cand.detail = "pruned", "invalid", format_validation_error(exc)
                    out.append(cand)
                    continue
                mem = memory_report(s.model_copy(update={"plan": plan}))
                cand.peak_gib, cand.capacity_gib = mem.total_gib, mem.capacity_gib
                # a fitting variant that re-runs a strict subset of this one's work dominates it
                lighter = next((name for name, w in fitting if w < work), None)
                if not mem.fits or mem.total_gib > mem.capacity_gib - headroom_gib:
                    cand.status, cand.reason = "pruned", "no-fit"
                    cand.detail = f"peak {mem.total_gib:.1f} GiB > {mem.capacity_gib:g} GiB" + (
                        f" less the --headroom {headroom_gib:g} GiB" if mem.fits else "")
                elif lighter is not None and dominance:
                    cand.status, cand.reason, cand.detail = "pruned", "dominated", f"recompute {lighter} fits"
                else:
                    fitting.append((rc, work))
                    d = copy.deepcopy(data)
                    d.setdefault("plan", {}).update(zero_stage=z, **update)
                    cand.unit = unit_key(d)
                    space.units[cand.unit] = {"raw": d, "devices": c.devices, "dp": s.plan.dp,
                                              "scenario": s.model_copy(update={"plan": plan}),
                                              "headroom_gib": mem.capacity_gib - mem.total_gib}
                out.append(cand)
    for i, c in enumerate(out):
        c.index = i
    space.candidates = out
