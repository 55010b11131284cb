"""``moesim plan`` on a disaggregated scenario: the split arithmetic, branch and bound against brute
force, best.yaml, resume and bad input.

The scenario is a small MoE model (Mixtral's shape, 4 layers) with short requests on nodes of one
H100, so each pool plan's capacity search takes about half a second; the brute-force outcome (every
pool plan evaluated) is computed once per module and shared.
"""

from __future__ import annotations

import json
import math

import pytest
import yaml

from moesim.capacity import max_goodput, measure, parse_slo
from moesim.cli import main
from moesim.loader import load_scenario
from moesim.plan_disagg import best_split, harmonic_rate, objective_value
from moesim.plan_options import prepare
from moesim.plan_report import all_rows, counts
from moesim.plan_search import search

DISAGG = {
    "name": "tiny-disagg",
    "model": {"preset": "mixtral-8x7b", "dtype": "fp8", "n_layers": 4},
    "hardware": {"preset": "h100-sxm", "node": {"devices_per_node": 1}, "cluster": {"nodes": 2}},
    "workload": {"kind": "serving", "arrival": {"process": "poisson", "rate_per_s": 50.0, "n_requests": 200},
                 "prompt_tokens": {"dist": "uniform", "low": 64, "high": 256},
                 "output_tokens": {"dist": "uniform", "low": 4, "high": 12},
                 "max_batch_seqs": 8, "max_batch_tokens": 1024,
                 "disaggregation": {"prefill": {"plan": {"dp": 1}}, "decode": {"plan": {"dp": 1}}}},
    "routing": {"distribution": "uniform", "overflow": "dropless"},
}
SLO = "ttft_p99=0.1,tpot_p99=0.01"
SPACE = {"devices": "2,3,4", "tp": "1", "pp": "1", "batch": "4,16", "slo": SLO}


def _write(path, data) -> str:
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return str(path)


@pytest.fixture(scope="module")
def disagg_yaml(tmp_path_factory) -> str:
    return _write(tmp_path_factory.mktemp("plan-disagg") / "tiny-disagg.yaml", DISAGG)


def _run(scenario: str, exhaustive: bool = False, verify: int = 0, **kw):
    opts = {**SPACE, **kw}
    space, obj, slo = prepare(scenario, devices=opts["devices"], tp=opts["tp"], pp=opts["pp"], batch=opts["batch"],
                              slo=opts["slo"], objective=opts.get("objective"))
    return search(space, obj, slo=slo, workers=1, exhaustive=exhaustive, verify=verify,
                  store_dir=kw.get("store_dir"), resume=kw.get("resume", False))


@pytest.fixture(scope="module")
def brute(disagg_yaml):
    return _run(disagg_yaml, exhaustive=True)


def _identity(x):
    return x.hardware, x.devices, x.prefill.plan_text, x.decode.plan_text, x.split, x.estimate


# ------------------------------------------------------------------------------ the split
def test_best_split_balances_the_pools():
    # prefill 3 req/s per device, decode 1: on 8 one-device grains 2 prefill + 6 decode serve 6 req/s
    s = best_split(8, 1, 1, 3.0, 1.0)
    assert (s.prefill_grains, s.decode_grains, s.capacity_req_s) == (2, 6, 6.0)
    # grains of 8 (prefill) and 16 (decode) devices on 64: 2 x 8 + 3 x 16 (min(2*8*5, 3*16*2) = 80 req/s)
    s = best_split(64, 8, 16, 5.0, 2.0)
    assert (s.prefill_grains, s.decode_grains, s.capacity_req_s) == (2, 3, 80.0)
    # only 2 x 2 + 2 x 3 uses 10 devices exactly
    s = best_split(10, 2, 3, 1.0, 1.0)
    assert (s.prefill_grains, s.decode_grains) == (2, 2)
    assert best_split(5, 2, 2, 1.0, 1.0) is None  # odd devices, even grains
    assert best_split(1, 1, 1, 1.0, 1.0) is None  # no room for one grain of each


def test_split_equals_brute_force_and_the_continuous_bound():
    for n in range(2, 40):
        for gp, gd in ((1, 1), (2, 3), (4, 2), (8, 8)):
            for rp, rd in ((3.0, 1.0), (0.7, 2.5), (1.0, 1.0)):
                splits = [min(a * gp * rp, b * gd * rd) for a in range(1, n + 1) for b in range(1, n + 1)
                          if a * gp + b * gd == n]
                s = best_split(n, gp, gd, rp, rd)
                assert (s is None) == (not splits)
                if s is not None:
                    assert s.capacity_req_s == pytest.approx(max(splits))
                    assert s.capacity_req_s / n <= harmonic_rate(rp, rd) * (1 + 1e-12)
    assert harmonic_rate(3.0, 1.0) == pytest.approx(0.75)  # x 3 = (1 - x) 1 at x = 1/4
    assert objective_value("tokens_per_s_per_device", 2.0, 1e-3, 10.0) == 20.0
    assert objective_value("usd_per_mtok", 2.0, 1e-3, 10.0) == pytest.approx(1e-3 / 20.0 * 1e6)


# ------------------------------------------------------------------------------ branch and bound
def test_search_finds_the_brute_force_best(disagg_yaml, brute):
    pruned = _run(disagg_yaml)
    assert brute.best is not None and pruned.best is not None
    assert all(c.status == "done" for c in brute.space.pools)  # brute force: every pool plan evaluated
    assert _identity(pruned.best) == _identity(brute.best)
    assert pruned.progress.runs["capacity"] < brute.progress.runs["capacity"]
    assert sum(pruned.progress.pruned.values()) > 0
    # every pool plan the search dropped pairs with nothing better than its best
    for x in brute.systems:
        if pruned.space.pools[x.prefill.index].status == "pruned" or pruned.space.pools[x.decode.index].status == "pruned":
            assert not brute.objective.better(x.estimate, pruned.best.estimate), x.label
    for c in brute.space.pools:  # the analytic bounds are optimistic
        assert c.rate_per_device <= c.bound, c.label
    n = counts(brute)
    assert n["candidates"] == n["pruned_total"] + n["simulated"] == len(brute.systems)


def test_rows_show_each_pool_and_the_split(brute):
    rows = all_rows(brute)
    whole = [r for r in rows if r["kind"] == "whole"]
    assert [r["objective"] for r in whole] == sorted(r["objective"] for r in whole)  # $/Mtok: smaller first
    for r in whole:
        assert r["prefill_devices"] + r["decode_devices"] == r["devices"]
        assert r["prefill.plan.dp"] * r["prefill.plan.tp"] * r["prefill.plan.pp"] == r["prefill_devices"]
        cap = min(r["prefill_devices"] * r["prefill_req_s_per_device"], r["decode_devices"] * r["decode_req_s_per_device"])
        assert r["capacity_estimate_req_s"] == pytest.approx(cap)
    pools = [r for r in rows if r["kind"] in ("prefill pool", "decode pool")]
    assert len(pools) == len(brute.space.pools) and all(r["req_s_per_device"] > 0 for r in pools)


def test_pareto_points_of_disaggregated_plans(brute):
    """One point per ranked whole plan, from its re-check when it ran, else from its estimate; the
    frontier is not dominated and the best plan is starred."""
    from moesim.plan_disagg_report import pareto_points

    pts = pareto_points(brute)
    ranked = brute.ranked()
    assert len(pts) == len(ranked) and sum(p["best"] for p in pts) == 1
    x = ranked[-1]  # an estimate's point: the split's rate x mean output tokens over the devices
    p = next(p for p in pts if p["label"] == x.label)
    assert not x.checked  # the brute force re-checks nothing (verify 0)
    assert p["y"] == pytest.approx(x.split.capacity_req_s * brute.space.output_tokens_per_request / x.devices)
    assert p["x"] == pytest.approx(1.0 / x.decode.row["tpot_mean_s"])
    front = [p for p in pts if p["frontier"]]
    assert front and all(not any(q["x"] > p["x"] and q["y"] > p["y"] for q in pts) for p in front)


# ------------------------------------------------------------------------------ the command
def test_cli_best_yaml_reloads_and_its_verified_capacity_holds(disagg_yaml, tmp_path, capsys, brute):
    out = tmp_path / "out"
    argv = ["plan", disagg_yaml, "--devices", "2,3,4", "--tp", "1", "--pp", "1", "--max-batch-seqs", "4,16",
            "--slo", SLO, "--workers", "1", "--out", str(out), "--json"]
    assert main(argv) == 0
    doc = json.loads(capsys.readouterr().out)
    best = doc["best"]
    assert doc["candidates"] == doc["pruned_total"] + doc["simulated"]
    assert best["checked_on_devices"] == best["devices"] and best["capacity_whole_req_s"] > 0
    assert math.isfinite(best["estimate_objective"]) and math.isfinite(best["whole_plan_objective"])
    assert best["capacity_estimate_req_s"] == pytest.approx(best["capacity_whole_req_s"], rel=0.25)  # the gap shown
    for name in ("plans.csv", "plans.json", "pareto.png", "best.yaml", "results.jsonl"):
        assert (out / name).exists(), name
    s = load_scenario(out / "best.yaml")
    d = s.workload.disaggregation
    assert s.hardware.n_devices == best["devices"]
    assert (d.prefill.plan.dp, d.prefill.plan.ep, d.prefill.max_batch_seqs) == (
        best["prefill.plan.dp"], best["prefill.plan.ep"], best["prefill.max_batch_seqs"])
    assert (d.decode.plan.dp, d.decode.plan.ep, d.decode.max_batch_seqs) == (
        best["decode.plan.dp"], best["decode.plan.ep"], best["decode.max_batch_seqs"])
    assert s.workload.arrival.rate_per_s == pytest.approx(best["capacity_whole_req_s"], rel=1e-4)
    slo = parse_slo(SLO)
    assert measure(s, s.workload.arrival.rate_per_s, slo, seed=0).holds  # the SLO holds at the capacity written
    assert max_goodput(s, slo, seed=0).max_goodput_req_s == pytest.approx(best["capacity_whole_req_s"], rel=1e-9)
    # resume: every run reused, the same best
    assert main([*argv, "--resume"]) == 0
    again = json.loads(capsys.readouterr().out)
    assert again["runs"] == {} and again["runs_reused"] > 0 and again["best"]["plan"] == best["plan"]
    assert _identity(brute.best)[:2] == (best["hardware"], best["devices"])


# ------------------------------------------------------------------------------ bad input
@pytest.mark.parametrize("args, needle", [
    (["--devices", "1"], "--devices 1"),  # no room for a node per pool
    (["--objective", "ttft_p99_s"], "--objective"),
    (["--slo", "e2e_p99=1"], "--slo e2e_p99"),
])
def test_bad_disaggregated_input_fails_in_one_line(disagg_yaml, args, needle, capsys):
    argv = ["plan", disagg_yaml, "--tp", "1", "--pp", "1", "--max-batch-seqs", "4", "--workers", "1"]
    argv += args if "--slo" in args else ["--slo", SLO, *args]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and needle in err and "Traceback" not in err, err


def test_budget_that_is_not_whole_nodes_fails_in_one_line(tmp_path, capsys):
    two = dict(DISAGG, hardware={"preset": "h100-sxm", "node": {"devices_per_node": 2}, "cluster": {"nodes": 2}})
    two["workload"] = dict(DISAGG["workload"], disaggregation={"prefill": {"plan": {"dp": 2}}, "decode": {"plan": {"dp": 2}}})
    path = _write(tmp_path / "two.yaml", two)
    assert main(["plan", path, "--devices", "6,5", "--slo", SLO, "--tp", "1", "--workers", "1"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--devices 5" in err and "whole nodes of 2" in err, err


def test_cli_table_ends_with_the_best_plans_nearest_measurements(disagg_yaml, capsys):
    """As simulate does under a run (validation_results.trust_lines), for the best whole plan."""
    argv = ["plan", disagg_yaml, "--devices", "2,3,4", "--tp", "1", "--pp", "1", "--max-batch-seqs", "4,16",
            "--slo", SLO, "--workers", "1"]
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert "best plan: nearest published measurements" in text and "INF-" in text.split("best plan:")[1]
