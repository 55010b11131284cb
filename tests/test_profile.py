"""Calibration profiles: schema, tables, files (round trip, atomic save, one-line errors), device match."""

from __future__ import annotations

import numpy as np
import pytest
import yaml

from moesim.costmodel import profile as prof_mod
from moesim.costmodel.profile import (
    BytesCurve,
    GemmTable,
    check_device,
    default_profile_name,
    load_default_profile,
    load_profile,
    normalise_device_name,
    profile_from_dict,
    save_profile,
)
from moesim.errors import InputError


@pytest.fixture
def a100():
    return load_default_profile("a100.yaml")


def test_round_trip(tmp_path, a100):
    path = save_profile(a100, tmp_path / "p.yaml")
    assert load_profile(path) == a100


def test_save_is_atomic(tmp_path, a100, monkeypatch):
    path = save_profile(a100, tmp_path / "p.yaml")
    before = path.read_text()

    def boom(_profile):
        raise KeyboardInterrupt

    monkeypatch.setattr(prof_mod, "profile_to_yaml", boom)
    with pytest.raises(KeyboardInterrupt):
        save_profile(a100, path)
    assert path.read_text() == before
    assert [p.name for p in tmp_path.iterdir()] == ["p.yaml"]


def _one_line_error(path) -> str:
    with pytest.raises(InputError) as err:
        load_profile(path)
    msg = str(err.value)
    assert "\n" not in msg and str(path) in msg
    return msg


def test_missing_file(tmp_path):
    assert "not found" in _one_line_error(tmp_path / "nope.yaml")


def test_corrupt_yaml(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("format: moesim-profile\nversion: [1\n")
    assert "corrupt" in _one_line_error(p)


def test_binary_file(tmp_path):
    p = tmp_path / "bin.yaml"
    p.write_bytes(b"\xff\xfe\x00\x01")
    assert "not a text file" in _one_line_error(p)


def test_not_a_profile(tmp_path):
    p = tmp_path / "scenario.yaml"
    p.write_text("model: mixtral-8x7b\n")
    assert "not a moesim profile" in _one_line_error(p)


_ROUTER = {"tokens": [1, 64], "experts": [8], "top_k": [1], "us": [[[4.0, 9.0]]]}


@pytest.mark.parametrize("update, expected", [
    ({"version": 99}, "version 99 is not supported"),
    ({"memory_efficiency": 3.0}, "memory_efficiency"),
    ({"elementwise": {"router": {**_ROUTER, "us": [[[4.0, -9.0]]]}}}, "elementwise.router"),
    ({"elementwise": {"router": {**_ROUTER, "us": [[[4.0]]]}}}, "elementwise.router"),
    ({"elementwise": {"activation": {"elements": [512, 64], "us": [3.0, 9.0]}}}, "elementwise.activation"),
    ({"elementwise": {"activation": {"elements": [512], "us": ["fast"]}}}, "elementwise.activation.us"),
    ({"collectives": {"link_gbps": 0}}, "collectives.link_gbps"),
])
def test_bad_field_is_a_one_line_error_naming_it(tmp_path, a100, update, expected):
    data = {**yaml.safe_load(prof_mod.profile_to_yaml(a100)), **update}
    p = tmp_path / "bad.yaml"
    p.write_text(yaml.safe_dump(data))
    assert expected in _one_line_error(p)


def test_grouped_copy_cost_must_not_be_negative(tmp_path, a100):
    data = yaml.safe_load(prof_mod.profile_to_yaml(a100))
    data["grouped"] = {"efficiency": data["gemm"], "launch_overhead_us": 5.0, "copy_ns_per_element": -1.0}
    p = tmp_path / "bad.yaml"
    p.write_text(yaml.safe_dump(data))
    assert "grouped.copy_ns_per_element" in _one_line_error(p)


def test_profile_from_dict_rejects_non_mapping():
    with pytest.raises(InputError, match="not a moesim profile"):
        profile_from_dict([1, 2])


def test_device_names_normalise():
    assert normalise_device_name("NVIDIA A100-SXM4-80GB") == normalise_device_name("nvidia a100 sxm4 80gb")
    assert normalise_device_name("NVIDIA H100 80GB HBM3") != normalise_device_name("NVIDIA H100 SXM5 80GB")


def test_device_mismatch_is_an_error_unless_forced(a100):
    check_device(a100, "nvidia a100-sxm4-80gb")
    with pytest.raises(InputError, match="profile is for device 'NVIDIA A100 SXM4 80GB'"):
        check_device(a100, "NVIDIA H100 SXM5 80GB")
    check_device(a100, "NVIDIA H100 SXM5 80GB", force=True)


@pytest.mark.parametrize("name, expected", [
    ("NVIDIA A100 SXM4 80GB", "a100.yaml"), ("NVIDIA A100 SXM4 40GB", "a100.yaml"),
    ("NVIDIA H100 SXM5 80GB", "h100.yaml"), ("NVIDIA H200 SXM 141GB", "h100.yaml"), ("Apple M2 Ultra", None),
])
def test_default_profile_by_device_family(name, expected):
    assert default_profile_name(name) == expected


def _table() -> GemmTable:
    return GemmTable(tokens=[1, 16, 256], weight_elems=[1e6, 1e8], efficiency=[[0.01, 0.2, 0.6], [0.02, 0.3, 0.8]])


def test_table_hits_nodes_and_clamps():
    t = _table()
    assert t.lookup(16, 1e6) == pytest.approx(0.2)
    assert t.lookup(256, 1e8) == pytest.approx(0.8)
    assert t.lookup(1e6, 1e8) == pytest.approx(0.8)  # beyond the last node: clamped
    assert t.lookup(0.5, 1e3) == pytest.approx(0.01)


def test_table_interpolates_between_nodes():
    t = _table()
    mid = float(t.lookup(4, 1e6))  # half-way in log2 between 1 and 16
    assert 0.01 < mid < 0.2
    assert mid == pytest.approx(np.sqrt(0.01 * 0.2))  # log-efficiency interpolation
    v = t.lookup(np.array([1, 4, 16, 64, 256]), 1e7)
    assert np.all(np.diff(v) > 0)


@pytest.mark.parametrize("bad", [
    {"tokens": [16, 1], "weight_elems": [1.0], "efficiency": [[0.1, 0.2]]},
    {"tokens": [1, 16], "weight_elems": [1.0], "efficiency": [[0.1, 1.5]]},
    {"tokens": [1, 16], "weight_elems": [1.0, 2.0], "efficiency": [[0.1, 0.2]]},
])
def test_table_validation(bad):
    with pytest.raises(ValueError):
        GemmTable(**bad)


def test_cold_fraction_and_streaming(a100):
    curve = BytesCurve(bytes=[1e4, 1e6, 1e8], efficiency=[0.2, 1.0, 0.3])
    cpu_like = a100.model_copy(update={"cache_bytes": 32e6, "memory_curve": curve})
    f = cpu_like.cold_fraction(np.array([1e6, 16e6, 32e6, 64e6, 1e9]))
    assert list(f) == pytest.approx([0.0, 0.0, 0.5, 1.0, 1.0])
    eff = cpu_like.streaming_efficiency(np.array([1e3, 1e6, 1e7, 1e9]))
    assert list(eff) == pytest.approx([0.2, 1.0, np.sqrt(0.3), 0.3])
    assert list(a100.streaming_efficiency(np.array([1e3, 1e9]))) == [a100.memory_efficiency] * 2
    assert np.all(a100.cold_fraction(np.array([1.0, 1e12])) == 1.0)  # no cache: always streams
