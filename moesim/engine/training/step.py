"""The training engine: one (or N) optimizer steps of one data-parallel replica, played in SimPy.

Per pipeline stage three streams run:
- ``compute``: a SimPy process walking the stage's schedule; each unit (a microbatch through a
  chunk, forward or backward) is one event whose duration is the sum of its ops (layer_costs).
  The layer's TP all-reduces and EP all-to-alls block the compute stream (as in Megatron, where
  they run on the main stream), so they are part of the unit.
- ``comm``: pipeline sends, one FIFO queue per stage; the receiver's unit waits for the arrival.
- ``dp_comm``: gradient all-reduces (dense params over dp, expert params over expert-DP), one FIFO
  queue per stage, each layer's piece ready when its backward finishes in the chunk's last
  microbatch (``overlap_dp_comm``) or all at the end of the stage's backward (no overlap).
  ZeRO (``zero.py``): reduce-scatters instead (every microbatch from stage 2), the parameter
  all-gather after the optimizer (stages 1-2, its own ``zero_gather`` stream) or before every
  layer's forward and backward (stage 3, the unexposed part as ``zero_gather`` waits in the unit).
The other replicas only enter through the collectives' group sizes, so simulating costs the same
for any ``dp``.

``plan.overlap_alltoall`` (Megatron-core's combined 1F1B, ``--overlap-moe-expert-parallel-comm``):
each stage's order gets one more warm-up forward, and every steady-state forward is played
together with the backward that follows it (another microbatch) as one combined unit
(:func:`combined_orders`). Inside it the two op chains share the ``compute`` and ``ep_comm``
streams (``timeline.combine_units``): the forward's dispatch/combine run while the backward
computes and vice versa, so each pair exposes only the all-to-all its partner cannot cover.
A combined unit starts when both inputs have arrived; each part's output is sent when that part
is done.

Schedules that split the backward (``Schedule.splits_backward``: ZB-H1, DualPipe) price each
backward as ``B`` (input gradients: sent on when done) and ``W`` (weight gradients, from
``wgrad.wgrad_costs``; a layer's gradient-sync piece is ready when its ``W`` is) and play each
as its order says: a ``W`` unit later, or both together as a whole backward. DualPipe's orders
hold (forward, backward) pairs of their own (its "F&B" chunks): they are combined units as above,
whatever ``plan.overlap_alltoall``; each of its chunks carries one direction's microbatches
(``Schedule.path``), the others cost nothing there.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial

import numpy as np
import simpy

from moesim.costmodel import CostModel, build_cost_model
from moesim.costmodel.comm import overlap_slowdown
from moesim.engine.expert_tp import routing_group_tokens
from moesim.engine.routing import RoutingSample, sample_routing
from moesim.engine.training import zero
from moesim.engine.training.deferred_head import defer_head_wgrad, held_limit
from moesim.engine.training.layer_costs import (
    CATEGORY,
    FWD_SLOTS,
    LayerCosts,
    adam_step_bytes,
    layer_costs,
)
from moesim.engine.training.pipeline import combined_orders
from moesim.engine.training.schedules import (
    DEFAULT_LAYOUT,
    Entry,
    Schedule,
    Unit,
    schedule_for,
    units_of,
)
from moesim.engine.training.summary import record_step, summarize
from moesim.engine.training.timeline import (
    Combined,
    OpTable,
    a2a_mask,
    chunk_tables,
    combine_units,
    dp_ready_offsets,
    split_op_end_s,
    wgrad_mask,
)
from moesim.engine.training.wgrad import wgrad_costs
from moesim.packing import rank_tokens
from moesim.results import SimResult, SpanRecorder
from moesim.schemas import Scenario

#: Forward slots of the EP all-to-alls (dispatch, combine).
_A2A_SLOTS = np.array([CATEGORY.get(k) == "alltoall" for k in FWD_SLOTS])


@dataclass(frozen=True)
class PipelineRun:
    """When every unit ran. ``[C, M, K]`` arrays are indexed (global chunk, microbatch, ``Unit.slot``):
    forward, backward (or its ``B``) and, when the backward is split (``K = 3``), its ``W``."""

    start_s: np.ndarray
    end_s: np.ndarray
    pp_exposed_s: np.ndarray  # part of the wait before a unit that its input transfer caused
    sends: list[tuple]  # (stage, chunk, microbatch, backward, start_s, end_s)
    dp_syncs: list[tuple]  # (stage, chunk, piece, start_s, end_s)
    tails: dict[int, tuple[float, float]] = field(default_factory=dict)  # stage -> (start_s, end_s) of its tail


def run_pipeline(orders: list[list[Entry]], unit_s: np.ndarray, send_s: np.ndarray,
                 dp_ready_s: list[np.ndarray] | None = None, dp_s: list[np.ndarray] | None = None,
                 overlap_dp: bool = True, dp_every_microbatch: bool = False,
                 layout: Schedule = DEFAULT_LAYOUT,
                 combined: dict[tuple[int, int, int, int], tuple[Combined, np.ndarray]] | None = None,
                 dp_ready_w_s: list[np.ndarray] | None = None, tail_s: np.ndarray | None = None) -> PipelineRun:
    """Play the per-stage ``orders`` in SimPy; ``layout`` says which stage holds which chunk and
    which chunks each microbatch passes (``layout.path``).

    ``unit_s [C, M, K]``: seconds of each unit (C global chunks; K = 2: forward, backward; K = 3:
    forward, ``B``, ``W``, a whole backward costing ``B + W``). ``send_s [C, 2]``:
    seconds to send chunk ``c``'s output forward (to ``c+1``) / its input gradient backward (to
    ``c-1``); no send when both chunks sit on one stage. ``dp_ready_s[c] [M, n]`` / ``dp_s[c] [n]``:
    when, after the start of chunk ``c``'s last backward unit, each gradient-sync piece is ready,
    and how long it takes. ``dp_every_microbatch`` (ZeRO-2/3): the pieces are synced after every
    microbatch's backward, not only the last. ``dp_ready_w_s[c] [M, n]``: the same after the start
    of a ``W`` unit (the pieces are ready as the weight gradients are). ``tail_s [pp]``: seconds each stage
    computes after its last unit, before a non-overlapped gradient sync (``deferred_head``: the held head
    weight gradients).

    An entry of an order may be a (forward, backward) pair of units played as one combined unit
    (:func:`combined_orders`); ``combined[(c_fwd, i_fwd, c_bwd, i_bwd)]`` (global chunks,
    microbatches) holds its timing (``timeline.Combined``) and, after its start, when each
    gradient-sync piece of its backward part is ready. Raises ``RuntimeError`` when the orders
    leave units unplayed (a deadlock).
    """
    pp = len(orders)
    C, M, K = unit_s.shape
    paths = [layout.path(i, pp, M, C // (pp * layout.chunks_per_stage)) for i in range(M)]
    env = simpy.Environment()
    start = np.zeros((C, M, K))
    end = np.zeros((C, M, K))
    exposed = np.zeros((C, M, K))
    arrivals: dict[tuple[int, int, int], simpy.Event] = {}
    for c in range(C):
        for b, src in ((0, c - 1), (1, c + 1)):
            if 0 <= src < C and layout.stage_of(src, pp) != layout.stage_of(c, pp):
                for i in range(M):
                    arrivals[(c, i, b)] = env.event()
    last_bwd = {}  # chunk -> microbatch of its last unit computing weight gradients
    for s, order in enumerate(orders):
        for entry in order:
            for u in units_of(entry):
                if u.backward and u.part != "B":
                    last_bwd[layout.global_chunk(s, u.chunk, pp)] = u.microbatch
    p2p_free = [0.0] * pp
    dp_free = [0.0] * pp
    sends: list[tuple] = []
    dp_syncs: list[tuple] = []
    uses_dp = dp_s is not None

    def deliver(ev: simpy.Event, value: tuple, _trigger: simpy.Event) -> None:
        ev.succeed(value)

    def queue_dp(s: int, c: int, ready: np.ndarray) -> None:
        for j, d in enumerate(dp_s[c]):
            if d <= 0:
                continue  # no peers to sync with (e.g. expert params when ep == dp)
            st = max(float(ready[j]), dp_free[s])
            dp_free[s] = st + float(d)
            dp_syncs.append((s, c, j, st, dp_free[s]))

    def send(s: int, c: int, i: int, b: int, t_done: float) -> None:
        dst = c - 1 if b else c + 1
        if paths[i][0] <= dst <= paths[i][1] and layout.stage_of(dst, pp) != s:
            st = max(t_done, p2p_free[s])
            p2p_free[s] = st + float(send_s[c, b])
            sends.append((s, c, i, b, st, p2p_free[s]))
            env.timeout(p2p_free[s] - env.now).callbacks.append(
                partial(deliver, arrivals[(dst, i, b)], (t_done, p2p_free[s])))

    def stage(s: int):
        deferred = []
        for entry in orders[s]:
            if isinstance(entry, Unit):
                u = entry
                c, i, b = layout.global_chunk(s, u.chunk, pp), u.microbatch, u.slot
                t_free = env.now
                ev = arrivals.get((c, i, b))
                if ev is not None:
                    yield ev
                    producer_end, arrival = ev.value
                    exposed[c, i, b] = max(0.0, arrival - max(t_free, producer_end))
                t0 = env.now
                start[c, i, b] = t0
                if b and u.part != "B" and uses_dp and (dp_every_microbatch or last_bwd[c] == i):
                    if overlap_dp:
                        queue_dp(s, c, t0 + (dp_ready_w_s if u.part == "W" else dp_ready_s)[c][i])
                    else:
                        deferred.append(c)
                yield env.timeout(unit_s[c, i, 1] + unit_s[c, i, 2] if K == 3 and u.kind == "BW" else unit_s[c, i, b])
                t1 = env.now
                end[c, i, b] = t1
                played[0] += 1
                if u.part != "W":
                    send(s, c, i, b, t1)
                continue
            # A combined (forward, backward) pair: starts once both inputs are in.
            keys = [(layout.global_chunk(s, u.chunk, pp), u.microbatch, u.slot) for u in entry]
            t_free = env.now
            got = []
            for key in keys:
                ev = arrivals.get(key)
                if ev is not None:
                    yield ev
                    got.append((key, *ev.value))
            t0 = env.now
            if got:  # the wait the transfers caused: start with them - start were they instant
                late = max(got, key=lambda g: g[2])[0]
                exposed[late] = max(0.0, t0 - max([t_free] + [g[1] for g in got]))
            (cf, i_f, _), (cb, i_b, _) = keys
            comb, dp_ready = combined[(cf, i_f, cb, i_b)]
            for key, part_end in zip(keys, comb.end_s):
                start[key] = t0
                end[key] = t0 + part_end
            if uses_dp and (dp_every_microbatch or last_bwd[cb] == i_b):
                if overlap_dp:
                    queue_dp(s, cb, t0 + dp_ready)
                else:
                    deferred.append(cb)
            for key, part_end in sorted(zip(keys, comb.end_s), key=lambda kv: kv[1]):
                send(s, *key, t0 + part_end)
            played[0] += 2
            yield env.timeout(comb.makespan_s)
        if tail_s is not None and tail_s[s] > 0:  # after the stage's last unit, before its non-overlapped syncs
            t_tail = env.now
            yield env.timeout(float(tail_s[s]))
            tails[s] = (t_tail, env.now)
        for c in deferred:
            queue_dp(s, c, np.full(len(dp_s[c]), env.now))

    played = [0]
    tails: dict[int, tuple[float, float]] = {}
    for s in range(pp):
        env.process(stage(s))
    env.run()
    total = sum(len(units_of(e)) for order in orders for e in order)
    if played[0] != total:
        raise RuntimeError(f"pipeline orders deadlock: {played[0]} of {total} units played")
    return PipelineRun(start, end, exposed, sends, dp_syncs, tails)


def chunk_send_s(cm: CostModel, s: Scenario, nbytes: float) -> np.ndarray:
    """Seconds of one pipeline send of each global chunk: ``[C, 2]``, its output to the stage of
    chunk ``c + 1`` and its input gradient to the stage of chunk ``c - 1`` (0 where there is no
    such chunk). A send stays on NVLink when both stages' devices share a node (:func:`p2p_send_s`).
    """
    plan, per_node = s.plan, s.hardware.node.devices_per_node
    sched = schedule_for(plan)
    C = sched.chunks(plan.pp, plan.virtual_stages)
    node = sched.stage_of(np.arange(C), plan.pp) * (plan.dp * plan.tp) // per_node
    price = {}
    out = np.zeros((C, 2))
    for c in range(C):
        for b, d in ((0, c + 1), (1, c - 1)):
            if 0 <= d < C:
                intra = bool(node[c] == node[d])
                if intra not in price:
                    price[intra] = float(cm.p2p_s(nbytes, intra=intra))
                out[c, b] = price[intra]
    return out


def p2p_send_s(cm: CostModel, s: Scenario, nbytes: float) -> np.ndarray:
    """Seconds of one pipeline send from each stage to the next: ``[pp]``. Stage ``st`` holds chunk
    ``st`` and sends to the stage holding chunk ``st + 1`` (stage pp-1 wraps to 0).

    Ranks are laid out tp fastest, then dp, then pp, so stage ``s``'s first device is rank
    ``s * dp * tp``; a send stays on NVLink when both stages' devices share a node.
    """
    plan, per_node = s.plan, s.hardware.node.devices_per_node
    stride = plan.dp * plan.tp * plan.cp  # stage s starts at rank s * dp * tp * cp (Megatron's order)
    stage_of = schedule_for(plan).stage_of
    node = lambda c: stage_of(c, plan.pp) * stride // per_node
    return np.array([float(cm.p2p_s(nbytes, intra=node(st) == node(st + 1))) for st in range(plan.pp)])


@dataclass
class StepResult:
    """One simulated step: its tables, timeline and the totals the summary needs."""

    tables: list[tuple[OpTable, OpTable]]  # per global chunk
    run: PipelineRun
    costs: LayerCosts
    routing: RoutingSample | None
    optimizer_s: np.ndarray  # [pp]
    gather_s: np.ndarray  # [pp] ZeRO parameter all-gathers of the step, hidden or not
    gather_after_step_s: np.ndarray  # [pp] ZeRO-1/2: the gather after the optimizer (its span)
    gather_exposed_after_step_s: np.ndarray  # [pp] ZeRO-1/2: what of it the next forward cannot hide
    recompute_comm_s: np.ndarray  # [pp, 2] (all-to-all, TP) seconds inside recompute's re-run (full; moe/mlp modules)
    schedule: Schedule  # whose layout maps global chunks to stages
    alltoall_hidden_s: np.ndarray | None = None  # [pp] all-to-all seconds combined units hid behind compute
    op_end_s: dict[tuple[int, int, int], np.ndarray] | None = None  # (chunk, microbatch, bwd): op ends in its combined unit
    a2a_stream: str = "compute"  # the stream the all-to-all spans occupy ("ep_comm" when pairs overlap them)


def recompute_comm_s(costs: LayerCosts, layers: np.ndarray, rows: np.ndarray | None = None) -> tuple[float, float]:
    """(all-to-all, TP all-reduce) seconds, summed over microbatches (those ``rows`` keeps, a
    ``[M]`` mask), that recompute's re-run of ``layers`` spends in collectives
    (``LayerCosts.recompute_comm_s``: full recompute's whole forward, or the ``moe``/``mlp`` modules')."""
    if costs.recompute_comm_s is None or len(layers) == 0:
        return 0.0, 0.0
    rc = costs.recompute_comm_s[layers] if rows is None else costs.recompute_comm_s[layers][:, rows]
    return float(rc[..., 0].sum()), float(rc[..., 1].sum())


def simulate_step(s: Scenario, cm: CostModel, rng: np.random.Generator,
                  orders: list[list[Entry]], chunks: list[np.ndarray]) -> StepResult:
    """Sample routing, cost every op, play the pipeline: one optimizer step."""
    m, plan = s.model, s.plan
    pp, M, C = plan.pp, plan.microbatches, len(chunks)
    sched = schedule_for(plan)
    stage = sched.stage_of(np.arange(C), pp)  # [C] stage holding each global chunk
    moe_layers = [i for i in range(m.n_layers) if m.is_moe_layer(i)]
    routing = None
    if moe_layers:
        routing = sample_routing(s.routing, len(moe_layers), m.n_experts, m.top_k, plan.ep,
                                 routing_group_tokens(plan, rank_tokens(s.workload, plan)),
                                 M, rng,
                                 redundant_experts=s.placement.redundant_experts)
    zp = zero.zero_plan(plan.zero_stage)
    costs = zero.sharded_costs(layer_costs(s, cm, routing), zp.stage)
    wgrad = wgrad_costs(costs) if sched.splits_backward else None
    paths = [sched.path(i, pp, M, sched.virtual_stages(plan.virtual_stages)) for i in range(M)]
    rows = [np.array([a <= c <= b for a, b in paths]) for c in range(C)]  # microbatches through each chunk
    every = all(r.all() for r in rows)
    firsts, lasts = {a for a, _ in paths}, {b for _, b in paths}
    tables = [chunk_tables(costs, chunks[c], c in firsts, c in lasts, wgrad) for c in range(C)]
    gather = np.zeros(pp)
    if zp.gather_per_pass:
        for c in range(C):
            (f, gf), (b, gb) = (zero.with_gather_waits(t, costs, plan.overlap_dp_comm) for t in tables[c])
            tables[c] = (f, b)
            gather[stage[c]] += gf + gb if every else (gf + gb) * rows[c].mean()
    if not every:
        tables = [(f.only_rows(r), b.only_rows(r)) for (f, b), r in zip(tables, rows)]
    tail_s, limit = None, held_limit(plan)
    if limit is not None:  # Megatron's deferred head wgrad: its held seconds run after the last stage's last unit
        tables, tail_s = defer_head_wgrad(tables, costs.head_wgrad_s, limit, stage, pp)
    wmask = [wgrad_mask(b.kinds) for _, b in tables]  # the W columns (none unless the backward splits)
    if sched.splits_backward:
        unit_s = np.stack([np.stack([f.unit_s, np.where(w, 0.0, b.dur_s).sum(axis=1), np.where(w, b.dur_s, 0.0).sum(axis=1)],
                                    axis=1) for (f, b), w in zip(tables, wmask)])
    else:
        unit_s = np.stack([np.stack([f.unit_s, b.unit_s], axis=1) for f, b in tables])
    send_s = chunk_send_s(cm, s, costs.p2p_bytes)
    hidden, op_end, combined, a2a_stream = np.zeros(pp), {}, None, "compute"
    has_a2a = bool((costs.fwd_s[..., _A2A_SLOTS] > 0).any())
    if plan.overlap_alltoall and has_a2a:
        orders, a2a_stream = combined_orders(orders), "ep_comm"
    if any(not isinstance(e, Unit) for order in orders for e in order):
        combined, a2a_stream = {}, "ep_comm" if has_a2a else a2a_stream
        masks = [(a2a_mask(f.kinds), a2a_mask(b.kinds)) for f, b in tables]
        sm_slowdown = overlap_slowdown(plan.alltoall, s.hardware.device.sm_count)
        for st, order in enumerate(orders):
            for entry in order:
                if isinstance(entry, Unit):
                    continue
                (cf, i_f, _), (cb, i_b, _) = keys = [(sched.global_chunk(st, u.chunk, pp), u.microbatch, u.slot)
                                                     for u in entry]
                f, b = tables[cf][0], tables[cb][1]
                comb = combine_units(f.dur_s[i_f], masks[cf][0], b.dur_s[i_b], masks[cb][1], sm_slowdown)
                combined[(cf, i_f, cb, i_b)] = (comb, comb.op_end_s[1][b.dp_col])
                if masks[cf][0].any() or masks[cb][1].any():  # else one stream: nothing hidden but float noise
                    hidden[st] += comb.hidden_s
                op_end.update(zip(keys, comb.op_end_s))
    run = run_pipeline(orders, unit_s, send_s, [dp_ready_offsets(b) for _, b in tables],
                       [b.dp_s for _, b in tables], overlap_dp=plan.overlap_dp_comm,
                       dp_every_microbatch=zp.reduce_every_microbatch, layout=sched, combined=combined,
                       dp_ready_w_s=[dp_ready_offsets(b, wgrad_only=True) for _, b in tables] if wgrad else None,
                       tail_s=tail_s)
    for st, order in enumerate(orders):  # a split backward's ops: B's from its start, W's from its W's
        for u in (e for e in order if isinstance(e, Unit) and e.part == "W"):
            c, i = sched.global_chunk(st, u.chunk, pp), u.microbatch
            op_end[(c, i, 1)] = split_op_end_s(tables[c][1].dur_s[i], wmask[c], run.start_s[c, i, 2] - run.start_s[c, i, 1])
    opt_params = np.zeros(pp)
    after, exposed = np.zeros(pp), np.zeros(pp)
    rc = np.zeros((pp, 2))
    for c, (_, b) in enumerate(tables):
        opt_params[stage[c]] += b.opt_params
        rc[stage[c]] += recompute_comm_s(costs, chunks[c], None if every else rows[c])
        if zp.gather_after_step:
            after[stage[c]] += zero.chunk_gather_s(tables[c][0], costs)  # the weights at their width
    if zp.gather_after_step:
        for st in range(pp):  # the stage's first unit: its local chunk 0, microbatch 0, forward
            c0 = sched.global_chunk(st, 0, pp)
            exposed[st] = zero.after_step_gather(tables[c0][0], costs, after[st], float(run.start_s[c0, 0, 0]),
                                                 plan.overlap_dp_comm)
        gather = after.copy()
    optimizer_s = np.asarray(cm.memory_s(opt_params * adam_step_bytes(plan.moments_dtype, plan.master_weights)), dtype=float)
    return StepResult(tables, run, costs, routing, optimizer_s, gather, after, exposed, rc, sched,
                      hidden, op_end, a2a_stream)


def simulate_training(scenario: Scenario, seed: int = 0) -> SimResult:
    """Simulate ``scenario.workload.steps`` training steps; routing re-sampled every step."""
    plan, m = scenario.plan, scenario.model
    cm = build_cost_model(scenario.hardware)
    rng = np.random.default_rng(seed)
    sched = schedule_for(plan)
    orders = sched.orders(plan.pp, plan.microbatches, sched.virtual_stages(plan.virtual_stages))
    chunks = sched.chunk_layers(m.n_layers, plan.pp, plan.virtual_stages)
    rec = SpanRecorder()
    steps, offset = [], 0.0
    for _ in range(scenario.workload.steps):
        step = simulate_step(scenario, cm, rng, orders, chunks)
        offset = record_step(rec, step, plan.pp, offset)
        steps.append(step)
    summary, layer_table, step_table = summarize(scenario, cm, steps)
    tables = {"layers": layer_table, "train_step": step_table}
    return SimResult("training", scenario.name, seed, summary, rec.columns(), tables)
