"""Serving engine: physics at batch 1, the knee, Little's law, determinism, KV bounds, shipped scenarios."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import moesim
from moesim.accounting import decode_bytes_per_token
from moesim.costmodel import build_cost_model
from moesim.costmodel.host import iteration_host_s, kernel_launch_s, uses_cuda_graph
from moesim.engine.ops import block_ops, op_s
from moesim.engine.serving.decode_cost import IterationCost
from moesim.engine.serving.rejections import REASON_KEYS
from moesim.errors import InputError
from moesim.invariants import violations
from moesim.loader import scenario_from_dict

ROOT = Path(__file__).resolve().parents[1]
SERVE_SCENARIOS = sorted((ROOT / "scenarios").glob("*-serve*.yaml"))
STABLE_KEYS = ("output_tokens_per_s", "input_tokens_per_s", "ttft_p50_s", "ttft_p99_s", "tpot_p50_s",
               "tpot_p99_s", "e2e_p50_s", "e2e_p99_s", "usd_per_mtok", "dropped_fraction")
# A device name no shipped calibration profile matches: the cost model is the datasheet roofline.
DATASHEET = "Datasheet GPU"


def serve(model="llama-2-7b", dtype="fp16", hw="a100-80gb", device_name=DATASHEET, plan=None,
          arrival=None, prompt=16, output=65, **workload):
    """A one-device (unless ``plan`` says otherwise) serving scenario as plain data, validated."""
    plan = plan or {"dp": 1}
    devices = plan.get("dp", 1) * plan.get("tp", 1) * plan.get("pp", 1)
    hardware = {"preset": hw, "node": {"devices_per_node": devices}}
    if device_name:
        hardware["device"] = {"name": device_name, "default_profile": "datasheet"}  # not the preset's

    def length(v):
        return v if isinstance(v, dict) else {"dist": "fixed", "value": v}

    w = {"kind": "serving", "arrival": arrival or {"process": "batch", "n_requests": 1},
         "prompt_tokens": length(prompt), "output_tokens": length(output)} | workload
    return scenario_from_dict({"name": "test-serve", "model": {"preset": model, "dtype": dtype},
                               "hardware": hardware, "plan": plan, "workload": w})


def tpot_batch1(s) -> float:
    r = moesim.simulate(s)
    assert r.summary["served_requests"] == 1
    return r.summary["tpot_p50_s"]


@pytest.mark.parametrize("model,dtype,hw,device_name", [
    ("llama-2-7b", "fp16", "a100-80gb", DATASHEET),
    ("mixtral-8x7b", "fp16", "m2-ultra", None),
    ("mixtral-8x7b", "fp8", "h100-sxm", DATASHEET),
])
def test_batch1_decode_time_is_bytes_over_bandwidth(model, dtype, hw, device_name):
    s = serve(model, dtype, hw, device_name, prompt=16, output=65)
    dev = s.hardware.device
    mean_context = 16 + 64 / 2  # KV read by the 64 decode steps, on average
    bytes_per_token = decode_bytes_per_token(s.model, mean_context, batch=1)
    bytes_s = bytes_per_token / (dev.mem_bw_gbps * 1e9 * dev.memory_efficiency)
    tpot = tpot_batch1(s)
    # The rest is the host: a CUDA graph's replay (decode batches on CUDA) or one launch per compute
    # op of the op graph's block (Apple: no graphs), plus the scheduler's time where it is not hidden.
    cost = IterationCost(s, build_cost_model(s.hardware), np.random.default_rng(0), max_tokens=1)
    spec, launch = cost.host, float(cost.cm.launch_s)
    graph = uses_cuda_graph(1, True, spec)
    launches = kernel_launch_s(cost.n_kernels, True, spec) if graph else cost.n_kernels * launch
    host = 0.0 if spec.overlap_decode else iteration_host_s(1, "decode", spec)
    fused_moe = s.model.n_moe_layers * cost.dims.moe_fixed_us * 1e-6  # a serving MoE layer's fixed latency (CUDA)
    assert graph == ("Apple" not in dev.name) and (fused_moe > 0) == (graph and s.model.n_experts > 1)
    # within one launch per layer (the head, the KV reads' rounding)
    assert abs((tpot - bytes_s) - (launches + host + fused_moe)) <= s.model.n_layers * launch


def test_kernels_between_gemms_stream_16bit_activations():
    """FP8 weights, 16-bit activations: the activation and MoE permute/un-permute bytes, hand-counted."""
    s = serve("mixtral-8x7b", "fp8", "h100-sxm", DATASHEET)
    cm = build_cost_model(s.hardware)
    cost = IterationCost(s, cm, np.random.default_rng(0), max_tokens=64)
    d, w, t = 4096, 14336, 64
    ops = {op.name: op for op in block_ops(cost.dims, cost.dtypes, True, t, np.ones(1), np.ones(1), np.ones(8))}
    assert ops["permute"].nbytes == pytest.approx(t * d * 2 + 2 * t * d * 1)  # read bf16 token, write 2 fp8 rows
    assert ops["unpermute"].nbytes == pytest.approx(2 * t * d * 2 + t * d * 2)  # read 2 bf16 rows, write the token
    dense = {op.name: op for op in block_ops(cost.dims, cost.dtypes, False, t, np.ones(1), np.ones(1))}
    assert dense["ffn_act"].nbytes == pytest.approx(t * w * 3 * 2)  # gate and up read, product written, bf16
    assert float(op_s(cm, ops["permute"])) == pytest.approx(float(cm.memory_s(t * d * 2 + 2 * t * d)))

def decode_kernels_s(s) -> float:
    """Kernel seconds of one batch-1 decode step at context 48 (no host time)."""
    cost = IterationCost(s, build_cost_model(s.hardware), np.random.default_rng(0), max_tokens=1)
    return cost.kernel_s(np.ones(1), np.array([48.0]), 1)[0]


def test_a100_m2_ultra_decode_ratio_follows_bandwidth():
    a100 = decode_kernels_s(serve("llama-2-7b", "fp16", "a100-80gb", DATASHEET))
    m2 = decode_kernels_s(serve("llama-2-7b", "fp16", "m2-ultra", None))
    assert m2 / a100 == pytest.approx(2039 / 800, rel=0.05)
    calibrated = decode_kernels_s(serve("llama-2-7b", "fp16", "a100-80gb", device_name=None))  # shipped profile
    assert m2 / calibrated == pytest.approx(2039 / 800, rel=0.15)
    # what a user sees adds the host: the M2 (no CUDA graphs, no overlap) falls further behind
    assert tpot_batch1(serve("llama-2-7b", "fp16", "m2-ultra", None)) / tpot_batch1(
        serve("llama-2-7b", "fp16", "a100-80gb", DATASHEET)) > m2 / a100


def test_throughput_rises_with_batch_until_the_knee():
    x, knee = {}, None
    for b in (4, 8, 16, 32, 64, 128, 256, 512, 1024):
        r = moesim.simulate(serve(prompt=16, output=64, arrival={"process": "batch", "n_requests": 4 * b},
                                  max_batch_seqs=b, max_batch_tokens=8192))
        x[b], knee = r.summary["output_tokens_per_s"], r.summary["knee_batch"]
    assert 32 <= knee <= 512
    for b, tok_s in x.items():
        if 2 * b in x and 2 * b <= knee // 2:
            assert x[2 * b] / tok_s >= 1.6, (b, x)  # memory-bound: twice the batch, ~twice the tokens
        if 2 * b in x and b >= 2 * knee:
            assert x[2 * b] / tok_s <= 1.15, (b, x)  # compute-bound: flat
    assert max(x.values()) == pytest.approx(max(x[b] for b in x if b >= knee), rel=1e-9)


def test_the_knee_is_the_roofline_ridge_not_a_tile_step():
    """Mixtral 8x7B in FP8 on an H100 turns compute-bound where a step's FLOPs take as long as its weight reads:
    B = (weights / HBM bandwidth) / (2 x active params / peak) ~ 1,070 sequences from the datasheet. The knee
    must land near that (the sustained rates lower it), not at 257 sequences, where each expert's rows start a
    second 64-row GEMM tile and the step grows 12 % for one sequence (read as the knee until 7 Dec. 2026)."""
    from moesim.accounting import param_counts

    s = moesim.load_scenario("mixtral-8x7b-h100-serve", ["workload.arrival.n_requests=20"])
    p, dev = param_counts(s.model), s.hardware.device
    ridge = (p.total / (dev.mem_bw_gbps * 1e9)) / (2 * p.active / (dev.peak_tflops["fp8"] * 1e12))
    assert 1000 < ridge < 1150
    knee = moesim.simulate(s).summary["knee_batch"]
    assert ridge / 2 <= knee <= ridge


def test_littles_law_on_a_steady_poisson_run():
    rate = 8.0
    s = serve(device_name=None, arrival={"process": "poisson", "rate_per_s": rate, "n_requests": 1500},
              prompt={"dist": "uniform", "low": 64, "high": 512},
              output={"dist": "uniform", "low": 32, "high": 256}, max_batch_seqs=256, max_batch_tokens=4096)
    r = moesim.simulate(s, seed=3)
    req, it = r.tables["requests"], r.tables["iterations"]
    arrival = np.asarray(req["arrival_s"])
    t0, t1 = 0.1 * arrival.max(), 0.9 * arrival.max()
    # Mean number in the system over [t0, t1], from the engine's own iteration records.
    start, end = np.asarray(it["start_s"]), np.asarray(it["end_s"])
    in_system = np.asarray(it["running"]) + np.asarray(it["queued"])
    overlap = np.clip(np.minimum(end, t1) - np.maximum(start, t0), 0.0, None)
    mean_in_system = float((in_system * overlap).sum() / (t1 - t0))
    # Arrival rate times the mean time in system of the requests that arrived in the window.
    window = (arrival >= t0) & (arrival < t1)
    lam = window.sum() / (t1 - t0)
    wait = float(np.mean(np.asarray(req["e2e_s"])[window]))
    assert lam == pytest.approx(rate, rel=0.1)
    assert mean_in_system == pytest.approx(lam * wait, rel=0.1)
    assert mean_in_system > 5  # a loaded system, not a trivial one


def _skewed_online():
    return scenario_from_dict({
        "name": "det", "model": {"preset": "switch-base-128"},
        "hardware": {"preset": "a100-80gb", "node": {"devices_per_node": 2}}, "plan": {"dp": 2},
        "workload": {"kind": "serving", "arrival": {"process": "poisson", "rate_per_s": 40.0, "n_requests": 100},
                     "prompt_tokens": {"dist": "lognormal", "median": 100, "sigma": 0.5, "max": 300},
                     "output_tokens": {"dist": "uniform", "low": 8, "high": 64}, "router": "round_robin"},
        "routing": {"distribution": "zipf", "zipf_s": 1.0, "capacity_factor": 1.5, "overflow": "drop"}})


def test_same_seed_same_result():
    s = _skewed_online()
    a, b, c = moesim.simulate(s, seed=7), moesim.simulate(s, seed=7), moesim.simulate(s, seed=8)
    assert a.summary == b.summary
    np.testing.assert_equal(a.tables, b.tables)  # every column (numpy arrays), NaN equal to NaN
    for col in a.spans:
        assert np.array_equal(a.spans[col], b.spans[col])
    assert a.summary != c.summary
    assert 0 < a.summary["dropped_fraction"] < 1  # skewed routing with drops is on


def test_kv_cache_never_over_capacity_and_preempted_requests_finish():
    s = serve(prompt={"dist": "uniform", "low": 200, "high": 600}, output={"dist": "uniform", "low": 200, "high": 600},
              arrival={"process": "batch", "n_requests": 300}, max_batch_seqs=64, max_batch_tokens=2048,
              kv_cache_fraction=0.05)
    r = moesim.simulate(s, seed=1)
    it, req = r.tables["iterations"], r.tables["requests"]
    kv, cap = np.asarray(it["kv_tokens"]), np.asarray(it["kv_capacity_tokens"])
    assert np.all(kv <= cap)
    assert kv.max() > 0.9 * cap[0]  # the pool does fill up
    assert r.summary["preemptions"] > 0
    assert r.summary["served_requests"] == 300
    first, finish, arrival = (np.asarray(req[k]) for k in ("first_token_s", "finish_s", "arrival_s"))
    assert np.all(arrival <= first) and np.all(first <= finish)


def test_full_kv_admission_holds_whole_requests_and_never_preempts():
    """kv_admission full (TensorRT-LLM GUARANTEED_NO_EVICT): the same KV-bound run as above, no preemption."""
    kw = dict(prompt={"dist": "uniform", "low": 200, "high": 600}, output={"dist": "uniform", "low": 200, "high": 600},
              arrival={"process": "batch", "n_requests": 120}, max_batch_seqs=64, max_batch_tokens=2048,
              kv_cache_fraction=0.05)
    full = moesim.simulate(serve(kv_admission="full", **kw), seed=1)
    prompt = moesim.simulate(serve(**kw), seed=1)
    it, req = full.tables["iterations"], full.tables["requests"]
    kv, cap = np.asarray(it["kv_tokens"]), np.asarray(it["kv_capacity_tokens"])
    need = np.asarray(req["prompt_tokens"]) + np.asarray(req["output_tokens"])
    assert np.all(kv <= cap) and full.summary["preemptions"] == 0
    assert full.summary["served_requests"] == 120
    assert np.asarray(it["running"]).max() <= cap[0] // need.min()  # whole requests fit, not prompts
    assert full.summary["mean_batch_seqs"] < prompt.summary["mean_batch_seqs"]


def test_kv_admission_bad_value_names_the_field():
    with pytest.raises(InputError) as info:
        serve(kv_admission="eager")
    msg = str(info.value)
    assert "\n" not in msg
    for words in ("workload.kv_admission = 'eager'", "'prompt' or 'full'"):
        assert words in msg, msg


def test_requests_too_long_for_the_kv_pool_are_rejected():
    s = serve(prompt={"dist": "uniform", "low": 100, "high": 3000}, output=100,
              arrival={"process": "batch", "n_requests": 50}, kv_cache_fraction=0.015)
    r = moesim.simulate(s)
    cap = r.tables["iterations"]["kv_capacity_tokens"][0]
    prompt = np.asarray(r.tables["requests"]["prompt_tokens"])
    assert r.summary["rejected_requests"] == int((prompt + 100 > cap).sum()) > 0
    assert r.summary["served_requests"] + r.summary["rejected_requests"] == 50


def test_pipeline_replica_keeps_micro_batches_in_flight():
    """pp stages: each iteration's latency spans every stage, pp micro-batches run at once."""
    def run(pp):
        s = serve(model="llama-2-7b", plan={"dp": 1, "pp": pp}, arrival={"process": "batch", "n_requests": 256},
                  prompt=64, output=64, max_batch_seqs=32)
        return moesim.simulate(s).summary
    one, four = run(1), run(4)
    assert four["tpot_p50_s"] > 0.8 * one["tpot_p50_s"]  # latency is not cut by the pipeline
    assert four["output_tokens_per_s"] > 2.5 * one["output_tokens_per_s"]  # 4 micro-batches in flight


@pytest.mark.parametrize("path", SERVE_SCENARIOS, ids=lambda p: p.stem)
def test_every_shipped_serving_scenario_simulates(path, tmp_path):
    full = moesim.load_scenario(path)
    n = min(full.workload.arrival.n_requests, 40)
    r = moesim.simulate(moesim.load_scenario(path, [f"workload.arrival.n_requests={n}"]))
    s = r.summary
    for key in STABLE_KEYS + ("requests_per_s", "knee_batch", "usd_per_1k_tokens", "peak_memory_gib",
                              "energy_j_per_token", "kv_utilisation_max", "makespan_s", "devices"):
        assert key in s, key
        assert not isinstance(s[key], float) or math.isfinite(s[key]), key
    assert s["fits"] is True
    assert s["served_requests"] + s["rejected_requests"] == n
    assert s["output_tokens_per_s"] > 0 and s["ttft_p50_s"] <= s["ttft_p99_s"] <= s["e2e_p99_s"]
    assert violations(r) == []
    compute = r.spans["stream"] == "compute"
    assert compute.sum() == s["iterations"] == len(r.tables["iterations"]["start_s"])
    # each communication span follows its iteration's compute span, on its own stream
    it = r.tables["iterations"]
    comm = ~compute
    assert set(r.spans["stream"][comm]) <= {"tp_comm", "ep_comm", "pp_comm"}
    d = full.workload.disaggregation
    plans = [full.plan] if d is None else [d.prefill.plan, d.decode.plan]
    assert ("tp_comm" in set(r.spans["stream"])) == any(p.tp > 1 for p in plans)
    assert ("ep_comm" in set(r.spans["stream"])) == (any(p.ep > 1 for p in plans) and full.model.n_moe_layers > 0)
    busy = (r.spans["end_s"] - r.spans["start_s"]).sum()
    turn = np.asarray(it["stage0_end_s"], dtype=float) - np.asarray(it["start_s"], dtype=float)
    assert busy == pytest.approx(turn.sum(), rel=1e-9)
    assert set(r.tables["requests"]) >= {"id", "replica", "arrival_s", "prompt_tokens", "output_tokens",
                                         "first_token_s", "finish_s", "ttft_s", "tpot_s", "e2e_s", "preemptions"}
    written = {p.name for p in r.save(tmp_path)}
    assert {"summary.json", "requests.csv", "iterations.csv", "trace.json"} <= written


@settings(max_examples=20, deadline=None)
@given(model=st.sampled_from(["llama-2-7b", "mixtral-8x7b", "switch-base-128"]),
       plan=st.sampled_from([{"dp": 1}, {"dp": 2, "ep": 2}, {"dp": 1, "tp": 2}, {"dp": 1, "pp": 2}]),
       budget=st.sampled_from([4, 64, 512]), seqs=st.sampled_from([1, 3, 32]), chunked=st.booleans(),
       router=st.sampled_from(["round_robin", "least_loaded"]),
       routing=st.sampled_from(["uniform", "zipf"]), fraction=st.sampled_from([0.002, 0.9]),
       seed=st.integers(0, 3), mixed=st.booleans())
def test_random_small_runs_keep_the_invariants(model, plan, budget, seqs, chunked, router, routing, fraction, seed,
                                               mixed):
    if model == "llama-2-7b" and "ep" in plan:
        plan = {"dp": 2}  # a dense model has no experts to spread
    devices = plan.get("dp", 1) * plan.get("tp", 1) * plan.get("pp", 1)
    s = scenario_from_dict({
        "name": "prop", "model": {"preset": model, "max_seq_len": 512},
        "hardware": {"preset": "a100-80gb", "node": {"devices_per_node": devices}}, "plan": plan,
        "workload": {"kind": "serving", "arrival": {"process": "poisson", "rate_per_s": 50.0, "n_requests": 30},
                     # without chunking a bounded prompt over the budget is refused up front: unbounded
                     # prompts keep the refusals at arrival in play
                     "prompt_tokens": ({"dist": "uniform", "low": 1, "high": 300} if chunked else
                                       {"dist": "lognormal", "median": 100, "sigma": 1.0}),
                     "output_tokens": {"dist": "uniform", "low": 1, "high": 40},
                     "max_batch_seqs": seqs, "max_batch_tokens": budget, "chunked_prefill": chunked,
                     "router": router, "kv_cache_fraction": fraction, "mixed_batches": mixed},
        "routing": {"distribution": routing, "overflow": "drop"}})
    r = moesim.simulate(s, seed=seed)
    it, req = r.tables["iterations"], r.tables["requests"]
    assert all(k <= c for k, c in zip(it["kv_tokens"], it["kv_capacity_tokens"]))
    assert all(b <= seqs for b in it["batch_seqs"])
    if chunked:  # without chunking a lone recompute may exceed the budget; with it, never
        assert all(p + d <= budget for p, d in zip(it["prefill_tokens"], it["decode_tokens"]))
    served = np.isfinite(np.asarray(req["finish_s"], dtype=float))
    assert np.array_equal(served, ~np.asarray(req["rejected"], dtype=bool))
    assert r.summary["served_requests"] + r.summary["rejected_requests"] == 30
    assert r.summary["rejected_requests"] == sum(r.summary[k] for k in REASON_KEYS.values())
    assert violations(r) == []
    if not mixed:  # an iteration runs prefill or decodes, never both
        assert all(p == 0 or d == 0 for p, d in zip(it["prefill_tokens"], it["decode_tokens"]))


def test_a_trace_shorter_than_n_requests_says_so_in_the_steady_note(tmp_path):
    trace = tmp_path / "t.csv"
    trace.write_text("arrived_at,num_prefill_tokens,num_decode_tokens\n"
                     + "".join(f"{0.05 * i},{100 + i},{8 + i % 3}\n" for i in range(30)))
    path = ROOT / "scenarios" / "llama-2-7b-a100-serve.yaml"
    short = moesim.simulate(moesim.load_scenario(path, [f"workload.arrival.trace={trace}",
                                                        "workload.arrival.n_requests=50"])).summary
    assert short["n_requests"] == 30
    assert "the trace has 30 rows, fewer than workload.arrival.n_requests 50" in short["steady_note"]
    enough = moesim.simulate(moesim.load_scenario(path, [f"workload.arrival.trace={trace}",
                                                         "workload.arrival.n_requests=20"])).summary
    assert enough["n_requests"] == 20 and "fewer than" not in enough["steady_note"]


def test_the_steady_note_says_what_became_of_a_traces_lengths(tmp_path):
    trace = tmp_path / "t.csv"
    trace.write_text("arrived_at,num_prefill_tokens,num_decode_tokens\n"
                     + "".join(f"{0.05 * i},{5000 if i < 3 else 100},{0 if i == 4 else 8}\n" for i in range(30)))
    path = ROOT / "scenarios" / "llama-2-7b-a100-serve.yaml"  # prompt_tokens.max 3072, both lengths dist: trace
    note = moesim.simulate(moesim.load_scenario(path, [f"workload.arrival.trace={trace}"])).summary["steady_note"]
    assert "3 trace prompt_tokens above prompt_tokens.max 3,072 clipped to it" in note
    assert "1 trace output_tokens of 0 counted as 1" in note and "drawn" not in note
    drawn = moesim.simulate(moesim.load_scenario(path, [f"workload.arrival.trace={trace}",
                                                        "workload.prompt_tokens={dist: fixed, value: 64}"]))
    note = drawn.summary["steady_note"]
    assert "prompt_tokens (dist fixed) drawn, not taken from the trace" in note and "clipped" not in note
