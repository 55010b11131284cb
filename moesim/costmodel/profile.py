"""Calibration profiles: measured efficiencies the cost model reads instead of datasheet constants.

A profile is a YAML file written by ``moesim calibrate`` (local device) or by
``python -m moesim.calibrate.fit_vidur`` (the shipped A100/H100 defaults). Every efficiency is a fraction
of the profile's ``reference`` peak (FLOP/s per dtype, memory GB/s); times are in microseconds.

Shape tables interpolate linearly in log2 of their axes and clamp at the edges, so a shape outside
the measured range takes the nearest measured efficiency (large GEMMs saturate; tiny ones are
bandwidth- or launch-bound and the roofline's memory term and launch overhead carry them).
"""

from __future__ import annotations

import re
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Literal

import numpy as np
import yaml
from pydantic import (
    Field,
    NonNegativeFloat,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    ValidationError,
)

from moesim.errors import InputError
from moesim.fileio import atomic_write_text
from moesim.schemas import DeviceSpec
from moesim.schemas._base import Strict
from moesim.schemas.hardware import DATASHEET, peak_flops_of

from .flash_attention import KERNELS as FLASH_KERNELS
from .host import CUDA_HOST_DEFAULTS as _HOST
from .tables import AttentionTable, BytesCurve, ElementCurve, GemmTable, RouterTable, safe_log2

#: Flash-attention kernel tables a profile may name: the keys of ``costmodel.flash_attention.KERNELS``.
FlashKernel = Literal[tuple(FLASH_KERNELS)]  # type: ignore[valid-type]

PROFILE_FORMAT = "moesim-profile"
PROFILE_VERSION = 1
#: Largest profile YAML read (the shipped ones are < 10 KiB).
MAX_PROFILE_BYTES = 4 << 20

#: Shipped default profiles by device name, for devices that do not name one (``DeviceSpec.default_profile``:
#: inline devices of older scenario files): a device whose name contains the key (as a word) uses the file.
#: The presets name theirs (``moesim/presets/hardware.py``); H200 and H800 borrow the H100's, and so do B200,
#: GB200, GB300 and B300 (with the B200's measured GEMM ratio, ``DeviceSpec.profile_gemm_ratio``: the presets' comments
#: say how far that carries).
DEFAULT_PROFILES: dict[str, str] = {"a100": "a100.yaml", "h100": "h100.yaml", "h200": "h100.yaml",
                                    "h800": "h100.yaml", "b200": "h100.yaml", "gb200": "h100.yaml",
                                    "gb300": "h100.yaml", "b300": "h100.yaml", "gh200": "h100.yaml"}


class Reference(Strict):
    """The peaks efficiencies are fractions of (a datasheet, or the best rate measured)."""

    peak_tflops: dict[str, PositiveFloat] = Field(min_length=1, description="Peak TFLOP/s per dtype.")
    mem_bw_gbps: PositiveFloat = Field(description="Memory bandwidth, GB/s.")

    def peak_flops(self, dtype: str) -> float:
        """Peak FLOP/s for ``dtype``, falling back to bf16, fp16, then fp32."""
        return peak_flops_of(self.peak_tflops, dtype)


class GroupedSpec(Strict):
    """A grouped expert GEMM: per-expert efficiency table, one launch, a cost per busy expert.

    ``efficiency`` is measured with many experts, so their weights stream from memory ("cold").
    With the profile's ``cache_bytes`` set (CPUs) a small working set runs at the dense GEMM
    table's ("hot") efficiency instead; see ``Profile.cold_fraction``.
    """

    efficiency: GemmTable = Field(description="Efficiency vs tokens per expert and expert weight size (cold weights).")
    launch_overhead_us: NonNegativeFloat = Field(description="Paid once per grouped call, us.")
    per_expert_overhead_us: NonNegativeFloat = Field(0.0, description="Paid per expert with tokens, us.")
    copy_ns_per_element: NonNegativeFloat = Field(
        0.0, description="Loop implementations: copying each expert's output rows into place, ns per output element.")


class AttentionSpec(Strict):
    """Attention kernels: prefill compute efficiency vs (queries, keys); decode KV-read efficiency."""

    prefill_efficiency: AttentionTable = Field(description="Compute efficiency vs query and key tokens per sequence.")
    decode_memory_efficiency: float = Field(gt=0, le=1, description="Fraction of reference bandwidth reading KV.")
    launch_overhead_us: NonNegativeFloat = Field(description="Fixed cost per attention kernel, us.")
    kernel: Literal["contiguous", "paged"] = Field(
        "contiguous", description="What the prefill table measured: contiguous Q/K/V (flash attention or SDPA, "
        "as training runs and `moesim calibrate` measures) or a serving engine's kernel over a paged KV cache "
        "(Vidur's vLLM profiles), which prices serving only; training then takes the profile's `flash_attention` "
        "table, or else the datasheet's rate.")


class LinkSpec(Strict):
    """Alpha-beta of one collective on one kind of link."""

    bw_gbps: PositiveFloat = Field(description="Achieved bandwidth per direction, GB/s.")
    latency_us: NonNegativeFloat = Field(description="Per-step latency, us.")


class CollectiveSpec(Strict):
    """A collective measured inside one node (NVLink) and/or across nodes (NIC).

    ``*_by_ranks`` hold fits for single group sizes (NCCL's fixed cost does not grow as 2(n-1)
    steps); the cost model prefers the exact group size and falls back to the pooled fit.
    """

    intra: LinkSpec | None = None
    inter: LinkSpec | None = None
    intra_by_ranks: dict[int, LinkSpec] = Field(default_factory=dict)
    inter_by_ranks: dict[int, LinkSpec] = Field(default_factory=dict)

    def link(self, intra: bool, ranks: int | None = None) -> LinkSpec | None:
        """The measured link for a group of ``ranks`` (None: not measured)."""
        by_ranks = self.intra_by_ranks if intra else self.inter_by_ranks
        if ranks in by_ranks:
            return by_ranks[ranks]
        return self.intra if intra else self.inter


class CollectivesSpec(Strict):
    """Ring all-reduce (``2(n-1)/n * bytes / bw + 2(n-1) * latency``), send/recv (``latency + bytes / bw``)
    and all-to-all (``peers * latency + bytes_to_peers / bw``, as ``comm.alltoall_s``; measured by
    ``calibrate.collectives``; absent: the cost model prices all-to-all from send/recv)."""

    all_reduce: CollectiveSpec | None = None
    send_recv: CollectiveSpec | None = None
    all_to_all: CollectiveSpec | None = None
    link_gbps: PositiveFloat | None = Field(
        None, description="Per-direction intra-node link bandwidth of the node the collectives were measured on, "
        "GB/s. A profile rebased on a device whose node has another link (H800's cut NVLink, B200's NVLink 5) "
        "scales its intra-node links by the new link over this one, keeping their measured fraction of the "
        "link; null: the links are used as measured.")

    def on_link(self, link_gbps: float | None) -> CollectivesSpec:
        """These collectives on a node whose intra-node link is ``link_gbps`` per direction: intra-node
        bandwidths scaled by it over the measured node's, latencies kept (unchanged when either is unknown)."""
        if link_gbps is None or self.link_gbps is None or link_gbps == self.link_gbps:
            return self
        ratio = link_gbps / self.link_gbps

        def scaled(link: LinkSpec) -> LinkSpec:
            return link.model_copy(update={"bw_gbps": link.bw_gbps * ratio})

        update: dict = {"link_gbps": link_gbps}
        for name in ("all_reduce", "send_recv", "all_to_all"):
            c = getattr(self, name)
            if c is not None:
                update[name] = c.model_copy(update={
                    "intra": scaled(c.intra) if c.intra else None,
                    "intra_by_ranks": {n: scaled(x) for n, x in c.intra_by_ranks.items()}})
        return self.model_copy(update=update)


class ElementwiseSpec(Strict):
    """Measured costs of the compute-heavy elementwise kernels of a MoE layer (CPUs, where exp and
    top-k, not bytes, set their pace). Absent: the cost model prices them as memory streams."""

    activation: ElementCurve | None = Field(None, description="Gated activation silu(gate) * up, by output elements.")
    router: RouterTable | None = Field(None, description="Softmax + top-k + renormalise after the router GEMM.")


class MoEOverheadSpec(Strict):
    """Host-side cost of one MoE layer beyond its kernels (routing bookkeeping, the expert loop)."""

    fixed_us: NonNegativeFloat = Field(0.0, description="Per layer call, us.")
    per_busy_expert_us: NonNegativeFloat = Field(0.0, description="Per expert with tokens, us.")
    capacity_us: NonNegativeFloat = Field(0.0, description="Extra per layer call when a capacity drops tokens, us.")
    per_assignment_us: NonNegativeFloat = Field(0.0, description="Per routed assignment (token x expert) the layer computes, us.")


class RowTileSpec(Strict):
    """How a GEMM kernel pays for a token count that is not a multiple of its row tile.

    The kernel computes rows in tiles of ``rows``; past the first tile a partial tile costs a whole
    one (``remainder: ceil``: rounds up to a multiple of ``rows``) or, for CPU micro-kernels that
    split the remainder into power-of-2 sub-tiles each paid like a full tile (``binary``: 4-row
    tiles, 11 rows = 8 + 2 + 1 costs 16). Measured from GEMMs at irregular token counts
    (``calibrate.fit_local.fit_row_tile``); applied to the expert GEMMs, whose per-expert token
    counts are irregular, by ``calibrate.predict``."""

    rows: PositiveInt = Field(1, description="Row tile of the GEMM kernel (1: no padding).")
    remainder: Literal["ceil", "binary"] = Field("ceil", description="How a partial tile is paid.")

    def padded(self, m):
        """Rows the kernel computes for ``m`` rows (``m`` itself up to one tile)."""
        m = np.asarray(m, dtype=float)
        r = self.rows
        if r <= 1:
            return m
        full, rem = np.floor(m / r), np.mod(m, r)
        if self.remainder == "ceil":
            pad = r * (full + (rem > 0))
        else:
            pad = r * (full + _popcount(rem.astype(np.int64)))
        return np.where(m > r, pad, m)


def _popcount(x: np.ndarray) -> np.ndarray:
    count = np.zeros_like(x)
    while np.any(x > 0):
        count += x & 1
        x = x >> 1
    return count


class DispatchSpec(Strict):
    """The reference MoE layer's dispatch (``kernels.moe_ref.dispatch``): sort the tokens x top_k
    assignments by expert, count them per expert, drop those over a capacity, read the counts back
    to the host. Measured on its own (``calibrate.microbench.dispatch_points``); priced by
    ``calibrate.predict`` for the reference layer (the engines' fused permute kernels include theirs)."""

    fixed_us: NonNegativeFloat = Field(0.0, description="Per layer call, us.")
    per_assignment_ns: NonNegativeFloat = Field(0.0, description="Per routed assignment (tokens x top_k), ns.")
    per_expert_ns: NonNegativeFloat = Field(0.0, description="Per expert (counts, their copy to the host), ns.")
    capacity_us: NonNegativeFloat = Field(0.0, description="Extra per call when a capacity is enforced, us.")
    capacity_per_assignment_ns: NonNegativeFloat = Field(0.0, description="Extra per routed assignment with a capacity, ns.")

    def seconds(self, assignments, n_experts, capacity: bool):
        """Seconds of one dispatch of ``assignments`` routed assignments over ``n_experts`` experts."""
        n = np.asarray(assignments, dtype=float)
        t = self.fixed_us * 1e-6 + n * self.per_assignment_ns * 1e-9 + float(n_experts) * self.per_expert_ns * 1e-9
        if capacity:
            t = t + self.capacity_us * 1e-6 + n * self.capacity_per_assignment_ns * 1e-9
        return t


class HostSpec(Strict):
    """Per-iteration host (scheduler) time and kernel-launch mode of the serving engine, and the
    host floor of a training MoE layer pass.

    Defaults: a vLLM V1-class engine on a CUDA GPU; ``costmodel/host.py`` cites each number and
    holds the Apple MPS / CPU defaults (a profile for those should give every field).
    """

    iteration_fixed_us: NonNegativeFloat = Field(_HOST["iteration_fixed_us"], description="Host time per iteration (schedule, input prep, output processing), us.")
    per_seq_us: NonNegativeFloat = Field(_HOST["per_seq_us"], description="Host time per scheduled sequence per iteration, us.")
    eager_launch_us: NonNegativeFloat = Field(_HOST["eager_launch_us"], description="CPU time per eagerly launched kernel, us (exposed where the GPU work is shorter).")
    graph_launch_us: NonNegativeFloat = Field(_HOST["graph_launch_us"], description="CPU cost of one CUDA graph replay, us.")
    graph_node_us: NonNegativeFloat = Field(_HOST["graph_node_us"], description="Gap per kernel (node) of a replayed graph, on top of the kernel's own GPU time, us; eager kernels keep the same gap.")
    graph_max_batch: NonNegativeInt = Field(_HOST["graph_max_batch"], description="Largest decode batch replayed as a CUDA graph (0: no graphs).")
    overlap_decode: bool = Field(_HOST["overlap_decode"], description="Host work of decode steps overlaps the GPU (scheduler one step ahead).")
    overlap_prefill: bool = Field(_HOST["overlap_prefill"], description="Host work of prefill/mixed steps overlaps the GPU.")
    per_seq_group: bool = Field(False, description=(
        "Under plan.dp_attention the per-sequence time counts every sequence of the lock-step group, not only "
        "the rank's own (TensorRT-LLM; costmodel/host.py)."))
    train_moe_layer_us: NonNegativeFloat = Field(_HOST["train_moe_layer_us"], description=(
        "Training: least time of one MoE layer's forward + backward for one micro-batch (eager host issue), us; "
        "0: none. See costmodel/train_host.py."))


class TimedPoint(Strict):
    """One measured point of a calibration: its median and how well it is known."""

    kind: str = Field(description="Benchmark: gemm, grouped, copy, attn_prefill, attn_decode, router, activation, dispatch, layer.")
    shape: str = Field(description="Its shape, e.g. 'm=1 n=4 k=256'.")
    us: NonNegativeFloat = Field(description="Median over the samples kept, us.")
    spread_pct: NonNegativeFloat = Field(0.0, description="Interquartile range of the samples kept over their median, percent.")
    ci_pct: NonNegativeFloat = Field(0.0, description="Relative half-width of the ~95 % interval of the median, percent (0: one sample).")
    samples: NonNegativeInt = Field(1, description="Samples kept (one per round).")
    outliers: NonNegativeInt = Field(0, description="Samples set aside as outliers and re-measured.")


class TimingSpec(Strict):
    """How a locally calibrated profile was timed (``kernels.timing.measure_interleaved``) and how busy
    the machine was. Absent from older profiles and from the shipped (fitted, not measured) ones."""

    precision_pct: NonNegativeFloat = Field(3.0, description="Target relative half-width of each median's ~95 % interval, percent.")
    min_rounds: NonNegativeInt = Field(0, description="Samples every point got.")
    max_rounds: NonNegativeInt = Field(0, description="Most samples a point could get (outliers re-measured included).")
    rounds: NonNegativeInt = Field(0, description="Rounds run.")
    budget_s: NonNegativeFloat = Field(0.0, description="Seconds after which no extra round started (0: none).")
    wall_s: NonNegativeFloat = Field(0.0, description="Seconds the kernel measurements took.")
    out_of_time: bool = Field(False, description="Extra rounds were cut short by budget_s.")
    cpus: NonNegativeInt = Field(0, description="CPUs this process could run on.")
    threads: NonNegativeInt = Field(0, description="torch threads while measuring.")
    load_before: list[NonNegativeFloat] = Field(default_factory=list, description="Load average (1, 5, 15 min) before measuring.")
    load_after: list[NonNegativeFloat] = Field(default_factory=list, description="Load average (1, 5, 15 min) after measuring.")
    points: NonNegativeInt = Field(0, description="Points measured.")
    converged: NonNegativeInt = Field(0, description="Points whose median reached precision_pct.")
    spread_median_pct: NonNegativeFloat = Field(0.0, description="Median over points of spread_pct.")
    spread_p90_pct: NonNegativeFloat = Field(0.0, description="90th percentile over points of spread_pct.")
    point_spreads: list[TimedPoint] = Field(default_factory=list, description="Every point measured.")


class FitError(Strict):
    """Absolute relative error of the fitted model on rows not used to fit it, in percent."""

    rows_fit: int = Field(ge=0)
    rows_held_out: int = Field(ge=0)
    median_abs_pct: NonNegativeFloat
    p90_abs_pct: NonNegativeFloat
    max_abs_pct: NonNegativeFloat


class Profile(Strict):
    """A measured device: what the cost model reads in place of datasheet efficiencies."""

    format: Literal["moesim-profile"] = PROFILE_FORMAT
    version: int = PROFILE_VERSION
    device: str = Field(description="Device name; must match the scenario's hardware.device.name.")
    platform: str = Field(description="cuda, mps or cpu (where it was measured).")
    source: str = Field(description="Who measured it and how (command, or cited data set).")
    created: str = Field(description="ISO date of the fit.")
    framework: dict[str, str] = Field(default_factory=dict, description="Versions: torch, triton, cuda, python.")
    dtype: str = Field(description="dtype the kernels were measured in.")
    reference: Reference
    measured_reference: Reference | None = Field(
        None, description="Peaks of the device the profile was measured on, when it was rebased on a sibling "
        "device (then each GEMM keeps its measured fraction of the roofline); null: measured on this one.")
    sibling_gemm_ratio: Literal["b200-vs-h100", "gb200-vs-h100"] | None = Field(
        None, description="Set when rebased on a device of another architecture (its hardware.device."
        "profile_gemm_ratio): each GEMM's measured fraction of the roofline is scaled by that device's measured "
        "fraction over this profile device's at the same FLOPs (moesim/costmodel/sibling_gemm.py).")
    launch_overhead_us: NonNegativeFloat = Field(description="Fixed cost per kernel, us.")
    attention_fixed_us: NonNegativeFloat | None = Field(
        None, description="Without a measured attention table (`attention`): the fixed GPU time of one attention "
        "call (a serving decode kernel and its split-KV combine at a short context; training's flash calls too), us "
        "(costmodel/attention_floor.py); null: launch_overhead_us.")
    memory_efficiency: float = Field(gt=0, le=1, description="Fraction of reference bandwidth streaming kernels reach.")
    cache_bytes: PositiveFloat | None = Field(
        None, description="Effective cache size, bytes (CPUs; fitted from whole-layer runs, usually below the "
        "nominal last-level cache). Null: every working set streams from memory.")
    memory_curve: BytesCurve | None = Field(
        None, description="Memory efficiency by bytes moved (CPUs: caches); null: memory_efficiency everywhere.")
    gemm: GemmTable
    gemm_memory_efficiency: float | None = Field(
        None, gt=0, le=1,
        description="Fraction of reference bandwidth the fastest weight-streaming GEMMs reached: the memory "
        "floor under the GEMM table (matters when a profile is rebased on a device with other bandwidth); "
        "null: the table alone (CPUs, whose caches beat DRAM bandwidth).")
    grouped: GroupedSpec | None = None
    attention: AttentionSpec | None = None
    flash_attention: FlashKernel | None = Field(
        None, description="Training's flash attention over contiguous Q/K/V: the published kernel benchmark that "
        "prices it (moesim/data/flash_attention.csv, fitted in costmodel/flash_attention.py); null: `attention`'s "
        "table when it measured a contiguous kernel, else the datasheet rate.")
    collectives: CollectivesSpec | None = None
    elementwise: ElementwiseSpec | None = None
    moe_overhead: MoEOverheadSpec | None = None
    dispatch: DispatchSpec | None = Field(None, description="The reference layer's dispatch, measured (local calibrations).")
    gemm_rows: RowTileSpec | None = Field(None, description="The GEMM kernel's row tile, measured (local calibrations).")
    host: HostSpec | None = None
    fit_error: dict[str, FitError] = Field(default_factory=dict, description="Held-out error per fitted part.")
    timing: TimingSpec | None = Field(None, description="How the points were timed and the machine's load (local calibrations).")
    notes: list[str] = Field(default_factory=list)

    def cold_fraction(self, working_set_bytes) -> np.ndarray:
        """0 (fits in cache) .. 1 (streams from memory): 0 up to half the cache, 1 from twice it,
        linear in log2 between. Always 1 without ``cache_bytes``."""
        ws = np.asarray(working_set_bytes, dtype=float)
        if self.cache_bytes is None:
            return np.ones_like(ws)
        return np.clip((safe_log2(ws / self.cache_bytes) + 1.0) / 2.0, 0.0, 1.0)

    def streaming_efficiency(self, working_set_bytes) -> np.ndarray:
        """Memory efficiency of a streaming kernel moving ``working_set_bytes``."""
        ws = np.asarray(working_set_bytes, dtype=float)
        if self.memory_curve is None:
            return np.full(ws.shape, self.memory_efficiency)
        return self.memory_curve.lookup(ws)

    def rebased(self, device: DeviceSpec, link_gbps: float | None = None) -> Profile:
        """This profile applied to a sibling device: same efficiencies, the device's datasheet peaks.

        Used for shipped defaults (an A100 40GB keeps the A100 80GB efficiencies but its own 1555 GB/s).
        Inter-node collectives are dropped: the scenario's cluster section describes the network.
        A device of another architecture names its measured GEMM ratio (``profile_gemm_ratio``).
        ``link_gbps``: the node's intra-node link per direction; intra-node collectives measured on
        another link scale with it (``CollectivesSpec.on_link``).
        """
        coll = self.collectives
        if coll is not None:
            coll = coll.model_copy(update={
                name: c.model_copy(update={"inter": None, "inter_by_ranks": {}}) if c else None
                for name, c in (("all_reduce", coll.all_reduce), ("send_recv", coll.send_recv),
                                ("all_to_all", coll.all_to_all))
            }).on_link(link_gbps)
        ref = Reference(peak_tflops=dict(device.peak_tflops), mem_bw_gbps=device.mem_bw_gbps)
        measured = self.measured_reference or self.reference
        return self.model_copy(update={"reference": ref, "measured_reference": measured, "collectives": coll,
                                       "device": device.name,
                                       "sibling_gemm_ratio": device.profile_gemm_ratio or self.sibling_gemm_ratio})


# ---------------------------------------------------------------- files


def load_profile(path: str | Path) -> Profile:
    """Read and validate a profile YAML; every failure is a one-line InputError naming the file."""
    from moesim.loader import parse_yaml, read_text_file  # size, nesting and encoding limits

    p = Path(path)
    text = read_text_file(p, MAX_PROFILE_BYTES, "a moesim profile YAML")
    return profile_from_dict(parse_yaml(text, f"{p}: corrupt profile"), str(p))


def profile_from_dict(data: object, label: str = "profile") -> Profile:
    """Validate plain data into a Profile (format and version checked first)."""
    if not isinstance(data, dict) or data.get("format") != PROFILE_FORMAT:
        raise InputError(f"{label}: not a moesim profile (expected 'format: {PROFILE_FORMAT}')")
    version = data.get("version")
    if version != PROFILE_VERSION:
        raise InputError(
            f"{label}: profile version {version!r} is not supported (this moesim reads version "
            f"{PROFILE_VERSION}); rerun `moesim calibrate`"
        )
    try:
        return Profile.model_validate(data)
    except ValidationError as exc:
        err = exc.errors(include_url=False)[0]
        where = ".".join(str(x) for x in err["loc"])
        msg = str(err["msg"]).removeprefix("Value error, ")
        raise InputError(f"{label}: invalid profile field {where}: {msg}") from None


def profile_to_yaml(profile: Profile) -> str:
    """The profile as YAML text (keys in schema order)."""
    head = f"# moesim calibration profile for {profile.device} ({profile.source})\n"
    data = profile.model_dump(mode="json", exclude_none=True)
    notes = data.pop("notes", [])
    body = yaml.safe_dump(data, sort_keys=False, width=100, default_flow_style=None)
    if notes:  # block style: one readable line per note
        body += yaml.safe_dump({"notes": notes}, sort_keys=False, width=100, default_flow_style=False)
    return head + body


def save_profile(profile: Profile, path: str | Path) -> Path:
    """Write ``profile`` to ``path`` atomically (a temp file renamed over the target)."""
    atomic_write_text(path, profile_to_yaml(profile))
    return Path(path)


# ---------------------------------------------------------------- device matching


def normalise_device_name(name: str) -> str:
    """Lower case, vendor prefixes and punctuation removed: 'NVIDIA A100-SXM4-80GB' -> 'a100 sxm4 80gb'."""
    words = re.sub(r"[^a-z0-9]+", " ", name.lower()).split()
    return " ".join(w for w in words if w not in {"nvidia", "amd", "intel", "r", "tm", "apple"})


def check_device(profile: Profile, device_name: str, label: str = "hardware.profile", force: bool = False,
                 how_to_force: str = "set hardware.force_profile: true (or MOESIM_FORCE_PROFILE=1)") -> None:
    """Raise InputError when the profile was measured on another device than the scenario names;
    ``how_to_force`` tells the caller's way to accept it anyway (a scenario field, a CLI flag)."""
    if force or normalise_device_name(profile.device) == normalise_device_name(device_name):
        return
    raise InputError(
        f"{label}: profile is for device {profile.device!r} but this device is {device_name!r}; "
        f"use a profile from this device, or {how_to_force}"
    )


def default_profile_name(device_name: str) -> str | None:
    """File name of the shipped default profile matching a device name (``DEFAULT_PROFILES``), or None."""
    words = set(normalise_device_name(device_name).split())
    for key, fname in DEFAULT_PROFILES.items():
        if key in words:
            return fname
    return None


@cache
def load_default_profile(fname: str) -> Profile:
    """A shipped profile from ``moesim/data/profiles`` (read once per process)."""
    ref = resources.files("moesim").joinpath("data", "profiles", fname)
    with resources.as_file(ref) as path:
        return load_profile(path)


def default_profile_file(device: DeviceSpec) -> str | None:
    """The default cost model ``device`` names: its ``default_profile`` (a shipped profile's file name, or
    ``DATASHEET``), else the shipped profile matching its name (``default_profile_name``), else None."""
    return device.default_profile if device.default_profile is not None else default_profile_name(device.name)


def default_profile_for(device: DeviceSpec, link_gbps: float | None = None) -> Profile | None:
    """The shipped default profile for ``device`` rebased on its datasheet (and its node's intra-node
    link, ``link_gbps`` per direction), or None (use the datasheet).

    ``device.default_profile`` names it ("datasheet": none); a device without one falls back to
    matching its name (``default_profile_name``), so older inline devices keep their profile.
    """
    fname = default_profile_file(device)
    if fname is None or fname == DATASHEET:
        return None
    return load_default_profile(fname).rebased(device, link_gbps)
