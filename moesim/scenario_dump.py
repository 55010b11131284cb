"""A scenario as moesim resolved it, written back as YAML that loads to the same scenario.

Presets expanded into their fields, ``--set`` overrides applied, defaults filled in and relative paths
(a serving trace) made absolute, so the file says every number a run used and re-runs it on its own:
``moesim check --resolved`` prints it and ``simulate --out`` saves it as ``scenario.yaml`` beside the
result. Loading it gives a scenario equal to the one dumped (``tests/test_scenario_dump.py`` checks every
shipped scenario).
"""

from __future__ import annotations

import yaml

from moesim.schemas import Scenario

#: The file name ``simulate --out`` gives the resolved scenario in a result folder.
RESOLVED_NAME = "scenario.yaml"


def resolved_yaml(s: Scenario, source: str, overrides: list[str] | tuple[str, ...] = (),
                  note: str | None = None) -> str:
    """YAML of ``s`` with every field, under comment lines naming ``source`` (the scenario as given) and
    its ``overrides`` (``--set`` values) and ``note`` (a line on how the run differed, if it did)."""
    lines = [f"# {s.name}: the scenario {source} as moesim resolved it"
             + (f" with --set {' '.join(overrides)}" if overrides else ""),
             "# (presets expanded, defaults filled in); `moesim simulate` on this file runs it again."]
    if note:
        lines.append(f"# {note}")
    body = yaml.safe_dump(s.model_dump(mode="json"), sort_keys=False, allow_unicode=True)
    return "\n".join(lines) + "\n" + body
