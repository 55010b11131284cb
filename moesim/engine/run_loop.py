"""Running a SimPy environment to its end while telling a caller how far it got.

``simpy.Environment.run()`` gives no sign of life until it returns; a serving run of a large
request stream can take minutes. :func:`run_reporting` steps the same events in the same order
(so the result is the same bit for bit) and, at most every :data:`REPORT_EVERY_S` seconds of wall
clock, calls ``report()``: the caller reads its own state there (requests finished, say). The
engine stays free of any display library: what the report shows is the caller's business.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import simpy
from simpy.core import EmptySchedule

#: Wall-clock seconds between two reports (the clock is read once every :data:`_EVENTS_PER_CHECK` events).
REPORT_EVERY_S = 0.25
_EVENTS_PER_CHECK = 1024


def run_reporting(env: simpy.Environment, report: Callable[[], None] | None = None) -> None:
    """Run ``env`` until no event is left, calling ``report()`` every :data:`REPORT_EVERY_S` seconds
    and once at the end. Without ``report`` this is ``env.run()``."""
    if report is None:
        env.run()
        return
    step, clock = env.step, time.monotonic
    due = clock() + REPORT_EVERY_S
    try:
        while True:
            for _ in range(_EVENTS_PER_CHECK):
                step()
            if clock() >= due:
                report()
                due = clock() + REPORT_EVERY_S
    except EmptySchedule:
        pass
    report()
