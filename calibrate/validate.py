"""The proof: predicted vs measured time of the reference MoE layer over a held-out grid.

Grid (none of it measured by calibration): experts 8/16/64 x top-k 1/2 x tokens 1..4096 x
capacity factor 1.0/1.25. Each point is measured with ``kernels.moe_ref.moe_forward`` and predicted
by ``calibrate.predict.moe_layer_s`` from the profile's CostModel (the op list the engines price,
``engine.ops.moe_ops``), given the kept assignments per expert of that point's routing (the same
input the simulator's routing sampler would produce counts for). The measured time is never used
by the prediction.

The noise floor: points are measured interleaved in rounds (``kernels.timing.measure_interleaved``,
extra samples in pairs), and each point's samples from even rounds and from odd rounds give two
measurements of it taken at different times (``PointStats.halves``). How much those two disagree,
``|a - b| / mean(a, b)``, is what this machine cannot repeat; the model's error is read next to it.

Drift since calibration: the rounds also re-measure the calibration's own whole-layer points (those
of up to ``DRIFT_MAX_TOKENS`` tokens, whose medians the profile records in ``timing``), and their
change, ``(now - then) / then``, says how much faster or slower the machine is now than when the
profile was measured (a shared machine's load moves both ways within minutes). The figure is
reported, never used to correct a prediction.

The cache now: on a shared machine the cache a process gets moves with its neighbours' load, and
layers whose expert weights straddle it (8-16 experts of the calibration's layer shape) move with
it. The rounds also re-measure the calibration's grouped GEMMs at the cache's edge (its recorded
points between the fewest and the most experts), and the cache size that prices them best now
(``fit_local.best_cache_bytes``) is reported next to the profile's, with the model's error under
it: like the drift, a diagnostic, never the headline.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from moesim.calibrate.fit_local import best_cache_bytes, hardware_for
from moesim.calibrate.grids import grid_for
from moesim.calibrate.microbench import (
    InputCache,
    cache_budget,
    expert_fn_for,
    grouped_points_at,
    layer_points,
    measure_points,
    parse_shape,
    shape_label,
)
from moesim.calibrate.predict import moe_layer_s
from moesim.kernels.timing import PrecisionRule, machine_load, pick_device

from moesim.costmodel import cost_model
from moesim.costmodel.profile import Profile

EXPERTS = (8, 16, 64)
TOP_K = (1, 2)
TOKENS = (1, 4, 16, 64, 256, 1024, 4096)
CAPACITY_FACTORS = (1.0, 1.25)
#: Summary keys of ``ValidationReport.summary`` (percent).
SUMMARY_KEYS = ("median_abs_error", "p90_abs_error", "median_signed_error", "noise_median", "noise_p90")
#: Calibration layer points re-measured for the drift figure: those of at most this many tokens.
DRIFT_MAX_TOKENS = 512


def validation_points(quick: bool = False) -> list[tuple[int, int, int, float]]:
    """(experts, top_k, tokens, capacity factor) of the held-out grid; quick keeps every other token count."""
    tokens = TOKENS[::2] if quick else TOKENS
    return [(e, k, t, cf) for e in EXPERTS for k in TOP_K for t in tokens for cf in CAPACITY_FACTORS]


@dataclass(frozen=True)
class ValidationRow:
    experts: int
    top_k: int
    tokens: int
    capacity_factor: float
    dropped: int
    predicted_s: float
    measured_s: float
    measured_a_s: float = 0.0  # median of the samples from even rounds (0: not split)
    measured_b_s: float = 0.0  # ... and from odd rounds
    spread: float = 0.0  # IQR / median of the samples kept
    samples: int = 1
    counts: tuple[int, ...] = ()  # kept assignments per expert (what the prediction was given)

    @property
    def error_pct(self) -> float:
        """Signed error of the prediction, percent of the measured time."""
        return 100.0 * (self.predicted_s - self.measured_s) / self.measured_s

    @property
    def noise_pct(self) -> float:
        """How much the two measurements disagree: ``100 |a - b| / mean(a, b)`` (0 when not split)."""
        a, b = self.measured_a_s, self.measured_b_s
        return 200.0 * abs(a - b) / (a + b) if a > 0 and b > 0 else 0.0

    def to_dict(self) -> dict:
        return {"experts": self.experts, "top_k": self.top_k, "tokens": self.tokens,
                "capacity_factor": self.capacity_factor, "dropped": self.dropped,
                "measured_s": self.measured_s, "predicted_s": self.predicted_s, "error_pct": round(self.error_pct, 3),
                "measured_a_s": self.measured_a_s, "measured_b_s": self.measured_b_s,
                "noise_pct": round(self.noise_pct, 3), "spread_pct": round(100 * self.spread, 3), "samples": self.samples,
                "counts": list(self.counts)}


@dataclass(frozen=True)
class DriftRow:
    """A calibration layer point measured again: its shape, the profile's median, the median now."""

    shape: str
    then_s: float
    now_s: float

    @property
    def drift_pct(self) -> float:
        return 100.0 * (self.now_s - self.then_s) / self.then_s


@dataclass(frozen=True)
class ValidationReport:
    device: str
    d_model: int
    ffn: int
    rows: list[ValidationRow]
    rounds: int = 0
    wall_s: float = 0.0
    load_before: dict = field(default_factory=dict)
    load_after: dict = field(default_factory=dict)
    drift: list[DriftRow] = field(default_factory=list)
    cache_then_bytes: float | None = None  # the profile's effective cache
    cache_now_bytes: float | None = None  # the size that prices the cache-edge points measured now
    cache_points: int = 0
    predicted_cache_now_s: tuple[float, ...] = ()  # each row's prediction with cache_now_bytes

    @property
    def median_abs_pct(self) -> float:
        return float(np.median([abs(r.error_pct) for r in self.rows]))

    @property
    def p90_abs_pct(self) -> float:
        return float(np.percentile([abs(r.error_pct) for r in self.rows], 90))

    @property
    def median_signed_pct(self) -> float:
        """Median signed error: below 0, the model predicts too little (a missing cost)."""
        return float(np.median([r.error_pct for r in self.rows]))

    @property
    def noise_median_pct(self) -> float:
        return float(np.median([r.noise_pct for r in self.rows]))

    @property
    def noise_p90_pct(self) -> float:
        return float(np.percentile([r.noise_pct for r in self.rows], 90))

    @property
    def drift_median_pct(self) -> float | None:
        """Median change of the calibration's layer points since calibration (None: none re-measured)."""
        return float(np.median([d.drift_pct for d in self.drift])) if self.drift else None

    @property
    def drift_p90_pct(self) -> float | None:
        return float(np.percentile([abs(d.drift_pct) for d in self.drift], 90)) if self.drift else None

    def drift_corrected_pct(self) -> tuple[float, float] | None:
        """(median signed, median absolute) model error, percent, with the machine's drift since
        calibration divided out: each prediction scaled by ``1 + drift_median``, since the profile's
        times were measured on the machine as it ran then. Separates what the model gets wrong from
        the machine changing speed between calibrating and validating (None: no drift measured)."""
        d = self.drift_median_pct
        if d is None:
            return None
        err = [100.0 * (r.predicted_s * (1.0 + d / 100.0) - r.measured_s) / r.measured_s for r in self.rows]
        return float(np.median(err)), float(np.median(np.abs(err)))

    def cache_now_pct(self, with_drift: bool = False) -> tuple[float, float] | None:
        """(median signed, median absolute) model error, percent, with the cache as measured now, and
        with the drift divided out too when ``with_drift`` (None: the cache's edge, or the drift, was
        not measured again)."""
        if not self.predicted_cache_now_s or (with_drift and self.drift_median_pct is None):
            return None
        scale = 1.0 + self.drift_median_pct / 100.0 if with_drift else 1.0
        err = [100.0 * (p * scale - r.measured_s) / r.measured_s for p, r in zip(self.predicted_cache_now_s, self.rows)]
        return float(np.median(err)), float(np.median(np.abs(err)))

    def summary(self) -> dict[str, float]:
        """The figures of the run, percent (``SUMMARY_KEYS``), the point count, and the drift since
        calibration (``drift_median`` signed, ``drift_p90`` absolute, and the signed and absolute
        medians with it divided out; None without a timing record)."""
        vals = (self.median_abs_pct, self.p90_abs_pct, self.median_signed_pct, self.noise_median_pct,
                self.noise_p90_pct)
        rnd = lambda v: None if v is None else round(v, 3)
        fixed, now, both = self.drift_corrected_pct(), self.cache_now_pct(), self.cache_now_pct(with_drift=True)
        return {**{k: round(v, 3) for k, v in zip(SUMMARY_KEYS, vals)}, "points": len(self.rows),
                "drift_median": rnd(self.drift_median_pct), "drift_p90": rnd(self.drift_p90_pct),
                "drift_points": len(self.drift),
                "median_signed_error_drift_corrected": rnd(fixed[0] if fixed else None),
                "median_abs_error_drift_corrected": rnd(fixed[1] if fixed else None),
                "cache_mib": rnd(self.cache_then_bytes / 2 ** 20 if self.cache_then_bytes else None),
                "cache_now_mib": rnd(self.cache_now_bytes / 2 ** 20 if self.cache_now_bytes else None),
                "cache_points": self.cache_points,
                "median_signed_error_cache_now": rnd(now[0] if now else None),
                "median_abs_error_cache_now": rnd(now[1] if now else None),
                "median_signed_error_cache_now_drift_corrected": rnd(both[0] if both else None)}

    def to_dict(self) -> dict:
        """Everything as plain data: the layer, the load, every point, the drift, the summary (``--json``)."""
        return {"device": self.device, "d_model": self.d_model, "ffn": self.ffn, "rounds": self.rounds,
                "wall_s": round(self.wall_s, 2), "load_before": self.load_before, "load_after": self.load_after,
                "points": [r.to_dict() for r in self.rows],
                "drift": [{"shape": d.shape, "then_s": d.then_s, "now_s": d.now_s, "drift_pct": round(d.drift_pct, 3)}
                          for d in self.drift],
                "summary": self.summary()}

    def lines(self) -> list[str]:
        """The table as plain text lines, then the summary lines."""
        out = [f"MoE layer d_model={self.d_model} ffn={self.ffn} on {self.device}",
               (f"{'experts':>7} {'top_k':>5} {'tokens':>6} {'cf':>5} {'dropped':>7} {'predicted_ms':>12} "
                f"{'measured_ms':>11} {'error':>8} {'noise':>7}")]
        for r in self.rows:
            out.append(f"{r.experts:>7} {r.top_k:>5} {r.tokens:>6} {r.capacity_factor:>5.2f} {r.dropped:>7} "
                       f"{r.predicted_s * 1e3:>12.4f} {r.measured_s * 1e3:>11.4f} {r.error_pct:>+7.1f}% "
                       f"{r.noise_pct:>6.1f}%")
        out.append(f"model error over {len(self.rows)} points: median {self.median_abs_pct:.1f}%, "
                   f"p90 {self.p90_abs_pct:.1f}%, median signed {self.median_signed_pct:+.1f}%")
        out.append(f"noise floor (two measurements of each point, separate rounds): median "
                   f"{self.noise_median_pct:.1f}%, p90 {self.noise_p90_pct:.1f}%")
        if self.drift:
            out.append(f"drift since calibration ({len(self.drift)} of its layer points measured again): median "
                       f"{self.drift_median_pct:+.1f}%, p90 of |drift| {self.drift_p90_pct:.1f}%")
            signed, absolute = self.drift_corrected_pct()
            out.append(f"model error with that drift divided out: median {absolute:.1f}%, median signed {signed:+.1f}%")
        if self.predicted_cache_now_s:
            signed, absolute = self.cache_now_pct()
            out.append(f"cache edge now ({self.cache_points} of its grouped points measured again): "
                       f"{self.cache_now_bytes / 2 ** 20:.1f} MiB against {self.cache_then_bytes / 2 ** 20:.1f} MiB "
                       f"at calibration; model error with it: median {absolute:.1f}%, median signed {signed:+.1f}%")
            both = self.cache_now_pct(with_drift=True)
            if both:
                out.append(f"with that cache and the drift divided out: median {both[1]:.1f}%, "
                           f"median signed {both[0]:+.1f}%")
        return out


def validate(profile: Profile, device: str = "auto", points: list | None = None, d_model: int | None = None,
             ffn: int | None = None, min_time_s: float = 0.05, threads: int | None = None, rounds: int = 4,
             max_rounds: int = 8, precision: float = 0.03, budget_s: float = math.inf,
             tick: Callable[[str], None] = lambda _: None,
             on_round: Callable[[int, int], None] | None = None) -> ValidationReport:
    """Measure the reference layer at each point and compare with the profile's prediction.

    ``threads`` defaults to the count the profile was measured with. Every point is sampled in at
    least ``rounds`` rounds (even: half of them give each of the two measurements of the noise
    floor), then in pairs of rounds until its median is known to ``precision`` or it has
    ``max_rounds`` samples; extra rounds start only within ``budget_s``.
    """
    import torch
    from moesim.calibrate.run import torch_threads

    dev = pick_device(device)
    grid = grid_for(dev, quick=True)
    d, f = d_model or grid.layer_d_model, ffn or grid.layer_ffn
    impl, _ = expert_fn_for(dev)
    n_threads = threads or int(profile.framework.get("threads", 0)) or torch.get_num_threads()
    pts = points if points is not None else validation_points()
    then = calibration_layer_points(profile, d, f)
    rule = PrecisionRule(target=precision, min_samples=rounds, max_samples=max(max_rounds, rounds))
    before = machine_load()
    with torch_threads(n_threads), torch.inference_mode():
        cache = InputCache(cache_budget(dev))
        layer = layer_points(pts, d, f, dev, profile.dtype, impl, cache, kind="validate")
        again = layer_points([shape for shape, _ in then], d, f, dev, profile.dtype, impl, cache, kind="drift")
        edge = grouped_points_at(calibration_cache_points(profile), dev, profile.dtype, impl, cache, kind="cache")
        everything, run = measure_points(layer + again + edge, dev, min_time_s, rule, budget_s, tick, pairs=True,
                                         on_round=on_round, guaranteed=min(rounds, 2))
        measured = everything[:len(layer)]
        halves = [st.halves(rule) for st in run.points[:len(layer)]]
    n_layer, n_drift = len(layer), len(again)
    drift = [DriftRow(shape_label(m.params), then_s, m.time_s)
             for m, (_, then_s) in zip(everything[n_layer:n_layer + n_drift], then)]
    edge_now = everything[n_layer + n_drift:]  # grouped GEMMs (grouped_pred_s reads their params)
    cache_now = best_cache_bytes(edge_now, profile, profile.dtype) if edge_now else None
    cms = [cost_model(hardware_for(profile), profile)]
    if cache_now is not None:
        now = profile.model_copy(update={"cache_bytes": cache_now})
        cms.append(cost_model(hardware_for(now), now))
    rows, preds_now = [], []
    for m, (a, b) in zip(measured, halves):
        p = m.params
        pred, *with_now = (moe_layer_s(c, p["tokens"], d, f, p["experts"], p["top_k"], p["counts"], dtype=profile.dtype,
                                       capacity=p["capacity_factor"] is not None, loop=impl == "loop") for c in cms)
        preds_now += with_now
        split = rounds >= 2
        rows.append(ValidationRow(p["experts"], p["top_k"], p["tokens"], p["capacity_factor"], p["dropped"],
                                  pred, m.time_s, a if split else 0.0, b if split else 0.0, m.spread, m.samples,
                                  tuple(int(c) for c in p["counts"])))
    return ValidationReport(device=f"{dev} ({profile.device}, {n_threads} threads)", d_model=d, ffn=f, rows=rows,
                            rounds=run.rounds, wall_s=run.wall_s, load_before=before, load_after=machine_load(),
                            drift=drift, cache_then_bytes=profile.cache_bytes if edge_now else None,
                            cache_now_bytes=cache_now, cache_points=len(edge_now),
                            predicted_cache_now_s=tuple(preds_now))


def calibration_cache_points(profile: Profile) -> list[tuple[int, int, int, int]]:
    """(experts, m, n, k) of the profile's recorded grouped GEMMs at the cache's edge: those between
    its fewest and its most experts (none without a timing record, a cache or grouped tables)."""
    if profile.timing is None or profile.cache_bytes is None or profile.grouped is None:
        return []
    shapes = [parse_shape(p.shape) for p in profile.timing.point_spreads if p.kind == "grouped"]
    if not shapes:
        return []
    few, most = min(q["experts"] for q in shapes), max(q["experts"] for q in shapes)
    return [(q["experts"], q["m"], q["n"], q["k"]) for q in shapes if few < q["experts"] < most]


def calibration_layer_points(profile: Profile, d_model: int, ffn: int,
                             max_tokens: int = DRIFT_MAX_TOKENS) -> list[tuple[tuple, float]]:
    """((experts, top_k, tokens, capacity factor), seconds) of the profile's recorded whole-layer
    points of this layer shape and at most ``max_tokens`` tokens (none without a timing record)."""
    if profile.timing is None:
        return []
    out = []
    for p in profile.timing.point_spreads:
        if p.kind != "layer":
            continue
        q = parse_shape(p.shape)
        if q.get("d_model") == d_model and q.get("ffn") == ffn and q.get("tokens", max_tokens + 1) <= max_tokens:
            out.append(((q["experts"], q["top_k"], q["tokens"], q["capacity_factor"]), p.us * 1e-6))
    return out
