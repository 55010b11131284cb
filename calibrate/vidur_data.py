"""Readers for the Vidur profiling CSVs (github microsoft/vidur, commit 7d47513, MIT licence).

Each reader turns one CSV into plain rows with shapes and times in seconds. Vidur times are kernel
times in milliseconds; we take the median column. Layout under the data root::

    compute/<a100|h100>/<org>/<model>/mlp.csv          GEMMs and elementwise ops of dense Llamas
    compute/a100/meta-llama/Llama-2-70b-hf/attention_tp2.csv   attention prefill/decode (commit 44bc599)
    network/<a100|h100>_dgx/{all_reduce,send_recv}.csv  NCCL collectives by message size
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import NamedTuple

BF16_BYTES = 2.0


class GemmRow(NamedTuple):
    """(m x k) @ (k x n) in bf16, measured ``time_s``; ``key`` identifies the source row."""

    key: tuple
    m: int
    n: int
    k: int
    time_s: float


class MemRow(NamedTuple):
    """A streaming (elementwise) kernel moving ``bytes`` in ``time_s``."""

    key: tuple
    bytes: float
    time_s: float


class AttnRow(NamedTuple):
    """Attention over ``batch`` sequences of ``q`` new tokens each seeing ``kv`` keys (incl. themselves)."""

    key: tuple
    prefill: bool
    batch: int
    q: int
    kv: int
    n_heads: int
    kv_heads: int
    head_dim: int
    time_s: float


class CollRow(NamedTuple):
    """One NCCL collective of ``size`` bytes over ``n`` ranks, ``per_node`` of them per node."""

    key: tuple
    n: int
    per_node: int
    size: float
    time_s: float


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def _ms(row: dict, op: str) -> float | None:
    v = row.get(f"time_stats.{op}.median", "")
    return float(v) * 1e-3 if v not in ("", None) else None


def mlp_rows(path: Path) -> tuple[list[GemmRow], list[MemRow]]:
    """GEMMs (QKV, output, gated up, down projections) and the streaming activation of mlp.csv."""
    gemms: list[GemmRow] = []
    mems: list[MemRow] = []
    name = f"{path.parent.parent.name}/{path.parent.name}"
    for r in read_csv(path):
        d, f = int(r["n_embd"]), int(r["n_expanded_embd"])
        h, kvh, tp, m = int(r["n_head"]), int(r["n_kv_head"]), int(r["num_tensor_parallel_workers"]), int(r["num_tokens"])
        hd = d // h
        gated = r["use_gated_mlp"].strip().lower() == "true"
        key = (name, tp, m)
        shapes = {
            "attn_pre_proj": ((h + 2 * kvh) * hd // tp, d),
            "attn_post_proj": (d, h * hd // tp),
            "mlp_up_proj": ((2 if gated else 1) * f // tp, d),
            "mlp_down_proj": (d, f // tp),
        }
        for op, (n, k) in shapes.items():
            t = _ms(r, op)
            if t and t > 0:
                gemms.append(GemmRow(key + (op,), m, n, k, t))
        # The SwiGLU activation reads gate and up and writes one m x f/tp: the streaming kernel of an
        # (expert) FFN. Left out: "add" runs faster than DRAM allows (partly from L2); the unfused
        # RMSNorms reach about 20% less bandwidth than the activation, so mixing them blurs the fit.
        streams = {"mlp_act": ((3 if gated else 2) * m * f // tp * BF16_BYTES)}
        for op, nbytes in streams.items():
            t = _ms(r, op)
            if t and t > 0:
                mems.append(MemRow(key + (op,), float(nbytes), t))
    return gemms, mems


def attention_rows(path: Path) -> list[AttnRow]:
    """Prefill (one sequence, a chunk after a KV prefix) and decode (a batch, one token each) rows."""
    out: list[AttnRow] = []
    for r in read_csv(path):
        tp = int(r["num_tensor_parallel_workers"])
        h, kvh, d = int(r["n_q_head"]) // tp, max(int(r["n_kv_head"]) // tp, 1), int(r["n_embd"])
        hd = d // int(r["n_q_head"])
        prefill = r["is_prefill"].strip().lower() == "true"
        kv_cache, batch, chunk = int(r["kv_cache_size"]), int(r["batch_size"]), int(r["prefill_chunk_size"])
        t = _ms(r, "attn_prefill" if prefill else "attn_decode")
        if not t or t <= 0:
            continue
        q = chunk if prefill else 1
        out.append(AttnRow((prefill, batch, q, kv_cache), prefill, batch, q, kv_cache + q, h, kvh, hd, t))
    return out


def collective_rows(path: Path) -> list[CollRow]:
    """Rows of all_reduce.csv or send_recv.csv (rank 0's view)."""
    out: list[CollRow] = []
    for r in read_csv(path):
        op = r["collective"]
        t = _ms(r, op)
        if not t or t <= 0:
            continue
        n, per_node, size = int(r["num_workers"]), int(r["devices_per_node"]), float(r["size"])
        out.append(CollRow((op, n, per_node, size), n, per_node, size, t))
    return out
