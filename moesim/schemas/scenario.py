"""The whole scenario: model + hardware + plan + workload + routing, with cross-field rules."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import Field, ValidationInfo, model_validator

from moesim.presets.hardware import node_hint
from moesim.schemas._base import Strict
from moesim.schemas.hardware import HardwareSpec
from moesim.schemas.model import ModelSpec
from moesim.schemas.placement import PlacementSpec
from moesim.schemas.plan import PlanSpec
from moesim.schemas.request_limits import check_expert_tables, check_whole_prompts
from moesim.schemas.routing import RoutingSpec
from moesim.schemas.workload import ServingWorkload, TrainingWorkload, Workload


class Scenario(Strict):
    """A model, the hardware it runs on, the parallelism plan, and what it does (train or serve).

    ``model`` and ``hardware`` may be a preset name (``model: mixtral-8x7b``), a mapping with
    ``preset:`` plus overrides, or (model only) a mapping with ``hf_config: path/to/config.json``.
    """

    name: str = Field("scenario", description="Scenario name, shown in reports and plot titles.")
    description: str = Field("", description="Free text.")
    model: ModelSpec = Field(description="A preset name, {preset: NAME, ...overrides}, {hf_config: config.json}, or the fields below.")
    hardware: HardwareSpec = Field(description="A preset name, {preset: NAME, ...overrides (deep-merged)}, or the fields below.")
    plan: PlanSpec = Field(PlanSpec(), description="Parallelism plan; dp*tp*pp*cp must equal the hardware's devices.")
    workload: Workload = Field(description="kind: training (a step) or kind: serving (a request stream); fields below.")
    routing: RoutingSpec = Field(RoutingSpec(), description="Router popularity and capacity handling.")
    placement: PlacementSpec = Field(PlacementSpec(), description="Expert placement on the EP ranks: redundant copies of hot experts (EPLB).")

    @model_validator(mode="before")
    @classmethod
    def _resolve_presets(cls, data: Any, info: ValidationInfo) -> Any:
        from moesim.resolve import resolve_presets  # local: resolve imports this module's siblings

        base_dir = (info.context or {}).get("base_dir") if info else None
        return resolve_presets(data, Path(base_dir) if base_dir else None)

    @model_validator(mode="after")
    def _cross_field(self, info: ValidationInfo) -> Scenario:
        m, p, hw = self.model, self.plan, self.hardware
        w = self.workload
        disagg = w.disaggregation if isinstance(w, ServingWorkload) else None
        if isinstance(w, ServingWorkload):
            _check_serving_plans(p, disagg)
        if disagg is None:
            _check_plan(m, p, self.placement, "plan")
            if p.n_devices != hw.n_devices:
                raise ValueError(
                    f"plan: dp*tp*pp*cp = {p.dp}*{p.tp}*{p.pp}*{p.cp} = {p.n_devices} must equal the devices in hardware "
                    f"({hw.node.devices_per_node} per node x {hw.cluster.nodes} node{'s' if hw.cluster.nodes != 1 else ''} = {hw.n_devices})"
                    + _either(dp_hint(p, hw.n_devices), node_hint(p.n_devices, hw.node.devices_per_node, hw.cluster.nodes))
                )
        else:
            _check_pools(self, disagg)
        if isinstance(w, TrainingWorkload):
            from moesim.engine.training.layer_split import check_layer_split

            check_layer_split(m.n_layers, p)  # plan.first_stage_layers / last_stage_layers against model.n_layers
            from moesim.precision import NATIVE_COMPUTE, WEIGHT_ONLY, compute_dtype

            have = hw.device.compute_dtypes
            allowed = "fp32, bf16, fp16" + (", fp8" if "fp8" in have else "") + (", nvfp4" if "fp4" in have else "")
            if m.dtype in WEIGHT_ONLY:
                raise ValueError(f"model.dtype = {m.dtype}: quantized weights (int8, int4, mxfp4) are for serving, not training "
                                 f"(allowed for training: {allowed})")
            native = NATIVE_COMPUTE.get(m.dtype, m.dtype)
            if compute_dtype(m.dtype, have) != native:  # it would run weight-only: no tensor cores for its math
                raise ValueError(f"model.dtype = {m.dtype}: training in {m.dtype} needs {native} tensor cores; "
                                 f"{hw.device.name} has none (allowed: {allowed})")
            if m.expert_dtype not in (None, m.dtype):
                raise ValueError(f"model.expert_dtype = {m.expert_dtype}: a separate expert dtype is for serving; "
                                 f"training keeps every weight in model.dtype (allowed: null or {m.dtype}; a "
                                 "quantized checkpoint's config.json sets it: write expert_dtype: null to train)")
            per = p.dp * p.microbatches
            if w.global_batch_seqs % per:
                raise ValueError(
                    f"workload.global_batch_seqs = {w.global_batch_seqs}: must be a multiple of plan.dp * plan.microbatches "
                    f"({p.dp} x {p.microbatches} = {per}){_batch_hint(w.global_batch_seqs, p.dp, per)}")
            if w.seq_len > m.max_seq_len:
                raise ValueError(f"workload.seq_len = {w.seq_len}: must be <= model.max_seq_len ({m.max_seq_len})")
            if w.trainable.layers is not None and w.trainable.layers > m.n_layers:
                raise ValueError(f"workload.trainable.layers = {w.trainable.layers}: must be <= model.n_layers "
                                 f"({m.n_layers}); null trains every block")
            if p.expert_tp != p.tp and w.seq_len % (p.cp * p.tp):
                raise ValueError(
                    f"workload.seq_len = {w.seq_len}: with plan.etp < plan.tp it must be a multiple of plan.cp * plan.tp "
                    f"({p.cp * p.tp}); each TP rank dispatches its own seq_len / (cp * tp) tokens (sequence parallelism)")
            if p.cp > 1 and w.seq_len % (2 * p.cp):
                raise ValueError(
                    f"workload.seq_len = {w.seq_len}: must be a multiple of 2 * plan.cp ({2 * p.cp}); context "
                    "parallelism splits each sequence into 2*cp load-balanced chunks (Megatron-core)")
            if p.cp > 1 and p.cp_comm == "a2a":
                _check_a2a_heads(m, p)
        if isinstance(w, ServingWorkload):
            longest = w.prompt_tokens.upper_bound_tokens() + w.output_tokens.upper_bound_tokens()
            if longest and longest > m.max_seq_len:
                raise ValueError(
                    f"workload: prompt + output tokens can reach {longest}, more than model.max_seq_len ({m.max_seq_len})"
                )
            check_whole_prompts(w)  # unbounded prompts over the budget are refused at arrival instead
            check_expert_tables(m, w, self.routing)
            if w.speculative is not None:
                _check_speculative(self if disagg is None else pool_scenario(self, "decode"))
            if w.mxfp4_activations == "mxfp8" and "fp4" not in hw.device.compute_dtypes:
                raise ValueError(f"workload.mxfp4_activations = mxfp8: needs FP4-capable tensor cores (a "
                                 f"hardware.device.peak_tflops fp4 key, Blackwell); {hw.device.name} has none; "
                                 "allowed here: auto, bf16")
            plans = [p] if disagg is None else [disagg.prefill.plan, disagg.decode.plan]
            if w.dp_attention_balance is not None and not any(q.dp_attention for q in plans):
                raise ValueError("workload.dp_attention_balance: needs plan.dp_attention: true (it lines up the prompts "
                                 "of a lock-step group's ranks); allowed without it: null")
        # paths in a scenario are read from the scenario file's folder; in --set, from the shell's first (loader)
        where = "file not found (a relative path is read from the scenario file's folder; in --set, from the " \
                "working folder first)"
        for label, path in (("hardware.profile", hw.profile), ("routing.trace", self.routing.trace)):
            if path is not None and not Path(path).is_file():
                raise ValueError(f"{label} = {str(path)!r}: {where}")
        if isinstance(w, ServingWorkload) and w.arrival.trace is not None and not Path(w.arrival.trace).is_file():
            raise ValueError(f"workload.arrival.trace = {str(w.arrival.trace)!r}: {where}")
        return self

    @property
    def is_training(self) -> bool:
        return isinstance(self.workload, TrainingWorkload)



def _batch_hint(global_batch: int, dp: int, per: int) -> str:
    """What would divide: the micro-batch counts that split ``global_batch`` sequences over ``dp`` replicas, or
    when ``dp`` does not divide it the nearest global batches that ``per`` (dp x microbatches) does."""
    if global_batch % dp:
        near = [b for b in (global_batch // per * per, (global_batch // per + 1) * per) if b > 0]
        return f"; the nearest that divide: {' or '.join(map(str, near))}"
    per_replica = global_batch // dp
    counts = [c for c in range(1, per_replica + 1) if per_replica % c == 0]
    shown = counts if len(counts) <= 8 else [*counts[:4], "...", *counts[-3:]]
    return f"; with plan.dp {dp}, plan.microbatches may be {', '.join(map(str, shown))}"


def _check_plan(m: ModelSpec, p: PlanSpec, placement: PlacementSpec, where: str) -> None:
    """The plan ``p`` (at ``where``: "plan" or a pool's "workload.disaggregation.prefill.plan") shards ``m``."""
    bad_heads = heads_tp_mismatch(m, p.tp)
    if bad_heads == "n_heads":
        raise ValueError(f"{where}.tp = {p.tp}: must divide model.n_heads ({m.n_heads})")
    if bad_heads == "n_kv_heads":
        raise ValueError(
            f"{where}.tp = {p.tp}: must divide model.n_kv_heads ({m.kv_heads}) or be a multiple of it "
            "(then KV heads are replicated)"
        )
    if p.pipeline_layout is None and p.pp * p.virtual_stages > m.n_layers:  # a layout may leave chunks empty
        raise ValueError(
            f"{where}.pp = {p.pp}: pp * virtual_stages ({p.pp * p.virtual_stages}) must be <= model.n_layers ({m.n_layers})"
        )
    n_red = placement.redundant_experts
    red = "placement.redundant_experts" if where == "plan" else where.replace(".plan", ".placement.redundant_experts")
    if n_red and m.n_experts <= 1:
        raise ValueError(f"{red} = {n_red}: needs routed experts (model.n_experts > 1); allowed: 0")
    if n_red > m.n_experts:
        raise ValueError(f"{red} = {n_red}: must be at most model.n_experts ({m.n_experts}); allowed: 0 to {m.n_experts}")
    if n_red and (m.n_experts + n_red) % p.ep:
        raise ValueError(f"{where}.ep = {p.ep}: must divide model.n_experts + {red} "
                         f"({m.n_experts} + {n_red} = {m.n_experts + n_red})")
    if not n_red and m.n_experts % p.ep:
        if m.n_experts <= 1:
            raise ValueError(f"{where}.ep = {p.ep}: model {m.name} is dense (model.n_experts 1), nothing to spread "
                             f"over expert parallelism; allowed: 1")
        raise ValueError(f"{where}.ep = {p.ep}: must divide model.n_experts ({m.n_experts}); allowed: "
                         f"{_divisors_text(m.n_experts, keep=lambda d: p.ep_group_rule_broken(d) is None)}")
    if p.expert_tp != p.tp and m.n_experts <= 1:
        raise ValueError(f"{where}.etp = {p.etp}: needs routed experts (model.n_experts > 1); leave it unset")
    if p.recompute_modules:
        _check_recompute_modules(m, p.recompute_modules, where)


def _divisors_text(n: int, most: int = 12, keep=lambda d: True) -> str:
    """The divisors of ``n`` that ``keep`` accepts, ascending, the first ``most`` of them and then the largest
    ("1, 2, ..., 60")."""
    divisors = [d for d in range(1, n + 1) if n % d == 0 and keep(d)]
    shown = divisors if len(divisors) <= most else divisors[:most - 1] + ["...", divisors[-1]]
    return ", ".join(str(d) for d in shown)


def _check_recompute_modules(m: ModelSpec, modules: list[str], where: str) -> None:
    """Each module must have something to re-run in ``m`` (Megatron refuses mla_up_proj without MLA;
    a module with nothing to re-run would be a silent no-op)."""
    n_moe = m.n_moe_layers
    has = {"core_attn": True, "layernorm": m.mla is not None or n_moe > 0, "mla_up_proj": m.mla is not None,
           "moe": n_moe > 0, "moe_act": n_moe > 0 and m.n_experts > 1,
           "shared_experts": n_moe > 0 and m.n_shared_experts > 0, "mlp": n_moe < m.n_layers}
    need = {"layernorm": "a pre-norm that is a layer of its own (a MoE block's or MLA's input norm; Transformer "
                         "Engine fuses the others into their GEMM)",
            "mla_up_proj": "multi-head latent attention (model.mla)", "moe": "MoE layers",
            "moe_act": "routed experts (model.n_experts > 1)", "shared_experts": "shared experts (model.n_shared_experts)",
            "mlp": "dense FFN layers"}
    for mod in modules:
        if not has[mod]:
            allowed = ", ".join(k for k, ok in has.items() if ok)
            raise ValueError(f"{where}.recompute_modules: {mod} needs {need[mod]}, which {m.name} has not; "
                             f"allowed for it: {allowed}")


def _check_serving_plans(p: PlanSpec, disagg) -> None:
    """Serving runs without context parallelism (``cp`` of the plan, or of each pool's, is 1) and
    with experts split over ``tp`` (``etp`` unset or ``tp``)."""
    plans = [("plan", p)] if disagg is None else [("plan", p)] + [
        (f"workload.disaggregation.{role}.plan", getattr(disagg, role).plan) for role in POOLS]
    for where, plan in plans:
        if plan.cp != 1:
            raise ValueError(f"{where}.cp = {plan.cp}: context parallelism is for training; serving splits "
                             "requests over plan.dp replicas and the model over tp/pp/ep (allowed: 1)")
        if plan.expert_tp != plan.tp and not plan.ep_in_tp_group:
            raise ValueError(f"{where}.etp = {plan.etp}: serving splits each expert over tp (allowed: unset or "
                             f"{plan.tp}) or keeps whole experts in EP over the TP group (etp 1 with "
                             f"{where}.ep = {where}.tp = {plan.tp})")
        if plan.ep_in_tp_group and plan.dp_attention:
            raise ValueError(f"{where}.dp_attention: experts in EP over the TP group (etp 1, ep = tp) keep attention "
                             "on tp; attention data parallelism needs EP carved out of dp (leave etp unset)")
        if plan.ep_in_tp_group and plan.overlap_alltoall:
            raise ValueError(f"{where}.overlap_alltoall: experts in EP over the TP group (etp 1, ep = tp) dispatch "
                             "nothing (the tokens are on every TP rank), so there is no all-to-all to overlap")
        if plan.recompute_modules is not None:
            raise ValueError(f"{where}.recompute_modules: activation recomputation is for training; leave it unset")
        for name in ("first_stage_layers", "last_stage_layers", "pipeline_layout"):
            if getattr(plan, name) is not None:
                raise ValueError(f"{where}.{name} = {getattr(plan, name)}: the uneven pipeline split is for training; "
                                 "serving splits the layers evenly over pp (leave it unset)")


def _check_pools(s: Scenario, d) -> None:
    """Disaggregated serving: the top-level plan is left out, each pool's plan shards the model and
    is whole nodes, and the pools add up to the hardware's devices."""
    hw, per_node = s.hardware, s.hardware.node.devices_per_node
    if "plan" in s.model_fields_set and s.plan != PlanSpec():  # a dumped scenario carries the default back
        raise ValueError("plan: leave it out when workload.disaggregation is set; each pool has its own plan "
                         "(workload.disaggregation.prefill.plan, workload.disaggregation.decode.plan)")
    for role in ("prefill", "decode"):
        pool = getattr(d, role)
        where = f"workload.disaggregation.{role}.plan"
        _check_plan(s.model, pool.plan, pool.placement or s.placement, where)
        if pool.plan.n_devices % per_node:
            raise ValueError(f"{where}: dp*tp*pp*cp = {pool.plan.n_devices} devices must be whole nodes "
                             f"(a multiple of hardware.node.devices_per_node = {per_node})")
    if d.n_devices != hw.n_devices:
        raise ValueError(
            f"workload.disaggregation: prefill ({d.prefill.plan.n_devices} devices) + decode "
            f"({d.decode.plan.n_devices}) = {d.n_devices} must equal the devices in hardware "
            f"({per_node} per node x {hw.cluster.nodes} node{'s' if hw.cluster.nodes != 1 else ''} = {hw.n_devices})")


def heads_tp_mismatch(m: ModelSpec, tp: int) -> str | None:
    """None when ``tp`` shards ``m``'s attention heads (it divides n_heads, and divides the KV heads
    or is a multiple of them: then KV heads are replicated); else the field that does not split."""
    if m.n_heads % tp:
        return "n_heads"
    if m.kv_heads % tp and tp % m.kv_heads:
        return "n_kv_heads"
    return None


def _check_a2a_heads(m: ModelSpec, p: PlanSpec) -> None:
    """Ulysses context parallelism (plan.cp_comm a2a) hands each CP rank n_heads / (tp * cp) query
    heads and as large a share of the KV heads (Transformer Engine asserts both divide by cp); MLA,
    trained with per-head K and V, has as many KV heads as query heads."""
    heads = m.n_heads // p.tp
    kv = heads if m.mla is not None else max(m.kv_heads // p.tp, 1)
    for name, n in (("model.n_heads", heads), ("model.n_kv_heads", kv)):
        if n % p.cp:
            raise ValueError(f"plan.cp_comm = a2a: {name} per TP rank ({n}) must be a multiple of plan.cp ({p.cp}); "
                             "each CP rank attends over whole heads; allowed: cp_comm p2p, or a cp that divides them")


def _check_speculative(s: Scenario) -> None:
    """The drafter must shard like the target and fit next to it (one line naming the field)."""
    from moesim.accounting import GIB
    from moesim.memory import spec_weight_bytes_per_device, weight_params_per_device
    from moesim.precision import parameter_bytes

    spec, tp, m = s.workload.speculative, s.plan.tp, s.model
    d = spec.draft
    if d is not None:
        if heads_tp_mismatch(d, tp):
            raise ValueError(f"workload.speculative.draft: plan.tp = {tp} must divide the draft's n_heads ({d.n_heads}) "
                             f"and n_kv_heads ({d.kv_heads}) or be a multiple of n_kv_heads")
        if d.vocab_size != m.vocab_size:
            raise ValueError(f"workload.speculative.draft.vocab_size = {d.vocab_size}: must equal the target's "
                             f"({m.vocab_size}): the target verifies the draft's tokens")
    dense, experts = weight_params_per_device(m, s.plan, s.placement.redundant_experts)
    target = parameter_bytes(s, dense, experts)
    extra = spec_weight_bytes_per_device(s)
    cap = s.hardware.device.mem_gib * GIB
    if target + extra > cap:
        what = "draft" if d is not None else "mtp heads"
        raise ValueError(f"workload.speculative: the {what} ({extra / GIB:.1f} GiB per device) does not fit next to the "
                         f"target's weights ({target / GIB:.1f} GiB) in {s.hardware.device.mem_gib:g} GiB; allowed: a "
                         f"drafter of at most {max(cap - target, 0) / GIB:.1f} GiB per device")


#: The two pools of a disaggregated deployment.
POOLS = ("prefill", "decode")


def dp_hint(p, devices: int) -> str:
    """For the plan-size error: the data parallelism that fills the hardware's ``devices`` with the
    plan's other degrees (a sweep over ``plan.tp`` at fixed ``plan.dp`` lands here); "" when none does."""
    rest = p.tp * p.pp * p.cp
    return f"set plan.dp: {devices // rest} to keep the hardware" if devices % rest == 0 else ""


def _either(*hints: str) -> str:
    """The plan-size error's tail: the hints that apply, as alternatives ("" when none does)."""
    hints = tuple(h for h in hints if h)
    return "; " + "; or ".join(hints) if hints else ""


def pool_scenario(s: Scenario, role: str) -> Scenario:
    """One pool of a disaggregated serving scenario as a scenario of its own.

    Its plan, placement and batch limits are the pool's; its hardware is the pool's nodes; its
    workload has no disaggregation, and speculative decoding only in the decode pool. An
    unvalidated copy of an already-validated scenario (the pool rules are checked by ``Scenario``).
    """
    w = s.workload
    pool = getattr(w.disaggregation, role)
    hw = s.hardware
    nodes = pool.plan.n_devices // hw.node.devices_per_node
    pool_w = w.model_copy(update={
        "disaggregation": None,
        "speculative": w.speculative if role == "decode" else None,
        "max_batch_seqs": pool.max_batch_seqs or w.max_batch_seqs,
        "max_batch_tokens": pool.max_batch_tokens or w.max_batch_tokens,
    })
    return s.model_copy(update={
        "name": f"{s.name} [{role}]",
        "plan": pool.plan,
        "placement": pool.placement or s.placement,
        "hardware": hw.model_copy(update={"cluster": hw.cluster.model_copy(update={"nodes": nodes})}),
        "workload": pool_w,
    })
