"""Packed samples attend within themselves (``workload.packed_attention: per_sample``): a row's
attention costs the sum of its samples' L^2 / 2, not seq_len^2 / 2 (moesim/packing.py)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from moesim.engine.op_types import BlockDims, OpDtypes
from moesim.engine.ops import attention_core_op
from moesim.loader import load_scenario
from moesim.packing import _length_biased_mean, attention_spans
from moesim.schemas import TrainingWorkload
from moesim.simulate import simulate

LLAMA = "llama-2-7b-a100-train"


def _w(**kw) -> TrainingWorkload:
    return TrainingWorkload(kind="training", global_batch_seqs=8, seq_len=4096, **kw)


def test_fixed_samples_split_each_row_into_equal_spans():
    spans = attention_spans(_w(sample_tokens={"dist": "fixed", "value": 512}), seqs=2)
    assert spans.tolist() == [512.0] * 16  # 2 rows of 4096 tokens, 8 samples each
    # causal query-key pairs: 16 x 512^2 / 2, an eighth of two whole rows' 2 x 4096^2 / 2
    dims = BlockDims.of(load_scenario(LLAMA).model, 1, 1)
    dt = OpDtypes("bf16", 2.0, 2.0, "bf16", "bf16", paged_kv=False)
    packed = attention_core_op(dims, dt, spans, spans).flops
    whole = attention_core_op(dims, dt, np.full(2, 4096.0), np.full(2, 4096.0)).flops
    assert packed == pytest.approx(whole / 8, rel=1e-3)


@pytest.mark.parametrize("kw", [
    {},  # no sample lengths: every sample fills the row
    {"sample_tokens": {"dist": "fixed", "value": 512}, "packed_attention": "whole_row"},
    {"sample_tokens": {"dist": "fixed", "value": 512}, "packing": False},  # one padded sample per row
])
def test_one_span_per_row_unless_packed_per_sample(kw):
    assert attention_spans(_w(**kw), seqs=2) is None


def test_samples_longer_than_the_row_are_truncated_to_it():
    assert attention_spans(_w(sample_tokens={"dist": "fixed", "value": 10_000}), seqs=3).tolist() == [4096.0] * 3


def test_length_biased_mean_of_a_lognormal_matches_its_closed_form():
    """E[L^2] / E[L] of a lognormal (median m, sigma s) is m * exp(1.5 s^2); truncation at a row far
    longer than the samples changes nothing."""
    w = _w(sample_tokens={"dist": "lognormal", "median": 300, "sigma": 0.6})
    got = _length_biased_mean(w.sample_tokens.model_dump_json(), 10**7)
    assert got == pytest.approx(300 * math.exp(1.5 * 0.6**2), rel=0.02)


def test_a_packed_fine_tune_step_is_faster_per_sample_and_unchanged_otherwise():
    samples = "workload.sample_tokens={dist: fixed, value: 256}"

    def step(*sets):
        return simulate(load_scenario(LLAMA, list(sets))).summary["step_time_s"]

    base = step()
    per_sample = step(samples)
    assert per_sample < base  # 16 samples of 256 tokens per 4096-token row: far less attention
    assert step(samples, "workload.packed_attention=whole_row") == pytest.approx(base)
    # the saving is at most the whole-row attention's share of the step
    assert per_sample > 0.5 * base


def test_context_parallel_rows_are_priced_whole_either_way():
    sets = ["plan.cp=2", "plan.dp=4", "workload.sample_tokens={dist: fixed, value: 256}"]

    def step(mode):
        s = load_scenario(LLAMA, [*sets, f"workload.packed_attention={mode}"])
        return simulate(s).summary["step_time_s"]

    assert step("per_sample") == pytest.approx(step("whole_row"))
