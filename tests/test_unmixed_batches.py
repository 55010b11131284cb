"""Unmixed batching (``workload.mixed_batches: false``, SGLang's default scheduling): an iteration
with prompt work runs only prefill and the decodes wait; with none, the decodes run."""

from __future__ import annotations

import numpy as np
import pytest

import moesim
from moesim.engine.serving.batching import EngineState, RequestBook, schedule
from moesim.loader import scenario_from_dict


def _engine(mixed: bool, budget: int = 512, seqs: int = 8) -> EngineState:
    return EngineState(kv_capacity_tokens=100_000, max_batch_seqs=seqs, max_batch_tokens=budget,
                       chunked_prefill=True, mixed_batches=mixed)


def _decoding_book(n_running: int, n_queued: int, prompt: int = 300) -> tuple[RequestBook, np.ndarray]:
    """``n_running`` requests whose prompts are done (they decode), ``n_queued`` waiting."""
    n = n_running + n_queued
    book = RequestBook(np.full(n, prompt), np.full(n, 50))
    run = np.arange(n_running)
    book.prefilled[run] = book.ctx[run] = book.kv[run] = prompt
    book.generated[run] = 1
    return book, run


@pytest.mark.parametrize("mixed", [True, False])
def test_a_queued_prompt_takes_the_iteration_alone_only_when_unmixed(mixed):
    book, run = _decoding_book(3, 1)
    eng = _engine(mixed)
    eng.running, eng.kv_used_tokens = run, int(book.kv[run].sum())
    eng.waiting.append(3)
    b = schedule(eng, book)
    assert b.prefill_tokens == 300  # the queued prompt is admitted either way
    assert b.decodes == (3 if mixed else 0)  # unmixed: the three decodes wait
    assert np.array_equal(book.kv[run], np.full(3, 300 + (1 if mixed else 0)))  # waiting decodes do not grow


def test_a_prefill_part_way_keeps_the_decodes_waiting_until_it_is_done():
    book, run = _decoding_book(2, 1, prompt=300)
    eng = _engine(False, budget=128)
    eng.running, eng.kv_used_tokens = run, int(book.kv[run].sum())
    eng.waiting.append(2)
    chunks = []
    while True:
        b = schedule(eng, book)
        if b.decodes:
            break
        chunks.append(b.prefill_tokens)
        book.prefilled[b.ids] += b.q_tokens  # commit the chunk (only what schedule reads)
        book.ctx[b.ids] += b.q_tokens
    assert chunks == [128, 128, 44]  # the 300-token prompt in whole-budget chunks, decodes held
    assert b.decodes == 3 and b.prefill_tokens == 0  # then everyone decodes


def test_decodes_run_when_nothing_can_be_admitted():
    book, run = _decoding_book(8, 1)
    eng = _engine(False, seqs=8)  # the sequence limit is full: the queued request cannot start
    eng.running, eng.kv_used_tokens = run, int(book.kv[run].sum())
    eng.waiting.append(8)
    b = schedule(eng, book)
    assert b.decodes == 8 and b.prefill_tokens == 0


def _closed_loop(mixed: bool) -> moesim.SimResult:
    s = scenario_from_dict({
        "name": "unmixed", "model": {"preset": "mixtral-8x7b", "dtype": "fp8"}, "hardware": {"preset": "h100-sxm", "node": {"devices_per_node": 1}},
        "plan": {"dp": 1},
        "workload": {"kind": "serving", "arrival": {"process": "closed", "concurrency": 16, "n_requests": 96},
                     "prompt_tokens": {"dist": "uniform", "low": 1500, "high": 3000},
                     "output_tokens": {"dist": "uniform", "low": 100, "high": 300},
                     "max_batch_seqs": 64, "max_batch_tokens": 1024, "mixed_batches": mixed}})
    return moesim.simulate(s, seed=3)


def test_an_unmixed_run_never_mixes_and_its_decodes_pay_for_the_prefills():
    mixed, unmixed = _closed_loop(True), _closed_loop(False)
    it = unmixed.tables["iterations"]
    pre, dec = np.asarray(it["prefill_tokens"]), np.asarray(it["decode_tokens"])
    assert np.all((pre == 0) | (dec == 0)) and (pre > 0).any() and (dec > 0).any()
    m = mixed.tables["iterations"]
    assert ((np.asarray(m["prefill_tokens"]) > 0) & (np.asarray(m["decode_tokens"]) > 0)).any()
    for r in (mixed, unmixed):
        assert r.summary["served_requests"] == 96
    # the same tokens either way; the decodes wait out every prefill chunk, so tokens come slower
    assert np.asarray(unmixed.tables["requests"]["output_tokens"]).sum() == \
        np.asarray(mixed.tables["requests"]["output_tokens"]).sum()
    assert unmixed.summary["tpot_mean_s"] > mixed.summary["tpot_mean_s"]


def test_a_bad_mixed_batches_value_is_one_line_naming_the_field(capsys):
    from moesim.cli import main

    assert main(["simulate", "mixtral-8x7b-h100-serve", "--set", "workload.mixed_batches=maybe"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("error: workload.mixed_batches = 'maybe'")
    assert "valid boolean" in err
