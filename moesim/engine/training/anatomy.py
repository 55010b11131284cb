"""Where one training step's time goes: the training result's ``train_step`` table. Pure numpy.

The summary's breakdown (``summary.step_breakdown``) splits a step into compute, the communication
it leaves exposed, the pipeline bubble and what runs after the last backward. This splits the
compute further, by what its ops do, from the same op tables the pipeline played:

* ``attention``: the attention block (its norms, QKV and output projections, RoPE, the attention
  core, context parallelism's merge; the FFN norm is booked here too);
* ``router``: the router GEMM, top-k and the token permute of MoE layers;
* ``experts``: the routed experts' grouped GEMMs and activation, the un-permute and the shared
  experts;
* ``host_wait``: the GPU waiting for the host to issue an MoE layer's kernels (the per-layer floor,
  ``plan.moe_layer_host_us``; the engine books the wait in the experts' slot, this takes it out, so
  a capacity factor or expert count that changes the experts' GPU work shows in ``experts`` even
  when the floor holds the step still);
* ``dense_ffn``: the FFN of dense layers;
* ``embedding_head``: the input embedding, the final norm, output head and loss;
* ``recompute``: activation recompute re-running the forward in the backward.

Weight-gradient ops of a split backward (``*_wgrad``) count with their op. What the summary takes
out of compute is taken out here from the op it sits in: ZeRO-3's parameter waits (their own
kind), the collectives full recompute re-runs (from ``recompute``) and context parallelism's exposed
ring (from ``attention`` and ``recompute``). So on every stage the compute parts sum to the stage's
``compute_s``, and with the summary's other parts (:data:`PARTS`) to the step time, as
``pipeline_s + dp_sync_exposed_s + optimizer_s (+ ZeRO-1/2's exposed gather)`` does. Values are
seconds per step, the mean over pipeline stages (and over steps).
"""

from __future__ import annotations

import functools

import numpy as np

from moesim.engine.training.layer_costs import CATEGORY
from moesim.engine.training.timeline import WGRAD_SUFFIX
from moesim.engine.training.zero import GATHER_KIND

#: The compute parts, in printed order.
COMPUTE_PARTS: tuple[str, ...] = ("attention", "router", "experts", "host_wait", "dense_ffn", "embedding_head",
                                  "recompute")
#: The step's other parts, the summary's own terms (their summary keys are ``<part>_s``).
OTHER_PARTS: tuple[str, ...] = ("alltoall_exposed", "tp_comm", "cp_comm", "pp_comm", "bubble", "zero_gather_exposed",
                                "dp_sync_exposed", "optimizer")
#: Every part of a step, in printed order.
PARTS: tuple[str, ...] = COMPUTE_PARTS + OTHER_PARTS
#: What each part holds, for the printed table, the plot and the README.
PART_LABELS: dict[str, str] = {
    "attention": "attention block (norms, projections, core)",
    "router": "router and token permute",
    "experts": "experts (routed and shared)",
    "host_wait": "waiting for the host to issue MoE layers",
    "dense_ffn": "dense FFN",
    "embedding_head": "embedding, output head and loss",
    "recompute": "activation recompute",
    "alltoall_exposed": "expert all-to-alls (exposed)",
    "tp_comm": "tensor-parallel collectives",
    "cp_comm": "context-parallel ring (exposed)",
    "pp_comm": "pipeline sends (exposed)",
    "bubble": "pipeline bubble",
    "zero_gather_exposed": "ZeRO parameter gathers (exposed)",
    "dp_sync_exposed": "data-parallel gradient sync (exposed)",
    "optimizer": "optimizer step",
}


def compute_part_key(part: str) -> str:
    """The training summary's key of a compute part: ``compute_<part>_s`` (the parts sum to ``compute_s``);
    the host wait keeps its own key, ``host_wait_s``."""
    return "host_wait_s" if part == "host_wait" else f"compute_{part}_s"


#: The training summary's keys of the compute parts, in :data:`COMPUTE_PARTS`' order.
COMPUTE_PART_KEYS: tuple[str, ...] = tuple(compute_part_key(p) for p in COMPUTE_PARTS)
#: The columns of a ``train_step`` table (:func:`train_step_table`), the part's name first.
TRAIN_STEP_COLUMNS = ("part", "seconds", "share", "microbatches", "tokens_per_microbatch")
#: Op kinds booked in each compute part (with their ``*_wgrad`` halves).
_PART_OF_KIND = {"attention": "attention", "router": "router", "experts": "experts", "dense_ffn": "dense_ffn",
                 "embedding": "embedding_head", "lm_head": "embedding_head", "recompute": "recompute"}


def compute_part(kind: str) -> str:
    """The compute part an op kind of the training op tables is booked in."""
    base = kind.removesuffix(WGRAD_SUFFIX)
    if base not in _PART_OF_KIND:
        raise ValueError(f"op kind {kind!r} has no compute part")
    return _PART_OF_KIND[base]


@functools.cache
def _part_of(kind: str) -> str | None:
    """The compute part of an op kind, None for what the summary does not count as compute."""
    if CATEGORY.get(kind, "compute") != "compute" or kind == GATHER_KIND:
        return None
    return compute_part(kind)


def compute_parts_s(step, pp: int, tails: dict, recompute_comm_s: np.ndarray,
                    cp_exposed_s: tuple[np.ndarray, np.ndarray], host_wait_s: np.ndarray) -> dict[str, np.ndarray]:
    """Seconds of each compute part on each stage (``[pp]`` arrays) of one simulated step.

    ``tails``: held head weight gradients per stage, (start, end) s; ``recompute_comm_s``: ``[pp, 2]``
    collectives inside recompute's re-run; ``cp_exposed_s``: exposed ring seconds per stage inside
    (attention, recompute) ops; ``host_wait_s``: ``[pp]`` the host floor's waits, booked in the experts'
    slots. The parts sum, stage by stage, to the summary's compute.
    """
    parts = {p: np.zeros(pp) for p in COMPUTE_PARTS}
    for c, tables in enumerate(step.tables):
        st = step.schedule.stage_of(c, pp)
        for table in tables:
            for kind, secs in zip(table.kinds, table.dur_s.sum(axis=0), strict=True):
                part = _part_of(kind)
                if part is not None:
                    parts[part][st] += float(secs)
    for st, (t0, t1) in tails.items():
        parts["embedding_head"][st] += t1 - t0
    parts["recompute"] -= recompute_comm_s.sum(axis=1)
    parts["experts"] -= host_wait_s
    parts["host_wait"] += host_wait_s
    attn, rc = cp_exposed_s
    parts["attention"] -= attn
    parts["recompute"] -= rc
    return parts


def train_step_table(mean: dict[str, float], microbatches: int, tokens_per_microbatch: int) -> dict[str, list]:
    """The ``train_step`` table from a step breakdown averaged over steps (``summary.step_breakdown``'s
    keys, the compute parts as ``part.<name>``): one row per part that costs anything, then a ``total``
    row (the step time); columns ``part``, ``seconds``, ``share`` (of the total), ``microbatches`` and
    ``tokens_per_microbatch`` (per stage and device; the same on every row)."""
    secs = {p: mean[f"part.{p}"] for p in COMPUTE_PARTS} | {p: mean[f"{p}_s"] for p in OTHER_PARTS}
    total = mean["step_time_s"]
    rows = [(p, secs[p]) for p in PARTS if abs(secs[p]) > 1e-12 * max(total, 1e-30)] + [("total", total)]
    return {"part": [p for p, _ in rows], "seconds": [v for _, v in rows],
            "share": [v / total if total > 0 else 0.0 for _, v in rows],
            "microbatches": [microbatches] * len(rows), "tokens_per_microbatch": [tokens_per_microbatch] * len(rows)}


def check_train_step(step: dict[str, list], where: str) -> None:
    """Raise InputError naming ``where`` when ``step`` (a run's, or read back from a ``train_step.csv``)
    is not such a table: every column, at least one part, numbers in all but the part's column."""
    from moesim.results import check_parts_table

    check_parts_table(step, TRAIN_STEP_COLUMNS, where, "training-step")


def caption(step: dict[str, list]) -> str:
    """The step a ``train_step`` table splits, in words (read back from ``train_step.csv`` its numbers
    are floats)."""
    mb, tokens = int(float(step["microbatches"][0])), int(float(step["tokens_per_microbatch"][0]))
    return f"training step: {mb:,} micro-batch{'' if mb == 1 else 'es'} of {tokens:,} tokens per device"
