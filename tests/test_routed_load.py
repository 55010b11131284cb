"""Dropless memory follows the busiest EP rank: skewed routing loads one rank's expert buffers
beyond the mean (``moesim.routed_load``), while padded (drop) and single-rank (ep 1) layouts do not
move, and the stored factor (summed over layers shuffled independently) stays below one layer's."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from moesim.loader import read_scenario
from moesim.memory import memory_report
from moesim.routed_load import busiest_rank_load
from tests.conftest import ROOT

TRAIN = Path(ROOT / "scenarios" / "mixtral-8x7b-h100-train.yaml")  # 8 experts top-2, ep 8


def _scenario(*sets: str):
    return read_scenario(TRAIN, list(sets))[2]


def _skewed(s: float, *more: str):
    return _scenario("routing.overflow=dropless", "routing.distribution=zipf", f"routing.zipf_s={s}", *more)


def test_uniform_drop_and_single_rank_routing_leave_the_mean():
    for sc in (_skewed(0.0), _scenario("routing.overflow=dropless", "routing.distribution=uniform"),
               _scenario("routing.overflow=drop", "routing.distribution=zipf", "routing.zipf_s=1.5")):
        assert busiest_rank_load(sc).stored == 1.0 and busiest_rank_load(sc).working == 1.0
    one_rank = _skewed(1.5, "plan.ep=1")
    assert busiest_rank_load(one_rank).stored == 1.0


def test_factors_match_the_popularity_by_hand():
    """Zipf s = 1 over 8 experts, one per rank (ep 8): a layer's busiest rank holds its top expert,
    share 1/H_8 (capped at 1/top_k = 0.5), so the working factor is 8/H_8 = 2.94; the stored factor
    is the busiest rank's summed share over the 32 shuffled layers over the mean (1/8 x 32)."""
    from moesim.engine.routing import expert_popularity

    sc = _skewed(1.0)
    h8 = sum(1 / r for r in range(1, 9))
    load = busiest_rank_load(sc)
    assert load.working == pytest.approx(8 / h8, rel=1e-9)
    pop = expert_popularity(sc.routing, sc.model.n_layers, 8, 2, np.random.default_rng(sc.routing.seed))
    assert load.stored == pytest.approx(pop.sum(axis=0).max() / (sc.model.n_layers / 8), rel=1e-9)
    assert 1.0 < load.stored < load.working


def test_dropless_skew_raises_the_busiest_devices_activations_monotonically():
    acts = [memory_report(_skewed(z)).activations_gib for z in (0.0, 0.5, 1.0, 2.0)]
    assert all(a < b for a, b in zip(acts, acts[1:]))
    # weights, gradients and optimizer states do not depend on where the tokens go
    a, b = memory_report(_skewed(0.0)), memory_report(_skewed(2.0))
    assert (a.weights_gib, a.gradients_gib, a.optimizer_gib) == (b.weights_gib, b.gradients_gib, b.optimizer_gib)


def test_padded_layout_is_routing_blind():
    """Under drop every expert is padded to capacity: the same memory at any skew."""
    reports = [memory_report(_scenario("routing.overflow=drop", "routing.distribution=zipf", f"routing.zipf_s={z}"))
               for z in (0.0, 2.0)]
    assert reports[0].total_gib == reports[1].total_gib
