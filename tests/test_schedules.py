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
#: Schedules with the round-robin layout (stage s holds chunks s, s + pp, ...): all but DualPipe.
ROUND_ROBIN = sorted(n for n in SCHEDULES if n != "dualpipe")


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


@pytest.mark.parametrize("name", ROUND_ROBIN)
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
        if name == "dualpipe":
            continue  # new: tested below
        vv = v if name == "interleaved" else 1  # the plan refuses virtual_stages > 1 otherwise
        assert sched.microbatches_in_flight(pp, m, vv) == _old_in_flight(pp, m, name, vv)  # zb-h1: as 1F1B


@pytest.mark.parametrize("pp, m, v", GRID)
def test_orders_cover_every_unit_and_never_deadlock(pp, m, v):
    for name, sched in SCHEDULES.items():
        vv = sched.virtual_stages(v)
        if name == "interleaved" and vv > 1 and m % pp:
            with pytest.raises(ValueError, match="multiple of pp"):
                sched.orders(pp, m, vv)
            continue
        if name == "dualpipe" and (pp % 2 or m % 2 or m < 2 * pp):
            with pytest.raises(ValueError, match="pp even"):
                sched.orders(pp, m, vv)
            continue
        orders = sched.orders(pp, m, vv)
        assert len(orders) == pp and orders == [sched.order(s, pp, m, vv) for s in range(pp)]
        check_orders(orders, m, vv, layout=sched)


def test_interleaved_with_one_chunk_is_1f1b():
    assert SCHEDULES["interleaved"].orders(4, 8, 1) == SCHEDULES["1f1b"].orders(4, 8)
    assert SCHEDULES["gpipe"].order(0, 2, 2) == [Unit(0, 0, False), Unit(1, 0, False), Unit(0, 0, True), Unit(1, 0, True)]


# ---------------------------------------------------------------- units, ZB-H1, DualPipe
def test_unit_kinds_and_slots():
    assert Unit(3, 0, False) == (3, 0, False, "") and Unit(3, 0, True) == Unit(3, 0, True, "")
    assert [u.kind for u in (Unit(0, 0, False), Unit(0, 0, True), Unit(0, 0, True, "B"), Unit(0, 0, True, "W"))] == [
        "F", "BW", "B", "W"]
    assert [u.slot for u in (Unit(0, 0, False), Unit(0, 0, True), Unit(0, 0, True, "B"), Unit(0, 0, True, "W"))] == [
        0, 1, 1, 2]
    assert all(not s.splits_backward for n, s in SCHEDULES.items() if n not in ("zb-h1", "dualpipe"))
    assert SCHEDULES["zb-h1"].splits_backward and SCHEDULES["dualpipe"].splits_backward


def test_zb_h1_order_defers_a_stage_index_of_weight_gradients():
    F = lambda i: Unit(i, 0, False)  # noqa: E731
    B = lambda i: Unit(i, 0, True, "B")  # noqa: E731
    W = lambda i: Unit(i, 0, True, "W")  # noqa: E731
    zb = SCHEDULES["zb-h1"]
    # stage s holds back s W's: the last stage of 3 sends its B's on first, its W's fill the end
    assert zb.order(2, 3, 3) == [F(0), B(0), F(1), B(1), F(2), B(2), W(0), W(1), W(2)]
    # stage 1 of 3: one warm-up forward (as 1F1B), W0 held back one step
    assert zb.order(1, 3, 3) == [F(0), F(1), B(0), F(2), B(1), W(0), B(2), W(1), W(2)]
    # stage 0: each W right after its B; the same forward / B skeleton as 1F1B
    assert zb.order(0, 3, 3) == [F(0), F(1), F(2), B(0), W(0), B(1), W(1), B(2), W(2)]
    for pp, m in ((4, 8), (8, 3), (5, 13)):
        for o, ref in zip(zb.orders(pp, m), SCHEDULES["1f1b"].orders(pp, m)):
            assert [u for u in o if u.kind != "W"] == [u._replace(part="B") if u.backward else u for u in ref]
            # activations held (forwards whose W has not run) never exceed 1F1B's peak: pp
            held = np.cumsum([1 if u.kind == "F" else -1 if u.kind == "W" else 0 for u in o])
            assert held.max() <= min(pp, m)


@pytest.mark.parametrize("pp, m", [(1, 4), (2, 1), (2, 2), (4, 8), (4, 3), (8, 16), (5, 7)])
def test_zb_h1_bubble_formula(pp, m):
    zb = SCHEDULES["zb-h1"]
    assert zb.bubble_fraction(pp, m) == pytest.approx((pp - 1) / (3 * m + pp - 1))  # F = B = W
    f, b, w = 1.0, 1.3, 0.7
    idle = (pp - 1) * (f + b - w)
    assert zb.bubble_fraction(pp, m, f=f, b=b, w=w) == pytest.approx(idle / (m * (f + b + w) + idle))
    assert zb.bubble_fraction(pp, m) <= SCHEDULES["1f1b"].bubble_fraction(pp, m)


@pytest.mark.parametrize("pp, m", [(2, 4), (4, 8), (4, 12), (8, 16), (16, 64)])
def test_dualpipe_bubble_formula(pp, m):
    dp = SCHEDULES["dualpipe"]
    assert dp.bubble_fraction(pp, m) == pytest.approx((pp - 2) / (3 * m + pp - 2))  # F = B = W, F&B = F+B+W
    f, b, w = 1.0, 1.3, 0.7
    idle = (pp / 2 - 1) * ((f + b + w) + (b + w) - 3 * w)  # (PP/2-1)(F&B + B_full - 3W)
    assert dp.bubble_fraction(pp, m, f=f, b=b, w=w) == pytest.approx(idle / (m * (f + b + w) + idle))
    assert dp.bubble_fraction(pp, m) < SCHEDULES["zb-h1"].bubble_fraction(pp, m) <= SCHEDULES["1f1b"].bubble_fraction(pp, m)


def test_dualpipe_layout_two_chunks_per_stage_one_per_direction():
    dp = SCHEDULES["dualpipe"]
    for pp in (2, 4, 8):
        C = dp.chunks(pp)
        assert C == 2 * pp and dp.chunks(pp, 3) == 2 * pp  # no virtual stages
        np.testing.assert_array_equal(dp.stage_of(np.arange(C), pp), list(range(pp)) + list(range(pp))[::-1])
        for st in range(pp):
            assert [dp.global_chunk(st, c, pp) for c in (0, 1)] == [st, 2 * pp - 1 - st]
            assert all(dp.stage_of(dp.global_chunk(st, c, pp), pp) == st for c in (0, 1))
        layers = dp.chunk_layers(61, pp)
        assert len(layers) == C and all((layers[c] == layers[c + pp]).all() for c in range(pp))  # the model twice
        assert sorted(np.concatenate(layers[:pp]).tolist()) == list(range(61))
        # stage 0 holds model chunks 0 (direction 0) and pp-1 (direction 1); a microbatch passes one
        assert dp.stage_layers(61, 0, pp) == layers[0].tolist()
        m = 4 * pp
        assert [dp.path(i, pp, m) for i in (0, m // 2 - 1, m // 2, m - 1)] == [(0, pp - 1)] * 2 + [(pp, 2 * pp - 1)] * 2
    assert dp.param_copies == 2 and all(s.param_copies == 1 for n, s in SCHEDULES.items() if n != "dualpipe")
    assert dp.microbatches_in_flight(8, 16) == 9  # README: activations PP + 1


@pytest.mark.parametrize("name", ROUND_ROBIN)
def test_stage_layers_default_is_the_array_split_of_the_engine(name):
    sched = SCHEDULES[name]
    for n_layers, pp, v in ((61, 8, 4), (7, 3, 1), (10, 2, 2)):
        chunks = np.array_split(np.arange(n_layers), sched.chunks(pp, v))
        assert all((a == b).all() for a, b in zip(sched.chunk_layers(n_layers, pp, v), chunks))
        for st in range(pp):
            want = sorted(int(x) for c, ch in enumerate(chunks) if sched.stage_of(c, pp) == st for x in ch)
            assert sched.stage_layers(n_layers, st, pp, v) == want


def test_dualpipe_order_follows_the_reference_steps():
    """pp = 4, m = 8 (4 per direction), stage 0 (half-rank 0): 2 warm-up forwards of direction 0,
    F0 F1, one B1 W1 F1, then F&B pairs; the reference's eight steps (dualpipe.py)."""
    F = lambda i, c: Unit(i, c, False)  # noqa: E731
    BW = lambda i, c: Unit(i, c, True)  # noqa: E731
    B = lambda i, c: Unit(i, c, True, "B")  # noqa: E731
    W = lambda i, c: Unit(i, c, True, "W")  # noqa: E731
    assert SCHEDULES["dualpipe"].order(0, 4, 8) == [
        F(0, 0), F(1, 0),  # 1. nF0
        F(2, 0), F(4, 1),  # 2. nF0F1
        B(4, 1), W(4, 1), F(5, 1),  # 3. nB1W1F1
        (F(3, 0), BW(5, 1)), (F(6, 1), BW(0, 0)),  # 4. nF0B1F1B0
        BW(6, 1), (F(7, 1), BW(1, 0)),  # 5. nB1F1B0
        BW(7, 1), B(2, 0),  # 6. nB1B0, the second half split
        W(2, 0), B(3, 0),  # 7. nWB0
        W(3, 0),  # 8. nW
    ]
    # the last stage mirrors it with the directions swapped
    swap = lambda u: u._replace(chunk=1 - u.chunk, microbatch=(u.microbatch + 4) % 8)  # noqa: E731
    mirror = [swap(e) if isinstance(e, Unit) else tuple(map(swap, e)) for e in SCHEDULES["dualpipe"].order(0, 4, 8)]
    assert SCHEDULES["dualpipe"].order(3, 4, 8) == mirror


@pytest.mark.parametrize("pp, m", [(2, 4), (2, 10), (4, 8), (4, 14), (6, 12), (8, 16), (8, 34), (16, 32)])
def test_dualpipe_orders_play_every_unit_once_and_finish(pp, m):
    dp = SCHEDULES["dualpipe"]
    orders = dp.orders(pp, m)
    check_orders(orders, m, 1, layout=dp)
    for order in orders:  # pairs: a forward with a whole backward of the other direction
        for e in order:
            if not isinstance(e, Unit):
                f, b = e
                assert f.kind == "F" and b.kind == "BW" and f.chunk != b.chunk


def test_check_orders_catches_split_backward_mistakes():
    zb = SCHEDULES["zb-h1"]
    orders = zb.orders(2, 2)
    bad = [orders[0], [u for u in orders[1] if u != Unit(1, 0, True, "W")]]  # a W missing
    with pytest.raises(ValueError, match="exactly once"):
        check_orders(bad, 2, 1, layout=zb)
    w0 = orders[1].index(Unit(0, 0, True, "W"))
    b0 = orders[1].index(Unit(0, 0, True, "B"))
    swapped = list(orders[1])
    swapped[w0], swapped[b0] = swapped[b0], swapped[w0]  # W before its B
    with pytest.raises(ValueError, match="deadlock"):
        check_orders([orders[0], swapped], 2, 1, layout=zb)
