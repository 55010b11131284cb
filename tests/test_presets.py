"""Every preset validates, and the accounting reproduces the published parameter counts."""

from __future__ import annotations

import pytest

from moesim.accounting import param_counts
from moesim.presets import HARDWARE, MODELS
from moesim.schemas import HardwareSpec, ModelSpec


@pytest.mark.parametrize("name", sorted(MODELS))
def test_model_preset_validates(name):
    m = ModelSpec(**MODELS[name])
    p = param_counts(m)
    assert p.total >= p.active > 0
    assert p.total == (p.embedding + p.attention + p.dense_ffn + p.routed_experts
                       + p.shared_experts + p.router + p.norms)


@pytest.mark.parametrize("name", sorted(HARDWARE))
def test_hardware_preset_validates(name):
    hw = HardwareSpec(**HARDWARE[name])
    assert hw.device.peak_flops("bf16") > 0
    # Bandwidths are per direction: NVLink presets quote half the datasheet aggregate.
    if "H100" in hw.device.name or "H200" in hw.device.name:
        assert hw.node.intra_bw_gbps == 450.0
    if "A100" in hw.device.name:
        assert hw.node.intra_bw_gbps == 300.0


@pytest.mark.parametrize(
    "name, total, active, tol",
    [
        ("mixtral-8x7b", 46.7e9, 12.9e9, 0.005),  # Mistral: 46.7B total, 12.9B active
        ("deepseek-v3", 671e9, 37e9, 0.02),  # DeepSeek-V3 report: 671B, 37B active
        ("llama-2-7b", 6.74e9, 6.74e9, 0.005),  # Meta: 6.74B
    ],
)
def test_published_parameter_counts(name, total, active, tol):
    p = param_counts(ModelSpec(**MODELS[name]))
    assert p.total == pytest.approx(total, rel=tol)
    assert p.active == pytest.approx(active, rel=tol)


def test_gpt4_rumour_is_about_1_8t_with_250_to_290b_active():
    p = param_counts(ModelSpec(**MODELS["gpt4-rumour"]))
    assert 1.7e12 <= p.total <= 1.9e12
    assert 250e9 <= p.active <= 290e9


def test_switch_sizes():
    c = param_counts(ModelSpec(**MODELS["switch-c-2048"]))
    assert c.total == pytest.approx(1.6e12, rel=0.03)  # paper: 1571B
    b = param_counts(ModelSpec(**MODELS["switch-base-128"]))
    assert b.total == pytest.approx(7.4e9, rel=0.03)


def test_dense_model_has_no_routed_experts():
    m = ModelSpec(**MODELS["llama-2-70b"])
    assert not m.is_moe and m.n_moe_layers == 0
    assert param_counts(m).total == pytest.approx(69.0e9, rel=0.01)
