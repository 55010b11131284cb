"""Serving results: per-request and per-iteration tables, spans, and the flat summary. Pure numpy.

Summary units: seconds (``_s``), tokens/s, GiB, USD, joules. Latencies are over served requests:
TTFT = first token - arrival; TPOT = (finish - first token) / (output tokens - 1), for requests
with more than one output token; e2e = finish - arrival. Throughputs divide by the makespan
(first arrival to last finish). Cost and energy charge every device of the cluster for the whole
makespan at its $/hour and board power. ``dropped_fraction`` has the training meaning: the
fraction of expert-routed token slots dropped at expert capacity (0 when dropless or dense);
requests that cannot be served at all are counted in ``rejected_requests``.
"""

from __future__ import annotations

import numpy as np

from moesim.engine.serving.batching import RequestBook
from moesim.engine.serving.requests import Requests
from moesim.engine.serving.steady import latency_stats
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
        "tpot_s": tpot,
        "e2e_s": e2e,
        "preemptions": book.preemptions,
        "rejected": book.rejected,
    }


def iteration_table(iterations: np.ndarray, kv_per_engine) -> dict[str, np.ndarray]:
    """Per-iteration columns, sorted by (replica, slot, start_s), with KV utilisation added.

    ``kv_per_engine``: KV tokens an engine holds, one number or one per row (pools differ)."""
    cols = {c: iterations[:, i] for i, c in enumerate(ITERATION_COLUMNS)}
    order = np.lexsort((cols["start_s"], cols["slot"], cols["replica"]))
    out = {c: (v[order].astype(np.int64) if c in _INT_ITER else v[order]) for c, v in cols.items()}
    kv = np.broadcast_to(np.asarray(kv_per_engine, dtype=np.int64), (order.size,))[order]
    out["kv_capacity_tokens"] = kv
    out["kv_utilisation"] = out["kv_tokens"] / np.maximum(kv, 1)
    return out


def spans(it: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Spans of each iteration; stage = replica, ``item`` the pipeline slot (micro-batch in flight).

    A compute span of kind prefill | decode | iteration (mixed), then the iteration's communication
    on its own streams, one after another as the iteration runs them (``tp_allreduce`` on
    ``tp_comm``, ``ep_alltoall`` on ``ep_comm``, ``pp_send`` on ``pp_comm``; the per-layer ops
    summed). With ``pp == 1`` the spans cover the whole iteration; with ``pp > 1`` the micro-batch's
    turn on the first stage (latency / pp), each part scaled alike.
    """
    kind = np.where(it["decode_tokens"] == 0, "prefill",
                    np.where(it["prefill_tokens"] == 0, "decode", "iteration")).astype(object)
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
              imbalance: float = 1.0) -> dict:
    """The flat summary dict (stable keys listed in the module docstring and the README)."""
    hw, dev = s.hardware, s.hardware.device
    served = np.isfinite(req["finish_s"])
    out_tok = float(req["output_tokens"][served].sum())
    in_tok = float(req["prompt_tokens"][served].sum())
    start = float(req["arrival_s"].min()) if req["arrival_s"].size else 0.0
    makespan = float(np.nanmax(req["finish_s"]) - start) if served.any() else 0.0
    per_s = (lambda x: x / makespan) if makespan > 0 else (lambda x: float("nan"))
    devices = hw.n_devices
    cost_usd = devices * dev.usd_per_hour * makespan / 3600.0
    energy_j = devices * dev.power_w * makespan
    mem = memory_report(s)
    dur = it["end_s"] - it["start_s"]
    routed = float(it["routed_slots"].sum())
    n = req["id"].size
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
        "dropped_fraction": float(it["dropped_slots"].sum() / routed) if routed else 0.0,
        "makespan_s": makespan,
        "output_tokens_per_s": per_s(out_tok),
        "input_tokens_per_s": per_s(in_tok),
        "requests_per_s": per_s(float(served.sum())),
        "output_tokens_per_s_per_device": per_s(out_tok) / devices,
    }
    out.update(latency_stats(req))
    out.update({
        "iterations": int(dur.size),
        "mean_batch_seqs": _mean(it["batch_seqs"].astype(float), dur),
        "mean_decode_batch": _mean(it["decode_tokens"].astype(float), dur),
        "kv_utilisation_mean": _mean(it["kv_utilisation"], dur),
        "kv_utilisation_max": float(it["kv_utilisation"].max()) if dur.size else 0.0,
        "tp_comm_fraction": float(it["tp_comm_s"].sum() / dur.sum()) if dur.sum() > 0 else 0.0,
        "alltoall_fraction": float(it["ep_comm_s"].sum() / dur.sum()) if dur.sum() > 0 else 0.0,
        "kv_cache_capacity_tokens": float(kv_cache_capacity_tokens(s)),
        "preemptions": int(req["preemptions"].sum()),
        "preempted_requests": int((req["preemptions"] > 0).sum()),
        "peak_memory_gib": mem.total_gib,
        "memory_capacity_gib": mem.capacity_gib,
        "fits": bool(mem.fits),
        **dict(zip(("fits_reason", "fits_advice"), fit_explanation(s, mem), strict=True)),
        "knee_batch": int(knee),
        "expert_load_imbalance": float(imbalance),
        "energy_j_per_token": energy_j / out_tok if out_tok else float("nan"),
        "run_cost_usd": cost_usd,
        "usd_per_mtok": cost_usd / out_tok * 1e6 if out_tok else float("nan"),
        "usd_per_1k_output_tokens": cost_usd / out_tok * 1e3 if out_tok else float("nan"),
        "usd_per_1k_tokens": cost_usd / (out_tok + in_tok) * 1e3 if out_tok else float("nan"),
    })
    return out


def build_result(s: Scenario, seed: int, reqs: Requests, book: RequestBook, iterations: np.ndarray,
                 kv_per_engine: int, knee: int, imbalance: float = 1.0) -> SimResult:
    """Assemble the SimResult: summary, spans and the ``requests`` / ``iterations`` tables.

    ``imbalance``: the replicas' expected max/mean tokens per EP rank, mean over MoE layers.
    """
    req = request_table(reqs, book, s.plan.pp)
    it = iteration_table(iterations, kv_per_engine)
    summary = summarise(s, req, it, knee, imbalance)
    tables = {"requests": {k: v.tolist() for k, v in req.items()},
              "iterations": {k: v.tolist() for k, v in it.items()}}
    return SimResult("serving", s.name, seed, summary, spans(it), tables)
