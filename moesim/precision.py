"""Precision of a scenario: what its weights are stored in, what its math runs in, what it moves.

``model.dtype`` names how the weights are stored. Two kinds of dtype:

* native floats (fp32, bf16, fp16, and fp8 on a device with fp8 tensor cores): weights, GEMM inputs
  and outputs, activations and the KV cache are all in that dtype and GEMMs run at its peak;
* weight-only quantization (int8 and int4 always; fp8 on a device whose ``peak_tflops`` has no fp8
  key, e.g. A100 or Apple M2): the weights are read at their stored bytes (plus the quantization
  scales, ``DeviceSpec.weight_bits``) and dequantized into 16-bit registers; the math, the
  activations and the KV cache are 16-bit (bf16 where the device has it, else fp16). This is how
  AWQ/GPTQ kernels, TensorRT-LLM's weight-only modes and llama.cpp's Q8_0/Q4_0 run;
* nvfp4 on a device with an fp4 peak (Blackwell): weights at 4.5 bits and GEMM inputs in FP4, the
  GEMMs at the FP4 peak (priced by ``costmodel.fp4``'s kernel model), bf16 between kernels and an FP8
  KV cache, as TensorRT-LLM serves NVIDIA's NVFP4 checkpoints; weight-only elsewhere;
* ``mxfp4_mxfp8`` (never a model dtype: the expert GEMMs of MXFP4 experts run with MXFP8 activations,
  :func:`expert_gemm_dtype`): weights read at MXFP4's 4.25 bits, GEMM inputs in FP8, the math at the
  FP8 peak on a device with FP4 tensor cores (Blackwell's block-scaled MMA multiplies an FP4 operand by
  an FP8 one at the FP8 rate; only FP4 x FP4 doubles it); weight-only elsewhere.

Everything here is pure: a (model dtype, device) pair in, numbers out.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace

from moesim.schemas.hardware import COMPUTE_DTYPES, GROUP128_WEIGHT_BITS, DeviceSpec
from moesim.schemas.model import DTYPE_BYTES

#: Dtypes stored as quantized weights with scales (bits per weight from ``DeviceSpec.weight_bits``).
QUANTIZED = ("int8", "int4", "fp8", "mxfp4", "nvfp4", "mxfp4_mxfp8")
#: Dtypes that always run weight-only (dequantized into 16-bit math): serving only.
WEIGHT_ONLY = ("int8", "int4", "mxfp4")
#: MXFP4 weights multiplied by MXFP8 activations (W4A8): the expert GEMMs' dtype, not a model dtype.
MXFP4_MXFP8 = "mxfp4_mxfp8"
#: The compute dtype a stored dtype runs natively in, where it differs from its name.
NATIVE_COMPUTE = {"nvfp4": "fp4", MXFP4_MXFP8: "fp8"}
#: The peak a dtype's native math needs on the device, where it is not the compute dtype's own:
#: W4A8 runs on the block-scaled FP4-capable tensor cores (Blackwell), not on Hopper's FP8 ones.
NEEDS_PEAK = {MXFP4_MXFP8: "fp4"}
#: The stored dtype whose bits per weight a GEMM dtype reads.
STORED_AS = {MXFP4_MXFP8: "mxfp4"}


def sixteen_bit_dtype(device_dtypes: Iterable[str]) -> str:
    """The 16-bit math dtype of a device: bf16 when it has a bf16 peak, else fp16, else fp32, else bf16."""
    have = set(device_dtypes)
    return next((d for d in ("bf16", "fp16", "fp32") if d in have), "bf16")


def compute_dtype(model_dtype: str, device_dtypes: Iterable[str]) -> str:
    """The dtype GEMMs run in for weights stored as ``model_dtype`` on a device with ``device_dtypes``
    (the keys of its ``peak_tflops``).

    int8/int4/mxfp4: the device's 16-bit dtype (weight-only; Marlin-style kernels dequantize MXFP4 on
    Hopper). fp8: fp8 when the device has an fp8 peak, else its 16-bit dtype (weight-only fp8).
    nvfp4: fp4 when the device has an fp4 peak (Blackwell: weights and activations in FP4), else its
    16-bit dtype (weight-only). fp32/bf16/fp16: themselves.
    """
    have = set(device_dtypes)
    native = NATIVE_COMPUTE.get(model_dtype, model_dtype)
    needs = NEEDS_PEAK.get(model_dtype, native)
    if model_dtype in WEIGHT_ONLY or (model_dtype in ("fp8", "nvfp4", MXFP4_MXFP8) and needs not in have):
        return sixteen_bit_dtype(have)
    return native


@dataclass(frozen=True)
class Precision:
    """Bytes and dtypes of one model dtype on one device.

    ``weight_bytes``: bytes per parameter read from memory, quantization scales included.
    ``act_bytes``: bytes per element of GEMM inputs and outputs and of kept activations (the
    compute dtype's width; 1 for native fp8, 0.5 for fp4, 2 for weight-only). ``kv_bytes``: bytes per
    element of the KV cache (equal to ``act_bytes``; 1 under fp4: FP8, as TensorRT-LLM's NVFP4
    checkpoints keep it). ``compute_dtype``: the dtype whose peak GEMMs reach.
    """

    model_dtype: str
    compute_dtype: str
    weight_bytes: float
    act_bytes: float
    kv_bytes: float
    weight_only: bool
    note: str  # one sentence when the weights run weight-only; "" otherwise

    @property
    def narrow_weights(self) -> bool:
        """Weights read at fewer bytes than the compute dtype's own (weight-only kernels, and MXFP4 weights
        under FP8 math): a measured table of the compute dtype times them at its bytes, rescaled by the
        roofline to the bytes they move (``ProfiledCostModel._narrow_weight_scale``)."""
        return self.weight_only or self.weight_bytes < self.act_bytes

    @property
    def act_dtype(self) -> str:
        """Dtype of the 16-bit activations between kernels: bf16 under fp8 or fp4 math, else the compute dtype."""
        return "bf16" if self.compute_dtype in ("fp8", "fp4") else self.compute_dtype

    @property
    def attention_dtype(self) -> str:
        """Dtype the serving attention kernel is priced in: the model dtype, but fp8 under fp4 math, and
        bf16 over a 16-bit KV cache. No attention kernel runs in FP4: TensorRT-LLM runs its NVFP4
        checkpoints' context and generation FMHA in FP8 over the FP8 KV cache (``kv_bytes``), so QK^T
        and PV run as FP8 attention (at its measured speed over the 16-bit kernel where one was measured,
        ``CostModelBase._attention_peak``), not at FP4's peak. Over a bf16/fp16 cache (``workload.kv_cache_dtype``, or
        SGLang's and vLLM's default for an FP8 checkpoint) the kernels multiply 16-bit K and V: an FP8
        model's attention then runs at the 16-bit peak (FlashAttention-3, FlashInfer, FlashMLA)."""
        dtype = "fp8" if self.compute_dtype == "fp4" else self.model_dtype
        return "bf16" if dtype == "fp8" and self.kv_bytes >= 2 else dtype


def precision(model_dtype: str, device: DeviceSpec | None = None) -> Precision:
    """The :class:`Precision` of weights stored as ``model_dtype`` on ``device``.

    ``device`` None: a device with every compute dtype (fp8 included) and the default group-128
    scales, for device-free accounting (``moesim.accounting`` functions given only a model).
    """
    have = device.compute_dtypes if device is not None else COMPUTE_DTYPES
    comp = compute_dtype(model_dtype, have)
    weight_only = comp != NATIVE_COMPUTE.get(model_dtype, model_dtype)
    if model_dtype in QUANTIZED:
        stored = STORED_AS.get(model_dtype, model_dtype)
        bits = device.bits_per_weight(stored) if device is not None else GROUP128_WEIGHT_BITS[stored]
        w = bits / 8.0
    else:
        w = DTYPE_BYTES[model_dtype]
    a = DTYPE_BYTES[comp]
    kv = DTYPE_BYTES["fp8"] if comp == "fp4" else a  # no FP4 KV cache is modelled
    note = ""
    if model_dtype == MXFP4_MXFP8 and not weight_only:
        note = (f"mxfp4 weights ({8 * w:g} bits per parameter, scales included) multiplied by mxfp8 activations "
                f"at the fp8 peak")
    if weight_only:
        why = {"fp8": " (no fp8 tensor cores)", "nvfp4": " (no fp4 tensor cores)"}.get(model_dtype, "")
        where = f" on {device.name}" if device is not None else ""
        note = (f"{model_dtype} weights run weight-only{where}{why}: weights read at {8 * w:g} bits per "
                f"parameter (scales included), math in {comp}, activations and KV cache {comp}")
    return Precision(model_dtype, comp, w, a, kv, weight_only, note)


def kv_cache_dtype(s, p: Precision | None = None) -> str:
    """The KV cache dtype a serving workload runs: its ``kv_cache_dtype``, with ``auto`` resolved for the engine
    (``p``: the scenario's precision where the caller has it, else computed).

    ``auto`` stays ``auto`` (the width of the model's activations: an FP8 model on FP8 tensor cores keeps an
    FP8 cache, as TensorRT-LLM's ModelOpt checkpoints carry one) except under ``workload.engine: vllm``,
    whose ``--kv-cache-dtype auto`` "will use model data type" (vLLM's ``CacheConfig.cache_dtype``): the
    16-bit dtype an FP8 checkpoint's non-GEMM work runs in, so an FP8 model keeps a BF16 cache there unless
    the scenario names ``fp8`` (since vLLM PR #29980, 2025-12, also a ModelOpt checkpoint whose
    ``kv_cache_quant_algo`` is FP8: name it). SGLang's ``auto`` is the same; its scenarios name ``bf16``."""
    kv = getattr(s.workload, "kv_cache_dtype", "auto")
    if kv == "auto" and getattr(s.workload, "engine", None) == "vllm":
        p = p or precision(s.model.dtype, s.hardware.device)
        if p.compute_dtype == "fp8":
            return p.act_dtype
    return kv


def scenario_precision(s) -> Precision:
    """The :class:`Precision` of a scenario (its ``model.dtype`` on its ``hardware.device``), with the KV
    cache in a serving workload's :func:`kv_cache_dtype` when that names one."""
    p = precision(s.model.dtype, s.hardware.device)
    kv = kv_cache_dtype(s, p)
    return p if kv == "auto" else replace(p, kv_bytes=DTYPE_BYTES[kv])


def expert_precision(s) -> Precision:
    """The :class:`Precision` of a scenario's routed experts: their GEMMs' dtype (:func:`expert_gemm_dtype`:
    ``model.expert_dtype``, MXFP4 with MXFP8 activations where the workload runs them so) when it is not
    ``model.dtype`` (weight bytes and compute dtype of the expert GEMMs), else :func:`scenario_precision`."""
    e = expert_gemm_dtype(s)
    if e is None:
        return scenario_precision(s)
    p = precision(e, s.hardware.device)
    return replace(p, kv_bytes=scenario_precision(s).kv_bytes)


def expert_gemm_dtype(s) -> str | None:
    """The dtype the routed experts' GEMMs are priced in where it is not ``model.dtype`` (None: it is).

    ``model.expert_dtype``, except MXFP4 experts with MXFP8 activations (``workload.mxfp4_activations``;
    auto: TensorRT-LLM's choice on a device with FP4 tensor cores, its gpt_oss README's "Blackwell: mxfp8",
    and BF16 elsewhere, vLLM's and SGLang's default FlashInfer MXFP4 x BF16 path), which run as
    :data:`MXFP4_MXFP8`."""
    e = s.model.expert_dtype or s.model.dtype
    if e == "mxfp4":
        act = getattr(s.workload, "mxfp4_activations", "auto")
        trtllm = getattr(s.workload, "engine", None) == "trtllm" and "fp4" in s.hardware.device.compute_dtypes
        if act == "mxfp8" or (act == "auto" and trtllm):
            e = MXFP4_MXFP8
    return None if e == s.model.dtype else e


def parameter_bytes(s, dense: float, experts: float) -> float:
    """Bytes of ``dense`` non-expert and ``experts`` routed-expert parameters at their dtypes' bytes."""
    return dense * scenario_precision(s).weight_bytes + experts * expert_precision(s).weight_bytes


def summary_fields(s) -> dict:
    """The precision keys of a summary: compute dtype, weight bytes per parameter, the note, and the share of its
    benchmarked compute rate the device sustains under load.

    QLoRA (``workload.trainable.base_dtype: nf4``): the base weights' mean, nf4 for the linear layers
    it quantises, the training width for the rest (embeddings, norms)."""
    p = scenario_precision(s)
    weight_bytes = p.weight_bytes
    note = p.note
    if s.model.expert_dtype not in (None, s.model.dtype):  # the mean over every parameter, and both notes
        e = expert_precision(s)
        from moesim.accounting import param_counts  # local: accounting imports this module

        c = param_counts(s.model)
        weight_bytes = parameter_bytes(s, c.total - c.routed_experts, c.routed_experts) / c.total
        note = "; ".join(x for x in (note, f"routed experts: {e.note}" if e.note else
                                     f"routed experts in {e.model_dtype}") if x)
    spec = getattr(s.workload, "trainable", None)
    if spec is not None and spec.quantized:
        from moesim.finetune import (  # local: finetune imports this module
            nf4_bytes_per_weight,
            trainable_counts,
        )

        c = trainable_counts(s.model, spec)
        rest = DTYPE_BYTES[p.act_dtype]  # the 16-bit width training keeps unquantised weights in
        weight_bytes = (c.quantized * nf4_bytes_per_weight(spec) + (c.base - c.quantized) * rest) / c.base
    out = {"compute_dtype": p.compute_dtype, "weight_bytes_per_param": weight_bytes, "precision_note": note,
           # the clock the device holds under load prices its compute-bound kernels (costmodel/sustained.py)
           "sustained_compute_fraction": float(s.hardware.device.sustained_fraction(p.compute_dtype))}
    if getattr(s.workload, "kind", None) == "serving":  # the cache the engine keeps, its auto resolved
        kv = kv_cache_dtype(s, p)
        out["kv_cache_dtype"] = kv if kv != "auto" else ("fp8" if p.kv_bytes == 1 else p.act_dtype)
    return out


def grad_bytes(model_dtype: str, grad_dtype: str) -> float:
    """Bytes per gradient in training: 4 for an fp32 model or fp32 gradient buffers (``plan.grad_dtype``,
    Megatron-LM's default under bf16: gradients accumulated and reduced in fp32), else 2."""
    return 4.0 if model_dtype == "fp32" or grad_dtype == "fp32" else 2.0


#: Bytes of one Adam moment per parameter, by ``plan.moments_dtype``. int8: bitsandbytes' 8-bit optimizers quantise
#: each state block-wise, one byte an element and an fp32 absmax per block of 2,048 (Dettmers et al. 2021, "8-bit
#: Optimizers via Block-wise Quantization", arXiv:2110.02861 sec. 2).
MOMENT_BYTES = {"fp32": 4.0, "bf16": 2.0, "int8": 1.0 + 4.0 / 2048}


def adam_state_bytes(moments_dtype: str, master_weights: bool = True) -> float:
    """Bytes per trainable parameter of Adam's states: the fp32 master copy (4; none under ``plan.master_weights:
    false``) and two moments of ``plan.moments_dtype`` (:data:`MOMENT_BYTES`: 4 each in fp32, 2 in bf16 as
    DeepSeek-V3's, sec. 3.3.3, ~1 in int8): 12, 8 or ~6 with the master copy, 8, 4 or ~2 without."""
    return (4.0 if master_weights else 0.0) + 2 * MOMENT_BYTES[moments_dtype]
