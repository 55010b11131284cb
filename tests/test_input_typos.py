"""Typos in a scenario's shape: ``key:value`` without the space, a field one section too high, and the
routing fields' own words about capacity and popularity (true to what the engine does)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from moesim.engine.expert_tp import routing_group_tokens, source_tokens
from moesim.engine.routing import cap_inclusion, capacity_per_expert
from moesim.errors import InputError
from moesim.loader import check_colon_keys, load_scenario, nested_field_paths
from moesim.schemas import HardwareSpec, PlanSpec, RoutingSpec
from moesim.schemas._base import bound_reason
from tests.conftest import ROOT

TRAIN = ROOT / "scenarios" / "mixtral-8x7b-h100-train.yaml"
SERVE = ROOT / "scenarios" / "mixtral-8x7b-h100-serve.yaml"
GLUED = "hardware: key 'preset:a100-80gb' has no value: YAML needs a space after the colon ('preset: a100-80gb')"


def _error(path, overrides=()) -> str:
    with pytest.raises(InputError) as info:
        load_scenario(path, list(overrides))
    return str(info.value)


def _scenario(tmp_path, replace: dict[str, str]):
    text = TRAIN.read_text()
    for old, new in replace.items():
        assert old in text
        text = text.replace(old, new)
    p = tmp_path / "s.yaml"
    p.write_text(text)
    return p


# ---------------------------------------------------------------- key:value without the space


def test_glued_key_in_a_set_value_names_the_key_and_the_fix():
    assert _error(TRAIN, ["hardware={preset:a100-80gb}"]) == GLUED


def test_glued_key_in_a_flow_mapping_of_a_file(tmp_path):
    p = _scenario(tmp_path, {"  preset: h100-sxm\n  cluster: {nodes: 8}\n": "  {preset:a100-80gb, cluster: {nodes: 8}}\n"})
    p.write_text(p.read_text().replace("hardware:\n  {", "hardware: {"))
    assert _error(p) == GLUED


def test_glued_key_deeper_down_names_its_section(tmp_path):
    assert _error(TRAIN, ["hardware.cluster={nodes:8}"]) == (
        "hardware.cluster: key 'nodes:8' has no value: YAML needs a space after the colon ('nodes: 8')")


def test_glued_key_in_a_block_mapping_is_pointed_at_by_line(tmp_path):
    p = _scenario(tmp_path, {"  preset: h100-sxm\n": "  preset:a100-80gb\n"})
    msg = _error(p)
    assert "YAML error at line 7" in msg, msg
    assert msg.endswith("line 6 has 'preset:a100-80gb': YAML needs a space after the colon ('preset: a100-80gb')"), msg


@pytest.mark.parametrize("section, value, fixed", [("hardware", "preset:a100-80gb", "preset: a100-80gb"),
                                                   ("model", "preset:mixtral-8x7b", "preset: mixtral-8x7b")])
def test_a_glued_preset_line_alone_is_not_a_preset_name(section, value, fixed):
    assert _error(TRAIN, [f"{section}={value}"]) == (
        f"{section} = {value!r}: YAML needs a space after the colon ({fixed!r})")


def test_a_glued_line_where_a_section_goes_says_so():
    msg = _error(TRAIN, ["routing=capacity_factor:2"])
    assert msg == ("routing = 'capacity_factor:2': expected a mapping of routing's fields; "
                   "YAML needs a space after the colon ('capacity_factor: 2')"), msg


def test_colon_keys_that_are_not_typos_pass():
    check_colon_keys({"a": {"b: c": None, "d:e": 1, "f": None}, "g": ["h:i"]})  # spaced, valued, plain
    with pytest.raises(InputError, match=r"^a\.1: key 'k:v' has no value"):
        check_colon_keys({"a": [{"ok": 1}, {"k:v": None}]})


# ---------------------------------------------------------------- a field one section too high


@pytest.mark.parametrize("path, nested", [
    ("hardware.nodes", "hardware.cluster.nodes"),
    ("hardware.devices_per_node", "hardware.node.devices_per_node"),
    ("hardware.mem_gib", "hardware.device.mem_gib"),
    ("capacity_factor", "routing.capacity_factor"),
])
def test_a_field_written_one_section_too_high_is_pointed_down(path, nested):
    msg = _error(TRAIN, [f"{path}=8"])
    assert msg.startswith(f"{path}: unknown field; did you mean {nested}?"), msg
    fixed = load_scenario(TRAIN, [f"{nested}=8"])  # and following the hint works
    obj = fixed
    for part in nested.split("."):
        obj = getattr(obj, part)
    assert obj == 8


def test_the_issue_scenario_no_longer_points_at_node(tmp_path):
    p = _scenario(tmp_path, {"  preset: h100-sxm\n  cluster: {nodes: 8}\n": "  preset: a100-80gb\n  nodes: 8\n"})
    msg = _error(p)
    assert msg.startswith("hardware.nodes: unknown field; did you mean hardware.cluster.nodes?"), msg
    assert "did you mean node?" not in msg


def test_a_serving_field_one_section_too_high():
    msg = _error(SERVE, ["workload.n_requests=5"])
    assert msg.startswith("workload.n_requests: unknown field; did you mean workload.arrival.n_requests?"), msg


def test_a_plain_misspelling_keeps_its_did_you_mean():
    assert _error(TRAIN, ["hardware.nodse=8"]).startswith("hardware.nodse: unknown field; did you mean node?")
    assert _error(TRAIN, ["routing.capacity_facter=2"]).startswith(
        "routing.capacity_facter: unknown field; did you mean capacity_factor?")


def test_nested_field_paths_searches_every_sub_section():
    assert nested_field_paths(HardwareSpec, "nodes") == ["cluster.nodes"]
    assert nested_field_paths(HardwareSpec, "intra_bw_gbps") == ["node.intra_bw_gbps"]
    assert nested_field_paths(HardwareSpec, "no_such_field") == []


# ---------------------------------------------------------------- routing's words, checked


def test_capacity_factor_bound_reason_is_true():
    why = bound_reason(RoutingSpec.model_fields["capacity_factor"])
    assert "n_experts / top_k" in why and "beyond 64 every expert holds every token" not in why
    # the old claim was false: 128 experts, top-1, cf 64 leaves room for only half the tokens
    tokens = 4096
    assert capacity_per_expert(tokens, 1, 128, 64.0) == tokens // 2
    # at cf = n_experts / top_k every expert can hold every token of its source rank
    assert capacity_per_expert(tokens, 2, 128, 64.0) == tokens
    assert capacity_per_expert(tokens, 2, 8, 4.0) == tokens


def test_capacity_tokens_are_the_tp_groups_micro_batch():
    desc = RoutingSpec.model_fields["capacity_factor"].description
    assert "not divided by tp" in desc and "etp / tp" in desc
    tokens = 8 * 4096  # one CP rank's micro-batch, which its TP group holds
    assert source_tokens(PlanSpec(dp=8, tp=4, ep=8), tokens) == tokens  # etp = tp: not divided by tp
    assert source_tokens(PlanSpec(dp=8, tp=4, ep=8, etp=1), tokens) == tokens // 4
    assert routing_group_tokens(PlanSpec(dp=8, tp=4, ep=8), tokens) == 8 * tokens


def test_popularity_convention_is_described_as_cap_inclusion_does_it():
    desc = RoutingSpec.model_fields["distribution"].description
    assert "share of all top_k assignments" in desc and "1/top_k" in desc and "Plackett-Luce" in desc
    p = cap_inclusion(np.array([0.9, 0.06, 0.04]), 2)  # capped at 1/2, the excess 0.4 spread 0.06 : 0.04
    np.testing.assert_allclose(p, [0.5, 0.3, 0.2])


def test_field_reference_is_regenerated():
    out = subprocess.run([sys.executable, "-m", "moesim.fielddoc"], capture_output=True, text=True, check=True,
                         cwd=ROOT).stdout
    doc = (ROOT / "docs" / "scenario-fields.md").read_text()
    rows = [line for line in out.splitlines() if line.startswith(("| `routing.capacity_factor`", "| `routing.distribution`"))]
    assert len(rows) == 2 and all(row in doc for row in rows)
    assert "beyond 64 every expert holds every token" not in doc
    readme = (ROOT / "README.md").read_text()
    assert "beyond 64 every expert holds every token" not in readme
    assert "at cf >= n_experts / top_k every expert can already hold every token" in " ".join(readme.split())
