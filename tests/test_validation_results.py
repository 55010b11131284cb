"""The saved validate results (moesim/data/validation_results.csv): complete, current, and what
``moesim simulate`` prints from them."""

from __future__ import annotations

import math

import pytest
from typer.testing import CliRunner

from moesim.cli import app, main
from moesim.errors import InputError
from moesim.loader import load_scenario
from moesim.validation import DEFAULT_CSV, Check, check_row, read_table, scenario_ref
from moesim.validation_near import row_traits
from moesim.validation_results import (
    COLUMNS,
    Known,
    known_of,
    nearest_known,
    read_results,
    trust_lines,
    write_results,
)
from tests.test_front_door import _one_error_line

BASE = DEFAULT_CSV.resolve().parent
#: Rows re-run against the saved file: one training, two serving, one Apple (each well under a second).
FRESH = ("TRN-34", "INF-24", "APL-01", "INF-589")


@pytest.fixture(scope="module")
def table() -> list[dict[str, str]]:
    return read_table(DEFAULT_CSV)


@pytest.fixture(scope="module")
def saved() -> list[Known]:
    return read_results()


def test_the_saved_results_cover_every_simulated_row_in_table_order(table, saved):
    simulated = [r["id"].strip() for r in table if not r["metric"].strip().startswith("scenario:")]
    assert [k.id for k in saved] == simulated
    published = {r["id"].strip(): float(r["published"]) for r in table}
    for k in saved:  # each error is the saved prediction against the table's published value
        assert math.isclose(k.error, k.predicted / published[k.id] - 1.0, rel_tol=1e-9, abs_tol=1e-12)


def test_the_saved_traits_are_todays(table, saved):
    """Traits come from each row's scenario and overrides: a scenario edit or a new trait shows here."""
    rows = {r["id"].strip(): r for r in table}
    cache = {}
    for k in saved:
        assert k.traits == row_traits(rows[k.id], BASE, cache), k.id


@pytest.mark.parametrize("rid", FRESH)
def test_the_saved_predictions_are_current(table, saved, rid):
    """Re-run a few rows: a physics change that moves them fails here until the file is written again
    (moesim validate --markdown --save-results moesim/data/validation_results.csv, README table too)."""
    row = next(r for r in table if r["id"].strip() == rid)
    chk = check_row(row, BASE)
    assert chk.predicted is not None, chk.message
    assert math.isclose(chk.predicted, next(k for k in saved if k.id == rid).predicted, rel_tol=1e-6)


def test_nearest_known_is_same_kind_sorted_and_finds_its_own_row(saved):
    s = load_scenario(scenario_ref("validation/gpt-oss-20b-hopper-trtllm-offline.yaml", BASE),
                      ["workload.prompt_tokens.value=1024", "workload.output_tokens.value=8192",
                       "workload.arrival.n_requests=1500", "workload.max_batch_seqs=160",
                       "workload.max_batch_tokens=2048"])  # INF-87's scenario
    near = nearest_known(s, n=5)
    assert len(near) == 5 and near[0][0].id == "INF-87" and near[0][1] == 0.0
    assert all(k.traits.kind == "serving" for k, _ in near)
    assert [d for _, d in near] == sorted(d for _, d in near)
    train = nearest_known(load_scenario("mixtral-8x7b-h100-train"), n=4)
    assert len(train) == 4 and all(k.traits.kind == "training" for k, _ in train)


def test_trust_lines_name_the_rows_their_errors_and_the_command(saved):
    s = load_scenario("mixtral-8x7b-h100-train")
    lines = trust_lines(s, "mixtral-8x7b-h100-train", n=2)
    assert len(lines) == 3 and "moesim validate --near mixtral-8x7b-h100-train" in lines[0]
    (first, _), _ = nearest_known(s, n=2)
    assert first.id in lines[1] and f"{100 * first.error:+.1f} %" in lines[1]


def test_the_columns_are_documented():
    from moesim.csv_columns import undocumented

    assert undocumented("validation_results.csv", list(COLUMNS)) == []


def test_trust_lines_say_when_no_measurement_is_alike():
    near = trust_lines(load_scenario("gpt4-rumour-a100-serve"), "gpt4-rumour-a100-serve")
    assert "none much like this run" in near[0]  # a 1.8T-parameter model on A100s: nothing published is close
    assert "none much like" not in trust_lines(load_scenario("mixtral-8x7b-h100-serve"), "x")[0]


def test_write_and_read_round_trip(tmp_path, saved):
    path = tmp_path / "r.csv"
    write_results(saved[:3], path, "three rows")
    assert path.read_text().startswith("# three rows\n") and read_results(path) == saved[:3]


def test_known_of_refuses_a_run_with_a_failed_row(table):
    ok = Check("TRN-34", "q", 1.0, "u", "s", "m", predicted=1.1, error=0.1)
    bad = Check("INF-24", "q", 1.0, "u", "s", "m", message="boom")
    with pytest.raises(InputError, match="INF-24.*nothing written"):
        known_of([ok, bad], table, BASE)


def test_read_results_rejects_other_files_in_one_line(tmp_path):
    with pytest.raises(InputError, match="file not found"):
        read_results(tmp_path / "none.csv")
    other = tmp_path / "other.csv"
    other.write_text("id,error\nINF-01,0.1\n")
    with pytest.raises(InputError, match="not a results file"):
        read_results(other)
    bad = tmp_path / "bad.csv"
    bad.write_text(",".join(COLUMNS) + "\nX,q,1,notanumber" + ",x" * (len(COLUMNS) - 4) + "\n")
    with pytest.raises(InputError, match="line"):
        read_results(bad)


def test_validate_save_results_needs_the_whole_shipped_table(tmp_path, capsys):
    out = tmp_path / "r.csv"
    for extra in (["--only", "TRN-34"], [str(DEFAULT_CSV)], ["--near", "mixtral-8x7b-h100-train"]):
        assert main(["validate", "--save-results", str(out), *extra]) == 2
        assert "--save-results: only over the whole shipped table" in _one_error_line(capsys.readouterr().err)
        assert not out.exists()
    assert main(["validate", "--save-results", str(tmp_path)]) == 2
    assert "is a folder" in _one_error_line(capsys.readouterr().err)


def test_the_command_repeats_the_runs_overrides_quoted(saved):
    s = load_scenario("mixtral-8x7b-h100-train", ["plan.microbatches=8"])
    lines = trust_lines(s, "my run.yaml", sets=["plan.microbatches=8", "model.name=a b"])
    assert "moesim validate --near 'my run.yaml' -s plan.microbatches=8 -s 'model.name=a b' re-runs" in lines[0]
    res = CliRunner().invoke(app, ["simulate", "mixtral-8x7b-h100-train", "-s", "plan.microbatches=8"],
                             env={"COLUMNS": "400"})
    assert res.exit_code == 0 and "moesim validate --near mixtral-8x7b-h100-train -s plan.microbatches=8 re-runs" in res.output


def test_simulate_prints_the_nearest_measurements():
    res = CliRunner().invoke(app, ["simulate", "mixtral-8x7b-h100-train"])
    assert res.exit_code == 0
    assert "nearest published measurements" in res.output
    ids = {k.id for k, _ in nearest_known(load_scenario("mixtral-8x7b-h100-train"))}
    assert all(i in res.output for i in ids)


def test_plan_ends_with_the_best_plans_nearest_measurements(capsys):
    from tests.test_newcomer_polish import TRAIN

    assert main(["plan", str(TRAIN), "--devices", "64", "--tp", "1", "--pp", "1", "--workers", "1"]) == 0
    text = capsys.readouterr().out
    assert "best plan: nearest published measurements" in text and "TRN-" in text.split("best plan:")[1]


def test_each_nearest_line_names_which_way_moesim_errs(saved):
    """From 5 % off, a line says whether the prediction is better than the run (optimistic: more
    throughput, less time) or worse, by its metric's direction; below that it names none."""
    from moesim.validation import Check, read_table

    rows = {r["id"]: r for r in read_table(DEFAULT_CSV)}
    s = load_scenario("gpt-oss-120b-h100-serve-long")
    lines = trust_lines(s, "x", n=5)[1:]
    near = [k for k, _ in nearest_known(s, 5)]
    assert len(lines) == len(near) == 5
    for k, line in zip(near, lines, strict=True):
        better = Check(k.id, "", 1.0, "", "", rows[k.id]["metric"], error=k.error,
                       transform=rows[k.id].get("transform") or "").optimistic
        word = line.split("%", 1)[1].split()[0]
        if abs(k.error) < 0.05:
            assert word not in ("optimistic", "pessimistic"), line
        else:
            assert word == ("optimistic" if better else "pessimistic"), line
    step = Known("TRN-32", "step time", 1.0, -0.2, saved[0].traits)  # a step 20 % short: optimistic
    tput = Known("TRN-09", "tokens/s", 1.0, -0.2, saved[0].traits)  # 20 % fewer tokens/s: pessimistic
    assert [Check(k.id, "", 1.0, "", "", rows[k.id]["metric"], error=k.error).optimistic for k in (step, tput)] \
        == [True, False]


def test_the_readme_reads_the_2024_vllm_latency_rows_as_saved(saved, root):
    """The README's sentences on vLLM's 2024 latency runs quote the saved errors: Mixtral's (INF-589..601), the 8x7B
    batches up to 16 and the 8x22B rows as one range, the 32- and 64-prompt rows on their own; DBRX's (INF-602..609)."""
    err = {k.id: 100 * k.error for k in saved if k.id in {f"INF-{i}" for i in range(589, 610)}}
    assert len(err) == 21
    small = [err[f"INF-{i}"] for i in (*range(589, 594), *range(596, 602))]
    prose = " ".join((root / "README.md").read_text().split())
    assert (f"read {min(small):+.0f} to {max(small):+.0f} % up to 16 prompts and on the larger model; at 32 and 64 "
            f"prompts of 1,000 tokens, {err['INF-594']:+.0f} and {err['INF-595']:+.0f} %") in prose
    dbrx = [err[f"INF-{i}"] for i in range(602, 610)]  # DBRX on H100s (PR #3692)
    assert f"(INF-602..609) read {max(dbrx):+.0f} to {min(dbrx):+.0f} %" in prose
