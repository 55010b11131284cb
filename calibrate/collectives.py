"""Collectives through ``torch.distributed``: all-to-all (and all-reduce) timed across local processes.

    python -m moesim.calibrate.collectives [--ranks 2] [--quick] [--device cpu|cuda]

``measure_collectives`` spawns ``ranks`` worker processes on this machine (gloo on CPU, NCCL on CUDA
with one GPU per rank). They meet through a ``TCPStore`` the parent holds on 127.0.0.1 (an
OS-chosen port, so nothing else can take it first) and gloo/NCCL bootstrap on the loopback
interface only. Each size is warmed up, then timed ``repeats`` times behind a barrier; a repeat
takes the slowest rank's time and a size keeps the median over repeats. The parent never waits
longer than ``timeout_s``: on any error, timeout or Ctrl-C every worker is terminated, then killed,
and joined, so no process outlives the call.

``bytes_per_rank`` is the size of each rank's send buffer: for all-to-all it holds one equal chunk
per rank (its own included), so ``bytes_per_rank * (ranks - 1) / ranks`` goes to peers; for
all-reduce it is the reduced tensor.

``fit_alltoall`` fits the cost model's all-to-all form (``moesim.costmodel.comm.alltoall_s``):
``t = peers * latency + bytes_to_peers / bw`` with ``peers = ranks - 1``; ``fit_allreduce`` the
ring all-reduce. Both hold out one size in five and score it through ``CostModel`` itself.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import os
import queue as _queue
import socket
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from moesim.calibrate.fit import fit_error, fit_relative_nnls, held_out, round_sig

from moesim.costmodel.profile import CollectiveSpec, FitError, LinkSpec

LOOPBACK = "127.0.0.1"
OPS = ("all_to_all", "all_reduce")
#: per-rank message sizes: 4 KiB .. 16 MiB (full), 4 KiB .. 4 MiB (quick), every factor of 2
FULL_BYTES = tuple(4096 * 2 ** i for i in range(13))
QUICK_BYTES = tuple(4096 * 2 ** i for i in range(11))

Tick = Callable[[str], None]


@dataclass(frozen=True)
class CollectiveRow:
    """One timed collective: median seconds of ``collective`` over ``ranks`` ranks, ``bytes_per_rank`` each."""

    collective: str
    ranks: int
    bytes_per_rank: int
    seconds: float


class CollectiveError(RuntimeError):
    """The worker processes failed, timed out or could not start."""


def available_ranks(device: str) -> int:
    """How many ranks a local all-to-all can use on ``device`` (0: not possible here).

    CUDA: one rank per GPU when there are several (NCCL). CPU: 2 processes when at least 2 cores are
    usable and gloo is built in. MPS: a single device, so none.
    """
    import torch.distributed as dist

    if not dist.is_available():
        return 0
    if device == "cuda":
        import torch

        n = torch.cuda.device_count()
        return n if n > 1 and dist.is_nccl_available() else 0
    if device == "cpu":
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        return 2 if cores >= 2 and dist.is_gloo_available() else 0
    return 0


def sizes_for(quick: bool) -> tuple[int, ...]:
    return QUICK_BYTES if quick else FULL_BYTES


def _loopback_ifname() -> str | None:
    """Name of the loopback interface ('lo' on Linux, 'lo0' on macOS), or None if not found."""
    try:
        names = [name for _, name in socket.if_nameindex()]
    except OSError:
        return None
    for name in ("lo", "lo0"):
        if name in names:
            return name
    return next((n for n in names if n.startswith("lo")), None)


def _worker(rank: int, ranks: int, port: int, backend: str, ops: Sequence[str], sizes: Sequence[int],
            warmup: int, repeats: int, timeout_s: float, ifname: str | None, out) -> None:
    """One rank: join the group through the parent's store, time every (op, size), report to ``out``."""
    if ifname:  # bootstrap and data on loopback only
        os.environ["GLOO_SOCKET_IFNAME"] = ifname
        os.environ["NCCL_SOCKET_IFNAME"] = ifname
    os.environ["MASTER_ADDR"] = LOOPBACK
    try:
        import torch
        import torch.distributed as dist

        torch.set_num_threads(1)
        device = "cpu"
        if backend == "nccl":
            torch.cuda.set_device(rank)
            device = f"cuda:{rank}"
        timeout = _dt.timedelta(seconds=timeout_s)
        store = dist.TCPStore(LOOPBACK, port, None, False, timeout=timeout)
        dist.init_process_group(backend, store=store, rank=rank, world_size=ranks, timeout=timeout)
        sync = torch.cuda.synchronize if backend == "nccl" else (lambda: None)
        try:
            calls = {}
            for op in ops:
                for nbytes in sizes:
                    elems = max(nbytes // 4 // ranks, 1) * ranks  # fp32, equal chunk per rank
                    x = torch.zeros(elems, dtype=torch.float32, device=device)  # all-reduce keeps it 0
                    y = torch.empty_like(x)
                    calls[(op, nbytes)] = (lambda x=x, y=y: dist.all_to_all_single(y, x)) if op == "all_to_all" \
                        else (lambda x=x: dist.all_reduce(x))
                    for _ in range(warmup):
                        calls[(op, nbytes)]()
                    sync()
            times: dict[tuple[str, int], list[float]] = {key: [] for key in calls}
            # Passes over every (op, size), one timed call each: a burst of stalls (another process,
            # a virtual CPU descheduled) spoils one sample of many sizes, not every sample of one.
            for i in range(repeats):
                for key, call in calls.items():
                    dist.barrier()
                    t0 = time.perf_counter()
                    call()
                    sync()
                    times[key].append(time.perf_counter() - t0)
                if rank == 0:
                    out.put(("tick", rank, f"collectives {i + 1}/{repeats}"))
            out.put(("done", rank, times))
        finally:
            dist.destroy_process_group()
    except BaseException as exc:  # noqa: BLE001  (reported to the parent, which decides)
        out.put(("error", rank, f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"))


def _stop(procs) -> None:
    """Terminate, then kill, then join every worker still alive (never-started ones are skipped)."""
    procs = [p for p in procs if p.pid is not None]
    for p in procs:
        if p.is_alive():
            p.terminate()
    deadline = time.monotonic() + 3.0
    for p in procs:
        p.join(max(deadline - time.monotonic(), 0.05))
    for p in procs:
        if p.is_alive():
            p.kill()
            p.join(2.0)


def measure_collectives(ranks: int = 2, device: str = "cpu", ops: Sequence[str] = OPS,
                        sizes: Sequence[int] = QUICK_BYTES, warmup: int = 3, repeats: int = 25,
                        timeout_s: float = 60.0, tick: Tick = lambda _: None) -> list[CollectiveRow]:
    """Rows (collective, ranks, bytes_per_rank, median seconds) for every op and size.

    Raises ``CollectiveError`` when a worker fails or the whole run exceeds ``timeout_s``; the
    workers are gone when this returns or raises.
    """
    import torch.distributed as dist
    import torch.multiprocessing as mp

    if ranks < 2:
        raise ValueError(f"ranks = {ranks}: a collective needs at least 2")
    bad = [op for op in ops if op not in OPS]
    if bad:
        raise ValueError(f"collective {bad[0]!r}: expected one of {', '.join(OPS)}")
    backend = "nccl" if device == "cuda" else "gloo"
    store = dist.TCPStore(LOOPBACK, 0, None, True, timeout=_dt.timedelta(seconds=timeout_s),
                          wait_for_workers=False)
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    procs = [ctx.Process(target=_worker, daemon=True, name=f"moesim-coll-{r}",
                         args=(r, ranks, store.port, backend, tuple(ops), tuple(sizes), warmup, repeats,
                               timeout_s, _loopback_ifname(), out))
             for r in range(ranks)]
    results: dict[int, dict] = {}
    deadline = time.monotonic() + timeout_s
    try:
        for p in procs:
            p.start()
        while len(results) < ranks:
            left = deadline - time.monotonic()
            if left <= 0:
                raise CollectiveError(f"{backend} collectives over {ranks} processes: no result in {timeout_s:.0f} s")
            try:
                kind, rank, payload = out.get(timeout=min(left, 0.5))
            except _queue.Empty:
                dead = [p for p in procs if not p.is_alive() and p.exitcode not in (0, None)]
                if dead:
                    raise CollectiveError(f"{backend} worker {dead[0].name} exited with code {dead[0].exitcode}") from None
                continue
            if kind == "tick":
                tick(payload)
            elif kind == "error":
                raise CollectiveError(f"{backend} worker {rank}: {payload}")
            else:
                results[rank] = payload
        for p in procs:
            p.join(max(deadline - time.monotonic(), 1.0))
    finally:
        _stop(procs)
        out.close()
        out.cancel_join_thread()
        del store
    rows = []
    for op in ops:
        for nbytes in sizes:
            per_repeat = np.max([results[r][(op, nbytes)] for r in range(ranks)], axis=0)  # slowest rank
            rows.append(CollectiveRow(op, ranks, int(nbytes), float(statistics.median(per_repeat))))
    return rows


# ---------------------------------------------------------------- fits


def _key(r: CollectiveRow) -> tuple:
    return (r.collective, r.ranks, r.bytes_per_rank)


def split_rows(rows: Sequence[CollectiveRow]) -> tuple[list[CollectiveRow], list[CollectiveRow]]:
    """(fit, held-out): one size in five by stable hash; at least one held out and two fitted when
    there are four or more rows (else every third interior row is held out)."""
    held = [r for r in rows if held_out(*_key(r))]
    if not held or len(rows) - len(held) < 2:
        held = list(rows[1:-1:3]) if len(rows) >= 4 else []
    return [r for r in rows if r not in held], held


def _features(r: CollectiveRow) -> list[float]:
    """(bytes term, latency steps) of one row in the cost model's form."""
    n, b = r.ranks, float(r.bytes_per_rank)
    if r.collective == "all_to_all":
        return [b * (n - 1) / n, n - 1]  # bytes to peers / bw + one latency per peer
    return [2 * (n - 1) / n * b, 2 * (n - 1)]  # ring all-reduce


def fit_link(rows: Sequence[CollectiveRow]) -> LinkSpec:
    """Alpha-beta (GB/s, latency us) of one collective by relative least squares (non-negative)."""
    inv_bw, lat = fit_relative_nnls(np.array([_features(r) for r in rows]), np.array([r.seconds for r in rows]))
    if inv_bw <= 0:
        raise ValueError("collective fit: time does not grow with bytes")
    return LinkSpec(bw_gbps=round_sig(1.0 / inv_bw / 1e9), latency_us=round_sig(lat * 1e6))


def predict_s(link: LinkSpec, r: CollectiveRow) -> float:
    """The cost model's time for row ``r`` (through ``CostModel`` on a one-node machine of ``r.ranks``)."""
    from moesim.costmodel import cost_model

    cm = cost_model(_node_hardware(r.ranks), _link_profile(r.collective, link))
    if r.collective == "all_to_all":
        return float(cm.alltoall_s(r.bytes_per_rank * (r.ranks - 1) / r.ranks, r.ranks, 1))
    return float(cm.allreduce_s(r.bytes_per_rank, r.ranks))


def _node_hardware(ranks: int):
    from moesim.schemas import HardwareSpec

    return HardwareSpec(name="collectives", device={
        "name": "collectives", "peak_tflops": {"fp32": 1.0}, "mem_bw_gbps": 1.0, "mem_gib": 1.0, "power_w": 1.0,
        "usd_per_hour": 0.0}, node={"devices_per_node": ranks, "intra_bw_gbps": 1.0})


def _link_profile(collective: str, link: LinkSpec):
    """A minimal profile holding only ``link`` for ``collective`` (to score a fit through CostModel)."""
    from moesim.costmodel.profile import CollectivesSpec, GemmTable, Profile, Reference

    return Profile(device="collectives", platform="cpu", source="fit", created="", dtype="fp32",
                   reference=Reference(peak_tflops={"fp32": 1.0}, mem_bw_gbps=1.0), launch_overhead_us=0.0,
                   memory_efficiency=1.0, gemm=GemmTable(tokens=[1.0], weight_elems=[1.0], efficiency=[[1.0]]),
                   collectives=CollectivesSpec(**{collective: CollectiveSpec(intra=link)}))


def fit_collective(rows: Sequence[CollectiveRow]) -> tuple[CollectiveSpec, FitError]:
    """Intra-node link (pooled, and per group size when several were measured) of one collective,
    with the held-out error of what the cost model uses."""
    if len({r.collective for r in rows}) != 1:
        raise ValueError("fit_collective: rows of one collective only")
    fit, held = split_rows(rows)
    if len(fit) < 2:
        raise ValueError(f"{rows[0].collective}: need at least 2 sizes to fit latency and bandwidth")
    pooled = fit_link(fit)
    sizes = sorted({r.ranks for r in fit})
    by_ranks = {n: fit_link([r for r in fit if r.ranks == n]) for n in sizes} if len(sizes) > 1 else {}
    pred = [predict_s(by_ranks.get(r.ranks, pooled), r) for r in held]
    return CollectiveSpec(intra=pooled, intra_by_ranks=by_ranks), fit_error(pred, [r.seconds for r in held], len(fit))


def fit_collectives(rows: Sequence[CollectiveRow]) -> tuple[dict[str, CollectiveSpec], dict[str, FitError]]:
    """({collective: spec}, {f'{collective}_intra': held-out error}) for every collective in ``rows``."""
    specs, errors = {}, {}
    for op in OPS:
        mine = [r for r in rows if r.collective == op]
        if mine:
            specs[op], errors[f"{op}_intra"] = fit_collective(mine)
    return specs, errors


# ---------------------------------------------------------------- rows <-> calibration measurements


def to_measurements(rows: Sequence[CollectiveRow]):
    """As ``calibrate.microbench.Measurement`` rows (kind = collective), for the calibration's CSV."""
    from moesim.calibrate.microbench import Measurement

    return [Measurement(r.collective, {"ranks": r.ranks, "bytes": r.bytes_per_rank}, r.seconds) for r in rows]


def from_measurements(rows) -> list[CollectiveRow]:
    """The collective rows among calibration measurements."""
    return [CollectiveRow(r.kind, int(r.params["ranks"]), int(r.params["bytes"]), r.time_s)
            for r in rows if r.kind in OPS]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m moesim.calibrate.collectives", description=__doc__.splitlines()[0])
    ap.add_argument("--ranks", type=int, default=0, help="processes (default: 2 on CPU, every GPU on CUDA)")
    ap.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    ap.add_argument("--quick", action="store_true", help="4 KiB .. 4 MiB instead of .. 16 MiB")
    ap.add_argument("--repeats", type=int, default=25, help="timed repeats per size (median kept)")
    ap.add_argument("--timeout", type=float, default=120.0, help="seconds before the workers are killed")
    args = ap.parse_args(argv)
    ranks = args.ranks or available_ranks(args.device)
    if ranks < 2:
        print(f"error: no collective possible on {args.device} here (needs 2 cores or 2 GPUs)")
        return 2
    t0 = time.perf_counter()
    rows = measure_collectives(ranks, args.device, sizes=sizes_for(args.quick), repeats=args.repeats,
                               timeout_s=args.timeout)
    wall = time.perf_counter() - t0
    print(f"{'collective':<11} {'ranks':>5} {'bytes/rank':>11} {'median_us':>11}")
    for r in rows:
        print(f"{r.collective:<11} {r.ranks:>5} {r.bytes_per_rank:>11} {r.seconds * 1e6:>11.1f}")
    specs, errors = fit_collectives(rows)
    for op, spec in specs.items():
        e = errors[f"{op}_intra"]
        print(f"{op}: latency {spec.intra.latency_us:.3g} us, bandwidth {spec.intra.bw_gbps:.3g} GB/s; held-out "
              f"{e.rows_held_out} of {e.rows_fit + e.rows_held_out} sizes: median {e.median_abs_pct:.1f}%, "
              f"max {e.max_abs_pct:.1f}%")
    print(f"measured in {wall:.1f} s (process start included)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
