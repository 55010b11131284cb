"""The whole scenario: model + hardware + plan + workload + routing, with cross-field rules."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import Field, ValidationInfo, model_validator

from moesim.schemas._base import Strict
from moesim.schemas.hardware import HardwareSpec
from moesim.schemas.model import ModelSpec
from moesim.schemas.plan import PlanSpec
from moesim.schemas.workload import RoutingSpec, ServingWorkload, TrainingWorkload, Workload


class Scenario(Strict):
    """A model, the hardware it runs on, the parallelism plan, and what it does (train or serve).

    ``model`` and ``hardware`` may be a preset name (``model: mixtral-8x7b``), a mapping with
    ``preset:`` plus overrides, or (model only) a mapping with ``hf_config: path/to/config.json``.
    """

    name: str = Field("scenario", description="Scenario name, shown in reports and plot titles.")
    description: str = Field("", description="Free text.")
    model: ModelSpec = Field(description="A preset name, {preset: NAME, ...overrides}, {hf_config: config.json}, or the fields below.")
    hardware: HardwareSpec = Field(description="A preset name, {preset: NAME, ...overrides (deep-merged)}, or the fields below.")
    plan: PlanSpec = Field(PlanSpec(), description="Parallelism plan; dp*tp*pp must equal the hardware's devices.")
    workload: Workload = Field(description="kind: training (a step) or kind: serving (a request stream); fields below.")
    routing: RoutingSpec = Field(RoutingSpec(), description="Router popularity and capacity handling.")

    @model_validator(mode="before")
    @classmethod
    def _resolve_presets(cls, data: Any, info: ValidationInfo) -> Any:
        from moesim.resolve import resolve_presets  # local: resolve imports this module's siblings

        base_dir = (info.context or {}).get("base_dir") if info else None
        return resolve_presets(data, Path(base_dir) if base_dir else None)

    @model_validator(mode="after")
    def _cross_field(self, info: ValidationInfo) -> Scenario:
        m, p, hw = self.model, self.plan, self.hardware
        if m.n_heads % p.tp:
            raise ValueError(f"plan.tp = {p.tp}: must divide model.n_heads ({m.n_heads})")
        if m.kv_heads % p.tp and p.tp % m.kv_heads:
            raise ValueError(
                f"plan.tp = {p.tp}: must divide model.n_kv_heads ({m.kv_heads}) or be a multiple of it "
                "(then KV heads are replicated)"
            )
        if p.pp * p.virtual_stages > m.n_layers:
            raise ValueError(
                f"plan.pp = {p.pp}: pp * virtual_stages ({p.pp * p.virtual_stages}) must be <= model.n_layers ({m.n_layers})"
            )
        if m.n_experts % p.ep:
            raise ValueError(f"plan.ep = {p.ep}: must divide model.n_experts ({m.n_experts})")
        if p.n_devices != hw.n_devices:
            raise ValueError(
                f"plan: dp*tp*pp = {p.dp}*{p.tp}*{p.pp} = {p.n_devices} must equal the devices in hardware "
                f"({hw.node.devices_per_node} per node x {hw.cluster.nodes} nodes = {hw.n_devices})"
            )
        w = self.workload
        if isinstance(w, TrainingWorkload):
            fp8 = "fp8" in hw.device.compute_dtypes
            allowed = "fp32, bf16, fp16" + (", fp8" if fp8 else "")
            if m.dtype in ("int8", "int4"):
                raise ValueError(f"model.dtype = {m.dtype}: weight-only quantization is for serving, not training "
                                 f"(allowed for training: {allowed})")
            if m.dtype == "fp8" and not fp8:
                raise ValueError(f"model.dtype = fp8: training in fp8 needs fp8 tensor cores; {hw.device.name} "
                                 f"has none (allowed: {allowed})")
            per = p.dp * p.microbatches
            if w.global_batch_seqs % per:
                raise ValueError(
                    f"workload.global_batch_seqs = {w.global_batch_seqs}: must be a multiple of plan.dp * plan.microbatches ({per})"
                )
            if w.seq_len > m.max_seq_len:
                raise ValueError(f"workload.seq_len = {w.seq_len}: must be <= model.max_seq_len ({m.max_seq_len})")
        if isinstance(w, ServingWorkload):
            longest = w.prompt_tokens.upper_bound_tokens() + w.output_tokens.upper_bound_tokens()
            if longest and longest > m.max_seq_len:
                raise ValueError(
                    f"workload: prompt + output tokens can reach {longest}, more than model.max_seq_len ({m.max_seq_len})"
                )
        for label, path in (("hardware.profile", hw.profile), ("routing.trace", self.routing.trace)):
            if path is not None and not Path(path).is_file():
                raise ValueError(f"{label} = {str(path)!r}: file not found")
        if isinstance(w, ServingWorkload) and w.arrival.trace is not None and not Path(w.arrival.trace).is_file():
            raise ValueError(f"workload.arrival.trace = {str(w.arrival.trace)!r}: file not found")
        return self

    @property
    def is_training(self) -> bool:
        return isinstance(self.workload, TrainingWorkload)

