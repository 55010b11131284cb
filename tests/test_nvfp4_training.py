"""NVFP4 training (model.dtype nvfp4 on Blackwell): FP4 block GEMMs, Transformer Engine's NVFP4 casts, 16-bit weights."""

from pathlib import Path

import pytest

import moesim
from moesim.accounting import param_counts
from moesim.costmodel.fp8 import NVFP4_COPY_BYTES, cached_weight_bytes, fp8_cast_bytes
from moesim.engine.op_types import BlockDims
from moesim.engine.ops import block_ops
from moesim.engine.training.fp8 import cast_recipe, fp8_training_ops
from moesim.engine.training.layer_costs import training_dtypes
from moesim.memory import memory_report, weight_params_per_device
from moesim.train_bytes import fp8_weight_cache_bytes

ROOT = Path(__file__).resolve().parents[1]
LLAMA = ROOT / "moesim" / "data" / "validation" / "llama3-8b-h100-train.yaml"
B200 = ["hardware.preset=b200", "plan.zero_stage=1", "plan.microbatches=4", "workload.global_batch_seqs=32"]


def load(dtype: str, *extra: str):
    return moesim.load_scenario(LLAMA, [*B200, f"model.dtype={dtype}", *extra])


def test_an_nvfp4_cast_is_an_amax_pass_and_two_four_bit_copies_with_their_scales():
    assert NVFP4_COPY_BYTES == 0.5 + 1 / 16
    c = fp8_cast_bytes(1000.0, 64, 128, recipe="nvfp4", weight_casts_per_microbatch=0.25)
    per_elem = 2.0 + 2.0 + 2 * NVFP4_COPY_BYTES  # amax read, quantize read, rowwise + columnwise written
    assert float(c["fwd_bytes"]) == pytest.approx(1000 * 64 * per_elem)
    assert float(c["bwd_bytes"]) == pytest.approx(1000 * 128 * per_elem)
    assert float(c["weight_bytes"]) == pytest.approx(0.25 * 64 * 128 * per_elem)
    assert float(c["fwd_kernels"]) == float(c["bwd_kernels"]) == 2.0
    # the norm-fused input costs the same (no fused norm-to-NVFP4 kernel), on any GPU layout rule
    assert float(fp8_cast_bytes(1000.0, 64, 128, recipe="nvfp4", norm_fused=True, transposes=False)["fwd_bytes"]) \
        == pytest.approx(float(c["fwd_bytes"]))
    # the cached weight: both copies, on any GPU layout rule
    assert cached_weight_bytes("nvfp4") == cached_weight_bytes("nvfp4", False) == pytest.approx(1.125)


def test_the_cast_recipe_follows_the_compute_dtype():
    assert cast_recipe("fp4", "delayed") == "nvfp4"
    assert cast_recipe("fp8", "current") == "current"
    assert cast_recipe("bf16", "mxfp8") is None and cast_recipe("fp32", "delayed") is None


def test_every_block_gemm_but_the_router_gets_nvfp4_casts_and_a_2x_backward():
    s = load("nvfp4")
    dims = BlockDims.of(s.model, 1, 1)
    ops = block_ops(dims, training_dtypes(s), tokens=8192, q_tokens=[8192], kv_tokens=[8192], moe=False)
    out = fp8_training_ops(ops, "nvfp4", 0.5, split_accumulation=False, transposes=False)
    gemms = [op for op in ops if op.kind == "gemm"]
    casts = {op.name: op for op in out if op.kind == "fp8_cast"}
    assert gemms and all(f"{g.name}_cast" in casts and f"{g.name}_cast_bwd" in casts for g in gemms)
    for g in gemms:
        want = fp8_cast_bytes(g.args["m"], g.args["k"], g.args["n"], recipe="nvfp4", weight_casts_per_microbatch=0.5)
        assert casts[f"{g.name}_cast"].args["nbytes"] == pytest.approx(float(want["fwd_bytes"] + want["weight_bytes"]))
    assert all(op.bwd_factor == 2.0 for op in out if op.kind == "gemm")  # no split accumulation on Blackwell


def test_nvfp4_steps_run_faster_than_fp8_ones_which_run_faster_than_bf16_ones():
    steps = {dt: moesim.simulate(load(dt)).summary for dt in ("bf16", "fp8", "nvfp4")}
    assert steps["nvfp4"]["compute_dtype"] == "fp4"
    assert steps["nvfp4"]["step_time_s"] < steps["fp8"]["step_time_s"] < steps["bf16"]["step_time_s"]
    # the FP4 GEMMs are half the FP8 ones' time at most; attention, norms and casts keep the step above half
    assert steps["nvfp4"]["step_time_s"] > 0.5 * steps["fp8"]["step_time_s"]


def test_nvfp4_memory_keeps_16_bit_weights_and_caches_both_four_bit_copies():
    s = load("nvfp4")
    dense, experts = weight_params_per_device(s.model, s.plan)
    p = param_counts(s.model)
    block = (p.dense - p.embedding) / p.dense * dense + experts
    assert fp8_weight_cache_bytes(s, dense, experts) == pytest.approx(1.125 * block)
    assert fp8_weight_cache_bytes(load("nvfp4", "plan.fp8_weight_cache=false"), dense, experts) == 0.0
    nv, bf = memory_report(s), memory_report(load("bf16"))
    assert nv.weights_gib == pytest.approx(bf.weights_gib + 1.125 * block / 2**30)  # bf16 weights + the casts
    assert nv.activations_gib < memory_report(load("fp8")).activations_gib < bf.activations_gib  # 4-bit saved inputs


def test_nvfp4_primary_weights_drop_the_weight_casts_and_gather_four_bit_copies():
    """plan.fp8_param_gather under nvfp4: NVFP4 primary weights (Megatron-Bridge's fp4_param_gather, a pre-quantized
    LoRA base): no weight pass, nothing cached beside them, and the ZeRO gathers move one 4-bit copy with its scales."""
    c = fp8_cast_bytes(1000.0, 64, 128, recipe="nvfp4", fp8_params=True)
    assert float(c["weight_bytes"]) == 0.0 and float(c["weight_kernels"]) == 0.0
    assert float(c["fwd_bytes"]) == pytest.approx(float(fp8_cast_bytes(1000.0, 64, 128, recipe="nvfp4")["fwd_bytes"]))
    assert cached_weight_bytes("nvfp4", fp8_params=True) == 0.0
    cast, primary = load("nvfp4"), load("nvfp4", "plan.fp8_param_gather=true")
    assert fp8_weight_cache_bytes(primary, *weight_params_per_device(primary.model, primary.plan)) == 0.0
    a, b = moesim.simulate(cast).summary, moesim.simulate(primary).summary
    assert b["step_time_s"] < a["step_time_s"]
    # the gathers move 0.5625 bytes a weight where the gradients move 2: well under half the 16-bit gathers' time
    assert 0.0 < b["zero_gather_s"] < 0.5 * a["zero_gather_s"]


def test_fp8_only_knobs_do_not_move_an_nvfp4_step():
    base = moesim.simulate(load("nvfp4")).summary["step_time_s"]
    for knob in ("plan.fp8_recipe=mxfp8", "plan.fp8_output_proj=true"):
        assert moesim.simulate(load("nvfp4", knob)).summary["step_time_s"] == pytest.approx(base, rel=1e-12), knob
    # FP8 attention does apply (Transformer Engine's FP8 DPA beside NVFP4 linears)
    assert moesim.simulate(load("nvfp4", "plan.fp8_attention=true")).summary["step_time_s"] < base
