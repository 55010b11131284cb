"""The published measurements nearest to a scenario: how far to trust its numbers.

``moesim validate --near SCENARIO`` runs the validation rows most like a scenario and prints their
errors, so a user sees what moesim reads against measurements of similar runs (the same kind of
work on the same family of devices, a model of similar size and experts, a similar plan, batch and
lengths) before trusting a prediction. A row's likeness is a distance between the two scenarios'
:class:`Traits`, a weighted sum of mismatches and log-ratios (:func:`distance`). The weights are
ours (assumed, not fitted): they rank rows, and the table shows what each row is, so a user can judge.

Training and serving rows never mix; datasheet rows (``scenario:`` metrics) are not runs and are left out.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from moesim.schemas import Scenario

T = TypeVar("T")

#: Device families by a name token (first match wins); another device is its own family.
FAMILIES: tuple[tuple[str, str], ...] = (
    ("GB10", "gb10"), ("GB200", "blackwell"), ("B200", "blackwell"), ("B300", "blackwell"),
    ("H100", "hopper"), ("H200", "hopper"), ("H800", "hopper"), ("H20", "hopper"),
    ("A100", "ampere"), ("A800", "ampere"), ("Apple", "apple"), ("TPU", "tpu"),
)
#: Distance weights (assumed): a mismatch of a kind, or per doubling of a ratio.
W_FAMILY, W_DEVICE, W_MOE, W_DTYPE, W_FINETUNE, W_ENGINE, W_DP_ATTENTION = 2.0, 0.5, 2.0, 0.5, 1.0, 0.5, 0.75
W_EXPERTS, W_ACTIVE, W_PARALLEL, W_BATCH, W_LENGTH, W_DEVICES = 0.25, 0.5, 0.25, 0.5, 0.25, 0.25


@dataclass(frozen=True)
class Traits:
    """What makes two runs alike. ``engine``: serving's engine (unset on a CUDA GPU: vLLM V1, whose
    host numbers it takes; training: ''); ``batch_seqs``: serving's sequence limit per replica
    (training: 0); ``length_in``/``length_out``: mean prompt and output tokens (training: sequence
    length, 0)."""

    kind: str
    device: str
    family: str
    experts: int
    active_params: float
    dtype: str
    tp: int
    ep: int
    pp: int
    devices: int
    dp_attention: bool
    engine: str
    batch_seqs: float
    length_in: float
    length_out: float
    trainable: str


def device_family(name: str) -> str:
    """``hopper`` for an NVIDIA H100, ``apple`` for an M2 Ultra; else the name itself (lower case)."""
    upper = name.upper()
    for token, family in FAMILIES:
        if token.upper() in upper:
            return family
    return name.lower()


def traits(s: Scenario) -> Traits:
    """A scenario's :class:`Traits`."""
    from moesim.accounting import param_counts, serving_mean_lengths
    from moesim.costmodel.host import platform_of

    m, p, w = s.model, s.plan, s.workload
    serving = not s.is_training
    length_in, length_out = serving_mean_lengths(w, 1.0) if serving else (float(w.seq_len), 0.0)
    return Traits(
        kind="training" if s.is_training else "serving", device=s.hardware.device.name,
        family=device_family(s.hardware.device.name), experts=int(m.n_experts),
        active_params=float(param_counts(m).active), dtype=str(m.expert_dtype or m.dtype),
        tp=int(p.tp), ep=int(p.ep), pp=int(p.pp), devices=int(s.hardware.n_devices),
        dp_attention=bool(p.dp_attention),
        engine=(w.engine or ("vllm" if platform_of(s.hardware.device.name) == "cuda" else "")) if serving else "",
        batch_seqs=float(w.max_batch_seqs) if serving else 0.0,
        length_in=float(length_in), length_out=float(length_out),
        trainable="" if serving else str(w.trainable.mode))


def _doublings(a: float, b: float) -> float:
    """|log2(a / b)|, 0 where either is 0 (not a quantity of that kind of run)."""
    return abs(math.log2(a / b)) if a > 0 and b > 0 else 0.0


def distance(a: Traits, b: Traits) -> float:
    """How unlike two runs are (0: alike in every trait); ``inf`` for training against serving."""
    if a.kind != b.kind:
        return math.inf
    d = W_FAMILY * (a.family != b.family) + W_DEVICE * (a.device != b.device)
    d += W_MOE * ((a.experts > 1) != (b.experts > 1)) + W_EXPERTS * _doublings(a.experts, b.experts)
    d += W_ACTIVE * _doublings(a.active_params, b.active_params) + W_DTYPE * (a.dtype != b.dtype)
    d += W_PARALLEL * (_doublings(a.tp, b.tp) + _doublings(a.ep, b.ep) + _doublings(a.pp, b.pp))
    d += W_DEVICES * _doublings(a.devices, b.devices) + W_DP_ATTENTION * (a.dp_attention != b.dp_attention)
    d += W_ENGINE * (a.engine != b.engine) + W_BATCH * _doublings(a.batch_seqs, b.batch_seqs)
    d += W_LENGTH * (_doublings(a.length_in, b.length_in) + _doublings(a.length_out, b.length_out))
    return d + W_FINETUNE * (a.trainable != b.trainable)


def nearest_rows(target: Scenario, rows: list[dict[str, str]], base: Path, n: int) -> list[tuple[dict[str, str], float]]:
    """The ``n`` simulated rows nearest to ``target`` (same kind), nearest first, with their distances;
    ``base``: the CSV's folder. Rows sharing a scenario and its overrides are loaded once."""
    from moesim.validation import SCENARIO_PREFIX

    seen: dict[tuple, Traits] = {}
    return rank_nearest(traits(target), ((row, row_traits(row, base, seen)) for row in rows
                                         if not (row.get("metric") or "").strip().startswith(SCENARIO_PREFIX)), n)


def rank_nearest(goal: Traits, candidates: Iterable[tuple[T, Traits]], n: int) -> list[tuple[T, float]]:
    """The ``n`` of ``candidates`` ((item, its traits) pairs) nearest to ``goal``, nearest first, with their
    distances; runs of another kind (infinitely far) are left out, and ties keep the candidates' order."""
    scored = [(distance(goal, t), i, item) for i, (item, t) in enumerate(candidates)]
    scored = sorted((s for s in scored if math.isfinite(s[0])), key=lambda s: (s[0], s[1]))
    return [(item, d) for d, _, item in scored[:n]]


def row_traits(row: dict[str, str], base: Path, cache: dict[tuple, Traits]) -> Traits:
    """The :class:`Traits` of a validation row's scenario with its overrides (``base``: the CSV's
    folder); rows sharing a scenario and its overrides are loaded once through ``cache``."""
    from moesim.loader import load_scenario
    from moesim.validation import row_overrides, scenario_ref

    key = ((row.get("scenario") or "").strip(), row_overrides(row))
    if key not in cache:
        cache[key] = traits(load_scenario(scenario_ref(key[0], base), list(key[1])))
    return cache[key]
