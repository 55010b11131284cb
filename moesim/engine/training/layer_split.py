"""How a pipeline's layers split over its chunks when the plan says so: ``plan.first_stage_layers`` /
``plan.last_stage_layers`` (:func:`chunk_sizes`) or ``plan.pipeline_layout``, checked against
``model.n_layers`` (:func:`check_layer_split`). ``schedules.Schedule.chunk_layers`` applies them; the
rules are the schedules module's docstring's "Uneven split". Pure functions.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

import numpy as np

from moesim.schemas._base import MAX_LAYERS

if TYPE_CHECKING:
    from moesim.schemas.plan import PlanSpec


def split_layers(n_layers: int, counts) -> list[np.ndarray]:
    """The layer ids ``0 .. n_layers - 1`` cut into consecutive chunks of ``counts`` layers each (a
    count may be 0: an empty chunk)."""
    return np.split(np.arange(n_layers), np.cumsum(counts)[:-1])


def chunk_sizes(n_layers: int, pp: int, v: int = 1, first: int | None = None, last: int | None = None) -> list[int]:
    """Layers of each of the ``pp * v`` global chunks of the round-robin layout (chunk ``r*pp + s`` is
    stage ``s``'s ``r``-th) when stage 0 holds ``first`` layers and stage ``pp-1`` holds ``last``
    (None: that stage is split with the others). A set stage's layers are spread over its ``v``
    chunks, the rest over the other chunks in global order, both as ``numpy.array_split`` (the
    first chunks one more); with both None, ``array_split`` over all chunks (the even split).
    ``ValueError`` (one line, naming the plan field) when the split cannot be made."""
    C = pp * v
    if first is None and last is None:
        return [len(x) for x in np.array_split(np.arange(n_layers), C)]
    given = [(f"plan.{name}", n) for name, n in (("first_stage_layers", first), ("last_stage_layers", last)) if n is not None]
    label = " + ".join(name for name, _ in given)
    if pp < 2:
        raise ValueError(f"{given[0][0]} = {given[0][1]}: needs plan.pp >= 2 (one stage holds every layer)")
    if len(given) == 2 and pp == 2:
        raise ValueError(f"plan.last_stage_layers = {last}: with plan.pp = 2 set only one of plan.first_stage_layers "
                         "and plan.last_stage_layers (the other stage holds the rest)")
    for name, n in given:
        if n < v:
            raise ValueError(f"{name} = {n}: must be >= plan.virtual_stages ({v}); each of the stage's {v} chunks needs a layer")
    fixed = sum(n for _, n in given)
    rest_chunks = C - v * len(given)
    if fixed >= n_layers:
        raise ValueError(f"{label} = {fixed}: must be < model.n_layers ({n_layers}); the other stages need layers")
    rest = n_layers - fixed
    if rest < rest_chunks:
        raise ValueError(f"{label} = {fixed}: leaves {rest} of model.n_layers ({n_layers}) for the other stages' "
                         f"{rest_chunks} chunks, each needs one (allowed: at most {n_layers - rest_chunks})")
    own = {s: [len(x) for x in np.array_split(np.arange(n), v)] for s, n in ((0, first), (pp - 1, last)) if n is not None}
    middle = iter(len(x) for x in np.array_split(np.arange(rest), rest_chunks))
    return [own[c % pp][c // pp] if c % pp in own else next(middle) for c in range(C)]


def check_layer_split(n_layers: int, plan: PlanSpec) -> None:
    """``ValueError`` (one line, naming the field) unless ``plan``'s layer split of ``n_layers`` layers
    can be made (``plan.pipeline_layout``'s sum, or ``plan.first_stage_layers`` / ``plan.last_stage_layers``;
    nothing to check when all are unset)."""
    from moesim.engine.training.schedules import schedule_for  # schedules imports this module

    sched = schedule_for(plan)
    if sched.layout is not None:
        if sum(sched.layout) != n_layers:
            raise ValueError(f"plan.pipeline_layout sums to {sum(sched.layout)} layers: must be model.n_layers "
                             f"({n_layers})")
        if not any(sched.layout):
            raise ValueError("plan.pipeline_layout: every chunk is empty")
        return
    if sched.first_stage_layers is not None or sched.last_stage_layers is not None:
        chunk_sizes(n_layers, plan.pp, sched.virtual_stages(plan.virtual_stages), sched.first_stage_layers,
                    sched.last_stage_layers)


#: Megatron-core's layout symbols (``pipeline_parallel_layer_layout.py``): E the embedding, t a decoder
#: layer, m an MTP module, L the loss; ``|`` ends a chunk; ``(...)*N`` and ``x*N`` repeat.
_LAYOUT_SYMBOLS = set("EtmL|")
_GROUP = re.compile(r"\(([^()]*)\)\*(\d+)")
_SYMBOL = re.compile(r"([EtmL])\*(\d+)")
_MAX_REPEAT = MAX_LAYERS  # a chunk or a layer per model layer at most


def layout_counts(text: str) -> list[int]:
    """Layers of each chunk in a Megatron-core ``--pipeline-model-parallel-layout`` string
    (``'Et|(tt|)*30mL'`` -> ``[1, 2, ..., 2, 0]``: 32 chunks). moesim places the embedding on the first
    chunk and the MTP modules and the loss on the last, as Megatron's DeepSeek-V3 layouts do, so an
    ``E`` elsewhere, or an ``m`` or ``L`` before the last chunk, is a ``ValueError`` (one line), as is any
    other symbol."""
    def repeat(g: re.Match) -> str:
        if int(g.group(2)) > _MAX_REPEAT:
            raise ValueError(f"plan.pipeline_layout = {text!r}: repeats at most {_MAX_REPEAT} times (a chunk or a "
                             "layer per model layer)")
        return g.group(1) * int(g.group(2))

    expanded = text.replace(" ", "")
    for _ in range(64):  # nested groups expand from the inside out
        nxt = _GROUP.sub(repeat, expanded)
        if nxt == expanded:
            break
        expanded = nxt
        if len(expanded) > 16 * _MAX_REPEAT:
            raise ValueError(f"plan.pipeline_layout = {text!r}: expands past {16 * _MAX_REPEAT} symbols")
    expanded = _SYMBOL.sub(repeat, expanded)
    bad = sorted(set(expanded) - _LAYOUT_SYMBOLS)
    if bad or not expanded:
        raise ValueError(f"plan.pipeline_layout = {text!r}: a Megatron layout is made of E, t, m, L, '|', (...)*N "
                         f"and x*N{'; not ' + ''.join(bad) if bad else ''}")
    chunks = expanded.split("|")
    if any("E" in c for c in chunks[1:]) or any("m" in c or "L" in c for c in chunks[:-1]):
        raise ValueError(f"plan.pipeline_layout = {text!r}: moesim runs the embedding (E) on the first chunk and "
                         "the MTP modules (m) and the loss (L) on the last")
    return [c.count("t") for c in chunks]
