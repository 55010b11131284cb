"""``plan.alltoall: allgather``: the EP group all-gathers tokens whole and reduce-scatters outputs."""

from __future__ import annotations

import pytest

from moesim.costmodel import build_cost_model
from moesim.costmodel.comm import alltoall_bytes_per_rank, gathered_bytes
from moesim.loader import scenario_from_dict


def _scenario(**plan):
    return scenario_from_dict({"model": "mixtral-8x7b", "hardware": "h100-sxm", "plan": {"dp": 8, "ep": 8, **plan},
                               "workload": {"kind": "serving", "prompt_tokens": {"dist": "fixed", "value": 8},
                                            "output_tokens": {"dist": "fixed", "value": 8}}})


def _cm():
    return build_cost_model(_scenario().hardware)


@pytest.mark.parametrize(("top_k", "ep"), [(1, 8), (2, 8), (8, 8), (8, 4)])
def test_every_peer_sends_its_tokens_whole(top_k, ep):
    t, d, b = 300, 4096, 1.0
    a2a = alltoall_bytes_per_rank(t, top_k, d, b, ep)
    assert float(gathered_bytes(a2a, ep, top_k)) == pytest.approx((ep - 1) * t * d * b)


def test_the_all_gather_is_priced_as_the_ring_collective_of_the_gathered_buffer():
    cm = _cm()
    a2a = alltoall_bytes_per_rank(300, 2, 4096, 1.0, 8)
    buffer = 8 * 300 * 4096 * 1.0
    assert cm.alltoall_s(a2a, 8, 1, "allgather", 2, 8) == pytest.approx(float(cm.allgather_s(buffer, 8, 1)))
    # top-1 of 8 ranks: the all-gather moves 8x the all-to-all's bytes and costs more
    a2a1 = alltoall_bytes_per_rank(300, 1, 4096, 1.0, 8)
    nvl_flat, _ = cm.alltoall_split(a2a1, 8, 1, "flat", 1, 8)
    nvl_ag, nic_ag = cm.alltoall_split(a2a1, 8, 1, "allgather", 1, 8)
    assert nvl_ag == pytest.approx(8 * nvl_flat) and nic_ag == 0.0
    assert cm.alltoall_s(a2a1, 8, 1, "allgather", 1, 8) > cm.alltoall_s(a2a1, 8, 1, "flat", 1, 8)


def test_across_nodes_the_gathered_bytes_split_over_the_links_as_flat():
    cm = _cm()
    a2a = alltoall_bytes_per_rank(300, 2, 4096, 1.0, 16)  # 16 ranks: 7 peers in the node, 8 over the NIC
    nvl, nic = cm.alltoall_split(a2a, 16, 1, "allgather", 2, 8)
    assert nvl + nic == pytest.approx(15 * 300 * 4096)
    assert nic == pytest.approx(8 / 15 * (nvl + nic))


def test_the_plan_names_it():
    assert _scenario(alltoall="allgather").plan.alltoall == "allgather"


def test_a_serving_group_pays_the_gathered_bytes():
    import numpy as np

    import moesim

    d = {"model": {"preset": "mixtral-8x7b", "dtype": "fp8"}, "hardware": "h100-sxm",
         "plan": {"dp": 8, "ep": 8, "dp_attention": True},
         "workload": {"kind": "serving", "arrival": {"process": "batch", "n_requests": 64},
                      "prompt_tokens": {"dist": "fixed", "value": 256}, "output_tokens": {"dist": "fixed", "value": 16}}}
    flat = moesim.simulate(scenario_from_dict(d))
    d["plan"]["alltoall"] = "allgather"
    gathered = moesim.simulate(scenario_from_dict(d))
    ep_flat = float(np.sum(flat.tables["iterations"]["ep_comm_s"]))
    ep_gathered = float(np.sum(gathered.tables["iterations"]["ep_comm_s"]))
    assert ep_gathered > 2 * ep_flat  # top-2 of 8 ranks: 4x the bytes
    assert gathered.summary["output_tokens_per_s"] < flat.summary["output_tokens_per_s"]
