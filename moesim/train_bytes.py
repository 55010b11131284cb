"""Bytes per parameter a training device stores for its weights and optimizer, and what decides the
activations it keeps (``moesim.frozen_inputs.Saves``). Pure functions of a scenario; ``moesim.memory``
multiplies them by the parameters and tokens a device holds."""

from __future__ import annotations

from moesim.accounting import param_counts
from moesim.costmodel.fp8 import PRIMARY_WEIGHT_RECIPES, cached_weight_bytes
from moesim.engine.training.fp8 import cast_recipe
from moesim.frozen_inputs import Saves, saves_of
from moesim.precision import Precision, adam_state_bytes, scenario_precision
from moesim.schemas import DTYPE_BYTES, ModelSpec, PlanSpec, Scenario


def block_share(m: ModelSpec) -> float:
    """Share of the parameters outside the routed experts that sit in the blocks (all but the embedding and
    output head, which Megatron keeps in 16 bits; its embedding count holds the head too when untied)."""
    p = param_counts(m)
    return (p.dense - p.embedding) / p.dense if p.dense else 0.0


#: Bytes per parameter of mixed-precision Adam's states (fp32 master copy + fp32 m + fp32 v = 4 + 4
#: + 4) in training: ZeRO (Rajbhandari et al. 2020, sec. 3.1) and Megatron-core's distributed
#: optimizer. Gradients take ``precision.grad_bytes`` per parameter: 2 by default (the ZeRO paper's
#: 16 bytes per parameter; Megatron's --grad-reduce-in-bf16), 4 with ``plan.grad_dtype: fp32``,
#: Megatron-LM's own default under bf16 (fp32 main gradients; its distributed-optimizer table: bf16
#: params with fp32 grads, 18 bytes unsharded, 6 + 12/d sharded). FP8 training keeps them: FP8 is
#: only the GEMMs' inputs. The DeepSeek-V3 report (sec. 3.3.3) keeps fp32 gradients, an fp32 master
#: copy and bf16 m and v (4 + 4 + 2 + 2 = 12 bytes): ``plan.grad_dtype: fp32`` with
#: ``plan.moments_dtype: bf16`` (:func:`optimizer_bytes`: 8 bytes of Adam states).
TRAIN_OPTIMIZER_BYTES = adam_state_bytes("fp32")  # 12


def optimizer_bytes(plan: PlanSpec, model_dtype: str) -> float:
    """Bytes per trainable parameter of Adam's states on the device: the fp32 master copy and two moments of
    ``plan.moments_dtype`` (12 with fp32 moments, :data:`TRAIN_OPTIMIZER_BYTES`; 8 with bf16), 4 fewer
    without the master copy (``plan.master_weights: false``, or an fp32 ``model_dtype``, whose weights are
    already the fp32 copy Adam updates); none under ``plan.paged_optimizer`` (unified memory outside
    PyTorch's allocator, paged to the host when the device is short)."""
    master = plan.master_weights and model_dtype != "fp32"
    return 0.0 if plan.paged_optimizer else adam_state_bytes(plan.moments_dtype, master)


def training_weight_bytes(prec: Precision) -> float:
    """Bytes per parameter of the model weights a training step keeps (before ZeRO-3 sharding).

    The 16-bit (or fp32) width of the compute: ``DTYPE_BYTES[prec.act_dtype]``. FP8 training keeps
    bf16 weights (2 bytes), not fp8 ones: the GEMMs cast them to FP8 on the fly (Transformer
    Engine, Megatron-core's default without ``--fp8-param-gather``) and the optimizer's fp32 master
    copy is in :data:`TRAIN_OPTIMIZER_BYTES`. The FP8 copy (and, on Hopper, its transpose) of each
    weight that Transformer Engine caches across a step's microbatches comes on top:
    :func:`fp8_weight_cache_bytes`.
    """
    return DTYPE_BYTES[prec.act_dtype]


def stored_weight_bytes(s: Scenario, b: float) -> tuple[float, float]:
    """(dense, routed-expert) bytes per parameter of the model weights a training device stores: ``b`` (the
    16-bit width, :func:`training_weight_bytes`), except FP8 or NVFP4 primary weights (``plan.fp8_param_gather``
    under a tensor-scaled or NVFP4 recipe: Transformer Engine's ``fp8_model_init``), which keep each block weight
    in its low-precision form alone: :func:`~moesim.costmodel.fp8.cached_weight_bytes`' cast, 1 byte under
    tensor scaling on Blackwell, 2 on Hopper (with its cached transpose), 1.125 under NVFP4. The embedding and
    output head stay 16-bit (the dense share is blended by the model's embedding share, as
    :func:`fp8_weight_cache_bytes` does)."""
    recipe = cast_recipe(scenario_precision(s).compute_dtype, s.plan.fp8_recipe)
    if recipe is None or not s.plan.fp8_param_gather or recipe not in PRIMARY_WEIGHT_RECIPES:
        return b, b
    block = cached_weight_bytes(recipe, not s.hardware.device.fp8_non_tn_gemm)
    share = block_share(s.model)
    return share * block + (1 - share) * b, block


def fp8_weight_cache_bytes(s: Scenario, dense: float, experts: float) -> float:
    """Bytes of FP8 (or NVFP4) weight copies one training device keeps through a step (0 unless the GEMMs run
    FP8 or NVFP4: 1.125 bytes a block weight under NVFP4, its rowwise and columnwise 4-bit copies).

    ``dense`` / ``experts``: the parameters the device holds (:func:`moesim.memory.weight_params_per_device`). The linear
    layers' weights, the routed experts' and the blocks' dense ones (all but the embedding and output head,
    which Megatron keeps in 16 bits; the norms and router, a few thousandths, are left in), at
    :func:`~moesim.costmodel.fp8.cached_weight_bytes` each (Transformer Engine's cast, cached across
    microbatches: 2 bytes on Hopper). Under ZeRO-3 each weight is gathered for its use and its cast freed
    with it, and with ``plan.fp8_weight_cache`` false every microbatch casts afresh: 0.
    """
    plan = s.plan
    comp = scenario_precision(s).compute_dtype
    recipe = cast_recipe(comp, plan.fp8_recipe)
    if recipe is None or plan.zero_stage >= 3 or not plan.fp8_weight_cache:
        return 0.0
    per = cached_weight_bytes(recipe, not s.hardware.device.fp8_non_tn_gemm, plan.fp8_param_gather)
    return per * (block_share(s.model) * dense + experts)


def training_saves(s: Scenario) -> Saves:
    """What decides a training run's kept GEMM inputs (:class:`moesim.frozen_inputs.Saves`): its trainable
    weights, and ``plan.fp8_attention`` / ``plan.fp8_act_input`` where its GEMMs run FP8 or NVFP4."""
    fp8 = cast_recipe(scenario_precision(s).compute_dtype, s.plan.fp8_recipe) is not None
    return saves_of(s.workload.trainable, fp8 and s.plan.fp8_attention, fp8 and s.plan.fp8_act_input)
