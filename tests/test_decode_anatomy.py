"""Where a decode iteration's time goes (``serving/anatomy.py``, ``IterationCost.anatomy_s``): the
parts are the engine's own terms, so they add up to what it prices, and the table describes the run."""

from __future__ import annotations

import numpy as np
import pytest
import yaml

import moesim
from moesim.cli import main
from moesim.costmodel import build_cost_model
from moesim.engine.serving.anatomy import PARTS, mean_decode_batch, mean_decode_context
from moesim.engine.serving.decode_cost import IterationCost
from moesim.engine.serving.metrics import ITERATION_COLUMNS
from moesim.loader import scenario_from_dict
from moesim.shipped import resolve_scenario


def _serving(tp: int = 1, **workload) -> dict:
    w = {"kind": "serving", "arrival": {"process": "batch", "n_requests": 96},
         "prompt_tokens": {"dist": "fixed", "value": 300}, "output_tokens": {"dist": "fixed", "value": 40},
         "max_batch_seqs": 64, "max_batch_tokens": 2048, **workload}
    return {"model": {"preset": "mixtral-8x7b", "dtype": "fp8"},
            "hardware": {"preset": "h100-sxm", "node": {"devices_per_node": tp}}, "plan": {"dp": 1, "tp": tp},
            "workload": w}


def _cost(d: dict, max_tokens: int = 512) -> IterationCost:
    s = scenario_from_dict(d)
    return IterationCost(s, build_cost_model(s.hardware), np.random.default_rng(0), max_tokens=max_tokens)


@pytest.mark.parametrize("workload", [{}, {"engine": "trtllm", "cuda_graph_batch_sizes": [1, 8, 64, 256]}])
@pytest.mark.parametrize("seqs", [1, 37, 200])
def test_the_parts_add_up_to_the_iteration_the_engine_prices(workload, seqs):
    cost = _cost(_serving(tp=2, **workload))
    parts = cost.anatomy_s(seqs, 900)
    assert set(parts) == set(PARTS) and all(v >= 0 for v in parts.values())
    q, kv = np.ones(seqs, np.int64), np.full(seqs, 900, np.int64)
    assert sum(parts.values()) == pytest.approx(cost.time_s(q, kv, seqs)[0], rel=1e-12)
    assert parts["attention"] == pytest.approx(cost.attention_s(q, kv), rel=1e-12)


def test_tensor_parallel_ranks_pay_all_reduces_a_single_gpu_does_not():
    one, eight = _cost(_serving(tp=1)).anatomy_s(64, 1000), _cost(_serving(tp=8)).anatomy_s(64, 1000)
    assert one["tp_comm"] == 0.0 < eight["tp_comm"]
    assert eight["attention"] < one["attention"]  # each rank reads an eighth of the heads' KV


def test_longer_contexts_cost_attention_and_nothing_else():
    cost = _cost(_serving())
    short, long = cost.anatomy_s(64, 500), cost.anatomy_s(64, 4000)
    assert long["attention"] > 4 * short["attention"]
    for part in ("routed_experts", "other_kernels", "output_head"):
        assert long[part] == short[part]


def test_the_mean_context_counts_each_decoded_token_over_what_precedes_it():
    # one request, prompt 10, 3 output tokens: the first from the prefill, then steps over 11 and 12
    assert mean_decode_context(np.array([10]), np.array([3])) == pytest.approx(11.5)
    # weighted by decoded tokens: (3 steps over 101..103) and (1 step over 11)
    assert mean_decode_context(np.array([100, 10]), np.array([4, 2])) == pytest.approx((102 * 3 + 11) / 4)
    assert mean_decode_context(np.array([10]), np.array([1])) is None  # nothing decoded


def test_the_mean_batch_is_over_decode_only_iterations_weighted_by_time_per_rank():
    rows = np.zeros((3, len(ITERATION_COLUMNS)))
    c = {name: i for i, name in enumerate(ITERATION_COLUMNS)}
    rows[:, c["start_s"]] = [0.0, 1.0, 4.0]
    rows[:, c["end_s"]] = [1.0, 4.0, 5.0]
    rows[:, c["decode_tokens"]] = [10, 20, 100]
    rows[:, c["prefill_tokens"]] = [0, 0, 500]  # the last iteration is mixed: left out
    assert mean_decode_batch(rows, 1) == pytest.approx((10 * 1 + 20 * 3) / 4)
    assert mean_decode_batch(rows, 2) == pytest.approx((10 * 1 + 20 * 3) / 8)  # a lock-step pair's record
    assert mean_decode_batch(rows[2:], 1) is None


def test_a_run_carries_the_table_and_the_cli_prints_and_saves_it(tmp_path, capsys):
    d = _serving()
    r = moesim.simulate(scenario_from_dict(d))
    step = r.tables["decode_step"]
    assert step["part"][-1] == "total" and step["seconds"][-1] == pytest.approx(sum(step["seconds"][:-1]))
    assert sum(step["share"][:-1]) == pytest.approx(1.0)
    assert 0 < step["batch_seqs"][0] <= 64 and step["context_tokens"][0] == round(300 + 40 / 2)
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(d))
    assert main(["simulate", str(path), "--out", str(tmp_path / "out")]) == 0
    text = capsys.readouterr().out
    assert "mean decode step:" in text and "attention over the KV cache" in text
    saved = (tmp_path / "out" / "decode_step.csv").read_text().splitlines()
    assert saved[0] == "part,seconds,share,batch_seqs,context_tokens" and saved[-1].startswith("total,")


def test_a_disaggregated_run_prices_its_decode_pool():
    r = moesim.simulate(moesim.load_scenario(resolve_scenario("deepseek-v3-h800-serve-disagg"),
                                             ["workload.arrival.n_requests=200"]))
    step = r.tables["decode_step"]
    parts = dict(zip(step["part"], step["seconds"], strict=True))
    assert parts["ep_comm"] > 0  # the decode pool's expert parallelism, not the prefill pool's


def test_under_skewed_routing_the_table_prices_the_runs_own_popularity_draw():
    # the run routes with generator [seed, 1]; another draw of the popularity prices other experts
    d = _serving(tp=1)
    d["plan"].update(dp=4, ep=4)
    d["hardware"]["node"]["devices_per_node"] = 4
    d["routing"] = {"distribution": "zipf", "zipf_s": 1.2, "seed": 0}
    s = scenario_from_dict(d)
    step = moesim.simulate(s, seed=5).tables["decode_step"]
    seqs, ctx = step["batch_seqs"][0], step["context_tokens"][0]
    experts = dict(zip(step["part"], step["seconds"]))["routed_experts"]

    def priced(rng_seed) -> float:
        cost = IterationCost(s, build_cost_model(s.hardware), np.random.default_rng(rng_seed),
                             max_tokens=max(seqs, s.workload.max_batch_seqs), max_context=ctx + 1)
        return cost.anatomy_s(seqs, ctx)["routed_experts"]

    assert experts == pytest.approx(priced([5, 1]), rel=1e-12)
    assert experts != pytest.approx(priced([5, 3]), rel=1e-6)


def test_the_breakdown_plot_of_a_serving_result_draws_its_decode_step_also_read_back(tmp_path):
    from moesim.plot_step import decode_step_figure
    from moesim.plots import plot_result
    from moesim.results import SimResult

    r = moesim.simulate(scenario_from_dict(_serving(tp=2)))
    r.save(tmp_path / "run")
    back = SimResult.load(tmp_path / "run")
    for res in (r, back):
        fig = plot_result("breakdown", res)
        ax = fig.axes[0]
        parts = [p for p in r.tables["decode_step"]["part"] if p != "total"]
        assert len(ax.patches) == len(parts)  # one bar per part
        assert [round(b.get_width(), 9) for b in ax.patches] == [round(s * 1e3, 9) for p, s in zip(
            r.tables["decode_step"]["part"], r.tables["decode_step"]["seconds"], strict=True) if p != "total"]
        assert "mean decode step" in ax.get_title()
    with pytest.raises(moesim.InputError, match="no decode_step table"):
        decode_step_figure({}, "old run")


def test_the_output_head_prices_the_rank_s_padded_vocabulary_shard():
    """Each TP rank's head multiplies ceil(vocab / tp) columns (engines pad the vocabulary to a multiple of
    tp): a 32,001-token vocabulary at TP8 costs what 4,001 columns do, and a vocabulary smaller than tp
    still one column, not an empty GEMM (which divided 0 by 0 in the FP8 roofline and warned)."""
    import warnings

    s = moesim.load_scenario("mixtral-8x7b-h100-serve-tp8", ["model.vocab_size=32001"])
    cost = IterationCost(s, build_cost_model(s.hardware), np.random.default_rng(0), max_tokens=64)
    want = cost.cm.gemm_s(np.arange(65.0), 4001, s.model.d_model, cost.dtypes.weights)
    assert np.allclose(cost.head_gemm_s(np.arange(65.0)), want)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        tiny = moesim.load_scenario("mixtral-8x7b-h100-serve-tp8", ["model.vocab_size=3"])
        c3 = IterationCost(tiny, build_cost_model(tiny.hardware), np.random.default_rng(0), max_tokens=64)
        head = c3.head_gemm_s(np.arange(1.0, 65.0))
    assert np.all(np.isfinite(head)) and np.all(head > 0)


def test_the_summary_carries_the_decode_step_for_sweeps_and_plots_but_prints_it_once(tmp_path, capsys):
    from moesim.engine.serving.anatomy import DECODE_PART_KEYS, PARTS

    d = _serving(tp=2)
    r = moesim.simulate(scenario_from_dict(d))
    step, s = r.tables["decode_step"], r.summary
    secs = dict(zip(step["part"], step["seconds"], strict=True))
    assert s["decode_step_s"] == secs["total"] and s["decode_tp_comm_s"] == secs["tp_comm"] > 0
    assert sum(s[k] for k in DECODE_PART_KEYS) == pytest.approx(s["decode_step_s"])
    assert {k: s[k] for k, p in zip(DECODE_PART_KEYS, PARTS, strict=True) if p not in secs} == \
        {k: 0.0 for k, p in zip(DECODE_PART_KEYS, PARTS, strict=True) if p not in secs}
    assert (s["decode_batch_seqs"], s["decode_context_tokens"]) == (step["batch_seqs"][0], step["context_tokens"][0])
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(d))
    assert main(["simulate", str(path)]) == 0
    assert "decode_step_s" not in capsys.readouterr().out  # the table under the summary holds it
    # a run whose every request ends at its first token has no decode step: no keys, no table
    one = moesim.simulate(scenario_from_dict(_serving(output_tokens={"dist": "fixed", "value": 1})))
    assert "decode_step" not in one.tables and not any(k.startswith("decode_") for k in one.summary)


def test_a_serving_sweeps_breakdown_stacks_each_points_decode_step():
    from moesim.plots import plot_sweep

    rows = [dict(moesim.simulate(scenario_from_dict(_serving(tp=tp))).summary, status="ok", **{"plan.tp": tp})
            for tp in (1, 2)]
    ax = plot_sweep("breakdown", rows, "tp").axes[0]
    assert ax.get_ylabel() == "milliseconds per decode step"
    assert "tensor-parallel all-reduces" in [t.get_text() for t in ax.get_legend().get_texts()]  # the table's label
    heights = np.zeros(2)
    for bar in ax.patches:
        heights[round(bar.get_x() + bar.get_width() / 2)] += bar.get_height()
    assert heights == pytest.approx([1e3 * r["decode_step_s"] for r in rows])


def test_decode_step_prices_any_batch_as_the_run_prices_its_mean_one():
    """moesim.decode_step is the run's decode_step table at a batch and context of the caller's: the same seconds
    at the run's own mean batch, more with the batch, and one clear error per bad argument."""
    import moesim
    from moesim.errors import InputError

    s = moesim.load_scenario("mixtral-8x7b-h100-serve", ["workload.arrival.n_requests=200"])
    step = moesim.simulate(s).tables["decode_step"]
    mine = moesim.decode_step(s, int(step["batch_seqs"][0]), int(step["context_tokens"][0]))
    assert mine["part"] == step["part"] and mine["seconds"] == pytest.approx(step["seconds"], rel=1e-12)
    totals = [moesim.decode_step(s, b, 500)["seconds"][-1] for b in (1, 8, 64, 512)]
    assert totals == sorted(totals) and totals[-1] > 3 * totals[0]
    for kwargs, words in (({"batch_seqs": 0, "context_tokens": 10}, "batch_seqs = 0"),
                          ({"batch_seqs": 2.5, "context_tokens": 10}, "batch_seqs = 2.5"),
                          ({"batch_seqs": 4, "context_tokens": 10**9}, "context_tokens = 1000000000")):
        with pytest.raises(InputError, match=words):
            moesim.decode_step(s, **kwargs)
    with pytest.raises(InputError, match="training scenario"):
        moesim.decode_step(moesim.load_scenario("mixtral-8x7b-h100-train"), 4, 10)
    disagg = moesim.load_scenario("deepseek-v3-h800-serve-disagg")
    assert moesim.decode_step(disagg, 32, 2000)["seconds"][-1] > 0


def test_a_negative_host_part_is_named_as_the_launches_a_graph_saves():
    """The datasheet model prices each kernel with its launch; a graph-replayed decode hands them back in the host
    part, which read as a negative host time ("host and launches (exposed) -1.712 ms")."""
    from moesim.engine.serving.anatomy import GRAPH_CREDIT_LABEL, PART_LABELS, part_labels

    step = {"part": ["routed_experts", "host_and_launch", "total"], "seconds": [3.5e-3, -1.7e-3, 1.8e-3]}
    assert part_labels(step)["host_and_launch"] == GRAPH_CREDIT_LABEL
    step["seconds"][1] = 0.2e-3
    assert part_labels(step)["host_and_launch"] == PART_LABELS["host_and_launch"]
