"""Reference Mixture-of-Experts layer in plain PyTorch (any device: CPU, CUDA, MPS).

Shapes: ``x`` is (tokens T, d_model); the router weight (d_model, E); expert weights are stacked:
``w_gate_up`` (E, d_model, 2 * ffn) holding gate then up, ``w_down`` (E, ffn, d_model).

The layer: router softmax over all E experts, top-k, renormalise the k weights to sum to 1;
permute the T*k assignments by expert (stable, so token order is kept inside each expert);
optionally drop assignments over capacity; per-expert SwiGLU FFN; weighted combine by scatter-add.
Dropped assignments contribute nothing (the token passes through the residual, added by the caller).

Capacity (Switch/GShard, as the simulator counts it): ``ceil(capacity_factor * T * top_k / E)``
per expert; an expert keeps its first ``capacity`` assignments in token order and drops the rest,
so expert e keeps ``min(load_e, capacity)``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

ExpertFn = Callable[[torch.Tensor, list[int], torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class MoEWeights:
    """Router, routed experts and optional shared experts (always applied to every token)."""

    router: torch.Tensor  # (d_model, E)
    w_gate_up: torch.Tensor  # (E, d_model, 2 * ffn)
    w_down: torch.Tensor  # (E, ffn, d_model)
    shared_gate_up: torch.Tensor | None = None  # (S, d_model, 2 * shared_ffn)
    shared_down: torch.Tensor | None = None  # (S, shared_ffn, d_model)

    @property
    def n_experts(self) -> int:
        return self.w_gate_up.shape[0]


@dataclass(frozen=True)
class Dispatch:
    """Where assignments go. N = kept assignments, sorted by expert then token."""

    token_idx: torch.Tensor  # (N,) token of each kept assignment
    weights: torch.Tensor  # (N,) its renormalised router weight
    counts: list[int]  # kept assignments per expert (E,)
    loads: list[int]  # routed assignments per expert before dropping (E,)
    kept: torch.Tensor  # (T, top_k) bool: was assignment (t, j) kept
    capacity: int | None  # per-expert capacity, None when dropless

    @property
    def dropped(self) -> int:
        """Assignments dropped over capacity."""
        return sum(self.loads) - sum(self.counts)


@dataclass(frozen=True)
class MoEOutput:
    out: torch.Tensor  # (T, d_model), without the residual
    dispatch: Dispatch


def init_moe_weights(d_model: int, ffn: int, n_experts: int, n_shared: int = 0, shared_ffn: int | None = None,
                     dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu",
                     seed: int = 0) -> MoEWeights:
    """Random weights scaled like a trained layer (std 1/sqrt(fan_in)), reproducible by ``seed``."""
    g = torch.Generator(device="cpu").manual_seed(seed)

    def rand(*shape: int, fan_in: int) -> torch.Tensor:
        return (torch.randn(*shape, generator=g) / math.sqrt(fan_in)).to(dtype=dtype, device=device)

    sf = shared_ffn or ffn
    return MoEWeights(
        router=rand(d_model, n_experts, fan_in=d_model),
        w_gate_up=rand(n_experts, d_model, 2 * ffn, fan_in=d_model),
        w_down=rand(n_experts, ffn, d_model, fan_in=ffn),
        shared_gate_up=rand(n_shared, d_model, 2 * sf, fan_in=d_model) if n_shared else None,
        shared_down=rand(n_shared, sf, d_model, fan_in=sf) if n_shared else None,
    )


def capacity(tokens: int, top_k: int, n_experts: int, capacity_factor: float) -> int:
    """Per-expert capacity ``ceil(capacity_factor * tokens * top_k / n_experts)``: the simulator's own
    rule (``moesim.engine.routing.capacity_per_expert``), so both round float noise the same way."""
    from moesim.engine.routing import capacity_per_expert

    return capacity_per_expert(tokens, top_k, n_experts, capacity_factor)


def route(x: torch.Tensor, router: torch.Tensor, top_k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(weights (T, k) float32 summing to 1 per token, experts (T, k) int64) from a softmax router."""
    return topk_weights(x @ router, top_k)


def topk_weights(logits: torch.Tensor, top_k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The router after its GEMM: softmax of (T, E) logits in fp32, top-k, renormalise the k weights."""
    probs = torch.softmax(logits.float(), dim=-1)
    w, e = torch.topk(probs, top_k, dim=-1)
    return w / w.sum(dim=-1, keepdim=True), e


def dispatch(experts: torch.Tensor, weights: torch.Tensor, n_experts: int, cap: int | None = None) -> Dispatch:
    """Sort the (T, k) assignments by expert, keeping token order; drop those past ``cap`` per expert."""
    t, k = experts.shape
    flat = experts.reshape(-1)
    order = torch.argsort(flat, stable=True)
    loads_t = torch.bincount(flat, minlength=n_experts)
    if cap is None:
        kept_order = order
        counts_t = loads_t
    else:
        starts = torch.cumsum(loads_t, 0) - loads_t
        position = torch.arange(flat.numel(), device=flat.device) - starts[flat[order]]
        kept_order = order[position < cap]
        counts_t = torch.clamp(loads_t, max=cap)
    kept = torch.zeros(t * k, dtype=torch.bool, device=flat.device)
    kept[kept_order] = True
    return Dispatch(token_idx=kept_order // k, weights=weights.reshape(-1)[kept_order], counts=counts_t.tolist(),
                    loads=loads_t.tolist(), kept=kept.reshape(t, k), capacity=cap)


def swiglu(x: torch.Tensor, w_gate_up: torch.Tensor, w_down: torch.Tensor) -> torch.Tensor:
    """SwiGLU FFN of one expert: (silu(x Wg) * (x Wu)) Wd; ``w_gate_up`` is (d, 2f), gate first."""
    return swiglu_activation(x @ w_gate_up) @ w_down


def swiglu_activation(h: torch.Tensor) -> torch.Tensor:
    """silu(gate) * up of the gate/up GEMM's output ``h`` (rows, 2f), gate first: (rows, f)."""
    gate, up = h.chunk(2, dim=-1)
    return F.silu(gate) * up


def expert_ffn_loop(xs: torch.Tensor, counts: list[int], w_gate_up: torch.Tensor, w_down: torch.Tensor) -> torch.Tensor:
    """Per-expert SwiGLU over expert-sorted rows ``xs`` (N, d): one GEMM pair per expert with tokens."""
    ys = torch.empty(xs.shape[0], w_down.shape[-1], dtype=xs.dtype, device=xs.device)
    start = 0
    for e, n in enumerate(counts):
        if n:
            ys[start:start + n] = swiglu(xs[start:start + n], w_gate_up[e], w_down[e])
            start += n
    return ys


def grouped_gemm_loop(xs: torch.Tensor, counts: list[int], w: torch.Tensor) -> torch.Tensor:
    """(N, K) expert-sorted rows times their expert's weight (E, K, N_out): one GEMM per busy expert."""
    y = torch.empty(xs.shape[0], w.shape[-1], dtype=xs.dtype, device=xs.device)
    start = 0
    for e, n in enumerate(counts):
        if n:
            y[start:start + n] = xs[start:start + n] @ w[e]
            start += n
    return y


def moe_forward(x: torch.Tensor, w: MoEWeights, top_k: int, capacity_factor: float | None = None,
                expert_fn: ExpertFn | None = None) -> MoEOutput:
    """The MoE layer (without residual). ``capacity_factor`` None: dropless. ``expert_fn``: the
    grouped expert FFN (default the per-expert loop; the Triton kernel on CUDA)."""
    weights, experts = route(x, w.router, top_k)
    cap = None if capacity_factor is None else capacity(x.shape[0], top_k, w.n_experts, capacity_factor)
    d = dispatch(experts, weights, w.n_experts, cap)
    xs = x.index_select(0, d.token_idx)
    ys = (expert_fn or expert_ffn_loop)(xs, d.counts, w.w_gate_up, w.w_down)
    out = torch.zeros_like(x).index_add_(0, d.token_idx, ys * d.weights.to(ys.dtype)[:, None])
    if w.shared_gate_up is not None:
        for s in range(w.shared_gate_up.shape[0]):
            out = out + swiglu(x, w.shared_gate_up[s], w.shared_down[s])
    return MoEOutput(out=out, dispatch=d)


def moe_forward_dense(x: torch.Tensor, w: MoEWeights, top_k: int, kept: torch.Tensor | None = None) -> torch.Tensor:
    """Independent check of ``moe_forward``: every expert on every token, masked by the routing.

    ``kept`` (T, k) bool masks dropped assignments (all kept when None). O(T * E) work: tests only.
    """
    weights, experts = route(x, w.router, top_k)
    if kept is not None:
        weights = weights * kept
    combine = torch.zeros(x.shape[0], w.n_experts, dtype=torch.float32, device=x.device)
    combine.scatter_add_(1, experts, weights)
    out = torch.zeros_like(x)
    for e in range(w.n_experts):
        out = out + swiglu(x, w.w_gate_up[e], w.w_down[e]) * combine[:, e:e + 1].to(x.dtype)
    if w.shared_gate_up is not None:
        for s in range(w.shared_gate_up.shape[0]):
            out = out + swiglu(x, w.shared_gate_up[s], w.shared_down[s])
    return out
