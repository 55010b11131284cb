"""`moesim check` says which cost model prices a scenario's kernels: a device's name or its default_profile may
pick a shipped profile, and nothing else in the output would tell a datasheet roofline from a measured one."""

from __future__ import annotations

from moesim.check import summary
from moesim.costmodel.datasheet import RooflineCostModel
from moesim.costmodel.model import build_cost_model, cost_model_text
from moesim.loader import load_scenario

TRAIN = "mixtral-8x7b-h100-train"


def test_each_way_of_pricing_says_itself_and_matches_the_model_built():
    preset = load_scenario(TRAIN)
    assert summary(preset)["cost_model"].startswith("shipped profile h100.yaml (hardware.device.default_profile)")
    datasheet = load_scenario(TRAIN, ["hardware.device.default_profile=datasheet"])
    assert cost_model_text(datasheet.hardware) == "datasheet roofline (hardware.device.default_profile: datasheet)"
    assert isinstance(build_cost_model(datasheet.hardware), RooflineCostModel)
    # an inline device without default_profile: its name decides, and the text says so
    named = load_scenario(TRAIN, ["hardware.device.default_profile=null", "hardware.device.name=H100 NG"])
    unnamed = load_scenario(TRAIN, ["hardware.device.default_profile=null", "hardware.device.name=NextGen GPU"])
    assert "matched on the device name" in cost_model_text(named.hardware)
    assert not isinstance(build_cost_model(named.hardware), RooflineCostModel)
    assert cost_model_text(unnamed.hardware) == (
        "datasheet roofline (no shipped profile matches the device name 'NextGen GPU')")
    assert isinstance(build_cost_model(unnamed.hardware), RooflineCostModel)
