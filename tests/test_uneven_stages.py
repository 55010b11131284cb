"""Uneven layer split over pipeline stages (plan.first_stage_layers / plan.last_stage_layers, Megatron-core's
--decoder-first/last-pipeline-num-layers): unset is the even split, the layers are covered once and in
order, the engine and the memory model see the same split, a large-vocabulary model's pipeline
balances with fewer layers on its last stage, and the errors are one line naming the field."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest

import moesim
from moesim.accounting import GIB
from moesim.activations import recompute_working_bytes_per_token
from moesim.engine.training.layer_split import check_layer_split, chunk_sizes
from moesim.engine.training.schedules import SCHEDULES, schedule_for
from moesim.engine.training.step import simulate_training
from moesim.errors import InputError
from moesim.loader import load_scenario
from moesim.memory import memory_report
from moesim.resolve import deep_merge
from moesim.schemas.plan import PlanSpec
from moesim.stage_memory import stage_layers

ROOT = Path(__file__).resolve().parents[1]
TRAIN_SCENARIOS = sorted((ROOT / "scenarios").glob("*train*.yaml"))

#: Llama-3-70B's shape (meta-llama/Meta-Llama-3-70B config.json: 80 layers, d 8192, 64 heads / 8 KV
#: heads, FFN 28672, vocab 128256) on 8 H100 nodes, TP8 x PP8: a 1.05B-parameter output head and its
#: loss on the last stage, about 1.2 layers' worth of work.
LLAMA3 = dict(
    name="llama3-70b-pp8",
    model=dict(name="Llama-3-70B-like", n_layers=80, d_model=8192, n_heads=64, n_kv_heads=8, head_dim=128,
               vocab_size=128256, ffn_hidden=28672, n_experts=1, top_k=1, gated_ffn=True, tied_embeddings=False,
               max_seq_len=8192),
    hardware=dict(preset="h100-sxm", cluster=dict(nodes=8)),
    plan=dict(dp=1, tp=8, pp=8, ep=1, microbatches=16, schedule="1f1b"),
    workload=dict(kind="training", global_batch_seqs=16, seq_len=8192, total_tokens=1e12),
)

#: A small MoE on one node, pp 4 (for the schedules that split the backward and the interleaved overlap).
MOE = dict(
    name="moe-pp4",
    model=dict(name="moe", n_layers=12, d_model=512, n_heads=8, vocab_size=32000, ffn_hidden=2048,
               expert_ffn_hidden=1024, n_experts=8, top_k=2, max_seq_len=1024),
    hardware=dict(preset="h100-sxm", cluster=dict(nodes=1)),
    plan=dict(dp=2, tp=1, pp=4, ep=2, microbatches=8, schedule="1f1b"),
    workload=dict(kind="training", global_batch_seqs=16, seq_len=1024, total_tokens=1e10),
    routing=dict(distribution="uniform", capacity_factor=1.25, overflow="drop", seed=0),
)


def scenario(base: dict, **plan) -> moesim.Scenario:
    return moesim.scenario_from_dict(deep_merge(base, {"plan": plan}))


# ---------------------------------------------------------------- unset: today's split, bit for bit


@pytest.mark.parametrize("path", TRAIN_SCENARIOS, ids=lambda p: p.stem)
def test_unset_is_todays_split_for_shipped_scenarios(path):
    s = load_scenario(path)
    plan = s.plan
    assert plan.first_stage_layers is None and plan.last_stage_layers is None
    sched = schedule_for(plan)
    assert sched is SCHEDULES[plan.schedule]  # the registered object, no copy
    got = sched.chunk_layers(s.model.n_layers, plan.pp, plan.virtual_stages)
    even = np.array_split(np.arange(s.model.n_layers), plan.pp if plan.schedule == "dualpipe" else
                          sched.chunks(plan.pp, plan.virtual_stages))
    want = even + even if plan.schedule == "dualpipe" else even
    assert len(got) == len(want) and all(np.array_equal(a, b) for a, b in zip(got, want))


@pytest.mark.parametrize("n, pp, v", [(80, 8, 1), (61, 16, 1), (30, 4, 2), (7, 3, 2), (12, 4, 3)])
def test_chunk_sizes_unset_is_array_split(n, pp, v):
    assert chunk_sizes(n, pp, v) == [len(x) for x in np.array_split(np.arange(n), pp * v)]


@pytest.mark.parametrize("schedule, extra", [("1f1b", {}), ("interleaved", {"virtual_stages": 2})])
def test_explicit_even_counts_simulate_as_unset(schedule, extra):
    """first/last equal to what the even split gives them: the same chunks, the same step, bit for bit."""
    base = scenario(MOE, schedule=schedule, **extra)
    split = scenario(MOE, schedule=schedule, first_stage_layers=3, last_stage_layers=3, **extra)
    assert schedule_for(split.plan) is not SCHEDULES[schedule]
    a, b = simulate_training(base).summary, simulate_training(split).summary
    assert a == b


# ---------------------------------------------------------------- the split itself

CASES = [(n, pp, v, first, last)
         for n, pp, v in [(80, 8, 1), (61, 16, 1), (32, 4, 2), (30, 4, 2), (24, 3, 4), (13, 2, 1), (12, 4, 3)]
         for first, last in itertools.product((None, 1, 2, 3, 4, 7, 9), repeat=2)
         if (first, last) != (None, None)]


def _valid(n, pp, v, first, last) -> bool:
    given = [x for x in (first, last) if x is not None]
    rest_chunks = pp * v - v * len(given)
    return (pp >= 2 and not (len(given) == 2 and pp == 2) and all(x >= v for x in given)
            and n - sum(given) >= rest_chunks)


@pytest.mark.parametrize("n, pp, v, first, last", [c for c in CASES if _valid(*c)])
def test_layers_cover_every_layer_once_in_order(n, pp, v, first, last):
    sched = SCHEDULES["interleaved" if v > 1 else "1f1b"].with_split(first, last)
    chunks = sched.chunk_layers(n, pp, v)
    assert len(chunks) == pp * v
    assert np.array_equal(np.concatenate(chunks), np.arange(n))  # every layer once, ascending
    assert all(len(c) > 0 for c in chunks)
    per_stage = [sched.stage_layers(n, s, pp, v) for s in range(pp)]
    assert sorted(x for layers in per_stage for x in layers) == list(range(n))
    fixed = {}
    if first is not None:
        fixed[0] = first
    if last is not None:
        fixed[pp - 1] = last
    for s, count in fixed.items():
        assert len(per_stage[s]) == count
        own = [len(chunks[r * pp + s]) for r in range(v)]
        assert max(own) - min(own) <= 1  # spread over the stage's virtual chunks
    others = [len(chunks[c]) for c in range(pp * v) if c % pp not in fixed]
    assert max(others) - min(others) <= 1  # the rest as evenly as the even split
    assert sum(others) == n - sum(fixed.values())


def _megatron_offset(n, pp, v, first, last, pp_rank, vp_stage) -> int:
    """First layer of stage ``pp_rank``'s virtual chunk ``vp_stage``: Megatron-core's
    ``get_transformer_layer_offset`` (megatron/core/transformer/transformer_layer.py), uneven branch."""
    middle_stages = pp - (first is not None) - (last is not None)
    f, l_ = first or 0, last or 0
    middle = n - f - l_
    middle_rank = pp_rank if first is None else pp_rank - 1
    if v > 1:
        fc, lc, mc = f // v, l_ // v, middle // v
        per_round = fc + mc + lc
        return vp_stage * per_round + (0 if pp_rank == 0 else fc + middle_rank * (mc // middle_stages))
    return 0 if pp_rank == 0 else middle_rank * (middle // middle_stages) + f


@pytest.mark.parametrize("n, pp, v, first, last", [(80, 8, 1, None, 3), (80, 8, 1, 2, 6), (32, 4, 2, 4, 4),
                                                   (64, 8, 2, 2, 2), (28, 4, 4, None, 4), (61, 8, 1, 5, 14),
                                                   (60, 8, 2, 4, None)])
def test_matches_megatron_where_megatron_divides(n, pp, v, first, last):
    middle_stages = pp - (first is not None) - (last is not None)
    middle = n - (first or 0) - (last or 0)
    # TransformerConfig.__post_init__'s checks: the counts divide by vp, the middle layers by the middle ranks and vp
    assert (first or 0) % v == 0 and (last or 0) % v == 0 and middle % middle_stages == 0
    assert (middle // middle_stages) % v == 0
    chunks = SCHEDULES["interleaved" if v > 1 else "1f1b"].with_split(first, last).chunk_layers(n, pp, v)
    for r, s in itertools.product(range(v), range(pp)):
        assert chunks[r * pp + s][0] == _megatron_offset(n, pp, v, first, last, s, r)
    own = {0: first, pp - 1: last}
    for c, layers in enumerate(chunks):
        count = own.get(c % pp)
        assert len(layers) == (middle // middle_stages if count is None else count) // v


def test_first_and_last_chunks_of_the_interleaved_layout():
    """Interleaved (pp 4, v 2): stage 0 holds global chunks 0 and 4, stage 3 chunks 3 and 7; their
    counts are spread over those chunks, chunk 0 starts with layer 0 and chunk 7 ends with the last."""
    sched = SCHEDULES["interleaved"].with_split(5, 3)
    sizes = [len(c) for c in sched.chunk_layers(40, 4, 2)]
    assert sizes == [3, 8, 8, 2, 2, 8, 8, 1]
    assert sched.stage_layers(40, 0, 4, 2) == [0, 1, 2, 21, 22]
    assert sched.stage_layers(40, 3, 4, 2) == [19, 20, 39]


# ---------------------------------------------------------------- it balances a large-vocabulary pipeline


@pytest.mark.parametrize("schedule, extra", [("1f1b", {}), ("interleaved", {"virtual_stages": 2})])
def test_large_vocab_last_stage_one_layer_fewer(schedule, extra):
    even = simulate_training(scenario(LLAMA3, schedule=schedule, **extra)).summary
    lighter = simulate_training(scenario(LLAMA3, schedule=schedule, last_stage_layers=9, **extra)).summary
    assert even["excess_bubble_s"] > 0
    assert lighter["excess_bubble_s"] < 0.8 * even["excess_bubble_s"]
    assert lighter["step_time_s"] < even["step_time_s"]
    assert lighter["compute_s"] == pytest.approx(even["compute_s"], rel=0.02)  # same work, less waiting


def test_engine_plays_the_plan_split():
    """The engine's chunk tables hold the layers of the plan's split (stage 0: 2 layers, stage 3: 2)."""
    from moesim.costmodel import build_cost_model
    from moesim.engine.training.step import simulate_step

    s = scenario(MOE, first_stage_layers=2, last_stage_layers=2)
    sched = schedule_for(s.plan)
    orders = sched.orders(4, 8)
    chunks = sched.chunk_layers(12, 4)
    assert [len(c) for c in chunks] == [2, 4, 4, 2]
    step = simulate_step(s, build_cost_model(s.hardware), np.random.default_rng(0), orders, chunks)
    for c, (fwd, _) in enumerate(step.tables):
        assert sorted(set(fwd.layers[fwd.layers >= 0].tolist())) == chunks[c].tolist()


@pytest.mark.parametrize("schedule, extra", [("gpipe", {}), ("zb-h1", {}),
                                             ("interleaved", {"virtual_stages": 2, "overlap_alltoall": True})])
def test_other_schedules_run_with_an_uneven_split(schedule, extra):
    r = simulate_training(scenario(MOE, schedule=schedule, first_stage_layers=2, last_stage_layers=2, **extra))
    assert np.isfinite(r.summary["step_time_s"]) and r.summary["step_time_s"] > 0


# ---------------------------------------------------------------- memory of stage 0


def test_stage0_activations_follow_its_layer_count():
    even = scenario(LLAMA3)
    assert len(stage_layers(even.model, even.plan)) == 10
    for first in (6, 13):
        s = scenario(LLAMA3, first_stage_layers=first)
        assert stage_layers(s.model, s.plan) == list(range(first))
    # dense layers of one shape: stage 0's stored activations scale with its layer count (13 > 10: it
    # stays the busiest; with 6 a later stage is, test_memory_reports_the_busiest_stage_of_an_uneven_split);
    # the recompute working set is one layer's whatever the count
    a10 = memory_report(even).activations_gib * GIB
    a13 = memory_report(scenario(LLAMA3, first_stage_layers=13)).activations_gib * GIB
    a11 = memory_report(scenario(LLAMA3, last_stage_layers=9)).activations_gib * GIB  # stage 0 takes one more: 11
    per_layer = a11 - a10
    assert a13 - a10 == pytest.approx(3 * per_layer, rel=1e-9)
    m, plan = even.model, even.plan
    tokens = 8192  # one sequence per microbatch
    work = tokens * recompute_working_bytes_per_token(m, 0, plan.tp, plan.recompute)
    assert work > 0
    assert a10 == pytest.approx(10 * per_layer + work, rel=1e-9)


# ---------------------------------------------------------------- errors: one line, naming the field


@pytest.mark.parametrize("plan, words", [
    (dict(pp=1, dp=8, tp=8, first_stage_layers=4), "plan.first_stage_layers = 4: needs plan.pp >= 2"),
    (dict(pp=2, dp=4, tp=8, first_stage_layers=40, last_stage_layers=40), "plan.last_stage_layers = 40: with plan.pp = 2"),
    (dict(schedule="dualpipe", last_stage_layers=9), "plan.last_stage_layers: not with schedule dualpipe"),
    (dict(schedule="interleaved", virtual_stages=4, first_stage_layers=3), "plan.first_stage_layers = 3: must be >= plan.virtual_stages (4)"),
    (dict(first_stage_layers=0), "first_stage_layers"),
    (dict(last_stage_layers=2000), "last_stage_layers"),
])
def test_plan_errors_are_one_line(plan, words):
    with pytest.raises(InputError) as info:
        scenario(LLAMA3, **plan)
    msg = str(info.value)
    assert "\n" not in msg and words in msg


@pytest.mark.parametrize("n, plan, words", [
    (80, dict(pp=8, first_stage_layers=40, last_stage_layers=40),
     "plan.first_stage_layers + plan.last_stage_layers = 80: must be < model.n_layers (80)"),
    (80, dict(pp=8, first_stage_layers=75), "plan.first_stage_layers = 75: leaves 5 of model.n_layers (80) for the other "
                                            "stages' 7 chunks, each needs one (allowed: at most 73)"),
    (80, dict(pp=8, last_stage_layers=80), "plan.last_stage_layers = 80: must be < model.n_layers (80)"),
    (16, dict(pp=4, microbatches=4, schedule="interleaved", virtual_stages=2, first_stage_layers=6, last_stage_layers=6),
     "plan.first_stage_layers + plan.last_stage_layers = 12: leaves 4 of model.n_layers (16) for the other stages' 4 chunks"),
])
def test_model_dependent_errors_are_one_line(n, plan, words):
    p = PlanSpec(**plan)
    if "leaves 4" in words:  # exactly enough: allowed
        check_layer_split(n, p)
        p = PlanSpec(**{**plan, "last_stage_layers": 7})
        words = "plan.first_stage_layers + plan.last_stage_layers = 13: leaves 3 of model.n_layers (16)"
    with pytest.raises(ValueError) as info:
        check_layer_split(n, p)
    assert "\n" not in str(info.value) and words in str(info.value)
    with pytest.raises(ValueError, match="plan.(first|last)_stage_layers"):  # the engine's split says the same
        schedule_for(p).chunk_layers(n, p.pp, p.virtual_stages)


def test_dualpipe_split_is_rejected_by_the_schedule_too():
    with pytest.raises(ValueError, match="not with schedule dualpipe"):
        SCHEDULES["dualpipe"].with_split(None, 3)
    assert SCHEDULES["dualpipe"].with_split(None, None) is SCHEDULES["dualpipe"]
# ---------------------------------------------------------------- with the proposed scenario.py / memory.py changes


def test_n_layers_errors_at_load():
    with pytest.raises(InputError) as info:
        scenario(LLAMA3, first_stage_layers=75)
    msg = str(info.value)
    assert "\n" not in msg and "plan.first_stage_layers = 75: leaves 5 of model.n_layers (80)" in msg


def test_serving_rejects_the_split():
    serve = {**LLAMA3, "plan": {**LLAMA3["plan"], "last_stage_layers": 9},
             "workload": {"kind": "serving", "arrival": {"process": "poisson", "rate_per_s": 1.0, "n_requests": 10},
                          "prompt_tokens": {"dist": "fixed", "value": 128}, "output_tokens": {"dist": "fixed", "value": 16}}}
    with pytest.raises(InputError, match="plan.last_stage_layers = 9: the uneven pipeline split is for training"):
        moesim.scenario_from_dict(serve)


def test_stage0_weights_follow_its_layer_count():
    from moesim.memory import weight_params_per_device

    even = scenario(LLAMA3)
    eq = scenario(LLAMA3, first_stage_layers=10, last_stage_layers=10)  # what the even split gives: unchanged
    assert weight_params_per_device(eq.model, eq.plan) == pytest.approx(weight_params_per_device(even.model, even.plan), rel=1e-12)
    d_even, _ = weight_params_per_device(even.model, even.plan)
    small = scenario(LLAMA3, first_stage_layers=6)
    d_small, _ = weight_params_per_device(small.model, small.plan)
    from moesim.accounting import attention_params, ffn_params
    m = even.model
    layer = attention_params(m) + ffn_params(m.d_model, m.ffn_hidden, m.gated_ffn) + 2 * m.d_model
    assert d_even - d_small == pytest.approx(4 * layer / 8, rel=1e-9)  # 4 layers fewer, tp 8
    assert memory_report(small).weights_gib < memory_report(even).weights_gib


def test_stage0_expert_weights_follow_its_moe_layers():
    from moesim.memory import weight_params_per_device

    even, split = scenario(MOE), scenario(MOE, first_stage_layers=1, last_stage_layers=2)
    _, e_even = weight_params_per_device(even.model, even.plan)
    _, e_split = weight_params_per_device(split.model, split.plan)
    assert e_split == pytest.approx(e_even / 3, rel=1e-12)  # 1 MoE layer on stage 0 against 3


def test_memory_reports_the_busiest_stage_of_an_uneven_split():
    """PP8 1F1B, 80 layers: first_stage_layers 6 leaves stage 1 with 11 layers and 7 microbatches in
    flight (77 layer-activations) against stage 0's 6 x 8 = 48: the report is stage 1's."""
    from moesim.memory import memory_report
    from moesim.stage_memory import live_activation_peaks

    path = ROOT / "moesim" / "data" / "validation" / "llama3-70b-h100-train.yaml"
    base = ["plan.schedule=1f1b", "plan.virtual_stages=1"]
    even = memory_report(moesim.load_scenario(path, base))
    uneven_s = moesim.load_scenario(path, [*base, "plan.first_stage_layers=6"])
    peaks = live_activation_peaks(uneven_s.plan, 80, [1.0] * 80)
    assert peaks[:2] == [6 * 8, 11 * 7]
    # the stored activations scale with the layer-activations in flight; one layer's recompute working set rides on top
    m, plan, w = uneven_s.model, uneven_s.plan, uneven_s.workload
    tokens = w.global_batch_seqs / (plan.dp * plan.microbatches) * w.seq_len / plan.cp
    work = tokens * recompute_working_bytes_per_token(m, 0, plan.tp, plan.recompute, modules=plan.recompute_modules) / GIB
    assert memory_report(uneven_s).activations_gib - work == pytest.approx((even.activations_gib - work) * 77 / 80, rel=1e-9)
    assert memory_report(uneven_s).stage == 1 and even.stage == 0  # the report names its stage
    # the even split's own walk matches the schedule's in-flight rule on stage 0
    assert live_activation_peaks(moesim.load_scenario(path, base).plan, 80, [1.0] * 80)[0] == 10 * 8
