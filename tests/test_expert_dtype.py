"""Per-part weight dtype: MXFP4 routed experts beside 16-bit attention (model.expert_dtype), as gpt-oss ships."""

from __future__ import annotations

import numpy as np
import pytest

from moesim.accounting import param_counts
from moesim.costmodel import build_cost_model
from moesim.costmodel.grouped_eff import WEIGHT_ONLY_TILE_M, tile_rows
from moesim.engine.ops import block_ops
from moesim.engine.serving.decode_cost import IterationCost
from moesim.errors import InputError
from moesim.loader import scenario_from_dict
from moesim.memory import weight_params_per_device
from moesim.precision import (
    expert_precision,
    parameter_bytes,
    precision,
    scenario_precision,
    summary_fields,
)
from moesim.schemas import Scenario

MODEL = dict(preset="mixtral-8x7b", dtype="bf16")


def serve(expert_dtype: str | None, tp: int = 2) -> Scenario:
    return scenario_from_dict({
        "name": "parts", "model": {**MODEL, "expert_dtype": expert_dtype},
        "hardware": {"preset": "h100-sxm", "node": {"devices_per_node": tp}}, "plan": {"dp": 1, "tp": tp},
        "workload": {"kind": "serving", "arrival": {"process": "batch", "n_requests": 4},
                     "prompt_tokens": {"dist": "fixed", "value": 256},
                     "output_tokens": {"dist": "fixed", "value": 32}}})


def test_mxfp4_is_4_25_bits_and_runs_weight_only_on_hopper():
    s = serve("mxfp4")
    p = precision("mxfp4", s.hardware.device)
    assert p.weight_bytes == pytest.approx(4.25 / 8)  # 32 FP4 weights share one 8-bit scale
    assert p.weight_only and p.compute_dtype == "bf16"


def test_experts_are_read_at_their_dtype_and_the_rest_at_the_models():
    s, base = serve("mxfp4"), serve(None)
    dense, experts = weight_params_per_device(s.model, s.plan)
    assert parameter_bytes(s, dense, experts) == pytest.approx(dense * 2.0 + experts * 4.25 / 8)
    assert parameter_bytes(base, dense, experts) == pytest.approx((dense + experts) * 2.0)
    assert expert_precision(base) == scenario_precision(base)
    assert scenario_precision(s).weight_bytes == 2.0  # attention, router, embeddings stay bf16
    # the KV pool gets what the smaller experts leave
    from moesim.memory import serving_kv_pool_bytes
    gained = serving_kv_pool_bytes(s) - serving_kv_pool_bytes(base)
    assert gained == pytest.approx(experts * (2.0 - 4.25 / 8) * s.workload.kv_cache_fraction, rel=1e-9)
    c = param_counts(s.model)
    fields = summary_fields(s)
    assert fields["weight_bytes_per_param"] == pytest.approx(
        ((c.total - c.routed_experts) * 2.0 + c.routed_experts * 4.25 / 8) / c.total)
    assert "routed experts: mxfp4 weights run weight-only" in fields["precision_note"]


def test_only_the_expert_gemms_take_the_expert_dtype():
    s = serve("mxfp4")
    cost = IterationCost(s, build_cost_model(s.hardware), np.random.default_rng(0), max_tokens=8)
    ops = {op.name: op for op in block_ops(cost.dims, cost.dtypes, True, 4.0, np.ones(4), np.full(4, 300.0),
                                           expert_tokens=np.ones((1, 8)))}
    assert ops["expert_up"].args["dtype"] == ops["expert_down"].args["dtype"] == "mxfp4"
    assert {ops[n].args["dtype"] for n in ("qkv_proj", "o_proj", "shared_up")
            if n in ops} | {ops["router"].args["dtype"]} == {"bf16"}


def test_a_batch1_decode_step_saves_the_expert_bytes():
    """At one token the step streams weights: mxfp4 experts shave ~3/4 of the expert reads."""
    times = {}
    for e in (None, "mxfp4"):
        s = serve(e)
        cost = IterationCost(s, build_cost_model(s.hardware), np.random.default_rng(0), max_tokens=8)
        times[e] = cost.uniform_experts_s(np.array([1.0]))[0][0]
    assert times["mxfp4"] < 0.45 * times[None]


def test_weight_only_grouped_kernels_pad_experts_to_16_rows():
    assert WEIGHT_ONLY_TILE_M == 16
    assert tile_rows(64, True) == 16 and tile_rows(64, False) == 64 and tile_rows(16, True) == 16


def test_datasheet_model_pads_weight_only_experts_to_the_smaller_tile():
    """The datasheet roofline pads a weight-only grouped GEMM as the profiled model does: 8 tokens
    per expert waste half a 16-row tile, not seven eighths of Hopper's 64-row one."""
    from moesim.costmodel.datasheet import RooflineCostModel

    cm = RooflineCostModel(serve(None).hardware)
    t = np.full(8, 8.0)
    native, weight_only = cm.grouped_efficiency(t, 4096, 4096), cm.grouped_efficiency(t, 4096, 4096, True)
    assert weight_only > native
    assert cm.grouped_efficiency(np.full(8, 64.0), 4096, 4096, True) == pytest.approx(
        cm.grouped_efficiency(np.full(8, 64.0), 4096, 4096))  # full tiles either way


def test_training_refuses_a_separate_expert_dtype_and_mxfp4_weights():
    train = dict(name="t", hardware=dict(preset="h100-sxm", cluster=dict(nodes=1)), plan=dict(dp=8),
                 workload=dict(kind="training", global_batch_seqs=8, seq_len=1024))
    with pytest.raises(InputError, match=r"^model.expert_dtype = mxfp4: a separate expert dtype is for serving"):
        scenario_from_dict({**train, "model": {**MODEL, "expert_dtype": "mxfp4"}})
    with pytest.raises(InputError, match=r"^model.dtype = mxfp4: quantized weights \(int8, int4, mxfp4\) are for serving"):
        scenario_from_dict({**train, "model": {**MODEL, "dtype": "mxfp4"}})
    ok = scenario_from_dict({**train, "model": {**MODEL, "expert_dtype": "bf16"}})  # the same dtype is no split
    assert ok.model.expert_dtype == "bf16"


def test_an_unknown_expert_dtype_names_the_field():
    with pytest.raises(InputError, match=r"model.expert_dtype"):
        serve("fp4")
