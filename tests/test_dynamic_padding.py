"""Padding each micro-batch to its longest sample (``workload.padding: longest``): the expected longest of
``b`` lengths, the step priced at that row, memory at ``seq_len``."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from moesim.errors import InputError
from moesim.loader import load_scenario
from moesim.packing import micro_batch_seqs, rank_tokens, real_token_fraction, row_tokens
from moesim.schemas import TrainingWorkload
from moesim.simulate import simulate

QLORA = "mixtral-8x7b-qlora-1xa100"  # micro-batch 1 x 8, seq_len 2048, full recompute
SAMPLES = "workload.sample_tokens={dist: lognormal, median: 700, sigma: 0.8}"


def _w(**kw) -> TrainingWorkload:
    return TrainingWorkload(kind="training", global_batch_seqs=8, seq_len=4096, packing=False, **kw)


def test_the_longest_of_b_uniform_lengths_has_the_order_statistic_mean():
    """E[max of b uniform(low, high)] = low + (high - low) * b / (b + 1)."""
    w = _w(sample_tokens={"dist": "uniform", "low": 1000, "high": 3000}, padding="longest")
    for b in (1, 2, 4, 8):
        assert row_tokens(w, b) == pytest.approx(1000 + 2000 * b / (b + 1), abs=8)


def test_rows_are_capped_at_seq_len_and_rounded_for_context_parallelism():
    w = _w(sample_tokens={"dist": "fixed", "value": 10_000}, padding="longest")
    assert row_tokens(w, 4) == 4096
    w = _w(sample_tokens={"dist": "fixed", "value": 1001}, padding="longest")
    assert row_tokens(w, 2) == 1001 and row_tokens(w, 2, cp=2) == 1004  # a multiple of 2 * cp


def test_a_cp_rank_computes_its_share_of_the_micro_batch_rows():
    """8 samples over dp 2 x 2 micro-batches: 2 rows a micro-batch, each padded to the longer of two
    fixed 1001-token samples (1004 under cp 2), split over the cp ranks."""
    w = _w(sample_tokens={"dist": "fixed", "value": 1001}, padding="longest")
    plan = SimpleNamespace(dp=2, microbatches=2, cp=1)
    assert micro_batch_seqs(w, plan) == 2 and rank_tokens(w, plan) == 2 * 1001
    assert rank_tokens(w, SimpleNamespace(dp=2, microbatches=2, cp=2)) == 2 * 1004 // 2
    assert rank_tokens(_w(), SimpleNamespace(dp=1, microbatches=4, cp=1)) == 2 * 4096  # rows of seq_len


def test_max_length_and_packed_rows_keep_seq_len():
    lengths = {"dist": "uniform", "low": 100, "high": 300}
    assert row_tokens(_w(sample_tokens=lengths), 4) == 4096
    assert row_tokens(_w(), 4) == 4096  # no sample lengths: every sample fills the row
    packed = TrainingWorkload(kind="training", global_batch_seqs=8, seq_len=4096, sample_tokens=lengths)
    assert row_tokens(packed, 4) == 4096


def test_one_sample_per_micro_batch_pads_nothing_and_more_pad_more():
    w = _w(sample_tokens={"dist": "lognormal", "median": 700, "sigma": 0.8}, padding="longest")
    fractions = [real_token_fraction(w, b) for b in (1, 2, 8)]
    assert fractions[0] == pytest.approx(1.0, abs=1e-3)
    assert fractions[0] > fractions[1] > fractions[2] > real_token_fraction(_w(sample_tokens=w.sample_tokens), 8)


def test_padding_to_the_longest_shortens_the_step_not_the_memory():
    def run(*sets):
        return simulate(load_scenario(QLORA, [SAMPLES, "workload.packing=false", *sets])).summary

    fixed, longest = run(), run("workload.padding=longest")
    assert longest["step_time_s"] < fixed["step_time_s"]
    assert longest["tokens_per_step"] == pytest.approx(fixed["tokens_per_step"])  # the same real tokens
    assert longest["tokens_per_s"] > fixed["tokens_per_s"]
    assert longest["sequence_padding_fraction"] < 1e-3 < fixed["sequence_padding_fraction"]  # micro-batch 1
    assert longest["peak_memory_gib"] == fixed["peak_memory_gib"]  # the longest micro-batch sets the peak
    # micro-batches of 4 samples pad to the longest of four: some padding, still less than seq_len rows
    four = run("workload.padding=longest", "plan.microbatches=2")
    assert 0 < four["sequence_padding_fraction"] < fixed["sequence_padding_fraction"]


def test_padding_longest_needs_unpacked_rows():
    with pytest.raises(InputError, match="workload.padding = 'longest'.*workload.packing: false"):
        load_scenario(QLORA, ["workload.padding=longest"])


def test_an_unknown_padding_is_a_one_line_error_naming_the_choices():
    with pytest.raises(InputError, match=r"workload.padding = 'foo': Input should be 'max_length' or 'longest'"):
        load_scenario(QLORA, ["workload.padding=foo"])
