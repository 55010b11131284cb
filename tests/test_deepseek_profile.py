"""DeepSeek-V3's MLA training attention against DeepSeek's own kernel trace (held out, never fitted).

``deepseek-ai/profile-data`` @4496024 ``train.json``: a PyTorch profiler trace of rank 0 of 64 (H800)
running one DualPipe forward chunk and one backward chunk of 4 MoE layers each, EP64, TP1, one
4,096-token sequence per micro-batch, balanced routing. Its attention kernels, summed over the four
layers of each chunk and divided by four:

=====================================================  ======  ===========
kernel (name prefix)                                   calls   ms / layer
=====================================================  ======  ===========
``flash::compute_attn_ws<Flash_fwd_kernel_traits<192``   4      1.237
``flash::FlashAttnBwd`` + its Preprocess and              4      4.255
``PostprocessConvertdQ``
=====================================================  ======  ===========

(the whole pair: 112.2 ms, validation row TRN-35). moesim prices the attention core with
``costmodel/flash_attention.py``, fitted on FlashAttention-2 (A100) and cuDNN (H100) benchmarks at
head dims 64-256 with one head dim for Q·K and P·V; MLA's 192 / 128 split is not among them.
"""

from __future__ import annotations

import numpy as np
import pytest

from moesim.costmodel import build_cost_model
from moesim.engine.op_types import BlockDims
from moesim.engine.ops import backward_s, block_ops, forward_s, op_s
from moesim.engine.training.layer_costs import training_dtypes
from moesim.loader import load_scenario
from moesim.shipped import resolve_scenario

#: The trace's attention kernels per layer, seconds (table above).
TRACE_ATTN_FWD_S = 4.95e-3 / 4
TRACE_ATTN_BWD_S = (15.12e-3 + 1.02e-3 + 0.88e-3) / 4


def _attention_core_s() -> tuple[float, float]:
    """moesim's (forward, backward) seconds of one DeepSeek-V3 layer's attention core in TRN-18's
    scenario (H800, one 4,096-token causal sequence, MLA with 128 heads)."""
    s = load_scenario(resolve_scenario("deepseek-v3-h800-train"))
    m, plan = s.model, s.plan
    dims = BlockDims.of(m, plan.tp, plan.ep, mla_absorbed=False)
    q = np.full(1, 4096)
    ops = block_ops(dims, training_dtypes(s), True, 4096, q, q, expert_tokens=np.full((1, 1, 4), 8192.0),
                    seq_parallel=True)
    core = next(op for op in ops if op.name == "attn_core")
    t = op_s(build_cost_model(s.hardware), core)
    return float(np.sum(forward_s(core, t))), float(np.sum(backward_s(core, t)))


def test_mla_training_attention_agrees_with_deepseeks_trace():
    fwd, bwd = _attention_core_s()
    assert fwd == pytest.approx(TRACE_ATTN_FWD_S, rel=0.15)
    assert bwd == pytest.approx(TRACE_ATTN_BWD_S, rel=0.15)
    assert fwd + bwd == pytest.approx(TRACE_ATTN_FWD_S + TRACE_ATTN_BWD_S, rel=0.08)
