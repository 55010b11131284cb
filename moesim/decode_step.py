"""``decode_step(scenario, batch_seqs, context_tokens)``: one decode iteration priced part by part, without a run.

The ``decode_step`` table ``simulate`` prints under a serving run prices the run's mean decode batch; this prices any
batch and context, for a roofline check or a curve of step time against batch size."""

from __future__ import annotations

import numbers

from moesim.errors import InputError
from moesim.schemas import Scenario

#: The largest decode batch priced at once (sequences per rank): the iteration's cost tables grow with it.
MAX_BATCH_SEQS = 1 << 16


def decode_step(scenario: Scenario, batch_seqs: int, context_tokens: int, seed: int | None = None) -> dict[str, list]:
    """Seconds of one decode-only iteration of ``batch_seqs`` sequences per rank (a replica, or under
    ``plan.dp_attention`` each rank of its group), each attending over ``context_tokens`` cached tokens: the
    ``decode_step`` table (columns ``part``, ``seconds``, ``share`` of the total, ``batch_seqs``,
    ``context_tokens``; a ``total`` row last), priced by the serving engine's own iteration cost. The routed
    experts are at their expected load (the mean over ``seed``'s skew draws under skewed routing). A
    disaggregated scenario is priced on its decode pool. Speculative decoding's drafts are not in it."""
    from moesim.simulate import _seed

    if not isinstance(scenario, Scenario):
        raise InputError(f"decode_step: scenario is a {type(scenario).__name__}; pass a Scenario (moesim.load_scenario)")
    if scenario.is_training:
        raise InputError(f"decode_step: {scenario.name} is a training scenario; it prices a serving decode step")
    if isinstance(batch_seqs, bool) or not isinstance(batch_seqs, numbers.Integral) or not 1 <= batch_seqs <= MAX_BATCH_SEQS:
        raise InputError(f"batch_seqs = {batch_seqs!r}: a whole number of sequences from 1 to {MAX_BATCH_SEQS:,}")
    if isinstance(context_tokens, bool) or not isinstance(context_tokens, numbers.Integral) \
            or not 0 <= context_tokens <= scenario.model.max_seq_len:
        raise InputError(f"context_tokens = {context_tokens!r}: a whole number of tokens from 0 to model.max_seq_len "
                         f"({scenario.model.max_seq_len:,})")
    import numpy as np

    from moesim.costmodel.model import build_cost_model
    from moesim.engine.serving.anatomy import step_table
    from moesim.engine.serving.decode_cost import IterationCost
    from moesim.schemas.scenario import pool_scenario

    s = pool_scenario(scenario, "decode") if scenario.workload.disaggregation is not None else scenario
    seed = s.routing.seed if seed is None else _seed(seed)
    cost = IterationCost(s, build_cost_model(s.hardware), np.random.default_rng([seed, 1]),
                         max_tokens=int(batch_seqs), max_context=int(context_tokens) + 2)
    return step_table(cost, int(batch_seqs), int(context_tokens))
