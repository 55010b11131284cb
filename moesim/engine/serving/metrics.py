"""Serving results: per-request and per-iteration tables, spans, and the flat summary. Pure numpy.

Summary units: seconds (``_s``), tokens/s, GiB, USD, joules. Latencies are over served requests:
TTFT = first token - arrival; TPOT = (finish - first token) / (output tokens - 1), for requests
with more than one output token; e2e = finish - arrival; queue = first admission - arrival (part
of TTFT). Headline figures (throughputs, ``requests_per_s``, costs, energy, latency and queue
percentiles) are steady-state: over the window of ``steady.headline_window`` (warm-up and drain
left out, stated as ``steady_window_*``), cost and energy charging every device of the cluster for
the window's length per token generated in it. For an offline batch the window is the whole run.
``whole_run_*`` keys are the same figures over the whole run (throughputs over the makespan, first
arrival to last finish; every device charged for the makespan). ``dropped_fraction`` has the training meaning: the
fraction of expert-routed token slots dropped at expert capacity (0 when dropless or dense);
requests that cannot be served at all are counted in ``rejected_requests``, by reason in the
``rejected_*_requests`` keys, and said in ``rejected_note`` (``serving.rejections``).
"""

from __future__ import annotations

import numpy as np

from moesim.engine.serving.batching import RequestBook
from moesim.engine.serving.itl import itl_stats
from moesim.engine.serving.requests import Requests, trace_length_notes
from moesim.engine.serving.steady import headline_rates, headline_window, latency_stats, overloaded
from moesim.fit_advice import fit_explanation
from moesim.memory import kv_cache_capacity_tokens, memory_report
from moesim.precision import summary_fields
from moesim.results import SimResult, SpanRecorder
from moesim.schemas import Scenario

#: Columns of the raw per-iteration records the engine appends (one row per iteration).
ITERATION_COLUMNS = ("replica", "slot", "start_s", "end_s", "batch_seqs", "prefill_tokens",
                     "decode_tokens", "kv_tokens", "running", "queued", "preempted", "dropped_slots",
                     "routed_slots", "stage0_end_s", "tp_comm_s", "ep_comm_s", "pp_comm_s")
_INT_ITER = {"replica", "slot", "batch_seqs", "prefill_tokens", "decode_tokens", "kv_tokens",
             "running", "queued", "preempted"}


def request_table(reqs: Requests, book: RequestBook, pp: int) -> dict[str, np.ndarray]:
    """Per-request columns (arrays of shape ``(n,)``); NaN where a request was not served."""
    ttft = book.first_token_s - reqs.arrival_s
    e2e = book.finish_s - reqs.arrival_s
    steps = reqs.output_tokens - 1
    tpot = np.where(steps > 0, (book.finish_s - book.first_token_s) / np.maximum(steps, 1), np.nan)
    engine = book.engine
    return {
        "id": np.arange(len(reqs)),
        "replica": np.where(engine >= 0, engine // pp, -1),
        "slot": np.where(engine >= 0, engine % pp, -1),
        "arrival_s": reqs.arrival_s,
        "prompt_tokens": reqs.prompt_tokens,
        "output_tokens": reqs.output_tokens,
        "first_token_s": book.first_token_s,
        "finish_s": book.finish_s,
        "ttft_s": ttft,
        "queue_s": book.admitted_s - reqs.arrival_s,
        "tpot_s": tpot,
        "e2e_s": e2e,
        "preemptions": book.preemptions,
        "rejected": book.rejected,
    }


def iteration_table(iterations: np.ndarray, kv_per_engine) -> dict[str, np.ndarray]:
    """Per-iteration columns, with KV utilisation added. ``iterations``: rows in (replica, slot,
    start_s) order, as ``records.IterationLog`` gives them.

    ``kv_per_engine``: KV tokens an engine holds, one number or one per row (pools differ)."""
    cols = np.ascontiguousarray(iterations.T)  # one column per row
    out = {c: (cols[i].astype(np.int64) if c in _INT_ITER else cols[i]) for i, c in enumerate(ITERATION_COLUMNS)}
    kv = np.broadcast_to(np.asarray(kv_per_engine, dtype=np.int64), (len(iterations),)).copy()
    out["kv_capacity_tokens"] = kv
    out["kv_utilisation"] = out["kv_tokens"] / np.maximum(kv, 1)
    return out


#: An iteration's compute span: prefill only, decode only, or both (indexed 0, 1, 2).
_SPAN_KINDS = np.array(["prefill", "decode", "iteration"], dtype=object)


def spans(it: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Spans of each iteration; stage = replica, ``item`` the pipeline slot (micro-batch in flight).

    A compute span of kind prefill | decode | iteration (mixed), then the iteration's communication
    on its own streams, one after another as the iteration runs them (``tp_allreduce`` on
    ``tp_comm``, ``ep_alltoall`` on ``ep_comm``, ``pp_send`` on ``pp_comm``; the per-layer ops
    summed). With ``pp == 1`` the spans cover the whole iteration; with ``pp > 1`` the micro-batch's
    turn on the first stage (latency / pp), each part scaled alike.
    """
    kind = _SPAN_KINDS[np.where(it["decode_tokens"] == 0, 0, np.where(it["prefill_tokens"] == 0, 1, 2))]
    rec = SpanRecorder()
    if kind.size:
        # the iteration's communication, scaled like the span to the first stage's turn, closes it
        share = (it["stage0_end_s"] - it["start_s"]) / np.maximum(it["end_s"] - it["start_s"], 1e-300)
        comm = {k: it[f"{k}_s"] * share for k in ("tp_comm", "ep_comm", "pp_comm")}
        end = it["stage0_end_s"] - sum(comm.values())
        rec.add(kind, it["replica"], "compute", it["start_s"], end, item=it["slot"],
                tokens=(it["prefill_tokens"] + it["decode_tokens"]).astype(float),
                dropped=it["dropped_slots"], rank_group="replica")
        for k, secs in comm.items():
            on = secs > 0
            if on.any():
                rec.add(k.replace("_comm", "_allreduce" if k == "tp_comm" else "_send" if k == "pp_comm"
                                  else "_alltoall"), it["replica"][on], k, end[on], end[on] + secs[on],
                        item=it["slot"][on], rank_group="replica")
                end = np.where(on, end + secs, end)
    return rec.columns()


def _mean(x: np.ndarray, weights: np.ndarray | None = None) -> float:
    ok = np.isfinite(x)
    if not ok.any():
        return float("nan")
    if weights is None:
        return float(x[ok].mean())
    w = weights[ok]
    return float((x[ok] * w).sum() / w.sum()) if w.sum() > 0 else float(x[ok].mean())


def summarise(s: Scenario, req: dict[str, np.ndarray], it: dict[str, np.ndarray], knee: int,
              rejections: dict, imbalance: float = 1.0) -> dict:
    """The flat summary dict (stable keys listed in the module docstring and the README).

    ``rejections``: the refused requests' counts by reason and their note (``rejections.rejection_keys``),
    placed after ``rejected_fraction``."""
    hw, dev = s.hardware, s.hardware.device
    served = np.isfinite(req["finish_s"])
    out_tok = float(req["output_tokens"][served].sum())
    start = float(req["arrival_s"].min()) if req["arrival_s"].size else 0.0
    makespan = float(np.nanmax(req["finish_s"]) - start) if served.any() else 0.0
    devices = hw.n_devices
    cost_usd = devices * dev.usd_per_hour * makespan / 3600.0
    mem = memory_report(s)
    dur = it["end_s"] - it["start_s"]
    routed = float(it["routed_slots"].sum())
    n = req["id"].size
    process = s.workload.arrival.process
    window = headline_window(req, process, it)
    whole = _rates(req, served, makespan)
    head = whole if window is None else headline_rates(req, window, not overloaded(window, process))
    keep = None if window is None else (req["arrival_s"] >= window.start_s) & (req["arrival_s"] < window.end_s)
    run_lat = latency_stats(req, None, ("ttft", "tpot", "e2e", "queue"), ("p50", "p99"))
    out = {
        "model": s.model.name,
        "hardware": hw.name,
        "devices": devices,
        "replicas": s.plan.dp,
        **summary_fields(s),  # compute_dtype, weight_bytes_per_param, precision_note
        "n_requests": n,
        "served_requests": int(served.sum()),
        "rejected_requests": int(req["rejected"].sum()),
        "rejected_fraction": float(req["rejected"].sum() / n) if n else 0.0,
        **rejections,
        "dropped_fraction": float(it["dropped_slots"].sum() / routed) if routed else 0.0,
        "makespan_s": makespan,
        **window_keys(req, window, process, makespan),
        "output_tokens_per_s": head["output_tokens_per_s"],
        "input_tokens_per_s": head["input_tokens_per_s"],
        "requests_per_s": head["requests_per_s"],
        "output_tokens_per_s_per_device": head["output_tokens_per_s"] / devices,
        "whole_run_output_tokens_per_s": whole["output_tokens_per_s"],
        "whole_run_requests_per_s": whole["requests_per_s"],
    }
    asked = s.workload.arrival.n_requests
    if process == "trace" and n < asked:  # the run is shorter than the scenario asked: say so where the window is
        out["steady_note"] += f"; the trace has {n:,} rows, fewer than workload.arrival.n_requests {asked:,}"
    out["steady_note"] += "".join(f"; {t}" for t in trace_length_notes(s.workload, n))
    out.update(latency_stats(req, keep))
    # per token, over the iterations of the steady window (TPOT above is per request: each one's mean gap)
    out.update(itl_stats(it, *((window.start_s, window.end_s) if window is not None else ())))
    out.update(latency_stats(req, keep, ("queue",), ("p50", "p99")))
    out.update({f"whole_run_{k}": v for k, v in run_lat.items()})
    usd_per_s = devices * dev.usd_per_hour / 3600.0
    out_per_s, in_per_s = head["output_tokens_per_s"], head["input_tokens_per_s"]
    per_tok = (lambda x: x / out_per_s) if out_per_s > 0 else (lambda x: float("nan"))
    out.update({
        "iterations": int(dur.size),
        "mean_batch_seqs": _mean(it["batch_seqs"].astype(float), dur),
        "mean_decode_batch": _mean(it["decode_tokens"].astype(float), dur),
        "kv_utilisation_mean": _mean(it["kv_utilisation"], dur),
        "kv_utilisation_max": float(it["kv_utilisation"].max()) if dur.size else 0.0,
        "tp_comm_fraction": float(it["tp_comm_s"].sum() / dur.sum()) if dur.sum() > 0 else 0.0,
        "alltoall_fraction": float(it["ep_comm_s"].sum() / dur.sum()) if dur.sum() > 0 else 0.0,
        "kv_cache_capacity_tokens": int(kv_cache_capacity_tokens(s)),  # whole tokens, as the engine admits them
        "preemptions": int(req["preemptions"].sum()),
        "preempted_requests": int((req["preemptions"] > 0).sum()),
        "peak_memory_gib": mem.total_gib,
        "memory_capacity_gib": mem.capacity_gib,
        "fits": bool(mem.fits),
        **dict(zip(("fits_reason", "fits_advice"), fit_explanation(s, mem), strict=True)),
        "knee_batch": int(knee),
        "expert_load_imbalance": float(imbalance),
        "energy_j_per_token": per_tok(devices * dev.power_w),
        "run_cost_usd": cost_usd,
        "usd_per_mtok": per_tok(usd_per_s * 1e6),
        "usd_per_device_hour": float(dev.usd_per_hour),  # the price every $ figure rests on, in sight
        "usd_per_1k_output_tokens": per_tok(usd_per_s * 1e3),
        "usd_per_1k_tokens": usd_per_s / (out_per_s + in_per_s) * 1e3 if out_per_s > 0 else float("nan"),
        "whole_run_usd_per_mtok": cost_usd / out_tok * 1e6 if out_tok else float("nan"),
    })
    return out


def _rates(req: dict[str, np.ndarray], served: np.ndarray, makespan_s: float) -> dict[str, float]:
    """Requests/s and tokens/s of the whole run: served requests and their tokens over the makespan."""
    per_s = (lambda x: x / makespan_s) if makespan_s > 0 else (lambda x: float("nan"))
    return {"requests_per_s": per_s(float(served.sum())),
            "output_tokens_per_s": per_s(float(req["output_tokens"][served].sum())),
            "input_tokens_per_s": per_s(float(req["prompt_tokens"][served].sum()))}


def window_keys(req: dict[str, np.ndarray], window, process: str, makespan_s: float) -> dict:
    """The steady-state window of the headline figures and whether the plan kept up (arrival times
    in s, rates in requests/s): ``steady_window_*``, ``offered_requests_per_s``, ``queue_growth_requests``,
    ``overloaded`` and ``steady_note``, one sentence saying which requests the window holds."""
    if window is None:
        arrival = req["arrival_s"]
        t0 = float(arrival.min()) if arrival.size else 0.0
        note = ("offline batch: every request arrives at t=0, so the whole run is the window and it cannot be "
                "overloaded (it has no offered rate)" if process == "batch" else
                "the whole run (too few requests for a steady-state window)")
        return {"steady_window_start_s": t0, "steady_window_end_s": t0 + makespan_s, "steady_window_s": makespan_s,
                "steady_requests": int(arrival.size), "offered_requests_per_s": float("nan"),
                "queue_growth_requests": 0.0, "overloaded": False, "short_run": False, "steady_note": note}
    note = window.describe()
    if process == "closed":
        note += "; closed loop: each request arrives when one finishes, so it cannot be overloaded"
    return {"steady_window_start_s": window.start_s, "steady_window_end_s": window.end_s,
            "steady_window_s": window.duration_s, "steady_requests": window.n_window,
            "offered_requests_per_s": window.offered_req_s, "queue_growth_requests": window.queue_growth,
            "overloaded": bool(overloaded(window, process)), "short_run": short_run(window, process),
            "steady_note": note}


#: A steady window shorter than this many e2e p90s may still hold the fill-up: its tails read low.
SHORT_RUN_E2E_P90S = 2.0


def short_run(window, process: str) -> bool:
    """Whether open arrivals' steady ``window`` (a :class:`SteadyWindow`) lasts under
    :data:`SHORT_RUN_E2E_P90S` end-to-end p90s: the batch may still be filling, so tail latencies read low
    and an overload may read as a fill-up or the reverse (a point near capacity read 13x apart at 4,000 and
    16,000 requests). Never for an offline batch or a closed loop."""
    return process not in ("batch", "closed") and window.duration_s < SHORT_RUN_E2E_P90S * window.e2e_p90_s


def short_run_warning(summary: dict) -> str:
    """The line printed under a short run's table ("" otherwise; an overloaded run's line says it already)."""
    if not summary.get("short_run") or summary.get("overloaded"):
        return ""
    return (f"this run is short: its steady window ({summary['steady_window_s']:.3g} s) is under "
            f"{SHORT_RUN_E2E_P90S:g} e2e p90s ({summary.get('e2e_p90_s', float('nan')):.3g} s each), so the batch may "
            "still be filling, its tail latencies read low and whether it keeps up (so its throughput and cost) is unsure: "
            "run more requests (workload.arrival.n_requests)")


def _rate_text(req_s: float) -> str:
    """A rate as the warning writes it: 16, 6.0, 0.35 (req/s)."""
    return f"{req_s:.0f}" if req_s >= 10 else f"{req_s:.1f}" if req_s >= 1 else f"{req_s:.2g}"


def overload_warning(summary: dict) -> str:
    """The line printed under an overloaded run's table ("" when it kept up): offered vs served
    requests/s over the steady window, e.g. "offered 16 req/s, served 6.0 req/s: the queue grows;
    latencies depend on run length"."""
    if not summary.get("overloaded"):
        return ""
    line = (f"offered {_rate_text(summary['offered_requests_per_s'])} req/s, served "
            f"{_rate_text(summary['requests_per_s'])} req/s: the queue grows; latencies depend on run length")
    if "e2e p90 is longer" in str(summary.get("steady_note", "")):  # the window could not skip the warm-up
        line += ("; this run is short (its requests arrive within one end-to-end latency), so the batch may "
                 "still be filling: run more requests (workload.arrival.n_requests) to be sure")
    return line


def build_result(s: Scenario, seed: int, reqs: Requests, book: RequestBook, iterations: np.ndarray,
                 kv_per_engine: int, knee: int, rejections: dict, imbalance: float = 1.0) -> SimResult:
    """Assemble the SimResult: summary, spans and the ``requests`` / ``iterations`` tables.

    ``imbalance``: the replicas' expected max/mean tokens per EP rank, mean over MoE layers;
    ``rejections``: as :func:`summarise`'s.
    """
    req = request_table(reqs, book, s.plan.pp)
    it = iteration_table(iterations, kv_per_engine)
    summary = summarise(s, req, it, knee, rejections, imbalance)
    # numpy columns (lists of every iteration's fields would cost more than the run's events)
    return SimResult("serving", s.name, seed, summary, spans(it), {"requests": req, "iterations": it})
