"""``moesim presets --show NAME > p.yaml`` writes YAML: the lines above the fields are comments, so the file loads
as the preset's mapping and pastes, indented, as a scenario's ``model:`` or ``hardware:`` section."""

from __future__ import annotations

import pytest
import yaml

from moesim.cli import main
from moesim.loader import load_scenario
from moesim.presets import HARDWARE, MODELS
from tests.conftest import console_columns

_SCENARIO = """\
name: pasted
model:
{model}
hardware:
{hardware}
plan: {{dp: 8, tp: 1, pp: 1, ep: 8, microbatches: 2}}
workload: {{kind: training, global_batch_seqs: 16, seq_len: 1024}}
routing: {{capacity_factor: 1.25}}
"""


def _shown(capsys, name: str, columns: int = 40) -> str:
    from moesim import cli

    with console_columns(cli.out, columns):  # a narrow console folds no YAML line
        assert main(["presets", "--show", name]) == 0
    return capsys.readouterr().out


@pytest.mark.parametrize("name, section", [("mixtral-8x7b", "model"), ("b200", "hardware"), ("h100-sxm", "hardware")])
def test_presets_show_prints_yaml_under_comment_lines(capsys, tmp_path, name, section):
    text = _shown(capsys, name)
    lines = text.splitlines()
    assert lines[0] == f"# {name} ({section})"
    head = lines[: next(i for i, ln in enumerate(lines) if not ln.startswith("#"))]
    assert len(head) >= 3 and all(ln.startswith("# ") for ln in head)
    path = tmp_path / "p.yaml"
    path.write_text(text)
    assert yaml.safe_load(path.read_text()) == (MODELS if section == "model" else HARDWARE)[name]


def test_presets_show_pastes_as_a_scenarios_sections(capsys, tmp_path):
    model = _shown(capsys, "mixtral-8x7b")
    hardware = _shown(capsys, "h100-sxm")

    def indent(text: str) -> str:
        return "\n".join(f"  {ln}" for ln in text.splitlines())

    path = tmp_path / "pasted.yaml"
    path.write_text(_SCENARIO.format(model=indent(model), hardware=indent(hardware)))
    s = load_scenario(path)
    assert s.model.n_experts == MODELS["mixtral-8x7b"]["n_experts"]
    assert s.hardware.device.name == HARDWARE["h100-sxm"]["device"]["name"]
