"""``moesim plan`` fixes: the flag at fault named when no layout splits the devices, any pipeline
depth with its uneven layer split written out, exit 0 and a hint when nothing fits, and ties on the
objective broken by memory headroom."""

from __future__ import annotations

import json
import math

import pytest
import yaml

from moesim.cli import main
from moesim.errors import InputError
from moesim.loader import load_scenario
from moesim.plan_options import layout_fault, prepare
from moesim.plan_report import devices_to_fit, nearest_fit, no_fit_hint
from moesim.plan_search import Unit, rank_key, tie_value
from moesim.plan_space import Candidate, Objective, tp_values, uneven_layout

TRAIN = "llama-2-7b-a100-train"  # Llama 2 7B: 32 layers, 32 heads, 8 A100 80GB a node


# ------------------------------------------------------------------ 1. the flag at fault
@pytest.mark.parametrize("options, message", [
    ({"pp": "3"}, r"^--pp 3: no value divides --devices 8 \(tp x pp must divide the device count\); "
                  r"allowed for each count: 8: 1, 2, 4, 8$"),
    ({"tp": "16"}, r"^--tp 16: no value divides --devices 8 within a node of 8 devices"),
    ({"tp": "8", "pp": "2"}, r"^--tp 8 and --pp 2: no tp x pp of these values divides --devices 8"),
    ({"pp": "64"}, r"^--pp 64: more pipeline stages than model.n_layers \(32\); allowed: 1 to 32$"),
    ({"tp": "3"}, r"^--tp 3: must divide model.n_heads \(32\) of .*; allowed: 1, 2, 4, 8, 16, 32$"),
])
def test_the_flag_whose_values_cannot_split_the_devices_is_named(options, message):
    with pytest.raises(InputError, match=message):
        prepare(TRAIN, devices="8", **options)


def test_the_cli_names_pp_in_one_line_not_devices(capsys):
    assert main(["plan", TRAIN, "--pp", "3"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: --pp 3:") and "--devices 8:" not in err


def test_layout_fault_blames_nothing_when_a_layout_exists():
    kw = {"tp_choices": [1, 2, 4, 8], "max_pp": 32}
    assert layout_fault([24], 8, [1], [3], tp_given=True, pp_given=True, **kw) is None
    assert layout_fault([8], 8, None, [1, 2, 4], tp_given=False, pp_given=False, **kw) is None
    assert "--pp 3,5" in layout_fault([8, 16], 8, None, [3, 5], tp_given=False, pp_given=True, **kw)


def test_tp_values_keep_given_degrees_within_a_node():
    assert tp_values(None, 8) == [1, 2, 4, 8]
    assert tp_values([3, 5, 16], 8) == [3, 5]  # not powers of two: any degree the heads take


# ------------------------------------------------------------------ 4. uneven layer splits
@pytest.mark.parametrize("n_layers, schedule, pp, vp, expected", [
    (32, "1f1b", 3, 1, [11, 11, 10]),
    (32, "zb-h1", 4, 1, None),  # even: nothing to write
    (32, "1f1b", 1, 1, None),
    (32, "interleaved", 3, 2, [6, 6, 5, 5, 5, 5]),  # pp x vp model chunks
    (32, "dualpipe", 6, 1, [6, 6, 5, 5, 5, 5]),  # pp model chunks, each held once per direction
    (30, "1f1b", 4, 1, [8, 8, 7, 7]),
])
def test_uneven_layout_is_the_even_split_written_out(n_layers, schedule, pp, vp, expected):
    layout = uneven_layout(n_layers, schedule, pp, vp)
    assert layout == expected
    if layout is not None:
        assert sum(layout) == n_layers and max(layout) - min(layout) == 1


def test_an_explicit_uneven_layout_simulates_as_the_implicit_one():
    from moesim.simulate import simulate

    base = ["plan.pp=3", "plan.tp=1", "plan.dp=8", "plan.schedule=zb-h1", "plan.microbatches=24",
            "workload.global_batch_seqs=192", "hardware.cluster.nodes=3", "plan.zero_stage=1", "plan.recompute=none"]
    implicit = simulate(load_scenario(TRAIN, base)).summary
    explicit = simulate(load_scenario(TRAIN, base + ["plan.pipeline_layout=[11, 11, 10]"])).summary
    assert explicit["step_time_s"] == implicit["step_time_s"]
    assert explicit["peak_memory_gib"] == implicit["peak_memory_gib"]


def test_pp3_plans_write_their_layer_split_to_the_table_and_best_yaml(tmp_path, capsys):
    out = tmp_path / "plan"
    argv = ["plan", TRAIN, "--devices", "24", "--pp", "3", "--tp", "1", "--workers", "1", "--out", str(out)]
    assert main(argv) == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "11/11/10" in text and "best.yaml writes them as plan.pipeline_layout" in text  # the table's note
    best = yaml.safe_load((out / "best.yaml").read_text())
    assert best["plan"]["pp"] == 3 and best["plan"]["pipeline_layout"] == [11, 11, 10]
    assert "32 layers do not split evenly" in best["description"]
    # 3. ties on the objective: the plan with more memory headroom first
    doc = json.loads((out / "plans.json").read_text())
    ranked = [r for r in doc["plans"] if r["rank"] is not None]
    assert all("layers 11/11/10" in r["plan"] for r in ranked if r["plan.schedule"] != "interleaved")
    assert ranked[0]["plan.zero_stage"] == 2  # ZeRO-2 prices ZeRO-1's step with less memory
    for a, b in zip(ranked, ranked[1:]):
        if f"{a['objective']:.6g}" == f"{b['objective']:.6g}":
            assert a["peak_memory_gib"] <= b["peak_memory_gib"]
    assert any(f"{a['objective']:.6g}" == f"{b['objective']:.6g}" and a["peak_memory_gib"] < b["peak_memory_gib"]
               for a, b in zip(ranked, ranked[1:]))  # the case above really arises


# ------------------------------------------------------------------ 3. tie-breaking
def _unit(value: float, headroom: float | None) -> Unit:
    u = Unit(0, "k", {}, None, [], 0.0, headroom_gib=headroom)
    u.value = value
    return u


def test_equal_objectives_rank_the_larger_headroom_first_and_real_differences_still_win():
    obj = Objective("usd_per_mtok", "usd_per_mtok", "min")
    tight, roomy = _unit(0.108083647505837, 0.2), _unit(0.108083647505837 * (1 + 1e-12), 15.0)
    assert rank_key(obj, roomy) < rank_key(obj, tight)
    cheaper = _unit(0.1080, 0.1)
    assert rank_key(obj, cheaper) < rank_key(obj, roomy)
    unknown = _unit(0.108083647505837, None)  # no screened memory: after every known headroom
    assert rank_key(obj, tight) < rank_key(obj, unknown)
    assert tie_value(Objective("mfu", "mfu", "max"), 0.5) == -0.5


# ------------------------------------------------------------------ 2. nothing fits
def test_devices_to_fit_is_the_proportional_lower_bound():
    assert devices_to_fit(8, 262.4, 36.6) == 64
    assert devices_to_fit(8, 30.0, 36.6) == 8
    assert devices_to_fit(8, 38.1, 36.6) == 16


def test_nearest_fit_is_the_smallest_multiple_of_its_device():
    def c(i: int, peak: float | None, cap: float, reason: str = "no-fit") -> Candidate:
        return Candidate(i, "a100-40gb", 8, {}, reason=reason, peak_gib=peak, capacity_gib=cap)

    cands = [c(0, 80.0, 40.0), c(1, 60.0, 40.0), c(2, 10.0, 40.0, "invalid"), c(3, None, 40.0), c(4, 150.0, 80.0)]
    assert nearest_fit(cands).index == 1
    hint = no_fit_hint(cands)
    assert hint["peak_gib"] == 60.0 and hint["devices_at_least"] == 16
    assert "needs 60.0 GiB of the 40.0 GiB usable per device" in hint["text"]
    assert no_fit_hint([c(0, 10.0, 40.0, "invalid")]) is None


@pytest.fixture
def m22_small(tmp_path):
    path = tmp_path / "m22_small.yaml"
    path.write_text(yaml.safe_dump({
        "name": "m22", "model": "mixtral-8x22b", "hardware": {"preset": "a100-40gb", "cluster": {"nodes": 1}},
        "plan": {"dp": 8, "ep": 8, "microbatches": 8},
        "workload": {"kind": "training", "global_batch_seqs": 64, "seq_len": 4096}}))
    return str(path)


def test_a_plan_that_fits_nowhere_exits_0_with_how_short_it_falls(m22_small, capsys):
    assert main(["plan", m22_small]) == 0  # nothing to show is not a failure (README: exit codes)
    out = " ".join(capsys.readouterr().out.split())
    assert "no candidate plan is valid and fits in memory" in out
    assert "the plan nearest to fitting" in out and "GiB usable per device" in out and "--devices 64,128" in out
    assert main(["plan", m22_small, "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    near = doc["nearest_fit"]
    assert doc["best"] is None and doc["no_plan"].startswith("no candidate plan")
    assert near["peak_gib"] > near["capacity_gib"] > 0 and math.isfinite(near["peak_gib"])
    assert near["devices_at_least"] >= 8 * near["peak_gib"] / near["capacity_gib"]


# ------------------------------------------------------------------ --headroom
def test_headroom_keeps_only_training_plans_that_leave_that_much_free():
    loose, _, _ = prepare(TRAIN, devices="24", tp="1", pp="3")
    strict, _, _ = prepare(TRAIN, devices="24", tp="1", pp="3", headroom_gib=55.0)
    kept = [c for c in strict.candidates if c.status == "open"]
    assert kept and all(c.peak_gib <= c.capacity_gib - 55.0 for c in kept)
    assert any(c.status == "open" and c.peak_gib > c.capacity_gib - 55.0 for c in loose.candidates)  # it bites
    assert any("less the --headroom 55 GiB" in c.detail for c in strict.candidates)


@pytest.mark.parametrize("scenario, headroom, message", [
    (TRAIN, -1.0, r"^--headroom -1: must be a finite number of GiB >= 0$"),
    (TRAIN, math.nan, r"^--headroom nan: must be a finite number"),
    ("mixtral-8x7b-h100-serve-online", 2.0, r"^--headroom 2: applies to training scenarios"),
])
def test_bad_headroom_is_refused_naming_it(scenario, headroom, message):
    slo = None if scenario == TRAIN else "ttft_p99=2"
    with pytest.raises(InputError, match=message):
        prepare(scenario, devices="8", slo=slo, headroom_gib=headroom)


def test_the_no_fit_hint_counts_the_headroom():
    c = Candidate(0, "a100-80gb", 8, {}, reason="no-fit", peak_gib=10.0, capacity_gib=76.0, preset="a100-80gb")
    hint = no_fit_hint([c], headroom_gib=70.0)
    assert "less the --headroom 70 GiB" in hint["text"] and "less --headroom (this plan leaves 66.0 GiB free)" in hint["text"]
    assert hint["devices_at_least"] == 16  # 10 GiB over the 6 left: twice the devices at least
    assert "leaves no memory" in no_fit_hint([c], headroom_gib=80.0)["text"]


def test_plan_without_dask_names_its_own_option_and_writes_nothing(tmp_path, monkeypatch, capsys):
    """``plan --dask`` where dask is not installed: the error names --dask (plan has no --executor) and --out is
    left as it was (the folder was created, locked and given empty results before the backend started)."""
    import builtins

    from moesim.cli import main

    real_import = builtins.__import__

    def no_dask(name, *args, **kwargs):
        if name.startswith(("dask", "distributed")):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_dask)
    out = tmp_path / "p"
    assert main(["plan", "mixtral-8x7b-h100-serve", "--devices", "8", "--slo", "ttft_p99=2,tpot_p99=0.2",
                 "--dask", "local", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "--dask needs dask[distributed]" in err and "--executor" not in err
    assert not out.exists()
