"""Property-based: malformed and extreme scenarios always end in one clear InputError line.

Each example starts from a valid scenario and applies random damage: wrong types, negatives,
zero, huge values, missing or unknown keys, unknown presets. The only allowed outcomes are a
valid Scenario or an InputError whose message is one line and names a field.

The extreme-value part walks the schema for every field path (both workload kinds, dict values
such as ``peak_tflops.bf16``) and puts huge finite floats, integers past 2^63, negative zero,
values at and just over each bound, deep nesting and 10^5-character strings on each of them,
through the library and through the CLI (exit code 2, one stderr line, nothing written).
"""

from __future__ import annotations

import copy
import json

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from moesim.check import summary
from moesim.cli import main
from moesim.errors import InputError
from moesim.loader import scenario_from_dict
from tests.test_bounds import numeric_fields, scenario_fields

BASE = {
    "name": "fuzz",
    # local_attention present so each of its fields is fuzzed beside valid siblings (window is required)
    "model": {"preset": "mixtral-8x7b", "n_layers": 4, "local_attention": {"window": 64, "full_every": 2}},
    "hardware": {"preset": "h100-sxm", "cluster": {"nodes": 1}},
    "plan": {"dp": 8, "tp": 1, "pp": 1, "ep": 8, "microbatches": 2, "schedule": "1f1b"},
    "workload": {"kind": "training", "global_batch_seqs": 16, "seq_len": 1024},
    "routing": {"capacity_factor": 1.25, "distribution": "zipf", "zipf_s": 1.0},
}
SERVING = {"kind": "serving", "arrival": {"process": "poisson", "rate_per_s": 5.0, "n_requests": 100},
           "prompt_tokens": {"dist": "lognormal", "median": 100, "sigma": 0.5, "max": 1000},
           "output_tokens": {"dist": "uniform", "low": 1, "high": 100},
           "speculative": {"method": "draft", "k": 2, "acceptance": 0.8,
                           "draft": {"preset": "llama-2-7b", "n_layers": 2, "local_attention": {"window": 64}}}}

PATHS = [
    "model", "model.n_layers", "model.d_model", "model.n_heads", "model.n_kv_heads", "model.top_k",
    "model.n_experts", "model.dtype", "model.preset", "model.moe_every", "model.head_dim",
    "hardware", "hardware.preset", "hardware.cluster.nodes", "hardware.device", "hardware.node",
    "hardware.profile", "plan", "plan.dp", "plan.tp", "plan.pp", "plan.ep", "plan.microbatches",
    "plan.schedule", "plan.virtual_stages", "plan.zero_stage", "plan.recompute", "workload",
    "workload.kind", "workload.seq_len", "workload.global_batch_seqs", "workload.total_tokens",
    "routing", "routing.capacity_factor", "routing.distribution", "routing.seed", "routing.zipf_s",
    "name", "unknown_key", "model.unknown", "plan.unknown",
]

VALUES = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(10**30), max_value=10**30),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=12),
    st.sampled_from(["mixtral-8x7b", "h100-sxm", "interleaved", "dropless", "serving", "", "1e400"]),
    st.lists(st.integers(), max_size=3), st.dictionaries(st.text(max_size=5), st.integers(), max_size=2),
    st.sampled_from([0, 1, 2, 3, 7, 8, 16, 64, 2**31]),
)
DAMAGE = st.lists(st.tuples(st.sampled_from(PATHS), st.one_of(VALUES, st.just("<delete>"))), min_size=1, max_size=4)


def _damage(raw: dict, path: str, value) -> None:
    keys = path.split(".")
    node = raw
    for k in keys[:-1]:
        nxt = node.get(k) if isinstance(node, dict) else None
        if not isinstance(nxt, dict):
            return
        node = nxt
    if not isinstance(node, dict):
        return
    if value == "<delete>":
        node.pop(keys[-1], None)
    else:
        node[keys[-1]] = value


def _check_outcome(raw: dict) -> None:
    try:
        s = scenario_from_dict(raw)
        # a valid scenario's accounting never crashes (over capacity is a verdict); what its cost model cannot
        # read (a datasheet-only field on a profile-priced device) is one InputError line, as in simulate
        summary(s)
    except InputError as exc:
        msg = str(exc)
        assert msg and "\n" not in msg, msg
        assert "Traceback" not in msg


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(damage=DAMAGE, serving=st.booleans())
def test_damaged_scenarios_fail_cleanly(damage, serving):
    raw = copy.deepcopy(BASE)
    if serving:
        raw["workload"] = copy.deepcopy(SERVING)
    for path, value in damage:
        _damage(raw, path, value)
    _check_outcome(raw)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(doc=st.one_of(st.text(max_size=80), st.binary(max_size=80),
                     st.recursive(st.one_of(st.none(), st.integers(), st.text(max_size=6)),
                                  lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=6), c, max_size=3),
                                  max_leaves=8)))
def test_arbitrary_files_exit_2_without_traceback(tmp_path_factory, doc, capsys):
    path = tmp_path_factory.mktemp("fuzz") / "s.yaml"
    if isinstance(doc, bytes):
        path.write_bytes(doc)
    elif isinstance(doc, str):
        path.write_text(doc)
    else:
        path.write_text(yaml.safe_dump(doc))
    before = sorted(p.name for p in path.parent.iterdir())
    code = main(["check", str(path), "--json"])
    captured = capsys.readouterr()
    assert code in (0, 2)
    assert "Traceback" not in captured.err
    if code == 2:
        assert len([ln for ln in captured.err.splitlines() if ln.strip()]) == 1
    else:
        json.loads(captured.out)
    assert sorted(p.name for p in path.parent.iterdir()) == before  # nothing written


def test_yaml_tags_that_construct_objects_are_refused(tmp_path, capsys):
    p = tmp_path / "evil.yaml"
    p.write_text("model: !!python/object/new:os.system [echo pwned]\n")
    assert main(["check", str(p)]) == 2
    assert "YAML error" in capsys.readouterr().err


# ---------------------------------------------------------------- extreme values on every field


def _nested(depth: int):
    """A list nested ``depth`` deep, built without recursion."""
    value: list = []
    for _ in range(depth - 1):
        value = [value]
    return value


def _nested_map(depth: int):
    value: dict = {}
    for _ in range(depth - 1):
        value = {"a": value}
    return value


LONG = "x" * 100_000
DEEP_40, DEEP_5000, DEEP_MAP = _nested(40), _nested(5000), _nested_map(5000)
#: Values no field may take (each must give one InputError line naming the field).
HOSTILE = [1e300, 1.7e308, -1.7e308, 2**63, 2**64 + 1, -(2**63) - 1, 10**400, LONG, DEEP_40, DEEP_5000, DEEP_MAP]
#: Values some fields take (a valid scenario must then account without crashing).
ODD = [-0.0, 0.0, 5e-324, 1e-300, 2**63 - 1, 2**31]
#: Disaggregated serving: two one-node pools, no top-level plan (fuzzed on its own fields).
DISAGG = {**{k: v for k, v in SERVING.items() if k != "speculative"},
          "disaggregation": {"prefill": {"plan": {"dp": 8, "ep": 8}}, "decode": {"plan": {"dp": 8, "ep": 8}}}}
KIND_BASE = {"training": BASE["workload"], "serving": SERVING, "disagg": DISAGG}
_DIS = "workload.disaggregation"


def _mine(kind: str, path: str) -> bool:
    """Fields fuzzed under ``kind``: the disaggregation section only under "disagg", never elsewhere."""
    return path.startswith(_DIS) == (kind == "disagg")


FIELD_PATHS = {kind: [p for p, _, _ in scenario_fields("training" if kind == "training" else "serving") if _mine(kind, p)]
               for kind in KIND_BASE}
#: A key each mapping field accepts (default: a dtype, as the per-dtype tables take).
MAP_KEYS = {"hardware.node.ring_busbw_gbps": "8"}
NUMERIC = {kind: [(p.replace(".<key>", "." + MAP_KEYS.get(p.split(".<key>")[0], "bf16")).replace(".<item>", ".0"), t, up)
                  for p, t, up, _ in numeric_fields("training" if kind == "training" else "serving") if _mine(kind, p)]
           for kind in KIND_BASE}


def _put(raw: dict, path: str, value) -> None:
    """Set ``path`` in the raw scenario, creating sections (a preset name becomes {preset: name});
    a last key ``0`` makes its parent a one-item list."""
    node = raw
    keys = path.split(".")
    if keys[-1] == "0":
        keys, value = keys[:-1], [value]
    for k in keys[:-1]:
        child = node.get(k)
        if isinstance(child, str):
            child = {"preset": child}
        if not isinstance(child, dict):
            child = {}
        node[k] = child
        node = child
    node[keys[-1]] = value


def _raw(kind: str) -> dict:
    raw = copy.deepcopy(BASE)
    raw["workload"] = copy.deepcopy(KIND_BASE[kind])
    if kind == "serving":
        raw["plan"].update(ep=1, microbatches=1)
    if kind == "disagg":
        del raw["plan"]
        raw["hardware"]["cluster"]["nodes"] = 2
    return raw


def _over(typ, up):
    return up + 1 if typ is int else up * (1 + 1e-9) + 1e-12


def test_every_field_refuses_hostile_values_in_one_line():
    """11 hostile values on each of 77 (training) and 100 (serving) field paths: each gives one
    InputError line that starts with the field's path."""
    seen = 0
    for kind, paths in FIELD_PATHS.items():
        for path in paths + [p for p, _, _ in NUMERIC[kind] if p not in paths]:
            if path == "workload.kind":
                continue  # the tag picks the workload type (damaged by test_damaged_scenarios_fail_cleanly)
            for value in HOSTILE:
                raw = _raw(kind)
                _put(raw, path, value)
                try:
                    scenario_from_dict(raw)
                except InputError as exc:
                    msg = str(exc)
                    assert msg.startswith(path) and "\n" not in msg and len(msg) < 600, (path, msg[:300])
                    seen += 1
                    continue
                raise AssertionError(f"{path} = {str(value)[:40]}: accepted")
    assert seen > 1000


def test_every_numeric_field_at_and_over_its_bound():
    """At the bound: valid or a cross-field InputError, and a valid one accounts without crashing.
    Just over it: an InputError naming the field and the bound."""
    for kind, fields in NUMERIC.items():
        for path, typ, up in fields:
            for value in (up, typ(up) if typ is float else int(up)):
                raw = _raw(kind)
                _put(raw, path, value)
                _check_outcome(raw)
            raw = _raw(kind)
            _put(raw, path, _over(typ, up))
            try:
                scenario_from_dict(raw)
            except InputError as exc:
                assert str(exc).startswith(f"{path} = ") and "must be <" in str(exc), str(exc)
            else:
                raise AssertionError(f"{path} just over its bound {up} was accepted")


def test_every_numeric_field_with_odd_values():
    """Negative zero, subnormals, 2^63 - 1 ...: valid (and accountable) or one InputError line."""
    for kind, fields in NUMERIC.items():
        for path, _, _ in fields:
            for value in ODD:
                raw = _raw(kind)
                _put(raw, path, value)
                _check_outcome(raw)


EXTREME = st.one_of(st.sampled_from(HOSTILE + ODD), st.floats(min_value=1e15, max_value=1.7e308),
                    st.integers(min_value=2**53, max_value=2**80), st.integers(max_value=-1, min_value=-(2**80)))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(kind=st.sampled_from(sorted(KIND_BASE)), data=st.data())
def test_random_extremes_on_random_fields(kind, data):
    raw = _raw(kind)
    paths = FIELD_PATHS[kind] + [p for p, _, _ in NUMERIC[kind]]
    for _ in range(data.draw(st.integers(1, 3))):
        _put(raw, data.draw(st.sampled_from(paths)), data.draw(EXTREME))
    _check_outcome(raw)


def _cli_one_error(capsys, argv) -> str:
    code = main(argv)
    captured = capsys.readouterr()
    lines = [ln for ln in captured.err.splitlines() if ln.strip()]
    assert code == 2, (code, captured.err[-500:])
    assert len(lines) == 1, captured.err[-500:]
    assert "Traceback" not in captured.err and "internal error" not in captured.err
    return lines[0]


@pytest.mark.parametrize("command", ["check", "simulate"])
def test_cli_deep_yaml_is_one_line_exit_2(tmp_path, capsys, command):
    for name, text in (("flow", "name: x\nmodel: " + "[" * 5000 + "]" * 5000 + "\n"),
                       ("block", "".join("  " * i + "a:\n" for i in range(500))),
                       ("deep40", "model: " + "[" * 40 + "]" * 40 + "\n")):
        p = tmp_path / f"{name}.yaml"
        p.write_text(text)
        before = sorted(tmp_path.iterdir())
        line = _cli_one_error(capsys, [command, str(p), "--out", str(tmp_path / "out")] if command == "simulate"
                              else [command, str(p)])
        assert "nested deeper than 32 levels" in line
        assert sorted(tmp_path.iterdir()) == before  # nothing half-written


@pytest.mark.parametrize("item, words", [
    ("routing.capacity_factor=1e300", "routing.capacity_factor = '1e300': must be <= 64 (beyond 64"),
    ("routing.capacity_factor=1.0e+300", "routing.capacity_factor = 1e+300: must be <= 64"),
    ("workload.total_tokens=1.0e+300", "workload.total_tokens = 1e+300: must be <= 1e+16"),
    ("model.n_layers=9223372036854775808", "model.n_layers = 9223372036854775808: must be <= 1024"),
    ("plan.dp=-0.0", "plan.dp = -0.0: Input should be greater than 0"),
    ("hardware.device.peak_tflops.bf16=1.7e+308", "hardware.device.peak_tflops.bf16 = 1.7e+308: must be <= 1000000"),
    ("model.name=" + "x" * 100_000, "model.name: text of 100,000 characters, more than the 4,096 allowed"),
    ("model.name=" + "[" * 5000, "--set model.name: nested deeper than 32 levels"),
    ("routing.seed=" + "9" * 5000, "--set routing.seed: a number of more than 4300 digits"),
    ("a." * 5000 + "b=1", "nested deeper than 32 levels"),
], ids=lambda v: v if len(v) <= 40 else v[:37] + "...")
def test_cli_extreme_overrides_exit_2_in_one_line(root, capsys, item, words):
    path = root / "scenarios" / "mixtral-8x7b-h100-train.yaml"
    line = _cli_one_error(capsys, ["check", str(path), "--set", item])
    assert words in line, line[:300]


def test_cli_long_strings_huge_numbers_aliases_in_files(root, tmp_path, capsys):
    import yaml

    raw = yaml.safe_load((root / "scenarios" / "mixtral-8x7b-h100-train.yaml").read_text())
    cases = {  # in place of the valid scenario's own section of that name (a key twice is refused)
        "long": ("name: " + "x" * 100_000, "name: text of 100,000 characters"),
        "int": ("plan: {dp: " + str(2**64) + "}", "plan.dp = 18446744073709551616: must be <="),
        "key": ("plan: {1: 2}", "plan: key 1 is not a field name"),
        "bool-key": ("routing: {on: 2}", "routing: key True is not a field name"),
        "big": ("# " + "x" * (1 << 20), "more than the 256 KiB allowed"),
        "alias": ("a: &a [" + ",".join(["x"] * 50) + "]\nb: &b [" + ",".join(["*a"] * 50) + "]\n"
                  "c: &c [" + ",".join(["*b"] * 50) + "]", "more than 100,000 values"),
        "self-ref": ("description: &d [*d]", "nested deeper than 32 levels"),
    }
    for name, (text, words) in cases.items():
        p = tmp_path / f"{name}.yaml"
        key = text.split(":", 1)[0]
        base = yaml.safe_dump({k: v for k, v in raw.items() if k != key}, sort_keys=False)
        p.write_text(base + text + "\n")
        line = _cli_one_error(capsys, ["check", str(p)])
        assert words in line, (name, line[:300])
