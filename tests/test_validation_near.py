"""``moesim validate --near SCENARIO``: the published measurements most like a scenario."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from moesim.accounting import serving_mean_context, serving_mean_lengths
from moesim.loader import load_scenario
from moesim.validation import DEFAULT_CSV, SCENARIO_PREFIX, read_table, scenario_ref
from moesim.validation_near import device_family, distance, nearest_rows, traits

ROOT = Path(__file__).resolve().parent.parent
VLLM_QWEN = scenario_ref("validation/qwen3-30b-a3b-h200-vllm-offline.yaml", DEFAULT_CSV.parent)


@pytest.mark.parametrize("name,family", [("NVIDIA H100 SXM5 80GB", "hopper"), ("NVIDIA H200 SXM 141GB", "hopper"),
                                         ("NVIDIA B200", "blackwell"), ("NVIDIA GB10", "gb10"),
                                         ("NVIDIA A100 SXM4 80GB", "ampere"), ("Apple M2 Ultra", "apple"),
                                         ("Cerebras WSE-3", "cerebras wse-3")])
def test_device_families(name, family):
    assert device_family(name) == family


def test_distance_is_zero_to_itself_symmetric_and_grows_with_each_difference():
    a = traits(load_scenario(VLLM_QWEN))
    assert distance(a, a) == 0
    bigger = replace(a, batch_seqs=4 * a.batch_seqs)
    other_gpu = replace(a, device="NVIDIA H100 SXM5 80GB")
    other_family = replace(a, device="NVIDIA B200", family="blackwell")
    assert distance(a, bigger) == distance(bigger, a) > 0
    assert 0 < distance(a, other_gpu) < distance(a, other_family)
    assert distance(a, replace(a, batch_seqs=2 * a.batch_seqs)) < distance(a, bigger)
    assert distance(a, replace(a, kind="training")) == math.inf  # training and serving never mix


def test_a_rows_own_scenario_is_nearest_and_every_row_is_a_run_of_the_same_kind():
    rows = read_table(DEFAULT_CSV)
    near = nearest_rows(load_scenario(VLLM_QWEN), rows, DEFAULT_CSV.parent, 6)
    assert len(near) == 6
    assert near[0][0]["id"] == "INF-110" and near[0][1] == 0
    assert [d for _, d in near] == sorted(d for _, d in near)
    for row, _ in near:
        assert not row["metric"].startswith(SCENARIO_PREFIX)
        assert row["id"].startswith("INF")  # serving rows only


def test_cli_near_prints_the_nearest_rows_and_their_range():
    r = subprocess.run([sys.executable, "-m", "moesim.cli", "validate", "--near", "mixtral-8x7b-h100-train",
                        "--nearest", "2", "--json"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["near"] == "mixtral-8x7b-h100-train"
    ids = [c["id"] for c in doc["checks"]]
    assert len(ids) == 2 and ids[0] == "TRN-34"  # Mixtral 8x7B on 64 H100 with EP8: the same run as published
    assert all(c["error"] is not None for c in doc["checks"])


@pytest.mark.parametrize("args,message", [
    (["--near", "mixtral-8x7b-h100-train", "--only", "INF"], "--near and --only: choose one way"),
    (["--near", "mixtral-8x7b-h100-train", "--nearest", "0"], "--nearest 0: need at least 1 row"),
    (["--near", "no-such-scenario"], "no-such-scenario: file not found"),
    (["--set", "plan.tp=2"], "--set: only with --near"),
    (["--near", "mixtral-8x7b-h100-train", "--set", "plan.nope=1"], "plan.nope: unknown field"),
])
def test_cli_near_bad_input_is_one_line(args, message):
    r = subprocess.run([sys.executable, "-m", "moesim.cli", "validate", *args], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2
    assert message in r.stderr and "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_cli_near_without_a_row_of_that_kind_is_one_line(tmp_path):
    train = load_scenario("mixtral-8x7b-h100-train")
    assert train.is_training
    table = tmp_path / "rows.csv"
    table.write_text("id,quantity,scenario,overrides,metric,transform,scale,published,unit,source\n"
                     "T1,step,mixtral-8x7b-h100-train,,step_time_s,,,10,s,https://example.org\n")
    r = subprocess.run([sys.executable, "-m", "moesim.cli", "validate", str(table), "--near", "mixtral-8x7b-h100-serve"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2
    assert "--near mixtral-8x7b-h100-serve: no serving row in" in r.stderr and "Traceback" not in r.stderr


def test_a_trace_driven_run_has_its_traces_mean_lengths(tmp_path):
    """A workload whose lengths come from its arrival trace is as long as the requests it plays (the
    first n_requests rows), not the 1-token fallback that put every such run far from any row."""
    trace = tmp_path / "t.csv"
    trace.write_text("arrived_at,num_prefill_tokens,num_decode_tokens\n0,100,10\n1,300,30\n2,9000,900\n")
    s = load_scenario(ROOT / "scenarios" / "llama-2-7b-a100-serve.yaml",
                      [f"workload.arrival.trace={trace}", "workload.arrival.n_requests=2"])
    got = traits(s)
    assert (got.length_in, got.length_out) == (200.0, 20.0)  # rows 1-2 only: the run plays those
    assert serving_mean_lengths(s.workload, 1.0) == (200.0, 20.0)
    assert serving_mean_context(s) == 200.0 + 20.0 / 2
    resampled = load_scenario(ROOT / "scenarios" / "llama-2-7b-a100-serve.yaml",
                              [f"workload.arrival.trace={trace}", "workload.arrival={process: batch, n_requests: 2, "
                               f"trace: {trace}}}"])
    assert traits(resampled).length_in == pytest.approx((100 + 300 + 9000) / 3)  # resampled from the whole column
    near = nearest_rows(load_scenario(ROOT / "scenarios" / "llama-2-7b-a100-serve.yaml"), read_table(DEFAULT_CSV),
                        DEFAULT_CSV.parent, 1)
    assert near[0][1] < 4.0  # a dense A100 vLLM row is near it once its lengths are the trace's


def test_cli_near_takes_the_runs_overrides_and_picks_its_rows():
    """``validate --near X --set ...`` runs the rows nearest to X as overridden: the command simulate names
    under a run with --set (here Mixtral's training step moved onto a GB200 rack: Blackwell rows first)."""
    sets = ["hardware.preset=gb200-nvl72", "hardware.node.devices_per_node=64", "hardware.cluster.nodes=1"]
    want = [r["id"] for r, _ in nearest_rows(load_scenario("mixtral-8x7b-h100-train", sets), read_table(DEFAULT_CSV),
                                             DEFAULT_CSV.parent, 2)]
    assert want != [r["id"] for r, _ in nearest_rows(load_scenario("mixtral-8x7b-h100-train"), read_table(DEFAULT_CSV),
                                                     DEFAULT_CSV.parent, 2)]
    args = ["validate", "--near", "mixtral-8x7b-h100-train", "--nearest", "2", "--json"]
    for x in sets:
        args += ["-s", x]
    r = subprocess.run([sys.executable, "-m", "moesim.cli", *args], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert [c["id"] for c in json.loads(r.stdout)["checks"]] == want
