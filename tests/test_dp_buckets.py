"""The data-parallel sync as Megatron launches it: gradients in buckets (one collective each, not one per
layer, the last one after the backward), and under ZeRO-1/2 a parameter all-gather of only what the
optimizer updated (frozen weights are neither reduced nor gathered)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from moesim.costmodel import build_cost_model
from moesim.engine import cp as ctx
from moesim.engine.training.buckets import (
    MIN_BUCKET_PARAMS,
    bucket_params,
    bucket_pieces,
)
from moesim.engine.training.layer_params import layer_params_per_device
from moesim.errors import InputError
from moesim.finetune import trainable_counts
from moesim.loader import load_scenario
from moesim.simulate import simulate
from tests.test_finetune import MIXTRAL_TRAIN as MIXTRAL
from tests.test_finetune import costs_of, scen

LORA = Path(__file__).resolve().parent.parent / "moesim" / "data" / "validation" / "llama2-70b-lora-mlperf.yaml"
#: 64 B200 over 8 nodes as DP8 x CP8, the syncs overlapped: the adapters' gradients cross the NICs.
WIDE = ("hardware.preset=b200", "hardware.cluster.nodes=8", "plan.cp=8", "plan.dp=8")


def lora(*sets: str):
    return load_scenario(str(LORA), list(sets))


def test_megatrons_bucket_size():
    assert bucket_params(8, True, 1e12) == MIN_BUCKET_PARAMS == 40e6
    assert bucket_params(64, True, 1e12) == 64e6  # 1M parameters per rank past 40 ranks
    assert bucket_params(64, True, 5e6) == 5e6  # fewer gradients than a bucket: one bucket
    assert bucket_params(64, False, 1e12) == 1e12  # no overlap: everything in one bucket
    assert bucket_params(64, True, 1e12, size=768e6) == 768e6  # plan.dp_bucket_params


def test_bucket_pieces_pay_one_latency_each_and_close_at_their_last_layer():
    secs = np.array([3.0, 3.0, 3.0, 0.0, 3.0])  # backward order; each a collective of its own (latency 1)
    nbytes = np.array([10.0, 10.0, 10.0, 0.0, 10.0])
    pieces = bucket_pieces(secs, nbytes, 1.0, bucket_bytes=20.0)
    assert pieces == [(1, 5.0, 20.0), (4, 5.0, 20.0)]  # two layers a bucket; the empty layer joins none
    assert bucket_pieces(secs, nbytes, 1.0, None) == [(0, 3.0, 10.0), (1, 3.0, 10.0), (2, 3.0, 10.0), (4, 3.0, 10.0)]
    assert bucket_pieces(secs, nbytes, 1.0, 1e9) == [(4, 12.0 - 3.0, 40.0)]  # one bucket: the last layer closes it


def test_lora_syncs_its_adapters_in_about_one_collective():
    """65.5M adapter parameters over DP8 x CP8 (a 64M-parameter bucket): two collectives a step, not 80."""
    s = lora(*WIDE)
    c = costs_of(s)
    (dpn, dps), _ = ctx.dp_groups(s.plan)
    assert dpn == 64 and trainable_counts(s.model, s.workload.trainable).trainable == 80 * 819_200
    run = simulate(s, None)
    assert (np.asarray(run.spans["kind"]) == "dp_sync_dense").sum() == 2
    cm = build_cost_model(s.hardware)
    one_call = float(cm.allreduce_s(float(c.dp_dense_bytes.sum()), dpn, dps)) / 2  # a reduce-scatter (ZeRO-1)
    latency = float(cm.allreduce_s(0.0, dpn, dps)) / 2
    assert run.summary["dp_sync_s"] == pytest.approx(one_call + latency, rel=1e-6)
    assert c.dp_dense_s.sum() / 2 == pytest.approx(one_call + 79 * latency, rel=1e-6)  # one collective a layer


def test_the_last_bucket_is_reduced_after_the_backward():
    """Mixtral on 64 H100 (DP64, layers larger than Megatron's default bucket: one collective each).
    With 1.5B-parameter buckets several layers share one; the bucket holding the first layers closes
    only when the backward ends, so more of the sync is left exposed than the first layer's alone."""
    kind_end = lambda run, k: np.asarray(run.spans["end_s"])[np.asarray(run.spans["kind"]) == k]
    per_layer = simulate(scen(), None)
    big = simulate(scen(MIXTRAL, "plan.dp_bucket_params=1500000000"), None)
    stream, kind, end = (np.asarray(big.spans[k]) for k in ("stream", "kind", "end_s"))
    backward_end = end[(stream == "compute") & (kind != "optimizer")].max()
    assert kind_end(big, "dp_sync_expert").max() > backward_end
    assert len(kind_end(big, "dp_sync_expert")) < len(kind_end(per_layer, "dp_sync_expert"))
    assert big.summary["dp_sync_exposed_s"] > 1.5 * per_layer.summary["dp_sync_exposed_s"]
    assert big.summary["dp_sync_s"] < per_layer.summary["dp_sync_s"]  # fewer latencies in all


def test_zero1_gathers_only_the_trainable_weights():
    """A frozen weight is replicated and never changes: after the step ZeRO-1 gathers the adapters only."""
    s = lora(*WIDE)
    c = costs_of(s)
    dense_p, _ = layer_params_per_device(s)
    assert c.gather_layer_bytes.sum() < 0.01 * dense_p.sum() * 2  # the adapters, not the 70B weights
    z1 = simulate(s, None).summary
    z3 = simulate(lora(*WIDE, "plan.zero_stage=3"), None).summary
    assert z1["zero_gather_s"] < 0.05 * z3["zero_gather_s"]  # ZeRO-3 still gathers every weight
    full = simulate(lora(*WIDE, "workload.trainable=all"), None).summary
    assert z1["zero_gather_s"] < 0.05 * full["zero_gather_s"]


def test_layers_larger_than_a_bucket_keep_their_own_collective():
    """Each Mixtral layer's experts hold more than a bucket: one collective per layer, as before."""
    s = scen()
    c = costs_of(s)
    cm = build_cost_model(s.hardware)
    _, expert_p = layer_params_per_device(s)
    _, (edp, edps) = ctx.dp_groups(s.plan)
    assert (expert_p > MIN_BUCKET_PARAMS).all() and c.dp_expert_s.sum() > 0
    np.testing.assert_allclose(c.dp_expert_s, cm.allreduce_s(c.dp_expert_bytes, edp, edps), rtol=1e-9)
    pieces = bucket_pieces(c.dp_expert_s[::-1], c.dp_expert_bytes[::-1], c.dp_latency_s[1], c.dp_bucket_bytes[1])
    assert len(pieces) == len(expert_p)


def test_a_bad_bucket_size_is_a_one_line_error():
    with pytest.raises(InputError) as e:
        lora("plan.dp_bucket_params=0")
    assert "plan.dp_bucket_params" in str(e.value) and "\n" not in str(e.value)
