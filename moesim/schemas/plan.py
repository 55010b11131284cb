"""The parallelism plan, Megatron-style."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, NonNegativeFloat, PositiveInt, field_validator, model_validator

from moesim.schemas._base import BOUND_REASON, MAX_EXPERTS, MAX_LAYERS, Strict, bounded

#: Megatron-core's recompute modules moesim prices (``--recompute-modules``; its Mamba/GDN/mHC ones aside).
RecomputeModule = Literal["core_attn", "layernorm", "mla_up_proj", "moe_act", "moe", "shared_experts", "mlp"]


#: The plan fields that set how the layers split over the pipeline's chunks (all unset: the even split).
LAYER_SPLIT_FIELDS = ("first_stage_layers", "last_stage_layers", "pipeline_layout")

#: Layers of one model chunk in ``plan.pipeline_layout`` (a chunk may hold none: Megatron's 'mL').
ChunkLayers = Annotated[int, Field(ge=0, le=MAX_LAYERS)]


class PlanSpec(Strict):
    """How devices split the model and the batch.

    Devices = dp * tp * pp * cp. By default expert parallelism is carved out of the data-parallel
    ranks (Megatron-core): ``ep`` divides ``dp``, each rank of an EP group holds the experts its
    ``moesim.engine.placement.Placement`` assigns (contiguous ``n_experts / ep``, or ``(n_experts +
    N) / ep`` slots with ``placement.redundant_experts: N``), and experts are sharded over ``tp`` as
    the dense layers are. With ``etp`` (training) the experts are sharded over ``etp`` ranks and EP
    groups are formed from the ``tp * cp * dp`` ranks (``moesim.engine.expert_tp``). For serving,
    ``dp`` is the number of model replicas, and ``etp = 1`` with ``ep = tp`` keeps whole experts in
    EP over each replica's TP group (:attr:`PlanSpec.ep_in_tp_group`).
    """

    dp: PositiveInt = bounded(1, le=1 << 24, why="16.7M replicas: ~100x the largest cluster built (~200k GPUs)",
                              description="Data-parallel degree (replicas when serving).")
    tp: PositiveInt = bounded(1, le=1 << 16, why="tp must divide model.n_heads (at most 65536); practice is 1-64",
                              description="Tensor-parallel degree.")
    pp: PositiveInt = bounded(1, le=MAX_LAYERS, why="at most one stage per layer (model.n_layers <= 1024)",
                              description="Pipeline-parallel stages.")
    cp: PositiveInt = bounded(1, le=1 << 16, why="65536 ranks per sequence: 2*cp chunks of 128 tokens of the longest "
                              "allowed sequence (2^24 tokens); published runs use 2-64",
                              description="Context-parallel degree (training only; Megatron-core "
                              "--context-parallel-size): each sequence is split over cp ranks (2*cp load-balanced "
                              "chunks), attention K/V pass around a ring of cp ranks (Transformer Engine cp_comm_type "
                              "p2p, or a2a: plan.cp_comm). Devices = dp*tp*pp*cp; the gradient sync and ZeRO span "
                              "dp*cp ranks.")
    cp_comm: Literal["p2p", "a2a"] = Field("p2p", description=(
        "How context parallelism exchanges attention inputs (Transformer Engine's cp_comm_type). p2p: ring "
        "attention, K/V blocks passed around the cp ranks under each step's attention, one kernel per ring "
        "step and merges of their outputs. a2a: DeepSpeed-Ulysses, all-to-alls of Q, K and V before "
        "attention and of its output after (and of their gradients in backward), on the critical path, so "
        "each rank runs one kernel over the whole sequence for n_heads / (tp * cp) heads; needs the heads "
        "and KV heads per TP rank divisible by cp. Ignored when cp = 1."))
    ep: PositiveInt = bounded(1, le=MAX_EXPERTS, why="ep divides model.n_experts (at most 2^20)",
                              description="Expert-parallel degree: divides n_experts (or n_experts + "
                              "placement.redundant_experts); ep * etp divides tp * cp * dp; with etp = tp it divides dp.")
    etp: PositiveInt | None = bounded(None, le=1 << 16, why="etp divides plan.tp (at most 65536)", description=(
        "Expert tensor-parallel degree (Megatron-core --expert-tensor-parallel-size, MoE parallel "
        "folding): each routed expert is split over etp ranks instead of tp, attention stays on tp. Divides tp. "
        "Training: the expert layers regroup the tp*cp*dp ranks of a stage as etp x ep x expert-DP (etp fastest), "
        "so with etp < tp an EP group may span TP ranks (TP2 x DP16 -> EP32 with etp 1), each rank dispatching "
        "its own sequence-parallel tokens. Serving: unset, or 1 with ep = tp (whole experts in EP over each "
        "replica's TP group, tokens replicated there: no all-to-all, the TP all-reduce combines; vLLM "
        "--enable-expert-parallel without DP, TensorRT-LLM --tp N --ep N). Unset: tp (EP carved out of dp)."))
    microbatches: PositiveInt = bounded(1, le=1 << 20, why="1M microbatches per step; the simulation plays each one "
                                        "(real pipelines use 8-512)",
                                        description="Microbatches per step per pipeline (training).")
    schedule: Literal["gpipe", "1f1b", "interleaved", "zb-h1", "dualpipe"] = Field("1f1b", description=(
        "Pipeline schedule: gpipe, 1f1b, interleaved (virtual_stages chunks per device), zb-h1 (Zero Bubble "
        "ZB-H1: backward split into input and weight gradients, the weight gradients filling the cooldown; "
        "bubble (pp-1)(F+B-W), 1F1B's memory) or dualpipe (DeepSeek-V3's bidirectional DualPipe: microbatches "
        "from both ends, a forward and a backward of the other direction overlapped, all-to-alls under "
        "compute; bubble (pp/2-1)(F&B+B-3W), two copies of the stage's parameters, pp+1 microbatches' "
        "activations; needs pp even and microbatches even and >= 2*pp)."))
    virtual_stages: PositiveInt = bounded(1, le=MAX_LAYERS, why="at most one chunk per layer (model.n_layers <= 1024)",
                                          description="Model chunks per device (interleaved schedule only).")
    first_stage_layers: PositiveInt | None = bounded(
        None, le=MAX_LAYERS, why="fewer than model.n_layers (<= 1024)",
        description="Training with pp >= 2: transformer layers of pipeline stage 0 (Megatron-core "
        "--decoder-first-pipeline-num-layers); the other stages split the rest evenly. Stage 0 also runs the "
        "embedding, so fewer layers there balance the pipeline. Interleaved: spread over the stage's virtual_stages "
        "chunks (at least one each). Not with schedule dualpipe (plan.pipeline_layout there). Unset: the even split.")
    last_stage_layers: PositiveInt | None = bounded(
        None, le=MAX_LAYERS, why="fewer than model.n_layers (<= 1024)",
        description="Training with pp >= 2: transformer layers of the last pipeline stage (Megatron-core "
        "--decoder-last-pipeline-num-layers); the other stages split the rest evenly. The last stage also runs "
        "the output head and loss (large with a large vocabulary), so fewer layers there balance the pipeline. "
        "Interleaved: spread over the stage's virtual_stages chunks (at least one each). Not with schedule "
        "dualpipe (plan.pipeline_layout there). Unset: the even split.")
    pipeline_layout: list[ChunkLayers] | None = Field(
        None, max_length=MAX_LAYERS, json_schema_extra={BOUND_REASON: "a chunk holds at most every layer, and there are "
                                                        "at most 1024 chunks (model.n_layers' bound)"},
        description="Training with pp >= 2: transformer layers of each model chunk, "
        "in global chunk order (pp x virtual_stages entries; chunk c runs on stage c % pp), summing to "
        "model.n_layers; a chunk may hold none, so pp x virtual_stages may exceed model.n_layers (Megatron's embedding or "
        "loss alone in the first or last chunk, account_for_embedding/loss_in_pipeline_split). Or Megatron-core's --pipeline-model-parallel-layout string itself, "
        "read as those counts: 'Et*4|(tttt|)*14tmL' (embedding and 4 layers, 14 chunks of 4, then 1 layer, the MTP "
        "modules and the loss) is [4, 4, ..., 4, 1], 16 entries. The embedding runs on the first chunk, the MTP modules "
        "(workload.mtp_layers) and the loss on the last. Schedule dualpipe: pp entries, model chunk s on stage s "
        "and (the other direction) on stage pp-1-s, so both end stages carry the embedding, a head and the MTP "
        "modules. Not with first_stage_layers / last_stage_layers. Unset: the even split.")
    zero_stage: Literal[0, 1, 2, 3] = Field(1, description="ZeRO stage: 1 shards optimizer states over dp, 2 also gradients, 3 also weights.")
    recompute: Literal["none", "selective", "full"] = Field("selective", description=(
        "Activation recomputation. none: every activation kept. full: each layer keeps only its input and re-runs "
        "its whole forward (collectives included) in backward, holding what it re-creates until its backward ends "
        "(one layer at a time). selective: unset recompute_modules, moesim's "
        "classic selective recompute (Korthikanti et al. 2022 with flash attention): the attention core and its "
        "Q/K/V are recomputed, not kept; else the Megatron-core modules listed in recompute_modules."))
    recompute_modules: list[RecomputeModule] | None = Field(None, description=(
        "Training with recompute: selective (ignored with none or full, as Megatron-core ignores "
        "--recompute-modules outside selective granularity): the modules Megatron-core re-runs in backward "
        "(--recompute-modules), each dropping the activations it would keep and re-running its forward ops in "
        "the backward's recompute slot. core_attn: the attention core (with flash attention its Q/K/V are the "
        "checkpoint's inputs, so it frees nothing: Megatron warns as much). layernorm: the pre-norms that are layers "
        "of their own under Megatron's Transformer Engine spec, a MoE block's and MLA's input norm (their outputs, "
        "the next GEMM's saved input, are dropped; the other pre-norms are fused into their GEMM). mla_up_proj: MLA's Q and KV up-projections "
        "and RoPE (the per-head Q/K/V dropped, re-run at their share of the QKV projection's FLOPs). moe_act: "
        "the routed experts' activation (its output, fc2's input, dropped). moe: the whole MoE layer (router, "
        "dispatch, routed and shared experts, combine; only its input kept), the all-to-alls re-run as "
        "communication. shared_experts: the shared experts. mlp: the dense layers' FFN (not MoE layers, as in "
        "Megatron-core). []: nothing (as recompute: none). Unset: moesim's classic selective (see recompute)."))
    grad_dtype: Literal["bf16", "fp32"] = Field("bf16", description=(
        "Training: dtype of the gradient buffers and of their data-parallel reduction. bf16: 2 bytes per "
        "parameter (the ZeRO paper's 16 bytes of weights, gradients and Adam; Megatron's --grad-reduce-in-bf16); "
        "fp32: Megatron-LM's own default under bf16 (accumulate_allreduce_grads_in_fp32: 4 bytes, reduced in fp32; "
        "its distributed-optimizer table counts bf16 params with fp32 grads at 6 + 12/d bytes), also ms-swift's "
        "Megatron backend. An fp32 model keeps fp32 gradients either way."))
    moments_dtype: Literal["fp32", "bf16", "int8"] = Field("fp32", description=(
        "Training: dtype of Adam's first and second moments. fp32: 4 bytes each, 12 bytes a trainable parameter "
        "with the fp32 master copy (sharded by the ZeRO stage); bf16: 2 bytes each, 8 with the master copy, as "
        "DeepSeek-V3 trained (arXiv:2412.19437 sec. 3.3.3) and Megatron-core's precision-aware optimizer allows "
        "(OptimizerConfig exp_avg_dtype and exp_avg_sq_dtype); int8: bitsandbytes' 8-bit Adam, one byte and an "
        "fp32 scale per 2,048 (precision.MOMENT_BYTES). The optimizer step reads and writes the narrower moments too."))
    paged_optimizer: bool = Field(False, description=(
        "Training: Adam's states in CUDA unified memory (bitsandbytes' Paged optimizers, e.g. PagedAdamW8bit), "
        "outside PyTorch's allocator: they page to host memory when the device is short, so they do not decide "
        "the fit and the device's peak leaves them out (the paging's PCIe time is not priced)."))
    master_weights: bool = Field(True, description=(
        "Training: whether Adam keeps an fp32 master copy of the trainable weights (4 bytes a parameter, mixed "
        "precision). false: the optimizer updates the 16-bit weights in place, its moments at moments_dtype (pure "
        "bf16 training: torchtune's recipes, whose AdamW states take the bf16 parameters' dtype, with moments_dtype "
        "bf16: 4 bytes a parameter)."))
    grad_buffers: Literal["persistent", "transient"] = Field("persistent", description=(
        "Training: persistent: gradient buffers allocated once and kept all step (Megatron-core, DeepSpeed, DDP's "
        "buckets), counted beside the activations; transient: PyTorch's .grad tensors, made by the backward and "
        "dropped by zero_grad(set_to_none=True) (torchtune's single-device recipes, Hugging Face's Trainer on one "
        "GPU): with one micro-batch and pp 1 the peak is the larger of the loss's moment (no gradient yet) and the "
        "backward's end (every gradient, the activations spent; moesim/grad_lifetime.py)."))
    optimizer_in_backward: bool = Field(False, description=(
        "Training with one micro-batch, pp 1 and no ZeRO: each parameter's Adam step runs as soon as its gradient "
        "is ready and frees it (torchtune's optimizer_in_bwd), so one gradient, the largest, is alive at a time."))
    activation_offload: bool = Field(False, description=(
        "Training with recompute: full: each layer's checkpointed input goes to pinned host memory in forward and "
        "comes back in backward on a side stream (torchtune's enable_activation_offloading), so the device keeps "
        "only the last 5 (its max_fwd_stash_size) of a micro-batch's stored layer inputs. Memory only: the copies "
        "overlap compute (torchtune's A100 table: -0.1 % tokens/s)."))
    fp8_moe_act_input: bool = Field(False, description=(
        "FP8 training (model.dtype fp8) with moe_act in recompute_modules: the routed experts' SwiGLU input (fc1's "
        "output, kept to re-run the activation in backward) is cached in FP8, 1 byte an element, as DeepSeek-V3 "
        "does with its fine-grained quantization (arXiv:2412.19437 sec. 3.3.3); unset, it is kept in 16 bits as "
        "Megatron-core keeps it. Memory only: the cast is not priced as time. Ignored without FP8, as fp8_recipe."))
    fp8_dispatch: bool = Field(False, description=(
        "FP8 training (model.dtype fp8) with plan.ep > 1: the forward expert-parallel dispatch sends each routed row "
        "in FP8 with one fp32 scale per 128 channels (1.03 bytes an element; DeepEP's FP8 dispatch, as DeepSeek-V3 "
        "quantizes the activations before the MoE up-projections and then dispatches them, arXiv:2412.19437 sec. "
        "3.3.3). The combine and both backward all-to-alls stay 16-bit. Unset: Megatron-core's dispatch, 16-bit. "
        "Ignored without FP8, as fp8_recipe."))
    fp8_act_input: bool = Field(False, description=(
        "FP8 training (model.dtype fp8): every MLP's activation-function input (SwiGLU's gate and up: fc1's output; "
        "dense FFNs, shared and routed experts) is kept for the backward in FP8, 1 byte an element, and cast back "
        "before it (Megatron-core's activation_func_fp8_input_store, NeMo's FP8_ACT in MLPerf's Llama 2 70B LoRA). "
        "Memory only: the casts are not priced as time. Ignored without FP8, as fp8_recipe."))
    allocator: Literal["caching", "expandable_segments"] = Field("caching", description=(
        "Training: the mode of PyTorch's CUDA caching allocator (PYTORCH_CUDA_ALLOC_CONF), which sets how much "
        "memory it reserves beyond the live tensors (`peak_reserved_gib`, what torch.cuda.max_memory_reserved "
        "and training logs report). caching: PyTorch's default; with full recompute or a frozen base "
        "(LoRA) about 24 % of the reserved memory holds no tensor at the peak, else 4 % (GMLake's A100 "
        "measurements, moesim/allocator.py). expandable_segments: expandable_segments:True, whose one growing "
        "segment per stream leaves nothing stranded. The fits verdict counts the live tensors either way."))
    fp8_recipe: Literal["delayed", "current", "mxfp8"] = Field("delayed", description=(
        "FP8 training only (model.dtype fp8): Transformer Engine's scaling recipe, which sets the cast "
        "kernels each FP8 GEMM adds: delayed (amax history, TE's default) or current (per-tensor amax "
        "each step: an extra read per cast), both tensor-scaled, or mxfp8 (Blackwell's MXFP8BlockScaling: "
        "E8M0 scales per 32 elements, a rowwise and a columnwise copy of every cast on any GPU; its GEMMs "
        "priced as FP8's). Ignored under model.dtype nvfp4, whose GEMM inputs are cast by Transformer Engine's "
        "NVFP4BlockScaling (an amax pass and a rowwise and a columnwise 4-bit copy with an E4M3 scale per 16 "
        "values, moesim/costmodel/fp8.py)."))
    fp8_attention: bool = Field(False, description=(
        "FP8 or NVFP4 training (model.dtype fp8 or nvfp4): the attention core runs in FP8 (Transformer Engine's "
        "fp8_dot_product_attention, cuDNN's FP8 SDPA) at the speed over BF16 that cuDNN's benchmark measured for "
        "the device and head width, forward and backward apart (moesim/costmodel/attention_rate.py: 1.3-1.7x "
        "forward on Blackwell, 0.72x backward on an H200; heads wider than 128 keep BF16 speed on Hopper), and "
        "keeps Q, K, V and its output for the backward in FP8 (NVTE_FP8_DPA_BWD). Ignored otherwise, as fp8_recipe."))
    fp8_output_proj: bool = Field(False, description=(
        "FP8 training only (model.dtype fp8): the output head's GEMMs (the logits and, with "
        "workload.mtp_layers, each MTP module's head pass) run in FP8 like the layers' GEMMs (Megatron-core's "
        "fp8_output_proj, Transformer Engine's MXFP8 LM head); unset, they stay in BF16 as Megatron's "
        "output layer does. Ignored otherwise, as fp8_recipe."))
    fp8_weight_cache: bool = Field(True, description=(
        "FP8 or NVFP4 training (model.dtype fp8 or nvfp4): each weight is cast to FP8 (NVFP4) once a step and the cast "
        "(with its transpose on Hopper) kept through the step's microbatches, as Transformer Engine does under "
        "Megatron-core (is_first_microbatch): one weight cast a step, and 2 bytes per block weight held on Hopper (1 on "
        "Blackwell, 2 under MXFP8, 1.125 under NVFP4; train_bytes.fp8_weight_cache_bytes). false: every microbatch casts every weight again and nothing "
        "is kept (Transformer Engine called without is_first_microbatch). ZeRO-3 casts every microbatch and keeps "
        "nothing either way. Ignored otherwise, as fp8_recipe."))
    fp8_param_gather: bool = Field(False, description=(
        "FP8 or NVFP4 training (model.dtype fp8 or nvfp4): the ZeRO parameter all-gathers (the distributed optimizer's after each "
        "step, ZeRO-3's before each pass) move the FP8 weights, 1 byte per parameter (Megatron's --fp8-param-gather, "
        "Transformer Engine's FP8 primary weights); unset, they move the 16-bit copies, 2 bytes. The weights being FP8, "
        "no layer casts one: a tensor-scaled weight is only transposed for the backward where the GEMMs need TN "
        "layouts (Hopper), not at all on Blackwell (hardware.device.fp8_non_tn_gemm). Memory counts these "
        "weights as the 16-bit copies (2 bytes: the FP8 weight and its Hopper transpose) and no cached cast of them. "
        "Under model.dtype nvfp4: NVFP4 primary weights (Megatron-Bridge's fp4_param_gather, or LoRA over a "
        "pre-quantized NVFP4 base), which carry both 4-bit copies, so no layer casts a weight and the gathers move "
        "0.5625 bytes a weight. Ignored otherwise, as fp8_recipe."))
    moe_layer_host_us: NonNegativeFloat | None = bounded(
        None, le=1e6, why="at most 1e6 us (1 s per layer pass)",
        description="Training: least time, in us, of one MoE layer's forward + backward for one micro-batch on "
        "one GPU, set by the host issuing its kernels eagerly (Megatron-Core with Transformer Engine; a pass whose "
        "GPU work is shorter waits for the host). Unset: the cost model's default (9200 on CUDA GPUs, read off "
        "published Megatron-Core runs, see costmodel/train_host.py; 0 on Apple, CPU and TPU). 0: no floor, as with "
        "full-iteration CUDA graphs.")
    overlap_dp_comm: bool = Field(True, description="Overlap the data-parallel gradient sync with backward.")
    dp_bucket_params: PositiveInt | None = bounded(
        None, le=1 << 40, why="2^40 parameters: beyond any model's gradients on one device",
        description="Training, ZeRO 0-2: parameters per gradient bucket of the data-parallel sync (Megatron's "
        "--ddp-bucket-size, NeMo's BUCKET_SIZE): each bucket is one collective, reduced once its last layer's "
        "gradients are ready, and its parameters are gathered in one after the step (engine/training/buckets.py). "
        "Unset: Megatron-Core's default, max(40M, 1M x the data-parallel group's size), or one bucket for "
        "everything when overlap_dp_comm is false. ZeRO-3 syncs and gathers one layer at a time.")
    defer_head_wgrad: int | None = bounded(
        None, ge=0, le=1 << 20, why="2^20 micro-batches: far beyond any step's count (DeepSeek-V3's MLPerf run: 240)",
        description="Training, 1F1B and interleaved schedules: hold the output head's weight-gradient GEMM back and run "
        "it on the last pipeline stage after its last backward, in the pipeline's drain, before the gradient sync "
        "(Megatron's defer_embedding_wgrad_compute with wgrad_deferral_limit N: the first N micro-batches' are held, "
        "0 holds every one; megatron/core/pipeline_parallel/schedules.py finish_embedding_wgrad_compute). The work "
        "leaves the stage's critical path and lands where it would otherwise wait for the earlier stages' cooldown. "
        "null: each micro-batch's runs in its own backward. Ignored by schedules that split the backward (zb-h1, "
        "dualpipe), which place every weight gradient themselves. Memory: the held inputs and logit gradients "
        "(per held micro-batch, tokens x (d_model + vocab / tp) at the activations' width) count on the loss stage.")
    alltoall: Literal["flat", "hierarchical", "deepep_normal", "deepep_low_latency", "allgather"] = Field(
        "flat",
        description="All-to-all algorithm: flat (every peer directly), hierarchical (gather in node, one NIC "
        "exchange), deepep_normal (DeepEP's high-throughput kernels: one RDMA copy per remote node, NVLink "
        "forwarding, a count-exchange pass first), deepep_low_latency (DeepEP's decode kernels: one message "
        "per token and expert straight to its rank, no forwarding or dedup, one fixed-cost pass) or allgather "
        "(no all-to-all: the EP group all-gathers every rank's tokens whole and reduce-scatters the outputs, as "
        "ring collectives: vLLM's default allgather_reducescatter backend for DP + EP, TensorRT-LLM's "
        "attention-DP MoE without its all-to-all, Megatron's allgather dispatcher).")
    overlap_alltoall: bool = Field(
        False, description="Hide expert-parallel all-to-alls behind the compute of another microbatch. "
        "Training: Megatron-core's combined 1F1B, `--overlap-moe-expert-parallel-comm` (\"1F1B A2A "
        "overlap\"). Each steady-state forward is played together with the backward of an earlier "
        "microbatch, one more forward in the warm-up (as Megatron does); the dispatch and combine of "
        "one run on the `ep_comm` stream while the other computes, so only the residue is exposed "
        "(`alltoall_exposed_s`). With pp > 1 it needs schedule: interleaved and virtual_stages >= 2 "
        "(Megatron requires virtual pipeline stages). Serving: two-batch overlap (SGLang's TBO, "
        "DeepSeek's dual micro-batch): each iteration of 2 or more tokens runs as two half-size "
        "micro-batches, one's dispatch/combine under the other's compute; every weight is read twice, "
        "so it pays off only at large batches (prefill) and slows small decode batches; the EP time "
        "reported is the exposed part. Nothing to hide when ep = 1.")

    moe_impl: Literal["grouped", "hf_loop"] = Field(
        "grouped", description="Training: how the MoE layers run the routed experts. grouped: grouped expert GEMMs "
        "with fused permute kernels (Megatron-Core, DeepSpeed-MoE). hf_loop: Hugging Face transformers < 5 "
        "(MixtralSparseMoeBlock, Qwen2MoeSparseMoeBlock; with PEFT/bitsandbytes/DeepSpeed ZeRO): a Python loop "
        "over the busy experts, each with its own GEMMs at its own token count, elementwise and indexing kernels, "
        "and a torch.where that makes the host wait for the GPU, exposing the launch time of the kernels after it "
        "(engine/training/hf_loop.py). Needs ep = 1.")

    zero3_fetch: Literal["block", "linear"] = Field(
        "block", description="Training with zero_stage 3 and moe_impl hf_loop: how DeepSpeed ZeRO-3 gathers the experts' "
        "parameters. block: one fetch per MoE block (set_z3_leaf_modules; DeepSpeed's default for Mixtral, Qwen2-MoE "
        "and Qwen3-MoE blocks since its PR #7604, 2025-09; ms-swift's since 2025-10-10), as cheap as any layer's. linear: "
        "every expert nn.Linear is its own module, fetched by its own hooks on the host's critical path before each "
        "forward, recompute and backward (~0.76 ms each, engine/training/hf_loop.py ZERO3_FETCH_US), as before leaf "
        "modules.")

    loss_impl: Literal["fused", "inplace", "transformers", "chunked"] | None = Field(
        None, description="Training: how the loss holds the output head's logits, which sets their memory on the stage "
        "that computes it, and the passes it makes over them, which set its time (activations.LOSS_PASS_BYTES_PER_LOGIT: "
        "30 and 14 bytes a logit forward and backward fused, 38 and 14 inplace, 18 and 22 transformers, 4 and 4 "
        "chunked). "
        "fused: Megatron-core's vocab-parallel cross entropy under cross_entropy_loss_fusion (native), "
        "whose torch.compile'd steps copy the fp32 logits once more (the 16-bit logits, their fp32 copy and that "
        "transient: 10 bytes per logit). inplace: the same cross entropy run eagerly (cross_entropy_loss_fusion off), "
        "exponentiated and turned into the gradient in place: 6 bytes per logit. transformers: Hugging Face's "
        "ForCausalLMLoss (the logits upcast to fp32, the fp32 log-softmax it saves, and in backward the dense fp32 "
        "gradients of both: 12 bytes per logit at the peak). chunked: torchtune's CEWithChunkedOutputLoss with its "
        "cross entropy compiled (compile: True): the 16-bit logits in 8 chunks, each chunk's compiled loss keeping "
        "only that chunk for its backward, plus one chunk's gradient: 2.25 bytes per logit. transformers and chunked "
        "see the whole vocabulary on every tensor-parallel rank. Unset: transformers with moe_impl hf_loop, else fused.")

    dp_attention: bool = Field(
        False, description="Serving with ep > 1: the ep replicas of each expert-parallel group run as one lock-step engine "
        "(DP attention: SGLang --enable-dp-attention, DeepSeek-V3's DP32/DP144 attention). Every iteration all of "
        "them run each layer together (the dispatch and combine synchronise them), so the slowest rank's attention "
        "sets the pace while the experts serve the group's tokens. Each rank keeps the requests workload.router "
        "places on it, with its own scheduler, KV pool and batch limits (SGLang, TensorRT-LLM, vLLM's DP ranks); "
        "workload.dp_attention_balance holds prompts until every rank has one.")

    @field_validator("pipeline_layout", mode="before")
    @classmethod
    def _layout_string(cls, value):
        """Megatron-core's layout string, as its counts (``layer_split.layout_counts``)."""
        if isinstance(value, str):
            from moesim.engine.training.layer_split import layout_counts

            return layout_counts(value)
        return value

    @model_validator(mode="after")
    def _check(self) -> PlanSpec:
        if self.fp8_moe_act_input and "moe_act" not in (self.recompute_modules or []):
            raise ValueError("plan.fp8_moe_act_input: caches the SwiGLU input that moe_act's recompute keeps; add moe_act "
                             "to plan.recompute_modules (with recompute: selective) or leave it false")
        if self.activation_offload and (self.recompute != "full" or self.pp > 1):
            raise ValueError(f"plan.activation_offload: offloads the layer inputs that full recompute keeps on one "
                             f"pipeline stage (torchtune's recipes); it needs plan.recompute: full and pp 1 (got "
                             f"recompute {self.recompute}, pp {self.pp})")
        if self.optimizer_in_backward and (self.microbatches > 1 or self.pp > 1 or self.zero_stage > 0):
            raise ValueError(f"plan.optimizer_in_backward: steps each parameter in its backward, so it takes one "
                             f"micro-batch a step, pp 1 and zero_stage 0 (got microbatches {self.microbatches}, pp "
                             f"{self.pp}, zero_stage {self.zero_stage})")
        if self.recompute_modules is not None:
            twice = sorted({x for x in self.recompute_modules if self.recompute_modules.count(x) > 1})
            if twice:
                raise ValueError(f"plan.recompute_modules: {', '.join(twice)} listed twice; list each module once")
            if self.moe_impl == "hf_loop" and self.recompute == "selective":
                raise ValueError("plan.recompute_modules: Megatron-core's modules, not with plan.moe_impl: hf_loop "
                                 "(Hugging Face's gradient checkpointing is plan.recompute: full)")
        if self.zero3_fetch == "linear" and (self.zero_stage != 3 or self.moe_impl != "hf_loop"):
            raise ValueError(f"plan.zero3_fetch: 'linear' prices DeepSpeed ZeRO-3 fetching each expert nn.Linear of "
                             f"transformers' expert loop; it needs plan.zero_stage 3 and plan.moe_impl hf_loop (got "
                             f"zero_stage {self.zero_stage}, moe_impl {self.moe_impl})")
        if self.dp_attention and self.ep == 1:
            raise ValueError("plan.dp_attention: needs plan.ep > 1 (the replicas of an expert-parallel group run together)")
        if self.moe_impl == "hf_loop" and self.ep > 1:
            raise ValueError(f"plan.ep = {self.ep}: moe_impl hf_loop needs ep = 1 (transformers' expert loop has no "
                             "expert parallelism)")
        etp = self.expert_tp
        if self.tp % etp:
            raise ValueError(f"plan.etp = {etp}: must divide plan.tp ({self.tp}); each expert is split over etp of the tp ranks")
        broken = self.ep_group_rule_broken(self.ep)
        if broken == "dp":
            within = f"plan.dp ({self.dp})" if self.cp == 1 else f"plan.dp * plan.cp ({self.dp * self.cp})"
            raise ValueError(f"plan.ep = {self.ep}: must divide {within}; expert-parallel groups are made of "
                             "data-parallel (and context-parallel) ranks (or set plan.etp < plan.tp to form them from "
                             "TP x DP ranks)")
        if broken == "ranks":
            raise ValueError(f"plan.ep = {self.ep}: ep * etp ({self.ep} * {etp}) must divide plan.tp * plan.cp * plan.dp "
                             f"({self.tp * self.cp * self.dp}), the ranks of a pipeline stage the expert layers regroup")
        if self.virtual_stages > 1 and self.schedule != "interleaved":
            raise ValueError(f"plan.virtual_stages = {self.virtual_stages}: needs plan.schedule: interleaved")
        if self.schedule == "dualpipe" and self.pp % 2:
            raise ValueError(f"plan.pp = {self.pp}: schedule dualpipe needs an even number of stages (its two directions meet in the middle)")
        if self.schedule == "dualpipe" and (self.microbatches % 2 or self.microbatches < 2 * self.pp):
            raise ValueError(f"plan.microbatches = {self.microbatches}: schedule dualpipe needs an even number >= 2 * plan.pp "
                             f"({2 * self.pp}), half fed from each end (DualPipe's num_chunks >= 2 * num_ranks)")
        if self.overlap_alltoall and self.schedule in ("zb-h1", "dualpipe"):
            raise ValueError(f"plan.overlap_alltoall: not with schedule {self.schedule} (dualpipe overlaps its paired forward and "
                             "backward chunks by itself; zb-h1 pairs none), leave it false")
        if self.overlap_alltoall and self.pp > 1 and not (self.schedule == "interleaved" and self.virtual_stages > 1):
            raise ValueError(
                "plan.overlap_alltoall with plan.pp > 1 needs plan.schedule: interleaved and plan.virtual_stages >= 2 "
                "(Megatron-core's combined 1F1B, --overlap-moe-expert-parallel-comm, requires virtual pipeline stages)"
            )
        if self.schedule == "interleaved" and self.pp > 1 and self.microbatches % self.pp:
            raise ValueError(
                f"plan.microbatches = {self.microbatches}: the interleaved schedule needs a multiple of plan.pp ({self.pp})"
            )
        for name in ("first_stage_layers", "last_stage_layers"):  # the rules that need model.n_layers: layer_split.chunk_sizes
            n = getattr(self, name)
            if n is None:
                continue
            if self.pp < 2:
                raise ValueError(f"plan.{name} = {n}: needs plan.pp >= 2 (one stage holds every layer)")
            if self.schedule == "dualpipe":
                raise ValueError(f"plan.{name}: not with schedule dualpipe (stages 0 and pp-1 each hold both a first "
                                 "and a last model chunk); give every chunk's layers with plan.pipeline_layout instead")
            if n < self.virtual_stages:
                raise ValueError(f"plan.{name} = {n}: must be >= plan.virtual_stages ({self.virtual_stages}); "
                                 f"each of the stage's {self.virtual_stages} chunks needs a layer")
        if self.pipeline_layout is not None:
            self._check_layout()
        if self.first_stage_layers is not None and self.last_stage_layers is not None and self.pp == 2:
            raise ValueError(f"plan.last_stage_layers = {self.last_stage_layers}: with plan.pp = 2 set only one of "
                             "plan.first_stage_layers and plan.last_stage_layers (the other stage holds the rest)")
        return self

    def _check_layout(self) -> None:
        """The rules of ``pipeline_layout`` that need no model (its sum: ``layer_split.check_layer_split``)."""
        n = len(self.pipeline_layout)
        if self.pp < 2:
            raise ValueError("plan.pipeline_layout: needs plan.pp >= 2 (one stage holds every layer)")
        if self.first_stage_layers is not None or self.last_stage_layers is not None:
            raise ValueError("plan.pipeline_layout: gives every chunk's layers; leave plan.first_stage_layers and "
                             "plan.last_stage_layers unset")
        # imported here: the engine's schedules import the schemas
        from moesim.engine.training.schedules import get_schedule

        sched = get_schedule(self.schedule)
        if n != sched.model_chunks(self.pp, self.virtual_stages):
            raise ValueError(f"plan.pipeline_layout has {n} entries: schedule {self.schedule} needs one per model chunk, "
                             f"{sched.layout_rule(self.pp, self.virtual_stages)}")

    @property
    def splits_layers(self) -> bool:
        """Whether the plan sets its own layer split (any of ``LAYER_SPLIT_FIELDS``), not the even one."""
        return any(getattr(self, name) is not None for name in LAYER_SPLIT_FIELDS)

    @property
    def n_devices(self) -> int:
        return self.dp * self.tp * self.pp * self.cp

    @property
    def loss_implementation(self) -> str:
        """``loss_impl``, or when unset ``transformers`` under ``moe_impl: hf_loop`` (the model runs as
        Hugging Face's code, loss included) and ``fused`` otherwise."""
        return self.loss_impl or ("transformers" if self.moe_impl == "hf_loop" else "fused")

    def ep_group_rule_broken(self, ep: int) -> str | None:
        """Which rule ``ep`` expert-parallel ranks break on this plan's ranks, None for none: ``"dp"`` (experts
        split no further than TP: the groups are made of DP (x CP) ranks, so ep divides dp * cp) or ``"ranks"``
        (ep * etp must divide a pipeline stage's tp * cp * dp ranks)."""
        if self.expert_tp == self.tp and (self.dp * self.cp) % ep:
            return "dp"
        if (self.tp * self.cp * self.dp) % (ep * self.expert_tp):
            return "ranks"
        return None

    @property
    def expert_tp(self) -> int:
        """Ranks each routed expert is split over: ``etp``, or ``tp`` when unset."""
        return self.etp or self.tp

    @property
    def ep_in_tp_group(self) -> bool:
        """Whole experts in EP over the TP group (``etp`` 1, ``ep = tp > 1``). Serving reads it as
        vLLM's ``--enable-expert-parallel`` without DP and TensorRT-LLM's ``--tp N --ep N`` without
        attention DP: every TP rank holds the replica's tokens after attention, so nothing is
        dispatched; each rank runs its ``E/ep`` experts on them and the TP all-reduce sums the outputs."""
        return self.tp > 1 and self.expert_tp == 1 and self.ep == self.tp
