"""Every preset validates, and the accounting reproduces the published parameter counts."""

from __future__ import annotations

import pytest

from moesim.accounting import param_counts
from moesim.costmodel.profile import default_profile_name
from moesim.presets import HARDWARE, MODELS
from moesim.schemas import DeviceSpec, HardwareSpec, ModelSpec
from moesim.schemas.hardware import shipped_profile_names


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
    # every preset names its cost model: a shipped profile, or the datasheet
    assert hw.device.default_profile in set(shipped_profile_names()) | {"datasheet"}


def test_preset_profiles_agree_with_name_matching():
    """The presets name the profile name matching picks for their device names; a device name matching
    none names the datasheet, or (the RTX PRO 6000, L40S and RTX 4090, added after the field) a shipped profile of
    its own."""
    explicit = {"rtx-pro-6000": "h100.yaml", "l40s": "h100.yaml", "rtx-4090": "h100.yaml"}
    for key, preset in HARDWARE.items():
        device = DeviceSpec(**preset["device"])
        assert device.default_profile == (default_profile_name(device.name) or explicit.get(key, "datasheet"))


@pytest.mark.parametrize(
    "name, total, active, tol",
    [
        ("mixtral-8x7b", 46.7e9, 12.9e9, 0.005),  # Mistral: 46.7B total, 12.9B active
        ("deepseek-v3", 671e9, 37e9, 0.02),  # DeepSeek-V3 report: 671B, 37B active
        ("llama-2-7b", 6.74e9, 6.74e9, 0.005),  # Meta: 6.74B
        ("kimi-k2", 1.0e12, 32e9, 0.03),  # Moonshot's model card: 1T total, 32B active (rounded)
        ("qwen3-30b-a3b", 30.5e9, 3.3e9, 0.02),  # Qwen's model card: 30.5B total, 3.3B activated
        ("qwen3-235b-a22b", 235e9, 22e9, 0.01),  # model card: 235B, 22B activated
        ("qwen1.5-moe-a2.7b", 14.3e9, 2.7e9, 0.01),  # model card: 14.3B, 2.7B activated
        ("olmoe-1b-7b", 6.9e9, 1.3e9, 0.02),  # OLMoE paper (arXiv:2409.02060): 6.9B, 1.3B active
        ("dbrx", 132e9, 36e9, 0.015),  # Databricks' model card: 132B total, 36B active
        ("llama-3.1-8b", 8.03e9, 8.03e9, 0.005),  # Meta's Llama 3.1 model cards: 8B, 70B, 405B
        ("llama-3.1-70b", 70.6e9, 70.6e9, 0.005),
        ("llama-3.1-405b", 405e9, 405e9, 0.005),
    ],
)
def test_published_parameter_counts(name, total, active, tol):
    p = param_counts(ModelSpec(**MODELS[name]))
    assert p.total == pytest.approx(total, rel=tol)
    assert p.active == pytest.approx(active, rel=tol)


@pytest.mark.parametrize(("preset", "config"), [
    ("qwen3-30b-a3b", "qwen3-30b-a3b"), ("qwen3-235b-a22b", "qwen3-235b-a22b"), ("qwen1.5-moe-a2.7b", "qwen1.5-moe-a2.7b"),
    ("olmoe-1b-7b", "olmoe-1b-7b-0924"), ("dbrx", "dbrx-base"), ("grok-1", "grok-1")])
def test_presets_are_their_config_json(preset, config, root):
    """These presets are the Hugging Face import of the published config.json (tests/data/hf_configs)."""
    import json

    from moesim.hf_config import model_fields

    cfg = json.loads((root / "tests" / "data" / "hf_configs" / f"{config}.json").read_text())
    assert ModelSpec(**{**MODELS[preset], "name": "x"}) == ModelSpec(**{**model_fields(cfg), "name": "x"})


def test_deepseek_v2_lite_is_15_7b_with_2_4b_active_beside_its_embedding():
    """DeepSeek's model card: 15.7B total, 2.4B activated, which leaves out the 0.21B input embedding."""
    m = ModelSpec(**MODELS["deepseek-v2-lite"])
    p = param_counts(m)
    assert p.total == pytest.approx(15.7e9, rel=0.005) and m.mla is not None
    assert p.active - m.vocab_size * m.d_model == pytest.approx(2.4e9, rel=0.03)


def test_grok_1_is_314b_with_its_head_tied():
    """xAI publishes 314B and no active count; the release ties the output head to the embedding."""
    m = ModelSpec(**MODELS["grok-1"])
    assert m.tied_embeddings and param_counts(m).total == pytest.approx(314e9, rel=0.01)


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


def test_tpu_v3_preset_carries_the_cited_figures():
    """tpu-v3 is one TensorCore: half of Google's per-chip figures (cloud.google.com/tpu/docs/v3)."""
    hw = HardwareSpec(**HARDWARE["tpu-v3"])
    d = hw.device
    chip_tflops, chip_hbm_gbps, chip_hbm_gib, chip_max_w = 123.0, 900.0, 32.0, 262.0
    assert d.peak_tflops == {"bf16": chip_tflops / 2}  # bf16 only: no fp16 MXU, no published fp32 peak
    assert d.mem_bw_gbps == chip_hbm_gbps / 2 and d.mem_gib == chip_hbm_gib / 2
    assert d.power_w == chip_max_w / 2
    assert d.usd_per_hour == pytest.approx(8.00 / 8)  # v3-8 (8 cores) at $8.00/h
    # ICI: 340 TB/s all-reduce bandwidth per 1024-chip pod, 2048 cores
    assert hw.node.intra_bw_gbps == hw.cluster.nic_bw_gbps == pytest.approx(340e3 / 2048, abs=0.5)
    assert hw.node.devices_per_node == 8  # one v3-8 host board: 4 chips
    # whole-step efficiency that reproduces GShard's MoE(128E, 12L) on 128 TPU v3 cores (Table 3)
    assert d.compute_efficiency == 0.55
    assert d.memory_efficiency == DeviceSpec.model_fields["memory_efficiency"].default
    assert d.default_profile == "datasheet"
    assert default_profile_name(d.name) is None  # no shipped profile claims a TPU by name


def test_tpu_v3_is_listed_and_drives_the_switch_validation_scenario(capsys, root):
    from moesim.cli import main
    from moesim.costmodel.profile import default_profile_for
    from moesim.loader import load_scenario

    assert "tpu-v3" in HARDWARE
    assert main(["presets"]) == 0
    assert "tpu-v3" in capsys.readouterr().out
    s = load_scenario(root / "moesim" / "data" / "validation" / "switch-base-128-tpuv3.yaml")
    assert s.hardware.device == HardwareSpec(**HARDWARE["tpu-v3"]).device
    assert s.hardware.n_devices == 32
    assert default_profile_for(s.hardware.device) is None  # the datasheet roofline


def test_tpu_v3_efficiency_reproduces_gshard_moe_128e_12l():
    """The derivation in the preset's comment: GShard MoE(128E, 12L), 2.16 steps/s (Table 3)."""
    from moesim.loader import scenario_from_dict
    from moesim.simulate import simulate

    raw = dict(
        name="gshard-moe-128e-12l",
        # encoder and decoder tokens each pass 6 layers: 6 blocks over all 2^20 tokens, fp32 as trained
        model=dict(name="GShard MoE(128E, 12L)", n_layers=6, d_model=1024, n_heads=16, n_kv_heads=16,
                   head_dim=128, vocab_size=32000, ffn_hidden=8192, expert_ffn_hidden=8192, n_experts=128,
                   top_k=2, moe_every=2, gated_ffn=False, tied_embeddings=False, max_seq_len=512, dtype="fp32"),
        hardware=dict(preset="tpu-v3", cluster=dict(nodes=16)),
        plan=dict(dp=128, tp=1, pp=1, ep=128, microbatches=1, zero_stage=0, recompute="none"),
        workload=dict(kind="training", global_batch_seqs=2048, seq_len=512),
        routing=dict(distribution="uniform", capacity_factor=1.0, overflow="drop", seed=0),  # 2N/E
    )
    steps_per_s = 1.0 / simulate(scenario_from_dict(raw)).summary["step_time_s"]
    assert steps_per_s == pytest.approx(2.16, rel=0.05)


def test_h800_preset_is_an_h100_with_cut_nvlink():
    """H800: H100 SXM compute and memory, NVLink 400 GB/s bidirectional = 200 per direction (NVIDIA
    H800 datasheet; DeepSeek-V3 report sec. 3.2.2: ~160 GB/s achievable), 8 x 400 Gb/s IB per node."""
    h800, h100 = HardwareSpec(**HARDWARE["h800"]), HardwareSpec(**HARDWARE["h100-sxm"])
    assert h800.device.peak_tflops == h100.device.peak_tflops
    assert h800.device.mem_bw_gbps == h100.device.mem_bw_gbps == 3350.0
    assert h800.device.mem_gib == h100.device.mem_gib == 80.0
    assert h800.node.intra_bw_gbps == 200.0 and h800.node.devices_per_node == 8
    assert 160.0 <= h800.node.intra_bw_gbps < h100.node.intra_bw_gbps
    assert h800.cluster.nic_bw_gbps == 50.0  # 400 Gb/s per GPU
    assert h800.device.default_profile == "h100.yaml" == default_profile_name(h800.device.name)


def test_readme_preset_table_matches_the_accounting(root):
    """Every row of the README's model-preset table names a preset and quotes moesim's own counts,
    as `moesim presets` prints them."""
    import re

    from moesim.formatting import fmt_value

    rows = re.findall(r"^\| ([a-z0-9.\-]+) \| ([\d.]+ [BT]) \| ([\d.]+ [BT]) \|", (root / "README.md").read_text(), re.M)
    assert sorted(name for name, _, _ in rows) == sorted(MODELS)
    for name, total, active in rows:
        p = param_counts(ModelSpec(**MODELS[name]))
        assert (total, active) == (fmt_value("total_params", p.total), fmt_value("active_params", p.active)), name
