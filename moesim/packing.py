"""Sequence packing vs padded batches of variable-length training samples. Pure functions.

``workload.sample_tokens`` gives the samples' lengths (a ``LengthDist``, as serving's prompts);
``workload.seq_len`` is the row every micro-batch computes. Packed (``packing: true``, Megatron's
and TRL's ``packing=True``, axolotl's ``sample_packing``), samples are concatenated into full rows:
every computed token is a real one. Padded (``packing: false``, ``padding="max_length"``), each row
holds one sample padded to ``seq_len`` (longer samples truncated), so a step computes
``global_batch_seqs x seq_len`` tokens of which only ``E[min(L, seq_len)]`` per row are real: the
step takes as long, but trains ``E[min(L, seq_len)] / seq_len`` of the tokens.

Packed rows' attention (``packed_attention``): ``per_sample`` (the default) is what fine-tuning stacks
run, varlen kernels that attend within each sample, so a row's attention costs the sum of its
samples' ``L^2 / 2`` instead of ``seq_len^2 / 2`` (:func:`attention_spans`); ``whole_row`` is
pre-training-style concatenation, one causal attention over the row.

Padded rows come two ways (``padding``): ``max_length`` pads every row to ``seq_len``; ``longest``
(Hugging Face's ``DataCollatorWithPadding``, TRL, ms-swift) pads each micro-batch to its longest
sample, so a micro-batch of ``b`` rows computes ``b`` rows of ``E[max of b lengths]`` tokens
(:func:`row_tokens`; the lengths truncated at ``seq_len``): with one sample per micro-batch nothing
is padded. The step is priced at that expected row; memory stays at ``seq_len`` (a micro-batch of
the longest samples sets the peak).

Not modelled: the spread of step times dynamic padding gives (each step is priced at the expected
row), and packing's leftover padding (samples are taken as filling rows).
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from moesim.schemas import TrainingWorkload

#: Samples drawn (seed 0) to take ``E[min(L, seq_len)]`` of any length distribution; the estimate's
#: relative standard error is below 0.3% for a lognormal of sigma 1.
SAMPLES = 200_000


def micro_batch_seqs(w: TrainingWorkload, plan) -> int:
    """Samples (rows) in one micro-batch of one DP rank: ``global_batch_seqs / (dp x microbatches)``
    (the scenario check makes it a whole number)."""
    return w.global_batch_seqs // (plan.dp * plan.microbatches)


def rank_tokens(w: TrainingWorkload, plan) -> int:
    """Tokens one CP rank computes per micro-batch: :func:`micro_batch_seqs` rows of
    :func:`row_tokens` tokens, split over ``plan.cp`` (the row is a multiple of ``2 * cp``)."""
    seqs = micro_batch_seqs(w, plan)
    return seqs * row_tokens(w, seqs, plan.cp) // plan.cp


def real_token_fraction(w: TrainingWorkload, seqs: int = 1, cp: int = 1) -> float:
    """Real (non-padding) tokens over computed tokens of one step: 1 when packed or without
    ``sample_tokens``, else ``E[min(L, seq_len)]`` over the computed row (:func:`row_tokens` of a
    micro-batch of ``seqs`` rows under context parallelism ``cp``)."""
    if w.sample_tokens is None or w.packing:
        return 1.0
    mean = _truncated_moments(w.sample_tokens.model_dump_json(), w.seq_len)[0]
    return min(1.0, mean / row_tokens(w, seqs, cp))


def row_tokens(w: TrainingWorkload, seqs: int, cp: int = 1) -> int:
    """Tokens each row of a micro-batch of ``seqs`` rows computes: ``seq_len``, or under ``padding:
    longest`` the expected longest of ``seqs`` sample lengths (truncated at ``seq_len``), rounded up
    to a whole token and, with context parallelism, to a multiple of ``2 * cp`` (the row is cut into
    ``2 * cp`` chunks, ``engine/cp.py``)."""
    if w.sample_tokens is None or w.packing or w.padding != "longest":
        return w.seq_len
    longest = _expected_longest(w.sample_tokens.model_dump_json(), w.seq_len, max(1, int(seqs)))
    unit = 2 * cp if cp > 1 else 1
    return min(w.seq_len, int(np.ceil(longest / unit - 1e-9)) * unit)


@lru_cache(maxsize=256)
def _expected_longest(dist_json: str, seq_len: int, seqs: int) -> float:
    """``E[max of seqs lengths]`` of the sample lengths truncated at ``seq_len``, over their empirical
    distribution (:func:`_truncated_lengths`): with the draws sorted, the ``i``-th smallest is the
    maximum with probability ``(i/N)^seqs - ((i-1)/N)^seqs``."""
    lengths = np.sort(_truncated_lengths(dist_json, seq_len))
    cdf = np.arange(lengths.size + 1) / lengths.size
    return float(lengths @ np.diff(cdf**seqs))


def attention_spans(w: TrainingWorkload, seqs: int) -> np.ndarray | None:
    """Lengths (tokens) of the spans one micro-batch of ``seqs`` packed rows attends over when each
    sample attends only to itself (``packed_attention: per_sample``), or None when each row is one
    span (no ``sample_tokens``, padded rows, or ``whole_row``).

    A token lies in a sample of length ``L`` with probability ``L f(L) / E[L]``, so a row of
    ``seq_len`` tokens spends ``seq_len * E[L^2] / E[L] / 2`` query-key pairs in causal attention:
    the same as ``n = seq_len / L_eff`` samples of ``L_eff = E[L^2] / E[L]`` (lengths truncated at
    ``seq_len``). The spans returned are ``k`` equal ones holding every token of the micro-batch
    (``k`` rounded, at least one per row), so both the pairs and the tokens are kept.
    """
    if w.sample_tokens is None or not w.packing or w.packed_attention != "per_sample":
        return None
    l_eff = _length_biased_mean(w.sample_tokens.model_dump_json(), w.seq_len)
    k = max(seqs, round(seqs * w.seq_len / l_eff))
    return np.full(k, seqs * w.seq_len / k)


def _length_biased_mean(dist_json: str, seq_len: int) -> float:
    """``E[L^2] / E[L]`` of the sample lengths truncated at ``seq_len``."""
    mean, square = _truncated_moments(dist_json, seq_len)
    return square / mean


@lru_cache(maxsize=256)
def _truncated_moments(dist_json: str, seq_len: int) -> tuple[float, float]:
    """(``E[L]``, ``E[L^2]``) of the sample lengths truncated at ``seq_len`` (:func:`_truncated_lengths`)."""
    lengths = _truncated_lengths(dist_json, seq_len)
    return float(lengths.mean()), float((lengths**2).mean())


@lru_cache(maxsize=8)
def _truncated_lengths(dist_json: str, seq_len: int) -> np.ndarray:
    """``SAMPLES`` draws (seed 0) of the sample lengths, truncated at ``seq_len`` (float); keyed by the
    distribution's JSON so a plan search draws them once. Read-only by convention (shared by the
    cache); few entries kept, as each holds ``SAMPLES`` floats."""
    from moesim.schemas import LengthDist

    lengths = LengthDist.model_validate_json(dist_json).sample(SAMPLES, np.random.default_rng(0))
    return np.minimum(lengths, seq_len).astype(float)
