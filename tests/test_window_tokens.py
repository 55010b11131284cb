"""The steady window's tokens come from the iterations that made them: a lock-step (attention-DP) group that
cannot keep up took ~1 s a step while prefills arrived and ~20 ms in the drain, and spreading each request's
tokens evenly over its life counted the drain's tokens into the window (7,993 output tokens/s where its
iterations made 1,963 + its first tokens)."""

from __future__ import annotations

import numpy as np
import pytest

from moesim import scenario_from_dict, simulate
from moesim.engine.serving.steady import steady_window, window_tokens

WIDE_EP = {
    "name": "ds-wideep-h200",
    "model": {"preset": "deepseek-v3", "dtype": "fp8", "max_seq_len": 16384},
    "hardware": {"preset": "h200", "cluster": {"nodes": 4}},
    "plan": {"dp": 32, "tp": 1, "pp": 1, "ep": 32, "dp_attention": True, "alltoall": "deepep_low_latency"},
    "workload": {"kind": "serving", "arrival": {"process": "poisson", "rate_per_s": 20.0, "n_requests": 3000},
                 "prompt_tokens": {"dist": "lognormal", "median": 1000, "sigma": 0.8, "max": 8000},
                 "output_tokens": {"dist": "lognormal", "median": 300, "sigma": 0.7, "max": 4000},
                 "max_batch_seqs": 128, "max_batch_tokens": 8192},
    "routing": {"distribution": "uniform", "overflow": "dropless", "seed": 0},
}


def test_an_overloaded_lock_step_run_reports_the_tokens_its_iterations_made():
    r = simulate(scenario_from_dict(WIDE_EP), seed=0)
    req, it = r.tables["requests"], r.tables["iterations"]
    assert r.summary["overloaded"] is True
    w = steady_window(req, it=it)
    start, end = w.start_s, w.end_s
    inside = (np.asarray(it["start_s"]) >= start) & (np.asarray(it["end_s"]) < end)
    first = np.asarray(req["first_token_s"], dtype=float)
    lower = (np.asarray(it["decode_tokens"])[inside].sum() + ((first >= start) & (first < end)).sum()) / (end - start)
    assert r.summary["output_tokens_per_s"] == pytest.approx(lower, rel=0.05)  # iterations straddling an edge: in part
    spread = window_tokens(req, start, end)[0] / (end - start)  # the requests' tokens spread evenly: far too many
    assert spread > 3 * r.summary["output_tokens_per_s"]


def test_the_iterations_count_agrees_with_the_spread_where_steps_are_steady():
    """A plan that keeps up on steady steps: both counts of the window's tokens agree within a few percent."""
    from moesim import load_scenario

    r = simulate(load_scenario("qwen3-30b-a3b-h100-serve", ["workload.arrival.n_requests=1500"]), seed=0)
    req, it = r.tables["requests"], r.tables["iterations"]
    w = steady_window(req)
    by_iterations = window_tokens(req, w.start_s, w.end_s, it)[0]
    assert by_iterations == pytest.approx(window_tokens(req, w.start_s, w.end_s)[0], rel=0.05)
