"""A newcomer's five questions (issue 18), each answered with at most two CLI commands and the
answer asserted: what a user reading only the README and ``--help`` would run and conclude."""

from __future__ import annotations

import json
import shutil

import pytest

from moesim.cli import main


def _json(capsys, argv: list[str]) -> dict:
    """Run one command with ``--json`` and return its summary."""
    assert main([*argv, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_which_of_two_mixtral_serving_plans_is_cheaper_at_a_steady_load(capsys):
    """8 H100 (8 replicas) vs 2 H100 (one TP2 replica), both offered 10 requests/s: both keep up,
    so the smaller cluster is cheaper per token by about its device ratio."""
    load = ["--set", "workload.arrival.rate_per_s=10", "--set", "workload.arrival.n_requests=1500"]
    wide = _json(capsys, ["simulate", "mixtral-8x7b-h100-serve-online", *load])
    narrow = _json(capsys, ["simulate", "mixtral-8x7b-h100-serve-online", *load, "--set", "plan.dp=1",
                            "--set", "plan.tp=2", "--set", "hardware.node.devices_per_node=2"])
    assert not wide["overloaded"] and not narrow["overloaded"]
    assert wide["devices"] == 8 and narrow["devices"] == 2
    ratio = wide["usd_per_mtok"] / narrow["usd_per_mtok"]
    assert 3.0 < ratio < 4.5  # the same tokens/s at steady state, a quarter of the devices


def test_what_raising_the_capacity_factor_costs_and_saves(capsys, tmp_path):
    """One sweep: a higher capacity factor drops fewer tokens and takes a longer step."""
    out = tmp_path / "cf"
    assert main(["sweep", "mixtral-8x7b-h100-train", "--capacity-factor", "1.0,1.25", "--out", str(out)]) == 0
    table = capsys.readouterr().out
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines() if line.strip()]
    by_cf = {r["routing.capacity_factor"]: r for r in rows}
    low, high = by_cf[1.0], by_cf[1.25]
    # the traded quantity is in the table itself (its header may wrap: "dropped_" / "fraction")
    assert "dropped_" in table and f"{low['dropped_fraction']:.2%}".replace("%", " %") in table
    assert low["dropped_fraction"] > high["dropped_fraction"]
    assert high["step_time_s"] > low["step_time_s"]


def test_batch_1_tokens_per_s_of_mixtral_on_an_m2_ultra(capsys):
    """Single stream: no queueing, and tokens/s is one over the time per output token."""
    s = _json(capsys, ["simulate", "mixtral-8x7b-m2-ultra-serve"])
    assert s["queue_p99_s"] == pytest.approx(0.0, abs=1e-9)
    assert s["mean_batch_seqs"] == pytest.approx(1.0)
    assert s["output_tokens_per_s"] == pytest.approx(1.0 / s["tpot_p50_s"], rel=0.1)
    assert 5.0 < s["output_tokens_per_s"] < 40.0  # FP16 weights streamed from 800 GB/s unified memory


def test_cost_of_gpt4_rumour_on_128_h100_at_a_sustained_load(capsys):
    """The shipped H100 scenario runs at a load its 128 GPUs sustain: the cost is a steady-state figure."""
    s = _json(capsys, ["simulate", "gpt4-rumour-h100-serve"])
    assert s["devices"] == 128 and not s["overloaded"]
    assert s["requests_per_s"] == pytest.approx(s["offered_requests_per_s"], rel=0.1)
    assert 0.0 < s["usd_per_1k_output_tokens"] < 1.0


def test_a_qwen_moe_config_json_simulates_with_the_right_parameter_counts(capsys, tmp_path, root):
    """Qwen3-30B-A3B from its config.json: 30.5B total, 3.3B active (the model card), not dense."""
    shutil.copy(root / "tests" / "data" / "hf_configs" / "qwen3-30b-a3b.json", tmp_path / "config.json")
    (tmp_path / "serve.yaml").write_text(
        "name: qwen3-30b-a3b-serve\nmodel: {hf_config: config.json}\n"
        "hardware: {preset: h100-sxm, node: {devices_per_node: 1}}\nplan: {dp: 1, tp: 1, pp: 1, ep: 1}\n"
        "workload:\n  kind: serving\n  arrival: {process: poisson, rate_per_s: 2, n_requests: 200}\n"
        "  prompt_tokens: {dist: fixed, value: 256}\n  output_tokens: {dist: fixed, value: 64}\n")
    checked = _json(capsys, ["check", str(tmp_path / "serve.yaml")])
    assert checked["total_params"] == pytest.approx(30.5e9, rel=0.02)
    assert checked["active_params"] == pytest.approx(3.3e9, rel=0.03)
    s = _json(capsys, ["simulate", str(tmp_path / "serve.yaml")])
    assert s["output_tokens_per_s"] > 0


def test_the_readme_swaps_a_templates_model_and_hardware_and_quotes_the_run(capsys, root):
    """'Your model on your hardware': the shipped online template with Qwen3-30B-A3B on H200s serves
    everything in BF16 (a bare preset name), and the README's figures are this run's."""
    from moesim.formatting import fmt_number

    s = _json(capsys, ["simulate", "mixtral-8x7b-h100-serve-online", "--set", "model=qwen3-30b-a3b",
                       "--set", "hardware=h200"])
    assert s["model"] == "Qwen3-30B-A3B" and s["compute_dtype"] == "bf16" and s["fits"] and not s["overloaded"]
    text = " ".join((root / "README.md").read_text().split())
    quoted = (f"TTFT p99 {fmt_number(s['ttft_p99_s'], 's', with_unit=False)} s, TPOT p99 "
              f"{fmt_number(s['tpot_p99_s'], 's', with_unit=False)} s, ${s['usd_per_mtok']:.3f} per million output tokens")
    assert quoted in text
