"""``moesim plan``'s options, parsed and checked (each bad one an InputError naming it), and the
candidate space they describe (:func:`prepare`: read the scenario, enumerate, screen)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from moesim.errors import InputError
from moesim.plan_space import (
    MAX_DEVICES,
    SERVING_OBJECTIVES,
    TRAINING_OBJECTIVES,
    Objective,
    Space,
)
from moesim.presets import HARDWARE


def parse_objective(text: str | None, training: bool) -> Objective:
    text = (text or "usd_per_mtok").strip()
    if training:
        if text not in TRAINING_OBJECTIVES:
            raise InputError(f"--objective {text!r}: for a training scenario allowed: {', '.join(TRAINING_OBJECTIVES)}")
        return Objective(text, text, TRAINING_OBJECTIVES[text])
    alias = {key: name for name, (key, _) in SERVING_OBJECTIVES.items()}
    name = alias.get(text, text)
    if name not in SERVING_OBJECTIVES:
        raise InputError(f"--objective {text!r}: for a serving scenario allowed: {', '.join(SERVING_OBJECTIVES)}")
    key, direction = SERVING_OBJECTIVES[name]
    return Objective(name, key, direction)


def _int(text: str, option: str) -> int:
    try:
        value = int(text.strip())
    except ValueError:
        raise InputError(f"{option} {text.strip()!r}: not a whole number") from None
    if value < 1 or value > MAX_DEVICES:
        raise InputError(f"{option} {value}: must be between 1 and {MAX_DEVICES}")
    return value


def parse_int_list(text: str, option: str, powers_of_two: bool = False) -> list[int]:
    """``"8,16,32"`` -> [8, 16, 32]; ``"8..64"`` -> the powers of two from 8 to 64."""
    text = (text or "").strip()
    if ".." in text:
        ends = text.split("..")
        if text.count(".") != 2 or not all(e.strip() for e in ends):
            raise InputError(f"{option} {text!r}: a range is LO..HI with both ends, e.g. 8..64")
        lo, hi = _int(ends[0], option), _int(ends[1], option)
        if lo & (lo - 1) or hi & (hi - 1):
            raise InputError(f"{option} {text!r}: a range LO..HI takes powers of two (e.g. 8..64); give a list otherwise")
        if lo > hi:
            raise InputError(f"{option} {text!r}: {lo} is more than {hi}")
        values = [1 << k for k in range(lo.bit_length() - 1, hi.bit_length())]
    else:
        items = text.split(",")
        if not text:
            raise InputError(f"{option}: give values, e.g. 8,16,32 or 8..64")
        if not all(t.strip() for t in items):
            raise InputError(f"{option} {text!r}: an empty value between commas")
        values = sorted({_int(t, option) for t in items})
        if len(values) != len(items):
            raise InputError(f"{option} {text!r}: a value is repeated")
    if powers_of_two and any(v & (v - 1) for v in values):
        bad = next(v for v in values if v & (v - 1))
        raise InputError(f"{option} {bad}: must be a power of two")
    if len(values) > 64:
        raise InputError(f"{option} {text!r}: {len(values)} values; at most 64")
    return values


def parse_hardware(text: str | None) -> list[str | None]:
    """Preset names (``h100-sxm,h200``); None stands for the scenario's own hardware."""
    if text is None or not text.strip():
        return [None]
    names = list(dict.fromkeys(t.strip() for t in text.split(",") if t.strip()))
    for name in names:
        if name not in HARDWARE:
            from moesim.suggest import did_you_mean

            hint = did_you_mean(name, HARDWARE, n=2, joiner=" or ")
            raise InputError(f"--hardware {name!r}: unknown preset{'; ' + hint if hint else ''}; allowed: "
                             f"{', '.join(sorted(HARDWARE))}")
    return names



def prepare(scenario_path: str | Path, *, devices: str | None = None, hardware: str | None = None,
            slo: str | None = None, objective: str | None = None, tp: str | None = None, pp: str | None = None,
            batch: str | None = None, sets: list[str] | tuple[str, ...] = (),
            exhaustive: bool = False) -> tuple[Space, Objective, Any]:
    """Read the scenario, parse the options (each bad one an InputError naming it), enumerate and
    screen the candidates (``exhaustive``: no dominance pruning). Returns ``(space, objective, slo)``."""
    from moesim.capacity import parse_slo
    from moesim.errors import InputError
    from moesim.loader import read_scenario
    from moesim.plan_space import (
        DEFAULT_BATCH_SEQS,
        DEFAULT_PP,
        enumerate_serving,
        enumerate_training,
        screen_serving,
        screen_training,
    )
    from moesim.shipped import resolve_scenario

    if hardware is not None and hardware.strip():  # --hardware puts bare presets in place of the scenario's hardware
        hw_set = next((x for x in sets if x.partition("=")[0].strip().split(".")[0] == "hardware"), None)
        if hw_set is not None:
            raise InputError(f"--set {hw_set.partition('=')[0].strip()}: --hardware {hardware.strip()} plans on those "
                             "presets as they are, so this override would be lost; plan one hardware at a time "
                             "(--set hardware=h200 --set hardware.device.usd_per_hour=2.5, without --hardware)")
    raw, base_dir, base = read_scenario(resolve_scenario(scenario_path), sets)
    training = base.is_training
    if training and slo:
        raise InputError(f"--slo applies to serving scenarios; {base.name} is a training scenario")
    if not training and not slo:
        raise InputError(f"--slo: required for a serving scenario ({base.name}); e.g. --slo ttft_p99=2,tpot_p99=0.2")
    slo_obj = parse_slo(slo) if slo else None
    obj = parse_objective(objective, training)
    dev = parse_int_list(devices, "--devices") if devices is not None else [base.hardware.n_devices]
    hw = parse_hardware(hardware)
    tps = parse_int_list(tp, "--tp", powers_of_two=True) if tp is not None else None
    pps = parse_int_list(pp, "--pp") if pp is not None else list(DEFAULT_PP)
    if training:
        if batch is not None:
            raise InputError("--max-batch-seqs applies to serving scenarios (training keeps its global batch)")
        space = enumerate_training(raw, base_dir, base, hw, dev, tps, pps)
        screen_training(space, dominance=not exhaustive)
    else:
        batches = parse_int_list(batch, "--max-batch-seqs") if batch is not None else list(DEFAULT_BATCH_SEQS)
        space = enumerate_serving(raw, base_dir, base, hw, dev, tps, pps, batches)
        screen_serving(space)
    if space.candidates and not any(c.values for c in space.candidates):  # no hardware takes these counts
        raise InputError(f"--devices {devices or base.hardware.n_devices}: "
                         + "; ".join(dict.fromkeys(c.detail for c in space.candidates)))
    rule = "tp x pp must divide them"
    if training:  # the usual blocker there is the batch: dp x microbatches must divide it
        rule += f", and dp x microbatches must divide workload.global_batch_seqs ({base.workload.global_batch_seqs})"
    if not space.candidates:
        raise InputError(f"--devices {devices or base.hardware.n_devices}: no plan splits these device counts ({rule})")
    if not hasattr(space, "pools"):  # a disaggregated search's candidates are pool plans, not whole counts
        space.no_layout = sorted(set(dev) - {c.devices for c in space.candidates})
        space.no_layout_why = rule
    return space, obj, slo_obj


