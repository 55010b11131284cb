"""Every column of every CSV moesim writes: its unit and its scope (what one row and one value cover).

One :class:`CsvTable` per file; ``docs/csv-columns.md`` is generated from them::

    python -m moesim.csv_columns            # print the Markdown
    python -m moesim.csv_columns --write    # rewrite docs/csv-columns.md
    python -m moesim.csv_columns --check    # exit 1 when docs/csv-columns.md is out of date

Columns that depend on the run (the swept fields of a sweep, the summary keys of its kind, the
SLO limits of ``--slo``) are documented by a rule (:data:`RULES`) instead of by name. Adding a
column to a table a writer produces: add it here (``tests/test_newcomer_polish.py`` runs the
writers and fails on any column this module does not document), then ``--write``.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

from moesim.metrics import METRICS

__all__ = ["RULES", "TABLES", "CsvTable", "markdown", "undocumented", "write_doc"]


@dataclass(frozen=True)
class CsvTable:
    """One CSV file: ``written_by`` (the command and option), ``row`` (what one row is),
    ``columns`` (name -> (unit, description)) and ``rules`` (names of :data:`RULES` that document
    the columns named by the run)."""

    name: str
    written_by: str
    row: str
    columns: dict[str, tuple[str, str]]
    rules: tuple[str, ...] = ()


#: Rules for the columns a run names: (what the doc says, test of a column name).
RULES = {
    "field": ("one column per swept or planned scenario field, named by its path (`routing.capacity_factor`, "
              "`plan.ep`): the value the row ran with, in the field's unit (docs/scenario-fields.md)",
              lambda c: "." in c and not c.startswith("memory.")),
    "summary": ("every key of the run's summary (training or serving, `moesim simulate --json`): unit and "
                "meaning in the README's summary tables (`python -m moesim.metrics` lists them); empty where "
                "a row's kind has no such key or the point did not finish; a file no point of which has finished "
                "yet (all invalid, or stopped before the first) has none of these columns: a reader keys on "
                "`status` first", lambda c: c in METRICS),
    "slo": ("one column per limit of `--slo` (`ttft_p99_s`, `tpot_p99_s`, ...), s: the statistic over the "
            "requests of the probe's steady-state window", lambda c: c in METRICS and c.endswith("_s")),
}

_S = "s"
_SPAN_TIMES = "from the start of the run (training: steps follow one another)"

SPANS = CsvTable("spans.csv", "`moesim simulate --out DIR` (every scenario)",
                 "one span: an op or a transfer on one stream of one pipeline stage (training) or replica (serving)", {
                     "kind": ("text", "what ran: a training op with `_fwd`/`_bwd` (`attention_fwd`, `experts_bwd`, "
                              "`alltoall_dispatch_fwd`, `tp_allreduce_bwd`, `pp_send_fwd`, `dp_sync_dense`, "
                              "`optimizer`, ...); serving: `prefill`, `decode`, `iteration` (both), `tp_allreduce`, "
                              "`ep_alltoall`, `pp_send`"),
                     "stage": ("index", "pipeline stage (training) or replica (serving); the trace's process"),
                     "stream": ("text", "training: `compute` (all-to-alls and TP all-reduces too unless overlapped: they "
                                "block it), `ep_comm` (all-to-alls overlapped by `plan.overlap_alltoall`), `comm` "
                                "(pipeline sends), `dp_comm`, `cp_comm`, `zero_gather`; serving: `compute`, `tp_comm`, "
                                "`ep_comm`, `pp_comm`"),
                     "rank_group": ("text", "the group a collective runs over (`tp`, `ep`, `pp`, `dp`, `expert_dp`, `cp`; "
                                    "serving: `replica`); empty for compute"),
                     "layer": ("index", "model layer (0-based); -1 where the span is not one layer's"),
                     "item": ("index", "microbatch (training) or the replica's pipeline slot (serving); -1 for none"),
                     "start_s": (_S, "start, " + _SPAN_TIMES),
                     "end_s": (_S, "end, " + _SPAN_TIMES),
                     "bytes": ("bytes", "bytes one device sends in the transfer (0 for compute)"),
                     "tokens": ("tokens", "tokens the op processes on one device (the experts: on the busiest EP rank); "
                                "serving: prompt + decode tokens of the iteration"),
                     "dropped": ("token-slots", "training: token-slots the EP group dropped at expert capacity in this "
                                 "layer and microbatch (on the experts span); serving: dropped in the iteration, all MoE "
                                 "layers"),
                 })

LAYERS = CsvTable("layers.csv", "`moesim simulate --out DIR` (training)",
                  "one MoE layer; every count is per EP group per microbatch (the tokens one EP group routes in one "
                  "microbatch, summed over its experts), averaged over the microbatches and steps simulated", {
                      "layer": ("index", "model layer (0-based; dense layers have no row)"),
                      "routed": ("token-slots", "token-to-expert assignments routed (tokens x top_k), per EP group per "
                                 "microbatch"),
                      "kept": ("token-slots", "assignments within expert capacity, per EP group per microbatch"),
                      "dropped": ("token-slots", "assignments over expert capacity (dropped; 0 when dropless), per EP "
                                  "group per microbatch"),
                      "padding": ("token-slots", "empty expert slots, capacity x experts - kept, per EP group per "
                                  "microbatch (0 when dropless)"),
                      "capacity": ("token-slots", "slots one expert gives the EP group per microbatch (ep x the per-source "
                                   "capacity)"),
                      "dropped_fraction": ("fraction", "dropped / routed"),
                      "busiest_rank_tokens": ("tokens", "tokens the busiest EP rank computes in the layer, per microbatch"),
                      "rank_imbalance": ("ratio", "busiest rank's tokens / the mean rank's (1 = even)"),
                  })

REQUESTS = CsvTable("requests.csv", "`moesim simulate --out DIR` (serving)",
                    "one request of the workload, in arrival order; times from the run's start; NaN (empty) where "
                    "a request was not served", {
                        "id": ("index", "request number, in arrival order"),
                        "replica": ("index", "replica that served it (-1: rejected)"),
                        "slot": ("index", "pipeline slot of the replica that served it (-1: rejected)"),
                        "arrival_s": (_S, "arrival time"),
                        "prompt_tokens": ("tokens", "prompt length"),
                        "output_tokens": ("tokens", "tokens to generate"),
                        "first_token_s": (_S, "time its first token was emitted"),
                        "finish_s": (_S, "time its last token was emitted"),
                        "ttft_s": (_S, "first_token_s - arrival_s (queueing included)"),
                        "queue_s": (_S, "queueing delay: first admission to a batch - arrival_s (part of ttft_s)"),
                        "tpot_s": (_S, "(finish_s - first_token_s) / (output_tokens - 1); empty for one output token"),
                        "e2e_s": (_S, "finish_s - arrival_s"),
                        "preemptions": ("count", "times it was evicted from the KV cache and recomputed"),
                        "rejected": ("bool", "refused at arrival, never served: over model.max_seq_len, a whole prompt over "
                                              "max_batch_tokens without chunked prefill, or over the KV cache"),
                        "prefill_replica": ("index", "disaggregated serving: the prefill replica that ran its prompt "
                                            "(`replica` is then the decode replica)"),
                        "kv_transfer_s": (_S, "disaggregated serving: time its KV took from prefill to decode pool"),
                        "kv_transfer_wait_s": (_S, "disaggregated serving: time its KV waited for the link"),
                    })

ITERATIONS = CsvTable("iterations.csv", "`moesim simulate --out DIR` (serving)",
                      "one continuous-batching iteration of one engine (a replica's pipeline slot; with "
                      "`plan.dp_attention` a lock-step group of replicas), sorted by replica, slot, start", {
                          "replica": ("index", "replica (disaggregated: prefill replicas first, then decode)"),
                          "slot": ("index", "pipeline slot of the replica"),
                          "start_s": (_S, "start of the iteration, from the run's start"),
                          "end_s": (_S, "end of the iteration (the last pipeline stage's)"),
                          "batch_seqs": ("sequences", "sequences in the batch"),
                          "prefill_tokens": ("tokens", "prompt tokens computed in the iteration"),
                          "decode_tokens": ("tokens", "decoding sequences (one token each)"),
                          "kv_tokens": ("tokens", "KV cache tokens held by the engine after scheduling"),
                          "running": ("sequences", "sequences running after scheduling"),
                          "queued": ("requests", "requests still waiting after scheduling"),
                          "preempted": ("sequences", "sequences preempted while scheduling this iteration"),
                          "dropped_slots": ("token-slots", "token-slots dropped at expert capacity in the iteration, "
                                            "all MoE layers of the engine's batch"),
                          "routed_slots": ("token-slots", "token-slots routed to experts in the iteration: tokens x "
                                           "top_k x MoE layers"),
                          "stage0_end_s": (_S, "when the first pipeline stage is free for the next iteration"),
                          "tp_comm_s": (_S, "exposed TP all-reduce time in the iteration"),
                          "ep_comm_s": (_S, "exposed EP all-to-all time in the iteration"),
                          "pp_comm_s": (_S, "pipeline send time in the iteration"),
                          "kv_capacity_tokens": ("tokens", "KV tokens the engine can hold"),
                          "kv_utilisation": ("fraction", "kv_tokens / kv_capacity_tokens"),
                      })

EXPERT_LAYERS = CsvTable("expert_layers.csv", "`moesim simulate --out DIR` (serving, MoE models)",
                         "one MoE layer (of one pool, disaggregated)", {
                             "pool": ("text", "disaggregated serving: `prefill` or `decode`"),
                             "moe_layer": ("index", "MoE layer number (0-based, MoE layers only)"),
                             "expert_load_imbalance": ("ratio", "expected tokens on the busiest EP rank / the mean "
                                                       "rank, from the routing popularity at the end of the run"),
                         })

DECODE_STEP = CsvTable("decode_step.csv", "`moesim simulate --out DIR` (serving)",
                       "one part of a decode iteration at the run's mean batch and context (`serving/anatomy.py`; "
                       "parts that cost nothing are left out), then a `total` row", {
                           "part": ("text", "attention, routed_experts, other_kernels, tp_comm, ep_comm, pp_comm, "
                                    "output_head, two_batch_overlap (net: + costs, - saves), host_and_launch, total"),
                           "seconds": (_S, "the part's time in the iteration (the parts sum to the total)"),
                           "share": ("fraction", "seconds / the total's"),
                           "batch_seqs": ("sequences", "decode batch per rank priced: duration-weighted mean of the "
                                          "run's decode-only iterations"),
                           "context_tokens": ("tokens", "context each sequence attends over: the mean over the "
                                              "decoded tokens of prompt plus the tokens before it"),
                       })

TRAIN_STEP = CsvTable("train_step.csv", "`moesim simulate --out DIR` (training)",
                      "one part of the training step, mean over pipeline stages and steps (`training/anatomy.py`; "
                      "parts that cost nothing are left out), then a `total` row", {
                          "part": ("text", "compute by what it does (attention, router, experts, host_wait: the GPU "
                                   "waiting for the host to issue MoE layers, dense_ffn, embedding_head, recompute), then alltoall_exposed, tp_comm, cp_comm, pp_comm, "
                                   "bubble, zero_gather_exposed, dp_sync_exposed, optimizer (the summary's `<part>_s`), "
                                   "total"),
                          "seconds": (_S, "the part's time in the step (the parts sum to the total, step_time_s; the "
                                      "compute parts to compute_s)"),
                          "share": ("fraction", "seconds / the total's"),
                          "microbatches": ("micro-batches", "micro-batches per step and pipeline (plan.microbatches)"),
                          "tokens_per_microbatch": ("tokens", "tokens one device computes per micro-batch"),
                      })

PROBES = CsvTable("capacity_probes.csv", "`moesim simulate --slo ... --out DIR` (serving)",
                  "one probe of the capacity search: one run at one Poisson arrival rate, in the order played", {
                      "probe": ("index", "probe number (1-based)"),
                      "rate_req_s": ("requests/s", "arrival rate offered"),
                      "holds": ("bool", "every SLO limit held, the plan kept up and at most 1% were rejected"),
                      "reason": ("text", "why it failed (empty when it held)"),
                      "served_req_s": ("requests/s", "requests finished per second in the steady-state window"),
                      "offered_req_s": ("requests/s", "requests arriving per second in the window"),
                      "queue_growth": ("requests", "fitted growth of the waiting queue over the window (about 0: "
                                       "the plan keeps up)"),
                      "n_requests": ("count", "requests the probe simulated"),
                      "window_start_s": (_S, "start of the steady-state window (warm-up excluded)"),
                      "window_end_s": (_S, "end of the steady-state window (drain excluded)"),
                  }, ("slo",))

SWEEP = CsvTable("results.csv", "`moesim sweep` (in `--out`, default sweeps/NAME; results.jsonl holds the same rows)",
                 "one point of the grid and one seed: the scenario with the swept fields set, simulated once", {
                     "point": ("index", "point number in the grid"),
                     "status": ("text", "`ok`, `invalid` (the point is not a valid scenario, or does not fit) or `failed`"),
                     "reason": ("text", "why not ok (empty when ok)"),
                     "scenario": ("text", "scenario name"),
                     "kind": ("text", "`training` or `serving`"),
                     "seed": ("count", "routing / arrival seed"),
                     "sim_wall_s": (_S, "wall-clock seconds the point took to simulate"),
                     "key": ("text", "the point's identity (its fields and seed, JSON) that `--resume` matches"),
                 }, ("field", "summary"))

PLAN_RUNS = CsvTable("results.csv (moesim plan)", "`moesim plan --out DIR` (the runs behind plans.csv)",
                     "one run of the search: a plan shape at one level (saturation, capacity, re-check, simulate)", {
                         **SWEEP.columns,
                         "level": ("index", "what the run measured: 1 saturation (all requests at t=0), 2 capacity "
                                   "under the SLO (training: the simulation), 3 the re-check on every replica"),
                         "hardware": ("text", "hardware preset"),
                         "plan": ("text", "the plan, as plans.csv writes it"),
                         "devices": ("count", "devices of the plan"),
                         "needed_tok_s": ("tokens/s", "output tokens/s per device the plan had to serve to beat the "
                                          "best plan so far (empty: none yet)"),
                         "sat_output_tokens_per_s_per_device": ("tokens/s", "saturated output tokens/s per device "
                                                                "(level 1)"),
                         "sat_requests": ("count", "requests of the saturation run"),
                         "sat_output_tokens_per_s": ("tokens/s", "saturated output tokens/s of the replicas played "
                                                     "(level 1)"),
                         "sat_req_s": ("requests/s", "saturated requests/s of the replicas played: "
                                       "sat_output_tokens_per_s over the mean output tokens (level 1; the capacity "
                                       "search starts from it)"),
                         "sat_decode_p90_s": ("s", "p90 of first token to finish in the saturation run (level 1; "
                                              "sizes the capacity search's loaded probes)"),
                         "hopeless": ("bool", "the capacity search stopped below needed_tok_s"),
                         "needed_req_s": ("requests/s", "per replica: the rate needed_tok_s meant (hopeless runs)"),
                         "failed_at_req_s": ("requests/s", "per replica: the rate that failed (hopeless runs)"),
                         "max_goodput_req_s": ("requests/s", "capacity under the SLO, per replica"),
                         "saturation_req_s": ("requests/s", "requests/s with every request at t=0 (full batches' output "
                                                              "tokens/s over the mean output tokens), per replica"),
                         "replicas_played": ("count", "replicas the run simulated (1, or all at level 3)"),
                         "replicas_judged": ("count", "replicas whose summed queue the run's overload test stands for "
                                             "(the smallest plan of its shape; level 3: those played)"),
                     }, ("summary",))

PLANS = CsvTable("plans.csv", "`moesim plan --out DIR` (plans.json holds the same rows)",
                 "one candidate plan: ranked (best first), pruned with its reason, or failing", {
                     "rank": ("index", "rank by the objective (1 = best; empty when not ranked)"),
                     "hardware": ("text", "hardware preset"),
                     "devices": ("count", "devices of the plan"),
                     "plan": ("text", "the plan in short (`dp8 tp1 pp1 ep8 batch128`)"),
                     "status": ("text", "`ranked`, or why not (`dominated`, `no-fit`, ...)"),
                     "detail": ("text", "the reason in words"),
                     "bound": ("objective unit", "the bound the search pruned by (the objective's unit)"),
                     "objective": ("objective unit", "the objective's value (`--objective`; plans.json names it)"),
                     "capacity_per_replica_req_s": ("requests/s", "serving: capacity under the SLO of one replica"),
                     "capacity_req_s": ("requests/s", "serving: capacity of the whole plan (per replica x replicas)"),
                     "tokens_per_s_per_user": ("tokens/s", "serving: 1 / mean TPOT at capacity"),
                     "checked_on_devices": ("count", "serving: devices of the re-check on the whole plan (empty: "
                                            "one replica only)"),
                     "one_replica_objective": ("objective unit", "serving: the objective from the one-replica search"),
                     "whole_plan_objective": ("objective unit", "serving: the objective from the whole-plan re-check"),
                 }, ("field", "summary"))

VALIDATION_RESULTS = CsvTable(
    "validation_results.csv", "`moesim validate --save-results FILE` (moesim ships one: moesim/data/validation_results.csv)",
    "one simulated row of the shipped validation table, in table order, under a `#` line naming the run", {
        "id": ("text", "the row's id in moesim/data/validation.csv"),
        "quantity": ("text", "what the row measures (its `quantity` cell)"),
        "predicted": ("the row's unit", "moesim's prediction (the row's metric, transform and scale applied)"),
        "error": ("fraction", "(predicted - published) / published"),
        "kind": ("text", "`training` or `serving`: the traits below are those `moesim validate --near` compares"),
        "device": ("text", "hardware.device.name of the row's scenario"),
        "family": ("text", "device family (`hopper`, `blackwell`, `ampere`, `apple`, ...)"),
        "experts": ("count", "model.n_experts"),
        "active_params": ("parameters", "parameters one token meets (all of a dense model)"),
        "dtype": ("text", "the experts' dtype (model.expert_dtype, else model.dtype)"),
        "tp": ("count", "plan.tp"), "ep": ("count", "plan.ep"), "pp": ("count", "plan.pp"),
        "devices": ("count", "devices in the scenario's hardware"),
        "dp_attention": ("True/False", "plan.dp_attention"),
        "engine": ("text", "serving engine (`vllm` for an unset engine on a CUDA GPU); empty for training"),
        "batch_seqs": ("sequences", "serving: workload.max_batch_seqs; training: 0"),
        "length_in": ("tokens", "serving: mean prompt tokens; training: workload.seq_len"),
        "length_out": ("tokens", "serving: mean output tokens; training: 0"),
        "trainable": ("text", "training: workload.trainable.mode; serving: empty"),
    })

TABLES = {t.name: t for t in (SPANS, LAYERS, REQUESTS, ITERATIONS, EXPERT_LAYERS, DECODE_STEP, TRAIN_STEP, PROBES, SWEEP, PLAN_RUNS, PLANS,
                              VALIDATION_RESULTS)}


def undocumented(table: str, columns: list[str]) -> list[str]:
    """The ``columns`` of ``table`` (a :data:`TABLES` key) neither named nor covered by its rules."""
    t = TABLES[table]
    return [c for c in columns if c not in t.columns and not any(RULES[r][1](c) for r in t.rules)]


def markdown() -> str:
    """docs/csv-columns.md."""
    out = ["# CSV columns", "",
           "Every CSV file moesim writes, column by column: unit and scope. Generated from `moesim/csv_columns.py` "
           "(`python -m moesim.csv_columns --write`); do not edit by hand.", "",
           "Units: `s` seconds; `tokens`; `token-slots` token-to-expert assignments (one token routed to top_k "
           "experts fills top_k slots); `fraction` 0-1 (tables print it as %); `index` 0-based unless said; "
           "`bool` True/False; empty cells are missing values (NaN).", ""]
    for t in TABLES.values():
        out += [f"## {t.name}", "", f"Written by {t.written_by}. One row: {t.row}.", "",
                "| column | unit | meaning |", "|---|---|---|"]
        out += [f"| `{c}` | {unit} | {text.replace('|', '&#124;')} |" for c, (unit, text) in t.columns.items()]
        out += [f"| *{name}* | | {RULES[name][0]} |" for name in t.rules]
        out.append("")
    return "\n".join(out)


_DOC = Path(__file__).resolve().parent.parent / "docs" / "csv-columns.md"


def write_doc(path: Path = _DOC, check: bool = False) -> bool:
    """Rewrite ``path`` from :func:`markdown` (unless ``check``); True when it was up to date."""
    new = markdown()
    same = path.exists() and path.read_text(encoding="utf-8") == new
    if not same and not check:
        path.write_text(new, encoding="utf-8")
    return same


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if "--write" in args or "--check" in args:
        same = write_doc(check="--check" in args)
        print(f"{_DOC}: {'up to date' if same else ('out of date' if '--check' in args else 'rewritten')}")
        return 0 if same or "--write" in args else 1
    sys.stdout.write(markdown())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
