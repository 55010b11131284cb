"""The proof: predicted vs measured time of the reference MoE layer over a held-out grid.

Grid (none of it measured by calibration): experts 8/16/64 x top-k 1/2 x tokens 1..4096 x
capacity factor 1.0/1.25. Each point is measured with ``kernels.moe_ref.moe_forward`` and predicted
by ``calibrate.predict.moe_layer_s`` from the profile's CostModel, given the kept assignments per
expert of that point's routing (the same input the simulator's routing sampler would produce counts
for). The measured time is never used by the prediction.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from moesim.calibrate.fit_local import hardware_for
from moesim.calibrate.grids import grid_for
from moesim.calibrate.microbench import expert_fn_for, time_layer
from moesim.calibrate.predict import moe_layer_s
from moesim.kernels.timing import pick_device

from moesim.costmodel import cost_model
from moesim.costmodel.profile import Profile

EXPERTS = (8, 16, 64)
TOP_K = (1, 2)
TOKENS = (1, 4, 16, 64, 256, 1024, 4096)
CAPACITY_FACTORS = (1.0, 1.25)


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

    @property
    def error_pct(self) -> float:
        """Signed error of the prediction, percent of the measured time."""
        return 100.0 * (self.predicted_s - self.measured_s) / self.measured_s


@dataclass(frozen=True)
class ValidationReport:
    device: str
    d_model: int
    ffn: int
    rows: list[ValidationRow]

    @property
    def median_abs_pct(self) -> float:
        return float(np.median([abs(r.error_pct) for r in self.rows]))

    @property
    def p90_abs_pct(self) -> float:
        return float(np.percentile([abs(r.error_pct) for r in self.rows], 90))

    def lines(self) -> list[str]:
        """The table as plain text lines, then the summary line."""
        out = [f"MoE layer d_model={self.d_model} ffn={self.ffn} on {self.device}",
               (f"{'experts':>7} {'top_k':>5} {'tokens':>6} {'cf':>5} {'dropped':>7} {'predicted_ms':>12} "
                f"{'measured_ms':>11} {'error':>8}")]
        for r in self.rows:
            out.append(f"{r.experts:>7} {r.top_k:>5} {r.tokens:>6} {r.capacity_factor:>5.2f} {r.dropped:>7} "
                       f"{r.predicted_s * 1e3:>12.4f} {r.measured_s * 1e3:>11.4f} {r.error_pct:>+7.1f}%")
        out.append(f"abs error over {len(self.rows)} points: median {self.median_abs_pct:.1f}%, "
                   f"p90 {self.p90_abs_pct:.1f}%")
        return out


def validate(profile: Profile, device: str = "auto", points: list | None = None, d_model: int | None = None,
             ffn: int | None = None, min_time_s: float = 0.05, threads: int | None = None, rounds: int = 3,
             tick: Callable[[str], None] = lambda _: None) -> ValidationReport:
    """Measure the reference layer at each point and compare with the profile's prediction.

    ``threads`` defaults to the count the profile was measured with. Every point is measured in
    ``rounds`` passes over the grid and keeps its median.
    """
    import torch
    from moesim.calibrate.run import median_rows, torch_threads

    dev = pick_device(device)
    grid = grid_for(dev, quick=True)
    d, f = d_model or grid.layer_d_model, ffn or grid.layer_ffn
    impl, _ = expert_fn_for(dev)
    n_threads = threads or int(profile.framework.get("threads", 0)) or torch.get_num_threads()
    pts = points if points is not None else validation_points()
    with torch_threads(n_threads), torch.inference_mode():
        measured = median_rows([time_layer(pts, d, f, dev, profile.dtype, impl, min_time_s, tick, kind="validate")
                                for _ in range(rounds)])
    cm = cost_model(hardware_for(profile), profile)
    rows = []
    for m in measured:
        p = m.params
        pred = moe_layer_s(cm, p["tokens"], d, f, p["experts"], p["top_k"], p["counts"], dtype=profile.dtype,
                           capacity=p["capacity_factor"] is not None, loop=impl == "loop")
        rows.append(ValidationRow(p["experts"], p["top_k"], p["tokens"], p["capacity_factor"], p["dropped"],
                                  pred, m.time_s))
    return ValidationReport(device=f"{dev} ({profile.device}, {n_threads} threads)", d_model=d, ffn=f, rows=rows)
