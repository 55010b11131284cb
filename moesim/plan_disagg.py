"""Disaggregated plans for ``moesim plan``: a prefill pool and a decode pool, and how to split a device
budget between them. Pure functions and plain data; the search is :mod:`moesim.plan_disagg_search`.

A disaggregated deployment (:mod:`moesim.engine.serving.disagg`) runs every prompt to its first
token in the prefill pool, sends its KV cache over the NICs, and decodes it in the decode pool. The
pools share nothing but that hand-off, so their capacities are separable:

* **TTFT is set by the prefill pool** (queue + prefill) **plus the KV transfer**. One prefill
  replica's capacity under the TTFT limit is found with :func:`moesim.capacity.max_goodput` on a
  single-pool scenario of the prefill plan whose requests stop at their first token (``output_tokens``
  fixed at 1), the limit less the transfer of the prompt at the limit's quantile
  (``nic_latency + prompt x kv_bytes_per_token / (pp x kv_shards(tp) x kv_transfer_gbps)``, as
  the disagg engine prices it; queueing on the link is left out: at a replica's prefill rate a link
  is busy a few percent of the time).
* **TPOT is set by the decode pool**, fed requests whose KV arrives whole: a single-pool scenario of
  the decode plan with every prompt token but one in the prefix cache (``prefix_cache_hit`` =
  ``DECODE_CACHE_HIT``), so a request costs one 1-token step (its first token, which the real
  pool gets with the KV) and then its decode steps; its capacity under the TPOT limit the same way.
* Each pool grows in **grains**: whole nodes of whole replica groups (``lcm(tp x pp x ep,
  devices_per_node)`` devices, as the scenario rules want pools of whole nodes). A grain serves
  ``grain / (tp x pp)`` replicas times one replica's capacity, so the pools' rates are
  ``e_p`` and ``e_d`` requests/s per device. On ``N`` devices, ``n_p`` prefill and ``n_d`` decode
  grains (``n_p g_p + n_d g_d = N``) serve ``min(n_p g_p e_p, n_d g_d e_d)`` requests/s
  (:func:`best_split` picks the best integer split); no split beats the continuous one,
  ``N e_p e_d / (e_p + e_d)`` (:func:`harmonic_rate`), which bounds a pair of pool plans.

The cost of a plan at capacity is its devices' price over the output tokens it serves: the
workload's mean output tokens per request times the capacity. The search re-plays the best plans
whole (``--verify``): both figures are reported, so the gap of the separable estimate is visible.
"""

from __future__ import annotations

import copy
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from moesim.errors import InputError
from moesim.plan_space import Space, build, hardware_sets, unit_key

#: Prefix-cache hit of the decode pool's stand-in: every prompt token but the last is cached
#: (``floor(p x h) = p - 1`` for prompts up to 1e8 tokens), so only the first token is computed.
DECODE_CACHE_HIT = 1.0 - 1e-9
#: A limit no run reaches: the pool's SLO when the user's SLO limits only the other pool.
NO_LIMIT_S = 1e9
ROLES = ("prefill", "decode")
#: Quantile of the prompt whose KV transfer is taken off a TTFT limit, per statistic.
QUANTILES = {"p50": 0.5, "p90": 0.9, "p99": 0.99}


@dataclass
class PoolPlan:
    """One pool's plan on one hardware: evaluated on a single-pool stand-in of one replica group.

    ``rate_per_device``: requests/s per device at capacity under the pool's SLO (None until known);
    ``bound``: an optimistic value of it, before any run."""

    index: int
    role: str
    hardware: str  # label
    preset: str | None
    values: dict[str, Any]  # plan.tp, plan.pp, plan.ep, max_batch_seqs and dp_attention (ep > 1: lock-step)
    grain_devices: int
    per_node: int
    raw: dict = field(default_factory=dict, repr=False)  # the stand-in scenario mapping (one replica group)
    scenario: Any = field(default=None, repr=False)
    key: str = ""
    slo_text: str = ""
    bound: float = math.inf
    status: str = "open"  # open | pruned | done | failed
    reason: str = ""
    detail: str = ""
    row: dict[str, Any] | None = None
    rate_per_device: float | None = None
    running: bool = False

    @property
    def plan_text(self) -> str:
        """``tp2 pp1 ep8 batch256``."""
        v = self.values
        return f"tp{v['plan.tp']} pp{v['plan.pp']} ep{v['plan.ep']} batch{v['max_batch_seqs']}"

    @property
    def label(self) -> str:
        return f"{self.hardware} {self.role} {self.plan_text}"

    def pool_values(self, grains: int) -> dict[str, Any]:
        """The pool's fields in a scenario of ``grains`` grains: plan (dp included) and batch limit."""
        v = self.values
        plan = {"dp": grains * self.grain_devices // (v["plan.tp"] * v["plan.pp"]), "tp": v["plan.tp"],
                "pp": v["plan.pp"], "ep": v["plan.ep"]}
        if "plan.dp_attention" in v:
            plan["dp_attention"] = v["plan.dp_attention"]
        return {"plan": plan, "max_batch_seqs": v["max_batch_seqs"]}


@dataclass
class DisaggSpace(Space):
    """The pool plans (``candidates`` too: what the progress bar counts) and the device budgets."""

    pools: list[PoolPlan] = field(default_factory=list)
    budgets: dict[str, list[int]] = field(default_factory=dict)  # hardware label -> device counts
    prices: dict[str, float] = field(default_factory=dict)  # hardware label -> $ per device-second
    presets: dict[str, str | None] = field(default_factory=dict)  # hardware label -> preset
    output_tokens_per_request: float = 1.0  # the workload's mean
    disagg_spec: Any = None  # the scenario's workload.disaggregation (KV transfer settings)


# ------------------------------------------------------------------------------ split arithmetic
@dataclass(frozen=True)
class Split:
    prefill_grains: int
    decode_grains: int
    capacity_req_s: float


def best_split(devices: int, grain_p: int, grain_d: int, rate_p: float, rate_d: float) -> Split | None:
    """The integer split of ``devices`` into ``n_p`` prefill grains of ``grain_p`` devices and ``n_d``
    decode grains of ``grain_d`` (``n_p grain_p + n_d grain_d = devices``, both at least 1) with the
    highest capacity ``min(n_p grain_p rate_p, n_d grain_d rate_d)`` (requests/s; rates in requests/s
    per device). Ties: fewer prefill grains. None when no split uses exactly ``devices``."""
    best = None
    for n_p in range(1, (devices - grain_d) // grain_p + 1):
        rest = devices - n_p * grain_p
        if rest % grain_d:
            continue
        n_d = rest // grain_d
        cap = min(n_p * grain_p * rate_p, n_d * grain_d * rate_d)
        if best is None or cap > best.capacity_req_s:
            best = Split(n_p, n_d, cap)
    return best


def harmonic_rate(rate_p: float, rate_d: float) -> float:
    """Requests/s per device of the best continuous split (an upper bound on any integer split)."""
    if rate_p <= 0 or rate_d <= 0:
        return 0.0
    if math.isinf(rate_p) or math.isinf(rate_d):
        return min(rate_p, rate_d)
    return rate_p * rate_d / (rate_p + rate_d)


def objective_value(name: str, req_s_per_device: float, price_usd_per_device_s: float,
                    output_tokens_per_request: float) -> float:
    """``usd_per_mtok`` or ``tokens_per_s_per_device`` of a plan serving ``req_s_per_device``."""
    tok = req_s_per_device * output_tokens_per_request  # output tokens/s per device
    if name == "tokens_per_s_per_device":
        return tok
    if tok <= 0:
        return math.inf
    return price_usd_per_device_s / tok * 1e6 if math.isfinite(tok) else 0.0


# ------------------------------------------------------------------------------ scenarios
def pool_raw(base: dict, role: str, values: dict[str, Any], hw_sets: list[str], group_dp: int) -> dict:
    """The stand-in single-pool mapping of ``role``'s plan ``values``: ``group_dp`` replicas on the
    devices ``hw_sets`` give (see the module docstring for what each role's stand-in changes)."""
    data = copy.deepcopy(base)
    w = data["workload"]
    pool = w.pop("disaggregation")[role]
    plan = {**pool["plan"], "dp": group_dp, "tp": values["plan.tp"], "pp": values["plan.pp"], "ep": values["plan.ep"]}
    if "plan.dp_attention" in values:
        plan["dp_attention"] = values["plan.dp_attention"]
    data["plan"] = plan
    if pool.get("placement") is not None:
        data["placement"] = pool["placement"]
    w["max_batch_seqs"] = values["max_batch_seqs"]
    if pool.get("max_batch_tokens") is not None:
        w["max_batch_tokens"] = pool["max_batch_tokens"]
    if role == "prefill":  # requests end at their first token; no drafter in the prefill pool
        w["output_tokens"] = {"dist": "fixed", "value": 1}
        w.pop("speculative", None)
    else:  # the KV arrives whole: only the last prompt token is computed
        w["prefix_cache_hit"] = DECODE_CACHE_HIT
    data["name"] = f"{base.get('name', 'scenario')} [{role}]"
    for item in hw_sets:
        from moesim.loader import apply_override

        apply_override(data, item)
    return data


def system_raw(base: dict, hw_sets: list[str], prefill: PoolPlan, decode: PoolPlan, split: Split) -> dict:
    """The whole disaggregated mapping: ``base`` on the devices of ``hw_sets`` with both pools set."""
    from moesim.loader import apply_override

    data = copy.deepcopy(base)
    for item in hw_sets:
        apply_override(data, item)
    d = data["workload"]["disaggregation"]
    for plan, grains in ((prefill, split.prefill_grains), (decode, split.decode_grains)):
        pool = d[plan.role]
        v = plan.pool_values(grains)
        pool["plan"] = {**pool["plan"], **v["plan"]}
        pool["max_batch_seqs"] = v["max_batch_seqs"]
    return data


def transfer_s(s_pool, disagg, prompt_tokens: float) -> float:
    """Seconds to send one prompt's KV from a prefill replica of the stand-in ``s_pool``'s plan (as
    :func:`moesim.engine.serving.disagg.transfer_bandwidth_bps` prices it, without link queueing)."""
    from moesim.accounting import kv_bytes_per_token
    from moesim.engine.local_attention import slot_map
    from moesim.memory import kv_shards
    from moesim.precision import scenario_precision

    hw, p = s_pool.hardware, s_pool.plan
    bandwidth = (disagg.kv_transfer_gbps or hw.cluster.nic_bw_gbps) * 1e9 * p.pp * kv_shards(s_pool.model, p.tp)
    slots = slot_map(s_pool.model, s_pool.workload.local_attention_mode)  # local layers send only their window
    held = prompt_tokens if slots is None else float(slots(int(math.ceil(prompt_tokens))))
    nbytes = held * kv_bytes_per_token(s_pool.model, scenario_precision(s_pool))
    return hw.cluster.nic_latency_us * 1e-6 + nbytes / bandwidth


def pool_slo(slo, role: str, s_pool, disagg) -> tuple[str, str]:
    """(the pool's ``--slo`` text, why it can never hold or ""): the prefill pool takes the TTFT
    limits less the KV transfer of the prompt at the limit's quantile, the decode pool the TPOT ones."""
    from moesim.plan_bounds import length_quantile

    prompts = s_pool.workload.prompt_tokens
    limits = {}
    for key, limit in slo.limits.items():
        name, stat = key.removesuffix("_s").split("_")
        if (name == "ttft") != (role == "prefill"):
            continue
        if role == "prefill":
            q = QUANTILES.get(stat)
            tokens = length_quantile(prompts, q) if q else prompts.mean_tokens(1.0)
            cut = transfer_s(s_pool, disagg, tokens or 1.0)
            if cut >= limit:
                return "", f"{key.removesuffix('_s')}: the KV transfer alone takes {cut:.3g} s > {limit:g} s"
            limit -= cut
        limits[key] = limit
    if not limits:  # the user's SLO limits the other pool only: this one just has to keep up
        limits = {("ttft_p99_s" if role == "prefill" else "tpot_p99_s"): NO_LIMIT_S}
    return ",".join(f"{k.removesuffix('_s')}={v!r}" for k, v in limits.items()), ""


def check_slo(slo) -> None:
    """InputError unless every limit is on TTFT, TPOT or ITL (what the pools split between them: TTFT the prefill
    pool's, TPOT and ITL the decode pool's)."""
    bad = [k.removesuffix("_s") for k in slo.limits if not k.startswith(("ttft_", "tpot_", "itl_"))]
    if bad:
        raise InputError(f"--slo {bad[0]}: a disaggregated plan splits the SLO into TTFT (prefill pool) and "
                         "TPOT or ITL (decode pool) limits; give ttft_*, tpot_* or itl_* limits only")


# ------------------------------------------------------------------------------ enumeration
def _lcm(a: int, b: int) -> int:
    return a * b // math.gcd(a, b)


def _pool_eps(n_experts: int, redundant: int, most: int) -> list[int]:
    """1 and the divisors of the pool's expert slots up to ``most`` replicas."""
    if n_experts <= 1:
        return [1]
    slots = n_experts + redundant
    return [d for d in range(1, min(slots, most) + 1) if slots % d == 0]


def enumerate_disagg(raw: dict, base_dir: Path, base, hardware: list[str | None], devices: list[int],
                     tp: list[int] | None, pp: list[int], batch: list[int]) -> DisaggSpace:
    """Pool plans (tp x pp x ep x max_batch_seqs per role and hardware) for the device budgets
    ``devices``; each budget must hold a node per pool (InputError otherwise)."""
    from moesim.plan_space import devices_per_node_of, tp_values

    w = base.workload
    if w.arrival.process == "trace" or "trace" in (w.prompt_tokens.dist, w.output_tokens.dist):
        raise InputError("moesim plan: a disaggregated scenario with a trace workload is not supported "
                         "(the pools' stand-ins replace the output lengths); use length distributions")
    space = DisaggSpace(raw, base_dir, False, [], {}, output_tokens_per_request=w.output_tokens.mean_tokens(1.0),
                        disagg_spec=w.disaggregation)
    for hw in hardware:
        per_node = devices_per_node_of(raw.get("hardware"), hw)
        _, label = hardware_sets(raw.get("hardware"), hw, per_node)
        for n in devices:
            if n < 2 * per_node or n % per_node:
                raise InputError(f"--devices {n}: a disaggregated plan needs whole nodes of {per_node} devices "
                                 f"({label}), at least one per pool: {2 * per_node}, {3 * per_node}, ...")
        space.budgets[label], space.presets[label] = list(devices), hw
        most = max(devices) - per_node  # devices one pool can have
        for role in ROLES:
            pool = getattr(w.disaggregation, role)
            placement = pool.placement or base.placement
            for t in tp_values(tp, per_node):
                for p in pp:
                    for ep in _pool_eps(base.model.n_experts, placement.redundant_experts, most // (t * p)):
                        grain = _lcm(t * p * ep, per_node)
                        if grain > most:
                            continue
                        for b in batch:
                            values = {"plan.tp": t, "plan.pp": p, "plan.ep": ep, "max_batch_seqs": b}
                            values["plan.dp_attention"] = ep > 1  # EP over DP ranks runs in lock-step (plan_space)
                            space.pools.append(PoolPlan(len(space.pools), role, label, hw, values, grain, per_node))
    space.candidates = space.pools
    return space


def screen_pools(space: DisaggSpace) -> None:
    """Build each pool plan's stand-in (one replica group, ``dp = ep``, or a grain when the group
    is more than a node but not whole nodes); invalid or not fitting ones are pruned; stand-ins
    shared by equal plans are evaluated once (same ``key``)."""
    from moesim.memory import memory_report

    for c in space.pools:
        t, p, ep = c.values["plan.tp"], c.values["plan.pp"], c.values["plan.ep"]
        group = t * p * ep  # a group over part of a node, or over whole nodes, is played alone; else a grain
        devices = group if group <= c.per_node or group % c.per_node == 0 else c.grain_devices
        try:
            sets, _ = hardware_sets(space.raw.get("hardware"), c.preset, devices)
            c.raw = pool_raw(space.raw, c.role, c.values, sets, devices // (t * p))
            c.scenario, _ = build(c.raw, [], space.base_dir)
        except InputError as exc:
            c.status, c.reason, c.detail = "pruned", "invalid", str(exc)
            continue
        mem = memory_report(c.scenario)
        if not mem.fits:
            c.status, c.reason = "pruned", "no-fit"
            c.detail = f"{c.role} pool: peak {mem.total_gib:.1f} GiB > {mem.capacity_gib:g} GiB"
            continue
        c.key = unit_key(c.raw)
        space.prices.setdefault(c.hardware, c.scenario.hardware.device.usd_per_hour / 3600.0)


def pair_count(space: DisaggSpace, keep=lambda c: True) -> int:
    """Whole plans (budget x prefill plan x decode plan with a split using every device) whose pool
    plans both pass ``keep``: counted by grain sizes, not listed."""
    from collections import Counter

    total = 0
    for label, budgets in space.budgets.items():
        grains = {role: Counter(c.grain_devices for c in space.pools if c.hardware == label and c.role == role
                                and keep(c)) for role in ROLES}
        for n in budgets:
            for gp, a in grains["prefill"].items():
                for gd, b in grains["decode"].items():
                    if any((n - k * gp) % gd == 0 for k in range(1, (n - gd) // gp + 1)):
                        total += a * b
    return total


def values_json(values: dict[str, Any]) -> str:
    return json.dumps(values, sort_keys=True)
