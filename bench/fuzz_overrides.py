"""Search for inputs that crash: random values of random scenario fields on the shipped scenarios.

Every leaf field of the scenario's JSON Schema (``moesim schema``) gets values from its own type: an
enum's members, an integer's bounds and a few small numbers, booleans; a quarter of the cases also swap
the whole model or hardware section for a preset (``model=qwen3-30b-a3b``). Each case loads a shipped
scenario with 1-3 such overrides and simulates it (serving runs capped at 100 requests). A case must
end in a result or a ``MoesimError`` with a one-line message; anything else, a numpy RuntimeWarning,
a run over 60 s or a message of several lines is printed with the overrides that caused it:

    python bench/fuzz_overrides.py --seed 1 --cases 300

Prints one line per finding and a count of the outcomes; exits 1 when something crashed. Not a test
(its cases are random and slow): a tool for a session that changes the engine. Three bugs it found on
2026-12-05 have regression tests of their own (tests/test_front_door.py, test_decode_anatomy.py,
test_speculative.py).
"""

from __future__ import annotations

import argparse
import random
import signal
import sys
import time
import warnings
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from moesim import MoesimError, load_scenario, simulate  # noqa: E402
from moesim.presets import HARDWARE, MODELS  # noqa: E402
from moesim.schemas import Scenario  # noqa: E402
from moesim.shipped import shipped_scenarios  # noqa: E402

SECTIONS = ("model", "hardware", "plan", "routing", "workload", "placement")
SLOW_S = 60


def leaf_fields(schema: dict) -> dict[str, list[dict]]:
    """Dotted path -> the schema nodes it may take (several under ``anyOf``), for every leaf field."""
    defs = schema.get("$defs", {})
    out: dict[str, list[dict]] = defaultdict(list)

    def walk(node: dict, path: list[str], depth: int) -> None:
        if "$ref" in node:
            node = defs[node["$ref"].split("/")[-1]]
        if depth > 5:
            return
        alternatives = node.get("anyOf") or node.get("oneOf")  # optional sections, workload's kinds
        if alternatives:
            for alt in alternatives:
                walk(alt, path, depth + 1)
        elif node.get("type") == "object" and "properties" in node:
            for key, sub in node["properties"].items():
                walk(sub, [*path, key], depth + 1)
        else:
            out[".".join(path)].append(node)

    for section in SECTIONS:
        if section in schema["properties"]:
            walk(schema["properties"][section], [section], 0)
    return out


def value_for(nodes: list[dict], rng: random.Random) -> str | None:
    """An override value for a field of these schema nodes, as ``--set`` takes it; None when none fits."""
    node = rng.choice(nodes)
    if "enum" in node:
        return str(rng.choice(node["enum"]))
    kind = node.get("type")
    if kind == "boolean":
        return rng.choice(["true", "false"])
    if kind == "null":
        return "null"
    if kind == "integer":
        lo = node.get("minimum", node.get("exclusiveMinimum", 0))
        hi = node.get("maximum", lo + 1024)
        return str(rng.choice([v for v in (lo, lo + 1, 2, 3, 4, 7, 8, 16, 64, 1000, hi) if lo <= v <= hi]))
    if kind == "number":
        lo = node.get("minimum", node.get("exclusiveMinimum", 0.0))
        hi = node.get("maximum")
        fits = [v for v in (0.0, 0.01, 0.5, 1.0, 1.5, 2.0, 10.0, 1e4) if v >= lo and (hi is None or v <= hi)]
        return str(rng.choice(fits or [lo]))
    return None


def _timeout(*_args):
    raise TimeoutError


def run_case(name: str, overrides: list[str]) -> str:
    """``ok``, ``refused`` (a moesim error of one line) or what went wrong."""
    try:
        s = load_scenario(name, overrides)
        if not s.is_training and (getattr(s.workload.arrival, "n_requests", 0) or 0) > 100:
            s = load_scenario(name, [*overrides, "workload.arrival.n_requests=100"])
        signal.signal(signal.SIGALRM, _timeout)
        signal.alarm(SLOW_S)
        try:
            simulate(s, seed=0)
        finally:
            signal.alarm(0)
        return "ok"
    except MoesimError as exc:
        return "refused" if "\n" not in str(exc).strip() else f"multi-line message: {str(exc)[:300]!r}"
    except TimeoutError:
        return f"slower than {SLOW_S} s"
    except Exception as exc:  # noqa: BLE001 - the finding
        return f"crash: {type(exc).__name__}: {str(exc)[:300]}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--cases", type=int, default=200)
    args = ap.parse_args(argv)
    fields = leaf_fields(Scenario.model_json_schema())
    paths = sorted(fields)
    names = [sc.name for sc in shipped_scenarios()]
    rng = random.Random(args.seed)
    counts: dict[str, int] = defaultdict(int)
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        for _ in range(args.cases):
            name = rng.choice(names)
            overrides = [f"{p}={v}" for p in rng.sample(paths, rng.randint(1, 3))
                         if (v := value_for(fields[p], rng)) is not None]
            if rng.random() < 0.25:  # a preset in place of the scenario's own model or hardware
                section, presets = rng.choice([("model", MODELS), ("hardware", HARDWARE)])
                overrides.insert(0, f"{section}={rng.choice(sorted(presets))}")
            outcome = run_case(name, overrides)
            kind = outcome.split(":")[0] if outcome not in ("ok", "refused") else outcome
            counts[kind] += 1
            if outcome not in ("ok", "refused"):
                print(f"{outcome}\n    moesim simulate {name} " + " ".join(f"-s '{o}'" for o in overrides))
    print(f"{args.cases} cases in {time.perf_counter() - start:.0f} s: "
          + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
    return 1 if counts.get("crash") else 0


if __name__ == "__main__":
    sys.exit(main())
