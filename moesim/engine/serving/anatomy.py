"""Where one decode iteration's time goes: the serving result's ``decode_step`` table. No SimPy.

A serving run's headline figures say how fast it was, not why. This prices the run's typical
decode-only iteration part by part (``IterationCost.anatomy_s``, the same terms the engine adds):
its batch is the duration-weighted mean decode batch per rank of the run's decode-only iterations,
its context the mean context a decoded token attends over (prompt plus the tokens before it, over
the served requests). The run's own ``IterationCost`` prices it, so the experts are the run's
popularity draw and placement (at the end of the run under drift, as the ``expert_layers`` table);
under skewed routing they are the mean of that batch size's pool of load samples, which the run
already drew where it ran that batch (the pools are keyed by size, so reading one changes nothing
the run saw). Speculative runs show the target's one-token step, disaggregated runs the decode pool's.
"""

from __future__ import annotations

import numpy as np

from moesim.engine.serving.decode_cost import IterationCost
from moesim.engine.serving.lockstep import lockstep_group
from moesim.engine.serving.metrics import ITERATION_COLUMNS
from moesim.schemas import Scenario

#: The parts of a decode iteration, in the order they are printed (``IterationCost.anatomy_s``' keys).
PARTS: tuple[str, ...] = ("attention", "routed_experts", "other_kernels", "tp_comm", "ep_comm", "pp_comm",
                          "output_head", "two_batch_overlap", "host_and_launch")
#: What each part holds, for the printed table and the README.
PART_LABELS: dict[str, str] = {
    "attention": "attention over the KV cache",
    "routed_experts": "routed experts (GEMMs, activation)",
    "other_kernels": "other kernels (projections, norms, router)",
    "tp_comm": "tensor-parallel all-reduces",
    "ep_comm": "expert dispatch and combine",
    "pp_comm": "pipeline hand-offs",
    "output_head": "output head (GEMM, logits gather, sampler)",
    "two_batch_overlap": "two-batch overlap (net)",
    "host_and_launch": "host and launches (exposed)",
}


#: The host part's label where it is negative: the datasheet model prices every kernel with its CPU launch, and a
#: decode that replays a CUDA graph pays none of them, so the host part hands those launches back.
GRAPH_CREDIT_LABEL = "launches a CUDA graph saves (the parts above include them)"


def part_labels(step: dict[str, list]) -> dict[str, str]:
    """:data:`PART_LABELS` for ``step`` (a ``decode_step`` table): the host part named for what it is when it is
    negative (:data:`GRAPH_CREDIT_LABEL`), not as a negative time of the host's own."""
    secs = dict(zip(step["part"], step["seconds"], strict=True))
    return PART_LABELS | ({"host_and_launch": GRAPH_CREDIT_LABEL} if secs.get("host_and_launch", 0.0) < 0 else {})


#: The serving summary's keys of the mean decode step (:func:`decode_step_keys`): its total, then each part.
DECODE_STEP_KEY = "decode_step_s"
DECODE_PART_KEYS: tuple[str, ...] = tuple(f"decode_{p}_s" for p in PARTS)
#: Every key :func:`decode_step_keys` adds to the serving summary.
DECODE_SUMMARY_KEYS: tuple[str, ...] = (DECODE_STEP_KEY, *DECODE_PART_KEYS, "decode_batch_seqs", "decode_context_tokens")
#: The columns of a ``decode_step`` table (:func:`decode_step_table`), the part's name first.
DECODE_STEP_COLUMNS = ("part", "seconds", "share", "batch_seqs", "context_tokens")


def check_decode_step(step: dict[str, list], where: str) -> None:
    """Raise InputError naming ``where`` when ``step`` (a run's, or read back from a ``decode_step.csv``) is
    not such a table: every column, at least one part, numbers in all but the part's column."""
    from moesim.results import check_parts_table

    check_parts_table(step, DECODE_STEP_COLUMNS, where, "decode-step")


def caption(step: dict[str, list]) -> str:
    """The iteration a ``decode_step`` table prices, in words (its batch and context columns; read
    back from ``decode_step.csv`` they are floats)."""
    seqs, ctx = int(float(step["batch_seqs"][0])), int(float(step["context_tokens"][0]))
    return f"mean decode step: {seqs:,} sequence{'' if seqs == 1 else 's'} per rank, {ctx:,}-token context"


def mean_decode_batch(iterations: np.ndarray, ranks: int) -> float | None:
    """Duration-weighted mean sequences per rank of the decode-only iterations in ``iterations``
    (rows of ``ITERATION_COLUMNS``); ``ranks``: ranks one record covers (a lock-step group's). None
    where no decode-only iteration ran."""
    it = np.asarray(iterations, dtype=float).reshape(-1, len(ITERATION_COLUMNS))
    col = {c: it[:, i] for i, c in enumerate(ITERATION_COLUMNS)}
    dur = col["end_s"] - col["start_s"]
    only = (col["prefill_tokens"] == 0) & (col["decode_tokens"] > 0) & (dur > 0)
    if not only.any():
        return None
    return float(np.average(col["decode_tokens"][only], weights=dur[only])) / ranks


def mean_decode_context(prompt_tokens: np.ndarray, output_tokens: np.ndarray) -> float | None:
    """Mean tokens a decoded token attends over: prompt plus the tokens before it (the first output
    token comes from the prefill), over requests of ``prompt_tokens`` and ``output_tokens``."""
    p, o = np.asarray(prompt_tokens, dtype=float), np.asarray(output_tokens, dtype=float)
    steps = np.maximum(o - 1.0, 0.0)
    if steps.sum() <= 0:
        return None
    # the j-th decode step (j = 1 .. o-1) attends over p + j tokens
    return float(np.sum(steps * p + steps * (steps + 1.0) / 2.0) / steps.sum())


def decode_step_table(s: Scenario, cost: IterationCost, iterations: np.ndarray, prompt_tokens: np.ndarray,
                      output_tokens: np.ndarray) -> dict[str, list] | None:
    """The ``decode_step`` table of a serving run of ``s`` priced by ``cost``, the run's iteration
    cost model (its tables cover every batch and context the run could hold): one row per part that
    costs anything and a ``total`` row; columns ``part``, ``seconds``, ``share`` (of the total),
    ``batch_seqs`` and ``context_tokens`` (the iteration priced, the same on every row). None where
    no decode-only iteration ran."""
    batch = mean_decode_batch(iterations, lockstep_group(s))
    context = mean_decode_context(prompt_tokens, output_tokens)
    if batch is None or context is None:
        return None
    return step_table(cost, max(1, round(batch)), max(1, round(context)))


def step_table(cost: IterationCost, seqs: int, ctx: int) -> dict[str, list]:
    """The ``decode_step`` table of one decode-only iteration of ``seqs`` sequences per rank over ``ctx`` cached
    tokens each, priced by ``cost`` (see :func:`decode_step_table`)."""
    parts = cost.anatomy_s(seqs, ctx)
    total = sum(parts.values())
    rows = [(k, parts[k]) for k in PARTS if parts[k] != 0.0] + [("total", total)]
    return {"part": [k for k, _ in rows], "seconds": [v for _, v in rows],
            "share": [v / total if total > 0 else 0.0 for _, v in rows],
            "batch_seqs": [seqs] * len(rows), "context_tokens": [ctx] * len(rows)}


def decode_step_keys(step: dict[str, list] | None) -> dict[str, float]:
    """The serving summary's keys of a ``decode_step`` table: ``decode_step_s`` (its total), ``decode_<part>_s``
    for every part (0 where the table leaves a part out: it cost nothing), ``decode_batch_seqs`` and
    ``decode_context_tokens`` (the iteration priced). Empty where no decode-only iteration ran (no table), so
    sweeps and plots can read a decode step's parts per point."""
    if not step:
        return {}
    secs = dict(zip(step["part"], step["seconds"], strict=True))
    values = (secs["total"], *(secs.get(part, 0.0) for part in PARTS), step["batch_seqs"][0], step["context_tokens"][0])
    return {key: float(v) for key, v in zip(DECODE_SUMMARY_KEYS, values, strict=True)}
