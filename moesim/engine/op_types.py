"""The op graph's types: :class:`Op` (one kernel or collective of a block on one device), the
per-device widths of a block (:class:`BlockDims`, :class:`MlaDims`), its tensors' dtypes
(:class:`OpDtypes`) and the attention shapes they derive from. Pure data and arithmetic;
``engine.ops`` builds and prices the ops."""

from __future__ import annotations

from dataclasses import dataclass, field

from moesim.accounting import attention_params

#: Streams an op can occupy. Ops on different streams may overlap where an engine overlaps them
#: (``cp_comm``: context parallelism's ring attention exchange, ``engine/cp.py``).
STREAMS = ("compute", "tp_comm", "ep_comm", "cp_comm")

@dataclass(frozen=True)
class Op:
    """One kernel or collective of a block on one device.

    ``kind`` names the cost-model call (``engine.ops.PRICERS``) and ``args`` its keyword arguments
    (numpy arrays broadcast: one op prices a whole table of batch shapes). ``flops`` and
    ``nbytes`` are per device, for inspection and tests (collectives: bytes one device sends).
    """

    name: str
    kind: str
    stream: str
    args: dict = field(hash=False)
    flops: object = 0.0
    nbytes: object = 0.0
    phase: str = "both"  # "both": forward, then backward by ``bwd_factor``; "fwd" / "bwd": that pass only
    bwd_factor: float | None = None  # backward over forward seconds (default: compute 2, collectives 1)


@dataclass(frozen=True)
class BlockDims:
    """Per-device widths of one block under tensor parallelism ``tp`` and expert parallelism ``ep``
    (routed experts split over ``etp`` ranks, 0: ``tp``; ``engine/expert_tp.py``).

    ``qkv_n``/``o_k``: output width of the QKV projection and input width of the output projection.
    ``heads``/``head_dim``/``kv_heads``: the attention kernel's view (MLA absorbed for serving).
    ``ffn_w``, ``expert_w``, ``shared_w``: hidden widths per device (dense FFN, one routed expert,
    all shared experts together). ``max_nodes_per_token``: node-limited routing
    (``routing.max_nodes_per_token``; None: unlimited), for the all-to-alls' per-node deduplication.
    ``local_dispatch``: the EP group is the TP group and every rank holds the tokens (serving with
    ``plan.ep_in_tp_group``): no dispatch or combine, the TP all-reduce sums the experts' outputs.
    ``allreduce``: the TP all-reduce's kernels, ``nccl`` (NCCL's ring, training) or ``custom`` (a serving
    engine's one-shot/two-shot kernels, ``workload.tp_allreduce``). ``moe_fixed_us``: the fixed latency
    of a serving engine's fused MoE layer, paid where any expert has tokens (``costmodel/fused_moe.py``;
    0: none, training). ``rotated``: elements per token that rotary embedding rotates on a device (its
    query and key heads times their rotary width; MLA: every query head's and the one shared key's
    rope part); training runs it as a kernel of its own (``engine.ops.rope_op``).
    """

    d_model: int
    tp: int = 1
    ep: int = 1
    qkv_n: int = 0
    o_k: int = 0
    heads: float = 1.0
    head_dim: int = 1
    kv_heads: int = 1
    ffn_w: int = 0
    expert_w: int = 0
    shared_w: int = 0
    n_shared: int = 0
    gated: bool = True
    n_experts: int = 1
    top_k: int = 1
    max_nodes_per_token: int | None = None
    etp: int = 0
    local_dispatch: bool = False
    allreduce: str = "nccl"
    moe_fixed_us: float = 0.0
    mla: MlaDims | None = None
    rotated: float = 0.0

    @property
    def expert_tp(self) -> int:
        """Ranks a routed expert is split over (``etp``, or ``tp`` when 0)."""
        return self.etp or self.tp

    @classmethod
    def of(cls, m, tp: int = 1, ep: int = 1, mla_absorbed: bool = True,
           max_nodes_per_token: int | None = None, etp: int | None = None,
           local_dispatch: bool = False, allreduce: str = "nccl", moe_fixed_us: float = 0.0) -> BlockDims:
        """Widths of model ``m`` (a ``ModelSpec``) per device; ``mla_absorbed``: MLA's serving form;
        ``etp``: expert tensor parallelism (None: ``tp``); ``local_dispatch``, ``allreduce``, ``moe_fixed_us``:
        see the class."""
        heads, head_dim, kv_heads = attention_shape(m, tp, mla_absorbed)
        qkv_n, o_k = projection_shapes(m, tp)
        etp = etp or tp
        return cls(d_model=m.d_model, tp=tp, ep=ep, qkv_n=qkv_n, o_k=o_k, heads=heads, head_dim=head_dim,
                   kv_heads=kv_heads, ffn_w=max(1, round(m.ffn_hidden / tp)), etp=etp,
                   expert_w=max(1, round(m.expert_width / etp)),
                   shared_w=max(1, round(m.n_shared_experts * m.shared_width / tp)) if m.n_shared_experts else 0,
                   n_shared=m.n_shared_experts, gated=m.gated_ffn, n_experts=m.n_experts, top_k=m.top_k,
                   max_nodes_per_token=max_nodes_per_token, local_dispatch=local_dispatch, allreduce=allreduce,
                   moe_fixed_us=moe_fixed_us, mla=MlaDims.of(m, tp) if m.mla is not None and mla_absorbed else None,
                   rotated=rotated_elements(m, tp))


@dataclass(frozen=True)
class MlaDims:
    """Multi-head latent attention as a serving engine runs it (absorbed, per device under TP).

    ``a_n``: output width of the fused down-projection (``q_lora + kv_lora + rope``; ``kv_lora +
    rope`` without a query low-rank), which vLLM, SGLang and TensorRT-LLM replicate on every TP rank
    (``ReplicatedLinear``); ``q_lora``: the query low rank (0: the queries are projected from the
    hidden state); ``heads``: query heads per device; ``nope``/``rope``/``v``/``kv_lora``: head widths
    and the latent width (DeepSeek-V3: 128/64/128/512).
    """

    a_n: int
    q_lora: int
    kv_lora: int
    nope: int
    rope: int
    v: int
    heads: float

    @classmethod
    def of(cls, m, tp: int) -> MlaDims:
        a = m.mla
        q_lora = a.q_lora_rank or 0
        return cls(a_n=q_lora + a.kv_lora_rank + a.qk_rope_head_dim, q_lora=q_lora, kv_lora=a.kv_lora_rank,
                   nope=a.qk_nope_head_dim, rope=a.qk_rope_head_dim, v=a.v_head_dim, heads=m.n_heads / tp)


@dataclass(frozen=True)
class OpDtypes:
    """Dtypes of a block's tensors.

    ``weights``: the model dtype (GEMMs resolve their compute dtype from it). ``gemm_in_bytes``:
    bytes per element of tensors that feed a GEMM and of the EP all-to-all (1 under native fp8
    serving). ``act_bytes``: the 16-bit activations between kernels (norms, residual stream, TP
    all-reduces). ``act_dtype``: the router GEMM's dtype. ``attn_dtype``: the attention kernel's
    (decides the KV bytes unless ``kv_bytes`` names them: a serving KV cache stored in another dtype,
    ``workload.kv_cache_dtype``). ``paged_kv``: the attention kernel reads a serving engine's paged KV
    cache (False: training's flash attention over contiguous Q/K/V; a profile's attention table
    measured on one kind of kernel does not price the other, ``ProfiledCostModel.attention_efficiency``).
    ``expert_weights``: the routed experts' dtype when it differs from ``weights`` (serving's
    ``model.expert_dtype``; None: ``weights``).
    """

    weights: str
    gemm_in_bytes: float
    act_bytes: float
    act_dtype: str
    attn_dtype: str
    kv_bytes: float | None = None
    paged_kv: bool = True
    expert_weights: str | None = None


def projection_shapes(m, tp: int) -> tuple[int, int]:
    """(QKV output width, O input width) per device of the attention projections.

    Standard attention: Q heads split over TP, KV heads split up to their count then replicate.
    MLA: all its down/up projections folded into one GEMM of the same weight count.
    """
    if m.mla is not None:
        o_params = m.n_heads * m.mla.v_head_dim * m.d_model
        return (attention_params(m) - o_params) // (m.d_model * tp), m.n_heads * m.mla.v_head_dim // tp
    kv_shards = min(tp, m.kv_heads)
    return (m.n_heads // tp + 2 * m.kv_heads // kv_shards) * m.head_width, m.n_heads * m.head_width // tp


def rotated_elements(m, tp: int) -> float:
    """Elements per token rotary embedding rotates on one of ``tp`` ranks: query and key heads (KV
    heads split up to their count) times the head width; MLA rotates ``qk_rope_head_dim`` of every
    query head and of the one key it shares across heads; 0 without rotary embedding (``model.rotary``)."""
    if not m.rotary:
        return 0.0
    if m.mla is not None:
        return (m.n_heads / tp + 1) * m.mla.qk_rope_head_dim
    heads, width, kv_heads = attention_shape(m, tp)
    return (heads + kv_heads) * width


def attention_shape(m, tp: int, mla_absorbed: bool = True) -> tuple[float, int, int]:
    """(query heads, head width, KV heads) per device as the attention kernel sees them.

    KV heads split over TP up to their count, then replicate. MLA (DeepSeek): absorbed (serving),
    one shared latent ``kv_lora_rank + rope`` wide per token (KV heads 1, head width half of it so
    the bytes match) and query heads scaled so the FLOPs match ``2 * heads * (2 * kv_lora_rank +
    rope)`` per key; not absorbed (training), per-head K and V materialised at the mean of the
    QK and V head widths.
    """
    if m.mla is not None:
        a = m.mla
        if not mla_absorbed:
            heads = max(1, m.n_heads // tp)
            return heads, round((a.qk_nope_head_dim + a.qk_rope_head_dim + a.v_head_dim) / 2), heads
        width = (a.kv_lora_rank + a.qk_rope_head_dim) / 2
        flops_per_head_key = 2 * (2 * a.kv_lora_rank + a.qk_rope_head_dim)
        return m.n_heads / tp * flops_per_head_key / (4 * width), round(width), 1
    return m.n_heads / tp, m.head_width, max(m.kv_heads // tp, 1)
