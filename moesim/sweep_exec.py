"""Run sweep points on local processes or a Dask cluster, retrying points whose worker died.

The unit of work is a :class:`PointTask` (plain, picklable data); :func:`run_point` turns it into
one result row in the worker. Backends share a small interface (submit, wait for some, tell a
result from a lost worker, recover) so one loop, :func:`drive`, handles both.
"""

from __future__ import annotations

import concurrent.futures as cf
import multiprocessing
import re
import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from moesim.errors import InputError, RunError

Runner = Callable[[Any, int], Any]  # (Scenario, seed) -> SimResult


@dataclass(frozen=True)
class PointTask:
    """Everything a worker needs for one point: the raw scenario with the point applied."""

    index: int
    key: str
    seed: int
    columns: dict[str, Any]  # swept path -> value as it appears in the table
    raw: dict[str, Any]
    base_dir: str | None
    runner: Runner | None = None  # None: moesim.simulate


def run_point(task: PointTask) -> dict[str, Any]:
    """Validate and simulate one point; return its row. Never raises for a bad point."""
    from moesim.loader import scenario_from_dict

    row: dict[str, Any] = {"point": task.index, "status": "ok", "reason": "", "scenario": "",
                           "kind": "", "seed": task.seed, **task.columns}
    t0 = time.perf_counter()
    try:
        scenario = scenario_from_dict(task.raw, Path(task.base_dir) if task.base_dir else None)
    except InputError as exc:
        return row | {"status": "invalid", "reason": str(exc), "scenario": str(task.raw.get("name", ""))}
    row["scenario"] = scenario.name
    row["kind"] = "training" if scenario.is_training else "serving"
    if task.runner is None:
        from moesim.simulate import simulate as runner
    else:
        runner = task.runner
    try:
        result = runner(scenario, task.seed)
    except InputError as exc:
        return row | {"status": "invalid", "reason": str(exc)}
    except Exception as exc:  # noqa: BLE001 - a point that crashes is recorded, not fatal
        first = (str(exc).strip().splitlines() or [""])[0]
        return row | {"status": "failed", "reason": f"{type(exc).__name__}: {first}"}
    summary = dict(result.summary)
    row.update({k: v for k, v in summary.items() if k not in row})
    if summary.get("fits") is False:
        peak = summary.get("peak_memory_gib")
        row["status"] = "invalid"
        row["reason"] = "does not fit in device memory" + (f" (peak {peak:.1f} GiB)" if peak else "")
    row["sim_wall_s"] = time.perf_counter() - t0
    return row


def capacity_point(scenario, seed: int, slo_text: str):
    """``sweep --slo``'s runner: the point's run at capacity under ``slo_text`` (``simulate --slo``'s
    capacity search), whose summary adds ``max_goodput_req_s`` and the cost and throughput at that rate."""
    from moesim.capacity import max_goodput, parse_slo

    return max_goodput(scenario, parse_slo(slo_text), seed=seed).result


def lost_row(task: PointTask, attempts: int) -> dict[str, Any]:
    """The row recorded for a point whose worker died on every attempt."""
    return {"point": task.index, "status": "failed", "seed": task.seed, "scenario": "", "kind": "",
            "reason": f"worker died while running this point ({attempts} attempt{'' if attempts == 1 else 's'})", **task.columns}


# ------------------------------------------------------------------------ backends
class LocalBackend:
    """A ProcessPoolExecutor; a dead worker breaks the pool, which is rebuilt."""

    def __init__(self, workers: int, mp_context: str = "spawn") -> None:
        if workers < 1:
            raise InputError(f"--workers {workers}: need at least 1")
        self.workers = workers
        self._ctx = multiprocessing.get_context(mp_context)
        self.broken = False
        self._pool = self._make()

    def _make(self) -> cf.ProcessPoolExecutor:
        try:
            return cf.ProcessPoolExecutor(max_workers=self.workers, mp_context=self._ctx)
        except OSError as exc:
            raise RunError(f"cannot start {self.workers} worker processes: {exc}") from None

    def submit(self, task: PointTask) -> cf.Future:
        try:
            return self._pool.submit(run_point, task)
        except cf.BrokenExecutor:
            self.broken = True
            fut: cf.Future = cf.Future()
            fut.set_exception(cf.process.BrokenProcessPool("pool broken"))
            return fut

    def wait_some(self, handles: list[cf.Future]) -> list[cf.Future]:
        done, _ = cf.wait(handles, return_when=cf.FIRST_COMPLETED)
        return list(done)

    def outcome(self, handle: cf.Future) -> dict[str, Any] | None:
        """The row, or None when the worker running it died."""
        try:
            return handle.result()
        except cf.BrokenExecutor:
            self.broken = True
            return None

    def recover(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._pool = self._make()
        self.broken = False

    def close(self, wait: bool = True) -> None:
        """Shut the pool down; ``wait=False`` (Ctrl-C, an error) also stops the running points'
        workers, so neither this call nor the interpreter's exit joins them (a second Ctrl-C while
        it did left a traceback and a hung process)."""
        if not wait:
            for proc in list((getattr(self._pool, "_processes", None) or {}).values()):
                proc.terminate()
        self._pool.shutdown(wait=wait, cancel_futures=True)


#: Seconds a Dask scheduler has to answer: its client's own timeout does not cover a server that accepts the
#: connection and never speaks Dask (the dashboard's port, 8787, for the scheduler's 8786), which hung a sweep.
CONNECT_S = 30.0
#: A scheduler address: protocol, host, port (``tcp://10.0.0.5:8786``).
SCHEDULER_ADDRESS = re.compile(r"^(tcp|tls|ucx|ws|wss)://[^\s/:]+:\d{1,5}$")


def check_scheduler(address: str, option: str = "--scheduler", also: str = "") -> None:
    """A one-line InputError naming ``option`` unless ``address`` reads as a Dask scheduler's (checked before anything
    runs); ``also``: what else the option takes, said at the end."""
    if not SCHEDULER_ADDRESS.match(address):
        raise InputError(f"{option} {address!r}: expected PROTOCOL://HOST:PORT, e.g. tcp://10.0.0.5:8786 (the "
                         f"scheduler's port, 8786 by default; 8787 is its dashboard){also}")


def _connect(client_class, address: str):
    """A Dask client on ``address``, or a one-line RunError when nothing there answers as a scheduler within
    :data:`CONNECT_S` (a closed port, another service, a proxy's reply read as a message)."""
    got: dict[str, Any] = {}

    def connect() -> None:
        try:
            got["client"] = client_class(address, timeout="10s")
        except BaseException as exc:  # noqa: BLE001 - any failure to connect is reported below, in one line
            got["error"] = exc

    thread = threading.Thread(target=connect, daemon=True)
    thread.start()
    thread.join(CONNECT_S)
    if "client" in got:
        return got["client"]
    if thread.is_alive():
        raise RunError(f"--scheduler {address}: no Dask scheduler answered within {CONNECT_S:g} s (is it another "
                       "service, such as the dashboard on 8787?)")
    exc = got["error"]
    if isinstance(exc, (OSError, TimeoutError)):
        raise RunError(f"cannot connect to {address}: {exc}")
    raise RunError(f"--scheduler {address}: what answered is not a Dask scheduler ({type(exc).__name__}: "
                   f"{str(exc)[:120]})")


class DaskBackend:
    """A Dask client: on ``scheduler`` (tcp://host:port) or on a LocalCluster it starts."""

    broken = False  # Dask reschedules work of a dead worker itself; the pool never breaks

    def __init__(self, workers: int, scheduler: str | None = None, processes: bool = True,
                 option: str = "--executor dask") -> None:
        """``option``: the command-line option that asked for Dask, named when it cannot be had."""
        try:
            from dask.distributed import Client, LocalCluster, as_completed
        except ImportError:
            raise InputError(f"{option} needs dask[distributed]: pip install 'moesim[distributed]'") from None
        self._cluster = None
        try:
            if scheduler:
                self.client = _connect(Client, scheduler)
            else:
                self._cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=processes,
                                             dashboard_address=None, silence_logs=50)
                self.client = Client(self._cluster)
        except (OSError, TimeoutError) as exc:
            where = scheduler or "a local Dask cluster"
            raise RunError(f"cannot connect to {where}: {exc}") from None
        self._ac = as_completed([], with_results=False)
        self._pending: set = set()

    def submit(self, task: PointTask):
        fut = self.client.submit(run_point, task, pure=False, key=f"moesim-point-{task.index}-{time.time_ns()}")
        self._ac.add(fut)
        self._pending.add(fut)
        return fut

    def wait_some(self, handles: list) -> list:
        batch = self._ac.next_batch(block=True)
        self._pending.difference_update(batch)
        return batch

    def outcome(self, handle) -> dict[str, Any] | None:
        if handle.status == "finished":
            return handle.result()
        exc = handle.exception() if handle.status == "error" else None
        if exc is None or type(exc).__name__ in ("KilledWorker", "CancelledError", "CommClosedError"):
            return None  # the worker (or its connection) died: retry the point
        raise RunError(f"Dask task failed outside the simulator: {type(exc).__name__}: {exc}")

    def recover(self) -> None:  # nothing to rebuild: the scheduler already moved the work
        return None

    def close(self, wait: bool = True) -> None:
        self.client.close()
        if self._cluster is not None:
            self._cluster.close()


# ------------------------------------------------------------------------ the loop
def drive(backend: Any, tasks: list[PointTask], on_row: Callable[[dict[str, Any]], None],
          max_retries: int = 2, window: int | None = None,
          refill: Callable[[int], list[PointTask]] | None = None) -> None:
    """Run every task, calling ``on_row`` (in this process) as each row arrives.

    At most ``window`` points are in flight. ``refill(free)``, when given, is asked for up to
    ``free`` more tasks whenever the queue is empty and fewer than ``window`` are in flight (a
    search that picks its next points from the rows so far); the loop ends when it returns none
    and nothing is queued or in flight. When a worker dies, the points that were in flight
    on the broken pool are suspects: each gets one more attempt (up to ``max_retries`` retries,
    then a ``failed`` row), queued behind the rest so one poisonous point does not keep
    killing the same neighbours. Pools that keep breaking before finishing any point (workers
    that cannot start) stop the sweep with a RunError; finished rows are already stored.
    """
    queue = deque(tasks)
    window = window or max(2, 2 * getattr(backend, "workers", 2))
    inflight: dict[Any, PointTask] = {}
    attempts: Counter[str] = Counter()
    yielded, barren, max_barren = False, 0, 2 * (max_retries + 1)

    def collect(handles: list[Any], lost: list[PointTask]) -> bool:
        got = False
        for handle in handles:
            task = inflight.pop(handle)
            row = backend.outcome(handle) if handle.done() else None
            if row is None:
                lost.append(task)
            else:
                got = True
                on_row(row)
        return got

    while True:
        if refill is not None and not queue and len(inflight) < window:
            queue.extend(refill(window - len(inflight)))
        if not (queue or inflight):
            break
        while queue and len(inflight) < window:
            task = queue.popleft()
            inflight[backend.submit(task)] = task
        lost: list[PointTask] = []
        yielded |= collect(backend.wait_some(list(inflight)), lost)
        if backend.broken:  # the rest of the broken pool: keep finished rows, retry the others
            yielded |= collect(list(inflight), lost)
            barren = 0 if yielded else barren + 1
            if barren >= max_barren:
                raise RunError(f"worker processes died {barren} times in a row before finishing any "
                               "point (see their error output above); finished rows are kept, "
                               "rerun with --resume")
            backend.recover()
            yielded = False
        for task in lost:
            attempts[task.key] += 1
            if attempts[task.key] > max_retries:
                on_row(lost_row(task, attempts[task.key]))
            else:
                queue.append(task)
