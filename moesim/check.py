"""The numbers ``moesim check`` prints: parameters, FLOPs, bytes, memory and the fits verdict."""

from __future__ import annotations

import numpy as np

from moesim.accounting import (
    decode_bytes_per_token,
    flops_per_token,
    kv_bytes_per_token,
    param_counts,
    serving_mean_context,
)
from moesim.costmodel.host import platform_text
from moesim.costmodel.model import build_cost_model, cost_model_text
from moesim.engine.local_attention import slot_map
from moesim.finetune import step_flops_per_token, trainable_summary
from moesim.fit_advice import fit_explanation
from moesim.memory import kv_cache_capacity_tokens, memory_report
from moesim.packing import micro_batch_seqs, rank_tokens
from moesim.precision import expert_precision, scenario_precision, summary_fields
from moesim.schemas import (
    Scenario,
    TrainingWorkload,
)
from moesim.schemas.scenario import pool_scenario
from moesim.stage_memory import uneven_split_note


def summary(s: Scenario) -> dict:
    """The numbers ``moesim check`` prints: parameters, FLOPs, bytes, memory, fits."""
    m = s.model
    p = param_counts(m)
    training = isinstance(s.workload, TrainingWorkload)
    if not training:
        refuse_unplayable_requests(s)
    seq = s.workload.seq_len if training else None
    context = None if training else serving_mean_context(s)
    # disaggregated serving: the decode pool holds each request's KV for its whole life
    pool = pool_scenario(s, "decode") if not training and s.workload.disaggregation is not None else s
    mem = memory_report(pool)
    prec = scenario_precision(s)
    build_cost_model(s.hardware)  # what simulate refuses (a field its cost model cannot read), check refuses too
    out = {
        "scenario": s.name,
        "model": m.name,
        "hardware": s.hardware.name,
        "devices": s.hardware.n_devices,
        "cost_model": cost_model_text(s.hardware),  # which model prices its kernels (a device name may pick it)
        "platform": platform_text(s.hardware.device.name),  # what the name picked: host costs, memory limits
        **summary_fields(s),  # compute_dtype, weight_bytes_per_param, precision_note
        "total_params": p.total,
        "active_params": p.active,
        "routed_expert_params": p.routed_experts,
        "flops_per_token": flops_per_token(m, seq, context),
        # serving trains nothing: its forward FLOPs above are the figure (a training figure at max_seq_len misled)
        **({"training_flops_per_token": step_flops_per_token(m, s.workload.trainable, seq, s.plan.recompute,
                                                             s.workload.mtp_layers)} if training else {}),
        # serving: the KV a token adds, and one sequence at the workload's mean context reads the weights and that
        # much KV cache (a training step keeps no KV cache and decodes nothing)
        **({} if training else {
            "kv_cache_bytes_per_token": kv_bytes_per_token(m, prec),
            "decode_bytes_per_token_batch1": decode_bytes_per_token(m, context or 0.0, prec=prec,
                                                                    expert_prec=expert_precision(s))}),
        "memory_per_device_gib": mem.total_gib,
        "memory": mem.as_dict(),
        "fits": mem.fits,
        "headroom_gib": mem.headroom_gib,
    }
    if training:  # the micro-batch plan.dp and plan.microbatches make, and for a fine-tune what the optimizer updates
        out["micro_batch_seqs"] = micro_batch_seqs(s.workload, s.plan)
        out["tokens_per_microbatch"] = rank_tokens(s.workload, s.plan)
        if note := uneven_split_note(m, s.plan):
            out["pipeline_note"] = note
        out.update(trainable_summary(m, s.workload.trainable))
    out["fits_reason"], out["fits_advice"] = fit_explanation(pool, mem)
    if not s.is_training:
        out["kv_cache_capacity_tokens"] = capacity = int(kv_cache_capacity_tokens(pool))
        # a whole max_seq_len sequence's KV slots (local layers keeping only their window: fewer)
        slots = slot_map(m, pool.workload.local_attention_mode)
        longest = m.max_seq_len if slots is None else int(slots(m.max_seq_len))
        out["kv_sequences_at_max_seq_len"] = int(capacity // longest)
    return out


def refuse_unplayable_requests(s: Scenario) -> None:
    """Raise the InputError simulate raises where it cannot draw the workload's requests (a length with ``dist:
    trace`` and no ``workload.arrival.trace``, a trace it cannot read): one request drawn as simulate draws them
    (:func:`moesim.engine.serving.requests.sample_requests`), so check refuses what simulate refuses, in its words,
    rather than price a fallback mean length."""
    # local: serving only, and it reads a trace file
    from moesim.engine.serving.requests import sample_requests

    w = s.workload
    one = w.model_copy(update={"arrival": w.arrival.model_copy(update={"n_requests": 1})})
    sample_requests(one, np.random.default_rng(0))
