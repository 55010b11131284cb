"""Reference MoE layer, capacity drops (checked against the simulator's routing), Triton kernel, timing."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

torch = pytest.importorskip("torch")

from moesim.kernels.moe_ref import (
    capacity,
    dispatch,
    expert_ffn_loop,
    grouped_gemm_loop,
    init_moe_weights,
    moe_forward,
    moe_forward_dense,
    route,
)
from moesim.kernels.timing import pick_device, time_fn

from moesim.engine.routing import apply_capacity, capacity_per_expert, keep_mask

ROOT = Path(__file__).resolve().parents[1]
HAS_TRITON = importlib.util.find_spec("triton") is not None


def _layer(e: int, tokens: int = 40, d: int = 32, f: int = 48, shared: int = 0, seed: int = 0):
    w = init_moe_weights(d, f, e, n_shared=shared, seed=seed)
    x = torch.randn(tokens, d, generator=torch.Generator().manual_seed(seed + 1))
    return w, x


def test_router_renormalises_top_k():
    w, x = _layer(8)
    weights, experts = route(x, w.router, 3)
    assert weights.shape == experts.shape == (40, 3)
    torch.testing.assert_close(weights.sum(-1), torch.ones(40))
    assert all(len(set(row.tolist())) == 3 for row in experts)  # distinct experts per token


@pytest.mark.parametrize("n_experts", [4, 8, 16])
@pytest.mark.parametrize("top_k", [1, 2, 4])
def test_dropless_matches_dense_reference(n_experts, top_k):
    w, x = _layer(n_experts, seed=n_experts * 10 + top_k)
    res = moe_forward(x, w, top_k)
    torch.testing.assert_close(res.out, moe_forward_dense(x, w, top_k), rtol=1e-4, atol=1e-5)
    assert res.dispatch.dropped == 0 and sum(res.dispatch.counts) == 40 * top_k


def test_shared_experts_are_added_to_every_token():
    w, x = _layer(4, shared=2)
    res = moe_forward(x, w, 2, capacity_factor=1.0)
    torch.testing.assert_close(res.out, moe_forward_dense(x, w, 2, res.dispatch.kept), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("n_experts, top_k, tokens, cf", [
    (4, 1, 40, 1.0), (8, 2, 40, 1.0), (8, 2, 64, 1.25), (16, 2, 33, 1.1), (4, 2, 7, 0.5), (64, 2, 100, 1.0),
])
def test_capacity_drops_exactly_what_the_simulator_drops(n_experts, top_k, tokens, cf):
    w, x = _layer(n_experts, tokens=tokens, seed=tokens)
    res = moe_forward(x, w, top_k, capacity_factor=cf)
    d = res.dispatch
    cap = capacity_per_expert(tokens, top_k, n_experts, cf)
    assert d.capacity == cap == capacity(tokens, top_k, n_experts, cf)
    _, experts = route(x, w.router, top_k)
    ids = experts.numpy()
    # the same tokens: the simulator's token-order keep mask ...
    np.testing.assert_array_equal(d.kept.numpy(), keep_mask(ids, n_experts, cap))
    # ... and the same counts as its closed form min(load, capacity)
    loads = np.bincount(ids.reshape(-1), minlength=n_experts)
    kept, dropped = apply_capacity(loads, cap)
    assert d.loads == loads.tolist() and d.counts == kept.tolist() and d.dropped == int(dropped.sum())
    torch.testing.assert_close(res.out, moe_forward_dense(x, w, top_k, d.kept), rtol=1e-4, atol=1e-5)


@settings(max_examples=60, deadline=None)
@given(tokens=st.integers(1, 200), n_experts=st.integers(1, 32), top_k=st.integers(1, 4),
       cf=st.floats(0.1, 3.0), seed=st.integers(0, 2**16))
def test_dispatch_agrees_with_simulator_on_any_assignment(tokens, n_experts, top_k, cf, seed):
    top_k = min(top_k, n_experts)
    g = torch.Generator().manual_seed(seed)
    experts = torch.stack([torch.randperm(n_experts, generator=g)[:top_k] for _ in range(tokens)])
    cap = capacity(tokens, top_k, n_experts, cf)
    d = dispatch(experts, torch.full((tokens, top_k), 1.0 / top_k), n_experts, cap)
    np.testing.assert_array_equal(d.kept.numpy(), keep_mask(experts.numpy(), n_experts, cap))
    kept, dropped = apply_capacity(np.bincount(experts.reshape(-1).numpy(), minlength=n_experts), cap)
    assert d.counts == kept.tolist() and d.dropped == int(dropped.sum())


def test_kept_assignments_are_first_in_token_order():
    experts = torch.tensor([[0, 1], [0, 2], [1, 0], [0, 1], [2, 0]])
    d = dispatch(experts, torch.full((5, 2), 0.5), 3, cap=2)
    # expert 0 receives tokens 0,1,2,3,4 -> keeps 0,1; expert 1 tokens 0,2,3 -> keeps 0,2; expert 2 all
    assert d.kept.tolist() == [[True, True], [True, True], [True, False], [False, False], [True, False]]
    assert d.counts == [2, 2, 2] and d.loads == [5, 3, 2] and d.dropped == 4
    assert d.token_idx.tolist() == [0, 1, 0, 2, 1, 4]  # sorted by expert, token order inside


def test_large_capacity_drops_nothing():
    w, x = _layer(8)
    torch.testing.assert_close(moe_forward(x, w, 2, capacity_factor=8.0).out, moe_forward(x, w, 2).out)


def test_grouped_gemm_loop_is_per_expert_matmul():
    counts = [3, 0, 5]
    xs, w = torch.randn(8, 16), torch.randn(3, 16, 24)
    y = grouped_gemm_loop(xs, counts, w)
    torch.testing.assert_close(y[:3], xs[:3] @ w[0])
    torch.testing.assert_close(y[3:], xs[3:] @ w[2])


_INTERPRETER_CHECK = textwrap.dedent("""
    import torch
    from moesim.kernels.moe_ref import expert_ffn_loop, grouped_gemm_loop, init_moe_weights, moe_forward
    from moesim.kernels.triton_moe import expert_ffn_triton, grouped_gemm
    g = torch.Generator().manual_seed(0)
    for e, top_k in [(4, 1), (4, 2), (8, 2)]:
        counts = torch.randint(0, 20, (e,), generator=g).tolist()
        xs, w = torch.randn(sum(counts), 32, generator=g), torch.randn(e, 32, 48, generator=g)
        torch.testing.assert_close(grouped_gemm(xs, counts, w, 16, 16, 16), grouped_gemm_loop(xs, counts, w))
        wts = init_moe_weights(32, 32, e, seed=e)
        x = torch.randn(24, 32, generator=g)
        ref = moe_forward(x, wts, top_k, 1.25).out
        out = moe_forward(x, wts, top_k, 1.25, expert_ffn_triton).out
        torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-4)
    print("ok")
""")


@pytest.mark.skipif(not HAS_TRITON, reason="triton is not installed")
def test_triton_kernel_under_interpreter_matches_reference():
    env = {**os.environ, "TRITON_INTERPRET": "1", "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-c", _INTERPRETER_CHECK], env=env, cwd=ROOT, capture_output=True,
                         text=True, timeout=120, check=False)
    assert out.returncode == 0 and "ok" in out.stdout, out.stderr[-2000:]


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_TRITON, reason="triton is not installed")
@pytest.mark.parametrize("n_experts, top_k", [(8, 1), (8, 2), (16, 2), (64, 2), (64, 4)])
def test_triton_kernel_on_cuda_matches_reference(n_experts, top_k):
    from moesim.kernels.triton_moe import expert_ffn_triton

    w = init_moe_weights(1024, 2048, n_experts, dtype=torch.bfloat16, device="cuda", seed=n_experts)
    x = torch.randn(4096, 1024, device="cuda", dtype=torch.bfloat16)
    for cf in (None, 1.0, 1.25):
        ref = moe_forward(x, w, top_k, cf, expert_ffn_loop).out
        out = moe_forward(x, w, top_k, cf, expert_ffn_triton).out
        torch.testing.assert_close(out, ref, rtol=2e-2, atol=2e-2)


def test_timing_helpers():
    assert pick_device("cpu") == "cpu"
    assert pick_device("auto") in ("cpu", "cuda", "mps")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA"):
            pick_device("cuda")
    a = torch.randn(64, 64)
    t = time_fn(lambda: a @ a, "cpu", min_time_s=0.01)
    assert 0 < t.median_s < 0.1 and t.repeats >= 5
