"""The CLI's promises: exit codes, one-line errors without tracebacks, JSON keys, schema."""

from __future__ import annotations

import json

import pytest

from moesim.cli import main
from tests.conftest import SCENARIOS

CHECK_KEYS = {"total_params", "active_params", "flops_per_token", "memory_per_device_gib", "fits"}


@pytest.mark.parametrize("path", SCENARIOS, ids=[p.stem for p in SCENARIOS])
def test_check_every_shipped_scenario(path, capsys):
    assert main(["check", str(path)]) == 0
    assert "total_params" in capsys.readouterr().out
    assert main(["check", str(path), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert CHECK_KEYS <= set(data)


def test_check_bad_input_exits_2_with_one_line(tmp_path, capsys, root):
    code = main(["check", str(root / "scenarios" / "mixtral-8x7b-h100-train.yaml"), "--set", "plan.ep=3"])
    captured = capsys.readouterr()
    assert code == 2
    lines = [ln for ln in captured.err.splitlines() if ln.strip()]
    assert len(lines) == 1 and "plan.ep = 3" in lines[0]
    assert "Traceback" not in captured.err + captured.out


@pytest.mark.parametrize("argv", [["check"], ["check", "a.yaml", "--bogus"], ["nonsense-command"]])
def test_usage_errors_exit_2(argv, capsys):
    assert main(argv) == 2
    assert "Traceback" not in capsys.readouterr().err


def test_missing_file_exits_2(capsys):
    assert main(["check", "does-not-exist.yaml"]) == 2
    assert "file not found" in capsys.readouterr().err


def test_version_is_printed_and_is_the_package_s(capsys, root):
    import tomllib

    from moesim import __version__

    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"moesim {__version__}"
    assert tomllib.loads((root / "pyproject.toml").read_text())["project"]["version"] == __version__


def test_saved_results_name_the_moesim_that_priced_them(tmp_path, capsys, root):
    from moesim import __version__

    assert main(["simulate", "mixtral-8x7b-h100-train", "--out", str(tmp_path / "r"), "--json"]) == 0
    assert json.loads((tmp_path / "r" / "summary.json").read_text())["moesim_version"] == __version__
    assert main(["sweep", "mixtral-8x7b-h100-train", "--grid", "plan.ep=1,8", "--out", str(tmp_path / "s")]) == 0
    assert json.loads((tmp_path / "s" / "sweep.json").read_text())["moesim_version"] == __version__
    assert main(["plot", str(tmp_path / "r"), "--kind", "breakdown", "--out", str(tmp_path / "b")]) == 0  # re-read


def test_presets_lists_and_shows(capsys):
    assert main(["presets"]) == 0
    text = capsys.readouterr().out
    assert "mixtral-8x7b" in text and "h100-sxm" in text
    assert main(["presets", "--show", "deepseek-v3", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["n_experts"] == 256
    assert main(["presets", "--show", "nope"]) == 2
    capsys.readouterr()
    assert main(["presets", "--show", "qwen3-30b-a3b"]) == 0
    shown = capsys.readouterr().out
    assert "# 30.53 B parameters, 3.35 B active a token" in shown and "# in a scenario: model: qwen3-30b-a3b" in shown
    import yaml  # below the header, the fields are the preset's, as YAML

    assert yaml.safe_load(shown.split("\n", 1)[1])["n_experts"] == 128


def test_presets_table_prints_every_name_whole_at_80_columns(capsys, eighty_columns):
    """A preset's name is what a scenario types: the table may wrap a device's name, never a preset's."""
    from moesim.presets import HARDWARE, MODELS

    assert main(["presets"]) == 0
    cells = {c.strip() for line in capsys.readouterr().out.splitlines() for c in line.split("│")}
    assert set(MODELS) | set(HARDWARE) <= cells


def test_schema_is_json_schema_with_every_section(tmp_path, capsys):
    assert main(["schema"]) == 0
    schema = json.loads(capsys.readouterr().out)
    assert {"model", "hardware", "plan", "workload", "routing"} <= set(schema["properties"])
    out = tmp_path / "scenario.schema.json"
    assert main(["schema", "--out", str(out)]) == 0
    assert json.loads(out.read_text()) == schema


def test_the_schema_accepts_every_shipped_scenario_and_refuses_what_moesim_refuses(root, capsys):
    """An editor pointed at `moesim schema` flagged every shipped file: the schema described the scenario after its
    presets were expanded. It takes the preset forms now, and still refuses a misspelt preset or field."""
    import yaml
    from jsonschema import Draft202012Validator

    assert main(["schema"]) == 0
    schema = json.loads(capsys.readouterr().out)
    Draft202012Validator.check_schema(schema)
    check = Draft202012Validator(schema)
    for path in sorted((root / "scenarios").glob("*.yaml")):
        errors = [e.message for e in check.iter_errors(yaml.safe_load(path.read_text()))]
        assert not errors, (path.name, errors[:2])
    base = yaml.safe_load((root / "scenarios" / "mixtral-8x7b-h100-train.yaml").read_text())
    for bad in ({"model": "mixtral-9x9b"}, {"model": {"preset": "mixtral-8x7b", "n_expertz": 4}},
                {"hardware": {"preset": "h100-sxm", "device": {"usd_per_hour": -1}}}, {"model": {"hf_config": 3}}):
        assert not check.is_valid(base | bad), bad
    for good in ({"model": {"hf_config": "config.json", "dtype": "fp8"}},
                 {"hardware": {"preset": "h200", "device": {"usd_per_hour": 2.5}, "cluster": {"nodes": 8}}}):
        assert check.is_valid(base | good), good


def test_field_reference_is_complete_and_current(root):
    from moesim.fielddoc import all_field_paths, markdown

    doc = (root / "docs" / "scenario-fields.md").read_text()
    assert doc.strip() == markdown().strip(), "run: python -m moesim.fielddoc > docs/scenario-fields.md"
    for path in all_field_paths():
        assert f"`{path}`" in doc


TRAINING_KEYS = {"step_time_s", "tokens_per_s", "mfu", "bubble_fraction", "dropped_fraction",
                 "peak_memory_gib", "fits", "usd_per_mtok", "run_time_days", "run_cost_usd"}
SERVING_KEYS = {"output_tokens_per_s", "input_tokens_per_s", "ttft_p50_s", "ttft_p99_s", "tpot_p50_s",
                "tpot_p99_s", "e2e_p50_s", "e2e_p99_s", "usd_per_mtok", "dropped_fraction"}


@pytest.mark.parametrize("stem, keys", [("mixtral-8x7b-h100-train", TRAINING_KEYS),
                                        ("mixtral-8x7b-h100-serve", SERVING_KEYS)])
def test_simulate_json_has_the_stable_keys_and_out_writes_files(stem, keys, root, tmp_path, capsys):
    path = root / "scenarios" / f"{stem}.yaml"
    argv = ["simulate", str(path), "--json", "--out", str(tmp_path / "out"), "--set", "workload.arrival.n_requests=200"]
    if "train" in stem:
        argv = argv[:-2]
    assert main(argv) == 0
    data = json.loads(capsys.readouterr().out)
    assert keys <= set(data), keys - set(data)
    assert {"summary.json", "spans.csv", "trace.json"} <= {p.name for p in (tmp_path / "out").iterdir()}


def test_simulate_bad_seed_and_bad_override_exit_2(root, capsys):
    path = str(root / "scenarios" / "mixtral-8x7b-h100-train.yaml")
    assert main(["simulate", path, "--seed", "-1"]) == 2
    assert main(["simulate", path, "--set", "routing.capacity_factor=-1"]) == 2
    err = capsys.readouterr().err
    assert "routing.capacity_factor = -1" in err and "Traceback" not in err


def test_readme_documents_every_summary_key(root):
    """The README's key tables are the registry's (tests/test_metrics.py: every summary key is registered)."""
    from moesim.metrics import METRICS, README_KINDS, markdown_table, readme_with_tables

    readme = (root / "README.md").read_text()
    assert readme_with_tables(readme) == readme, "README key tables are stale: python -m moesim.metrics --write-readme"
    for kind in README_KINDS:
        block = readme.split(f"<!-- metrics:{kind} -->\n", 1)[1].split(f"<!-- /metrics:{kind} -->", 1)[0]
        assert block == markdown_table(kind)
        for m in METRICS.values():
            if kind in m.kinds:
                assert f"`{m.name}`" in block, f"README's {kind} table does not document {m.name}"


def test_readme_lists_every_shipped_scenario(root):
    readme = (root / "README.md").read_text()
    for path in SCENARIOS:
        assert f"scenarios/{path.name}" in readme


def test_report_formats_units_missing_values_and_float_residue():
    from moesim.formatting import fmt_value

    assert fmt_value("run_time_days", float("nan")) == "n/a"
    assert fmt_value("excess_bubble_s", 8.9e-16) == "0.000 s"
    assert fmt_value("step_time_s", 10.625) == "10.625 s"
    assert fmt_value("mfu", 0.497) == "49.70 %"
    assert fmt_value("fits", False) == "NO"


@pytest.mark.parametrize("scenario, override, field", [
    ("mixtral-8x7b-h100-train", "plan.grad_dtype=fp16", "plan.grad_dtype"),
    ("mixtral-8x7b-h100-train", "plan.moe_impl=eager", "plan.moe_impl"),
    ("mixtral-8x7b-h100-train", "plan.moe_impl=hf_loop", "plan.ep"),
    ("mixtral-8x7b-h100-serve-online", "workload.arrival.concurrency=0", "workload.arrival.concurrency"),
    ("deepseek-v3-h800-serve-disagg", "workload.arrival.process=closed", "workload.arrival.process"),
])
def test_new_inputs_fail_in_one_line_naming_the_field(scenario, override, field, capsys):
    assert main(["check", scenario, "--set", override]) == 2
    captured = capsys.readouterr()
    lines = [ln for ln in captured.err.splitlines() if ln.strip()]
    assert len(lines) == 1 and field in lines[0] and "Traceback" not in captured.err + captured.out


def test_a_field_set_twice_takes_the_last_value():
    from moesim.loader import load_scenario

    s = load_scenario("switch-base-128-train", ["plan.zero_stage=1", "plan.zero_stage=2"])
    assert s.plan.zero_stage == 2  # advice added on top of a command's own --set wins


@pytest.mark.parametrize("argv, words", [(["presets", "--show", "mixtral-8x7"], "did you mean mixtral-8x7b"),
                                         (["plan", "mixtral-8x7b-h100-train", "--hardware", "h100"],
                                          "did you mean h100-sxm")])
def test_an_unknown_preset_option_suggests_the_near_names(argv, words, capsys):
    assert main(argv) == 2
    assert words in capsys.readouterr().err


def test_the_field_reference_gives_the_tightest_bound_the_loader_applies():
    """mem_bw_gbps is a PositiveFloat (> 0) bounded at 0.001: the reference said "> 0" while 0.0005 was refused."""
    from moesim.fielddoc import _range
    from moesim.schemas.hardware import DeviceSpec

    assert _range(DeviceSpec.model_fields["mem_bw_gbps"]).startswith(">= 0.001, <= 1e+08")
