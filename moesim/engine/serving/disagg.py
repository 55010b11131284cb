"""Disaggregated serving: a prefill pool, a KV-cache transfer, a decode pool (DistServe, Splitwise,
DeepSeek-V3's deployment). Built from the single-pool engine (``simulate.play_pool``).

Flow of one request (times in seconds, sizes in bytes):

1. it arrives and is prefilled by a replica of the prefill pool (continuous batching over prompts,
   chunked as configured; a cached prefix, ``workload.prefix_cache_hit``, is not recomputed);
2. its KV cache, ``prompt x kv_bytes_per_token`` (the model's layout: MLA latents, GQA heads, the
   KV dtype), goes to the decode pool over the network. The prefill replica's devices each send
   their own KV shard (``pp x`` the TP shards of the KV heads) over their own NIC at
   ``kv_transfer_gbps`` (default ``hardware.cluster.nic_bw_gbps``), one request after another per
   replica: ``transfer = nic_latency + bytes / (shards x bandwidth)``, queued FIFO behind the
   replica's earlier transfers;
3. the decode pool admits it when a replica's KV pool can hold it (prompt + the tokens it will
   generate, as the pool's ``kv_admission`` says) and streams every output token. The first token
   (sampled by the prefill) reaches the user with the KV, so
   ``TTFT = queue + prefill + transfer`` (SGLang/Dynamo disaggregation return every token from the
   decode side).

The pools are independent apart from the hand-off, so they are played one after the other: the
prefill pool over the arrival stream, then the decode pool over the transfers' completion times.
Not modelled: the decode pool pushing back on the prefill pool when it is full (the KV waits on
the prefill side, its memory not charged), contention at the receiving NIC, layer-by-layer
transfer overlapped with the prefill.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from moesim.accounting import GIB, kv_bytes_per_token
from moesim.engine.local_attention import slot_map
from moesim.engine.serving.anatomy import decode_step_keys, decode_step_table
from moesim.engine.serving.batching import RequestBook
from moesim.engine.serving.knee import knee_batch
from moesim.engine.serving.lockstep import lockstep_group
from moesim.engine.serving.metrics import (
    ITERATION_COLUMNS,
    iteration_table,
    request_table,
    spans,
    summarise,
)
from moesim.engine.serving.rejections import mark_rejected, reject_reasons, rejection_keys
from moesim.engine.serving.requests import Requests, sample_requests
from moesim.engine.serving.simulate import (
    PoolRun,
    Progress,
    cached_prefix_tokens,
    play_pool,
    replica_kv_tokens,
    request_limits,
)
from moesim.fit_advice import fit_explanation
from moesim.memory import kv_shards, memory_report
from moesim.precision import scenario_precision
from moesim.results import SimResult
from moesim.schemas import Scenario
from moesim.schemas.scenario import pool_scenario


def kv_transfer_s(ready_s: np.ndarray, sender: np.ndarray, nbytes: np.ndarray, bandwidth_bps: float,
                  latency_s: float) -> tuple[np.ndarray, np.ndarray]:
    """(start, done) seconds of each KV transfer, ``(n,)`` each.

    Transfer ``i`` is ready at ``ready_s[i]`` on link ``sender[i]`` and takes ``latency_s +
    nbytes[i] / bandwidth_bps``; a link sends one transfer at a time, in the order they become
    ready (ties: lower index first).
    """
    n = ready_s.size
    start, done = np.empty(n), np.empty(n)
    free: dict[int, float] = {}
    duration = latency_s + nbytes / bandwidth_bps
    for i in np.lexsort((np.arange(n), ready_s)).tolist():
        link = int(sender[i])
        t0 = max(float(ready_s[i]), free.get(link, 0.0))
        start[i], done[i] = t0, t0 + float(duration[i])
        free[link] = done[i]
    return start, done


def transfer_bandwidth_bps(s: Scenario) -> float:
    """Bytes/s one prefill replica sends KV at: every device holding a distinct KV shard uses its NIC."""
    d = s.workload.disaggregation
    per_device = (d.kv_transfer_gbps or s.hardware.cluster.nic_bw_gbps) * 1e9
    plan = d.prefill.plan
    return per_device * plan.pp * kv_shards(s.model, plan.tp)


def simulate_disaggregated(s: Scenario, seed: int = 0, windows: bool = True, progress: Progress | None = None) -> SimResult:
    """Play ``s``'s request stream through its prefill pool, the KV transfer and its decode pool
    (``progress``: as ``simulate_serving``'s, the prefill pool's requests and then the decode pool's)."""
    w = s.workload
    reqs = sample_requests(w, np.random.default_rng(seed))
    n = len(reqs)
    sp, sd = pool_scenario(s, "prefill"), pool_scenario(s, "decode")
    # the prefill pool runs each prompt up to its first token
    pbook = RequestBook(reqs.prompt_tokens, np.ones(n, np.int64), cached_prefix_tokens(reqs, w))
    slots = slot_map(sd.model, sd.workload.local_attention_mode)  # local layers keeping only their window's KV
    # no decode replica holds it (the decode pool prefills nothing: no prompt budget there)
    decode_limits = replace(request_limits(sd, replica_kv_tokens(sd)), prefill_budget_tokens=None)
    mark_rejected(pbook, reject_reasons(reqs.prompt_tokens, reqs.output_tokens, reqs.prompt_tokens, decode_limits, slots))
    prefill = play_pool(sp, Requests(reqs.arrival_s, reqs.prompt_tokens, np.ones(n, np.int64)), pbook, seed, (0,), windows,
                        progress, "prefill-pool requests")

    served = np.isfinite(pbook.finish_s)
    # the KV the decode pool receives: the local layers' window only when they keep no more
    nbytes = (reqs.prompt_tokens if slots is None else slots(reqs.prompt_tokens)) * kv_bytes_per_token(
        s.model, scenario_precision(s))
    p_replica = np.where(pbook.engine >= 0, pbook.engine // sp.plan.pp, -1)
    sender = pbook.rank  # each rank of a lock-step group sends the KV of the requests it prefilled
    t_start, t_done = kv_transfer_s(np.where(served, pbook.finish_s, np.inf), sender, nbytes,
                                    transfer_bandwidth_bps(s), s.hardware.cluster.nic_latency_us * 1e-6)
    t_done = np.where(served, t_done, np.nan)

    # the decode pool gets the requests with tokens left to generate, in the order their KV lands
    go = served & (reqs.output_tokens > 1)
    ids = np.flatnonzero(go)
    ids = ids[np.argsort(t_done[ids], kind="stable")]
    dreqs = Requests(t_done[ids], reqs.prompt_tokens[ids], reqs.output_tokens[ids])
    dbook = RequestBook(dreqs.prompt_tokens, dreqs.output_tokens, cached_tokens=dreqs.prompt_tokens)
    dbook.generated[:] = 1  # the prefill's token
    dbook.first_token_s[:] = dreqs.arrival_s
    decode = play_pool(sd, dreqs, dbook, seed, (1,), windows, progress, "decode-pool requests")

    book = _merged_book(reqs, pbook, dbook, ids, t_done, p_replica, sp, sd)
    req = request_table(reqs, book, 1)
    req["prefill_replica"] = p_replica
    req["kv_transfer_s"] = np.where(served, t_done - t_start, np.nan)
    req["kv_transfer_wait_s"] = np.where(served, t_start - pbook.finish_s, np.nan)
    iters, kv_rows = _merged_iterations(prefill, decode, _engines(sp))
    it = iteration_table(iters, kv_rows)
    view = sd.model_copy(update={"hardware": s.hardware})  # decode pool's memory, the whole cluster's cost
    # a KV refusal is prompt + output over the decode pool's engine or prompt + 1 over the prefill pool's
    limits = replace(prefill.limits, kv_engine_tokens=min(prefill.limits.kv_engine_tokens, decode_limits.kv_engine_tokens))
    summary = summarise(view, req, it, knee_batch(decode.cost), rejection_keys(book.reject_reason, limits),
                        decode.imbalance)
    summary.update(decode.spec_summary())
    summary.update(pool_summary(s, sp, sd, summary["makespan_s"], req, prefill, decode, nbytes[served].sum()))
    summary.update(_fits(sp, sd, summary, int(reqs.prompt_tokens.max()) if n else 1))
    layers = [run.layer_table(name) for name, run in (("prefill", prefill), ("decode", decode))]
    tables = {"requests": req, "iterations": it,
              "expert_layers": {k: layers[0][k] + layers[1][k] for k in layers[0]}}
    step = decode_step_table(sd, decode.cost, decode.iterations, dreqs.prompt_tokens, dreqs.output_tokens)
    if step is not None:  # the decode pool's iteration
        tables["decode_step"] = step
        summary.update(decode_step_keys(step))
    return SimResult("serving", s.name, seed, summary, spans(it), tables)


def _merged_book(reqs: Requests, pbook: RequestBook, dbook: RequestBook, ids: np.ndarray, t_done: np.ndarray,
                 p_replica: np.ndarray, sp: Scenario, sd: Scenario) -> RequestBook:
    """One book over all requests: first token when the KV lands, finish from the decode pool (or at
    the landing for one-token outputs), replica = the decode replica (numbered after the prefill
    pool's), or the prefill replica for requests that never reached the decode pool."""
    book = RequestBook(reqs.prompt_tokens, reqs.output_tokens)
    book.rejected[:] = pbook.rejected
    book.reject_reason[:] = pbook.reject_reason
    book.admitted_s[:] = pbook.admitted_s  # queueing delay: arrival to the prefill pool's admission
    book.first_token_s[:] = t_done
    book.finish_s[:] = np.where(reqs.output_tokens == 1, t_done, np.nan)
    book.finish_s[ids] = dbook.finish_s
    book.preemptions[:] = pbook.preemptions
    book.preemptions[ids] += dbook.preemptions
    book.engine[:] = p_replica
    book.engine[ids] = np.where(dbook.engine >= 0, _engines(sp) + dbook.engine // sd.plan.pp, -1)
    return book


def _merged_iterations(prefill: PoolRun, decode: PoolRun, prefill_replicas: int) -> tuple[np.ndarray, np.ndarray]:
    """Both pools' iteration records, the decode replicas numbered after the prefill ones, and the
    KV capacity of each row's engine."""
    d = decode.iterations.copy()
    d[:, ITERATION_COLUMNS.index("replica")] += prefill_replicas
    kv = np.r_[np.full(len(prefill.iterations), prefill.kv_per_engine), np.full(len(d), decode.kv_per_engine)]
    return np.vstack([prefill.iterations, d]), kv


def _fits(sp: Scenario, sd: Scenario, summary: dict, longest_prompt: int) -> dict:
    """Both pools must fit: the prefill pool's KV pool must hold the longest prompt, the decode
    pool's (already in ``summary``) the longest request. The reason names the pool."""
    mem = memory_report(sp, serving_kv_tokens=longest_prompt)
    out = {"peak_memory_gib": max(summary["peak_memory_gib"], mem.total_gib)}
    if not summary["fits"]:
        out["fits_reason"] = f"decode pool: {summary['fits_reason']}"
    elif not mem.fits:
        reason, advice = fit_explanation(sp, mem)
        out.update(fits=False, fits_reason=f"prefill pool: {reason}", fits_advice=advice)
    return out


def _busy_s(iters: np.ndarray) -> float:
    """Replica-seconds of a pool's first stages busy (a replica's turns never overlap)."""
    c = ITERATION_COLUMNS
    return float((iters[:, c.index("stage0_end_s")] - iters[:, c.index("start_s")]).sum()) if len(iters) else 0.0


def _engines(pool: Scenario) -> int:
    """Replicas that iterate on their own (a lock-step group counts once)."""
    return pool.plan.dp // lockstep_group(pool)


def central_rate_per_node(iters: np.ndarray, column: str, pool: Scenario, central: float = 0.8) -> float:
    """Tokens/s per node of a pool over the window in which it produced the central ``central``
    share of its ``column`` tokens (10 % to 90 % by default).

    Robust to the ramp-up while the pool fills and to the tail of the last long requests, which a
    finite run has and a production day (DeepSeek's per-node averages) has not; a run at steady
    load gives its steady rate. Iterations are taken whole, by end time.
    """
    if not len(iters):
        return float("nan")
    c = ITERATION_COLUMNS
    end = iters[:, c.index("end_s")]
    order = np.argsort(end, kind="stable")
    tok = iters[order, c.index(column)]
    cum = np.cumsum(tok)
    lo, hi = (1 - central) / 2 * cum[-1], (1 + central) / 2 * cum[-1]
    i, j = int(np.searchsorted(cum, lo)), int(np.searchsorted(cum, hi))
    t0, t1 = end[order][i], end[order][j]
    nodes = pool.plan.n_devices / pool.hardware.node.devices_per_node
    if t1 <= t0:  # one iteration holds the central share: its own duration
        t0 = iters[order[j], c.index("start_s")]
    return float((cum[j] - cum[i]) / ((t1 - t0) * nodes)) if t1 > t0 else float("nan")


def pool_summary(s: Scenario, sp: Scenario, sd: Scenario, makespan: float, req: dict,
                 prefill: PoolRun, decode: PoolRun, kv_bytes: float) -> dict:
    """Per-pool figures: devices, busy fraction over the run's ``makespan`` (s), throughput per node,
    KV transfer; the day's cost."""
    busy_p, busy_d = _busy_s(prefill.iterations), _busy_s(decode.iterations)
    transfer = req["kv_transfer_s"][np.isfinite(req["kv_transfer_s"])]
    dev = s.hardware.device
    return {
        "prefill_devices": sp.hardware.n_devices,
        "decode_devices": sd.hardware.n_devices,
        "prefill_utilisation": busy_p / (_engines(sp) * makespan) if makespan > 0 else 0.0,
        "decode_utilisation": busy_d / (_engines(sd) * makespan) if makespan > 0 else 0.0,
        "prefill_input_tokens_per_s_per_node": central_rate_per_node(prefill.iterations, "prefill_tokens", sp)
        / (1.0 - s.workload.prefix_cache_hit),  # cached prompt tokens count as input, as DeepSeek counts them
        "decode_output_tokens_per_s_per_node": central_rate_per_node(decode.iterations, "decode_tokens", sd),
        "kv_transfer_mean_s": float(transfer.mean()) if transfer.size else float("nan"),
        "kv_transfer_p99_s": float(np.percentile(transfer, 99)) if transfer.size else float("nan"),
        "kv_transfer_gib": float(kv_bytes / GIB),
        "replicas": sp.plan.dp + sd.plan.dp,
        "usd_per_day": s.hardware.n_devices * dev.usd_per_hour * 24.0,
    }
