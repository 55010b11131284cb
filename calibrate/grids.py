"""What the calibration measures: shape grids per device kind, quick and full.

The layer shape (``layer_d_model``, ``layer_ffn``) is shrunk on CPU so a run takes minutes; the
GEMM grid covers that layer's weight sizes (router d x E, gate/up d x 2f, down f x d).
The validation grid (held out: not measured by calibration) lives in ``calibrate.validate``.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from moesim.calibrate.collectives import sizes_for as collective_sizes

# (experts, top_k, tokens, capacity factor or None) of the whole-layer calibration runs. Disjoint
# from the validation grid (experts 8/16/64, top-k 1/2, capacity factor 1.0/1.25).
_LAYER_QUICK = tuple((e, k, t, cf) for e in (4, 12, 32) for k in (1, 3) for t in (2, 8, 32, 128, 512, 2048)
                     for cf in (None, 1.5))
_LAYER_FULL = tuple((e, k, t, cf) for e in (4, 12, 32, 48) for k in (1, 3)
                    for t in (2, 8, 32, 128, 512, 2048) for cf in (None, 1.5))


@dataclass(frozen=True)
class Grid:
    """Shapes of every microbenchmark. Sizes in elements unless named ``_bytes``."""

    gemm_m: tuple[int, ...]
    gemm_nk: tuple[tuple[int, int], ...]  # (n, k) weight shapes
    grouped_experts: tuple[int, ...]  # fewest: weights hot in cache; most: cold
    grouped_m: tuple[int, ...]  # tokens per expert
    grouped_nk: tuple[tuple[int, int], ...]
    copy_bytes: tuple[int, ...]
    attn_heads: int
    attn_head_dim: int
    attn_prefill: tuple[int, ...]  # causal prompt lengths (q == kv)
    attn_decode: tuple[tuple[int, int], ...]  # (batch, kv)
    router_tokens: tuple[int, ...]  # softmax + top-k after the router GEMM: tokens x experts x top-k
    router_experts: tuple[int, ...]
    router_top_k: tuple[int, ...]
    act_rows: tuple[int, ...]  # SwiGLU activation on (rows, 2 * layer_ffn) gate/up outputs
    layer_d_model: int
    layer_ffn: int
    layer_points: tuple[tuple[int, int, int, float | None], ...]
    min_time_s: float
    max_flops: float  # GEMM points above this many FLOPs are skipped
    grouped_max_flops: float  # grouped cells whose most-experts point exceeds this are skipped
    rounds: int  # every point is sampled in at least this many rounds (its median is kept)
    coll_bytes: tuple[int, ...] = ()  # per-rank message sizes of the collectives (measured once; () skips them)
    coll_repeats: int = 25  # timed repeats per collective size (after 3 warm-up calls)
    # noise-aware timing (kernels.timing.measure_interleaved): after ``rounds`` rounds a point is
    # sampled again until the ~95 % interval of its median is within ``precision`` (relative
    # half-width) or it has ``max_rounds`` samples; past ``budget_s`` (wall seconds since the
    # measurement started) only the first round still completes
    max_rounds: int = 6
    precision: float = 0.03
    budget_s: float = float("inf")
    # the reference layer's dispatch (sort by expert, counts, capacity drop): tokens x experts x top_k x cf
    dispatch_tokens: tuple[int, ...] = ()
    dispatch_experts: tuple[int, ...] = ()
    dispatch_top_k: tuple[int, ...] = ()
    dispatch_cf: tuple[float | None, ...] = (None, 1.5)
    # grouped GEMMs at expert counts between the fewest and the most, few tokens each: their
    # weights outgrow the cache there (CPUs), which fits the effective cache size (fit_local.fit_cache)
    grouped_mid_experts: tuple[int, ...] = ()
    grouped_mid_m: tuple[int, ...] = ()
    # dense GEMMs of the layer's expert shapes at token counts off the table's powers of 2: the
    # kernel's row tile (fit_local.fit_row_tile), which irregular per-expert token counts pay
    gemm_tile_m: tuple[int, ...] = ()

    def gemm_points(self) -> list[tuple[int, int, int]]:
        return [(m, n, k) for n, k in self.gemm_nk for m in self.gemm_m if 2.0 * m * n * k <= self.max_flops]

    def grouped_points(self) -> list[tuple[int, int, int, int]]:
        """(experts, m, n, k). The most-experts (cold weights) points stop where the activations
        m * (n + k) outgrow the weights n * k: past that the benchmark's own activations, not the
        expert weights, would set the pace."""
        most = max(self.grouped_experts)
        ends = [(e, m, n, k) for n, k in self.grouped_nk for m in self.grouped_m for e in self.grouped_experts
                if 2.0 * e * m * n * k <= self.grouped_max_flops and (e < most or m * (n + k) <= n * k)]
        return ends + [(e, m, n, k) for n, k in self.grouped_nk for m in self.grouped_mid_m
                       for e in self.grouped_mid_experts if 2.0 * e * m * n * k <= self.grouped_max_flops]

    def router_points(self) -> list[tuple[int, int, int]]:
        """(tokens, experts, top_k) with top_k below experts."""
        return [(t, e, k) for k in self.router_top_k for e in self.router_experts for t in self.router_tokens if k < e]

    def gemm_tile_points(self) -> list[tuple[int, int, int]]:
        """(m, n, k) at the irregular token counts, for the layer's gate/up and down weight shapes."""
        d, f = self.layer_d_model, self.layer_ffn
        return [(m, n, k) for n, k in ((2 * f, d), (d, f)) for m in self.gemm_tile_m]

    def dispatch_points(self) -> list[tuple[int, int, int, float | None]]:
        """(tokens, experts, top_k, capacity factor or None) with top_k below experts."""
        return [(t, e, k, cf) for e in self.dispatch_experts for k in self.dispatch_top_k for t in self.dispatch_tokens
                for cf in self.dispatch_cf if k < e]

    def points(self) -> int:
        """Timed points of one round."""
        return (len(self.gemm_points()) + len(self.grouped_points()) + len(self.copy_bytes)
                + len(self.attn_prefill) + len(self.attn_decode) + len(self.router_points())
                + len(self.act_rows) + len(self.dispatch_points()) + len(self.gemm_tile_points())
                + len(self.layer_points))

    def count(self) -> int:
        """Samples of the first ``rounds`` rounds (the progress bar's start; extra rounds add to it)."""
        return self.rounds * self.points()


def _cpu(quick: bool) -> Grid:
    d, f = 256, 512
    pow2 = tuple(2 ** i for i in range(13))  # 1 .. 4096
    return Grid(
        gemm_m=pow2 if quick else tuple(sorted(set(pow2) | {3, 6, 12, 24, 48, 96, 192, 384, 768, 1536, 3072})),
        # router widths (n = experts: narrow GEMMs run far below the wide ones), the layer's, a large one, and one
        # whose 64 MiB of fp32 weights no CPU cache holds: a model's layers stream their weights from DRAM, which a
        # table of cache-resident weights prices ~2.8x fast at one token (a 9 MiB 3072 x 768 read: 0.87 ms, not 0.32)
        gemm_nk=((4, d), (8, d), (16, d), (32, d), (64, d), (128, d), (2 * f, d), (d, f), (2048, 1024), (4096, 4096)),
        grouped_experts=(2, 64),  # 2 MiB of weights stays in cache, 64 MiB streams from DRAM
        grouped_mid_experts=(4, 8, 16, 32), grouped_mid_m=(1, 4, 16, 64),  # 2 .. 32 MiB: the cache's edge
        gemm_tile_m=(3, 5, 6, 7, 9, 10, 11, 13, 14, 15, 21, 27, 30, 45, 63, 100),
        grouped_m=pow2[:10] if quick else tuple(sorted(pow2[:11] + (3, 6, 12, 24, 48, 96))),
        grouped_nk=((2 * f, d), (d, f)),
        copy_bytes=tuple(int(4096 * 2 ** (i / 2)) // 64 * 64 for i in range(31 if quick else 33)),  # 4 KiB .. 128/256 MiB
        attn_heads=8, attn_head_dim=64,
        attn_prefill=(16, 64, 256, 1024) if quick else (16, 32, 64, 128, 256, 512, 1024, 2048),
        attn_decode=tuple((b, kv) for b in (1, 8, 32) for kv in (128, 512, 2048)),
        # 1.5 x powers of two: dense enough to follow torch's top-k, whose cost per token jumps
        # several-fold between 512 and 768 tokens, while the validation's token counts fall between nodes
        router_tokens=(1,) + tuple(3 * 2 ** i for i in range(12)) if quick else (1, 2) + tuple(
            x for i in range(13) for x in (3 * 2 ** i, 2 ** (i + 2))),
        router_experts=(4, 8, 16, 32, 64, 128) if quick else (2, 4, 8, 16, 32, 64, 128, 256),
        router_top_k=(1, 2, 4) if quick else (1, 2, 4, 8),
        act_rows=pow2,
        layer_d_model=d, layer_ffn=f,
        layer_points=_LAYER_QUICK if quick else _LAYER_FULL,
        min_time_s=0.01 if quick else 0.05,  # per sample, in BLOCKS blocks: the rounds give the precision
        max_flops=4e9 if quick else 4e10,
        grouped_max_flops=2e10 if quick else 8e10,
        rounds=3,
        coll_bytes=collective_sizes(quick), coll_repeats=25 if quick else 40,
        max_rounds=6 if quick else 8, precision=0.03, budget_s=110.0 if quick else 900.0,
        dispatch_tokens=(1, 16, 256, 4096) if quick else (1, 4, 16, 64, 256, 1024, 4096),
        dispatch_experts=(4, 64) if quick else (4, 16, 64, 256), dispatch_top_k=(1, 3) if quick else (1, 2, 4, 8),
    )


def _gpu(quick: bool) -> Grid:
    d, f = 2048, 4096
    pow2 = tuple(2 ** i for i in range(15))  # 1 .. 16384
    return Grid(
        gemm_m=pow2,
        gemm_nk=((64, d), (2 * f, d), (d, f), (4096, 4096), (28672, 4096), (4096, 14336)),
        grouped_experts=(2, 16),
        grouped_m=pow2[:12],
        grouped_nk=((2 * f, d), (d, f)),
        copy_bytes=tuple(4096 * 4 ** i for i in range(11)),
        attn_heads=32, attn_head_dim=128,
        attn_prefill=(64, 256, 1024, 4096) if quick else (64, 128, 256, 512, 1024, 2048, 4096, 8192),
        attn_decode=tuple((b, kv) for b in (1, 8, 64) for kv in (512, 2048, 8192)),
        router_tokens=(1, 64, 1024, 16384), router_experts=(8, 64, 256), router_top_k=(1, 2, 8),
        act_rows=pow2[::2],
        layer_d_model=d, layer_ffn=f,
        layer_points=_LAYER_QUICK if quick else _LAYER_FULL,
        min_time_s=0.02 if quick else 0.1,
        max_flops=1e13,
        grouped_max_flops=1e13,
        rounds=2 if quick else 3,
        coll_bytes=collective_sizes(quick), coll_repeats=25 if quick else 40,
        max_rounds=4 if quick else 6, precision=0.03, budget_s=100.0 if quick else 900.0,
        dispatch_tokens=(1, 64, 1024, 16384), dispatch_experts=(8, 64, 256), dispatch_top_k=(1, 2, 8),
        gemm_tile_m=(3, 24, 65, 100, 129, 200, 257, 400, 1100),
    )


def grid_for(device: str, quick: bool) -> Grid:
    """The grid for ``device`` ('cpu', 'cuda', 'mps'); MPS uses the CPU shapes."""
    return _gpu(quick) if device == "cuda" else _cpu(quick)


def tiny_grid() -> Grid:
    """A seconds-long grid for tests: a few points of every benchmark."""
    g = _cpu(True)
    return replace(g, gemm_m=(1, 8, 64, 512), gemm_nk=((16, 64), (256, 64), (64, 128)),
                   grouped_experts=(2, 64), grouped_m=(1, 8, 64), grouped_nk=((256, 64), (64, 128)), copy_bytes=(4096, 65536, 1 << 20, 1 << 22),
                   grouped_mid_experts=(8, 16), grouped_mid_m=(1, 8), gemm_tile_m=(5, 11, 13),
                   attn_heads=2, attn_head_dim=16, attn_prefill=(16, 64, 256), attn_decode=((1, 64), (4, 256), (4, 64)),
                   router_tokens=(1, 64), router_experts=(4, 8), router_top_k=(1, 2), act_rows=(1, 16, 256),
                   layer_d_model=64, layer_ffn=128,
                   layer_points=tuple((e, k, t, cf) for e in (4, 8) for k in (1, 2) for t in (4, 64) for cf in (None, 1.5)),
                   min_time_s=0.005, max_flops=1e9, grouped_max_flops=1e9, rounds=1, coll_bytes=(),
                   max_rounds=1, budget_s=float("inf"), dispatch_tokens=(1, 64), dispatch_experts=(4, 8),
                   dispatch_top_k=(1, 2))
