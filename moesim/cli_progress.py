"""The progress bar of one long simulation, on stderr.

A serving run reports the requests it has finished (``moesim.simulate``'s ``progress``); most runs
end within a second, so the bar appears only once a run has taken :data:`SHOW_AFTER_S`, only on a
terminal (a pipe or a CI log gets nothing), and it is cleared when the run ends.
"""

from __future__ import annotations

import time

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

#: Seconds a run plays before its bar appears.
SHOW_AFTER_S = 1.0


class RunProgress:
    """``progress(done, total, what)`` for :func:`moesim.simulate.simulate`; a context manager that
    clears the bar on exit."""

    def __init__(self, console: Console, show_after_s: float = SHOW_AFTER_S):
        self.console, self.show_after_s = console, show_after_s
        self.start_s = time.monotonic()
        self.bar: Progress | None = None
        self.task = None

    def __call__(self, done: int, total: int, what: str) -> None:
        if not self.console.is_terminal:
            return
        if self.bar is None:
            if time.monotonic() - self.start_s < self.show_after_s:
                return
            self.bar = Progress(TextColumn("[bold]simulate"), BarColumn(), MofNCompleteColumn(),
                                TextColumn("{task.description}"), TimeElapsedColumn(),
                                console=self.console, transient=True)
            self.bar.start()
            self.task = self.bar.add_task(what, total=total)
        self.bar.update(self.task, completed=done, total=total, description=what)

    def __enter__(self) -> RunProgress:
        return self

    def __exit__(self, *exc) -> None:
        if self.bar is not None:
            self.bar.stop()
