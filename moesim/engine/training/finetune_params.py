"""Fine-tuning's parameters in the training step: what syncs, what the optimizer updates, what ZeRO gathers.

With ``workload.trainable`` other than ``all`` only the trainable parameters (``finetune.layer_trainable``,
LoRA: the adapters) have gradients: they alone are all-reduced (or reduce-scattered) over the
data-parallel groups and updated by Adam, so frozen weights add no gradient bytes. ZeRO-3 still
shards and gathers every weight (FSDP gathers frozen parameters for the forward and backward too),
priced at the weights' width (QLoRA's nf4 gathers would move ~1/4 of that: not modelled). ZeRO-1/2
gather after the optimizer step only what it updated: the trainable parameters. Megatron-Core's
distributed optimizer builds its parameter and gradient buffers from the parameters that require a
gradient (``megatron/core/distributed/distributed_data_parallel.py``: frozen ones are skipped), and
DeepSpeed's ZeRO-1/2 partitions the optimizer's parameter groups, which fine-tuning scripts fill with
the trainable ones; a frozen weight is replicated and never changes, so nothing gathers it.
A frozen embedding has no backward (its only gradient is the weight's scatter-add); a frozen output
head skips its weight-gradient GEMM.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from moesim.costmodel import CostModel
from moesim.engine.placement import Placement
from moesim.engine.training.gathers import weight_gathers
from moesim.finetune import embeddings_trainable, layer_trainable
from moesim.schemas import Scenario


@dataclass(frozen=True)
class FinetuneParams:
    """Trainable parameters per device (after TP/EP sharding, before ZeRO) and ZeRO-3's gathers."""

    dense_p: np.ndarray  # [L] trainable non-expert parameters of each layer
    expert_p: np.ndarray  # [L] trainable routed-expert parameters of each layer (this EP rank's)
    table: float  # trainable parameters of the embedding table
    head_p: float  # trainable parameters of the output head and final norm
    gather_layer_s: np.ndarray  # [L] all-reduce seconds of each layer's gathered weights (half: its gather)
    gather_layer_bytes: np.ndarray  # [L]: whole weights under ZeRO-3, the trainable ones under ZeRO-1/2
    gather_expert_s: np.ndarray  # [L] the routed experts' part of gather_layer_s
    gather_embed_s: float
    gather_head_s: float
    embeddings_frozen: bool

    def adjust(self, costs, head_gemm_s: float):
        """``costs`` (a ``LayerCosts``) with the frozen embedding and head's backward trimmed and
        the ZeRO parameter gathers (:func:`finetune_params`); ``head_gemm_s``: the output head GEMM's
        forward seconds."""
        out = replace(costs, gather_layer_s=self.gather_layer_s, gather_layer_bytes=self.gather_layer_bytes,
                      gather_expert_s=self.gather_expert_s,
                      gather_embed_s=self.gather_embed_s, gather_head_s=self.gather_head_s)
        if not self.embeddings_frozen:
            return out
        e_f, e_ar, _ = costs.embed_s
        h_f, h_b = costs.head_s
        return replace(out, embed_s=(e_f, e_ar, 0.0), head_s=(h_f, h_b - head_gemm_s), head_wgrad_s=0.0)


def finetune_params(s: Scenario, dense_p: np.ndarray, expert_p: np.ndarray, table: float, head_p: float,
                    weight_bytes: float, cm: CostModel, dp: tuple[int, int], expert_dp: tuple[int, int]) -> FinetuneParams:
    """The trainable share of each layer's parameters on one device, from the whole ones
    (``layer_params_per_device``: ``dense_p``, ``expert_p``; ``table``, ``head_p``), and the ZeRO
    parameter gathers: of the whole ones under ZeRO-3, of the trainable ones under ZeRO-1/2 (see the
    module's note). ``dp`` / ``expert_dp``: (group size, stride) of the dense and expert gradient
    syncs; ``weight_bytes``: bytes per gathered weight."""
    m, plan, spec = s.model, s.plan, s.workload.trainable
    per_rank = Placement.slots_per_rank(m.n_experts, plan.ep, s.placement.redundant_experts)
    layers = [layer_trainable(m, spec, i) for i in range(m.n_layers)]
    moe = np.array([m.is_moe_layer(i) for i in range(m.n_layers)])
    dense_t = np.array([lt.dense for lt in layers], dtype=float) / plan.tp
    expert_t = np.where(moe, per_rank * np.array([lt.per_expert for lt in layers], dtype=float), 0.0) / plan.expert_tp
    emb = embeddings_trainable(spec)
    table_t, head_t = (table, head_p) if emb else (0.0, 0.0)
    whole = plan.zero_stage >= 3  # ZeRO-3 gathers every weight it shards; ZeRO-1/2 what the step updated
    g = (weight_gathers(cm, dense_p, expert_p, table, head_p, weight_bytes, dp, expert_dp) if whole else
         weight_gathers(cm, dense_t, expert_t, table_t, head_t, weight_bytes, dp, expert_dp))
    return FinetuneParams(
        dense_p=dense_t, expert_p=expert_t, table=table_t, head_p=head_t,
        gather_layer_s=g.layer_s, gather_layer_bytes=g.layer_bytes, gather_expert_s=g.expert_s,
        gather_embed_s=g.embed_s, gather_head_s=g.head_s,
        embeddings_frozen=not emb)
