"""An MoE layer run the way Hugging Face transformers < 5 runs it: a Python loop over the experts.

``plan.moe_impl: hf_loop`` (training). ``MixtralSparseMoeBlock`` and ``Qwen2MoeSparseMoeBlock``
(huggingface/transformers ``src/transformers/models/mixtral/modeling_mixtral.py`` @00d4b3d2,
``src/transformers/models/qwen2_moe/modeling_qwen2_moe.py`` @00a3f938, both 4.x) build a one-hot
``expert_mask`` and, for every expert that got tokens::

    idx, top_x = torch.where(expert_mask[expert_idx])            # nonzero: the host waits for the GPU
    current_state = hidden_states[None, top_x].reshape(-1, hidden_dim)                   # gather
    current_hidden_states = expert_layer(current_state) * routing_weights[top_x, idx, None]
    final_hidden_states.index_add_(0, top_x, current_hidden_states.to(hidden_states.dtype))

with ``expert_layer(x) = down(act(gate(x)) * up(x))`` (three ``nn.Linear``; ``w2(act(w1(x)) * w3(x))``
in Mixtral). Per busy expert and micro-batch that is, forward (:func:`forward_kernels`, in order):
``where`` (1 op), the gather (1), gate Linear, act (1), up Linear, ``*`` (1), down Linear, the
routing-weight gather (1), ``*`` (1), ``index_add_`` (1); ``reshape`` and ``.to`` of an equal dtype
launch nothing. Each GEMM is its own cuBLAS call at that expert's token count (``cm.gemm_s``).

Host time and the sync. ``torch.where`` on one argument is ``nonzero``: its output size lives on
the GPU, so the host waits until the GPU has run everything queued. The kernels after it start with
an empty queue: a run of kernels ``i`` with host time ``h_i`` and GPU time ``g_i`` lasts
``max_k (sum_{i<=k} h_i + sum_{i>=k} g_i)`` (:func:`segment_s`); what exceeds ``sum g`` is exposed.
One segment per busy expert: its kernels and the next expert's ``where`` (the first expert's
``where``, after the layer's own ``expert_hit ... .nonzero()`` wait, stands in for the last one's).
Host seconds per op, lower bounds:

* ``LINEAR_US = 13.48`` (measured): CPU time of one ``torch.nn.Linear`` forward in BF16 on a DGX
  H100, NVIDIA/TransformerEngine issue #2053 "High CPU overhead on Grace systems" (2025-08-11,
  benchmark table); for each ``nn.Linear`` call (base, LoRA ``A`` and ``B``).
* ``OP_US = 5.0`` (measured range, low end): "the launch time on the CPU side is between 5-20
  microseconds" (Meta HolisticTraceAnalysis ``docs/source/features/cuda_kernel_launch_stats.rst``;
  ``moesim.costmodel.host.EAGER_LAUNCH_US``); for every other op that launches a kernel, from Python
  (forward) or from autograd's C++ engine (backward). Python and dispatcher time are left out.

Backward: autograd replays the graph with no host wait (no ``nonzero`` in any derivative), so its
host runs ahead; with full recompute the layer's backward starts right after the recompute's last
wait, behind only the shared experts' forward and backward (:func:`layer_loop_s`). Kernels per busy
expert (pytorch/pytorch ``tools/autograd/derivatives.yaml`` @d327a787): ``index_add``: ``source:
grad.index_select`` (1); the routing-weight ``*``: ``grad * w``, ``grad * x`` and its ``sum_to_size``
(3); the routing-weight gather: ``index_backward(grad.new_zeros(...))``, a zeroed buffer and an
``index_put_`` (2); each Linear ``dX`` (+ ``dW`` when trained); ``*``: 2; ``silu_backward``: 1;
gate and up ``dX`` summed (1); the hidden-state gather: a zeroed ``tokens x d_model`` buffer and
``index_put_`` (2), added into the hidden states' gradient (1, ``tokens x d_model``).

Fine-tuning (``workload.trainable``): a frozen Linear's backward is ``dX`` only; LoRA on experts
wraps each expert Linear (huggingface/peft ``src/peft/tuners/lora/bnb.py`` @628ad7c0
``Linear4bit.forward``, ``layer.py`` ``Linear.forward``): ``result = base_layer(x)``,
``result.clone()`` (4-bit only), ``lora_B(lora_A(dropout(x))) * scaling``, added to ``result``;
QLoRA's base Linear dequantises its nf4 weight first, forward and backward (bitsandbytes
``bitsandbytes/autograd/_functions.py`` @60a0d8a5 ``MatMul4Bit``). Dropout is taken as identity.

ZeRO-3 without leaf modules (``plan.zero3_fetch: linear``): DeepSpeed ZeRO-3 gathers a module's
partitioned weights in hooks before its forward and its backward, and every expert ``nn.Linear`` of
the loop is a module of its own (before ``set_z3_leaf_modules``; DeepSpeed issue #4808: the experts
run in a different order step to step, which invalidates the trace its prefetching needs). Each
fetch adds ``ZERO3_FETCH_US`` of host time before the Linear's kernel, in the forward, the
recompute and the backward (LoRA's ``A`` and ``B`` are modules too):

* ``ZERO3_FETCH_US`` ~ 764 (derived from one published pair, not fitted to a validation row):
  QwenLM/Qwen3 issue #736 (2024-07-02; 8 H100, DeepSpeed 0.14.4, the repository's ZeRO-3 config
  with prefetching off, LoRA r 64 on every Linear, gradient checkpointing) trains Qwen2-72B at
  1.178 samples/s and Qwen2-57B-A14B at 0.21: 6.79 and 38.1 s per sample per GPU. Fetches per
  sample: 28 layers x 64 experts x 3 Linears x 3 modules (base, A, B) x 3 passes = 48,384 for the
  MoE, 80 x 7 x 3 x 3 = 5,040 for the dense model. Less ~2.5-2.8 s of weight gathers and compute,
  (38.1 - 2.5) s / 48,384 = 0.74 ms and (6.79 - 2.8) s / 5,040 = 0.79 ms per fetch (the 2.5 and 2.8 s
  are estimates: each model's weights gathered three times over NVLink at 150-200 GB/s): the two
  models agree on one fetch's cost, hooks, a small all-gather and its wait together. With
  prefetching on, a dense model's large layers hide theirs (ms-swift's Qwen2.5-14B: ZeRO-3 10.56 vs
  ZeRO-2 10.32 s/it, under 0.12 ms per fetch): only the expert loop, which waits on the GPU at
  every expert, pays it here.

Everything is per MoE layer and micro-batch, for the ``[..., experts]`` loads of the device
(``ep`` must be 1: transformers < 5 has no expert parallelism). Nothing is fitted.
"""

from __future__ import annotations

import numpy as np

from moesim.costmodel import CostModel
from moesim.engine.training.finetune_ops import SUFFIXES as FT_SUFFIXES
from moesim.finetune import nf4_bytes_per_weight
from moesim.schemas.workload import TrainableSpec

LINEAR_US = 13.48  #: TE issue #2053: torch.nn.Linear forward CPU time, DGX H100, BF16
OP_US = 5.0  #: Meta HTA docs, low end of 5-20 us CPU-side launch (moesim.costmodel.host.EAGER_LAUNCH_US)
#: QwenLM/Qwen3#736 (8 H100, DeepSpeed 0.14.4, prefetch off): (seconds per sample, fetches per sample) of
#: Qwen2-57B-A14B and Qwen2-72B, and the weight gathers and compute set aside from each (s).
ZERO3_PAIR = {"qwen2-57b-a14b": (8 / 0.21, 28 * 64 * 3 * 3 * 3, 2.5), "qwen2-72b": (8 / 1.178, 80 * 7 * 3 * 3, 2.8)}
#: One ZeRO-3 fetch of an expert Linear, us: the mean of the pair's 736 and 792 us (see above).
ZERO3_FETCH_US = float(np.mean([(t - rest) / n * 1e6 for t, n, rest in ZERO3_PAIR.values()]))
_BF16 = 2.0
#: Ops of the fused op graph the loop replaces (with their LoRA/dequant/cast companions).
REPLACED = ("permute", "expert_up", "expert_act", "expert_down", "moe_overhead", "unpermute")


def segment_s(host_s, gpu_s):
    """Seconds of a run of kernels that starts with the host and the GPU both idle.

    ``host_s``, ``gpu_s``: sequences (launch order) of per-kernel seconds, entries broadcast. Kernel
    ``i`` starts at ``max(launched_i, done_{i-1})``: the run lasts ``max_k (sum_{i<=k} host_i +
    sum_{i>=k} gpu_i)``. An empty run lasts 0.
    """
    if len(host_s) == 0:
        return np.zeros(())
    both = np.broadcast_arrays(*[np.asarray(x, dtype=float) for x in (*host_s, *gpu_s)])
    h = np.cumsum(np.stack(both[:len(host_s)]), axis=0)
    g = np.stack(both[len(host_s):])
    return (h + np.cumsum(g[::-1], axis=0)[::-1]).max(axis=0)


class _Linear:
    """One expert ``nn.Linear`` (``n`` outputs, ``k`` inputs) on ``c`` tokens, as its kernels."""

    def __init__(self, cm: CostModel, c, n: int, k: int, dtype: str, frozen: bool,
                 spec: TrainableSpec, lora: bool, fetch_us: float = 0.0):
        self.cm, self.c, self.n, self.k = cm, c, n, k
        self.fetch_us = fetch_us  # ZeRO-3's fetch of each of its modules (base, LoRA A and B), host us
        self.gemm = cm.gemm_s(c, n, k, dtype)
        self.frozen, self.lora = frozen, lora
        self.dequant = float(cm.memory_s(n * k * (nf4_bytes_per_weight(spec) + _BF16))) if frozen and spec.quantized else 0.0
        self.quantized = self.dequant > 0
        r = spec.rank or 0
        self.lora_a = cm.gemm_s(c, r, k, dtype) if lora else 0.0
        self.lora_b = cm.gemm_s(c, n, r, dtype) if lora else 0.0

    def _mem(self, elems_per_token: float, reads_writes: int):
        return self.cm.memory_s(self.c * elems_per_token * reads_writes * _BF16)

    def forward(self) -> list[tuple[float, object]]:
        """(host us, GPU s) of each kernel of the forward, in launch order."""
        out = [(OP_US, self.dequant)] if self.quantized else []
        linear = LINEAR_US + self.fetch_us
        out.append((linear, self.gemm))
        if self.lora:
            if self.quantized:
                out.append((OP_US, self._mem(self.n, 2)))  # result.clone()
            out += [(linear, self.lora_a), (linear, self.lora_b),
                    (OP_US, self._mem(self.n, 2)), (OP_US, self._mem(self.n, 3))]  # * scaling, result + output
        return out

    def backward(self) -> list[tuple[float, object, object]]:
        """(host us, GPU s, weight-gradient GPU s) of each backward kernel, in launch order."""
        out, f = [], self.fetch_us  # ZeRO-3 fetches a module again before its first backward kernel
        if self.lora:  # * scaling, then B's and A's dX and dW, then dX of both paths summed
            out += [(OP_US, self._mem(self.n, 2), 0.0), (OP_US + f, self.lora_b, 0.0), (OP_US, self.lora_b, self.lora_b),
                    (OP_US + f, self.lora_a, 0.0), (OP_US, self.lora_a, self.lora_a)]
        if self.quantized:
            out.append((OP_US + f, self.dequant, 0.0))
            f = 0.0
        out.append((OP_US + f, self.gemm, 0.0))  # dX
        if not self.frozen:
            out.append((OP_US, self.gemm, self.gemm))  # dW
        if self.lora:
            out.append((OP_US, self._mem(self.k, 3), 0.0))
        return out


def expert_kernels(cm: CostModel, c, tokens: float, d: int, w: int, top_k: int, gated: bool, dtype: str,
                   spec: TrainableSpec, frozen_up: bool, frozen_down: bool, lora: bool, fetch_us: float = 0.0):
    """(forward, backward) kernel lists of one busy expert on ``c`` tokens (arrays broadcast).

    Forward entries are (host us, GPU s), the segment's trailing ``where`` included; backward
    entries (host us, GPU s, weight-gradient GPU s). ``tokens``: the micro-batch's tokens on the
    device (the one-hot mask and the hidden-state gradient span all of them). ``fetch_us``: ZeRO-3's
    host time to fetch each Linear module (0: fetched with its block).
    """
    mem = cm.memory_s

    def lin(n, k, frozen):
        return _Linear(cm, c, n, k, dtype, frozen, spec, lora, fetch_us)

    ups = [lin(w, d, frozen_up)] * (2 if gated else 1)  # gate and up: one shape, priced once
    down = lin(d, w, frozen_down)
    fwd = [(OP_US, mem(2 * c * d * _BF16))]  # hidden_states[None, top_x]
    fwd += ups[0].forward() + [(OP_US, mem(2 * c * w * _BF16))]  # gate (or up), act
    if gated:
        fwd += ups[1].forward() + [(OP_US, mem(3 * c * w * _BF16))]  # up, act * up
    fwd += down.forward()
    fwd += [(OP_US, mem(2 * c * _BF16)), (OP_US, mem((2 * c * d + c) * _BF16)),  # routing-weight gather, *
            (OP_US, mem(3 * c * d * _BF16)),  # index_add_
            (OP_US, mem(top_k * tokens * 8.0))]  # the next expert's torch.where over the int64 mask
    bwd = [(OP_US, mem(2 * c * d * _BF16), 0.0)]  # index_add_: grad.index_select
    bwd += [(OP_US, mem((2 * c * d + c) * _BF16), 0.0), (OP_US, mem(3 * c * d * _BF16), 0.0),
            (OP_US, mem(c * d * _BF16), 0.0)]  # routing-weight *: grad * w, grad * x, sum
    bwd += [(OP_US, mem(top_k * tokens * _BF16), 0.0), (OP_US, mem(2 * c * _BF16), 0.0)]  # its gather
    bwd += down.backward()
    if gated:
        bwd += [(OP_US, mem(3 * c * w * _BF16), 0.0)] * 2  # act * up
    bwd += [(OP_US, mem(3 * c * w * _BF16), 0.0)]  # silu_backward
    for u in ups:
        bwd += u.backward()
    if gated:
        bwd += [(OP_US, mem(3 * c * d * _BF16), 0.0)]  # gate and up dX summed
    bwd += [(OP_US, mem(tokens * d * _BF16), 0.0), (OP_US, mem(3 * c * d * _BF16), 0.0),  # zeros, index_put_
            (OP_US, mem(3 * tokens * d * _BF16), 0.0)]  # into the hidden states' gradient
    return fwd, bwd


def pre_loop_s(cm: CostModel, tokens: float, d: int, n_experts: int, top_k: int):
    """GPU seconds of the layer's set-up before the loop (replacing the fused permute):
    ``torch.zeros`` of the output, ``one_hot`` (int64), ``expert_mask.sum``, ``> 0``, ``nonzero``;
    none of them has a backward (the output's gradient passes through ``index_add_``)."""
    mask = tokens * top_k * n_experts * 8.0
    return sum(cm.memory_s(b) for b in (tokens * d * _BF16, mask, mask, n_experts * 9.0, n_experts * 9.0))


def layer_loop_s(cm: CostModel, expert_tokens, tokens: float, d: int, w: int, top_k: int, gated: bool,
                 dtype: str, spec: TrainableSpec, frozen_up: bool, frozen_down: bool, lora: bool,
                 bwd_lead_s=0.0, synced_backward: bool = True, fetch_us: float = 0.0) -> dict[str, np.ndarray]:
    """Seconds of the expert loop of one MoE layer for ``expert_tokens`` ``[..., E]``.

    Returns ``gpu_fwd``, ``gpu_bwd``, ``wgrad`` (the loop's kernels, pre-loop set-up included in the
    forward), ``host_fwd``, ``host_bwd`` (exposed host seconds), all shaped ``[...]``.
    ``bwd_lead_s``: GPU seconds queued ahead of the loop's backward. ``synced_backward``: the
    backward starts after a wait (full recompute re-runs the loop just before it); else the host
    has run ahead and exposes only ``max(0, host - gpu)`` of the layer. ``fetch_us``: see
    :func:`expert_kernels`.
    """
    c = np.asarray(expert_tokens, dtype=float)
    busy = c > 0
    fwd, bwd = expert_kernels(cm, c, tokens, d, w, top_k, gated, dtype, spec, frozen_up, frozen_down, lora, fetch_us)
    hf = [h * 1e-6 * busy for h, _ in fwd]
    gf = [np.broadcast_to(g, c.shape) * busy for _, g in fwd]
    seg = segment_s(hf, gf)
    gpu_f = np.sum(gf, axis=0)
    host_f = (np.maximum(seg - gpu_f, 0.0) * busy).sum(axis=-1)
    hb = np.stack([np.broadcast_to(h * 1e-6 * busy, c.shape) for h, _, _ in bwd])
    gb = np.stack([np.broadcast_to(g, c.shape) * busy for _, g, _ in bwd])
    wg = sum(np.broadcast_to(x, c.shape) * busy for _, _, x in bwd).sum(axis=-1)
    gpu_b = gb.sum(axis=(0, -1))
    if synced_backward:  # experts in reverse order, each expert's kernels in order, one long run
        hb_run = np.moveaxis(hb[:, ..., ::-1], -1, 0).reshape((-1,) + c.shape[:-1])
        gb_run = np.moveaxis(gb[:, ..., ::-1], -1, 0).reshape((-1,) + c.shape[:-1])
        lead = np.broadcast_to(np.asarray(bwd_lead_s, dtype=float), c.shape[:-1])
        run = segment_s([np.zeros(c.shape[:-1]), *hb_run], [lead, *gb_run])
        host_b = np.maximum(run - lead - gpu_b, 0.0)
    else:
        host_b = np.maximum(hb.sum(axis=(0, -1)) - gpu_b - bwd_lead_s, 0.0)
    pre = pre_loop_s(cm, tokens, d, c.shape[-1], top_k)
    return dict(gpu_fwd=gpu_f.sum(axis=-1) + pre, gpu_bwd=gpu_b, wgrad=wg,
                host_fwd=host_f, host_bwd=host_b)


def _base_name(name: str) -> str:
    for suffix in (*FT_SUFFIXES, "_cast"):
        name = name.removesuffix(suffix)
    return name


def apply_hf_loop(s, cm: CostModel, dims, ops: list, secs: dict, expert_tokens, fwd: np.ndarray, bwd: np.ndarray,
                  wgrad: np.ndarray, frozen: frozenset, slot_of, experts_slot: int, gemm_kinds=("gemm", "grouped_gemm")):
    """Swap the fused expert ops (:data:`REPLACED`, with their LoRA/dequant/cast companions) of one MoE
    block priced at ``secs`` for the expert loop, in place: ``fwd``/``bwd``/``wgrad`` are
    ``[..., slots]`` in forward slot order (``layer_costs``); the loop's GPU seconds and its exposed
    host seconds go to ``experts_slot``. Returns :func:`layer_loop_s`'s dict.
    """
    from moesim.engine.ops import backward_s, forward_s

    for op in ops:
        if _base_name(op.name) in REPLACED or op.name.startswith("unpermute"):
            j, t = slot_of(op.name), secs[op.name]
            fwd[..., j] -= forward_s(op, t)
            b = backward_s(op, t)
            bwd[..., j] -= b
            if op.kind in gemm_kinds and op.name not in frozen:
                wgrad[..., j] -= b / 2
    spec, plan = s.workload.trainable, s.plan
    if s.model.dtype not in ("bf16", "fp16"):
        raise ValueError(f"model.dtype = {s.model.dtype}: moe_impl hf_loop prices transformers' bf16/fp16 nn.Linear experts")
    synced = plan.recompute == "full"
    if synced:  # queued ahead of the loop's backward: the shared experts' recomputed forward and backward
        lead = sum((forward_s(op, secs[op.name]) + backward_s(op, secs[op.name]) for op in ops
                    if op.name.startswith("shared")), np.zeros(()))
    else:  # the host ran ahead: the rest of the layer's backward hides the loop's launches
        lead = bwd.sum(axis=-1)
    routed = next(op for op in ops if op.name == "router").args["m"]
    out = layer_loop_s(cm, expert_tokens, float(np.max(routed)), dims.d_model, dims.expert_w, dims.top_k,
                       dims.gated, s.model.dtype, spec, "expert_up" in frozen, "expert_down" in frozen,
                       spec.mode == "lora" and "experts" in spec.lora_targets, lead, synced,
                       ZERO3_FETCH_US if plan.zero3_fetch == "linear" else 0.0)  # the schema ties linear to ZeRO-3
    fwd[..., experts_slot] += out["gpu_fwd"] + out["host_fwd"]
    bwd[..., experts_slot] += out["gpu_bwd"] + out["host_bwd"]
    wgrad[..., experts_slot] += out["wgrad"]
    return out
