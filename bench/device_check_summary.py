"""Assemble the JSON summary of bench/gpu_check.sh or bench/mps_check.sh from their work folder.

    python bench/device_check_summary.py WORK OUT TAG DEVICE_JSON

WORK holds steps.tsv ("name rc seconds" per step), tests.xml (pytest's junit report), calib.json
(``moesim calibrate --validate --json``) and kernel.json; DEVICE_JSON the device's fields (name,
driver versions). Writes OUT, prints one line on stderr, exits 0 when every step passed, else 2.
"""

from __future__ import annotations

import json
import sys
import xml.etree.ElementTree as ET
from pathlib import Path


def load_json(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def summary(work: Path, device: dict) -> dict:
    """The summary dict: device, versions, each step's status, test counts, calibration, kernel."""
    steps = {}
    for line in (work / "steps.tsv").read_text().splitlines():
        name, rc, secs = line.split("\t")
        steps[name] = {"exit": int(rc), "seconds": int(secs), "timed_out": rc == "124", "ok": rc == "0",
                       "log": str(work / f"{name}.log")}
    tests = None
    if (work / "tests.xml").is_file():
        suite = ET.parse(work / "tests.xml").getroot()
        suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
        tests = {k: int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")}
        tests["passed"] = tests["tests"] - tests["failures"] - tests["errors"] - tests["skipped"]
    try:
        import torch
        torch_version = torch.__version__
    except ImportError:
        torch_version = None
    try:
        import triton
        triton_version = triton.__version__
    except ImportError:
        triton_version = None
    return {**device, "torch": torch_version, "triton": triton_version, "steps": steps, "tests": tests,
            "calibrate": load_json(work / "calib.json"), "kernel": load_json(work / "kernel.json"),
            "ok": all(s["ok"] for s in steps.values())}


def main(argv: list[str]) -> int:
    work, out, tag, device = Path(argv[0]), Path(argv[1]), argv[2], json.loads(argv[3])
    s = summary(work, device)
    out.write_text(json.dumps(s, indent=1) + "\n")
    cal = (s["calibrate"] or {}).get("summary")
    print(f"{tag}: {'ok' if s['ok'] else 'FAILED'}; tests {s['tests']}; validation {cal}; summary in {out}",
          file=sys.stderr)
    return 0 if s["ok"] else 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
