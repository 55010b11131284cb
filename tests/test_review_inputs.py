"""What the second newcomer review (2026-12-01) found outside plot and validate, each as a check:
sweep and plan folders are resumed only by their own tool, seeds have one range everywhere, a field
is either fixed or swept, --top and device lists follow one set of rules, --out errors name the
option, a discriminated section names its key, and a profile's device hint names the caller's flag."""

from __future__ import annotations

import pytest

from moesim.cli import main
from moesim.costmodel.profile import check_device, load_default_profile
from moesim.errors import InputError
from moesim.schemas import MAX_SEED, check_seed
from tests.test_front_door import _one_error_line

TRAIN = "switch-base-128-train"


def _error(capsys) -> str:
    return _one_error_line(capsys.readouterr().err)


def test_sweep_and_plan_folders_are_resumed_only_by_their_own_tool(tmp_path, capsys):
    sweep, plan = tmp_path / "sweep", tmp_path / "plan"
    assert main(["sweep", TRAIN, "--experts", "8,16", "--out", str(sweep)]) == 0
    assert main(["plan", TRAIN, "--devices", "8", "--tp", "1", "--pp", "1", "--out", str(plan)]) == 0
    capsys.readouterr()
    rows_before = (sweep / "results.jsonl").read_text()
    assert main(["plan", TRAIN, "--devices", "8", "--tp", "1", "--pp", "1", "--out", str(sweep), "--resume"]) == 2
    assert "holds a sweep (moesim sweep), not a plan search (moesim plan)" in _error(capsys)
    assert (sweep / "results.jsonl").read_text() == rows_before  # nothing appended
    assert main(["sweep", TRAIN, "--experts", "8,16", "--out", str(plan), "--resume"]) == 2
    assert "holds a plan search (moesim plan), not a sweep (moesim sweep)" in _error(capsys)
    other = ["plan", "switch-base-128-serve", "--devices", "8", "--tp", "1", "--pp", "1",
             "--slo", "ttft_p99=2,tpot_p99=0.2", "--out", str(plan), "--resume"]
    assert main(other) == 2
    assert "holds a plan search with other scenario (switch-base-128-train there" in _error(capsys)
    assert main(["plan", TRAIN, "--devices", "8", "--tp", "1", "--pp", "1", "--out", str(plan), "--resume"]) == 0


@pytest.mark.parametrize("argv", [
    ["simulate", TRAIN, "--seed", str(MAX_SEED + 1)],
    ["simulate", TRAIN, "--seed", "-1"],
    ["plan", TRAIN, "--devices", "8", "--seed", str(10**20)],
    ["sweep", TRAIN, "--experts", "8", "--seeds", f"1,{10**20}"],
])
def test_every_seed_option_has_routing_seeds_range(argv, capsys, tmp_path):
    assert main([*argv, "--out", str(tmp_path / "o")]) == 2
    assert f"a seed is a whole number from 0 to {MAX_SEED}" in _error(capsys)
    assert not (tmp_path / "o").exists()
    assert check_seed(MAX_SEED, "--seed") == MAX_SEED
    with pytest.raises(InputError):
        check_seed(True, "--seed")


def test_a_field_is_fixed_or_swept_not_both(tmp_path, capsys):
    argv = ["sweep", TRAIN, "--experts", "8", "--set", "model.n_experts=16", "--out", str(tmp_path / "o")]
    assert main(argv) == 2
    assert "--set model.n_experts: model.n_experts is also swept" in _error(capsys)
    assert not (tmp_path / "o").exists()
    # a whole section set, then one of its fields swept, is fine: the grid applies on top
    argv = ["sweep", TRAIN, "--experts", "8", "--set", "plan.dp=8", "--out", str(tmp_path / "p")]
    assert main(argv) == 0


def test_several_values_in_a_set_point_to_grid(tmp_path, capsys):
    """A comma list given to --set (one fixed value) fails on that field and says --grid sweeps it;
    a list-typed value in brackets, or an error about another field, gets no such hint."""
    argv = ["sweep", TRAIN, "--experts", "8", "--set", "plan.tp=1,2", "--out", str(tmp_path / "o")]
    assert main(argv) == 2
    line = _error(capsys)
    assert line.startswith("error: plan.tp = '1,2'")
    assert line.endswith("(--set fixes one value; to sweep several use --grid plan.tp=1,2)")
    assert not (tmp_path / "o").exists()
    argv = ["sweep", TRAIN, "--experts", "8", "--set", "plan.tp=[1,2]", "--out", str(tmp_path / "o")]
    assert main(argv) == 2
    assert "--grid" not in _error(capsys)


@pytest.mark.parametrize("top", ["0", "-1"])
def test_sweep_top_needs_at_least_one_row(top, tmp_path, capsys):
    assert main(["sweep", TRAIN, "--experts", "8", "--top", top, "--out", str(tmp_path / "o")]) == 2
    assert f"--top {top}: need at least 1" in _error(capsys)


def test_out_errors_name_the_option(tmp_path, capsys):
    afile = tmp_path / "afile"
    afile.write_text("mine")
    assert main(["sweep", TRAIN, "--experts", "8", "--out", str(afile / "sub")]) == 2
    assert _error(capsys) == f"error: --out {afile / 'sub'}: {afile} is a file, not a folder"
    assert main(["schema", "--out", str(tmp_path)]) == 2
    assert _error(capsys) == f"error: --out {tmp_path}: is a folder; give a file name"
    assert main(["schema", "--out", str(afile / "x.json")]) == 2
    assert _error(capsys).startswith(f"error: --out {afile / 'x.json'}: cannot write the file")
    assert afile.read_text() == "mine"


def test_an_unknown_workload_kind_names_the_key_and_the_kinds(tmp_path, capsys):
    p = tmp_path / "s.yaml"
    p.write_text("model: switch-base-128\nhardware: h100-sxm\nplan: {dp: 8}\nworkload: {kind: inference}\n")
    assert main(["check", str(p)]) == 2
    assert _error(capsys) == "error: workload.kind = 'inference': allowed: training, serving"


def test_a_profile_for_another_device_names_the_callers_way_to_accept_it():
    h100 = load_default_profile("h100.yaml")
    with pytest.raises(InputError, match=r"or pass --force$"):
        check_device(h100, "NVIDIA A100 SXM4 80GB", label="--profile h100.yaml", how_to_force="pass --force")
    with pytest.raises(InputError, match=r"hardware.force_profile: true"):
        check_device(h100, "NVIDIA A100 SXM4 80GB")
    check_device(h100, "NVIDIA H100 SXM5 80GB")  # its own device: no error


def test_a_grid_too_large_to_run_is_refused_before_it_is_expanded(tmp_path, capsys):
    from moesim.sweep import MAX_POINTS

    dp = ",".join(str(v) for v in range(1, 401))
    tp = ",".join(str(v) for v in range(1, 301))
    assert 400 * 300 > MAX_POINTS
    assert main(["sweep", TRAIN, "--grid", f"plan.dp={dp}", "--grid", f"plan.tp={tp}", "--out", str(tmp_path / "o")]) == 2
    assert f"the grid has 120,000 points (400 plan.dp x 300 plan.tp); at most {MAX_POINTS:,}" in _error(capsys)
    assert not (tmp_path / "o").exists()
