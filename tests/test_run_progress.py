"""A long serving run tells how far it got (``simulate``'s ``progress``; the CLI's bar on stderr)
without changing what it computes."""

from __future__ import annotations

import io
import math

import pytest
from rich.console import Console

import moesim.engine.run_loop as run_loop
from moesim.cli_progress import RunProgress
from moesim.loader import load_scenario
from moesim.simulate import simulate


@pytest.fixture
def every_event(monkeypatch):
    """Report after every event, so even a short run reports many times."""
    monkeypatch.setattr(run_loop, "REPORT_EVERY_S", 0.0)
    monkeypatch.setattr(run_loop, "_EVENTS_PER_CHECK", 1)


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(
        a[k] == b[k] or (isinstance(a[k], float) and math.isnan(a[k]) and math.isnan(b[k])) for k in a)


def test_reports_climb_to_every_request_and_change_nothing(every_event):
    s = load_scenario("llama-2-7b-a100-serve", ["workload.arrival.n_requests=200"])
    calls = []
    with_progress = simulate(s, progress=lambda done, total, what: calls.append((done, total, what)))
    assert len(calls) > 10
    done = [c[0] for c in calls]
    assert done == sorted(done) and done[0] < 200 and calls[-1] == (200, 200, "requests")
    assert _same(simulate(s).summary, with_progress.summary)


def test_a_disaggregated_run_reports_its_prefill_pool_then_its_decode_pool(every_event):
    s = load_scenario("deepseek-v3-h800-serve-disagg", ["workload.arrival.n_requests=300"])
    whats = []
    simulate(s, progress=lambda done, total, what: whats.append(what) if not whats or whats[-1] != what else None)
    assert whats == ["prefill-pool requests", "decode-pool requests"]


def test_a_training_step_does_not_report(every_event):
    calls = []
    simulate(load_scenario("mixtral-8x7b-h100-train", []), progress=lambda *a: calls.append(a))
    assert calls == []


def test_the_bar_shows_on_a_terminal_only():
    pipe = Console(file=io.StringIO(), force_terminal=False)
    with RunProgress(pipe, show_after_s=0.0) as bar:
        bar(5, 10, "requests")
    assert bar.bar is None and pipe.file.getvalue() == ""
    tty = Console(file=io.StringIO(), force_terminal=True)
    with RunProgress(tty, show_after_s=0.0) as bar:
        bar(5, 10, "requests")
        bar(7, 10, "requests")
        assert bar.bar.tasks[0].completed == 7 and bar.bar.tasks[0].total == 10
    assert "simulate" in tty.file.getvalue()


def test_a_short_run_never_shows_the_bar():
    tty = Console(file=io.StringIO(), force_terminal=True)
    with RunProgress(tty, show_after_s=3600.0) as bar:
        bar(5, 10, "requests")
    assert bar.bar is None and tty.file.getvalue() == ""
