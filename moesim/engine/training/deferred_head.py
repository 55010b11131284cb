"""The output head's weight gradient held back to the pipeline's drain (``plan.defer_head_wgrad``). Pure numpy.

Megatron's ``defer_embedding_wgrad_compute`` (with ``wgrad_deferral_limit``): on the last pipeline stage the
output layer's backward computes only its input gradient for the first N micro-batches (0: all of them) and
keeps their activations and output gradients; ``finish_embedding_wgrad_compute`` runs the held weight-gradient
GEMMs after the stage's last backward unit, before ``finalize_model_grads`` starts the gradient sync
(NVIDIA/Megatron-LM ``megatron/core/pipeline_parallel/schedules.py``; ``core/tensor_parallel/layers.py``
``drain_embedding_wgrad_compute``). The last stage finishes its backward work (p - 1) units before the first
one does in 1F1B and its interleaved form, so the held GEMMs land in time it would spend waiting anyway: the
head's cost, ~1.2 layers' of Llama 3 70B on the last chunk, leaves the pipeline's critical path.

Memory (:func:`held_bytes`): the stage keeps each held micro-batch's head input and logit gradient until the drain,
``tokens x (d_model + vocab / tp)`` elements at the activations' width; the memory report adds them all to the stage
that computes the loss (an upper bound: other micro-batches' activations are freed by the drain).

Here: the ``lm_head`` op of each held micro-batch's backward loses the head's weight-gradient seconds
(``LayerCosts.head_wgrad_s``: one forward GEMM's worth, ``wgrad.py``), and their sum becomes a tail the
stage runs after its last unit (``step.run_pipeline``'s ``tail_s``). Not modelled: the head's gradient-sync
piece still starts when its last micro-batch's backward op ends (it is ~1 % of a 70B model's gradients).
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from moesim.engine.training.schedules import schedule_for
from moesim.engine.training.timeline import OpTable


def held_limit(plan) -> int | None:
    """``plan.defer_head_wgrad`` where it applies: None when unset or under a schedule that splits the
    backward (ZB-H1, DualPipe place every weight gradient themselves)."""
    if plan.defer_head_wgrad is None or schedule_for(plan).splits_backward:
        return None
    return plan.defer_head_wgrad


def held_microbatches(limit: int, microbatches: int) -> int:
    """Micro-batches whose head weight gradient is held: ``limit`` of them (0: all), at most all."""
    return microbatches if limit == 0 else min(limit, microbatches)


def defer_head_wgrad(tables: list[tuple[OpTable, OpTable]], head_wgrad_s: float, limit: int,
                     stage_of: np.ndarray, pp: int) -> tuple[list[tuple[OpTable, OpTable]], np.ndarray]:
    """``tables`` with the head's weight gradient taken out of the first held micro-batches' backward, and
    the seconds each stage runs after its last unit: ``[pp]``. ``stage_of [C]``: the stage of each chunk."""
    tail = np.zeros(pp)
    out = list(tables)
    for c, (fwd, bwd) in enumerate(tables):
        cols = np.flatnonzero(bwd.kinds == "lm_head")
        if not len(cols) or head_wgrad_s <= 0:
            continue
        j = int(cols[0])
        dur = bwd.dur_s.copy()
        played = np.flatnonzero(dur[:, j] > 0)  # micro-batches that reach this chunk's head
        held = played[:held_microbatches(limit, len(played))]
        moved = np.minimum(dur[held, j], head_wgrad_s)
        dur[held, j] -= moved
        tail[int(stage_of[c])] += float(moved.sum())
        out[c] = (fwd, replace(bwd, dur_s=dur))
    return out, tail


def held_bytes(plan, d_model: int, vocab_size: int, tokens: float, act_bytes: float) -> float:
    """Bytes the loss stage holds for the drain under ``plan.defer_head_wgrad``: per held micro-batch its head
    input and logit gradient, ``tokens x (d_model + vocab_size / tp) x act_bytes``; 0 where it does not apply
    (:func:`held_limit`)."""
    limit = held_limit(plan)
    if limit is None:
        return 0.0
    return held_microbatches(limit, plan.microbatches) * tokens * (d_model + vocab_size / plan.tp) * act_bytes
