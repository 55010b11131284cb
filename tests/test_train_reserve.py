"""What a CUDA training rank holds beside PyTorch (moesim/train_reserve.py), and the two DeepSeek-V3 memory savings
its scenario uses (plan.moments_dtype, plan.fp8_moe_act_input)."""

from __future__ import annotations

import pytest

from moesim.accounting import GIB, param_counts
from moesim.activations import recomputed_bytes_per_token
from moesim.engine.training.layer_costs import ADAM_BYTES_PER_PARAM, adam_step_bytes
from moesim.errors import InputError
from moesim.loader import load_scenario
from moesim.memory import memory_report
from moesim.precision import scenario_precision
from moesim.serving_reserve import CUDA_CONTEXT_GIB, CUDA_UNSEEN_GIB
from moesim.simulate import simulate
from moesim.train_bytes import optimizer_bytes
from moesim.train_reserve import (
    ALLTOALL_GIB_PER_PEER,
    COMMUNICATOR_GIB,
    COMMUNICATOR_GIB_PAIR,
    allocatable_gib,
    alltoall_peers,
    comm_buffer_gib,
    communicator_groups,
    held_gib,
)

QLORA = "mixtral-8x7b-qlora-1xa100"  # one A100: no communicator
FLAGPERF = "moesim/data/validation/llama3-8b-flagperf-megatron.yaml"  # Llama 3 8B on 8 A800, PP2 DP4


def test_a_rank_pays_one_communicator_per_group_it_reduces_over():
    s = load_scenario(FLAGPERF, ["plan.tp=2", "plan.dp=2", "plan.microbatches=256"])  # TP2 PP2 DP2 on 8 GPUs
    assert communicator_groups(s.plan) == {"world": 8, "tp": 2, "dp": 2, "pp": 2, "model": 4}
    # three groups of two GPUs at 544 MB each, the world and model-parallel groups at 688 MB (NCCL issue #964)
    assert comm_buffer_gib(s) == pytest.approx(3 * COMMUNICATOR_GIB_PAIR + 2 * COMMUNICATOR_GIB)
    assert 544e6 / 2**30 == pytest.approx(COMMUNICATOR_GIB_PAIR) and COMMUNICATOR_GIB > COMMUNICATOR_GIB_PAIR
    assert held_gib(s) == pytest.approx(CUDA_CONTEXT_GIB + comm_buffer_gib(s))


def test_one_gpu_holds_its_context_alone_and_apple_nothing():
    one = load_scenario(QLORA)
    assert communicator_groups(one.plan) == {} and comm_buffer_gib(one) == 0.0
    assert held_gib(one) == CUDA_CONTEXT_GIB
    mem = memory_report(one)
    assert mem.capacity_gib == pytest.approx(one.hardware.device.mem_gib - CUDA_UNSEEN_GIB - CUDA_CONTEXT_GIB)
    assert mem.held_gib == CUDA_CONTEXT_GIB
    mac = load_scenario("mixtral-8x7b-qlora-m2-ultra")
    assert held_gib(mac) == 0.0 and allocatable_gib(mac) == 0.75 * mac.hardware.device.mem_gib  # macOS's wired limit
    tpu = load_scenario("switch-base-128-train", ["hardware.preset=tpu-v3", "plan.dp=8", "plan.ep=8"])
    assert held_gib(tpu) == 0.0 and memory_report(tpu).capacity_gib == tpu.hardware.device.mem_gib


def test_an_all_to_all_opens_direct_connections_to_the_peers_in_its_node_only():
    mixtral = load_scenario("mixtral-8x7b-h100-train")  # EP8 inside an 8-GPU node, NCCL's all-to-all
    assert alltoall_peers(mixtral.plan, 8) == 7
    deepep = load_scenario("mixtral-8x7b-h100-train", ["plan.alltoall=deepep_normal"])
    assert alltoall_peers(deepep.plan, 8) == 0
    assert comm_buffer_gib(mixtral) - comm_buffer_gib(deepep) == pytest.approx(7 * ALLTOALL_GIB_PER_PEER)
    wide = load_scenario("deepseek-v3-h100-train", ["plan.alltoall=flat"])  # EP64 over 8 nodes, TP2 = ETP2
    assert alltoall_peers(wide.plan, 8) == 8 // wide.plan.expert_tp - 1


def test_the_capacity_is_what_cuda_reports_less_what_is_held_and_nvidia_smi_sees_all_of_it():
    s = load_scenario("mixtral-8x7b-h100-train")
    mem = memory_report(s)
    assert mem.capacity_gib == pytest.approx(s.hardware.device.mem_gib - CUDA_UNSEEN_GIB - mem.held_gib)
    summary = simulate(s, None).summary
    assert summary["memory_capacity_gib"] == pytest.approx(mem.capacity_gib)
    assert summary["peak_device_gib"] == pytest.approx(summary["peak_reserved_gib"] + mem.held_gib)


def test_a_plan_the_held_memory_pushes_over_says_what_holds_it():
    s = load_scenario("deepseek-v3-h800-train")
    mem = memory_report(s)
    assert mem.total_gib < s.hardware.device.mem_gib and not mem.fits  # it would have fit the card's 80 GiB
    reason = simulate(s, None).summary["fits_reason"]
    assert f"> capacity {mem.capacity_gib:.1f} GiB (of the 79.3 GiB CUDA reports, {mem.held_gib:.1f} GiB held by " \
           "the CUDA context and NCCL's buffers) per device" in reason


def test_bf16_moments_take_two_thirds_of_adams_states_and_move_less_in_the_step():
    assert optimizer_bytes(load_scenario(QLORA).plan, "bf16") == 12.0
    base = load_scenario("mixtral-8x7b-h100-train")
    bf16 = load_scenario("mixtral-8x7b-h100-train", ["plan.moments_dtype=bf16"])
    assert optimizer_bytes(bf16.plan, bf16.model.dtype) == 8.0
    assert memory_report(bf16).optimizer_gib == pytest.approx(memory_report(base).optimizer_gib * 8 / 12)
    assert memory_report(bf16).weights_gib == memory_report(base).weights_gib
    assert adam_step_bytes("fp32") == ADAM_BYTES_PER_PARAM and adam_step_bytes("bf16") == ADAM_BYTES_PER_PARAM - 8
    fp32_s, bf16_s = (simulate(x, None).summary["optimizer_s"] for x in (base, bf16))
    # a streaming pass of 20 bytes a parameter instead of 28 (its fixed launch cost aside)
    assert bf16_s == pytest.approx(fp32_s * adam_step_bytes("bf16") / ADAM_BYTES_PER_PARAM, rel=1e-3)


def test_an_fp8_swiglu_input_keeps_one_byte_of_each_kept_fc1_element():
    s = load_scenario("deepseek-v3-h800-train")
    m, prec = s.model, scenario_precision(s)
    slots = float(m.top_k)
    plain = recomputed_bytes_per_token(m, True, prec, slots, ["moe_act"])
    fp8 = recomputed_bytes_per_token(m, True, prec, slots, ["moe_act", "fp8_moe_act_input"])
    assert fp8 - plain == pytest.approx(slots * 2 * m.expert_width * 1)  # gate and up, 2 -> 1 byte each
    assert s.plan.fp8_moe_act_input
    kept16 = memory_report(load_scenario("deepseek-v3-h800-train", ["plan.fp8_moe_act_input=false"]))
    assert memory_report(s).activations_gib < kept16.activations_gib
    bf16 = load_scenario("deepseek-v3-h800-train", ["model.dtype=bf16"])  # no FP8: nothing changes
    assert recomputed_bytes_per_token(bf16.model, True, scenario_precision(bf16), slots, ["moe_act", "fp8_moe_act_input"]) \
        == recomputed_bytes_per_token(bf16.model, True, scenario_precision(bf16), slots, ["moe_act"])


def test_an_fp8_swiglu_input_needs_the_recompute_that_keeps_it():
    with pytest.raises(InputError, match="plan.fp8_moe_act_input") as info:
        load_scenario("mixtral-8x7b-h100-train", ["plan.fp8_moe_act_input=true"])
    assert "\n" not in str(info.value) and "moe_act" in str(info.value)


def test_deepseeks_rank_0_holds_the_embedding_and_the_head_with_the_reports_widths():
    """DualPipe puts the shallowest layers with the embedding and the deepest with the output head on one rank (DeepSeek-V3
    sec. 3.2.3): stage 0 holds 3 dense + 1 MoE layer and the embedding, and stage 15's 3 MoE layers and the head. By hand,
    with the report's widths (16-bit weights, fp32 gradients, fp32 master + BF16 moments sharded over DP 128 for dense
    and the 2 expert-DP ranks for experts). moesim then reads 79.8 GiB, 5 GiB over what an H800 leaves beside the CUDA
    context and NCCL's buffers, where the run fit: its stage-0 activations (47.7 GiB) read high (a known miss, as on
    FlagPerf's PP4/PP8 memory rows)."""
    s = load_scenario("deepseek-v3-h800-train")
    p = s.plan
    assert (p.grad_dtype, p.moments_dtype, p.fp8_moe_act_input, p.fp8_weight_cache) == ("fp32", "bf16", True, False)
    m = s.model
    table = m.vocab_size * m.d_model  # untied: the embedding and the head are one table each
    layer = (param_counts(m).attention + 2 * m.d_model * m.n_layers) / m.n_layers
    dense_ffn = param_counts(m).dense_ffn / m.first_dense_layers
    moe_dense = (param_counts(m).shared_experts + param_counts(m).router) / m.n_moe_layers
    dense = 2 * table + m.d_model + 7 * layer + 3 * dense_ffn + 4 * moe_dense  # tp 1: nothing split
    experts = 4 * param_counts(m).routed_experts / m.n_moe_layers / p.ep
    mem = memory_report(s)
    assert mem.weights_gib == pytest.approx((dense + experts) * 2 / GIB, rel=1e-9)
    assert mem.gradients_gib == pytest.approx((dense + experts) * 4 / GIB, rel=1e-9)
    assert mem.optimizer_gib == pytest.approx((dense / 128 + experts / 2) * 8 / GIB, rel=1e-9)
    assert mem.stage == 0 and not mem.fits and -6.0 < mem.headroom_gib < -4.0
    assert memory_report(load_scenario("deepseek-v3-h800-train", ["plan.fp8_weight_cache=true"])).total_gib > mem.total_gib


@pytest.mark.parametrize("mem_gib, wired", [(16, 16 * 2 / 3), (32, 32 * 2 / 3), (64, 48), (96, 72), (192, 144)])
def test_macos_lets_the_gpu_wire_two_thirds_of_a_small_mac_and_three_quarters_of_a_large_one(mem_gib, wired):
    from moesim.presets.apple_metal import gpu_wired_limit_gib

    s = load_scenario("mixtral-8x7b-qlora-m2-ultra", [f"hardware.device.mem_gib={mem_gib}"])
    assert gpu_wired_limit_gib(s.hardware.device) == pytest.approx(wired)
    assert allocatable_gib(s) == pytest.approx(wired)  # llama.cpp's logs: 10,922.67 MiB of 16 GB ... 73,728 of 96


def test_the_wired_limit_bounds_apple_training_and_serving_and_can_be_raised():
    from moesim.serving_reserve import engine_budget_bytes

    lora = load_scenario("mixtral-8x7b-qlora-m2-ultra")
    assert memory_report(lora).capacity_gib == pytest.approx(144.0)
    raised = load_scenario("mixtral-8x7b-qlora-m2-ultra", ["hardware.device.gpu_wired_limit_gib=180"])
    assert memory_report(raised).capacity_gib == 180.0
    serve = load_scenario("mixtral-8x7b-m2-ultra-serve")
    share = serve.workload.memory_utilization
    assert engine_budget_bytes(serve) / 2**30 == pytest.approx((share or 1.0) * 144.0)
    # a run past the wired limit but within the Mac's memory says which limit it met
    big = load_scenario("mixtral-8x7b-qlora-m2-ultra", ["workload.trainable.base_dtype=bf16",
                                                         "hardware.device.gpu_wired_limit_gib=90"])
    mem = memory_report(big)  # 95 GiB: more than the GPU may wire, well within the Mac's memory
    assert 90.0 < mem.total_gib < 192.0 and not mem.fits
    assert "what macOS lets the GPU wire of 192 GiB: hardware.device.gpu_wired_limit_gib" in simulate(big, None).summary["fits_reason"]
    with pytest.raises(InputError, match="gpu_wired_limit_gib") as info:
        load_scenario("mixtral-8x7b-qlora-m2-ultra", ["hardware.device.gpu_wired_limit_gib=200"])
    assert "\n" not in str(info.value)


def test_advice_offers_bf16_moments_where_they_make_the_difference():
    from moesim.fit_advice import fit_explanation

    s = load_scenario("mixtral-8x7b-h100-train", ["hardware.device.mem_gib=76"])  # 68.9 GiB for the tensors
    mem = memory_report(s)
    assert not mem.fits
    assert memory_report(load_scenario("mixtral-8x7b-h100-train", ["hardware.device.mem_gib=76",
                                                                   "plan.moments_dtype=bf16"])).fits
    assert "plan.moments_dtype: bf16 (Adam's moments in BF16, as DeepSeek-V3 trained)" in fit_explanation(s, mem)[1]
    bf16 = load_scenario("mixtral-8x7b-h100-train", ["hardware.device.mem_gib=70", "plan.moments_dtype=bf16"])
    assert "moments_dtype" not in fit_explanation(bf16)[1]  # already BF16: not offered again


def test_mlx_on_apple_silicon_strands_nothing_beyond_the_live_tensors():
    """MLX gives each array its own Metal buffer and frees cached ones before a new one: no CUDA-style
    stranded share, so an M2 Ultra's reserved figure is its live tensors' (it had read 193 GiB on a 192 GiB Mac)."""
    from moesim.memory import stranded_fraction

    s = load_scenario("mixtral-8x7b-qlora-m2-ultra", ["plan.recompute=full"])
    assert stranded_fraction(s) == 0.0
    summary = simulate(s, seed=0).summary
    assert summary["peak_reserved_gib"] == pytest.approx(summary["peak_memory_gib"])
    cuda = load_scenario("mixtral-8x7b-qlora-1xa100", ["plan.recompute=full"])
    assert stranded_fraction(cuda) > 0.2  # the same LoRA on an A100 under PyTorch's caching allocator


@pytest.mark.parametrize("device, runtime", [("AMD Instinct MI300X", "ROCm"), ("MI325X", "ROCm"),
                                             ("NVIDIA H100 SXM5 80GB", "CUDA"), ("NVIDIA GeForce RTX 4090", "CUDA")])
def test_a_fits_reason_names_the_gpus_own_runtime(device, runtime):
    s = load_scenario("mixtral-8x7b-h100-train", [f"hardware.device.name={device}", "plan.ep=1", "plan.dp=64"])
    reason = simulate(s, None).summary["fits_reason"]
    assert f"GiB {runtime} reports" in reason
    assert ("RCCL" in reason) == (runtime == "ROCm") and ("NCCL" in reason) == (runtime == "CUDA")
