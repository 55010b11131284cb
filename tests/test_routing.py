"""Routing: capacity, drops, token order, popularity, sampling. Pure numpy, no simulation."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from moesim.engine.placement import Placement
from moesim.engine.routing import (
    apply_capacity,
    cap_inclusion,
    capacity_per_expert,
    expert_popularity,
    keep_mask,
    read_popularity_trace,
    sample_routing,
)
from moesim.errors import InputError
from moesim.schemas import RoutingSpec


def test_capacity_closed_form_and_float_noise():
    assert capacity_per_expert(4096, 2, 8, 1.0) == 1024
    assert capacity_per_expert(4096, 2, 8, 1.25) == 1280
    assert capacity_per_expert(1000, 1, 3, 1.0) == 334  # ceil(333.33)
    # 1.1 * 100 * 1 / 10 is 11.000000000000002 in floats: still 11 slots, not 12.
    assert capacity_per_expert(100, 1, 10, 1.1) == 11


def test_drops_equal_closed_form_on_hand_made_loads():
    loads = np.array([[5, 0, 3, 8], [4, 4, 4, 4]])
    kept, dropped = apply_capacity(loads, 4)
    np.testing.assert_array_equal(kept, [[4, 0, 3, 4], [4, 4, 4, 4]])
    np.testing.assert_array_equal(dropped, [[1, 0, 0, 4], [0, 0, 0, 0]])
    # per-row capacity broadcasts
    kept, dropped = apply_capacity(loads, np.array([[2], [5]]))
    np.testing.assert_array_equal(dropped, [[3, 0, 1, 6], [0, 0, 0, 0]])


def test_keep_mask_drops_later_tokens_first():
    ids = np.array([[0, 1], [0, 2], [0, 1], [1, 0]])
    mask = keep_mask(ids, n_experts=3, capacity=2)
    # expert 0 receives tokens 0, 1, 2, 3 -> keeps tokens 0 and 1; expert 1 gets tokens 0, 2, 3 -> keeps 0, 2
    np.testing.assert_array_equal(mask, [[True, True], [True, True], [False, True], [False, False]])


def test_keep_mask_rejects_out_of_range_ids():
    with pytest.raises(ValueError, match=r"\[0, 4\)"):
        keep_mask(np.array([[0, 4]]), n_experts=4, capacity=1)


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 9), st.integers(1, 3), st.integers(0, 40), st.integers(0, 12), st.integers(0, 2**31 - 1))
def test_keep_mask_counts_match_apply_capacity(n_experts, top_k, tokens, capacity, seed):
    top_k = min(top_k, n_experts)
    rng = np.random.default_rng(seed)
    ids = np.argsort(rng.random((tokens, n_experts)), axis=1)[:, :top_k]  # top_k distinct experts each
    mask = keep_mask(ids, n_experts, capacity)
    loads = np.bincount(ids.ravel(), minlength=n_experts)
    kept, dropped = apply_capacity(loads, capacity)
    np.testing.assert_array_equal(np.bincount(ids[mask], minlength=n_experts), kept)
    assert (~mask).sum() == dropped.sum()
    # kept assignments of an expert come before every dropped one (token order)
    flat_ids, flat_mask = ids.ravel(), mask.ravel()
    for e in range(n_experts):
        seq = flat_mask[flat_ids == e]
        assert not np.any(seq[1:] & ~seq[:-1]), "a later token was kept after an earlier one was dropped"


def test_cap_inclusion_never_gives_one_expert_more_than_every_token():
    p = np.array([[0.7, 0.1, 0.1, 0.1], [0.25, 0.25, 0.25, 0.25]])
    q = cap_inclusion(p, top_k=2)
    np.testing.assert_allclose(q.sum(axis=1), 1.0)
    assert q.max() <= 0.5 + 1e-12
    np.testing.assert_allclose(q[0], [0.5, 1 / 6, 1 / 6, 1 / 6])
    np.testing.assert_allclose(q[1], 0.25)


@pytest.mark.parametrize("dist", ["uniform", "zipf", "dirichlet"])
def test_popularity_rows_sum_to_one_and_repeat_with_seed(dist):
    spec = RoutingSpec(distribution=dist, zipf_s=1.2, dirichlet_alpha=0.5)
    a = expert_popularity(spec, 5, 16, 2, np.random.default_rng(3))
    b = expert_popularity(spec, 5, 16, 2, np.random.default_rng(3))
    assert a.shape == (5, 16)
    np.testing.assert_allclose(a.sum(axis=1), 1.0)
    np.testing.assert_array_equal(a, b)
    assert a.max() <= 0.5 + 1e-12


def test_zipf_is_skewed_and_shuffled_per_layer():
    p = expert_popularity(RoutingSpec(distribution="zipf", zipf_s=1.0), 8, 16, 1, np.random.default_rng(0))
    np.testing.assert_allclose(np.sort(p[0])[::-1][0] / np.sort(p[0])[::-1][1], 2.0)  # 1/1 vs 1/2
    assert len({int(np.argmax(row)) for row in p}) > 1, "the hot expert should move between layers"
    flat = expert_popularity(RoutingSpec(distribution="zipf", zipf_s=0.0), 2, 16, 1, np.random.default_rng(0))
    np.testing.assert_allclose(flat, 1 / 16)


def test_trace_popularity_cycles_rows_and_skips_header(tmp_path):
    path = tmp_path / "pop.csv"
    path.write_text("e0,e1,e2,e3\n1,1,1,1\n4,0,0,0\n")
    p = expert_popularity(RoutingSpec(distribution="trace", trace=path), 3, 4, 1, np.random.default_rng(0))
    np.testing.assert_allclose(p, [[0.25] * 4, [1, 0, 0, 0], [0.25] * 4])


@pytest.mark.parametrize("text, message", [
    ("1,2,3\n", "3 columns; expected one per expert (4)"),
    ("1,1,1,1\n1,-1,1,1\n", "row 2 must be finite, non-negative"),
    ("1,1,1,1\n1,x,1,1\n", "row 2 has a value that is not a number"),
    ("e0,e1,e2,e3\n", "no rows of expert weights"),
])
def test_trace_errors_name_file_and_row(tmp_path, text, message):
    path = tmp_path / "bad.csv"
    path.write_text(text)
    with pytest.raises(InputError) as info:
        read_popularity_trace(path, 4)
    assert message in str(info.value) and "bad.csv" in str(info.value)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("overflow", ["drop", "dropless"])
@pytest.mark.parametrize("dist", ["uniform", "zipf"])
def test_token_conservation_on_every_layer(overflow, dist):
    spec = RoutingSpec(distribution=dist, zipf_s=1.0, capacity_factor=1.0, overflow=overflow)
    r = sample_routing(spec, n_layers=6, n_experts=16, top_k=2, ep=4, tokens_per_group=4096,
                       n_microbatches=5, rng=np.random.default_rng(1))
    assert r.loads.shape == (6, 5, 16)
    np.testing.assert_array_equal(r.loads.sum(axis=-1), 4096 * 2)  # every assignment is routed
    np.testing.assert_allclose(r.kept + r.dropped, r.loads)  # drops are expectations: floats
    table = r.layer_table(range(6))
    np.testing.assert_allclose(np.array(table["routed"]), np.array(table["kept"]) + np.array(table["dropped"]))
    if overflow == "dropless":
        assert r.dropped.sum() == 0
        np.testing.assert_array_equal(r.padding, 0)
    else:
        assert r.capacity == 512
        assert r.kept.max() <= r.capacity
        np.testing.assert_array_equal(r.padding, 512 * 16 - r.kept.sum(axis=-1))
        if dist == "zipf":
            assert r.dropped.sum() > 0


def test_padded_ranks_compute_capacity_and_dropless_ranks_their_loads():
    spec = RoutingSpec(capacity_factor=1.5, overflow="drop")
    r = sample_routing(spec, 2, 8, 2, 4, 1000, 3, np.random.default_rng(0))
    np.testing.assert_array_equal(r.compute_tokens, r.capacity)
    assert r.compute_tokens.shape == (2, 3, 4, 2)
    spec = RoutingSpec(distribution="zipf", zipf_s=1.0, overflow="dropless")
    r = sample_routing(spec, 2, 8, 2, 4, 1000, 3, np.random.default_rng(0))
    np.testing.assert_array_equal(r.rank_tokens, Placement.contiguous(8, 4).per_rank(r.loads))
    np.testing.assert_array_equal(r.busiest_rank_expert_tokens.sum(axis=-1), r.rank_tokens.max(axis=-1))
    assert r.balanced_expert_tokens == 1000 * 2 / 8


def test_skew_drops_more_than_uniform_and_cf_two_less_than_one():
    def dropped(dist, cf):
        spec = RoutingSpec(distribution=dist, zipf_s=1.0, capacity_factor=cf)
        r = sample_routing(spec, 4, 16, 2, 4, 8192, 4, np.random.default_rng(7))
        return r.dropped.sum() / r.loads.sum()

    assert dropped("zipf", 1.0) > dropped("uniform", 1.0)
    assert dropped("zipf", 2.0) < dropped("zipf", 1.0)


def test_a_trace_with_more_rows_than_moe_layers_is_refused(tmp_path):
    from moesim.errors import InputError

    path = tmp_path / "pop.csv"
    path.write_text("1,1,1,1\n" * 12)  # a row for every layer of a model whose MoE layers are 6
    with pytest.raises(InputError, match="12 rows for 6 MoE layers; give one row per MoE layer"):
        expert_popularity(RoutingSpec(distribution="trace", trace=path), 6, 4, 1, np.random.default_rng(0))


@pytest.mark.parametrize("n_experts, top_k", [(8, 1), (8, 2), (8, 4), (64, 8)])
def test_loads_have_distinct_picks_variance_and_keep_every_assignment(n_experts, top_k):
    from moesim.engine.routing import sample_loads

    tokens = 4096
    x = sample_loads(np.full((100, n_experts), 1 / n_experts), tokens, top_k, 40, np.random.default_rng(1))
    assert (x.sum(axis=-1) == tokens * top_k).all()  # every token's k picks land somewhere
    q = top_k / n_experts  # each token includes an expert with this chance: Binomial(tokens, q)
    assert x.mean() == pytest.approx(tokens * q)
    assert x.var() == pytest.approx(tokens * q * (1 - q), rel=0.05)  # a multinomial would give tokens k p (1 - p)
    assert ((x >= 0) & (x <= tokens)).all()
