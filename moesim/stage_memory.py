"""Pipeline stages' memory: which layers and parameters a stage holds, and the stage holding the most.

A stage's layers come from the schedule's chunks (``Schedule.chunk_layers``); its parameters scale
with them (:func:`stage_params`); its activations at the peak come from playing its order
(:func:`live_activation_peaks`). ``memory.memory_report`` prices stage 0 and asks
:func:`busiest_stage` (uneven splits, the last stage's logits) or :func:`dualpipe_busiest_stage`
(DualPipe's two chunks per stage) when another stage may hold more. Pure functions.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import numpy as np

from moesim.accounting import param_counts, tp_replicated_attention_params
from moesim.activations import loss_or_work
from moesim.engine.training.schedules import schedule_for
from moesim.finetune import first_trainable_layer
from moesim.schemas import ModelSpec, PlanSpec, Scenario

#: (weights, gradients, optimizer) bytes of one pipeline stage's parameters (its direction-0 chunk).
ParamsOf = Callable[[int], tuple[float, float, float]]


def stage_layers(m: ModelSpec, plan: PlanSpec, stage: int = 0) -> list[int]:
    """0-based layers whose activations one microbatch leaves on pipeline stage ``stage``
    (``schedule_for(plan).stage_layers``): the ``numpy.array_split`` chunks the engine plays
    (``Schedule.chunk_layers``), stage ``s`` holding chunks ``s, s + pp, ...``; under DualPipe the
    stage's direction-0 chunk (a microbatch passes one of its two)."""
    return schedule_for(plan).stage_layers(m.n_layers, stage, plan.pp, plan.virtual_stages)


def outside_params(m: ModelSpec, plan: PlanSpec, stage: int = 0) -> float:
    """Parameters of pipeline stage ``stage`` outside its blocks, before TP: the embedding table with the first
    model chunk (stage 0), the final norm and the output head with the last (stage ``pp - 1``; under
    ``tied_embeddings`` its own copy of the table unless that is stage 0 too); see :func:`stage_params`."""
    table = m.vocab_size * m.d_model
    out = table if stage == 0 else 0  # the first chunk runs on stage 0 in every schedule, even with no layer
    if stage == plan.pp - 1:  # and the last on stage pp - 1 (DualPipe: direction 0's)
        out += m.d_model + (table if not m.tied_embeddings or stage != 0 else 0)
    return float(out)


def stage_params(m: ModelSpec, plan: PlanSpec, stage: int = 0, p=None) -> tuple[float, float]:
    """(dense, routed-expert) parameters one device of pipeline stage ``stage`` holds, before ZeRO and
    EPLB copies: its own layers (:func:`stage_layers`; under DualPipe its direction-0 chunk) split over
    ``tp`` (MLA's down-projections whole on every TP rank) and the experts over ``ep * expert_tp``, plus
    the parameters outside the layers where Megatron-core builds them (``pre_process`` /
    ``post_process``): the embedding with the first model chunk (stage 0), the final norm and the output
    head with the last (stage ``pp - 1``), which under ``tied_embeddings`` keeps its own copy of the
    embedding (vocabulary split over ``tp``). A ``pipeline_layout`` chunk may hold no layer and still
    hold the embedding or the head."""
    p = p or param_counts(m)
    own = stage_layers(m, plan, stage)
    n_moe = m.n_moe_layers
    n_dense = m.n_layers - n_moe
    whole = tp_replicated_attention_params(m)  # per layer, on every TP rank
    split = (p.attention / m.n_layers - whole + 2 * m.d_model) * len(own)  # attention and the two norms
    moe_own = sum(1 for i in own if m.is_moe_layer(i))
    split += (len(own) - moe_own) * (p.dense_ffn / n_dense if n_dense else 0.0)
    split += moe_own * ((p.shared_experts + p.router) / n_moe if n_moe else 0.0)
    split += outside_params(m, plan, stage)
    dense = split / plan.tp + whole * len(own)
    experts = moe_own * (p.routed_experts / n_moe if n_moe else 0.0) / (plan.ep * plan.expert_tp)
    return dense, experts


def busiest_stage(s: Scenario, params_of: ParamsOf, stored0: float, kept: dict[bool, float],
                   head: float, work: list[float], rate: float,
                   head_params: tuple[float, float, float] = (0.0, 0.0, 0.0)) -> tuple[float, float, float, float, int]:
    """(weights, grads, optimizer, activations) bytes of the stage holding the most, and that stage, for a plan whose
    first or last stage has its own layer count (``plan.first_stage_layers`` / ``last_stage_layers``)
    or whose last stage's head, logits or layers may outweigh stage 0's embedding and extra activations.

    Stage 0 is then not the busiest by construction: a later stage may hold more layers. Each
    stage's parameters are ``params_of(stage)`` ((weights, grads, optimizer) bytes of
    :func:`stage_params`, as :func:`memory_report` prices them), its
    activations are the peak, over the schedule's order on that stage, of the layers whose forward
    activations are live (a chunk's from its forward to its input-gradient backward) x the bytes
    per token of each layer, scaled like stage 0's (which carries the in-flight rules above); the
    last stage adds ``head``, the loss's logits (:func:`loss_logits_bytes`), or its ``work`` when
    that is more (:func:`loss_or_work`); the others their ``work``, the bytes one layer's recompute
    re-creates (per stage). ``stored0``: stage 0's stored activations, without ``work``.
    ``kept``: activation bytes per token a dense / MoE layer keeps (:func:`per_layer_kind`), as
    :func:`memory_report` priced stage 0; ``rate``: the tokens times microbatches in flight it
    multiplied them by. Blocks before the first trainable one (``workload.trainable.layers``) keep
    nothing; stage 0's scale is taken with every block counted, so a stage 0 of frozen blocks only
    still scales the others.
    """
    m, plan = s.model, s.plan
    first = first_trainable_layer(m, s.workload.trainable)
    every = [kept[m.is_moe_layer(i)] for i in range(m.n_layers)]
    per_layer = [b if i >= first else 0.0 for i, b in enumerate(every)]
    peaks = live_activation_peaks(plan, m.n_layers, per_layer)
    peak0 = live_activation_peaks(plan, m.n_layers, every)[0] if first else peaks[0]
    # stored bytes per live byte of one microbatch's tokens, from stage 0 (which carries the in-flight rules)
    scale0 = rate * sum(every[i] for i in stage_layers(m, plan, 0)) / peak0 if peak0 > 0 else 0.0
    best, best_stage = (*params_of(0), stored0 + work[0]), 0
    best_total = sum(best)
    for st in range(1, plan.pp):
        extra = loss_or_work(head, work[st]) if st == plan.pp - 1 else work[st]
        acts = (scale0 * peaks[st] if peak0 > 0 else stored0) + extra
        more = head_params if st == plan.pp - 1 else (0.0, 0.0, 0.0)
        parts = (*(a + c for a, c in zip(params_of(st), more)), acts)
        if sum(parts) > best_total:
            best, best_total, best_stage = parts, sum(parts), st
    return (*best, best_stage)


def dualpipe_busiest_stage(s: Scenario, params_of: ParamsOf, kept: dict[bool, float], head: float,
                            work, tokens: float,
                            head_params: tuple[float, float, float] = (0.0, 0.0, 0.0)) -> tuple[float, float, float, float, int]:
    """(weights, grads, optimizer, activations) bytes of the busiest stage of a DualPipe plan, and that stage.

    A stage holds two chunks, its own of direction 0 and stage ``pp - 1 - s``'s of direction 1, which
    differ when the layers split unevenly (DeepSeek-V3: 61 over 16 stages, the first three dense) or a
    frozen prefix (``workload.trainable.layers``) keeps nothing for some of them. So each stage's
    parameters are its two chunks' (``params_of``, as :func:`busiest_stage`: stage 0 holds the embedding
    and, with direction 1's last chunk of the deepest layers, the output head), and its activations come from
    playing its order
    (:func:`live_activation_peaks`, ``tokens`` per microbatch), not from the closed form's ``p + 1``
    microbatches through stage 0's chunk. Stages 0 and ``pp - 1`` each compute a direction's loss and
    add ``head`` (:func:`loss_or_work`); the others the bytes one layer's recompute re-creates
    (``work(stage)``)."""
    m, plan = s.model, s.plan
    first = first_trainable_layer(m, s.workload.trainable)
    per_layer = [kept[m.is_moe_layer(i)] if i >= first else 0.0 for i in range(m.n_layers)]
    # the order holds its peak from 2 pp microbatches on (warm-up done); a what-if plan of fit_advice's
    # (pp doubled, microbatches kept) may have fewer than the order needs
    played = plan.model_copy(update={"microbatches": max(plan.microbatches, 2 * plan.pp)})
    peaks = live_activation_peaks(played, m.n_layers, per_layer)
    best: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 0.0)
    best_stage = 0
    for st in range(plan.pp):
        end = st in (0, plan.pp - 1)
        acts = tokens * peaks[st] + (loss_or_work(head, work(st)) if end else work(st))
        more = head_params if end else (0.0, 0.0, 0.0)
        parts = (*(a + c + x for a, c, x in zip(params_of(st), params_of(plan.pp - 1 - st), more)), acts)
        if sum(parts) > sum(best):
            best, best_stage = parts, st
    return (*best, best_stage)


def live_activation_peaks(plan: PlanSpec, n_layers: int, per_layer: list[float]) -> list[float]:
    """Per stage, the most activation bytes per token of one microbatch that its live chunks hold at once,
    over the schedule's order on it (``per_layer`` holds ``n_layers`` entries): a microbatch's forward of
    a chunk adds its layers' ``per_layer`` bytes, that chunk's whole or input-gradient backward frees
    them. Under DualPipe this is the closed form's ``p + 1`` microbatches through a chunk when the
    stage's two chunks are alike (DeepSeek-V3's 61 layers over 16 stages: 67 layer-microbatches on stage
    0, whose chunks hold 4 and 3 layers, against 17 x 4), and what the order really keeps when they
    are not. The chunks' bytes are summed once for all stages."""
    sizes = _chunk_bytes(plan, per_layer)
    return [_peak(plan, sizes, n_layers, st) for st in range(plan.pp)]


def _chunk_bytes(plan: PlanSpec, per_layer: list[float]) -> np.ndarray:
    """``per_layer`` summed over each global chunk's layers (``Schedule.chunk_layers``)."""
    chunks = schedule_for(plan).chunk_layers(len(per_layer), plan.pp, plan.virtual_stages)
    return np.array([sum(per_layer[i] for i in ch) for ch in chunks])


def _peak(plan: PlanSpec, sizes: np.ndarray, n_layers: int, stage: int) -> float:
    """Stage ``stage``'s entry of :func:`live_activation_peaks`, from the chunks' bytes ``sizes``."""
    layout = tuple(plan.pipeline_layout) if plan.pipeline_layout is not None else None
    chunks, signs = _chunk_events(plan.schedule, plan.first_stage_layers, plan.last_stage_layers, layout, plan.pp,
                                  plan.microbatches, plan.virtual_stages, n_layers, stage)
    if not len(chunks):
        return 0.0
    return max(0.0, float(np.cumsum(sizes[chunks] * signs).max()))


@functools.lru_cache(maxsize=256)
def _chunk_events(schedule: str, first: int | None, last: int | None, layout: tuple[int, ...] | None, pp: int,
                  m: int, v: int, n_layers: int, stage: int) -> tuple[np.ndarray, np.ndarray]:
    """(global chunk, +1 / -1 / 0) of each unit ``stage`` runs, in order: +1 a forward (its activations
    allocated), -1 a whole or input-gradient backward (freed), 0 a weight-gradient one. Cached: a
    sweep re-prices the same order many times."""
    from moesim.engine.training.schedules import Unit, get_schedule

    sched = get_schedule(schedule).with_split(first, last, layout)
    chunks, signs = [], []
    for entry in sched.order(stage, pp, m, v):
        for u in ([entry] if isinstance(entry, Unit) else entry):
            chunks.append(int(sched.global_chunk(stage, u.chunk, pp)))
            signs.append(-1.0 if u.backward and u.part in ("", "B") else (0.0 if u.backward else 1.0))
    return np.array(chunks, dtype=int), np.array(signs)


def held_layers(plan: PlanSpec, n_layers: int, stage: int) -> list[int]:
    """0-based layers whose weights pipeline stage ``stage`` holds, ascending: every layer of every
    chunk the schedule places on it (under DualPipe both directions' chunks, where
    :func:`stage_layers` gives the direction-0 one a microbatch passes)."""
    sched = schedule_for(plan)
    chunks = sched.chunk_layers(n_layers, plan.pp, plan.virtual_stages)
    return sorted({int(x) for c, ch in enumerate(chunks) if sched.stage_of(c, plan.pp) == stage for x in ch})


def uneven_split_note(m: ModelSpec, plan: PlanSpec) -> str:
    """A line for a plan whose pipeline chunks get different layer counts without the plan saying so (no
    ``first_stage_layers`` / ``last_stage_layers`` / ``pipeline_layout``): the counts moesim gives them
    (``Schedule.chunk_layers``' even split, larger chunks first) and that Megatron-LM refuses such a plan
    unless told where the layers go; "" when every chunk gets as many layers or the plan places them."""
    if plan.pp == 1 or plan.splits_layers:
        return ""
    sizes = schedule_for(plan).model_chunk_sizes(m.n_layers, plan.pp, plan.virtual_stages)  # DualPipe's once
    if len(set(sizes)) == 1:
        return ""
    counts = ", ".join(f"{sizes.count(n)} of {n}" for n in sorted(set(sizes), reverse=True))
    over = f"plan.pp {plan.pp}" + (f" x plan.virtual_stages {plan.virtual_stages}" if plan.virtual_stages > 1 else "")
    return (f"model.n_layers {m.n_layers} does not split evenly over {len(sizes)} pipeline chunks ({over}): moesim "
            f"gives them {counts} layers; Megatron-LM refuses an uneven split unless told where the layers go "
            "(plan.first_stage_layers / plan.last_stage_layers or plan.pipeline_layout)")
