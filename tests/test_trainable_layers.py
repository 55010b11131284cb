"""``workload.trainable.layers``: only the last N blocks train, and backward stops at the first of them.

Checks against hand formulas and against the same run without the field: trainable counts, the
blocks' backward and gradient bytes, activation memory linear in the trained blocks, FLOPs per token,
and the one-line error for more layers than the model has.
"""

from __future__ import annotations

import numpy as np
import pytest

from moesim.accounting import flops_per_token, param_counts
from moesim.check import summary as check_summary
from moesim.engine.training.layer_params import layer_params_per_device
from moesim.errors import InputError
from moesim.finetune import (
    embeddings_trainable,
    finetune_flops_per_token,
    first_trainable_layer,
    step_flops_per_token,
    trainable_counts,
)
from moesim.loader import load_scenario
from moesim.memory import memory_report
from moesim.plan_bounds import training_bound
from moesim.plan_options import parse_objective
from moesim.schemas.workload import TrainableSpec
from moesim.simulate import simulate
from moesim.stage_memory import live_activation_peaks
from tests.test_finetune import costs_of

MIXTRAL_TRAIN = "mixtral-8x7b-h100-train"
LORA = "workload.trainable={mode: lora, rank: 16, targets: [attention, experts]}"


def scen(*sets: str):
    return load_scenario(MIXTRAL_TRAIN, list(sets))


def lora(layers: int | None) -> TrainableSpec:
    return TrainableSpec(mode="lora", rank=16, targets=["attention"], layers=layers)


def test_lora_on_the_last_eight_blocks_counts_eight_blocks_of_adapters():
    m = scen().model
    per_layer = 16 * ((4096 + 4096) + 2 * (4096 + 1024) + (4096 + 4096))  # Q, K, V, O adapters, r (d_in + d_out)
    assert trainable_counts(m, lora(8)).trainable == 8 * per_layer
    assert trainable_counts(m, lora(m.n_layers)).trainable == trainable_counts(m, lora(None)).trainable
    assert first_trainable_layer(m, lora(8)) == m.n_layers - 8


def test_full_weights_of_the_last_blocks_leave_the_embedding_and_head_frozen():
    m = scen().model
    spec = TrainableSpec(mode="all", layers=4)
    assert not spec.full and TrainableSpec(mode="all").full
    assert not embeddings_trainable(spec)
    p = param_counts(m)
    per_block = (p.total - p.embedding - m.d_model) // m.n_layers  # Mixtral's blocks are all alike
    assert trainable_counts(m, spec).trainable == 4 * per_block


def test_blocks_before_the_first_trainable_one_have_no_backward_and_no_gradient_bytes():
    full, part = costs_of(scen(LORA)), costs_of(scen(LORA.replace("}", ", layers: 12}")))
    first = 32 - 12
    assert np.all(part.bwd_s[:first] == 0.0) and np.all(part.wgrad_s[:first] == 0.0)
    np.testing.assert_allclose(part.bwd_s[first:], full.bwd_s[first:])
    np.testing.assert_allclose(part.fwd_s, full.fwd_s)  # every block still runs forward
    assert np.all(part.dp_dense_bytes[:first] == 0.0) and np.all(part.dp_expert_bytes[:first] == 0.0)
    assert np.all(part.dp_dense_bytes[first:] > 0.0)


def test_a_shallower_fine_tune_takes_less_time_per_step_than_a_full_depth_one():
    steps = [simulate(scen(LORA.replace("}", f", layers: {n}}}") if n else LORA)).summary["step_time_s"]
             for n in (None, 32, 16, 4)]
    assert steps[0] == pytest.approx(steps[1])  # every block: the same run
    assert steps[1] > steps[2] > steps[3]


def test_activation_memory_grows_linearly_with_the_trained_blocks():
    acts = {n: memory_report(scen(LORA.replace("}", f", layers: {n}}}"))).activations_gib for n in (8, 16, 32)}
    assert acts[32] - acts[16] == pytest.approx(2 * (acts[16] - acts[8]), rel=1e-9)
    assert acts[8] < acts[16] < acts[32]
    assert memory_report(scen(LORA)).activations_gib == pytest.approx(acts[32])


def test_flops_per_token_count_input_gradients_through_the_trained_blocks_only():
    m = scen().model
    seq = 4096
    f = flops_per_token(m, seq)
    assert finetune_flops_per_token(m, lora(m.n_layers), seq) == pytest.approx(finetune_flops_per_token(m, lora(None), seq))
    assert finetune_flops_per_token(m, TrainableSpec(mode="all", layers=m.n_layers), seq) == pytest.approx(
        3 * f - 2 * m.vocab_size * m.d_model)  # 3F less the frozen head's weight gradient (2 x its weights)
    shallow = finetune_flops_per_token(m, lora(1), seq)
    assert f < shallow < finetune_flops_per_token(m, lora(16), seq) < finetune_flops_per_token(m, lora(None), seq)


def test_expert_only_fine_tune_of_the_last_blocks_updates_their_experts_only():
    s = scen("workload.trainable={mode: experts, layers: 2}")
    dense_p, expert_p = layer_params_per_device(s)
    c = costs_of(s)
    assert np.all(c.dp_expert_bytes[:30] == 0.0) and np.all(c.dp_expert_bytes[30:] > 0.0)
    assert np.all(c.dp_dense_bytes == 0.0)
    assert expert_p[30:].sum() > 0 and dense_p.sum() > 0


@pytest.mark.parametrize("layers", [33, 1000])
def test_more_layers_than_the_model_has_is_one_clear_error(layers):
    with pytest.raises(InputError, match=r"workload\.trainable\.layers = \d+: must be <= model\.n_layers \(32\)"):
        scen(LORA.replace("}", f", layers: {layers}}}"))


def test_zero_layers_is_refused_by_the_schema():
    with pytest.raises(InputError, match=r"workload\.trainable\.layers"):
        scen(LORA.replace("}", ", layers: 0}"))


@pytest.mark.parametrize("sets", [[], ["workload.trainable.layers=2"], ["plan.recompute=none", "workload.trainable.layers=1"],
                                  ["workload.trainable={mode: experts, layers: 4}"]])
def test_plan_search_bound_stays_below_a_fine_tunes_simulated_step(sets):
    """``moesim plan`` prunes on a FLOPs bound; it must count a fine-tune's FLOPs, not pre-training's
    (a shallow fine-tune priced at 3 F read 1.7x its simulated step and would have been pruned)."""
    s = load_scenario("mixtral-8x7b-lora-8xh100", sets)
    obj = parse_objective("step_time_s", True)
    assert training_bound(s, obj) <= simulate(s).summary["step_time_s"]


def test_check_reports_the_fine_tunes_flops_not_pre_trainings():
    s = scen(LORA.replace("}", ", layers: 8}"))
    out = check_summary(s)
    assert out["training_flops_per_token"] == pytest.approx(
        step_flops_per_token(s.model, s.workload.trainable, s.workload.seq_len, s.plan.recompute))
    assert out["training_flops_per_token"] < check_summary(scen())["training_flops_per_token"]


@pytest.mark.parametrize("name", ["grok-1-h100-train", "deepseek-v3-h800-train"])
def test_pipeline_stages_whose_blocks_are_all_frozen_run_forward_only(name):
    """Interleaved 1F1B and DualPipe: the first stages hold no trainable block (no backward, no
    gradient sync spans), the step is shorter than a full-depth LoRA's and the peak memory lower."""
    lora = "workload.trainable={mode: lora, rank: 16}"
    full = simulate(load_scenario(name, [lora]))
    part = simulate(load_scenario(name, [lora.replace("}", ", layers: 8}")]))
    assert part.summary["step_time_s"] < full.summary["step_time_s"]
    assert part.summary["peak_memory_gib"] < full.summary["peak_memory_gib"]
    spans = part.spans
    assert spans["kind"].size == spans["end_s"].size > 0  # every column the same length


def test_a_span_chunk_of_empty_arrays_adds_no_span():
    from moesim.results import SpanRecorder

    rec = SpanRecorder()
    rec.add("compute", 0, "compute", 0.0, 1.0)
    rec.add("dp_sync", 0, "dp", np.array([]), np.array([]), layer=np.array([]))
    rec.add("compute", 1, "compute", np.array([0.0, 1.0]), np.array([1.0, 2.0]))
    cols = rec.columns()
    assert cols["kind"].tolist() == ["compute", "compute", "compute"]
    assert cols["stage"].tolist() == [0, 1, 1]


def test_check_names_what_a_fine_tune_trains_and_pre_training_keeps_its_keys():
    s = scen(LORA.replace("}", ", layers: 8}"))
    out = check_summary(s)
    assert out["trainable_params"] == trainable_counts(s.model, s.workload.trainable).trainable
    assert 0 < out["trainable_fraction"] < 0.01
    assert "trainable_params" not in check_summary(scen())


def test_a_fine_tune_that_does_not_fit_is_advised_the_most_blocks_that_do():
    import re

    sets = ["workload.seq_len=32768", "model.max_seq_len=32768", "plan.recompute=none"]
    s = load_scenario("mixtral-8x7b-qlora-1xa100", sets)
    advice = check_summary(s)["fits_advice"]
    n = int(re.search(r"workload\.trainable\.layers: (\d+) \(train only the last \d+ of 32 blocks\)", advice).group(1))
    assert memory_report(load_scenario("mixtral-8x7b-qlora-1xa100", sets + [f"workload.trainable.layers={n}"])).fits
    assert not memory_report(load_scenario("mixtral-8x7b-qlora-1xa100", sets + [f"workload.trainable.layers={n + 1}"])).fits


def test_a_16_bit_lora_that_does_not_fit_is_advised_qlora_and_pre_training_no_fine_tune_change():
    lora = check_summary(load_scenario("mixtral-8x7b-qlora-1xa100", ["workload.trainable.base_dtype=bf16"]))
    assert not lora["fits"] and "workload.trainable.base_dtype: nf4 (QLoRA)" in lora["fits_advice"]
    full = check_summary(load_scenario("mixtral-8x7b-h100-train", ["plan.ep=1", "plan.zero_stage=0"]))
    assert not full["fits"]
    assert "workload.trainable" not in full["fits_advice"]


def test_interleaved_stages_scale_the_trained_blocks_activations_when_stage_0_holds_only_frozen_ones():
    """Under PP the other stages' activations are scaled from stage 0's; with stage 0 all frozen that
    scale was 0, so 4 and 8 trained blocks of Grok-1 read the same (the logits alone)."""
    acts = [memory_report(load_scenario("grok-1-h100-train", [f"workload.trainable={{mode: lora, rank: 16, layers: {n}}}"]))
            .activations_gib for n in (4, 8, 16, 64)]
    assert acts[0] < acts[1] < acts[2] < acts[3]


@pytest.mark.parametrize("pp, per_chunk", [(2, 3), (4, 2), (8, 1)])
def test_dualpipe_order_holds_its_closed_form_pp_plus_one_microbatches_per_chunk(pp, per_chunk):
    """Played through DualPipe's order, every stage of an even split holds p + 1 microbatches of one
    chunk's layers at its peak (the DualPipe README's activation column), whatever the microbatch count."""
    base = load_scenario("deepseek-v3-h800-train").plan
    for m in (2 * pp, 4 * pp):
        plan = base.model_copy(update={"pp": pp, "microbatches": m})
        assert live_activation_peaks(plan, pp * per_chunk, [1.0] * (pp * per_chunk)) == [(pp + 1) * per_chunk] * pp


def test_dualpipe_activations_grow_with_the_trained_blocks_when_stage_0s_chunk_is_frozen():
    """A DualPipe stage holds direction 0's chunk and direction 1's mirror one. Priced from stage 0's
    direction-0 chunk alone, LoRA on DeepSeek-V3's last 8, 16 or 32 blocks read the same activations
    (that chunk frozen); from each stage's order they grow with the blocks trained, up to full depth."""
    # SwiGLU inputs kept in 16 bits, as Megatron-core keeps them: the MoE layers' stages then hold the most
    bf16_act = ["plan.fp8_moe_act_input=false"]
    acts = [memory_report(load_scenario("deepseek-v3-h800-train", [
        *bf16_act, f"workload.trainable={{mode: lora, rank: 8, layers: {n}}}"])).activations_gib for n in (8, 16, 32, 61)]
    assert acts[0] < acts[1] < acts[2] < acts[3]
    lora = memory_report(load_scenario("deepseek-v3-h800-train", [*bf16_act, "workload.trainable={mode: lora, rank: 8}"]))
    assert acts[3] == pytest.approx(lora.activations_gib)  # the last 61 of 61 blocks are every block
    # LoRA's adapters keep their GEMMs' inputs at 16 bits where full training's FP8 GEMMs keep 1-byte copies
    full = memory_report(load_scenario("deepseek-v3-h800-train", bf16_act))
    assert acts[3] > full.activations_gib
    # 61 layers over 16 stages: stage 0 holds 3 dense + 1 MoE and 3 MoE layers, stages 3-12 eight MoE layers, but
    # stage 0 also holds the embedding and the output head (1.9B parameters with their fp32 gradients): it holds the most
    assert full.stage == 0


@pytest.mark.parametrize("trainable", ["{mode: all, layers: 8}", "{mode: lora, rank: 16, layers: 8}"])
def test_the_stage_holding_the_trained_blocks_keeps_all_their_gradients_and_adam_states(trainable):
    # 32 blocks over pp 4: stage 3 holds blocks 24-31, exactly the 8 that train; its gradients are the same
    # as one stage's holding the whole model, and its Adam states those of its expert data-parallel group (dp/ep)
    sets = ["plan.ep=2", f"workload.trainable={trainable}"]
    whole = memory_report(load_scenario("mixtral-8x7b-lora-8xh100", sets))
    staged = memory_report(load_scenario("mixtral-8x7b-lora-8xh100", sets + ["plan.dp=2", "plan.pp=4"]))
    assert staged.stage == 3
    assert staged.gradients_gib == pytest.approx(whole.gradients_gib, rel=1e-9)
    assert staged.optimizer_gib > 2 * whole.optimizer_gib  # experts' Adam over 1 rank, not 4


def test_a_lora_that_does_not_fit_is_advised_the_largest_power_of_two_rank_that_does():
    advice = check_summary(load_scenario("mixtral-8x7b-qlora-1xa100", ["workload.trainable.rank=256"]))["fits_advice"]
    assert "workload.trainable.rank: 128 (the largest power of two below 256 that fits)" in advice
    assert memory_report(load_scenario("mixtral-8x7b-qlora-1xa100", ["workload.trainable.rank=128"])).fits


def test_tp_advice_beyond_one_node_says_what_keeps_it_in_one():
    advice = check_summary(load_scenario("mixtral-8x7b-qlora-1xa100", ["workload.trainable.base_dtype=bf16"]))
    assert "plan.tp 1 -> 2 (2x the devices, within a node of hardware.node.devices_per_node >= 2)" in \
        advice["fits_advice"]
    eight = check_summary(load_scenario("mixtral-8x7b-h100-train", ["plan.ep=1", "plan.zero_stage=0"]))
    # an H100 node holds 8 GPUs: TP is not widened past it, PP (which crosses nodes as it is) is advised instead
    assert "plan.tp 1 -> 16" not in eight["fits_advice"] and "devices_per_node" not in eight["fits_advice"]
    assert "plan.pp 1 -> 32 (32x the devices" in eight["fits_advice"]
