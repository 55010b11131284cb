"""The model section of a scenario: transformer shape and its MoE layout."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, PositiveInt, model_validator

from moesim.schemas._base import (
    MAX_EXPERTS,
    MAX_FFN,
    MAX_LAYERS,
    MAX_TOKENS,
    MAX_WIDTH,
    Strict,
    bounded,
)

Dtype = Literal["fp32", "bf16", "fp16", "fp8", "int8", "int4", "mxfp4", "nvfp4"]

#: Bytes per element of each dtype, without quantization scales (``moesim.precision`` adds the
#: scales per device and says which bytes apply to weights, activations and the KV cache).
DTYPE_BYTES: dict[str, float] = {"fp32": 4.0, "bf16": 2.0, "fp16": 2.0, "fp8": 1.0, "int8": 1.0, "int4": 0.5,
                                 "mxfp4": 0.5, "nvfp4": 0.5, "fp4": 0.5}  # fp4: a compute dtype (nvfp4's GEMM inputs)


class MLASpec(Strict):
    """Multi-head latent attention (DeepSeek-V2/V3): low-rank Q and compressed KV cache."""

    q_lora_rank: int = bounded(1536, ge=0, le=MAX_WIDTH, why="widths are at most d_model's bound (2^20)", description="Rank of the Q down-projection (0: no Q compression).")
    kv_lora_rank: PositiveInt = bounded(512, le=MAX_WIDTH, why="widths are at most d_model's bound (2^20)", description="Rank of the compressed KV latent; the KV cache stores it.")
    qk_nope_head_dim: PositiveInt = bounded(128, le=1 << 16, why="65536: 256x the widest published head (256)", description="Per-head Q/K width without rotary embedding.")
    qk_rope_head_dim: PositiveInt = bounded(64, le=1 << 16, why="65536: 256x the widest published head (256)", description="Per-head Q/K rotary width (the K part is shared by heads).")
    v_head_dim: PositiveInt = bounded(128, le=1 << 16, why="65536: 256x the widest published head (256)", description="Per-head V width.")


class LocalAttentionSpec(Strict):
    """Layers whose attention sees a bounded span of keys: a sliding window or fixed chunks.

    Layer ``i`` (0-based) keeps full causal attention when ``full_every > 0`` and
    ``i % full_every == full_every - 1``; every other layer is local. gpt-oss: sliding 128, full_every 2;
    Llama 4: chunked 8192, full_every 4 (its NoPE layers); Gemma 3: sliding, full_every 6; Mistral 7B:
    sliding 4096, full_every 0 (every layer local).
    """

    kind: Literal["sliding", "chunked"] = Field("sliding", description="sliding: each token attends to the last `window` tokens, itself included (Mistral, gpt-oss, Gemma); chunked: to the tokens before it in its own block of `window` tokens (Llama 4's attention_chunk_size).")
    window: PositiveInt = bounded(le=MAX_TOKENS, why="16.7M tokens: max_seq_len's bound", description="Keys a local layer's token sees at most (tokens): the sliding window, or the chunk size.")
    full_every: int = bounded(0, ge=0, le=MAX_LAYERS, why="at most n_layers (<= 1024)", description="Every full_every-th layer keeps full attention (layer i when i % full_every == full_every - 1); 0: every layer is local.")


class ModelSpec(Strict):
    """A decoder-only transformer, dense or Mixture-of-Experts.

    A dense model is ``n_experts: 1``. Layer ``i`` (0-based) is a MoE layer when
    ``i >= first_dense_layers`` and ``(i - first_dense_layers) % moe_every == moe_every - 1``.
    """

    name: str = Field("custom", description="Display name.")
    n_layers: PositiveInt = bounded(le=MAX_LAYERS, why="8x the deepest published LLM (118-128 blocks)", description="Transformer blocks.")
    d_model: PositiveInt = bounded(le=MAX_WIDTH, why="2^20: ~50x the widest published hidden size (PaLM: 18432)", description="Hidden size.")
    n_heads: PositiveInt = bounded(le=1 << 16, why="65536: 500x the most heads published (128)", description="Query heads.")
    n_kv_heads: PositiveInt | None = bounded(None, le=1 << 16, why="at most n_heads (<= 65536)", description="Key/value heads (GQA/MQA); default n_heads.")
    head_dim: PositiveInt | None = bounded(None, le=1 << 16, why="65536: 256x the widest published head (256)", description="Width of one head; default d_model // n_heads.")
    vocab_size: PositiveInt = bounded(le=1 << 24, why="16.7M: 64x the largest published vocabulary (~262k)", description="Vocabulary size.")
    ffn_hidden: PositiveInt = bounded(le=MAX_FFN, why="4x d_model's bound (2^20)", description="Hidden width of the dense FFN (dense layers).")
    expert_ffn_hidden: PositiveInt | None = bounded(None, le=MAX_FFN, why="4x d_model's bound (2^20)", description="Hidden width of one routed expert; default ffn_hidden.")
    n_experts: PositiveInt = bounded(1, le=MAX_EXPERTS, why="2^20 = PEER's million experts, the most published", description="Routed experts per MoE layer (1 = dense model).")
    top_k: PositiveInt = bounded(1, le=MAX_EXPERTS, why="at most n_experts (<= 2^20)", description="Experts each token is routed to.")
    n_shared_experts: int = bounded(0, ge=0, le=1024, why="published models use 0-8 shared experts", description="Always-active shared experts per MoE layer.")
    shared_expert_ffn_hidden: PositiveInt | None = bounded(None, le=MAX_FFN, why="4x d_model's bound (2^20)", description="Hidden width of a shared expert; default expert_ffn_hidden.")
    moe_every: PositiveInt = bounded(1, le=MAX_LAYERS, why="at most n_layers (<= 1024)", description="1: every layer after the dense ones is MoE; 2: every other; N: every Nth.")
    first_dense_layers: int = bounded(0, ge=0, le=MAX_LAYERS, why="at most n_layers (<= 1024)", description="Leading layers that use the dense FFN.")
    gated_ffn: bool = Field(True, description="SwiGLU-style FFN with 3 matrices (False: 2 matrices).")
    tied_embeddings: bool = Field(False, description="Input embedding and output head share weights.")
    dtype: Dtype = Field("bf16", description="Weight dtype: fp32 | bf16 | fp16 | fp8 | int8 | int4 | mxfp4 | nvfp4. int8/int4/mxfp4 (serving only) and fp8 on a device without an fp8 peak run weight-only: math, activations and KV cache in bf16 (fp16). mxfp4: OCP microscaling FP4 (32-weight blocks with an 8-bit scale, 4.25 bits), as gpt-oss ships its experts; weight-only everywhere. nvfp4: NVIDIA's FP4 (16-weight blocks with an FP8 scale, 4.5 bits); on a device with an fp4 peak (Blackwell) GEMMs run in FP4 (weights and activations, TensorRT-LLM's NVFP4 checkpoints) with an FP8 KV cache, elsewhere weight-only. Training in nvfp4 (Blackwell only) is Transformer Engine's NVFP4BlockScaling: every block GEMM (forward, input and weight gradients) in FP4 with its inputs cast each use, 16-bit weights (NVFP4 ones with plan.fp8_param_gather) and activations between kernels, fp32 optimizer states, the output head in BF16.")
    expert_dtype: Dtype | None = Field(None, description="Serving: dtype of the routed experts' weights when it differs from model.dtype (gpt-oss: mxfp4 experts, bf16 attention); they are read at its bits and run weight-only when quantized; the rest of the model, the activations and the KV cache follow model.dtype. null: model.dtype.")
    max_seq_len: PositiveInt = bounded(4096, le=MAX_TOKENS, why="16.7M tokens: above the longest published context window (10M, Llama 4 Scout)", description="Longest context the model serves (tokens).")
    mla: MLASpec | None = Field(None, description="Multi-head latent attention shape (DeepSeek); null for standard attention.")
    local_attention: LocalAttentionSpec | None = Field(None, description="Sliding-window or chunked attention on some layers: their attention kernels compute and read only the keys in the window (training, prefill and decode) and, in serving, those layers keep only the window's KV (workload.local_attention_mode says how the engine runs them). null: full causal attention on every layer.")
    rotary: bool = Field(True, description="Attention rotates queries and keys (RoPE: Llama, Mixtral, Qwen, DeepSeek, gpt-oss, every Hugging Face family moesim imports), a kernel of its own in training and part of the KV-cache write in serving; false for T5/Switch's relative position bias or learned absolute positions.")

    @model_validator(mode="after")
    def _check(self) -> ModelSpec:
        if self.top_k > self.n_experts:
            raise ValueError(f"model.top_k = {self.top_k}: must be <= model.n_experts ({self.n_experts})")
        if self.n_kv_heads is not None and self.n_heads % self.n_kv_heads:
            raise ValueError(
                f"model.n_kv_heads = {self.n_kv_heads}: must divide model.n_heads ({self.n_heads})"
            )
        if self.first_dense_layers > self.n_layers:
            raise ValueError(
                f"model.first_dense_layers = {self.first_dense_layers}: must be <= model.n_layers ({self.n_layers})"
            )
        la = self.local_attention
        if la is not None and la.full_every > self.n_layers:
            raise ValueError(f"model.local_attention.full_every = {la.full_every}: must be <= model.n_layers "
                             f"({self.n_layers}) (0: every layer local)")
        if self.head_dim is None and self.d_model % self.n_heads:
            raise ValueError(
                f"model.n_heads = {self.n_heads}: must divide model.d_model ({self.d_model}) unless head_dim is given"
            )
        return self

    # Derived sizes: properties so the frozen data stays the single source of truth.
    @property
    def kv_heads(self) -> int:
        return self.n_kv_heads or self.n_heads

    @property
    def head_width(self) -> int:
        return self.head_dim or self.d_model // self.n_heads

    @property
    def expert_width(self) -> int:
        return self.expert_ffn_hidden or self.ffn_hidden

    @property
    def shared_width(self) -> int:
        return self.shared_expert_ffn_hidden or self.expert_width

    @property
    def is_moe(self) -> bool:
        return self.n_experts > 1 or self.n_shared_experts > 0

    @property
    def n_moe_layers(self) -> int:
        """Number of layers whose FFN is the (routed) expert block."""
        if not self.is_moe:
            return 0
        return (self.n_layers - self.first_dense_layers) // self.moe_every

    @property
    def n_dense_layers(self) -> int:
        return self.n_layers - self.n_moe_layers

    def is_moe_layer(self, i: int) -> bool:
        """Whether 0-based layer ``i`` holds experts."""
        if not self.is_moe or i < self.first_dense_layers:
            return False
        return (i - self.first_dense_layers) % self.moe_every == self.moe_every - 1

    def is_local_layer(self, i: int) -> bool:
        """Whether 0-based layer ``i`` attends within ``local_attention``'s window."""
        la = self.local_attention
        if la is None:
            return False
        return la.full_every == 0 or i % la.full_every != la.full_every - 1

    @property
    def n_local_layers(self) -> int:
        """Layers with sliding-window or chunked attention."""
        la = self.local_attention
        if la is None:
            return 0
        return self.n_layers if la.full_every == 0 else self.n_layers - self.n_layers // la.full_every

    @property
    def dtype_bytes(self) -> float:
        """Bytes per element of ``dtype`` without scales; the engines use ``moesim.precision`` instead."""
        return DTYPE_BYTES[self.dtype]
