"""The metric registry: it covers every summary key, and the report, sweep --best and plots read it."""

from __future__ import annotations

import pytest

from moesim.errors import InputError
from moesim.metrics import (
    FAMILIES,
    KINDS,
    METRICS,
    guess_direction,
    label_of,
    markdown_table,
    readme_with_tables,
    unit_of,
)
from tests.conftest import ROOT, SCENARIOS

TRAIN = ROOT / "scenarios" / "mixtral-8x7b-h100-train.yaml"
SERVE = ROOT / "scenarios" / "mixtral-8x7b-h100-serve.yaml"
DISAGG = ROOT / "scenarios" / "deepseek-v3-h800-serve-disagg.yaml"


@pytest.fixture(scope="module")
def summaries() -> dict[str, dict]:
    from moesim import load_scenario, simulate

    serving = simulate(load_scenario(SERVE, ["workload.arrival.n_requests=40"])).summary
    disagg = simulate(load_scenario(DISAGG, ["workload.arrival.n_requests=40"])).summary
    assert set(serving) <= set(disagg)  # disaggregated serving adds its pools' keys
    training = simulate(load_scenario(TRAIN)).summary
    finetune = simulate(load_scenario(TRAIN, ["workload.trainable=non_experts", "workload.packing=false",
                                              "workload.sample_tokens={dist: fixed, value: 1024}"])).summary
    assert set(training) <= set(finetune)  # fine-tuning adds its trainable-parameter keys
    return {"training": {**training, **finetune}, "serving": {**serving, **disagg}}


def _check_keys(summary: dict) -> set[str]:
    """Keys of an accounting summary, the nested memory dict's as memory.<key>."""
    keys = set(summary)
    keys |= {f"{k}.{sub}" for k, v in summary.items() if isinstance(v, dict) for sub in v}
    return keys


# ----------------------------------------------------------------------- coverage
@pytest.mark.parametrize("kind", ["training", "serving"])
def test_every_simulated_summary_key_is_registered_for_its_kind(summaries, kind):
    keys = set(summaries[kind])
    missing = sorted(k for k in keys if k not in METRICS)
    assert not missing, f"add these {kind} keys to moesim/metrics.py: {missing}"
    wrong_kind = sorted(k for k in keys if kind not in METRICS[k].kinds)
    assert not wrong_kind, f"registered without kind {kind!r}: {wrong_kind}"
    stale = sorted(m.name for m in METRICS.values() if kind in m.kinds and m.name not in keys)
    assert not stale, f"registered as {kind} metrics but not in its summary: {stale}"


def test_every_check_key_is_registered():
    from moesim.check import summary
    from moesim.loader import load_scenario

    seen: set[str] = set()
    for path in SCENARIOS:
        keys = _check_keys(summary(load_scenario(path)))
        missing = sorted(k for k in keys if k not in METRICS or "check" not in METRICS[k].kinds)
        assert not missing, f"{path.name}: add these check keys to moesim/metrics.py: {missing}"
        seen |= keys
    stale = sorted(m.name for m in METRICS.values() if "check" in m.kinds and m.name not in seen)
    assert not stale, f"registered as check metrics but in no accounting summary: {stale}"


def test_every_metric_is_described():
    for name, m in METRICS.items():
        assert m.name == name
        assert m.unit.strip() and m.label.strip() and m.description.strip(), name
        assert m.direction in ("max", "min", None), name
        assert m.kinds and set(m.kinds) <= set(KINDS), name
        assert set(m.stable) <= set(m.kinds), name
        assert not m.family or m.family in FAMILIES, name
        assert "\n" not in m.description and "|" not in m.description, name


def test_new_keys_of_this_release_are_registered_with_their_units():
    assert {k: METRICS[k].unit for k in ("fits_reason", "fits_advice", "compute_dtype", "precision_note",
                                          "weight_bytes_per_param")} == {
        "fits_reason": "text", "fits_advice": "text", "compute_dtype": "text", "precision_note": "text",
        "weight_bytes_per_param": "bytes/param"}


@pytest.mark.parametrize("name, direction", [
    ("tokens_per_s", "max"), ("output_tokens_per_s", "max"), ("mfu", "max"), ("headroom_gib", "max"),
    ("usd_per_mtok", "min"), ("step_time_s", "min"), ("dropped_fraction", "min"), ("ttft_p99_s", "min"),
    ("run_cost_usd", "min"), ("devices", None), ("fits", None), ("fits_reason", None), ("model", None),
])
def test_directions(name, direction):
    assert METRICS[name].direction == direction


def test_stable_keys_are_the_readme_promise():
    stable = {k: sorted(m.stable) for k, m in METRICS.items() if m.stable}
    assert {k for k, v in stable.items() if "training" in v} == {
        "step_time_s", "tokens_per_s", "mfu", "bubble_fraction", "dropped_fraction", "peak_memory_gib",
        "fits", "usd_per_mtok", "run_time_days", "run_cost_usd"}
    assert {k for k, v in stable.items() if "serving" in v} == {
        "output_tokens_per_s", "input_tokens_per_s", "ttft_p50_s", "ttft_p99_s", "tpot_p50_s",
        "tpot_p99_s", "e2e_p50_s", "e2e_p99_s", "usd_per_mtok", "dropped_fraction"}


def test_unregistered_names_fall_back_to_their_suffix():
    assert unit_of("sim_wall_s") == "s" and unit_of("foo_gib") == "GiB" and unit_of("bar") == ""
    assert label_of("sim_wall_s") == "sim_wall_s (s)" and label_of("bar") == "bar"
    assert guess_direction("headroom_gib") == "min"  # the name alone would get this one wrong
    assert guess_direction("sim_wall_s") == "min" and guess_direction("x_per_s") == "max"
    assert guess_direction("model.n_experts") is None


# ----------------------------------------------------------------------- README tables
def test_markdown_table_lists_each_key_once_with_stable_keys_bold():
    table = markdown_table("serving")
    lines = table.splitlines()
    assert lines[:2] == ["| key | unit | meaning |", "|---|---|---|"]
    assert lines[2].startswith("| **`output_tokens_per_s`** | tokens/s |")
    assert "| **`ttft_p50_s`**, **`ttft_p99_s`**, `ttft_mean_s`, `ttft_p90_s` | s |" in table
    for m in METRICS.values():
        if "serving" in m.kinds:
            assert table.count(f"`{m.name}`") == 1, m.name
    assert "`step_time_s`" not in table
    with pytest.raises(ValueError):
        markdown_table("nope")


def test_readme_blocks_are_replaced_and_nothing_else(tmp_path):
    text = ("intro\n<!-- metrics:training -->\nold\n<!-- /metrics:training -->\nmiddle\n"
            "<!-- metrics:serving -->\n<!-- /metrics:serving -->\nend\n")
    new = readme_with_tables(text)
    assert new.startswith("intro\n<!-- metrics:training -->\n| key |") and new.endswith("<!-- /metrics:serving -->\nend\n")
    assert "old" not in new and "\nmiddle\n" in new and markdown_table("serving") in new
    assert readme_with_tables(new) == new
    with pytest.raises(ValueError, match="metrics:serving"):
        readme_with_tables("<!-- metrics:training -->\n<!-- /metrics:training -->\n")
    from moesim.metrics import main

    path = tmp_path / "README.md"
    path.write_text(text)
    assert main(["--check-readme", "--readme", str(path)]) == 1
    assert main(["--write-readme", "--readme", str(path)]) == 0 and path.read_text() == new
    assert main(["--check-readme", "--readme", str(path)]) == 0


# ----------------------------------------------------------------------- report formatting
@pytest.mark.parametrize("key, value, text", [
    ("step_time_s", 10.625, "10.625 s"),
    ("tokens_per_s", 394774.8, "394,774.8 /s"),
    ("requests_per_s", 89.075, "89.075 /s"),
    ("mfu", 0.497, "49.70 %"),
    ("dropped_fraction", 0.0487, "4.87 %"),
    ("peak_memory_gib", 63.137, "63.137 GiB"),
    ("memory_per_device_gib", 133.8, "133.8 GiB"),
    ("memory.weights_gib", 78.118, "78.118 GiB"),
    ("memory.fits", True, "yes"),
    ("fits", False, "NO"),
    ("overloaded", False, "no"),  # a lower-is-better flag: True is the loud answer
    ("overloaded", True, "YES"),
    ("usd_per_mtok", 0.135, "$0.135 / 1M tok"),
    ("usd_per_1k_tokens", 2.914e-4, "$0.000291 / 1K tok"),
    ("run_time_days", 29.318, "29.318 days"),
    ("run_time_days", float("nan"), "n/a"),
    ("run_cost_usd", 134647.8, "$134,648"),
    ("excess_bubble_s", 8.9e-16, "0.000 s"),
    ("dropped_fraction", 6.0e-11, "6.0e-09 %"),  # not 0.0000000060 %
    ("dropped_fraction", 4.9e-6, "0.00049 %"),
    ("model_tflops_per_device", 491.7, "491.7 TFLOP/s"),
    ("tokens_per_step", 4194304, "4,194,304"),
    ("devices", 64, "64"),
    ("kv_cache_capacity_tokens", 529988.3, "529,988"),
    ("alltoall_nvlink_bytes", 143360.0 * 2**20, "140.00 GiB"),
    ("alltoall_nvlink_bytes", 715042.15 * 2**20, "698.28 GiB"),  # not 715,042.15 MiB
    ("alltoall_nic_bytes", 3 * 2**40, "3.00 TiB"),
    ("decode_bytes_per_token_batch1", 9.5 * 2**30, "9,728.00 MiB"),
    ("kv_cache_bytes_per_token", 34.3 * 1024, "34.3 KiB"),
    ("weight_bytes_per_param", 0.515625, "0.5156 B (4.125 bits)"),
    ("total_params", 671.03e9, "671.03 B"),
    ("total_params", 1.8e12, "1.800 T"),
    ("flops_per_token", 114.2e9, "114.2 GFLOP"),
    ("energy_j_per_token", 0.491, "0.491 J/token"),
    ("compute_dtype", "fp8", "fp8"),
    ("precision_note", None, "-"),
    ("sim_wall_s", 1.5, "1.500 s"),  # unregistered: unit from the name
])
def test_fmt_value_by_unit(key, value, text):
    from moesim.formatting import fmt_value

    assert fmt_value(key, value) == text


def test_fmt_value_shows_units_that_were_missing():
    from moesim.formatting import fmt_value

    assert fmt_value("tokens_per_s_per_device", 6168.4) == "6,168.4 /s"
    assert fmt_value("kv_utilisation_mean", 0.008952) == "0.90 %"
    assert fmt_value("usd_per_1k_output_tokens", 5.828e-4) == "$0.000583 / 1K tok"


# ----------------------------------------------------------------------- sweep --best
def test_best_direction_comes_from_the_registry_and_an_explicit_one_wins():
    from moesim.sweep import infer_direction, parse_best

    assert infer_direction("headroom_gib") == "max"  # registry, not the _gib suffix
    assert infer_direction("kv_cache_capacity_tokens") == "max"
    assert parse_best("headroom_gib:min") == ("headroom_gib", "min")
    assert parse_best("sim_wall_s") == ("sim_wall_s", None)  # unregistered: decided by the columns
    with pytest.raises(InputError, match="devices:min or devices:max"):
        parse_best("devices")


def test_best_of_an_unregistered_column_uses_the_name_and_an_absent_one_is_an_error():
    from moesim.sweep import best_row

    rows = [{"status": "ok", "sim_wall_s": 2.0, "tokens_per_s": 1.0},
            {"status": "ok", "sim_wall_s": 1.0, "tokens_per_s": 3.0}]
    assert best_row(rows, "sim_wall_s")["sim_wall_s"] == 1.0
    with pytest.raises(InputError) as exc:
        best_row(rows, "tokens_per_sec")
    msg = str(exc.value)
    assert "\n" not in msg and "not a summary metric nor a column" in msg and "tokens_per_s" in msg


def test_sweep_best_unknown_metric_fails_before_running(tmp_path):
    from moesim.sweep import run_sweep

    out = tmp_path / "out"
    with pytest.raises(InputError) as exc:
        run_sweep(TRAIN, experts="8,16", best="tokens_per_sec", out_dir=out, durable=False)
    msg = str(exc.value)
    assert "\n" not in msg and "did you mean tokens_per_s" in msg
    assert not out.exists()  # nothing ran, nothing was written
    with pytest.raises(InputError, match="not in a training summary"):
        run_sweep(TRAIN, experts="8", best="ttft_p99_s", out_dir=out, durable=False)
    with pytest.raises(InputError, match="cannot tell"):
        run_sweep(TRAIN, experts="8", best="model.n_experts", out_dir=out, durable=False)


def test_cli_sweep_best_unknown_metric_is_one_line(tmp_path, capsys):
    from moesim.cli import main

    assert main(["sweep", str(TRAIN), "--experts", "8", "--best", "usd_per_mtokens",
                 "--out", str(tmp_path / "o")]) == 2
    captured = capsys.readouterr()
    lines = [line for line in captured.err.splitlines() if line.strip()]
    assert len(lines) == 1 and "did you mean usd_per_mtok" in lines[0], captured.err
    assert not (tmp_path / "o").exists()


# ----------------------------------------------------------------------- plots and the sweep table
def test_plot_labels_come_from_the_registry():
    from moesim import plots

    assert plots.label("tokens_per_s") == METRICS["tokens_per_s"].label == "throughput (tokens/s)"
    assert plots.label("ttft_p99_s") == "TTFT p99 (s)"
    assert plots.label("mfu") == "MFU (fraction of peak)"
    assert plots.label(plots.EXPERTS) == "number of experts"
    assert plots.label("sim_wall_s") == "sim_wall_s (s)"


def test_sweep_table_shows_registered_metrics_only():
    from moesim.plot_breakdown import BREAKDOWN_KEYS
    from moesim.sweep_table import HEADLINE, MOVERS

    assert all(k in METRICS for k in MOVERS + sum(HEADLINE.values(), ()) + BREAKDOWN_KEYS)


def test_a_serving_check_prices_its_own_workload():
    """A serving scenario trains nothing: check prints no training FLOPs (a figure at max_seq_len that differed
    between two scenarios of one model), and a batch-1 decode step reads its KV cache at the mean context."""
    from moesim.accounting import decode_bytes_per_token, serving_mean_context
    from moesim.check import summary
    from moesim.loader import load_scenario

    s = load_scenario("mixtral-8x7b-h100-serve")
    out = summary(s)
    assert "training_flops_per_token" not in out
    context = serving_mean_context(s)
    assert context > 100
    assert out["decode_bytes_per_token_batch1"] == pytest.approx(decode_bytes_per_token(s.model, context))
    assert out["decode_bytes_per_token_batch1"] > decode_bytes_per_token(s.model, 0.0)
    train = summary(load_scenario("mixtral-8x7b-h100-train"))
    assert "training_flops_per_token" in train
    assert "kv_cache_bytes_per_token" not in train and "decode_bytes_per_token_batch1" not in train  # no KV, no decode
