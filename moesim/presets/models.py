"""Model presets. Each entry is plain data for ``ModelSpec``; its source is in the comment above it."""

from __future__ import annotations

# DeepSeek-V3: deepseek-ai/DeepSeek-V3 config.json and tech report (arXiv:2412.19437): 61 layers,
# first 3 dense (FFN 18432), 1 shared + 256 routed experts of 2048 top-8, MLA, vocab 129280.
# 671B total, 37B active (the multi-token-prediction module is not counted).
_DEEPSEEK_V3: dict = dict(
    name="DeepSeek-V3", n_layers=61, d_model=7168, n_heads=128, n_kv_heads=128, head_dim=128,
    vocab_size=129280, ffn_hidden=18432, expert_ffn_hidden=2048, n_experts=256, top_k=8,
    n_shared_experts=1, first_dense_layers=3, gated_ffn=True, tied_embeddings=False,
    max_seq_len=163840,
    mla=dict(q_lora_rank=1536, kv_lora_rank=512, qk_nope_head_dim=128, qk_rope_head_dim=64, v_head_dim=128),
)

MODELS: dict[str, dict] = {
    # Mixtral 8x7B: mistralai/Mixtral-8x7B-v0.1 config.json; 46.7B total, 12.9B active (Mistral blog).
    "mixtral-8x7b": dict(
        name="Mixtral 8x7B", n_layers=32, d_model=4096, n_heads=32, n_kv_heads=8, head_dim=128,
        vocab_size=32000, ffn_hidden=14336, expert_ffn_hidden=14336, n_experts=8, top_k=2,
        gated_ffn=True, tied_embeddings=False, max_seq_len=32768,
    ),
    # Mixtral 8x22B: mistralai/Mixtral-8x22B-v0.1 config.json; 141B total, 39B active (Mistral blog).
    "mixtral-8x22b": dict(
        name="Mixtral 8x22B", n_layers=56, d_model=6144, n_heads=48, n_kv_heads=8, head_dim=128,
        vocab_size=32768, ffn_hidden=16384, expert_ffn_hidden=16384, n_experts=8, top_k=2,
        gated_ffn=True, tied_embeddings=False, max_seq_len=65536,
    ),
    # GPT-4 as rumoured (SemiAnalysis, July 2023): ~1.8T params, 120 layers, 16 experts of ~111B
    # (MLP, all layers) top-2, ~55B shared attention, MQA, 8K context. The figures fit no exact
    # shape; we take GPT-3's width (12288, 96 heads of 128) with one KV head (MQA) and a plain GELU
    # expert MLP of 37632 so one expert is 111.0B over 120 layers. That gives 1.81T total and
    # 260B active (attention is 36.6B, not 55B: MQA with d_model 12288 is smaller than the rumour).
    "gpt4-rumour": dict(
        name="GPT-4 (rumoured)", n_layers=120, d_model=12288, n_heads=96, n_kv_heads=1, head_dim=128,
        vocab_size=100256, ffn_hidden=37632, expert_ffn_hidden=37632, n_experts=16, top_k=2,
        gated_ffn=False, tied_embeddings=False, max_seq_len=8192,
    ),
    # Switch-Base-128: Fedus et al. 2021 (arXiv:2101.03961) Table 9 / google/switch-base-128:
    # T5-Base (d_model 768, 12 heads of 64, d_ff 3072, ReLU, 12 encoder + 12 decoder blocks, vocab
    # 32128), experts at every other FFN, top-1. Modelled as 24 decoder-style blocks (the decoder's
    # cross-attention, ~28M parameters, is left out): 7.39B parameters. T5's relative position bias,
    # no rotary embedding.
    "switch-base-128": dict(
        name="Switch-Base-128", n_layers=24, d_model=768, n_heads=12, n_kv_heads=12, head_dim=64,
        vocab_size=32128, ffn_hidden=3072, expert_ffn_hidden=3072, n_experts=128, top_k=1,
        moe_every=2, gated_ffn=False, tied_embeddings=True, max_seq_len=512, rotary=False,
    ),
    # Switch-C-2048: Fedus et al. 2021 Table 9: d_model 2080, d_ff 6144, 32 heads of 64, 15 encoder +
    # 15 decoder blocks, 2048 experts in every block, top-1: 1571B parameters.
    "switch-c-2048": dict(
        name="Switch-C-2048", n_layers=30, d_model=2080, n_heads=32, n_kv_heads=32, head_dim=64,
        vocab_size=32128, ffn_hidden=6144, expert_ffn_hidden=6144, n_experts=2048, top_k=1,
        moe_every=1, gated_ffn=False, tied_embeddings=True, max_seq_len=512, rotary=False,
    ),
    "deepseek-v3": _DEEPSEEK_V3,
    # Kimi K2: moonshotai/Kimi-K2-Instruct config.json (model_type kimi_k2): DeepSeek-V3's architecture with
    # 64 MLA heads at DeepSeek-V3's ranks, 384 routed experts of 2048 top-8 plus one shared, one dense first
    # layer (FFN 18432), vocab 163840, no multi-token prediction; 128K context. 1T total, 32B active (model
    # card, rounded; moesim counts 1.03T and 32.9B with the embeddings).
    "kimi-k2": dict(_DEEPSEEK_V3, name="Kimi K2", n_heads=64, n_kv_heads=64, vocab_size=163840, n_experts=384,
                    first_dense_layers=1, max_seq_len=131072, mla=dict(_DEEPSEEK_V3["mla"])),
    # gpt-oss-120b: openai/gpt-oss-120b config.json (tests/data/hf_configs/gpt-oss-120b.json): every layer
    # MoE, 128 experts of 2880 top-4, 64 query / 8 KV heads of 64, a 128-token sliding window on the even
    # layers (layer_types), the experts stored in MXFP4 as released (serving; set expert_dtype: null to
    # train). 116.8B total, 5.1B active without the embedding (model card); attention sinks and biases
    # are not modelled.
    "gpt-oss-120b": dict(
        name="gpt-oss-120b", n_layers=36, d_model=2880, n_heads=64, n_kv_heads=8, head_dim=64,
        vocab_size=201088, ffn_hidden=2880, expert_ffn_hidden=2880, n_experts=128, top_k=4,
        gated_ffn=True, tied_embeddings=False, max_seq_len=131072, expert_dtype="mxfp4",
        local_attention=dict(kind="sliding", window=128, full_every=2),
    ),
    # gpt-oss-20b: openai/gpt-oss-20b config.json: as gpt-oss-120b with 24 layers and 32 experts.
    # 20.9B total, 3.6B active without the embedding (model card).
    "gpt-oss-20b": dict(
        name="gpt-oss-20b", n_layers=24, d_model=2880, n_heads=64, n_kv_heads=8, head_dim=64,
        vocab_size=201088, ffn_hidden=2880, expert_ffn_hidden=2880, n_experts=32, top_k=4,
        gated_ffn=True, tied_embeddings=False, max_seq_len=131072, expert_dtype="mxfp4",
        local_attention=dict(kind="sliding", window=128, full_every=2),
    ),
    # Llama 4 Maverick: meta-llama/Llama-4-Maverick-17B-128E config.json text_config: 48 layers, MoE on
    # every other layer (128 experts of 8192 top-1 plus one shared expert), dense FFN 16384, 40 query /
    # 8 KV heads of 128, 8192-token chunked attention on the RoPE layers (3 in 4). 400B total, 17B
    # active (model card); the vision encoder is left out.
    "llama-4-maverick": dict(
        name="Llama 4 Maverick", n_layers=48, d_model=5120, n_heads=40, n_kv_heads=8, head_dim=128,
        vocab_size=202048, ffn_hidden=16384, expert_ffn_hidden=8192, n_experts=128, top_k=1,
        n_shared_experts=1, shared_expert_ffn_hidden=8192, moe_every=2, gated_ffn=True,
        tied_embeddings=False, max_seq_len=1048576,
        local_attention=dict(kind="chunked", window=8192, full_every=4),
    ),
    # Llama 4 Scout: meta-llama/Llama-4-Scout-17B-16E config.json text_config: as Maverick with 16
    # experts on every layer. 109B total with the vision encoder (left out: 107.8B here), 17B active.
    "llama-4-scout": dict(
        name="Llama 4 Scout", n_layers=48, d_model=5120, n_heads=40, n_kv_heads=8, head_dim=128,
        vocab_size=202048, ffn_hidden=16384, expert_ffn_hidden=8192, n_experts=16, top_k=1,
        n_shared_experts=1, shared_expert_ffn_hidden=8192, gated_ffn=True, tied_embeddings=False,
        max_seq_len=262144, local_attention=dict(kind="chunked", window=8192, full_every=4),
    ),
    # Qwen3-30B-A3B: Qwen/Qwen3-30B-A3B config.json (tests/data/hf_configs/qwen3-30b-a3b.json): 48 layers,
    # all MoE, 32 query / 4 KV heads of 128, 128 experts of 768 (SwiGLU) top-8, no shared expert, vocab
    # 151936, untied. 30.5B total, 3.3B active (model card).
    "qwen3-30b-a3b": dict(
        name="Qwen3-30B-A3B", n_layers=48, d_model=2048, n_heads=32, n_kv_heads=4, head_dim=128,
        vocab_size=151936, ffn_hidden=6144, expert_ffn_hidden=768, n_experts=128, top_k=8,
        gated_ffn=True, tied_embeddings=False, max_seq_len=40960,
    ),
    # Qwen3-235B-A22B: Qwen/Qwen3-235B-A22B config.json (tests/data/hf_configs/qwen3-235b-a22b.json): 94
    # layers, all MoE, 64 query / 4 KV heads of 128, 128 experts of 1536 top-8, no shared expert.
    # 235B total, 22B active (model card).
    "qwen3-235b-a22b": dict(
        name="Qwen3-235B-A22B", n_layers=94, d_model=4096, n_heads=64, n_kv_heads=4, head_dim=128,
        vocab_size=151936, ffn_hidden=12288, expert_ffn_hidden=1536, n_experts=128, top_k=8,
        gated_ffn=True, tied_embeddings=False, max_seq_len=40960,
    ),
    # Qwen1.5-MoE-A2.7B: Qwen/Qwen1.5-MoE-A2.7B config.json (tests/data/hf_configs/qwen1.5-moe-a2.7b.json):
    # 24 layers, 16 heads of 128 (MHA), 60 routed experts of 1408 top-4 and a shared expert of 5632
    # (4 x 1408) on every layer. 14.3B total, 2.7B active (model card).
    "qwen1.5-moe-a2.7b": dict(
        name="Qwen1.5-MoE-A2.7B", n_layers=24, d_model=2048, n_heads=16, n_kv_heads=16, head_dim=128,
        vocab_size=151936, ffn_hidden=5632, expert_ffn_hidden=1408, n_experts=60, top_k=4,
        n_shared_experts=1, shared_expert_ffn_hidden=5632, gated_ffn=True, tied_embeddings=False,
        max_seq_len=8192,
    ),
    # OLMoE-1B-7B: allenai/OLMoE-1B-7B-0924 config.json (tests/data/hf_configs/olmoe-1b-7b-0924.json): 16
    # layers, 16 heads of 128, 64 experts of 1024 top-8, vocab 50304. 6.9B total, 1.3B active (paper,
    # arXiv:2409.02060).
    "olmoe-1b-7b": dict(
        name="OLMoE-1B-7B", n_layers=16, d_model=2048, n_heads=16, n_kv_heads=16, head_dim=128,
        vocab_size=50304, ffn_hidden=1024, expert_ffn_hidden=1024, n_experts=64, top_k=8,
        gated_ffn=True, tied_embeddings=False, max_seq_len=4096,
    ),
    # DBRX: databricks/dbrx-base config.json (tests/data/hf_configs/dbrx-base.json): 40 layers, 48 query /
    # 8 KV heads of 128, 16 experts of 10752 (GLU) top-4, vocab 100352, 32K context. 132B total, 36B
    # active (model card).
    "dbrx": dict(
        name="DBRX", n_layers=40, d_model=6144, n_heads=48, n_kv_heads=8, head_dim=128,
        vocab_size=100352, ffn_hidden=10752, expert_ffn_hidden=10752, n_experts=16, top_k=4,
        gated_ffn=True, tied_embeddings=False, max_seq_len=32768,
    ),
    # Grok-1: xai-org/grok-1 release, as the Hugging Face port's config.json reads it
    # (hpcai-tech/grok-1, tests/data/hf_configs/grok-1.json): 64 layers, 48 query / 8 KV heads of 128,
    # 8 experts of 32768 (GeGLU) top-2, vocab 131072, 8192-token context, the output head tied to the
    # embedding (the release's InOutEmbed). 314B total (xAI); no active count is published.
    "grok-1": dict(
        name="Grok-1", n_layers=64, d_model=6144, n_heads=48, n_kv_heads=8, head_dim=128,
        vocab_size=131072, ffn_hidden=32768, expert_ffn_hidden=32768, n_experts=8, top_k=2,
        gated_ffn=True, tied_embeddings=True, max_seq_len=8192,
    ),
    # DeepSeek-V2-Lite: deepseek-ai/DeepSeek-V2-Lite config.json: 27 layers, MLA without query compression
    # (KV rank 512), 16 heads, the first layer dense (FFN 10944), then 64 routed experts of 1408 top-6 and
    # 2 shared, vocab 102400, 160K context. 15.7B total, 2.4B active without the embedding (model card).
    "deepseek-v2-lite": dict(
        name="DeepSeek-V2-Lite", n_layers=27, d_model=2048, n_heads=16, n_kv_heads=16, head_dim=128,
        vocab_size=102400, ffn_hidden=10944, expert_ffn_hidden=1408, n_experts=64, top_k=6,
        n_shared_experts=2, first_dense_layers=1, gated_ffn=True, tied_embeddings=False, max_seq_len=163840,
        mla=dict(q_lora_rank=0, kv_lora_rank=512, qk_nope_head_dim=128, qk_rope_head_dim=64, v_head_dim=128),
    ),
    # Llama 3.1 (dense, for comparison): meta-llama/Llama-3.1-8B, -70B and -405B config.json: 8 KV heads
    # of 128, SwiGLU, vocab 128256, untied, 128K context; 8B: 32 layers of 4096 (FFN 14336), 70B: 80 of
    # 8192 (28672), 405B: 126 of 16384 (53248). 8.03B, 70.6B and 405.9B parameters (model cards: 8B,
    # 70B, 405B).
    "llama-3.1-8b": dict(
        name="Llama-3.1-8B", n_layers=32, d_model=4096, n_heads=32, n_kv_heads=8, head_dim=128,
        vocab_size=128256, ffn_hidden=14336, n_experts=1, top_k=1, gated_ffn=True,
        tied_embeddings=False, max_seq_len=131072,
    ),
    "llama-3.1-70b": dict(
        name="Llama-3.1-70B", n_layers=80, d_model=8192, n_heads=64, n_kv_heads=8, head_dim=128,
        vocab_size=128256, ffn_hidden=28672, n_experts=1, top_k=1, gated_ffn=True,
        tied_embeddings=False, max_seq_len=131072,
    ),
    "llama-3.1-405b": dict(
        name="Llama-3.1-405B", n_layers=126, d_model=16384, n_heads=128, n_kv_heads=8, head_dim=128,
        vocab_size=128256, ffn_hidden=53248, n_experts=1, top_k=1, gated_ffn=True,
        tied_embeddings=False, max_seq_len=131072,
    ),
    # Llama-2-7B (dense): meta-llama/Llama-2-7b-hf config.json; 6.74B parameters.
    "llama-2-7b": dict(
        name="Llama-2-7B", n_layers=32, d_model=4096, n_heads=32, n_kv_heads=32, head_dim=128,
        vocab_size=32000, ffn_hidden=11008, n_experts=1, top_k=1, gated_ffn=True,
        tied_embeddings=False, max_seq_len=4096,
    ),
    # Llama-2-70B (dense, GQA): meta-llama/Llama-2-70b-hf config.json; 69.0B parameters.
    "llama-2-70b": dict(
        name="Llama-2-70B", n_layers=80, d_model=8192, n_heads=64, n_kv_heads=8, head_dim=128,
        vocab_size=32000, ffn_hidden=28672, n_experts=1, top_k=1, gated_ffn=True,
        tied_embeddings=False, max_seq_len=4096,
    ),
}
