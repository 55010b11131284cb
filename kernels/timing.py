"""Timing helpers: the median time of a callable on CPU, CUDA or MPS, after warm-up.

- CPU: ``torch.utils.benchmark.Timer`` (blocks of calls, median over blocks), with as many
  threads as torch uses (the Timer's default is one). With one torch thread the clock
  is the thread's CPU time (``time.thread_time``): all work runs on the calling thread, and time
  spent descheduled while another process holds the core is not counted, so a shared machine
  gives steady figures. With several threads the clock is wall time.
- CUDA: ``triton.testing.do_bench`` when triton is present, else CUDA events around each call.
- MPS: wall clock around each call with ``torch.mps.synchronize``.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Timing:
    """Median seconds of one call, and how many timed repeats it came from."""

    median_s: float
    repeats: int


def pick_device(requested: str = "auto") -> str:
    """'cuda', 'mps' or 'cpu'; 'auto' picks the best present. An absent device raises ValueError."""
    has_mps = getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()
    if requested == "auto":
        return "cuda" if torch.cuda.is_available() else "mps" if has_mps else "cpu"
    if requested == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda: no CUDA device is available to torch")
    if requested == "mps" and not has_mps:
        raise ValueError("--device mps: Apple MPS is not available to torch")
    if requested not in ("cuda", "mps", "cpu"):
        raise ValueError(f"--device {requested}: expected auto, cuda, mps or cpu")
    return requested


def synchronize(device: str) -> None:
    """Wait for queued kernels on ``device``."""
    if device == "cuda":
        torch.cuda.synchronize()
    elif device == "mps":
        torch.mps.synchronize()


def time_fn(fn: Callable[[], object], device: str = "cpu", min_time_s: float = 0.05, warmup: int = 2,
            max_repeats: int = 50) -> Timing:
    """Median time of ``fn()`` on ``device`` after ``warmup`` calls, over about ``min_time_s`` of runs."""
    for _ in range(warmup):
        fn()
    synchronize(device)
    if device == "cpu":
        return _time_cpu(fn, min_time_s)
    if device == "cuda":
        return _time_cuda(fn, min_time_s, max_repeats)
    return _time_wall(fn, device, min_time_s, max_repeats)


def _time_cpu(fn, min_time_s: float, blocks: int = 5) -> Timing:
    """``blocks`` blocks of ``torch.utils.benchmark.Timer.timeit``, each about ``min_time_s / blocks``
    long (at least one call); the median block's time per call.

    The block size comes from one timed call rather than ``blocked_autorange``'s estimator, which
    grows blocks tenfold until the timer's own overhead is 0.01% and so spends up to ten times
    ``min_time_s`` on microsecond kernels.
    """
    from torch.utils import benchmark

    threads = torch.get_num_threads()
    clock = time.thread_time if threads == 1 else time.perf_counter
    timer = benchmark.Timer("fn()", globals={"fn": fn}, num_threads=threads, timer=clock)
    one_s = max(timer.timeit(1).times[0], 1e-7)
    number = max(1, int(min_time_s / blocks / one_s))
    times = [timer.timeit(number).times[0] for _ in range(blocks)]
    return Timing(median_s=float(statistics.median(times)), repeats=blocks * number)


def _time_cuda(fn, min_time_s: float, max_repeats: int) -> Timing:
    try:
        from triton.testing import do_bench
    except ImportError:
        do_bench = None
    if do_bench is not None:
        ms = do_bench(fn, warmup=5, rep=max(1, int(min_time_s * 1e3)), return_mode="median")
        return Timing(median_s=float(ms) * 1e-3, repeats=0)
    times = []
    start_t = time.perf_counter()
    while len(times) < max_repeats and (len(times) < 5 or time.perf_counter() - start_t < min_time_s):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        b.synchronize()
        times.append(a.elapsed_time(b) * 1e-3)
    return Timing(median_s=statistics.median(times), repeats=len(times))


def _time_wall(fn, device: str, min_time_s: float, max_repeats: int) -> Timing:
    times = []
    start_t = time.perf_counter()
    while len(times) < max_repeats and (len(times) < 5 or time.perf_counter() - start_t < min_time_s):
        t0 = time.perf_counter()
        fn()
        synchronize(device)
        times.append(time.perf_counter() - t0)
    return Timing(median_s=statistics.median(times), repeats=len(times))
