"""Placement: which EP rank holds which expert (contiguous blocks today)."""

from __future__ import annotations

import numpy as np
import pytest

from moesim.engine.placement import Placement


@pytest.mark.parametrize("n_experts, ep", [(1, 1), (8, 1), (8, 2), (8, 8), (128, 8), (256, 64)])
def test_per_rank_and_split_agree_with_a_direct_computation(n_experts, ep):
    p = Placement.contiguous(n_experts, ep)
    assert p.experts_per_rank == n_experts // ep
    loads = np.random.default_rng(0).integers(0, 100, size=(3, 5, n_experts))
    block = n_experts // ep
    split = p.split(loads)
    assert split.shape == (3, 5, ep, block)
    for r in range(ep):
        np.testing.assert_array_equal(split[..., r, :], loads[..., r * block:(r + 1) * block])
        np.testing.assert_array_equal(p.per_rank(loads)[..., r], loads[..., r * block:(r + 1) * block].sum(axis=-1))
    assert p.per_rank(loads).shape == (3, 5, ep)
    np.testing.assert_array_equal(p.per_rank(loads).sum(axis=-1), loads.sum(axis=-1))


def test_rank_of_is_contiguous():
    p = Placement.contiguous(8, 4)
    np.testing.assert_array_equal(p.rank_of(), [0, 0, 1, 1, 2, 2, 3, 3])
    np.testing.assert_array_equal(p.rank_of(np.array([[7, 0], [3, 4]])), [[3, 0], [1, 2]])
    assert np.all(np.diff(Placement.contiguous(128, 8).rank_of()) >= 0)
    # per_rank is the sum over the experts rank_of assigns to each rank
    loads = np.arange(8)
    np.testing.assert_array_equal(p.per_rank(loads), np.bincount(p.rank_of(), weights=loads).astype(int))
    with pytest.raises(ValueError, match=r"\[0, 8\)"):
        p.rank_of(np.array([8]))


@pytest.mark.parametrize("n_experts, ep", [(8, 3), (8, 0), (8, -2), (4, 8), (0, 1)])
def test_invalid_ep_raises(n_experts, ep):
    with pytest.raises(ValueError):
        Placement.contiguous(n_experts, ep)


def test_split_rejects_loads_that_are_not_one_per_expert():
    with pytest.raises(ValueError, match="one entry per expert"):
        Placement.contiguous(8, 2).split(np.zeros((2, 6)))


def test_frozen():
    p = Placement.contiguous(8, 2)
    with pytest.raises(AttributeError):
        p.ep = 4  # type: ignore[misc]
