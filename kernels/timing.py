"""Timing helpers: the median time of a callable on CPU, CUDA or MPS, after warm-up.

- CPU: ``torch.utils.benchmark.Timer`` (blocks of calls, median over blocks), with as many
  threads as torch uses (the Timer's default is one). With one torch thread the clock
  is the thread's CPU time (``time.thread_time``): all work runs on the calling thread, and time
  spent descheduled while another process holds the core is not counted, so a shared machine
  gives steady figures. With several threads the clock is wall time.
- CUDA: ``triton.testing.do_bench`` when triton is present, else CUDA events around each call.
- MPS: wall clock around each call with ``torch.mps.synchronize``.

Noise-aware measurement of many points (``measure_interleaved``): rounds over every point, so a
burst of load from another process hits one sample of many points rather than every sample of
one; a point keeps being sampled in later rounds until the confidence interval of its median is
narrower than a stated precision (``PrecisionRule``) or a cap is reached, and a sample far from
the others is set aside and re-measured. Each point keeps its spread (IQR / median) for the
record, and ``machine_load`` says how busy the machine was.
"""

from __future__ import annotations

import math
import os
import random
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

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
            max_repeats: int = 50, blocks: int = 5) -> Timing:
    """Median time of ``fn()`` on ``device`` after ``warmup`` calls, over about ``min_time_s`` of runs
    (on CPU in ``blocks`` blocks of calls)."""
    for _ in range(warmup):
        fn()
    synchronize(device)
    if device == "cpu":
        return _time_cpu(fn, min_time_s, blocks)
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


# ---------------------------------------------------------------- noise-aware measurement of many points

#: Scale of the notch of a box plot: median +- NOTCH * IQR / sqrt(n) is about a 95 % interval of the
#: median (McGill, Tukey and Larsen 1978), distribution-free enough for timing samples.
NOTCH = 1.57
#: MAD -> standard deviation for normal data.
MAD_SIGMA = 1.4826


@dataclass(frozen=True)
class PrecisionRule:
    """When a point's median is known well enough, and how long to try.

    A point is sampled at least ``min_samples`` times, then until the relative half-width of the
    confidence interval of its median (``median_ci``) is at most ``target``, or it has been sampled
    ``max_samples`` times (outliers included). A sample more than ``outlier_z`` robust standard
    deviations (1.4826 MAD) and more than ``outlier_floor`` of the median away from the median is
    an outlier: set aside, and the point re-measured (while under the cap).
    """

    target: float = 0.03
    min_samples: int = 3
    max_samples: int = 6
    outlier_z: float = 4.0
    outlier_floor: float = 0.06

    def __post_init__(self) -> None:
        if not (self.target > 0 and 1 <= self.min_samples <= self.max_samples):
            raise ValueError(f"PrecisionRule: need target > 0 and 1 <= min_samples <= max_samples, got {self}")


def _quartiles(xs: Sequence[float]) -> tuple[float, float]:
    q = statistics.quantiles(xs, n=4, method="inclusive")
    return q[0], q[2]


def iqr_spread(xs: Sequence[float]) -> float:
    """Interquartile range over median (0 for fewer than 2 samples)."""
    if len(xs) < 2:
        return 0.0
    q1, q3 = _quartiles(xs)
    return (q3 - q1) / statistics.median(xs)


def median_ci(xs: Sequence[float]) -> float:
    """Relative half-width of the ~95 % confidence interval of the median: ``1.57 * IQR / sqrt(n) / median``
    (inf for fewer than 2 samples)."""
    if len(xs) < 2:
        return math.inf
    return NOTCH * iqr_spread(xs) / math.sqrt(len(xs))


def outlier_index(xs: Sequence[float], rule: PrecisionRule) -> set[int]:
    """Indices of the samples of ``xs`` farther from the median than the rule allows (needs 3 samples)."""
    if len(xs) < 3:
        return set()
    med = statistics.median(xs)
    mad = statistics.median(abs(x - med) for x in xs)
    limit = max(rule.outlier_z * MAD_SIGMA * mad, rule.outlier_floor * med)
    return {i for i, x in enumerate(xs) if abs(x - med) > limit}


def split_outliers(xs: Sequence[float], rule: PrecisionRule) -> tuple[list[float], list[float]]:
    """(kept, outliers) of ``xs`` (``outlier_index``), each in the order taken."""
    out = outlier_index(xs, rule)
    return [x for i, x in enumerate(xs) if i not in out], [x for i, x in enumerate(xs) if i in out]


@dataclass
class PointStats:
    """Samples of one point in the order taken, and the round each came from."""

    samples: list[float] = field(default_factory=list)
    rounds: list[int] = field(default_factory=list)

    def add(self, seconds: float, round_no: int) -> None:
        self.samples.append(float(seconds))
        self.rounds.append(round_no)

    def kept(self, rule: PrecisionRule) -> list[float]:
        return split_outliers(self.samples, rule)[0]

    def outliers(self, rule: PrecisionRule) -> int:
        return len(outlier_index(self.samples, rule))

    def median(self, rule: PrecisionRule) -> float:
        return float(statistics.median(self.kept(rule)))

    def spread(self, rule: PrecisionRule) -> float:
        return iqr_spread(self.kept(rule))

    def ci(self, rule: PrecisionRule) -> float:
        return median_ci(self.kept(rule))

    def converged(self, rule: PrecisionRule) -> bool:
        kept = self.kept(rule)
        return len(kept) >= rule.min_samples and median_ci(kept) <= rule.target

    def wants_more(self, rule: PrecisionRule) -> bool:
        """Under the cap, and too few kept samples or a confidence interval wider than the target."""
        return len(self.samples) < rule.max_samples and not self.converged(rule)

    def halves(self, rule: PrecisionRule) -> tuple[float, float]:
        """(median of the samples from even rounds, median of those from odd rounds), outliers set
        aside: two measurements of the point taken in separate rounds (the noise floor). Both are the
        overall median when one half has no sample."""
        out = outlier_index(self.samples, rule)
        a = [x for i, (x, r) in enumerate(zip(self.samples, self.rounds)) if i not in out and r % 2 == 0]
        b = [x for i, (x, r) in enumerate(zip(self.samples, self.rounds)) if i not in out and r % 2 == 1]
        if not a or not b:
            m = self.median(rule)
            return m, m
        return float(statistics.median(a)), float(statistics.median(b))


@dataclass(frozen=True)
class Interleaved:
    """What ``measure_interleaved`` did: per-point samples, rounds run, and whether time ran out."""

    points: list[PointStats]
    rounds: int
    wall_s: float
    out_of_time: bool
    rule: PrecisionRule

    def converged(self) -> int:
        """Points whose median reached the rule's precision."""
        return sum(p.converged(self.rule) for p in self.points)


def measure_interleaved(n_points: int, sample: Callable[[int], float], rule: PrecisionRule = PrecisionRule(),
                        budget_s: float = math.inf, clock: Callable[[], float] = time.monotonic,
                        pairs: bool = False, shuffle: bool = True,
                        on_round: Callable[[int, int], None] | None = None,
                        guaranteed: int | None = None) -> Interleaved:
    """Sample points ``0 .. n_points - 1`` in rounds until each is precise or capped (``PrecisionRule``).

    The first ``rule.min_samples`` rounds sample every point; each later round samples the points
    that still want samples (``PointStats.wants_more``). The order inside a round is shuffled,
    seeded by the round number (a rerun repeats it). The first ``guaranteed`` rounds (default
    ``min_samples``) always run; after them a sample is taken only while less than ``budget_s``
    has passed since the start, so on a machine too busy for the minimum some points keep fewer
    samples (and say so). ``pairs``: extra samples come two at a time, in consecutive rounds, so
    a point has as many samples from even as from odd rounds (``PointStats.halves``).
    ``on_round(round, n)`` is told how many samples a round will take (a progress bar's total).
    """
    stats = [PointStats() for _ in range(n_points)]
    sure = rule.min_samples if guaranteed is None else guaranteed
    start = clock()
    rnd, rounds_run, out_of_time = 0, 0, False
    pending: list[int] = []
    while True:
        if rnd < rule.min_samples:
            todo = list(range(n_points))
        elif pairs and (rnd - rule.min_samples) % 2 == 1:
            todo = pending  # the second sample of each pair
        else:
            room = 2 if pairs else 1  # a pair starts only where both of its samples fit under the cap
            todo = [i for i in range(n_points)
                    if stats[i].wants_more(rule) and len(stats[i].samples) + room <= rule.max_samples]
            pending = list(todo)
        if not todo or (rnd >= sure and clock() - start > budget_s):
            out_of_time = bool(todo)
            break
        if shuffle:
            todo = list(todo)
            random.Random(rnd).shuffle(todo)
        if on_round is not None:
            on_round(rnd, len(todo))
        for i in todo:
            if rnd >= sure and clock() - start > budget_s:
                out_of_time = True
                break
            stats[i].add(sample(i), rnd)
        rounds_run = rnd + 1
        if out_of_time:
            break
        rnd += 1
    return Interleaved(points=stats, rounds=rounds_run, wall_s=clock() - start, out_of_time=out_of_time, rule=rule)


def machine_load() -> dict:
    """Load averages over 1, 5 and 15 minutes (empty where the OS has none) and the CPUs this process may use."""
    try:
        load = [round(x, 2) for x in os.getloadavg()]
    except (AttributeError, OSError):
        load = []
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = os.cpu_count() or 1
    return {"loadavg": load, "cpus": cpus}
