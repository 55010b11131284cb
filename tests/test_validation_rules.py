"""Each validation rule gets a bad value and must answer with one line naming the field."""

from __future__ import annotations

import pytest

from moesim.errors import InputError
from moesim.loader import scenario_from_dict


def _set(raw: dict, path: str, value) -> None:
    node = raw
    keys = path.split(".")
    for k in keys[:-1]:
        node = node.setdefault(k, {})
    node[keys[-1]] = value


CASES = [
    # (field path, bad value, words the message must contain)
    ("plan.tp", 3, ["plan.tp = 3", "must divide model.n_heads"]),
    ("model.n_kv_heads", 3, ["model.n_kv_heads = 3", "must divide model.n_heads"]),
    ("plan.pp", 5, ["plan.pp = 5", "must be <= model.n_layers (4)"]),
    ("plan.ep", 3, ["plan.ep = 3", "must divide plan.dp"]),
    # 8 experts, ep 8 of dp 8: 12 experts leave 8 dividing dp but not the experts; the way out divides both
    ("model.n_experts", 12, ["plan.ep = 8: must divide model.n_experts (12); allowed: 1, 2, 4"]),
    ("model.preset", "llama-2-7b", ["plan.ep = 8: model Llama-2-7B is dense (model.n_experts 1)", "allowed: 1"]),
    ("plan.dp", 16, ["plan: dp*tp*pp*cp = 16*1*1*1 = 16", "must equal the devices", "set plan.dp: 8 to keep the hardware"]),
    ("plan.pp", 2, ["plan: dp*tp*pp*cp = 8*1*2*1 = 16", "set plan.dp: 4 to keep the hardware; or set hardware.cluster.nodes: 2"]),
    ("model.top_k", 9, ["model.top_k = 9", "<= model.n_experts"]),
    ("model.d_model", -1, ["model.d_model = -1", "greater than 0"]),
    ("model.n_layers", 0, ["model.n_layers = 0", "greater than 0"]),
    ("routing.capacity_factor", 0, ["routing.capacity_factor = 0", "greater than 0"]),
    ("routing.overflow", "spill", ["routing.overflow = 'spill'", "'drop' or 'dropless'"]),
    ("routing.distribution", "zipf2", ["routing.distribution = 'zipf2'", "'uniform'"]),
    ("plan.schedule", "pipedream", ["plan.schedule = 'pipedream'", "'gpipe'"]),
    ("plan.zero_stage", 4, ["plan.zero_stage = 4", "0, 1, 2 or 3"]),
    ("plan.virtual_stages", 2, ["plan.virtual_stages = 2", "interleaved"]),
    ("hardware.profile", "/nonexistent/profile.yaml", ["hardware.profile", "file not found"]),
    ("routing.distribution", "trace", ["routing.trace", "required"]),
    ("workload.global_batch_seqs", 15, ["workload.global_batch_seqs = 15", "multiple of plan.dp * plan.microbatches",
                                        "= 16)", "the nearest that divide: 16"]),
    ("plan.microbatches", 3, ["workload.global_batch_seqs = 16", "plan.microbatches may be"]),
    ("workload.seq_len", 10**6, ["workload.seq_len = 1000000", "max_seq_len"]),
    ("model.preset", "mixtral-9x9b", ["model.preset = 'mixtral-9x9b'", "unknown preset", "mixtral-8x7b"]),
    ("hardware.preset", "tpu-v9", ["hardware.preset = 'tpu-v9'", "unknown preset", "h100-sxm"]),
    ("model.colour", "blue", ["model.colour", "unknown field", "n_experts"]),
    # a number with its unit, a bandwidth in bits, and a flow mapping without its closing brace (as --set gives them)
    ("hardware.device.mem_gib", "80GB", ["hardware.device.mem_gib = '80GB'", "write the number alone (80)"]),
    ("hardware.cluster.nic_bw_gbps", "400 Gb/s", ["bandwidths are GB/s (bytes): 400 Gb/s is 50"]),
    ("plan", "{dp: 8", ["plan = '{dp: 8': expected a mapping of plan's fields", "needs its closing brace"]),
    ("plan.tp_size", 2, ["plan.tp_size", "unknown field", "allowed"]),
    ("model.dtype", "int3", ["model.dtype = 'int3'", "'bf16'"]),
    ("hardware.device.mem_gib", 0, ["hardware.device.mem_gib = 0", "greater than 0"]),
    ("hardware.device.peak_tflops", {"int4": 5.0}, ["peak_tflops.int4", "unknown dtype; allowed: fp32, bf16"]),
    ("model.first_dense_layers", 9, ["model.first_dense_layers = 9", "<= model.n_layers"]),
    ("workload.kind", "finetune", ["workload.kind = 'finetune': allowed: training, serving"]),
    ("workload.packed_attention", "both", ["workload.packed_attention = 'both'", "'per_sample' or 'whole_row'"]),
]


@pytest.mark.parametrize("path, value, words", CASES, ids=[c[0] + "=" + str(c[1]) for c in CASES])
def test_rule_message(raw, path, value, words):
    _set(raw, path, value)
    with pytest.raises(InputError) as info:
        scenario_from_dict(raw)
    msg = str(info.value)
    assert "\n" not in msg
    for w in words:
        assert w in msg, msg


def test_tp_larger_than_kv_heads_replicates(raw):
    raw["plan"].update(tp=8, dp=1, ep=1)
    s = scenario_from_dict(raw)  # Mixtral has 8 KV heads: TP8 splits them one per rank
    assert s.plan.tp == 8
    raw["model"]["n_kv_heads"] = 4
    assert scenario_from_dict(raw).model.kv_heads == 4  # 4 KV heads replicated over TP8


def test_serving_lengths_beyond_context(raw):
    raw["workload"] = {"kind": "serving", "prompt_tokens": {"dist": "fixed", "value": 30000},
                       "output_tokens": {"dist": "fixed", "value": 5000}}
    raw["plan"]["microbatches"] = 1
    with pytest.raises(InputError, match="max_seq_len"):
        scenario_from_dict(raw)


def test_serving_length_distribution_needs_its_parameters(raw):
    raw["workload"] = {"kind": "serving", "prompt_tokens": {"dist": "uniform", "low": 10},
                       "output_tokens": {"dist": "fixed", "value": 5}}
    with pytest.raises(InputError, match=r"workload.prompt_tokens.high: required"):
        scenario_from_dict(raw)


def test_poisson_needs_rate(raw):
    raw["workload"] = {"kind": "serving", "arrival": {"process": "poisson"},
                       "prompt_tokens": {"dist": "fixed", "value": 5}, "output_tokens": {"dist": "fixed", "value": 5}}
    with pytest.raises(InputError, match=r"workload.arrival.rate_per_s: required"):
        scenario_from_dict(raw)


def test_models_are_frozen(raw):
    s = scenario_from_dict(raw)
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="frozen"):
        s.plan.tp = 2  # type: ignore[misc]


def test_profile_from_another_device_is_refused_unless_forced(raw, tmp_path, root):
    import shutil

    profile = tmp_path / "a100.yaml"
    shutil.copy(root / "moesim" / "data" / "profiles" / "a100.yaml", profile)
    raw["hardware"]["profile"] = str(profile)  # an A100 profile on an H100 scenario
    with pytest.raises(InputError, match=r"hardware.profile: profile is for device .*A100.*force_profile"):
        scenario_from_dict(raw)
    raw["hardware"]["force_profile"] = True
    assert scenario_from_dict(raw).hardware.force_profile


def test_corrupt_profile_is_a_one_line_error(raw, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("device: [unclosed\n")
    raw["hardware"]["profile"] = str(bad)
    with pytest.raises(InputError) as info:
        scenario_from_dict(raw)
    assert "bad.yaml" in str(info.value) and "\n" not in str(info.value)


def test_plan_size_error_with_one_way_out_has_no_dangling_or(raw):
    """dp 1 tp 8 on one node made pp 4: no dp keeps 8 devices, so the one hint is the node count, without "or"."""
    raw["plan"].update(dp=1, tp=8, pp=4, ep=1)
    with pytest.raises(InputError) as info:
        scenario_from_dict(raw)
    msg = str(info.value)
    assert msg.endswith("x 1 node = 8); set hardware.cluster.nodes: 4") and " or " not in msg.split("node = 8)")[1]


def test_a_device_with_only_an_fp8_peak_is_refused():
    """An fp8 peak alone would be read as the bf16 one too (the fallback), pricing bf16 math twice as fast."""
    from moesim.schemas import HardwareSpec

    device = {"name": "custom", "peak_tflops": {"fp8": 2614.9}, "mem_bw_gbps": 5300, "mem_gib": 192, "power_w": 750,
              "usd_per_hour": 2.5}
    node = {"devices_per_node": 8, "intra_bw_gbps": 448}
    with pytest.raises(ValueError, match="give a bf16, fp16 or fp32 peak beside fp8"):
        HardwareSpec.model_validate({"device": device, "node": node})
    device["peak_tflops"]["bf16"] = 1307.4
    assert HardwareSpec.model_validate({"device": device, "node": node}).device.peak_flops("bf16") == pytest.approx(1307.4e12)
