"""The install a user gets: only `moesim` at top level, shipped scenarios and traces inside it,
and a core install (no extras) that runs a shipped scenario by name from anywhere."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
SETUPTOOLS = PYPROJECT["tool"]["setuptools"]


def _package_folders() -> dict[str, Path]:
    """Every package the repository holds (a folder with __init__.py), by its installed name."""
    found = {}
    for name, folder in SETUPTOOLS["package-dir"].items():
        base = ROOT / folder
        for init in base.rglob("__init__.py"):
            rel = init.parent.relative_to(base)
            found[".".join([name, *rel.parts])] = init.parent
    return found


def test_every_package_folder_is_installed():
    listed = set(SETUPTOOLS["packages"])
    assert set(_package_folders()) <= listed, "a package folder is missing from [tool.setuptools] packages"
    assert all(p == "moesim" or p.startswith("moesim.") for p in listed)


def test_core_dependencies_cover_what_the_core_imports():
    """Modules the core commands import at top level are declared dependencies (no click, no torch)."""
    core = {d.split(">")[0].split("=")[0].split("[")[0].strip().lower() for d in PYPROJECT["project"]["dependencies"]}
    optional = {"torch", "triton", "dask", "distributed", "pytest", "hypothesis"}
    import_names = {"yaml": "pyyaml", "pydantic_core": "pydantic"}  # pydantic_core ships with pydantic
    for path in (ROOT / "moesim").rglob("*.py"):
        for node in ast.parse(path.read_text()).body:  # module level only: lazy imports may be optional
            if isinstance(node, ast.Import):
                tops = [a.name.split(".")[0] for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                tops = [node.module.split(".")[0]]
            else:
                continue
            for top in tops:
                if top in sys.stdlib_module_names or top in ("moesim", "__future__"):
                    continue
                assert top not in optional, f"{path.name}: top-level import of optional {top!r}"
                assert import_names.get(top, top) in core, f"{path.name}: imports {top!r}, not a declared dependency"


def test_shipped_scenarios_resolve_by_name_and_path(tmp_path, monkeypatch):
    from moesim.errors import InputError
    from moesim.shipped import resolve_scenario, shipped_scenarios

    names = {sc.name for sc in shipped_scenarios()}
    assert {p.stem for p in (ROOT / "scenarios").glob("*.yaml")} == names
    assert all(sc.kind in ("training", "serving") and sc.description for sc in shipped_scenarios())
    monkeypatch.chdir(tmp_path)
    assert resolve_scenario("switch-base-128-train").name == "switch-base-128-train.yaml"
    assert resolve_scenario("switch-base-128-train.yaml").is_file()
    own = tmp_path / "switch-base-128-train"  # a file of the same name wins over the shipped one
    own.write_text("name: mine\n")
    assert resolve_scenario("switch-base-128-train") == Path("switch-base-128-train")
    with pytest.raises(InputError, match="did you mean switch-base-128-train"):
        resolve_scenario("switch-base-128-trian")
    with pytest.raises(InputError, match="file not found"):
        resolve_scenario("no/such/file.yaml")


@pytest.mark.slow
def test_wheel_core_install_runs_a_shipped_scenario_from_anywhere(tmp_path):
    """Build the wheel, install it without extras into a fresh venv, run commands outside the checkout."""
    wheels = tmp_path / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", str(wheels), str(ROOT)],
                   check=True, capture_output=True)
    (wheel,) = wheels.glob("moesim-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert tops == {"moesim"}, f"only moesim may install at top level, got {sorted(tops)}"
    for must in ("moesim/calibrate/run.py", "moesim/kernels/moe_ref.py", "moesim/scenarios/mixtral-8x7b-h100-train.yaml",
                 "moesim/scenarios/traces/splitwise_conv.csv", "moesim/data/profiles/h100.yaml"):
        assert must in names

    # a PYTHONPATH pointing at a checkout would make the venv's pip see moesim as installed already
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")} | {"MPLBACKEND": "Agg"}
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, env=env)
    bin_dir = venv / ("Scripts" if os.name == "nt" else "bin")
    subprocess.run([str(bin_dir / "python"), "-m", "pip", "install", "--quiet", str(wheel)], check=True,
                   capture_output=True, env=env)
    work = tmp_path / "elsewhere"
    work.mkdir()

    def moesim(*args):
        return subprocess.run([str(bin_dir / "moesim"), *args], cwd=work, env=env, capture_output=True, text=True)

    assert moesim("--help").returncode == 0
    listed = moesim("scenarios", "--json")
    assert listed.returncode == 0, listed.stderr
    assert "llama-2-7b-a100-serve" in {row["name"] for row in json.loads(listed.stdout)}
    train = moesim("simulate", "mixtral-8x7b-h100-train", "--json")
    assert train.returncode == 0, train.stderr
    assert json.loads(train.stdout)["step_time_s"] > 0
    serve = moesim("simulate", "llama-2-7b-a100-serve", "--json", "--set", "workload.arrival.n_requests=50")
    assert serve.returncode == 0, serve.stderr  # reads its trace from the installed package
    assert json.loads(serve.stdout)["served_requests"] == 50
    calib = moesim("calibrate", "--quick")  # no torch in a core install: one line saying what to install
    assert calib.returncode != 0 and "pip install" in calib.stderr and "Traceback" not in calib.stderr
    no_top = subprocess.run([str(bin_dir / "python"), "-c", "import kernels"], cwd=work, env=env, capture_output=True)
    assert no_top.returncode != 0
    inside = subprocess.run([str(bin_dir / "python"), "-c", "import moesim.kernels, moesim.calibrate.fit"],
                            cwd=work, env=env, capture_output=True, text=True)
    assert inside.returncode == 0, inside.stderr
