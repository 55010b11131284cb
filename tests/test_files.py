"""Result files: atomic writes, round trips, and clear errors for corrupt or foreign files."""

from __future__ import annotations

import json

import numpy as np
import pytest

from moesim import InputError, load_scenario, simulate
from moesim.fileio import atomic_open, atomic_write_text
from moesim.results import SimResult


def test_atomic_write_keeps_the_old_file_when_interrupted(tmp_path):
    target = tmp_path / "table.csv"
    atomic_write_text(target, "old\n")
    with pytest.raises(KeyboardInterrupt):
        with atomic_open(target) as fh:
            fh.write("half a ro")
            raise KeyboardInterrupt
    assert target.read_text() == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["table.csv"]  # no temp file left behind


def test_result_round_trip(tmp_path, root):
    r = simulate(load_scenario(root / "scenarios" / "mixtral-8x7b-h100-train.yaml"))
    r.save(tmp_path)
    back = SimResult.load(tmp_path)
    assert back.kind == r.kind and back.seed == r.seed
    for key, value in r.summary.items():
        if isinstance(value, float):
            assert back.summary[key] == pytest.approx(value)
    np.testing.assert_allclose(back.spans["end_s"], r.spans["end_s"])
    assert set(back.tables) == set(r.tables)
    trace = json.loads((tmp_path / "trace.json").read_text())
    assert any(e["ph"] == "X" for e in trace["traceEvents"])


@pytest.mark.parametrize(
    "content, words",
    [("{not json", "corrupt JSON"), ('{"a": 1}', "no summary/kind"),
     ('{"format_version": 99, "kind": "training", "summary": {}}', "format_version 99")],
)
def test_corrupt_or_foreign_result_is_a_clear_error(tmp_path, content, words):
    (tmp_path / "summary.json").write_text(content)
    with pytest.raises(InputError, match=words):
        SimResult.load(tmp_path)
