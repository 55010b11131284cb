"""Inter-token latency: per-token gaps from the iterations table, their token-weighted percentiles, the
serving summary's ``itl_*`` keys, and ITL limits under ``--slo``."""

from __future__ import annotations

import numpy as np
import pytest

import moesim
from moesim.capacity import measure
from moesim.engine.serving.itl import itl_stats, token_gaps
from moesim.slo import parse_slo


def _iterations(rows):
    """An iterations table from (replica, slot, end_s, decode_tokens[, batch_seqs]) rows (batch_seqs: 1 for a
    prefill-only row, else its decode tokens)."""
    rows = [(*r[:4], r[4] if len(r) > 4 else (r[3] or 1)) for r in rows]
    cols = list(zip(*rows))
    return {"replica": np.array(cols[0]), "slot": np.array(cols[1]), "end_s": np.array(cols[2], dtype=float),
            "decode_tokens": np.array(cols[3]), "batch_seqs": np.array(cols[4])}


def test_each_token_waits_the_gap_since_its_slots_previous_iteration():
    # slot (0, 0): ends 1.0 (prefill only), 1.1 (4 tokens), 1.3 (4), 2.3 (a long step: 2 tokens)
    # slot (1, 0): ends 0.5, 0.6 (1 token); out of order on input
    it = _iterations([(0, 0, 1.1, 4), (1, 0, 0.6, 1), (0, 0, 1.0, 0), (0, 0, 2.3, 2), (0, 0, 1.3, 4), (1, 0, 0.5, 0)])
    at, gap, tokens = token_gaps(it)
    order = np.argsort(at)
    assert np.allclose(gap[order], [0.1, 0.1, 0.2, 1.0]) and tokens[order].tolist() == [1, 4, 4, 2]
    stats = itl_stats(it)
    assert stats["itl_mean_s"] == pytest.approx((0.1 * 5 + 0.2 * 4 + 1.0 * 2) / 11)
    assert stats["itl_p50_s"] == pytest.approx(0.2)  # token 6 of 11 (5 at 0.1, then 4 at 0.2)
    assert stats["itl_p90_s"] == pytest.approx(1.0) and stats["itl_p99_s"] == pytest.approx(1.0)
    assert itl_stats(it, 1.2, 2.0)["itl_p99_s"] == pytest.approx(0.2)  # only the iteration ending at 1.3
    assert np.isnan(itl_stats(it, 5.0, 6.0)["itl_p50_s"])


def test_decodes_wait_through_prefill_only_iterations():
    """Unmixed batches (``workload.mixed_batches: false``): the 3 sequences decoding at 1.0 get no token from
    the prefill-only iterations ending 2.0 and 2.4 (2 and 1 prompts) and wait 1.6 s for their next; the 3
    prompts prefilled there wait from the last one's end, 0.2 s. A slot that emptied (2 finished at 3.0, then an
    idle gap) gives its next decode only the prompts prefilled since."""
    it = _iterations([(0, 0, 0.9, 3), (0, 0, 1.0, 3), (0, 0, 2.0, 0, 2), (0, 0, 2.4, 0, 1), (0, 0, 2.6, 6),
                      (0, 0, 3.0, 2), (0, 0, 5.0, 0, 1), (0, 0, 5.1, 1)])
    at, gap, tokens = token_gaps(it)
    got = sorted(zip(at.round(6).tolist(), gap.round(6).tolist(), tokens.tolist()))
    assert got == [(1.0, 0.1, 3), (2.6, 0.2, 3), (2.6, 1.6, 3), (3.0, 0.4, 2), (5.1, 0.1, 1)]
    assert itl_stats(it)["itl_p99_s"] == pytest.approx(1.6)


def test_unmixed_batches_itl_counts_the_prefill_iterations_decodes_wait_through():
    """Every decode token's gap since the sequence's previous token: with prefill-only iterations between two
    decodes the mean ITL is no longer under the mean TPOT (it read 24.7 ms to a 36.5 ms median TPOT) and the
    waits through prefills make its tail."""
    base = ["workload.arrival.rate_per_s=100", "workload.arrival.n_requests=1500"]
    unmixed = moesim.simulate(moesim.load_scenario("mixtral-8x7b-h100-serve-online",
                                                   [*base, "workload.mixed_batches=false"]), seed=0).summary
    assert unmixed["itl_mean_s"] >= unmixed["tpot_mean_s"]  # long decodes, which see more prefills, weigh more
    assert unmixed["itl_p99_s"] > 2 * unmixed["tpot_p50_s"]


def test_chunked_prefill_steps_show_in_itls_tail_not_in_tpots():
    s = moesim.load_scenario("mixtral-8x7b-h100-serve-online", ["workload.arrival.n_requests=3000"])
    out = moesim.simulate(s, seed=0).summary
    assert out["itl_p50_s"] <= out["itl_p90_s"] <= out["itl_p99_s"]
    assert out["itl_mean_s"] == pytest.approx(out["tpot_mean_s"], rel=0.15)  # the same time per token, on average
    assert out["itl_p99_s"] > 1.5 * out["tpot_p99_s"]  # a request's mean hides the steps that carry a prefill chunk


def test_an_itl_limit_is_judged_on_the_probes_iterations():
    s = moesim.load_scenario("mixtral-8x7b-h100-serve-online")
    loose = measure(s, 40.0, parse_slo("itl_p99=1"), n_requests=1500)
    tight = measure(s, 40.0, parse_slo("itl_p99=0.001"), n_requests=1500)
    assert loose.holds and not tight.holds and "itl_p99" in tight.reason
    assert loose.latencies["itl_p99_s"] == tight.latencies["itl_p99_s"] > 0.001
