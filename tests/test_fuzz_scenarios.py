"""Property-based: malformed and extreme scenarios always end in one clear InputError line.

Each example starts from a valid scenario and applies random damage: wrong types, negatives,
zero, huge values, missing or unknown keys, unknown presets. The only allowed outcomes are a
valid Scenario or an InputError whose message is one line and names a field.
"""

from __future__ import annotations

import copy
import json

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from moesim.accounting import summary
from moesim.cli import main
from moesim.errors import InputError
from moesim.loader import scenario_from_dict

BASE = {
    "name": "fuzz",
    "model": {"preset": "mixtral-8x7b", "n_layers": 4},
    "hardware": {"preset": "h100-sxm", "cluster": {"nodes": 1}},
    "plan": {"dp": 8, "tp": 1, "pp": 1, "ep": 8, "microbatches": 2, "schedule": "1f1b"},
    "workload": {"kind": "training", "global_batch_seqs": 16, "seq_len": 1024},
    "routing": {"capacity_factor": 1.25, "distribution": "zipf", "zipf_s": 1.0},
}
SERVING = {"kind": "serving", "arrival": {"process": "poisson", "rate_per_s": 5.0, "n_requests": 100},
           "prompt_tokens": {"dist": "lognormal", "median": 100, "sigma": 0.5, "max": 1000},
           "output_tokens": {"dist": "uniform", "low": 1, "high": 100}}

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
    except InputError as exc:
        msg = str(exc)
        assert msg and "\n" not in msg, msg
        assert "Traceback" not in msg
        return
    summary(s)  # a valid scenario's accounting never crashes (over capacity is a verdict)


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
