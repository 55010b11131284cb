"""Pipeline schedules as registered objects: layout, per-stage order, bubble, activations in flight.

One ``Schedule`` per ``plan.schedule`` value, registered in ``SCHEDULES``; everything that depends
on the schedule asks ``schedule_for(plan)`` instead of doing its own arithmetic:

- ``stage_of(chunk, pp)`` / ``global_chunk(stage, local, pp)``: which stage holds global model
  chunk ``c`` and the inverse (``engine.training.step``, ``engine.training.summary``,
  ``engine.training.pipeline.check_orders``);
- ``chunks(pp, v)``: how many model chunks the layers split into (``pp * v``);
- ``order(stage, pp, m, v)`` / ``orders(pp, m, v)``: the (microbatch, local chunk, direction) units
  a stage plays, in order (``engine.training.step.run_pipeline``);
- ``bubble_fraction(pp, m, v)``: the analytic idle fraction with equal stages (the summary's
  ``analytic_bubble_fraction``);
- ``microbatches_in_flight(pp, m, v)``: microbatches whose activations stage 0 holds at the
  schedule's peak (``memory.memory_report``).

Layout (all schedules here): with ``v`` virtual stages, stage ``s`` holds model chunks
``s, s + pp, s + 2*pp, ...`` (global chunk ``c = local * pp + s``); without interleaving ``v = 1``
and the local chunk is always 0. Forward of chunk ``c`` needs forward of ``c - 1``; backward of
``c`` needs backward of ``c + 1`` (and, on the last chunk, its own forward).

Adding a schedule: subclass ``Schedule`` here, register an instance in ``SCHEDULES``, add its name
to ``plan.schedule``'s ``Literal`` (``schemas/plan.py``) and a test (``tests/test_schedules.py``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:
    from moesim.schemas.plan import PlanSpec


class Unit(NamedTuple):
    """One unit of pipeline work: a microbatch through one local chunk, forward or backward."""

    microbatch: int
    chunk: int  # local chunk index on its stage, 0..v-1
    backward: bool


class Schedule:
    """Base: round-robin chunk layout, the equal-stage bubble with ``v = 1``; subclasses give
    ``order`` and ``microbatches_in_flight``."""

    name: str = ""
    uses_virtual_stages: bool = False  # True when plan.virtual_stages splits a stage into chunks

    def virtual_stages(self, v: int) -> int:
        """Model chunks per stage this schedule plays for ``plan.virtual_stages = v``."""
        return v if self.uses_virtual_stages else 1

    def chunks(self, pp: int, v: int = 1) -> int:
        """Number of model chunks the layers split into."""
        return pp * self.virtual_stages(v)

    def stage_of(self, chunk, pp: int):
        """Stage holding global chunk ``chunk`` (int or numpy array; ``-1`` wraps to ``pp - 1``)."""
        return chunk % pp

    def global_chunk(self, stage, local, pp: int):
        """Global chunk of local chunk ``local`` on ``stage`` (inverse of ``stage_of``)."""
        return local * pp + stage

    def order(self, stage: int, pp: int, m: int, v: int = 1) -> list[Unit]:
        """Units stage ``stage`` runs, in order, for ``m`` microbatches."""
        raise NotImplementedError

    def orders(self, pp: int, m: int, v: int = 1) -> list[list[Unit]]:
        """``order`` for every stage."""
        return [self.order(s, pp, m, v) for s in range(pp)]

    def bubble_fraction(self, pp: int, m: int, v: int = 1) -> float:
        """Idle fraction of a step with equal stages: ``(pp-1) / (m + pp-1)`` (DESIGN.md; GPipe,
        Huang et al. 2019)."""
        return _bubble(pp, m, 1)

    def microbatches_in_flight(self, pp: int, m: int, v: int = 1) -> float:
        """Microbatches whose activations stage 0 holds at the peak of the schedule."""
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


SCHEDULES: dict[str, Schedule] = {s.name: s for s in (GPipe(), OneFOneB(), Interleaved())}


def get_schedule(name: str) -> Schedule:
    """The registered schedule called ``name``; ``ValueError`` naming the allowed ones otherwise."""
    try:
        return SCHEDULES[name]
    except KeyError:
        raise ValueError(f"schedule = {name!r}: allowed {', '.join(SCHEDULES)}") from None


def schedule_for(plan: PlanSpec) -> Schedule:
    """The schedule ``plan.schedule`` names."""
    return get_schedule(plan.schedule)


# Layout shared by every registered schedule; for code that sees orders, not a plan.
DEFAULT_LAYOUT: Schedule = SCHEDULES["1f1b"]
