"""torchtune's single-device fine-tuning: its chunked compiled loss (``plan.loss_impl: chunked``), pure bf16 AdamW
(``plan.master_weights: false``), activation offloading (``plan.activation_offload``), transient gradients
(``plan.grad_buffers``) and the optimizer step in backward (``plan.optimizer_in_backward``)."""

from __future__ import annotations

import pytest

from moesim.accounting import GIB
from moesim.activations import (
    LOSS_BYTES_PER_LOGIT,
    LOSS_PASS_BYTES_PER_LOGIT,
    OFFLOAD_STASH_TENSORS,
)
from moesim.costmodel.model import build_cost_model
from moesim.engine.training.layer_costs import adam_step_bytes, layer_costs
from moesim.errors import InputError
from moesim.fit_advice import fit_explanation
from moesim.grad_lifetime import largest_grad_bytes, transient_peak
from moesim.loader import load_scenario
from moesim.memory import memory_report
from moesim.precision import adam_state_bytes
from moesim.simulate import simulate
from moesim.validation import DEFAULT_CSV

A100_3B = DEFAULT_CSV.parent / "validation" / "llama-3.2-3b-torchtune-a100.yaml"  # 28 layers of 3072, 2 x 4096 tokens
RTX_8B = DEFAULT_CSV.parent / "validation" / "llama-3.1-8b-torchtune-rtx4090.yaml"  # 32 layers of 4096, 2 x 2048


def _report(path, *overrides):
    return memory_report(load_scenario(path, list(overrides)))


def test_the_chunked_loss_holds_the_16_bit_logits_and_one_chunks_gradient():
    """2 bytes a logit for the 16-bit chunks the compiled losses keep, plus one of the 8 chunks' 16-bit gradient;
    the other losses hold an fp32 copy besides, so chunked is the smallest."""
    assert LOSS_BYTES_PER_LOGIT["chunked"] == pytest.approx(2.0 + 2.0 / 8)
    assert LOSS_BYTES_PER_LOGIT["chunked"] < min(v for k, v in LOSS_BYTES_PER_LOGIT.items() if k != "chunked")
    logits = 2 * 4096 * 128256  # the 3B scenario's micro-batch x the vocabulary
    fused = _report(A100_3B, "plan.loss_impl=fused").activations_gib
    chunked = _report(A100_3B).activations_gib
    assert (fused - chunked) * GIB == pytest.approx(logits * (10.0 - 2.25))


def test_eager_cross_entropy_saves_an_fp32_copy_of_each_chunk():
    """Why chunked is priced compiled: run eagerly, torchtune's compute_cross_entropy (an fp32 upcast and
    F.cross_entropy) saves the fp32 log-softmax for backward, 4 bytes a logit, beside the 16-bit chunk."""
    torch = pytest.importorskip("torch")  # the calibrate extra; CI installs it
    saved = {}

    def pack(t):
        saved[t.data_ptr()] = t.numel() * t.element_size()
        return t

    x = torch.randn(64, 512, dtype=torch.bfloat16, requires_grad=True)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        torch.nn.functional.cross_entropy(x.float(), torch.randint(0, 512, (64,)), reduction="sum")
    assert max(saved.values()) == x.numel() * 4


def test_the_chunked_loss_moves_4_bytes_a_logit_each_way():
    s = load_scenario(A100_3B)
    cm = build_cost_model(s.hardware)
    base = layer_costs(s, cm, None).head_s
    fused = layer_costs(load_scenario(A100_3B, ["plan.loss_impl=fused"]), cm, None).head_s
    logits = 2 * 4096 * 128256
    assert LOSS_PASS_BYTES_PER_LOGIT["chunked"] == (4.0, 4.0)
    assert fused[0] - base[0] == pytest.approx(float(cm.memory_s(logits * 30.0)) - float(cm.memory_s(logits * 4.0)))
    assert fused[1] > base[1]


def test_the_chunked_loss_sees_the_whole_vocabulary_under_tp():
    """torchtune's TP plan replicates the output head's logits (ColwiseParallel with Replicate outputs), where
    Megatron-core's fused loss splits the vocabulary: at tp 2 a device holds 2.25 bytes of every logit, not 10 of
    half of them."""
    tp2 = ("hardware.preset=h100-sxm", "hardware.node.devices_per_node=2", "plan.tp=2")
    chunked = _report(RTX_8B, *tp2).activations_gib
    fused = _report(RTX_8B, *tp2, "plan.loss_impl=fused").activations_gib
    logits = 2 * 2048 * 128256
    assert (fused - chunked) * GIB == pytest.approx(logits * (10.0 / 2 - 2.25))


def test_pure_bf16_adam_keeps_only_its_moments():
    """No fp32 master copy: 4 bytes a trainable parameter with bf16 moments (torchtune), 8 with fp32 ones; the
    step reads and writes the bf16 weight instead of the master (14 and 22 bytes a parameter)."""
    pure = _report(A100_3B)
    mixed = _report(A100_3B, "plan.master_weights=true")
    fp32_moments = _report(A100_3B, "plan.moments_dtype=fp32")
    assert mixed.optimizer_gib == pytest.approx(2 * pure.optimizer_gib)  # 8 vs 4 bytes
    assert fp32_moments.optimizer_gib == pytest.approx(2 * pure.optimizer_gib)  # 8 vs 4 bytes
    assert adam_step_bytes("bf16", master_weights=False) == 14.0
    assert adam_step_bytes("fp32", master_weights=False) == 22.0
    assert adam_step_bytes("fp32") == 28.0  # mixed precision, unchanged


def test_offloading_keeps_only_the_stash_of_layer_inputs():
    """Full recompute keeps each of the 28 layers' input (2 x 4096 tokens x 3072 x 2 bytes); offloading keeps
    the last five on the device and nothing else changes."""
    on = _report(A100_3B)
    off = _report(A100_3B, "plan.activation_offload=false")
    layer_input = 2 * 4096 * 3072 * 2
    assert (off.activations_gib - on.activations_gib) * GIB == pytest.approx((28 - OFFLOAD_STASH_TENSORS) * layer_input)
    assert (on.weights_gib, on.optimizer_gib) == (off.weights_gib, off.optimizer_gib)


def test_offloading_costs_no_time():
    on = simulate(load_scenario(A100_3B), None).summary["step_time_s"]
    off = simulate(load_scenario(A100_3B, ["plan.activation_offload=false"]), None).summary["step_time_s"]
    assert on == pytest.approx(off)


@pytest.mark.parametrize("overrides, needs", [
    (["plan.recompute=selective"], "recompute selective"),
    (["plan.pp=2", "plan.dp=1", "hardware.node.devices_per_node=2"], "pp 2"),
])
def test_offloading_needs_full_recompute_on_one_stage(overrides, needs):
    with pytest.raises((InputError, ValueError), match=f"plan.activation_offload: .*{needs}"):
        load_scenario(A100_3B, overrides)


def test_qlora_on_a_4090_stores_a_quarter_of_the_bf16_base():
    """The 8B QLoRA row: nf4 blocks (4.127 bits) and the bf16 embedding and head fit a 24 GB card; the bf16 LoRA
    of the same run does too, with ~10 GiB more weights."""
    q = _report(RTX_8B)
    lora = _report(RTX_8B, "workload.trainable.base_dtype=bf16")
    assert q.fits and lora.fits
    assert 9.0 < lora.weights_gib - q.weights_gib < 10.0
    assert q.capacity_gib < 24.0


FULL = ("workload.trainable=all", "plan.activation_offload=false")  # the 3B table's full-finetune rows


def test_transient_gradients_peak_at_the_loss_or_at_the_backwards_end():
    assert transient_peak(grads=6.0, acts=21.0, work=0.6, live_grads=6.0) == (0.0, 21.0)  # no checkpointing
    assert transient_peak(grads=6.0, acts=3.5, work=0.6, live_grads=6.0) == (6.0, 0.6)  # checkpointing
    assert transient_peak(grads=6.0, acts=3.5, work=0.6, live_grads=0.7) == (0.0, 3.5)  # optimizer in backward


def test_transient_gradients_never_add_to_a_one_micro_batch_peak():
    """Full fine-tuning with checkpointing: the persistent count sums weights, gradients, states and the loss's
    activations; transient gradients meet only the first layer's working set, the stored inputs and logits spent."""
    persistent = _report(A100_3B, *FULL, "plan.grad_buffers=persistent")
    transient = _report(A100_3B, *FULL)
    assert transient.gradients_gib == pytest.approx(persistent.gradients_gib)
    assert transient.activations_gib < persistent.activations_gib
    assert transient.total_gib < persistent.total_gib
    without_ckpt = _report(A100_3B, *FULL, "plan.recompute=none")
    assert without_ckpt.gradients_gib == 0.0  # its peak is the loss, before the backward makes any


def test_accumulation_keeps_transient_gradients_alive_through_the_forwards():
    """With two micro-batches a step the first backward's gradients live through the second forward."""
    two = ("workload.global_batch_seqs=4", "plan.microbatches=2")
    assert _report(A100_3B, *FULL, *two).total_gib == pytest.approx(
        _report(A100_3B, *FULL, *two, "plan.grad_buffers=persistent").total_gib)


def test_optimizer_in_backward_keeps_one_gradient_alive():
    """torchtune's optimizer_in_bwd frees each gradient once its step ran: the tied embedding's, 128256 x 3072 bf16,
    is the largest, and the peak returns to the loss."""
    fused = _report(A100_3B, *FULL, "plan.optimizer_in_backward=true")
    plain = _report(A100_3B, *FULL)
    assert fused.total_gib < plain.total_gib
    assert fused.gradients_gib == 0.0
    s = load_scenario(A100_3B, list(FULL))
    assert largest_grad_bytes(s.model, s.plan, 2.0, True) == 128256 * 3072 * 2


def test_optimizer_in_backward_takes_one_micro_batch():
    with pytest.raises((InputError, ValueError), match="plan.optimizer_in_backward: .*microbatches 2"):
        load_scenario(A100_3B, [*FULL, "workload.global_batch_seqs=4", "plan.microbatches=2",
                                "plan.optimizer_in_backward=true"])


def test_a_full_fine_tune_short_of_memory_is_advised_the_single_device_switches():
    """The 3B full fine-tune on a 24 GB card: 24.6 GiB with every gradient alive; stepping each parameter in its
    backward fits, and the advice says so (offloading, already off the table without full recompute, is not)."""
    s = load_scenario(A100_3B, [*FULL, "hardware.preset=rtx-4090"])
    reason, advice = fit_explanation(s)
    assert reason.startswith("weights 6.0 GiB + gradients 6.0 GiB + optimizer 12.0 GiB")
    assert "plan.optimizer_in_backward: true" in advice
    assert "plan.activation_offload: true" not in advice


AUTOMODEL_8B = DEFAULT_CSV.parent / "validation" / "llama-3.1-8b-automodel-lora-h100.yaml"  # LoRA r16, dropout 0.1


def test_lora_dropout_is_a_memory_bound_kernel_before_each_adapter():
    """Each adapted GEMM's dropout reads its 16-bit input and writes the dropped-out copy and a 1-byte mask:
    5 bytes an element, forward and backward; no dropout, no kernel."""
    from moesim.engine.op_types import Op
    from moesim.engine.training.finetune_ops import DROPOUT_BYTES_PER_ELEMENT, finetune_ops
    from moesim.schemas.workload import TrainableSpec

    gemm = Op("ffn_down", "gemm", "compute", dict(m=8192, n=4096, k=14336, dtype="bf16"), 1.0, 1.0)
    with_dropout = finetune_ops([gemm], TrainableSpec(mode="lora", rank=16, dropout=0.1), gated=True)
    drop = [op for op in with_dropout if op.name == "ffn_down_lora_dropout"]
    assert len(drop) == 1 and drop[0].nbytes == 8192 * 14336 * DROPOUT_BYTES_PER_ELEMENT == 8192 * 14336 * 5
    assert drop[0].bwd_factor == 1.0
    plain = finetune_ops([gemm], TrainableSpec(mode="lora", rank=16), gated=True)
    assert not any(op.name.endswith("_lora_dropout") for op in plain)
    slow = simulate(load_scenario(AUTOMODEL_8B), None).summary["step_time_s"]
    fast = simulate(load_scenario(AUTOMODEL_8B, ["workload.trainable.dropout=0"]), None).summary["step_time_s"]
    assert slow > fast


def test_mixtral_qlora_does_not_fit_one_4090_and_is_advised_two(root):
    """The README's claim: the shipped Mixtral QLoRA scenario needs 27.5 GiB (23.2 of weights), more than the
    22.5 GiB a 24 GB card gives the tensors; two cards or a 48 GB L40S fit it."""
    s = load_scenario(root / "scenarios" / "mixtral-8x7b-qlora-1xa100.yaml", ["hardware.preset=rtx-4090"])
    mem = memory_report(s)
    assert not mem.fits
    assert round(mem.total_gib, 1) == 27.5 and round(mem.weights_gib, 1) == 23.2 and round(mem.capacity_gib, 1) == 22.5
    advice = fit_explanation(s, mem)[1]
    assert "plan.tp 1 -> 2" in advice and "plan.pp 1 -> 2" in advice and "hardware: l40s" in advice


FULL_8B = ("workload.trainable=all", "plan.optimizer_in_backward=true")  # torchtune's 8B full fine-tune on a 4090


def test_eight_bit_moments_take_a_byte_and_a_block_scale():
    """bitsandbytes' 8-bit Adam: one byte a moment and an fp32 absmax per 2,048; without a master copy ~2 bytes a
    parameter, a quarter of bf16 moments' with one, and its step moves 10 bytes a parameter."""
    assert adam_state_bytes("int8", master_weights=False) == pytest.approx(2 * (1 + 4 / 2048))
    assert adam_step_bytes("int8", master_weights=False) == pytest.approx(2 + 2 * 2 * (1 + 4 / 2048) + 2 + 2)
    bf16 = _report(RTX_8B, *FULL_8B)
    int8 = _report(RTX_8B, *FULL_8B, "plan.moments_dtype=int8")
    assert int8.optimizer_gib == pytest.approx(bf16.optimizer_gib * (1 + 4 / 2048) / 2)


def test_paged_states_leave_the_devices_peak_and_the_fit():
    """Paged optimizers keep their states in unified memory, outside PyTorch's allocator: the 8B full fine-tune
    needs 32 GiB on a 24 GB card with 8-bit states on the device, 17 GiB with them paged, and fits."""
    on_device = _report(RTX_8B, *FULL_8B, "plan.moments_dtype=int8")
    paged = _report(RTX_8B, *FULL_8B, "plan.moments_dtype=int8", "plan.paged_optimizer=true")
    assert not on_device.fits and paged.fits
    assert paged.optimizer_gib == 0.0
    assert paged.total_gib == pytest.approx(on_device.total_gib - on_device.optimizer_gib)


def test_advice_offers_eight_bit_moments_where_bf16_ones_do_not_fit():
    s = load_scenario(A100_3B, [*FULL, "hardware.preset=rtx-4090", "plan.optimizer_in_backward=true",
                                "hardware.device.mem_gib=18"])
    advice = fit_explanation(s)[1]
    assert "plan.moments_dtype: int8 (bitsandbytes' 8-bit Adam)" in advice


@pytest.mark.parametrize("override, message", [
    ("plan.master_weights=maybe", "plan.master_weights = 'maybe': Input should be a valid boolean"),
    ("plan.paged_optimizer=2", "plan.paged_optimizer = 2: Input should be a valid boolean"),
    ("plan.grad_buffers=sometimes", "plan.grad_buffers = 'sometimes': Input should be 'persistent' or 'transient'"),
    ("plan.moments_dtype=int4", "plan.moments_dtype = 'int4': Input should be 'fp32', 'bf16' or 'int8'"),
    ("plan.loss_impl=chunky", "plan.loss_impl = 'chunky': Input should be 'fused', 'inplace', 'transformers' or"),
])
def test_the_new_plan_fields_refuse_bad_values_in_one_line(override, message, capsys):
    """Each new field's bad value is one error line naming the field and what it takes, exit code 2."""
    from moesim.cli import main

    assert main(["check", str(A100_3B), "--set", override]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: {message}") and "\n" not in err and "Traceback" not in err
