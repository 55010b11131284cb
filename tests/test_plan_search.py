"""``moesim plan``: branch and bound against brute force, what is never ranked, best.yaml, resume, bad input.

Serving tests play a small MoE model (Mixtral's shape, few layers) with short requests on one or two
devices, so a capacity search takes about a second; the brute-force outcome (every unit evaluated,
no pruning) is computed once per module and shared.
"""

from __future__ import annotations

import json
import math

import pytest
import yaml

from moesim.capacity import max_goodput, parse_slo
from moesim.cli import main
from moesim.errors import InputError
from moesim.loader import load_scenario
from moesim.plan_bounds import ServingBounds, mean_output_tokens, rate_to_objective, training_bound
from moesim.plan_options import parse_int_list, prepare
from moesim.plan_report import all_rows, pareto_points
from moesim.plan_runs import capacity_runner, saturation_runner
from moesim.plan_search import EXACT, NEEDED_SLACK, SAT_SLACK, search

SERVE = {
    "name": "tiny-serve",
    "model": {"preset": "mixtral-8x7b", "dtype": "fp8", "n_layers": 4},
    "hardware": {"preset": "h100-sxm", "node": {"devices_per_node": 2}},
    "plan": {"dp": 2, "tp": 1, "pp": 1, "ep": 1},
    "workload": {"kind": "serving", "arrival": {"process": "poisson", "rate_per_s": 50.0, "n_requests": 200},
                 "prompt_tokens": {"dist": "uniform", "low": 16, "high": 48},
                 "output_tokens": {"dist": "uniform", "low": 2, "high": 6},
                 "max_batch_seqs": 8, "max_batch_tokens": 512},
    "routing": {"distribution": "uniform", "overflow": "dropless"},
}
SLO = "ttft_p99=0.5,tpot_p99=0.05"
SPACE = {"devices": "1,2", "tp": "1", "pp": "1", "batch": "4,8", "slo": SLO}


def _write(path, data) -> str:
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return str(path)


@pytest.fixture(scope="module")
def serve_yaml(tmp_path_factory) -> str:
    return _write(tmp_path_factory.mktemp("plan") / "tiny-serve.yaml", SERVE)


def _run(scenario: str, exhaustive: bool = False, **kw):
    opts = {**SPACE, **kw}
    space, obj, slo = prepare(scenario, devices=opts["devices"], tp=opts["tp"], pp=opts["pp"], batch=opts["batch"],
                              slo=opts["slo"], objective=opts.get("objective"))
    return search(space, obj, slo=slo, workers=1, exhaustive=exhaustive, store_dir=kw.get("store_dir"),
                  resume=kw.get("resume", False))


@pytest.fixture(scope="module")
def brute(serve_yaml):
    return _run(serve_yaml, exhaustive=True)


@pytest.fixture(scope="module")
def pruned(serve_yaml):
    return _run(serve_yaml)


def _identity(pair):
    c, u = pair
    return c.hardware, c.devices, c.plan_text, u.value


# ------------------------------------------------------------------------------ branch and bound
def test_search_finds_the_brute_force_best(brute, pruned):
    assert brute.best is not None and pruned.best is not None
    assert sum(brute.progress.evaluated.values()) == sum(1 for c in brute.space.candidates if c.status == "evaluated")
    assert all(u.level == EXACT for u in brute.units)  # brute force: every unit evaluated
    assert _identity(pruned.best) == _identity(brute.best)
    # and it simulated less to get there
    assert sum(1 for u in pruned.units if u.level == EXACT) < len(brute.units)
    assert sum(pruned.progress.pruned.values()) > 0


def test_pruning_never_removes_the_best_and_bounds_are_optimistic(brute, pruned):
    best_unit = brute.best[1].key
    assert next(u for u in pruned.units if u.key == best_unit).value == brute.best[1].value
    obj = brute.objective
    bounds = ServingBounds()
    for u in brute.units:  # both bounds, analytic and from the saturation run, hold on every unit
        if u.value is None:
            continue
        analytic = rate_to_objective(obj, bounds.tokens_per_s_per_device(u.scenario), u.scenario)
        assert not obj.better(u.value, analytic), (u.label, u.value, analytic)
        sat = saturation_runner(u.scenario, 0).summary["sat_output_tokens_per_s_per_device"]
        assert not obj.better(u.value, rate_to_objective(obj, sat * SAT_SLACK, u.scenario)), (u.label, sat)
    # every unit the pruned search dropped is worse than its best (checked against brute force)
    by_key = {u.key: u for u in brute.units}
    for u in pruned.units:
        if u.status == "pruned" and by_key[u.key].value is not None:
            assert not obj.better(by_key[u.key].value, pruned.best[1].value)


def test_capacity_search_stops_only_where_the_plan_cannot_win(brute):
    """The early stop of a capacity search (``needed-rate``): never for a plan that beats the best."""
    best = brute.best[1]
    need = best.row["tokens_per_s_per_device_at_capacity"]
    kw = {"tokens_per_request": mean_output_tokens(brute.space.units), "slack": NEEDED_SLACK}
    stopped = 0
    for u in brute.units:
        easier = u is best  # the best itself, asked to beat 80 % of its own throughput, must finish
        row = capacity_runner(u.scenario, 0, SLO, needed_tok_s=need * (0.8 if easier else 1.0), **kw).summary
        if row["hopeless"]:
            stopped += 1
            assert not easier and not brute.objective.better(u.value, best.value), u.label
        else:
            assert row["usd_per_mtok_at_capacity"] == pytest.approx(u.value, rel=1e-12)
    assert stopped > 0


def test_ranked_rows_are_sorted_and_scale_with_replicas(brute):
    rows = [r for r in all_rows(brute) if r["rank"] is not None]
    values = [r["objective"] for r in rows]
    assert values == sorted(values)  # usd_per_mtok: smaller first
    per_replica = {}
    for r in rows:
        shape = r["plan"].split(" ", 1)[1]
        per_replica.setdefault(shape, set()).add(round(r["capacity_req_s"] / r["plan.dp"], 9))
    assert all(len(v) == 1 for v in per_replica.values())  # capacity = replicas x one replica's


def test_one_replica_is_judged_for_the_replicas_it_stands_for(brute):
    """A capacity search on one replica of a plan of eight applies the eight's overload test: never a
    higher capacity than judged alone; the run's key tells the two apart (saturation runs need not)."""
    from moesim.plan_runs import run_key
    from moesim.plan_search import smallest_dp

    u = brute.best[1]
    alone = capacity_runner(u.scenario, 0, SLO).summary
    eight = capacity_runner(u.scenario, 0, SLO, plan_dp=8 * u.scenario.plan.dp).summary
    assert alone["replicas_judged"] == u.scenario.plan.dp and eight["replicas_judged"] == 8 * u.scenario.plan.dp
    assert 0 < eight["max_goodput_req_s"] <= alone["max_goodput_req_s"]
    assert smallest_dp(u) == min(c.values["plan.dp"] for c in u.candidates)
    assert run_key(u.raw, EXACT, 0, SLO, 1) != run_key(u.raw, EXACT, 0, SLO, 8)
    assert run_key(u.raw, 1, 0, SLO, 1) == run_key(u.raw, 1, 0, SLO, 8)


def test_the_capacity_search_starts_from_the_saturation_stage_run(brute):
    """The saturation stage plays the run the capacity search starts from; handed over, it gives the
    search's own result bit for bit (the pruned search hands it over, brute force does not: their
    best agree exactly in test_pruning_never_removes_the_best_and_bounds_are_optimistic)."""
    from moesim.plan_runs import saturation_of

    u = brute.best[1]
    sat = saturation_runner(u.scenario, 0).summary
    handed = capacity_runner(u.scenario, 0, SLO, saturation=saturation_of(sat)).summary
    own = capacity_runner(u.scenario, 0, SLO).summary
    assert own["saturation_req_s"] * own["replicas_played"] == sat["sat_req_s"] > 0
    for key in ("max_goodput_req_s", "saturation_req_s", "capacity_probes", "usd_per_mtok_at_capacity"):
        assert handed[key] == own[key], key
    assert saturation_of({"sat_output_tokens_per_s_per_device": 1.0}) is None  # a row from before the handover


def test_a_needed_rate_above_the_first_guess_plays_no_gate_probe(brute):
    """Given the saturation run, a capacity search whose first probe at load is below the rate needed
    to beat the best is its own gate: it prunes on that probe, with no probe at the needed rate."""
    from moesim.plan_runs import saturation_of

    u = brute.best[1]
    sat = saturation_of(saturation_runner(u.scenario, 0).summary)
    kw = {"tokens_per_request": mean_output_tokens(brute.space.units), "slack": NEEDED_SLACK,
          "needed_tok_s": 10 * u.row["tokens_per_s_per_device_at_capacity"]}
    gated = capacity_runner(u.scenario, 0, SLO, **kw).summary
    own = capacity_runner(u.scenario, 0, SLO, saturation=sat, **kw).summary
    assert gated["hopeless"] and own["hopeless"]
    assert gated["failed_at_req_s"] == pytest.approx(gated["needed_req_s"])  # the gate probe, at the needed rate
    assert own["failed_at_req_s"] < 0.5 * own["needed_req_s"]  # the search's own probe near saturation


@pytest.mark.parametrize("maximise", [True, False])
def test_frontier_matches_its_definition_on_points_with_ties(maximise):
    """The sort-and-sweep frontier flags exactly the points no other (different) point is at least
    as good as on both axes."""
    import random

    from moesim.plan_report import mark_frontier

    sign = 1 if maximise else -1
    for trial in range(50):
        rnd = random.Random(trial)
        pts = [{"x": float(rnd.randint(0, 5)), "y": float(rnd.randint(0, 5))} for _ in range(rnd.randint(1, 30))]
        mark_frontier(pts, maximise)
        for p in pts:
            dominated = any(sign * q["x"] >= sign * p["x"] and sign * q["y"] >= sign * p["y"]
                            and (q["x"], q["y"]) != (p["x"], p["y"]) for q in pts)
            assert p["frontier"] is not dominated


def test_pareto_frontier_is_not_dominated(brute):
    pts = pareto_points(brute)
    front = [p for p in pts if p["frontier"]]
    assert front
    for p in front:
        assert not any(q["x"] > p["x"] and q["y"] > p["y"] for q in pts)
    for p in pts:
        if not p["frontier"]:
            assert any(q["x"] >= p["x"] and q["y"] >= p["y"] for q in front)


# ------------------------------------------------------------------------------ never ranked
def test_plans_that_break_the_slo_or_do_not_fit_are_never_ranked(tmp_path):
    big = dict(SERVE, model={"preset": "mixtral-8x7b", "n_layers": 16},  # bf16: 47 GB of weights
               hardware={"preset": "a100-40gb", "node": {"devices_per_node": 2}})
    path = _write(tmp_path / "big.yaml", big)
    # TTFT mean 35 ms: tp2 (27 ms at low load) holds, pp2 (47 ms: every layer in sequence) never does
    out = _run(path, exhaustive=True, devices="2", tp="1,2", pp="1,2", batch="8", slo="ttft_mean=0.035")
    status = {c.plan_text: c.reason if c.status == "pruned" else c.reason for c in out.space.candidates}
    assert "no-fit" in status.values() and "slo-fails" in status.values()
    ranked = [r for r in all_rows(out) if r["rank"] is not None]
    assert ranked
    for r in ranked:
        s = load_scenario(path, [f"{k}={v}" for k, v in r.items() if k.startswith(("plan.", "workload."))]
                          + ["hardware.node.devices_per_node=2"])
        from moesim.memory import memory_report

        assert memory_report(s).fits
        assert r["capacity_req_s"] > 0 and math.isfinite(r["objective"])
    bad = {c.index for c in out.space.candidates if c.reason in ("no-fit", "slo-fails", "invalid")}
    assert bad and not bad & {c.index for c, _ in out.ranked()}


# ------------------------------------------------------------------------------ the command
def test_cli_writes_best_yaml_that_loads_and_simulates(serve_yaml, tmp_path, capsys, brute):
    out = tmp_path / "out"
    rc = main(["plan", serve_yaml, "--devices", "1,2", "--tp", "1", "--pp", "1", "--max-batch-seqs", "4,8",
               "--slo", SLO, "--workers", "1", "--out", str(out), "--json"])
    assert rc == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["candidates"] == doc["pruned_total"] + doc["simulated"]
    for name in ("plans.csv", "plans.json", "pareto.png", "best.yaml", "results.jsonl"):
        assert (out / name).exists(), name
    best = doc["best"]
    s = load_scenario(out / "best.yaml")
    assert (s.plan.dp, s.plan.tp, s.plan.pp, s.plan.ep) == (best["plan.dp"], best["plan.tp"], best["plan.pp"], best["plan.ep"])
    assert s.hardware.n_devices == best["devices"] and s.workload.max_batch_seqs == best["workload.max_batch_seqs"]
    assert s.workload.arrival.rate_per_s == pytest.approx(best["capacity_req_s"], rel=1e-4)
    # the best plan was re-checked whole: `moesim simulate best.yaml --slo` finds the same capacity
    assert best["checked_on_devices"] == best["devices"]
    assert max_goodput(s, parse_slo(SLO), seed=0).max_goodput_req_s == pytest.approx(best["capacity_req_s"], rel=1e-9)
    from moesim.simulate import simulate

    small = s.model_copy(update={"workload": s.workload.model_copy(update={
        "arrival": s.workload.arrival.model_copy(update={"n_requests": 50})})})
    assert simulate(small).summary["served_requests"] == 50
    assert _identity(brute.best)[1:3] == (best["devices"], best["plan"])  # the same plan as brute force


def test_resume_reuses_finished_runs(serve_yaml, tmp_path):
    first = _run(serve_yaml, store_dir=tmp_path / "runs")
    ran = sum(first.progress.runs.values())
    assert ran > 0 and first.progress.reused == 0
    again = _run(serve_yaml, store_dir=tmp_path / "runs", resume=True)
    assert sum(again.progress.runs.values()) == 0 and again.progress.reused == ran
    assert _identity(again.best) == _identity(first.best)
    with pytest.raises(InputError, match="--resume"):  # a folder with runs needs --resume or --overwrite
        _run(serve_yaml, store_dir=tmp_path / "runs")


def test_training_search_matches_brute_force(raw, tmp_path):
    path = _write(tmp_path / "train.yaml", raw)  # Mixtral shape, 4 layers, 8 H100, 16 x 1024 tokens
    space_args = dict(devices="8", tp="1", pp="1,2")
    results = []
    for exhaustive in (True, False):
        space, obj, _ = prepare(path, objective="step_time_s", exhaustive=exhaustive, **space_args)
        results.append(search(space, obj, workers=1, exhaustive=exhaustive))
    brute, pruned = results
    assert brute.best is not None
    assert _identity(pruned.best) == _identity(brute.best)
    assert sum(pruned.progress.runs.values()) < sum(brute.progress.runs.values())
    for u in brute.units:  # the FLOPs bound is a lower bound on every simulated step
        if u.value is not None:
            assert training_bound(u.scenario, obj) <= u.value
    assert "dominated" in pruned.progress.pruned and "dominated" not in brute.progress.pruned


# ------------------------------------------------------------------------------ bad input
@pytest.mark.parametrize("args, option", [
    (["--devices", "8..60"], "--devices"),
    (["--devices", "0"], "--devices"),
    (["--devices", "eight"], "--devices"),
    (["--hardware", "h900"], "--hardware"),
    (["--slo", "ttft_p42=1"], "--slo"),
    (["--slo", "ttft_p99=-1"], "--slo"),
    (["--objective", "mfu"], "--objective"),
    (["--workers", "0"], "--workers"),
    (["--top", "0"], "--top"),
    (["--resume"], "--resume"),
    (["--tp", "3"], "--tp"),
    (["--max-batch-seqs", "many"], "--max-batch-seqs"),
    (["--dask", "somewhere"], "--dask"),
])
def test_bad_serving_options_fail_in_one_line(serve_yaml, args, option, capsys):
    argv = ["plan", serve_yaml, "--slo", SLO, *args] if "--slo" not in args else ["plan", serve_yaml, *args]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and option in err and "Traceback" not in err


def test_missing_slo_and_training_only_options_fail_in_one_line(serve_yaml, raw, tmp_path, capsys):
    train = _write(tmp_path / "train.yaml", raw)
    for argv, option in ((["plan", serve_yaml], "--slo"), (["plan", train, "--slo", SLO], "--slo"),
                         (["plan", train, "--objective", "ttft_p99_s"], "--objective"),
                         (["plan", train, "--max-batch-seqs", "64"], "--max-batch-seqs")):
        assert main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and option in err, err


def test_device_lists_and_ranges():
    assert parse_int_list("8..64", "--devices") == [8, 16, 32, 64]
    assert parse_int_list("16, 8", "--devices") == [8, 16]
    with pytest.raises(InputError, match="--devices"):
        parse_int_list("64..8", "--devices")
    # the same list rules as sweep's: no repeats, no empty values; a range has both ends
    for text, words in (("16,8,8", "a value is repeated"), ("8,,16", "an empty value between commas"),
                        ("8..", "a range is LO..HI with both ends"), ("..8", "both ends"),
                        ("8...16", "both ends"), ("", "give values")):
        with pytest.raises(InputError, match=words):
            parse_int_list(text, "--devices")


def test_pareto_labels_of_nearby_frontier_plans_do_not_overlap(tmp_path, monkeypatch):
    """Frontier plans a few pixels apart get labels moved clear of each other (the disaggregated
    README figure had two printed on top of one another)."""
    from moesim import plan_report

    kept = {}
    real = plan_report.separate_labels

    def spy(fig, notes, tries=8):
        real(fig, notes, tries)
        renderer = fig.canvas.get_renderer()
        kept["boxes"] = [n.get_window_extent(renderer) for n in notes]

    monkeypatch.setattr(plan_report, "separate_labels", spy)
    long = "h100-sxm P1x[tp1 pp1 ep2 batch256] D1x[tp1 pp1 ep4 batch256]"
    pts = [{"x": 60.0 + i * 0.4, "y": 6000.0 - i * 3.0, "label": f"{long} #{i}", "frontier": True, "best": i == 0}
           for i in range(4)] + [{"x": 90.0, "y": 5800.0, "label": "far", "frontier": True, "best": False}]
    paths = plan_report.draw_pareto(pts, "t", "x", "y", tmp_path / "p")
    assert [p.suffix for p in paths] == [".png"] and paths[0].stat().st_size > 0
    boxes = kept["boxes"]
    assert len(boxes) == 5
    assert not any(a.overlaps(b) for i, a in enumerate(boxes) for b in boxes[i + 1:])


@pytest.mark.parametrize("replay_holds", [True, False])
def test_a_gate_probe_failing_only_the_plan_wide_test_is_replayed_before_it_prunes(serve_yaml, monkeypatch,
                                                                                  replay_holds):
    """The early stop prunes a shape for good, so a gate probe that fails only the plan-wide overload
    test (the replica's own verdict holds) is played again with twice the requests; the shape is
    pruned only when that one fails too."""
    from types import SimpleNamespace

    import moesim.capacity as capacity_mod

    calls = []

    def probe(rate, n, holds):
        window = SimpleNamespace(output_tokens_per_s=rate * 4.0, e2e_p90_s=1.0)
        return SimpleNamespace(rate_req_s=rate, n_requests=n, holds=holds, window=window, reason="overloaded: test",
                               result=SimpleNamespace(tables={"requests": {}}), latencies={})

    def fake_measure(s, rate, slo, seed=0, n_requests=None, e2e_p90_s=None, replicas=1):
        calls.append((n_requests, replicas))
        return probe(rate, n_requests, holds=replay_holds and len(calls) > 1)

    def fake_goodput(s, slo, seed=0, on_probe=None, replicas=1, **kw):
        best = probe(1.0, 1000, True)
        return SimpleNamespace(max_goodput_req_s=1.0, probe=best, probes=(best,), limit="", saturation_req_s=2.0)

    monkeypatch.setattr(capacity_mod, "measure", fake_measure)
    monkeypatch.setattr(capacity_mod, "verdict", lambda req, slo, replicas=1, it=None: (None, {}, []))  # the replica holds
    monkeypatch.setattr(capacity_mod, "max_goodput", fake_goodput)
    s = load_scenario(serve_yaml)
    row = capacity_runner(s, 0, SLO, needed_tok_s=1.0, tokens_per_request=4.0, plan_dp=8).summary
    first_n = calls[0][0]
    assert calls[1] == (2 * first_n, 8) and all(r == 8 for _, r in calls)  # judged for the plan's 8 replicas
    assert row["hopeless"] is (not replay_holds)


def test_zero_stage_variants_a_plan_rule_forbids_are_invalid_not_failed(tmp_path, capsys):
    """The training search tries ZeRO stages 0-3 under each layout; a base plan whose setting holds only at
    ZeRO-3 (transformers' per-Linear ZeRO-3 fetches, plan.zero3_fetch linear) makes the other stages break
    the plan's own rules. They are pruned as invalid with that rule's message, before any run (they
    once reached the simulation and were reported as failed runs)."""
    import csv

    base = "moesim/data/validation/qwen1.5-moe-a2.7b-sft-8xa800-deepspeed.yaml"
    assert main(["plan", base, "-s", "plan.moe_impl=hf_loop", "-s", "plan.zero_stage=3", "-s", "plan.zero3_fetch=linear",
                 "--devices", "8", "--workers", "1", "-o", str(tmp_path)]) == 0
    capsys.readouterr()
    rows = list(csv.DictReader(open(tmp_path / "plans.csv", encoding="utf-8")))
    assert not [r for r in rows if r["status"] == "failed"]
    other = [r for r in rows if r["plan.zero_stage"] != "3"]
    assert other and all(r["status"] == "invalid" for r in other)  # by the zero3_fetch rule or the layout's own
    assert sum(r["detail"].startswith("plan.zero3_fetch: 'linear'") for r in other) > len(other) / 2
    assert any(r["status"] == "ranked" for r in rows)


def test_device_count_the_global_batch_cannot_split_names_the_batch():
    """3 devices split by tp 1 x pp 1, but a global batch of 8 sequences does not divide over dp 3: the
    error names the batch, not only tp x pp."""
    with pytest.raises(InputError, match=r"--devices 3: .*must divide workload.global_batch_seqs \(8\)"):
        prepare("mixtral-8x7b-qlora-1xa100", devices="3")


def test_a_hardware_override_beside_hardware_presets_is_refused_not_lost():
    """--hardware plans on bare presets: a --set price for the scenario's device would silently price every plan at
    the presets' list prices (a lead's $2.00 became $2.99); it is refused, naming the override and the way out."""
    with pytest.raises(InputError, match=r"^--set hardware.device.usd_per_hour: --hardware h100-sxm,h200 plans on "
                                         r"those presets as they are.*without --hardware"):
        prepare("mixtral-8x7b-h100-serve-online", hardware="h100-sxm,h200", slo="ttft_p99=2",
                sets=["hardware.device.usd_per_hour=2.0"])
    space, _, _ = prepare("mixtral-8x7b-h100-serve-online", slo="ttft_p99=2", devices="8", tp="1", pp="1",
                          batch="256", sets=["hardware.device.usd_per_hour=2.0"])  # one hardware: it is kept
    assert space.raw["hardware"]["device"]["usd_per_hour"] == 2.0


def test_a_device_count_no_plan_splits_is_named_not_dropped_silently(capsys):
    space, _, _ = prepare("mixtral-8x7b-qlora-1xa100", devices="1,3")
    assert space.no_layout == [3] and "workload.global_batch_seqs (8)" in space.no_layout_why
    assert {c.devices for c in space.candidates} == {1}
    main(["plan", "mixtral-8x7b-qlora-1xa100", "--devices", "1,3"])
    assert "no plan splits 3 devices" in " ".join(capsys.readouterr().out.split())


def test_a_tight_best_training_plan_is_written_with_expandable_segments():
    from moesim.fit_advice import fit_explanation
    from moesim.loader import read_scenario, scenario_from_dict
    from moesim.plan_report import _tight_fixed_by_expandable
    from moesim.shipped import resolve_scenario

    tight = ["plan.dp=4", "plan.pp=2", "plan.ep=4", "plan.microbatches=16", "plan.schedule=dualpipe"]
    raw, base, s = read_scenario(resolve_scenario("mixtral-8x7b-lora-8xh100"), tight)
    assert s.plan.allocator == "caching" and "expandable_segments" in fit_explanation(s)[1]  # fits, but tight
    assert _tight_fixed_by_expandable(raw, base)
    raw["plan"]["allocator"] = "expandable_segments"
    assert fit_explanation(scenario_from_dict(raw, base))[1] == ""  # what best.yaml then says: no advice
    assert not _tight_fixed_by_expandable(read_scenario(resolve_scenario("mixtral-8x7b-lora-8xh100"))[0], base)
