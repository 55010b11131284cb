"""Elementwise parts of a profile: the activation curve, the router top-k table, their fits and use."""

from __future__ import annotations

import numpy as np
import pytest
from moesim.calibrate.fit_elementwise import fit_activation, fit_elementwise, fit_router
from moesim.calibrate.microbench import Measurement

from moesim.costmodel import cost_model
from moesim.costmodel.profile import (
    ElementCurve,
    ElementwiseSpec,
    RouterTable,
    load_default_profile,
)
from moesim.presets import HARDWARE
from moesim.schemas import HardwareSpec


def test_element_curve_floors_small_calls_and_grows_linearly_past_the_last_node():
    c = ElementCurve(elements=[1024, 65536], us=[2.0, 32.0])
    s = c.seconds(np.array([0, 1, 1024, 65536, 131072]))
    assert s[0] == 0.0
    assert s[1] == pytest.approx(2e-6)  # launch floor: a 1-element call costs the first node's time
    assert s[2] == pytest.approx(2e-6) and s[3] == pytest.approx(32e-6)
    assert s[4] == pytest.approx(2 * s[3])  # proportional beyond the last node
    assert float(c.seconds((1024 + 65536) / 2)) == pytest.approx(17e-6)  # linear between nodes


def _router() -> RouterTable:
    return RouterTable(tokens=[1, 4096], experts=[8, 64], top_k=[1, 2],
                       us=[[[4, 4096 * 0.15], [4, 4096 * 0.12]], [[4, 4096 * 0.16], [4, 4096 * 0.58]]])


def test_router_table_hits_nodes_and_interpolates_top_k():
    r = _router()
    assert float(r.seconds(4096, 64, 2)) == pytest.approx(4096 * 580e-9)
    assert float(r.seconds(4096, 8, 1)) == pytest.approx(4096 * 150e-9)
    k15 = float(r.seconds(4096, 64, 1.5))
    assert 4096 * 120e-9 < k15 < 4096 * 580e-9
    assert float(r.seconds(4096, 64, 8)) == pytest.approx(4096 * 580e-9)  # clamped to the last top-k
    assert float(r.seconds(0, 8, 1)) == 0.0


@pytest.mark.parametrize("bad", [
    {"elements": [10, 1], "us": [1.0, 1.0]},
    {"elements": [1, 10], "us": [1.0]},
    {"elements": [1, 10], "us": [1.0, -1.0]},
])
def test_element_curve_validation(bad):
    with pytest.raises(ValueError):
        ElementCurve(**bad)


def test_router_table_validation_names_the_shape():
    with pytest.raises(ValueError, match="us: expected 1 x 1 x 2"):
        RouterTable(tokens=[1, 2], experts=[8], top_k=[1], us=[[[1.0]]])


def test_cost_model_prices_from_the_tables_and_falls_back_to_memory_streams():
    a100 = load_default_profile("a100.yaml")
    hw = HardwareSpec.model_validate(HARDWARE["a100-80gb"])
    plain = cost_model(hw, a100)
    assert a100.elementwise is None
    t = np.array([64.0, 4096.0])
    # no table: one memory stream (2 inputs + 1 output per element when gated)
    assert np.allclose(plain.activation_s(t * 512, True, 2.0), plain.memory_s(t * 512 * 3 * 2.0))
    assert np.allclose(plain.router_topk_s(t, 64, 2), plain.memory_s(t * 64 * 4.0))
    spec = ElementwiseSpec(activation=ElementCurve(elements=[1e3, 1e6], us=[1.0, 250.0]), router=_router())
    cm = cost_model(hw, a100.model_copy(update={"elementwise": spec}))
    assert np.allclose(cm.activation_s(t * 512, True, 2.0), spec.activation.seconds(t * 512))
    assert np.allclose(cm.router_topk_s(t, 64, 2), spec.router.seconds(t, 64, 2))


def _rows_router() -> list[Measurement]:
    rows = []
    for k in (1, 2):
        for e in (8, 64):
            for t in (1, 16, 256, 4096):
                ns = (5000.0 / t + 100.0 + (400.0 if (k, e) == (2, 64) else 0.0)) * (1 + 0.01 * (t % 7))
                rows.append(Measurement("router", {"tokens": t, "experts": e, "top_k": k}, ns * t * 1e-9))
    return rows


def test_router_fit_keeps_measured_points_and_scores_held_out_ones():
    rows = _rows_router()
    table, err = fit_router(rows)
    assert table.top_k == [1, 2] and table.experts == [8, 64] and table.tokens == [1, 16, 256, 4096]
    assert err.rows_fit + err.rows_held_out == len(rows)
    assert err.rows_held_out > 0 and err.median_abs_pct < 50  # smooth data: interpolation is close
    # the slow (top-2, 64 experts) cell stays slow
    assert float(table.seconds(4096, 64, 2)) > 4 * float(table.seconds(4096, 8, 2))


def test_activation_fit_and_combined_spec():
    act = [Measurement("activation", {"rows": r, "ffn": 512, "elements": r * 512}, 1e-6 + r * 512 * 0.3e-9)
           for r in (1, 4, 16, 64, 256, 1024, 4096)]
    curve, err = fit_activation(act)
    assert curve.elements[0] == 512 and curve.elements[-1] == 4096 * 512
    assert float(curve.seconds(4096 * 512)) == pytest.approx(act[-1].time_s, rel=0.02)
    assert err.rows_fit + err.rows_held_out == len(act)
    spec, errors = fit_elementwise(act + _rows_router())
    assert spec.activation is not None and spec.router is not None and set(errors) == {"activation", "router"}
    assert fit_elementwise([]) == (None, {})


def test_engine_layer_costs_read_the_same_tables():
    """The op graph's FFN and expert ops (every engine's) price the activation by the measured curve."""
    from moesim.engine.op_types import BlockDims, OpDtypes
    from moesim.engine.ops import expert_ops, ffn_ops, total_s

    a100 = load_default_profile("a100.yaml")
    hw = HardwareSpec.model_validate(HARDWARE["a100-80gb"])
    plain = cost_model(hw, a100)
    curve = ElementCurve(elements=[1e3, 1e8], us=[5.0, 5e5])
    cm = cost_model(hw, a100.model_copy(update={"elementwise": ElementwiseSpec(activation=curve)}))
    tokens, d, hidden = 2048.0, 1024, 4096
    dims, dt = BlockDims(d_model=d, expert_w=hidden, gated=True), OpDtypes("bf16", 2.0, 2.0, "bf16", "bf16")
    ffn = ffn_ops("ffn", dims, dt, tokens, hidden)
    delta = total_s(cm, ffn) - total_s(plain, ffn)
    expected = float(curve.seconds(tokens * hidden)) - float(plain.memory_s(tokens * hidden * 3 * 2.0))
    assert float(delta) == pytest.approx(expected, rel=1e-9)
    loads = np.array([100.0, 0.0, 300.0])
    delta = total_s(cm, expert_ops(dims, dt, loads)) - total_s(plain, expert_ops(dims, dt, loads))
    expected = float(curve.seconds(400 * hidden)) - float(plain.memory_s(400 * hidden * 3 * 2.0))
    assert float(delta) == pytest.approx(expected, rel=1e-9)
