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


def parse_int_list(text: str, option: str) -> list[int]:
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
    if len(values) > 64:
        raise InputError(f"{option} {text!r}: {len(values)} values; at most 64")
    return values


def check_degrees(model, tps: list[int] | None, pps: list[int] | None) -> None:
    """InputError naming ``--tp`` or ``--pp`` for a value no plan of ``model`` can take: a TP degree
    must shard the attention heads (divide ``n_heads``, and divide ``n_kv_heads`` or be a multiple
    of it: the scenario's rule), so it need not be a power of two (40 heads take 5); pipeline stages
    may be any count up to ``n_layers`` (an uneven split is written out, see
    :func:`moesim.plan_space.uneven_layout`)."""
    from moesim.schemas.scenario import heads_tp_mismatch

    for t in tps or ():
        bad = heads_tp_mismatch(model, t)
        if bad:
            heads = model.n_heads if bad == "n_heads" else model.kv_heads
            rule = "divide" if bad == "n_heads" else "divide or be a multiple of"
            raise InputError(f"--tp {t}: must {rule} model.{bad} ({heads}) of {model.name}; allowed: "
                             f"{', '.join(map(str, tp_choices(model)))}")
    for p in pps or ():
        if p > model.n_layers:
            raise InputError(f"--pp {p}: more pipeline stages than model.n_layers ({model.n_layers}); "
                             f"allowed: 1 to {model.n_layers}")


def check_headroom(headroom_gib: float | None, training: bool) -> None:
    """InputError naming ``--headroom`` unless it is unset, or a finite GiB >= 0 for a training scenario
    (a serving engine sizes its KV pool to fill what the weights leave, so no plan leaves memory free)."""
    import math

    if headroom_gib is None:
        return
    if not training:
        raise InputError(f"--headroom {headroom_gib:g}: applies to training scenarios (a serving engine's KV pool "
                         "fills the memory the weights leave; lower its share instead)")
    if not math.isfinite(headroom_gib) or headroom_gib < 0:
        raise InputError(f"--headroom {headroom_gib:g}: must be a finite number of GiB >= 0")


def tp_choices(model) -> list[int]:
    """The TP degrees that shard ``model``'s attention heads (the scenario's rule,
    :func:`moesim.schemas.scenario.heads_tp_mismatch`)."""
    from moesim.schemas.scenario import heads_tp_mismatch

    return [d for d in range(1, model.n_heads + 1) if not heads_tp_mismatch(model, d)]


def layout_fault(devices: list[int], per_node: int, tps: list[int] | None, pps: list[int], *, tp_given: bool,
                 pp_given: bool, tp_choices: list[int], max_pp: int) -> str | None:
    """Why no tp x pp layout splits any of ``devices`` (device counts), naming the flag at fault:
    ``--pp`` when none of its values divides a count, ``--tp`` when none divides a count within a
    node of ``per_node`` devices (TP stays in a node), both when no pair does; None when some pair
    splits some count (then the batch rule, or the hardware, is what refuses). ``tp_choices``: the
    TP degrees the model's heads take; ``max_pp``: its layers. Both only shape the allowed values named."""
    from moesim.plan_space import tp_values

    shown = ",".join(map(str, devices))

    def allowed(ok) -> str:  # the values that would split each count
        return "; ".join(f"{n}: {', '.join(str(d) for d in range(1, n + 1) if n % d == 0 and ok(n, d))}"
                         for n in devices)

    if pp_given and not any(n % p == 0 for n in devices for p in pps):
        return (f"--pp {','.join(map(str, pps))}: no value divides --devices {shown} (tp x pp must divide the "
                f"device count); allowed for each count: {allowed(lambda n, d: d <= max_pp)}")
    if tp_given and not any(n % t == 0 for n in devices for t in tp_values(tps, min(per_node, n))):
        return (f"--tp {','.join(map(str, tps))}: no value divides --devices {shown} within a node of {per_node} "
                f"devices (tensor parallelism stays in a node); allowed for each count: "
                f"{allowed(lambda n, d: d <= per_node and d in tp_choices)}")
    if (tp_given or pp_given) and not any(n % (t * p) == 0 for n in devices for t in tp_values(tps, min(per_node, n)) for p in pps):
        flags = " and ".join(f"{flag} {','.join(map(str, values))}" for flag, values, given
                             in (("--tp", tps, tp_given), ("--pp", pps, pp_given)) if given)
        return f"{flags}: no tp x pp of these values divides --devices {shown}; give values whose product divides them"
    return None


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
            exhaustive: bool = False, headroom_gib: float | None = None) -> tuple[Space, Objective, Any]:
    """Read the scenario, parse the options (each bad one an InputError naming it), enumerate and
    screen the candidates (``exhaustive``: no dominance pruning; ``headroom_gib``: training plans must
    leave this much device memory free, GiB per device). Returns ``(space, objective, slo)``."""
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
    tps = parse_int_list(tp, "--tp") if tp is not None else None
    pps = parse_int_list(pp, "--pp") if pp is not None else list(DEFAULT_PP)
    check_degrees(base.model, tps, pps if pp is not None else None)
    check_headroom(headroom_gib, training)
    if training:
        if batch is not None:
            raise InputError("--max-batch-seqs applies to serving scenarios (training keeps its global batch)")
        space = enumerate_training(raw, base_dir, base, hw, dev, tps, pps)
        screen_training(space, dominance=not exhaustive, headroom_gib=headroom_gib or 0.0)
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
        from moesim.plan_space import devices_per_node_of

        fault = None if hasattr(space, "pools") else layout_fault(
            dev, max(devices_per_node_of(raw.get("hardware"), h) for h in hw), tps, pps, tp_given=tp is not None,
            pp_given=pp is not None, tp_choices=tp_choices(base.model), max_pp=base.model.n_layers)
        raise InputError(fault or f"--devices {devices or base.hardware.n_devices}: no plan splits these device "
                         f"counts ({rule})")
    if not hasattr(space, "pools"):  # a disaggregated search's candidates are pool plans, not whole counts
        space.no_layout = sorted(set(dev) - {c.devices for c in space.candidates})
        space.no_layout_why = rule
    return space, obj, slo_obj


