"""Invariants every simulation result must satisfy; tests run them on every simulation.

Each check returns a list of violation strings (empty when the result is sound), so a test can
assert on all of them at once and print what broke.
"""

from __future__ import annotations

import numpy as np

from moesim.results import SimResult

_EPS_S = 1e-9  # float tolerance on times, seconds


def check_spans(r: SimResult) -> list[str]:
    """Spans have end >= start >= 0, and no (stage, stream) runs two spans at once."""
    s = r.spans
    bad: list[str] = []
    if not len(s.get("start_s", [])):
        return bad
    start, end = np.asarray(s["start_s"], float), np.asarray(s["end_s"], float)
    if np.any(start < -_EPS_S):
        bad.append("a span starts before t=0")
    if np.any(end < start - _EPS_S):
        bad.append("a span ends before it starts")
    stage, stream = np.asarray(s["stage"]), np.asarray(s["stream"]).astype(str)
    for key in set(zip(stage.tolist(), stream.tolist())):
        sel = (stage == key[0]) & (stream == key[1])
        order = np.argsort(start[sel], kind="stable")
        st, en = start[sel][order], end[sel][order]
        if len(st) > 1 and np.any(st[1:] < en[:-1] - 1e-9 * max(1.0, float(en.max()))):
            bad.append(f"stage {key[0]} stream {key[1]} is busy more than 100% (overlapping spans)")
    return bad


def check_tokens(r: SimResult) -> list[str]:
    """Per layer: routed = kept + dropped, nothing negative."""
    t = r.tables.get("layers")
    if not t:
        return []
    routed, kept, dropped = (np.asarray(t[k], float) for k in ("routed", "kept", "dropped"))
    bad = []
    if np.any(np.abs(routed - kept - dropped) > 1e-6 * np.maximum(routed, 1)):
        bad.append("tokens routed != kept + dropped on some layer")
    if np.any(kept < 0) or np.any(dropped < 0):
        bad.append("negative token counts")
    return bad


#: Summary times that are net terms, negative where they save (the decode step's two-batch overlap, and its
#: host and launch part where a CUDA graph saves a datasheet profile's per-kernel launch).
NET_TIMES = ("decode_two_batch_overlap_s", "decode_host_and_launch_s")


def check_summary(r: SimResult) -> list[str]:
    """Memory and times non-negative (but :data:`NET_TIMES`); a training step at least as long as its busiest stream."""
    s = r.summary
    bad = [f"{k} = {v} is negative" for k, v in s.items()
           if isinstance(v, (int, float)) and not isinstance(v, bool) and (k.endswith("_gib") or k.endswith("_s")) and v < 0
           and k not in NET_TIMES]
    if r.kind == "training" and len(r.spans.get("end_s", [])):
        step = float(s["step_time_s"]) * max(int(s.get("steps", 1)), 1)
        stage, stream = np.asarray(r.spans["stage"]), np.asarray(r.spans["stream"]).astype(str)
        dur = np.asarray(r.spans["end_s"], float) - np.asarray(r.spans["start_s"], float)
        for key in set(zip(stage.tolist(), stream.tolist())):
            busy = float(dur[(stage == key[0]) & (stream == key[1])].sum())
            if busy > step * (1 + 1e-6) + _EPS_S:
                bad.append(f"stage {key[0]} {key[1]} is busy {busy:.4g} s, longer than the step {step:.4g} s")
    frac = s.get("dropped_fraction")
    if frac is not None and not 0 <= frac <= 1:
        bad.append(f"dropped_fraction = {frac} outside [0, 1]")
    return bad


def violations(r: SimResult) -> list[str]:
    """All invariant violations of ``r``."""
    return check_spans(r) + check_tokens(r) + check_summary(r)
