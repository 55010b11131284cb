"""From simulated training steps to spans, the step-time breakdown and the summary. Pure numpy.

Breakdown (seconds per step, mean over pipeline stages and steps); on every stage
``compute_s + alltoall_exposed_s + tp_comm_s + cp_comm_s + pp_comm_s + bubble_s (+ zero_gather_exposed_s
under ZeRO-3) = pipeline_s`` and ``step_time_s = pipeline_s + dp_sync_exposed_s + optimizer_s
(+ zero_gather_exposed_s under ZeRO-1/2)``:
- ``compute_s``: GEMMs, attention, experts, norms, recompute, embedding and head; ``compute_<part>_s`` split it
  by what the ops do (``anatomy.py``, whose ``train_step`` table lists every part of the step);
- ``alltoall_s`` / ``tp_comm_s``: EP all-to-alls / TP all-reduces (they block the compute stream),
  including those full recompute re-runs in backward;
- ``cp_comm_s``: context parallelism's ring attention exchange (``engine/cp.py``) that the attention
  compute does not hide, recompute's re-run included (0 when ``plan.cp`` is 1); the whole ring is
  recorded as ``cp_ring_*`` spans on the ``cp_comm`` stream;
- ``alltoall_exposed_s``: the part of ``alltoall_s`` on the critical path, i.e. while the compute
  stream waits for it: all of it unless ``plan.overlap_alltoall`` hides some behind another
  microbatch's compute (``timeline.combine_units``; full recompute's re-run stays exposed);
- ``pp_comm_s``: the part of a stage's waits caused by pipeline transfers in flight;
- ``bubble_s``: the rest of the idle time until the last stage finishes its backward;
- ``dp_sync_exposed_s``: gradient sync still running after the last backward;
- ``optimizer_s``: the optimizer update after the sync;
- ``zero_gather_s`` / ``zero_gather_exposed_s``: ZeRO parameter all-gathers (``zero.py``), all of
  them / the part compute cannot hide (ZeRO-3: waits before layers inside the pipeline; ZeRO-1/2:
  after the optimizer, what the next step's first forward cannot hide);
- ``straggler_wait_s``: of ``compute_s + alltoall_s``, the time spent waiting for the busiest EP
  rank (dropless routing); ``excess_bubble_s``: ``bubble_s`` beyond the equal-stage formula
  (uneven stages, stragglers), floored at 0 (time lost to transfers is in ``pp_comm_s``).
- ``host_wait_s``: of ``compute_s``, the time the GPU waits for the host to issue an MoE layer's
  kernels (``plan.moe_layer_host_us``, ``costmodel/train_host.py``).
- ``expert_load_imbalance``: max over mean tokens the EP ranks compute per MoE layer and
  microbatch (``RoutingSample.rank_tokens``, after EPLB's replicas if any), averaged; 1 without
  routed experts. Per layer: the ``layers`` table's ``rank_imbalance``.
"""

from __future__ import annotations

import math

import numpy as np

from moesim.costmodel import CostModel
from moesim.engine.training.anatomy import (
    COMPUTE_PARTS,
    compute_part_key,
    compute_parts_s,
    train_step_table,
)
from moesim.engine.training.schedules import schedule_for
from moesim.engine.training.timeline import add_unit_spans
from moesim.engine.training.zero import gather_wait_s
from moesim.finetune import step_flops_per_token, trainable_summary
from moesim.fit_advice import fit_explanation
from moesim.memory import memory_report
from moesim.packing import micro_batch_seqs, real_token_fraction, row_tokens
from moesim.precision import scenario_precision, summary_fields
from moesim.results import SpanRecorder
from moesim.schemas import Scenario

_DP_GROUP = {"dp_sync_dense": "dp", "dp_sync_expert": "expert_dp"}

#: Idle time below this fraction of the pipeline is float residue, not a bubble.
_RESIDUE = 1e-9


def step_times(step, pp: int) -> dict[str, np.ndarray | float]:
    """Timeline landmarks of one step: pipeline end, per-stage compute/sync ends, step end (s)."""
    run = step.run
    C = run.end_s.shape[0]
    stage_of = step.schedule.stage_of(np.arange(C), pp)
    compute_end = np.array([max(run.end_s[stage_of == st].max(), run.tails.get(st, (0.0, 0.0))[1])
                            for st in range(pp)])
    dp_end = np.zeros(pp)
    for st, _c, _j, _t0, t1 in run.dp_syncs:
        dp_end[st] = max(dp_end[st], t1)
    sync_end = np.maximum(compute_end, dp_end)
    pipeline = float(compute_end.max())
    synced = float(sync_end.max())
    optimized = float((sync_end + step.optimizer_s).max())
    step_end = float((sync_end + step.optimizer_s + step.gather_exposed_after_step_s).max())
    return {"pipeline": pipeline, "synced": synced, "optimized": optimized, "end": step_end, "sync_end": sync_end,
            "dp_total": np.array([sum(t1 - t0 for st2, _c, _j, t0, t1 in run.dp_syncs if st2 == st)
                                  for st in range(pp)])}


def record_step(rec: SpanRecorder, step, pp: int, offset_s: float) -> float:
    """Add every span of ``step`` (shifted by ``offset_s``) to ``rec``; return the step's end time."""
    run = step.run
    op_end = step.op_end_s or {}
    for c, (fwd, bwd) in enumerate(step.tables):
        st = step.schedule.stage_of(c, pp)
        for b, table in enumerate((fwd, bwd)):
            ends = None
            rows = [i for i in range(table.dur_s.shape[0]) if (c, i, b) in op_end]
            if rows:  # ops of combined units end where their pair put them
                ends = np.cumsum(table.dur_s, axis=1)
                for i in rows:
                    ends[i] = op_end[(c, i, b)]
            add_unit_spans(rec, table, st, run.start_s[c, :, b], backward=bool(b), offset_s=offset_s,
                           op_end_s=ends, a2a_stream=step.a2a_stream)
    if run.sends:
        st, c, i, b, t0, t1 = (np.array(col) for col in zip(*run.sends))
        kinds = np.where(b == 1, "pp_send_bwd", "pp_send_fwd").astype(object)
        rec.add(kinds, st, "comm", t0 + offset_s, t1 + offset_s, item=i, bytes=step.costs.p2p_bytes,
                tokens=float(step.costs.tokens_per_microbatch), rank_group="pp")
    for st, c, j, t0, t1 in run.dp_syncs:
        table = step.tables[c][1]
        kind = table.dp_kinds[j]
        rec.add(kind, st, "dp_comm", t0 + offset_s, t1 + offset_s, layer=int(table.dp_layers[j]),
                bytes=float(table.dp_bytes[j]), rank_group=_DP_GROUP[kind])
    _record_cp_ring(rec, step, pp, offset_s)
    for st, (t0, t1) in run.tails.items():  # the held head weight gradients (plan.defer_head_wgrad)
        rec.add("lm_head_wgrad_deferred", st, "compute", t0 + offset_s, t1 + offset_s, layer=-1)
    times = step_times(step, pp)
    starts = times["sync_end"] + offset_s
    rec.add("optimizer", np.arange(pp), "compute", starts, starts + step.optimizer_s)
    gathers = step.gather_after_step_s > 0
    if gathers.any():  # ZeRO-1/2: runs on into the next step's first forward when overlapped
        g0 = (starts + step.optimizer_s)[gathers]
        rec.add("zero_gather", np.arange(pp)[gathers], "zero_gather", g0, g0 + step.gather_after_step_s[gathers],
                rank_group="dp")
    return offset_s + times["end"]


def _record_cp_ring(rec: SpanRecorder, step, pp: int, offset_s: float) -> None:
    """Spans of the ring attention's transfers (``plan.cp`` > 1) on the ``cp_comm`` stream: one per
    attention op (and per recompute op that re-runs the ring), from the op's start for the whole
    ring (``LayerCosts.cp_ring_s``). The op lasts at least that long (its core attention is ``cp``
    blocks of at least a step each, or the steps' exposed rest), so the spans of a stage never overlap."""
    costs = step.costs
    (ring_f, ring_b), (bytes_f, bytes_b) = costs.cp_ring_s, costs.cp_ring_bytes
    if ring_f <= 0:
        return
    op_end = step.op_end_s or {}
    T = float(costs.tokens_per_microbatch)
    for c, (fwd, bwd) in enumerate(step.tables):
        st = step.schedule.stage_of(c, pp)
        for b, table in enumerate((fwd, bwd)):
            ends = np.cumsum(table.dur_s, axis=1)
            for i in range(ends.shape[0]):
                if (c, i, b) in op_end:
                    ends[i] = op_end[(c, i, b)]
            starts = step.run.start_s[c, :, b][:, None] + ends - table.dur_s + offset_s
            kinds = np.asarray(table.kinds).astype(str)
            runs = [("attention", ring_b if b else ring_f, bytes_b if b else bytes_f, "cp_ring_bwd" if b else "cp_ring_fwd")]
            if b and costs.cp_exposed_s[2] > 0:
                runs.append(("recompute", ring_f, bytes_f, "cp_ring_fwd"))
            for kind, dur, nbytes, name in runs:
                cols = np.flatnonzero(kinds == kind)
                played = table.dur_s[:, cols] > 0
                if not played.any():
                    continue
                M = played.shape[0]
                t0 = starts[:, cols][played]
                rec.add(name, st, "cp_comm", t0, t0 + dur, layer=np.broadcast_to(table.layers[cols], (M, len(cols)))[played],
                        item=np.broadcast_to(np.arange(M)[:, None], (M, len(cols)))[played], bytes=nbytes, tokens=T,
                        rank_group="cp")


def _played(table, kind: str) -> int:
    """How many (microbatch, op) entries of ``kind`` a table plays (ops of 0 s are not played)."""
    return int((table.dur_s[:, np.asarray(table.kinds).astype(str) == kind] > 0).sum())


def _cp_exposed(step, pp: int) -> tuple[np.ndarray, np.ndarray]:
    """Seconds of exposed ring attention per stage, inside (the attention ops, the recompute ops)."""
    f, b, rc = step.costs.cp_exposed_s
    attn, rec = np.zeros(pp), np.zeros(pp)
    for c, (fwd, bwd) in enumerate(step.tables):
        st = step.schedule.stage_of(c, pp)
        attn[st] += _played(fwd, "attention") * f + _played(bwd, "attention") * b
        rec[st] += _played(bwd, "recompute") * rc
    return attn, rec


def step_breakdown(step, pp: int) -> dict[str, float]:
    """Seconds per category for one step, mean over stages (see the module docstring)."""
    times = step_times(step, pp)
    pipeline = times["pipeline"]
    busy = {"compute": np.zeros(pp), "alltoall": np.zeros(pp), "tp_comm": np.zeros(pp), "zero_gather": np.zeros(pp)}
    straggler = np.zeros(pp)
    host_wait = np.zeros(pp)
    exposed = np.zeros(pp)
    for c, (fwd, bwd) in enumerate(step.tables):
        st = step.schedule.stage_of(c, pp)
        for table in (fwd, bwd):
            for key, val in table.category_s().items():
                busy[key][st] += val
            wait = float(gather_wait_s(table).sum())  # ZeRO-3 waits, booked as compute by their kind
            busy["compute"][st] -= wait
            busy["zero_gather"][st] += wait
            straggler[st] += table.straggler_s.sum()
            host_wait[st] += 0.0 if table.host_wait_s is None else table.host_wait_s.sum()
        exposed[st] += step.run.pp_exposed_s[c].sum()
    for st, (t0, t1) in step.run.tails.items():  # held head weight gradients, run after the stage's last unit
        busy["compute"][st] += t1 - t0
    # Recompute (full; the moe/mlp modules) re-runs collectives inside its (compute) slot: book them as such.
    a2a, tp = step.recompute_comm_s[:, 0], step.recompute_comm_s[:, 1]
    busy["compute"] -= a2a + tp
    busy["alltoall"] += a2a
    busy["tp_comm"] += tp
    cp_parts = (np.zeros(pp), np.zeros(pp))
    if any(step.costs.cp_exposed_s):  # the ring's exposed part sits in attention ops: not compute
        cp_parts = _cp_exposed(step, pp)
    cp = cp_parts[0] + cp_parts[1]
    busy["compute"] -= cp
    busy["cp_comm"] = cp
    parts = compute_parts_s(step, pp, step.run.tails, step.recompute_comm_s, cp_parts, host_wait)
    hidden = np.zeros(pp) if step.alltoall_hidden_s is None else step.alltoall_hidden_s
    # Hidden all-to-all ran while the compute stream was busy: it is not part of the stage's time.
    idle = pipeline - sum(busy.values()) + hidden - exposed
    # float residue of the subtraction (about 1e-16 of the step, either sign) is no bubble: a pp-1 step has none
    idle = np.where(idle > _RESIDUE * pipeline, idle, 0.0)
    return {
        "pipeline_s": pipeline,
        "compute_s": float(busy["compute"].mean()),
        "alltoall_s": float(busy["alltoall"].mean()),
        "alltoall_exposed_s": float(np.maximum(busy["alltoall"] - hidden, 0.0).mean()),  # clip float noise
        "tp_comm_s": float(busy["tp_comm"].mean()),
        "cp_comm_s": float(cp.mean()),
        "pp_comm_s": float(exposed.mean()),
        "bubble_s": float(idle.mean()),
        "dp_sync_s": float(times["dp_total"].mean()),
        "dp_sync_exposed_s": times["synced"] - pipeline,
        "optimizer_s": times["optimized"] - times["synced"],
        "straggler_wait_s": float(straggler.mean()),
        "host_wait_s": float(host_wait.mean()),
        "zero_gather_s": float(step.gather_s.mean()),
        "zero_gather_exposed_s": float(busy["zero_gather"].mean()) + times["end"] - times["optimized"],
        "step_time_s": times["end"],
        **{f"part.{k}": float(v.mean()) for k, v in parts.items()},  # compute by what it does (anatomy.py)
    }


def _alltoall_bytes(step, pp: int) -> float:
    """All-to-all bytes one device sends per step (mean over stages), forward and backward."""
    total = 0.0
    for fwd, bwd in step.tables:
        for t in (fwd, bwd):
            is_a2a = np.array([k.startswith("alltoall") for k in t.kinds], dtype=bool)
            total += float(t.nbytes[:, is_a2a].sum())
    return total / pp


def summarize(s: Scenario, cm: CostModel, steps: list) -> tuple[dict, dict[str, list], dict[str, list]]:
    """The flat summary (stable keys first), the per-layer routing table and the step's parts
    (``anatomy.train_step_table``)."""
    m, plan, w, hw = s.model, s.plan, s.workload, s.hardware
    pp = plan.pp
    parts = [step_breakdown(st, pp) for st in steps]
    mean = {k: float(np.mean([p[k] for p in parts])) for k in parts[0]}
    step_time = mean["step_time_s"]
    devices = plan.n_devices
    seqs = micro_batch_seqs(w, plan)
    tokens_per_step = w.global_batch_seqs * row_tokens(w, seqs, plan.cp)  # computed (seq_len rows unless padded to the longest)
    real = real_token_fraction(w, seqs, plan.cp)
    if real < 1.0:  # padded samples: the step computes padded rows but trains only their real tokens
        tokens_per_step = tokens_per_step * real
    tokens_per_s = tokens_per_step / step_time
    per_token = step_flops_per_token(m, w.trainable, w.seq_len, mtp_layers=w.mtp_layers)  # frozen: no weight gradients
    model_flops = per_token * tokens_per_s
    # MFU against the dense bf16 peak for every dtype (Megatron / NeMo; the device's 16-bit peak
    # where it has no bf16), and against the compute dtype's own peak.
    peak = hw.device.peak_flops("bf16")
    dtype_peak = hw.device.peak_flops(scenario_precision(s).compute_dtype)
    usd_per_hour = devices * hw.device.usd_per_hour
    usd_per_step = usd_per_hour * step_time / 3600
    run_s = w.total_tokens / tokens_per_s if w.total_tokens else math.nan
    mem = memory_report(s)
    routed = sum(float(st.routing.loads.sum()) for st in steps if st.routing is not None)
    dropped = sum(float(st.routing.dropped.sum()) for st in steps if st.routing is not None)
    padding = sum(float(st.routing.padding.sum()) for st in steps if st.routing is not None)
    slots = sum(float(st.routing.capacity * st.routing.loads[..., 0].size * m.n_experts)
                for st in steps if st.routing is not None and st.routing.padded)
    a2a = float(np.mean([_alltoall_bytes(st, pp) for st in steps]))
    nvlink, nic = cm.alltoall_split(a2a, plan.ep, plan.expert_tp, plan.alltoall, m.top_k, m.n_experts,
                                    s.routing.max_nodes_per_token)
    analytic = schedule_for(plan).bubble_fraction(pp, plan.microbatches, plan.virtual_stages)
    summary = {
        "step_time_s": step_time,
        "tokens_per_s": tokens_per_s,
        "mfu": model_flops / (devices * peak),
        **summary_fields(s),  # compute_dtype, weight_bytes_per_param, precision_note
        "mfu_dtype_peak": model_flops / (devices * dtype_peak),
        "bubble_fraction": mean["bubble_s"] / mean["pipeline_s"],
        "dropped_fraction": dropped / routed if routed else 0.0,
        "peak_memory_gib": mem.total_gib,
        "peak_reserved_gib": mem.reserved_gib,
        "peak_device_gib": mem.reserved_gib + mem.held_gib,
        "memory_capacity_gib": mem.capacity_gib,
        "fits": bool(mem.fits),
        **dict(zip(("fits_reason", "fits_advice"), fit_explanation(s, mem), strict=True)),
        "usd_per_mtok": usd_per_step / tokens_per_step * 1e6,
        "usd_per_device_hour": float(hw.device.usd_per_hour),  # the price every $ figure rests on, in sight
        # device-hours per 1e12 tokens: what DeepSeek-V3's report quotes (180K H800 GPU-hours)
        "gpu_hours_per_trillion_tokens": devices * step_time / tokens_per_step * 1e12 / 3600,
        "run_tokens": float(w.total_tokens) if w.total_tokens else math.nan,
        "run_time_days": run_s / 86400,
        "run_cost_usd": usd_per_hour * run_s / 3600,
        "analytic_bubble_fraction": analytic,
        "excess_bubble_s": max(0.0, mean["bubble_s"] - analytic * mean["pipeline_s"]),
        "usd_per_step": usd_per_step,
        "padding_waste_fraction": padding / slots if slots else 0.0,
        "tokens_per_step": tokens_per_step,
        "tokens_per_s_per_device": tokens_per_s / devices,
        "model_tflops_per_device": model_flops / devices / 1e12,
        "devices": devices,
        "steps": len(steps),
        "alltoall_nvlink_bytes": nvlink,
        "alltoall_nic_bytes": nic,
        "expert_load_imbalance": _load_imbalance(steps),
    }
    if w.sample_tokens is not None:  # variable-length samples only
        summary["sequence_padding_fraction"] = 1.0 - real
    summary.update(trainable_summary(m, w.trainable))  # fine-tuning only
    for key in ("compute_s", "alltoall_s", "alltoall_exposed_s", "tp_comm_s", "cp_comm_s", "pp_comm_s", "dp_sync_exposed_s", "bubble_s",
                "straggler_wait_s", "host_wait_s", "optimizer_s", "dp_sync_s", "zero_gather_s", "zero_gather_exposed_s",
                "pipeline_s"):
        summary[key] = mean[key]
    for part in COMPUTE_PARTS:  # compute_s by what the ops do (anatomy.py; the train_step table's compute rows)
        summary[compute_part_key(part)] = mean[f"part.{part}"]
    # what a profile of one steady-state stretch shows: a stage's work per micro-batch, idle time left out
    summary["microbatch_busy_s"] = (mean["pipeline_s"] - mean["bubble_s"]) / plan.microbatches
    step_table = train_step_table(mean, plan.microbatches, int(steps[0].costs.tokens_per_microbatch))
    return summary, _layer_table(s, steps), step_table


def _load_imbalance(steps: list) -> float:
    """Max/mean tokens per EP rank, mean over MoE layers, microbatches and steps (1 if no routing)."""
    vals = []
    for st in steps:
        if st.routing is not None:
            rt = st.routing.rank_tokens
            vals.append(float((rt.max(axis=-1) / np.maximum(rt.mean(axis=-1), 1e-12)).mean()))
    return float(np.mean(vals)) if vals else 1.0


def _layer_table(s: Scenario, steps: list) -> dict[str, list]:
    """Per-layer routing stats, averaged over microbatches and steps (MoE layers only)."""
    moe_ids = [i for i in range(s.model.n_layers) if s.model.is_moe_layer(i)]
    tables = [st.routing.layer_table(moe_ids) for st in steps if st.routing is not None]
    if not tables:
        return {"layer": [], "routed": [], "kept": [], "dropped": [], "padding": []}
    out = {}
    for key in tables[0]:
        cols = np.array([t[key] for t in tables], dtype=float)
        out[key] = [int(x) for x in cols[0]] if key in ("layer", "capacity") else cols.mean(axis=0).tolist()
    return out
