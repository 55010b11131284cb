"""Speculative decoding in serving: a draft model or MTP heads propose ``k`` tokens per decode step,
the target verifies them in one pass of ``k + 1`` tokens per sequence.

Physics of one iteration (``SpecCost.time_s``), everything priced with :class:`IterationCost`:

* the drafter runs ``k`` sequential passes over the batch, one token per decoding sequence each,
  attending over its own context (``ctx + j``). A draft model runs under the target's TP on one
  pipeline stage (``memory.spec_plan``); its first pass also prefills this iteration's prompt
  chunks (the draft keeps its own KV). MTP heads (DeepSeek-V3 report, sec. 2.2) are ``k`` one-block
  copies of the target's layer sharing its embedding and head; each head's pass also covers the
  prompt chunks (each head keeps a KV cache of its depth).
* the target verifies: every decoding sequence runs ``k + 1`` query tokens (its last token plus the
  ``k`` drafts) attending over ``ctx + k + 1``; the head produces ``k + 1`` logits per sequence.
  Host time is that of a decode step (graphable, scheduler overlapped), as in vLLM/SGLang's
  CUDA-graphed verify.
* expected tokens emitted per step: ``1 + sum_i prod_{j<=i} a_j`` (scalar alpha: ``(1 - a^(k+1)) /
  (1 - a)``; Leviathan et al. 2023, eq. 1). Deterministic: each sequence accumulates the expected
  count and emits ``floor(acc + E) - floor(acc)`` tokens per step (at least 1), capped at its
  remaining output, so runs stay reproducible and no rng is consumed.
* KV: a decode keeps only the accepted tokens' KV (the rejected drafts' entries are overwritten);
  the drafter's KV bytes per token are added to the target's (``memory.kv_bytes_per_token_per_device``).

With ``pp > 1`` the first pipeline stage is taken to hold the drafter: it is busy for the whole
draft plus its ``1/pp`` share of the verify.
"""

from __future__ import annotations

import numpy as np

from moesim.engine.serving.decode_cost import IterationCost
from moesim.memory import spec_model, spec_plan
from moesim.schemas import Scenario


def drafter_scenario(s: Scenario) -> Scenario:
    """``s`` with the drafter as its model on the drafter's plan (unvalidated copy: a 1-layer MTP head).
    An MTP head's MoE layer has the target's experts and keeps their placement; a separate draft model's
    experts (a dense draft has none) are not the ones the target's EPLB replicas copy: default placement."""
    d = spec_model(s)
    placement = s.placement if d.n_experts == s.model.n_experts else type(s.placement)()
    return s.model_copy(update=dict(model=d, plan=spec_plan(s, d), placement=placement,
                                    workload=s.workload.model_copy(update=dict(speculative=None))))


class SpecCost:
    """Iteration time with speculative decoding, and the per-sequence emission bookkeeping."""

    def __init__(self, s: Scenario, target: IterationCost, rng: np.random.Generator, n_requests: int):
        spec = s.workload.speculative
        self.k, self.mtp = spec.k, spec.method == "mtp"
        self.expected = spec.tokens_per_step
        self.target, self.pp = target, s.plan.pp
        self.draft = IterationCost(drafter_scenario(s), target.cm, rng, max_tokens=target.max_tokens)
        self.acc = np.zeros(n_requests)  # expected tokens accumulated per request
        self.steps = 0  # sequence-decode-steps played
        self.emitted = 0  # tokens those steps emitted

    # ------------------------------------------------------------ time
    def time_s(self, q: np.ndarray, kv: np.ndarray, is_dec: np.ndarray, n_out: int) -> tuple[float, float, float]:
        """(seconds, first-stage seconds, dropped expert tokens) of one iteration with speculation."""
        k, dec = self.k, is_dec.astype(np.int64)
        nd = int(dec.sum())
        gpu, dropped = self.target.kernel_s(q + k * dec, kv + k * dec, n_out + k * nd)
        verify = gpu + self.target.host_s(q, gpu)
        draft = self.draft_s(q, kv, is_dec, n_out)
        return draft + verify, draft + verify / self.pp, dropped

    def draft_s(self, q: np.ndarray, kv: np.ndarray, is_dec: np.ndarray, n_out: int) -> float:
        """The drafter's ``k`` passes (the first, or with MTP every, pass also covers the prompt chunks)."""
        nd = int(is_dec.sum())
        if not nd:  # prefill only: the drafter prefills its KV (k MTP heads, or the draft once)
            return (self.k if self.mtp else 1) * self.draft.time_s(q, kv, n_out)[0]
        total = 0.0
        dq, dkv = np.ones(nd, np.int64), kv[is_dec]
        for j in range(self.k):
            if j == 0 or self.mtp:
                total += self.draft.time_s(q, kv + j * is_dec, n_out)[0]
            else:
                total += self.draft.time_s(dq, dkv + j, nd)[0]
        return total

    # ------------------------------------------------------------ emission
    def plan_steps(self, book, ids: np.ndarray) -> None:
        """Set ``book.step`` for the running ``ids``: tokens their next decode step emits."""
        book.unit_steps = False
        if ids.size:
            acc = self.acc[ids]
            g = np.floor(acc + self.expected + 1e-9) - np.floor(acc + 1e-9)
            left = np.maximum(book.output[ids] - book.generated[ids], 1)
            book.step[ids] = np.clip(g.astype(np.int64), 1, left)

    def committed(self, book, batch) -> None:
        """Account the decode steps of a committed ``batch``."""
        ids = batch.ids[batch.is_decode]
        self.acc[ids] += self.expected
        self.steps += int(ids.size)
        self.emitted += int(book.step[ids].sum())

    def summary(self) -> dict:
        """``spec_tokens_per_step`` (emitted per sequence per decode step) and ``spec_acceptance``."""
        per = self.emitted / self.steps if self.steps else float("nan")
        return {"spec_tokens_per_step": per, "spec_acceptance": (per - 1.0) / self.k if self.steps else float("nan")}


# ------------------------------------------------------------------ analytic speedup
def speedup_curve(s: Scenario, batches, context: int) -> dict[str, np.ndarray]:
    """Speedup of speculative over plain decoding for pure decode steps at a fixed ``context``.

    Per batch ``B``: ``t_plain`` = one target decode step of ``B`` sequences; ``t_spec`` = ``k``
    draft passes + one verify of ``k + 1`` tokens per sequence (``SpecCost.time_s``); speedup =
    ``E * t_plain / t_spec`` with ``E`` the expected tokens per step. Returns arrays keyed
    ``batch``, ``t_plain_s``, ``t_spec_s``, ``speedup`` and the scalar ``tokens_per_step``.
    """
    from moesim.costmodel import build_cost_model

    spec = s.workload.speculative
    b = np.asarray(sorted({int(x) for x in batches}), dtype=np.int64)
    cm = build_cost_model(s.hardware)
    rng = np.random.default_rng(0)
    target = IterationCost(s, cm, rng, max_tokens=int(b.max()) * (spec.k + 1))
    sc = SpecCost(s, target, rng, 0)
    plain, spec_t = [], []
    for n in b.tolist():
        q, kv, dec = np.ones(n, np.int64), np.full(n, context, np.int64), np.ones(n, bool)
        plain.append(target.time_s(q, kv, n)[0])
        spec_t.append(sc.time_s(q, kv, dec, n)[0])
    plain, spec_t = np.asarray(plain), np.asarray(spec_t)
    return {"batch": b, "t_plain_s": plain, "t_spec_s": spec_t, "speedup": sc.expected * plain / spec_t,
            "tokens_per_step": sc.expected}
