"""CostModel with profiles: shipped A100/H100 defaults, hardware.profile, direction of predictions."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from moesim import scenario_from_dict
from moesim.costmodel import (
    CostModel,
    ProfiledCostModel,
    RooflineCostModel,
    build_cost_model,
    cost_model,
)
from moesim.costmodel.profile import load_default_profile
from moesim.errors import InputError
from moesim.presets import HARDWARE
from moesim.schemas import HardwareSpec

PROFILES = Path(__file__).resolve().parents[1] / "moesim" / "data" / "profiles"


def hw(preset: str, **update) -> HardwareSpec:
    return HardwareSpec.model_validate({**HARDWARE[preset], **update})


@pytest.mark.parametrize("fname", ["a100.yaml", "h100.yaml"])
def test_shipped_profiles_record_held_out_error(fname):
    p = load_default_profile(fname)
    assert "vidur" in p.source and "7d47513" in p.source and "MIT" in p.source
    for part in ("gemm", "gemm_unseen_model", "memory", "all_reduce_intra", "send_recv_intra"):
        e = p.fit_error[part]
        assert e.rows_held_out > 0 and e.rows_fit > 0
        assert 0 <= e.median_abs_pct <= e.p90_abs_pct <= e.max_abs_pct
    assert p.fit_error["gemm"].median_abs_pct < 10


def test_a100_profile_has_attention():
    assert load_default_profile("a100.yaml").fit_error["attention_prefill"].rows_held_out > 0


@pytest.mark.parametrize("preset, basis", [
    ("a100-80gb", "profile"), ("a100-40gb", "profile"), ("h100-sxm", "profile"),
    ("h200", "profile"), ("m2", "datasheet"),
])
def test_build_cost_model_picks_default_by_device(preset, basis):
    assert build_cost_model(hw(preset)).basis.startswith(basis)


def test_h200_borrows_h100_efficiencies_on_its_own_bandwidth():
    h100, h200 = build_cost_model(hw("h100-sxm")), build_cost_model(hw("h200"))
    assert h200.profile.reference.mem_bw_gbps == 4800.0
    # weight streaming (decode GEMV) speeds up by the bandwidth ratio; a big GEMM does not
    assert h100.gemm_s(1, 14336, 4096) / h200.gemm_s(1, 14336, 4096) == pytest.approx(4800 / 3350, rel=0.1)
    assert h200.gemm_s(8192, 14336, 4096) == pytest.approx(h100.gemm_s(8192, 14336, 4096))


def test_default_profile_is_rebased_on_the_device_datasheet():
    cm40, cm80 = build_cost_model(hw("a100-40gb")), build_cost_model(hw("a100-80gb"))
    assert cm40.profile.reference.mem_bw_gbps == 1555.0
    # a weight-streaming GEMV is slower with less bandwidth; a big GEMM is compute-bound, equal
    assert cm40.gemm_s(1, 28672, 4096) > cm80.gemm_s(1, 28672, 4096)
    assert cm40.gemm_s(8192, 28672, 4096) == pytest.approx(cm80.gemm_s(8192, 28672, 4096))
    # a default profile describes the node, not the network: inter-node links from the datasheet
    assert cm80.p2p_s(1e6, intra=False) == pytest.approx(cost_model(hw("a100-80gb")).p2p_s(1e6, intra=False))


def test_both_implementations_satisfy_the_protocol():
    h = hw("h100-sxm")
    roof, prof = cost_model(h), build_cost_model(h)
    assert isinstance(roof, RooflineCostModel) and roof.profile is None and roof.basis == "datasheet"
    assert isinstance(prof, ProfiledCostModel) and prof.profile is not None
    assert isinstance(roof, CostModel) and isinstance(prof, CostModel)  # every protocol member present
    assert cost_model(h, prof.profile).gemm_s(64, 4096, 4096) == prof.gemm_s(64, 4096, 4096)
    with pytest.raises(TypeError):
        CostModel(h)  # the protocol: build with cost_model / build_cost_model
    with pytest.raises(TypeError, match="RooflineCostModel"):
        ProfiledCostModel(h, None)


def _device(**update) -> dict:
    """The H100 preset as an inline device (no preset), with ``update`` applied."""
    base = {k: v for k, v in HARDWARE["h100-sxm"].items()}
    base["device"] = {**base["device"], **update}
    return base


def test_device_default_profile_wins_over_the_name():
    named = HardwareSpec.model_validate(_device(default_profile="a100.yaml"))
    assert build_cost_model(named).profile.reference.mem_bw_gbps == 3350.0  # A100's table, H100's bandwidth
    assert build_cost_model(named).profile.gemm == load_default_profile("a100.yaml").gemm
    off = HardwareSpec.model_validate(_device(default_profile="datasheet"))
    assert isinstance(build_cost_model(off), RooflineCostModel)


def test_inline_device_without_default_profile_matches_by_name():
    """Older scenario files: an inline device that names no profile keeps the name-matched one."""
    device = {k: v for k, v in HARDWARE["h100-sxm"]["device"].items() if k != "default_profile"}
    inline = HardwareSpec.model_validate({**HARDWARE["h100-sxm"], "device": device})
    assert inline.device.default_profile is None
    assert build_cost_model(inline).profile.gemm == load_default_profile("h100.yaml").gemm
    other = HardwareSpec.model_validate({**HARDWARE["h100-sxm"], "device": {**device, "name": "Some NPU"}})
    assert isinstance(build_cost_model(other), RooflineCostModel)


def test_unknown_default_profile_is_one_line_naming_the_field_and_values():
    raw = {"model": {"preset": "mixtral-8x7b", "n_layers": 2},
           "hardware": {"preset": "h100-sxm", "device": {"default_profile": "b200.yaml"}},
           "plan": {"dp": 8}, "workload": {"kind": "training", "global_batch_seqs": 8, "seq_len": 128}}
    with pytest.raises(InputError) as err:
        scenario_from_dict(raw)
    msg = str(err.value)
    assert "\n" not in msg and "hardware.device.default_profile = 'b200.yaml'" in msg
    assert "a100.yaml, h100.yaml, datasheet" in msg


def test_a_new_device_is_one_preset_entry():
    """A B200-like device: a preset entry naming a profile (or 'datasheet') is all it takes."""
    entry = dict(name="HGX B200", node=dict(devices_per_node=8, intra_bw_gbps=900.0),
                 device=dict(name="NVIDIA B200", peak_tflops=dict(bf16=2250.0, fp8=4500.0), mem_bw_gbps=8000.0,
                             mem_gib=180.0, power_w=1000.0, usd_per_hour=5.0, default_profile="h100.yaml"))
    cm = build_cost_model(HardwareSpec.model_validate(entry))
    assert cm.profile.reference.mem_bw_gbps == 8000.0 and cm.profile.device == "NVIDIA B200"
    h100 = build_cost_model(hw("h100-sxm"))
    assert cm.gemm_s(1, 14336, 4096) < h100.gemm_s(1, 14336, 4096)  # weight streaming: more bandwidth
    entry["device"]["default_profile"] = "datasheet"
    assert build_cost_model(HardwareSpec.model_validate(entry)).basis == "datasheet"


@pytest.fixture(params=["datasheet", "profile"])
def cm(request) -> CostModel:
    h = hw("h100-sxm")
    return cost_model(h) if request.param == "datasheet" else build_cost_model(h)


def test_gemm_grows_with_every_dimension(cm):
    m = np.array([1, 64, 512, 4096, 32768])
    t = cm.gemm_s(m, 8192, 4096)
    assert np.all(np.diff(t) > 0)
    assert cm.gemm_s(512, 16384, 4096) > cm.gemm_s(512, 8192, 4096)
    assert cm.gemm_s(512, 8192, 8192) > cm.gemm_s(512, 8192, 4096)
    # achieved FLOP/s rises with tokens (small GEMMs stream weights)
    rate = 2.0 * m * 8192 * 4096 / t
    assert np.all(np.diff(rate) > 0)


def test_grouped_gemm_moves_the_right_way(cm):
    one = cm.grouped_gemm_s(np.array([64, 64, 0, 0]), 8192, 4096)
    more_tokens = cm.grouped_gemm_s(np.array([128, 64, 0, 0]), 8192, 4096)
    spread = cm.grouped_gemm_s(np.array([32, 32, 32, 32]), 8192, 4096)  # same tokens, more weights read
    assert more_tokens > one and spread > one
    assert cm.grouped_gemm_s(np.zeros(4), 8192, 4096) == 0.0
    batch = cm.grouped_gemm_s(np.array([[64, 64], [0, 0]]), 8192, 4096)
    assert batch.shape == (2,) and batch[1] == 0.0


def test_attention_memory_and_collectives_grow(cm):
    a = cm.attention_s(np.array([1, 1, 1]), np.array([512, 4096, 32768]), 64, 128, 8)
    assert np.all(np.diff(a) > 0)
    prefill = cm.attention_s(np.array([512, 2048, 8192]), np.array([512, 2048, 8192]), 64, 128, 8)
    assert np.all(np.diff(prefill) > 0)
    assert np.all(np.diff(cm.memory_s(np.array([1e3, 1e6, 1e9]))) > 0)
    assert np.all(np.diff(cm.allreduce_s(np.array([1e3, 1e6, 1e9]), 8)) > 0)
    assert cm.allreduce_s(1e8, 8) > cm.allreduce_s(1e8, 2)
    assert np.all(np.diff(cm.p2p_s(np.array([1e3, 1e6, 1e9]), True)) > 0)
    assert cm.alltoall_s(1e8, 8, 1) > cm.alltoall_s(1e7, 8, 1)


def test_attention_batch_pays_one_launch(cm):
    q, kv = np.ones(8), np.full(8, 2048.0)
    batched = cm.attention_batch_s(q, kv, 64, 128, 8)
    assert batched < float(np.sum(cm.attention_s(q, kv, 64, 128, 8)))
    assert batched > float(cm.attention_s(1, 2048, 64, 128, 8))


def _scenario(profile: Path, preset: str = "a100-80gb") -> dict:
    return {
        "model": {"preset": "mixtral-8x7b", "n_layers": 4},
        "hardware": {"preset": preset, "profile": str(profile)},
        "plan": {"dp": 8, "tp": 1, "pp": 1, "ep": 8, "microbatches": 2},
        "workload": {"kind": "training", "global_batch_seqs": 16, "seq_len": 1024},
    }


def test_scenario_hardware_profile_is_used():
    s = scenario_from_dict(_scenario(PROFILES / "a100.yaml"))
    cm = build_cost_model(s.hardware)
    assert cm.profile is not None and cm.profile.device == "NVIDIA A100 SXM4 80GB"
    # named explicitly: the inter-node links it measured apply too
    assert cm.p2p_s(1e6, intra=False) != pytest.approx(cost_model(s.hardware).p2p_s(1e6, intra=False))


def test_scenario_profile_from_another_device(monkeypatch):
    monkeypatch.delenv("MOESIM_FORCE_PROFILE", raising=False)
    raw = _scenario(PROFILES / "a100.yaml", preset="h100-sxm")
    with pytest.raises(InputError, match="profile is for device 'NVIDIA A100 SXM4 80GB'"):
        scenario_from_dict(raw)  # refused when the scenario loads, before any simulation
    raw["hardware"]["force_profile"] = True
    s = scenario_from_dict(raw)
    assert build_cost_model(s.hardware).profile.device == "NVIDIA A100 SXM4 80GB"
    raw["hardware"]["force_profile"] = False
    monkeypatch.setenv("MOESIM_FORCE_PROFILE", "1")
    assert build_cost_model(scenario_from_dict(raw).hardware).profile is not None


def test_corrupt_scenario_profile_is_an_input_error(tmp_path):
    bad = tmp_path / "p.yaml"
    bad.write_text("format: moesim-profile\nversion: 1\ndevice: x\n")
    with pytest.raises(InputError, match="invalid profile field"):
        scenario_from_dict(_scenario(bad))


def test_refit_from_vidur_subset(tmp_path):
    """The shipped fit runs end to end on a few copied rows (the full data lives in ../shared)."""
    from moesim.calibrate.fit_vidur import main

    data = Path(__file__).parent / "data" / "vidur-subset"
    assert main(["--data", str(data), "--out", str(tmp_path), "--devices", "a100"]) == 0
    from moesim.costmodel.profile import load_profile

    p = load_profile(tmp_path / "a100.yaml")
    assert {"gemm", "memory", "attention_decode", "all_reduce_intra"} <= set(p.fit_error)
    assert build_cost_model(hw("a100-80gb").model_copy(update={"profile": tmp_path / "a100.yaml"})).profile == p


def test_idle_experts_cost_nothing():
    cm = build_cost_model(hw("a100-80gb"))
    busy = cm.grouped_gemm_s(np.array([64, 0, 0, 0]), 8192, 4096)
    assert busy == pytest.approx(cm.grouped_gemm_s(np.array([64]), 8192, 4096))


SHARED_VIDUR = Path(__file__).resolve().parents[2] / "shared" / "measurements" / "gpu-kernels-vidur"


@pytest.mark.skipif(not SHARED_VIDUR.is_dir(), reason="../shared/measurements is not beside the checkout")
@pytest.mark.parametrize("device", ["a100", "h100"])
def test_shipped_profiles_match_a_refit(device):
    """The committed profiles are what the fitting code makes of the full Vidur data today."""
    from moesim.calibrate.fit_vidur import fit_device

    fresh, shipped = fit_device(SHARED_VIDUR, device), load_default_profile(f"{device}.yaml")
    np.testing.assert_allclose(fresh.gemm.efficiency, shipped.gemm.efficiency, rtol=1e-2)
    assert fresh.launch_overhead_us == pytest.approx(shipped.launch_overhead_us, rel=1e-2)
    assert fresh.flash_attention == shipped.flash_attention
    assert fresh.attention_fixed_us == shipped.attention_fixed_us
    assert fresh.fit_error["gemm"].median_abs_pct == pytest.approx(shipped.fit_error["gemm"].median_abs_pct, rel=1e-2)


def test_rebased_intra_node_collectives_follow_the_node_link():
    """The H100 profile's NCCL fits were measured on NVLink 4 (450 GB/s per direction): on an H800's
    cut NVLink (200) and a B200's NVLink 5 (900) their bandwidths scale by the link, latencies stay."""
    from moesim.costmodel.profile import default_profile_for
    from moesim.presets.hardware import HARDWARE

    def links(preset):
        hw = HardwareSpec.model_validate(HARDWARE[preset])
        coll = default_profile_for(hw.device, hw.node.intra_bw_gbps).collectives
        return coll, hw.node.intra_bw_gbps

    h100, h100_link = links("h100-sxm")
    assert h100.link_gbps == h100_link == 450.0
    for preset in ("h800", "b200"):
        other, link = links(preset)
        ratio = link / h100_link
        assert other.link_gbps == link
        assert other.all_reduce.intra.bw_gbps == pytest.approx(h100.all_reduce.intra.bw_gbps * ratio)
        assert other.send_recv.intra.bw_gbps == pytest.approx(h100.send_recv.intra.bw_gbps * ratio)
        for n, fit in h100.all_reduce.intra_by_ranks.items():
            assert other.all_reduce.intra_by_ranks[n].bw_gbps == pytest.approx(fit.bw_gbps * ratio)
            assert other.all_reduce.intra_by_ranks[n].latency_us == fit.latency_us
    # the engines see it: a 64 MB all-reduce over 8 GPUs costs more on the H800 than on the H100
    h800 = build_cost_model(HardwareSpec.model_validate(HARDWARE["h800"]))
    h100_cm = build_cost_model(HardwareSpec.model_validate(HARDWARE["h100-sxm"]))
    assert float(h800.allreduce_s(64e6, 8, 1)) > 2.0 * float(h100_cm.allreduce_s(64e6, 8, 1))
    # a link of unknown origin is kept as measured
    assert h100.model_copy(update={"link_gbps": None}).on_link(200.0).all_reduce == h100.all_reduce


def test_a_paged_kv_attention_table_prices_serving_only():
    """The A100 profile's attention table is Vidur's vLLM kernel over a paged KV cache: serving
    prefill takes it; training's flash attention over contiguous Q/K/V the published FlashAttention-2
    A100 benchmark the profile names (``flash_attention``); without one, the datasheet's rate (the
    large-GEMM efficiency x 0.8, as on a device without a table). A table measured on contiguous
    Q/K/V (``moesim calibrate``) prices both."""
    from moesim.costmodel.flash_attention import efficiency as flash_efficiency

    profile = load_default_profile("a100.yaml")
    assert profile.attention.kernel == "paged" and profile.flash_attention == "fa2-a100"
    a100 = hw("a100-80gb")
    paged = cost_model(a100, profile)
    datasheet = RooflineCostModel(a100)
    q = np.array([512.0, 4096.0, 8192.0])
    table = profile.attention.prefill_efficiency.lookup(q, q)
    assert np.allclose(paged.attention_efficiency(q, q), table)
    assert np.allclose(paged.attention_efficiency(q, q, paged=False, head_dim=64),
                       flash_efficiency("fa2-a100", q, q, 64))
    assert np.all(paged.attention_efficiency(q, q, paged=False) > table)  # the paged kernel is the slower one
    args = (q, q, 32, 128, 8)
    assert np.all(paged.attention_batch_s(*args, paged=False) < paged.attention_batch_s(*args))
    no_flash = cost_model(a100, profile.model_copy(update={"flash_attention": None}))
    assert np.allclose(no_flash.attention_efficiency(q, q, paged=False), datasheet.attention_efficiency(q, q))
    contiguous = cost_model(a100, profile.model_copy(update={"flash_attention": None, "attention": profile.attention.model_copy(
        update={"kernel": "contiguous"})}))
    assert np.allclose(contiguous.attention_efficiency(q, q, paged=False), table)


def test_training_attention_is_not_a_paged_kernel_and_serving_is():
    from moesim import load_scenario
    from moesim.engine.ops import attention_core_op
    from moesim.engine.serving.decode_cost import IterationCost
    from moesim.engine.training.layer_costs import training_dtypes

    train = load_scenario("mixtral-8x7b-h100-train")
    dt = training_dtypes(train)
    assert dt.paged_kv is False
    dims = type("Dims", (), dict(heads=32, head_dim=128, kv_heads=8))()
    assert attention_core_op(dims, dt, [4096.0], [4096.0]).args["paged"] is False
    serve = load_scenario("mixtral-8x7b-h100-serve")
    cost = IterationCost(serve, build_cost_model(serve.hardware), np.random.default_rng(0), max_tokens=512,
                         max_context=512)
    assert cost.dtypes.paged_kv is True
    assert "paged" not in attention_core_op(dims, cost.dtypes, [512.0], [512.0]).args


def test_a_profile_attention_kernel_other_than_paged_or_contiguous_is_one_line(tmp_path):
    bad = tmp_path / "p.yaml"
    bad.write_text((PROFILES / "a100.yaml").read_text().replace("  kernel: paged\n", "  kernel: flash\n"))
    with pytest.raises(InputError) as exc:
        scenario_from_dict(_scenario(bad))
    msg = str(exc.value)
    assert "\n" not in msg and "attention.kernel" in msg and "'contiguous' or 'paged'" in msg


def test_a_profile_naming_an_unknown_flash_attention_table_is_one_line(tmp_path):
    bad = tmp_path / "p.yaml"
    text = (PROFILES / "a100.yaml").read_text()
    assert "flash_attention: fa2-a100\n" in text
    bad.write_text(text.replace("flash_attention: fa2-a100\n", "flash_attention: fa3-a100\n"))
    with pytest.raises(InputError) as exc:
        scenario_from_dict(_scenario(bad))
    msg = str(exc.value)
    assert "\n" not in msg and "flash_attention" in msg and "'fa2-a100' or 'cudnn-h100'" in msg
