"""CUDA-graph padding (``workload.cuda_graph_batch_sizes``): a decode batch replays the next captured size."""

from __future__ import annotations

import numpy as np
import pytest

import moesim
from moesim.costmodel import build_cost_model
from moesim.costmodel.host import default_host_spec, graph_rows
from moesim.engine.serving.cuda_graphs import captured_sizes
from moesim.engine.serving.decode_cost import IterationCost
from moesim.errors import InputError
from moesim.loader import scenario_from_dict

#: TensorRT-LLM perf-overview's llm_options.yml (docs/source/developer-guide/perf-overview.md, v0.20 on).
TRTLLM_SIZES = [1, 2, 4, 8, 16, 32, 64, 128, 256, 384, 512, 1024, 2048, 4096, 8192]


def _serving(**workload) -> dict:
    w = {"kind": "serving", "arrival": {"process": "batch", "n_requests": 64},
         "prompt_tokens": {"dist": "fixed", "value": 256}, "output_tokens": {"dist": "fixed", "value": 32},
         "max_batch_seqs": 1024, "max_batch_tokens": 4096, **workload}
    return {"model": {"preset": "mixtral-8x7b", "dtype": "fp8"},
            "hardware": {"preset": "h100-sxm", "node": {"devices_per_node": 2}}, "plan": {"dp": 1, "tp": 2}, "workload": w}


def _cost(d: dict) -> IterationCost:
    s = scenario_from_dict(d)
    return IterationCost(s, build_cost_model(s.hardware), np.random.default_rng(0), max_tokens=s.workload.max_batch_tokens)


def _decode(n: int, ctx: int = 600) -> tuple[np.ndarray, np.ndarray]:
    return np.ones(n, np.int64), np.full(n, ctx, np.int64)


def test_rows_pad_up_to_the_next_captured_size_and_run_eagerly_above_the_largest():
    spec = default_host_spec("cuda")
    rows = graph_rows(np.array([0, 1, 3, 129, 183, 256, 375, 385, 9000]), spec, TRTLLM_SIZES[:10])
    assert rows.tolist() == [0, 1, 4, 256, 256, 256, 384, 0, 0]
    # without a list, every batch up to graph_max_batch replays a graph of its own size
    assert graph_rows(np.array([0, 5, 512, 513]), spec).tolist() == [0, 5, 512, 0]


def test_sizes_above_the_batch_limits_are_dropped_and_the_limit_captured_as_tensorrt_llm_does():
    # TensorRT-LLM's _filter_cuda_graph_batch_sizes: sizes above min(max_batch_size, max_num_tokens)
    # go; with padding on and a larger size listed, the bound itself is captured in their place
    s = scenario_from_dict(_serving(max_batch_seqs=300, max_batch_tokens=2048, cuda_graph_batch_sizes=TRTLLM_SIZES))
    assert captured_sizes(s.workload) == [1, 2, 4, 8, 16, 32, 64, 128, 256, 300]
    s = scenario_from_dict(_serving(max_batch_seqs=640, max_batch_tokens=512, cuda_graph_batch_sizes=TRTLLM_SIZES))
    assert captured_sizes(s.workload) == [1, 2, 4, 8, 16, 32, 64, 128, 256, 384, 512]  # the bound is listed
    s = scenario_from_dict(_serving(max_batch_seqs=300, max_batch_tokens=2048, cuda_graph_padding=False,
                                    cuda_graph_batch_sizes=TRTLLM_SIZES))
    assert captured_sizes(s.workload) == [1, 2, 4, 8, 16, 32, 64, 128, 256]  # nothing pads to it
    s = scenario_from_dict(_serving(max_batch_seqs=300, cuda_graph_batch_sizes=[8, 64]))
    assert captured_sizes(s.workload) == [8, 64]  # no size above the bound: none added
    assert captured_sizes(scenario_from_dict(_serving()).workload) is None
    # unsorted and repeated sizes are read as the set they name
    s = scenario_from_dict(_serving(cuda_graph_batch_sizes=[64, 8, 8, 1]))
    assert s.workload.cuda_graph_batch_sizes == [1, 8, 64]


def test_a_padded_decode_costs_the_captured_size_in_every_op_but_attention():
    plain, padded = _cost(_serving()), _cost(_serving(cuda_graph_batch_sizes=TRTLLM_SIZES))
    q, kv = _decode(183)
    q256, kv256 = _decode(256)
    t_pad = padded.time_s(q, kv, 183)[0] - padded.attention_s(q, kv)
    t_256 = plain.time_s(q256, kv256, 256)[0] - plain.attention_s(q256, kv256)
    assert t_pad == pytest.approx(t_256, rel=1e-12)
    assert padded.time_s(q, kv, 183)[0] > plain.time_s(q, kv, 183)[0]
    # a captured size itself is not padded, and prompts are never padded
    assert padded.time_s(q256, kv256, 256)[0] == plain.time_s(q256, kv256, 256)[0]
    prompt = (np.array([100] + [1] * 182), np.full(183, 600))
    assert padded.time_s(*prompt, 183)[0] == plain.time_s(*prompt, 183)[0]


def test_a_decode_window_pads_as_each_of_its_iterations_does():
    padded = _cost(_serving(cuda_graph_batch_sizes=TRTLLM_SIZES))
    ctx = np.arange(500, 683)
    secs, _, _ = padded.decode_window(ctx, 3)
    for j in range(3):
        q, kv = np.ones(ctx.size, np.int64), ctx + j
        assert secs[j] == pytest.approx(padded.time_s(q, kv, ctx.size)[0], rel=1e-12)


def test_a_lock_step_group_pads_every_rank_to_its_largest_rank_first():
    d = _serving(cuda_graph_batch_sizes=TRTLLM_SIZES)
    d["plan"], d["hardware"] = {"dp": 8, "ep": 8, "dp_attention": True}, "h100-sxm"
    padded = _cost(d)
    del d["workload"]["cuda_graph_batch_sizes"]
    plain = _cost(d)
    batches = [_decode(100), _decode(183)]

    def group(cost, tokens, expert_tokens, head_rows=None):
        def batch(i):
            q, kv = batches[i]
            return q, kv, head_rows or q.size
        return cost.group_time_s(tokens, [float(b[1].sum()) for b in batches], batch, expert_tokens, True)[0]

    # ranks of 100 and 183 sequences both run 256 rows (not 128 and 256), the experts 256 per rank
    assert group(padded, [100, 183], 142) == pytest.approx(group(plain, [256, 256], 256, head_rows=256), rel=1e-12)
    assert group(padded, [100, 183], 142) > group(plain, [100, 183], 142)


def test_padding_lowers_the_throughput_of_a_run_whose_batches_fall_between_captured_sizes():
    d = _serving(max_batch_seqs=300)
    d["workload"]["arrival"] = {"process": "batch", "n_requests": 300}
    plain = moesim.simulate(scenario_from_dict(d)).summary
    d["workload"]["cuda_graph_batch_sizes"] = [1, 2, 4, 8, 16, 32, 64, 128, 256, 512]  # 257..300 pad to 300 (512 is above the limit), 129..256 to 256
    padded = moesim.simulate(scenario_from_dict(d)).summary
    assert padded["served_requests"] == plain["served_requests"] == 300
    assert padded["output_tokens_per_s"] < plain["output_tokens_per_s"]


def test_a_device_without_cuda_graphs_refuses_a_captured_list():
    d = _serving(cuda_graph_batch_sizes=[1, 2, 4])
    d["hardware"] = "m2-ultra"
    d["plan"] = {"dp": 1, "tp": 1}
    d["model"] = {"preset": "mixtral-8x7b", "dtype": "int4"}
    with pytest.raises(InputError, match=r"^workload.cuda_graph_batch_sizes: Apple M2 Ultra runs no CUDA graphs"):
        moesim.simulate(scenario_from_dict(d))


def test_without_padding_only_a_captured_size_replays_its_graph():
    spec = default_host_spec("cuda")
    rows = graph_rows(np.array([1, 3, 128, 183, 256, 300]), spec, [1, 2, 4, 128, 256], padding=False)
    assert rows.tolist() == [1, 0, 128, 0, 256, 0]
    plain = _cost(_serving())
    exact = _cost(_serving(cuda_graph_batch_sizes=[128], cuda_graph_padding=False))
    q, kv = _decode(128)
    assert exact.time_s(q, kv, 128)[0] == plain.time_s(q, kv, 128)[0]  # a graph of its own size
    q, kv = _decode(127)
    padded = _cost(_serving(cuda_graph_batch_sizes=[128]))
    assert exact.time_s(q, kv, 127)[0] != padded.time_s(q, kv, 127)[0]  # eager, not padded to 128
    assert exact.host_s(q, 0.0) > plain.host_s(q, 0.0)  # eager launches where plain replays a graph


def test_turning_padding_off_needs_a_list():
    with pytest.raises(InputError, match=r"cuda_graph_padding: false needs workload.cuda_graph_batch_sizes"):
        scenario_from_dict(_serving(cuda_graph_padding=False))


@pytest.mark.parametrize(("sizes", "says"), [([0, 4], "greater than 0"), ([], "at least 1 item"),
                                             ([2_000_000], "must be <= 1048576"), ("abc", "valid list")])
def test_bad_lists_name_the_field_in_one_line(sizes, says):
    with pytest.raises(InputError) as err:
        scenario_from_dict(_serving(cuda_graph_batch_sizes=sizes))
    message = str(err.value)
    assert message.startswith("workload.cuda_graph_batch_sizes") and says in message and "\n" not in message
