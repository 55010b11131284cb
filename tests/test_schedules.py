"""Schedule registry: every plan.schedule is registered, and each schedule's layout, bubble and
activations in flight are the numbers the engine and accounting used before the registry."""

from __future__ import annotations

import itertools
import typing

import numpy as np
import pytest

from moesim.engine.training.pipeline import check_orders
from moesim.engine.training.schedules import SCHEDULES, Schedule, Unit, get_schedule, schedule_for
from moesim.schemas.plan import PlanSpec

GRID = list(itertools.product((1, 2, 3, 4, 8), (1, 2, 3, 4, 8, 16, 32), (1, 2, 4)))


def _old_in_flight(pp: int, m: int, schedule: str, v: int) -> float:
    """``accounting._microbatches_in_flight`` as it was before the registry (reference copy)."""
    if pp == 1:
        return 1.0
    if schedule == "gpipe":
        return float(m)
    if schedule == "interleaved":
        return min(m, pp) * (1 + (pp - 1) / (pp * v))
    return float(min(m, pp))


def test_registry_covers_the_plan_literal():
    allowed = typing.get_args(PlanSpec.model_fields["schedule"].annotation)
    assert set(SCHEDULES) == set(allowed)
    for name, sched in SCHEDULES.items():
        assert isinstance(sched, Schedule) and sched.name == name


def test_schedule_for_and_unknown_names():
    plan = PlanSpec(pp=4, microbatches=8, schedule="interleaved", virtual_stages=2)
    assert schedule_for(plan) is SCHEDULES["interleaved"]
    assert schedule_for(PlanSpec()) is SCHEDULES["1f1b"]
    with pytest.raises(ValueError, match="allowed gpipe, 1f1b, interleaved"):
        get_schedule("zero-bubble")


@pytest.mark.parametrize("name", sorted(SCHEDULES))
def test_stage_of_is_round_robin_and_vectorised(name):
    sched = SCHEDULES[name]
    for pp, v in itertools.product((1, 2, 3, 4, 8), (1, 2, 4)):
        C = sched.chunks(pp, v)
        assert C == pp * (v if name == "interleaved" else 1)
        chunks = np.arange(-1, C + 1)
        np.testing.assert_array_equal(sched.stage_of(chunks, pp), chunks % pp)
        assert [sched.stage_of(int(c), pp) for c in chunks] == [int(c) % pp for c in chunks]
        for st, local in itertools.product(range(pp), range(sched.virtual_stages(v))):
            c = sched.global_chunk(st, local, pp)
            assert c == local * pp + st and sched.stage_of(c, pp) == st


@pytest.mark.parametrize("pp, m, v", GRID)
def test_bubble_formulas(pp, m, v):
    assert SCHEDULES["gpipe"].bubble_fraction(pp, m, v) == pytest.approx((pp - 1) / (m + pp - 1))
    assert SCHEDULES["1f1b"].bubble_fraction(pp, m, v) == SCHEDULES["gpipe"].bubble_fraction(pp, m, v)
    assert SCHEDULES["interleaved"].bubble_fraction(pp, m, v) == pytest.approx((pp - 1) / (v * m + pp - 1))


@pytest.mark.parametrize("pp, m, v", GRID)
def test_in_flight_equals_the_old_accounting(pp, m, v):
    for name, sched in SCHEDULES.items():
        vv = v if name == "interleaved" else 1  # the plan refuses virtual_stages > 1 otherwise
        assert sched.microbatches_in_flight(pp, m, vv) == _old_in_flight(pp, m, name, vv)


@pytest.mark.parametrize("pp, m, v", GRID)
def test_orders_cover_every_unit_and_never_deadlock(pp, m, v):
    for name, sched in SCHEDULES.items():
        vv = sched.virtual_stages(v)
        if name == "interleaved" and vv > 1 and m % pp:
            with pytest.raises(ValueError, match="multiple of pp"):
                sched.orders(pp, m, vv)
            continue
        orders = sched.orders(pp, m, vv)
        assert len(orders) == pp and orders == [sched.order(s, pp, m, vv) for s in range(pp)]
        check_orders(orders, m, vv, layout=sched)


def test_interleaved_with_one_chunk_is_1f1b():
    assert SCHEDULES["interleaved"].orders(4, 8, 1) == SCHEDULES["1f1b"].orders(4, 8)
    assert SCHEDULES["gpipe"].order(0, 2, 2) == [Unit(0, 0, False), Unit(1, 0, False), Unit(0, 0, True), Unit(1, 0, True)]
