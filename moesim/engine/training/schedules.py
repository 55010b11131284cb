"""Pipeline schedules as registered objects: layout, per-stage order, bubble, activations in flight.

One ``Schedule`` per ``plan.schedule`` value, registered in ``SCHEDULES``; everything that depends
on the schedule asks ``schedule_for(plan)`` instead of doing its own arithmetic:

- ``stage_of(chunk, pp)`` / ``global_chunk(stage, local, pp)``: which stage holds global model
  chunk ``c`` and the inverse (``engine.training.step``, ``engine.training.summary``,
  ``engine.training.pipeline.check_orders``);
- ``chunks(pp, v)`` / ``chunk_layers(n_layers, pp, v)``: how many model chunks there are and the
  layers of each (an uneven split when the plan sets ``first_stage_layers`` / ``last_stage_layers``:
  :func:`~moesim.engine.training.layer_split.chunk_sizes`); ``path(microbatch, pp, m, v)``: the first and last global chunk a microbatch
  passes; ``stage_layers``: the layers whose activations one microbatch leaves on a stage;
- ``order(stage, pp, m, v)`` / ``orders(pp, m, v)``: the units a stage plays, in order
  (``engine.training.step.run_pipeline``); an entry is a :class:`Unit` or a (forward, backward)
  pair of units played together (their all-to-alls under each other's compute);
- ``bubble_fraction(pp, m, v)``: the analytic idle fraction with equal stages (the summary's
  ``analytic_bubble_fraction``);
- ``microbatches_in_flight(pp, m, v)``: microbatches whose activations (through ``stage_layers``)
  stage 0 holds at the schedule's peak (``memory.memory_report``); ``param_copies``: copies of a
  stage's parameters each device holds.

Units. A :class:`Unit` is one microbatch through one local chunk: a forward (``F``), a whole
backward (``BW``: input and weight gradients), or, for schedules that split the backward
(``splits_backward``: zero-bubble, DualPipe), its input-gradient half ``B`` (what the previous
stage waits for) and its weight-gradient half ``W`` (what only the optimizer needs), played later
to fill bubbles. ``timeline.chunk_tables(..., wgrad=...)`` prices them: W is the weight-gradient
GEMMs (half of each GEMM's backward: dgrad and wgrad are one forward GEMM's FLOPs each, Qi et al.
2023 sec. 2); everything else, the attention core, elementwise ops, recompute and the TP
all-reduces / EP all-to-alls of the backward, is B.

Layout. GPipe, 1F1B, interleaved and ZB-H1: with ``v`` virtual stages, stage ``s`` holds model
chunks ``s, s + pp, s + 2*pp, ...`` (global chunk ``c = local * pp + s``); without interleaving
``v = 1`` and the local chunk is always 0. Every microbatch passes every chunk. DualPipe: the
model is split into ``pp`` chunks held twice, once per direction: global chunks ``0..pp-1``
(direction 0, stage ``c``) and ``pp..2pp-1`` (direction 1, stage ``2pp-1-c``, model chunk
``c - pp``), so stage ``s`` holds model chunks ``s`` and ``pp-1-s``; microbatches ``0..m/2-1``
pass direction 0, the others direction 1. Forward of chunk ``c`` needs forward of ``c - 1``;
backward of ``c`` needs backward of ``c + 1`` (and, on the last chunk of its path, its own
forward); a ``W`` needs its own ``B``.

Uneven split (``plan.first_stage_layers`` / ``plan.last_stage_layers``; Megatron-core's
``--decoder-first-pipeline-num-layers`` / ``--decoder-last-pipeline-num-layers``, i.e.
``TransformerConfig.num_layers_in_first_pipeline_stage`` / ``..._last_...``): stage 0 (stage
``p-1``) holds that many layers, the others split the rest as evenly as before (``array_split``
over their chunks in global order, the first ones one more). Stage 0 carries the embedding and
stage ``p-1`` the output head and loss, so fewer layers there even out the stages. With ``v``
virtual stages a stage's count is spread over its ``v`` chunks (``array_split``: chunk ``r`` of
stage 0 is global chunk ``r*p``), as Megatron-core's ``get_transformer_layer_offset`` does
(``num_layers_in_first_pipeline_stage // vp_size`` layers in each of the stage's virtual chunks;
Megatron requires the count to be a multiple of ``vp_size``, this split only that every chunk gets
a layer). ``schedule_for(plan)`` returns the schedule bound to the plan's split
(:meth:`Schedule.with_split`), so the engine's chunks and the memory model's ``stage_layers`` agree.
DualPipe holds model chunk ``s`` and ``p-1-s`` on stage ``s`` (both ends on stages 0 and
``p-1``) and rejects the fields. Megatron's ``--account-for-embedding-in-pipeline-split`` /
``--account-for-loss-in-pipeline-split`` (the embedding / loss counted as one layer of the first /
last virtual chunk) is not offered: ``last_stage_layers = n - 1`` of an even ``n`` is the same split
without virtual stages.

Bubbles with equal stages, per stage (F, B, W: one chunk's forward, input-gradient and
weight-gradient time; 1F1B's backward is B + W):

- GPipe, 1F1B: ``(p-1)(F+B+W)``, fraction ``(p-1)/(m+p-1)`` (Huang et al. 2019; Narayanan et al. 2019);
- interleaved: ``(p-1)/(v*m+p-1)`` (Narayanan et al. 2021);
- ZB-H1: ``(p-1)(F+B-W)`` (Qi et al. 2023, "Zero Bubble Pipeline Parallelism", arXiv:2401.10241,
  sec. 3.1), fraction ``(p-1)(F+B-W) / (m(F+B+W) + (p-1)(F+B-W))``, ``(p-1)/(3m+p-1)`` at F = B = W;
- DualPipe: ``(p/2-1)(F&B + B_full - 3W)`` with ``B_full = B + W`` and ``F&B`` a forward and a
  whole backward played together (DeepSeek-V3 report, arXiv:2412.19437 sec. 3.2.1, Table 2;
  deepseek-ai/DualPipe README), ``(p-2)/(3m+p-2)`` at F = B = W with nothing to overlap
  (``F&B = F + B + W``).

Adding a schedule: subclass ``Schedule`` here, register an instance in ``SCHEDULES``, add its name
to ``plan.schedule``'s ``Literal`` (``schemas/plan.py``) and a test (``tests/test_schedules.py``).
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING, NamedTuple

import numpy as np

from moesim.engine.training.layer_split import chunk_sizes, split_layers

if TYPE_CHECKING:
    from moesim.schemas.plan import PlanSpec


class Unit(NamedTuple):
    """One unit of pipeline work: a microbatch through one local chunk, forward or backward.

    ``part`` splits a backward (``splits_backward`` schedules): ``""`` the whole pass, ``"B"`` the
    input gradients only, ``"W"`` the weight gradients only (after its ``B``).
    """

    microbatch: int
    chunk: int  # local chunk index on its stage, 0..v-1 (DualPipe: 0 direction 0, 1 direction 1)
    backward: bool
    part: str = ""

    @property
    def kind(self) -> str:
        """``F``, ``BW`` (a whole backward), ``B`` (input gradients) or ``W`` (weight gradients)."""
        return self.part or ("BW" if self.backward else "F")

    @property
    def slot(self) -> int:
        """Index of the unit's times in ``[C, M, k]`` arrays: 0 forward, 1 backward (or B), 2 W."""
        return 2 if self.part == "W" else int(self.backward)


#: An entry of a stage's order: a unit, or a (forward, whole backward) pair played together.
Entry = Unit | tuple[Unit, Unit]


def units_of(entry: Entry) -> tuple[Unit, ...]:
    """The units of an order entry (one, or the two of a pair)."""
    return (entry,) if isinstance(entry, Unit) else tuple(entry)


class Schedule:
    """Base: round-robin chunk layout, the equal-stage bubble with ``v = 1``; subclasses give
    ``order`` and ``microbatches_in_flight``."""

    name: str = ""
    uses_virtual_stages: bool = False  # True when plan.virtual_stages splits a stage into chunks
    splits_backward: bool = False  # orders hold B and W units (weight gradients played apart)
    chunks_per_stage: int = 1  # model chunks a stage holds per virtual stage (DualPipe: 2, one per direction)
    param_copies: int = 1  # copies of its stage's parameters a device holds (DualPipe: 2)
    pairs_units: bool = False  # orders play a forward and a backward together, all-to-alls on their own stream
    first_stage_layers: int | None = None  # layers of stage 0 (None: the even split); set by with_split
    last_stage_layers: int | None = None  # layers of stage pp-1 (None: the even split)
    layout: tuple[int, ...] | None = None  # layers of every global chunk (plan.pipeline_layout)

    def with_split(self, first: int | None = None, last: int | None = None,
                   layout: tuple[int, ...] | None = None) -> Schedule:
        """This schedule with stage 0 holding ``first`` layers and stage ``pp-1`` ``last``, or every
        global chunk its ``layout`` count (None: the even split); itself when all are None, else a copy
        (the registered one stays even)."""
        if first is None and last is None and layout is None:
            return self
        out = copy.copy(self)
        out.first_stage_layers, out.last_stage_layers, out.layout = first, last, layout
        return out

    def virtual_stages(self, v: int) -> int:
        """Model chunks per stage this schedule plays for ``plan.virtual_stages = v``."""
        return v if self.uses_virtual_stages else 1

    def chunks(self, pp: int, v: int = 1) -> int:
        """Number of global model chunks (the engine's units of layout)."""
        return pp * self.virtual_stages(v) * self.chunks_per_stage

    def model_chunks(self, pp: int, v: int = 1) -> int:
        """Distinct model chunks, the entries ``plan.pipeline_layout`` lists (DualPipe: ``pp``, each held
        once per direction)."""
        return self.chunks(pp, v) // self.param_copies

    def model_chunk_sizes(self, n_layers: int, pp: int, v: int = 1) -> list[int]:
        """Layers of each distinct model chunk (:meth:`model_chunks` of them), as :meth:`chunk_layers` splits
        them: the counts ``plan.pipeline_layout`` would list."""
        return [len(c) for c in self.chunk_layers(n_layers, pp, v)[:self.model_chunks(pp, v)]]

    def layout_rule(self, pp: int, v: int = 1) -> str:
        """How :meth:`model_chunks` follows from the plan, for an error naming the fields."""
        if self.uses_virtual_stages:
            return f"plan.pp x plan.virtual_stages = {self.model_chunks(pp, v)}"
        return f"plan.pp = {pp}"

    def chunk_layers(self, n_layers: int, pp: int, v: int = 1) -> list[np.ndarray]:
        """Model layers of each global chunk (``numpy.array_split``: the first chunks get one more;
        with ``first_stage_layers`` / ``last_stage_layers`` the sizes of ``layer_split.chunk_sizes``;
        with ``plan.pipeline_layout`` its counts)."""
        if self.layout is not None:
            return split_layers(n_layers, self.layout)
        if self.first_stage_layers is None and self.last_stage_layers is None:
            return np.array_split(np.arange(n_layers), self.chunks(pp, v))
        sizes = chunk_sizes(n_layers, pp, self.virtual_stages(v), self.first_stage_layers, self.last_stage_layers)
        return split_layers(n_layers, sizes)

    def path(self, microbatch: int, pp: int, m: int, v: int = 1) -> tuple[int, int]:
        """First and last global chunk microbatch ``microbatch`` passes (it passes all between) when
        each stage plays ``v`` virtual stages."""
        return 0, pp * v * self.chunks_per_stage - 1

    def stage_of(self, chunk, pp: int):
        """Stage holding global chunk ``chunk`` (int or numpy array; ``-1`` wraps to ``pp - 1``)."""
        return chunk % pp

    def global_chunk(self, stage, local, pp: int):
        """Global chunk of local chunk ``local`` on ``stage`` (inverse of ``stage_of``)."""
        return local * pp + stage

    def stage_layers(self, n_layers: int, stage: int, pp: int, v: int = 1) -> list[int]:
        """Layers, ascending, whose activations one microbatch leaves on ``stage`` (every layer the
        stage holds, except under DualPipe where a microbatch passes one of its two chunks)."""
        return sorted(int(x) for c, ch in enumerate(self.chunk_layers(n_layers, pp, v))
                      if self.stage_of(c, pp) == stage for x in ch)

    def order(self, stage: int, pp: int, m: int, v: int = 1) -> list[Entry]:
        """Units stage ``stage`` runs, in order, for ``m`` microbatches."""
        raise NotImplementedError

    def orders(self, pp: int, m: int, v: int = 1) -> list[list[Entry]]:
        """``order`` for every stage."""
        return [self.order(s, pp, m, v) for s in range(pp)]

    def bubble_fraction(self, pp: int, m: int, v: int = 1) -> float:
        """Idle fraction of a step with equal stages: ``(pp-1) / (m + pp-1)`` (DESIGN.md; GPipe,
        Huang et al. 2019)."""
        return _bubble(pp, m, 1)

    def microbatches_in_flight(self, pp: int, m: int, v: int = 1) -> float:
        """Microbatches whose activations (through ``stage_layers``) stage 0 holds at the peak."""
        raise NotImplementedError


def _bubble(pp: int, m: int, v: int) -> float:
    return (pp - 1) / (v * m + pp - 1)


class GPipe(Schedule):
    """GPipe (fill-drain, Huang et al. 2019): every stage runs all forwards, then all backwards.

    Bubble ``(p-1)/(m+p-1)``; stage 0 holds all ``m`` microbatches' activations (1 when ``p = 1``).
    """

    name = "gpipe"

    def order(self, stage: int, pp: int, m: int, v: int = 1) -> list[Unit]:
        return [Unit(i, 0, False) for i in range(m)] + [Unit(i, 0, True) for i in range(m)]

    def microbatches_in_flight(self, pp: int, m: int, v: int = 1) -> float:
        return 1.0 if pp == 1 else float(m)


class OneFOneB(Schedule):
    """1F1B (PipeDream-flush, Narayanan et al. 2019; Megatron): ``pp - s - 1`` warm-up forwards,
    then alternate one forward / one backward, then drain.

    Bubble as GPipe, ``(p-1)/(m+p-1)``; stage 0 holds ``min(m, p)`` microbatches (1 when ``p = 1``).
    """

    name = "1f1b"

    def order(self, stage: int, pp: int, m: int, v: int = 1) -> list[Unit]:
        warm = min(pp - stage - 1, m)
        order = [Unit(i, 0, False) for i in range(warm)]
        for i in range(m - warm):
            order += [Unit(warm + i, 0, False), Unit(i, 0, True)]
        order += [Unit(i, 0, True) for i in range(m - warm, m)]
        return order

    def microbatches_in_flight(self, pp: int, m: int, v: int = 1) -> float:
        return 1.0 if pp == 1 else float(min(m, pp))


class Interleaved(Schedule):
    """Interleaved 1F1B (Megatron-LM, Narayanan et al. 2021) with ``v`` chunks per stage.

    Virtual microbatch ``k`` (0..m*v-1) runs chunk ``(k mod pp*v) // pp`` (reversed for backward)
    on microbatch ``(k // (pp*v)) * pp + k mod pp``; stage ``s`` warms up with
    ``2*(pp - s - 1) + (v - 1)*pp`` forwards. Needs ``m`` to be a multiple of ``pp``; ``v = 1`` is 1F1B.

    Bubble ``(p-1)/(v*m + p-1)``: each unit is 1/v of a stage, so fill/drain costs ``(p-1)/v``
    stage-units against ``m`` of work (Megatron's "bubble / ideal = (p-1)/(v*m)"). Stage 0 holds
    ``min(m, p) * (1 + (p-1)/(p*v))`` microbatches' activations (the interleaving factor of
    Korthikanti et al. 2022, "Reducing Activation Recomputation"; 1 when ``p = 1``).
    """

    name = "interleaved"
    uses_virtual_stages = True

    def order(self, stage: int, pp: int, m: int, v: int = 1) -> list[Unit]:
        if v == 1:
            return SCHEDULES["1f1b"].order(stage, pp, m)
        if m % pp:
            raise ValueError(f"interleaved schedule: microbatches ({m}) must be a multiple of pp ({pp})")
        total = m * v

        def unit(k: int, backward: bool) -> Unit:
            chunk = (k % (pp * v)) // pp
            return Unit((k // (pp * v)) * pp + k % pp, v - 1 - chunk if backward else chunk, backward)

        warm = min(2 * (pp - stage - 1) + (v - 1) * pp, total)
        order = [unit(k, False) for k in range(warm)]
        for i in range(total - warm):
            order += [unit(warm + i, False), unit(i, True)]
        order += [unit(k, True) for k in range(total - warm, total)]
        return order

    def bubble_fraction(self, pp: int, m: int, v: int = 1) -> float:
        return _bubble(pp, m, v)

    def microbatches_in_flight(self, pp: int, m: int, v: int = 1) -> float:
        return 1.0 if pp == 1 else min(m, pp) * (1 + (pp - 1) / (pp * v))


class ZBH1(Schedule):
    """ZB-H1 (Qi et al. 2023, "Zero Bubble Pipeline Parallelism", arXiv:2401.10241, sec. 3.1): 1F1B
    with each backward split into B (input gradients, sent on at once) and W (weight gradients).

    Stage ``s`` warms up with ``p - s - 1`` forwards as 1F1B, then plays ``F, B`` pairs holding back
    its first ``s`` W's (one W after each later B), so the cooldown's B's, which now cross a stage
    in B instead of B + W, arrive with W's left to fill the gaps; the rest of the W's close the step.
    Bubble ``(p-1)(F+B-W)`` per stage against 1F1B's ``(p-1)(F+B+W)``: fraction
    ``(p-1)(F+B-W) / (m(F+B+W) + (p-1)(F+B-W))``, ``(p-1)/(3m+p-1)`` at F = B = W
    (:meth:`bubble_fraction`). That is the paper's setting, W no longer than F or B and ``m >= p``;
    a W longer than F or B fills only that much of a gap, so this order idles
    ``(p-1)(F+B-min(F,B,W))`` in general (``tests/test_zero_bubble.py``). A stage holds at most ``p``
    microbatches' activations, as 1F1B's stage 0 (``min(m, p)``; 1 when ``p = 1``): 1F1B's peak memory.
    """

    name = "zb-h1"
    splits_backward = True

    def order(self, stage: int, pp: int, m: int, v: int = 1) -> list[Entry]:
        warm = min(pp - stage - 1, m)
        order: list[Entry] = [Unit(i, 0, False) for i in range(warm)]
        w = 0  # W's played so far (in microbatch order)
        for j in range(m - warm):
            order += [Unit(warm + j, 0, False), Unit(j, 0, True, "B")]
            if j >= stage:
                order.append(Unit(w, 0, True, "W"))
                w += 1
        for j in range(m - warm, m):
            order += [Unit(j, 0, True, "B"), Unit(w, 0, True, "W")]
            w += 1
        return order + [Unit(i, 0, True, "W") for i in range(w, m)]

    def bubble_fraction(self, pp: int, m: int, v: int = 1, f: float = 1.0, b: float = 1.0, w: float = 1.0) -> float:
        """``(p-1)(F+B-W) / (m(F+B+W) + (p-1)(F+B-W))`` with unit times ``f``, ``b``, ``w`` (W capped
        at F and B: the class docstring)."""
        idle = (pp - 1) * (f + b - min(w, f, b))
        return idle / (m * (f + b + w) + idle)

    def microbatches_in_flight(self, pp: int, m: int, v: int = 1) -> float:
        return 1.0 if pp == 1 else float(min(m, pp))


class DualPipe(Schedule):
    """DualPipe (DeepSeek-V3 report, arXiv:2412.19437 sec. 3.2.1; deepseek-ai/DualPipe): a
    bidirectional pipeline. The model's ``p`` chunks are held twice, stage ``s`` holding chunk ``s``
    of direction 0 and chunk ``p-1-s`` of direction 1 (the module docstring's layout); half the
    microbatches enter at stage 0, half at stage ``p-1``. In the steady state a forward of one
    direction is played together with a whole backward of the other (an "F&B" pair,
    ``timeline.combine_units``: each one's all-to-alls under the other's compute); some backwards
    near the ends are split into B and W (zero-bubble) to fill bubbles. The per-stage order is
    ``dualpipe.dualpipe_order`` (the reference implementation's eight steps).

    Needs ``p`` even and ``m`` even with ``m >= 2p`` (the reference's ``num_chunks >= num_ranks * 2``;
    ``m`` counts both directions). Bubble ``(p/2-1)(F&B + B_full - 3W)`` per stage (README's table;
    ``B_full = B + W``), fraction ``(p/2-1)(F&B + B + W - 3W) / (m(F+B+W) + that)`` with
    ``F&B = F + B + W`` (nothing overlapped), ``(p-2)/(3m+p-2)`` at F = B = W. The reference order
    idles exactly that when B = F and W <= F (the README's setting); with B longer than F, as the
    attention core's backward makes it here, it idles a few percent less
    (``tests/test_zero_bubble.py``). Parameters 2x (``param_copies``); activations of ``p + 1``
    microbatches through one chunk (README: "PP+1"), a pair's forward allocating while its
    backward's are still held.
    """

    name = "dualpipe"
    splits_backward = True
    chunks_per_stage = 2
    param_copies = 2
    pairs_units = True

    def with_split(self, first: int | None = None, last: int | None = None,
                   layout: tuple[int, ...] | None = None) -> Schedule:
        if first is not None or last is not None:
            field = "first_stage_layers" if first is not None else "last_stage_layers"
            raise ValueError(f"plan.{field}: not with schedule dualpipe (stages 0 and pp-1 each hold both a first "
                             "and a last model chunk); give every chunk's layers with plan.pipeline_layout instead")
        if layout is None:
            return self
        out = copy.copy(self)
        out.layout = layout
        return out

    def chunk_layers(self, n_layers: int, pp: int, v: int = 1) -> list[np.ndarray]:
        """The ``pp`` model chunks (``array_split``, or ``plan.pipeline_layout``'s ``pp`` counts), once
        per direction."""
        if self.layout is not None:
            one = split_layers(n_layers, self.layout)
        else:
            one = np.array_split(np.arange(n_layers), pp)
        return one + one

    def layout_rule(self, pp: int, v: int = 1) -> str:
        return f"plan.pp = {pp} (stage s holds chunks s and pp-1-s)"

    def path(self, microbatch: int, pp: int, m: int, v: int = 1) -> tuple[int, int]:
        return (0, pp - 1) if microbatch < m // 2 else (pp, 2 * pp - 1)

    def stage_of(self, chunk, pp: int):
        c = chunk % (2 * pp)
        return np.where(c < pp, c, 2 * pp - 1 - c) if isinstance(c, np.ndarray) else (c if c < pp else 2 * pp - 1 - c)

    def global_chunk(self, stage, local, pp: int):
        return np.where(local == 0, stage, 2 * pp - 1 - stage) if isinstance(local, np.ndarray) else (
            stage if local == 0 else 2 * pp - 1 - stage)

    def stage_layers(self, n_layers: int, stage: int, pp: int, v: int = 1) -> list[int]:
        return [int(x) for x in self.chunk_layers(n_layers, pp)[stage]]  # direction 0's chunk

    def order(self, stage: int, pp: int, m: int, v: int = 1) -> list[Entry]:
        # dualpipe.py builds on Unit, so it is imported here, not at the top
        from moesim.engine.training.dualpipe import dualpipe_order

        return dualpipe_order(stage, pp, m)

    def bubble_fraction(self, pp: int, m: int, v: int = 1, f: float = 1.0, b: float = 1.0, w: float = 1.0) -> float:
        """``(p/2-1)(F&B + B + W - 3W) / (m(F+B+W) + that)`` with unit times ``f``, ``b``, ``w`` and
        ``F&B = F + B + W`` (pairs that overlap nothing)."""
        idle = (pp / 2 - 1) * (f + b + w + b + w - 3 * w)
        return idle / (m * (f + b + w) + idle)

    def microbatches_in_flight(self, pp: int, m: int, v: int = 1) -> float:
        return float(pp + 1)


SCHEDULES: dict[str, Schedule] = {s.name: s for s in (GPipe(), OneFOneB(), Interleaved(), ZBH1(), DualPipe())}


def get_schedule(name: str) -> Schedule:
    """The registered schedule called ``name``; ``ValueError`` naming the allowed ones otherwise."""
    try:
        return SCHEDULES[name]
    except KeyError:
        raise ValueError(f"schedule = {name!r}: allowed {', '.join(SCHEDULES)}") from None


def schedule_for(plan: PlanSpec) -> Schedule:
    """The schedule ``plan.schedule`` names, bound to the plan's layer split (``plan.first_stage_layers``
    / ``plan.last_stage_layers``, or ``plan.pipeline_layout``; the registered object when all are unset)."""
    layout = tuple(plan.pipeline_layout) if plan.pipeline_layout is not None else None
    return get_schedule(plan.schedule).with_split(plan.first_stage_layers, plan.last_stage_layers, layout)


# The round-robin layout (every registered schedule's but DualPipe's); for code that sees orders, not a plan.
DEFAULT_LAYOUT: Schedule = SCHEDULES["1f1b"]
