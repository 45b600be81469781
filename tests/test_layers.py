"""The package's layers run one way: the import-linter contract in pyproject.toml holds, and names every module.

A module missing from the contract would be unchecked (import-linter says nothing about modules it is not told of),
so the second test fails when a new top-level module or package is added without being given its layer.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    tomllib = pytest.importorskip("tomli")

ROOT = Path(__file__).resolve().parents[1]


def contract() -> dict:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    (layers,) = [c for c in config["contracts"] if c["type"] == "layers"]
    return layers


def test_every_top_level_module_has_a_layer():
    named = {m.strip() for line in contract()["layers"] for part in line.split("|") for m in part.split(":")}
    package = ROOT / "trustser"
    modules = {f"trustser.{p.stem}" for p in package.glob("*.py") if p.stem != "__init__"}
    modules |= {f"trustser.{p.name}" for p in package.iterdir() if (p / "__init__.py").is_file()}
    assert modules - named == set(), "give these modules a layer in pyproject.toml's [tool.importlinter]"
    assert named - modules == set(), "the contract names modules that no longer exist"


def test_the_layers_contract_is_kept():
    lint = shutil.which("lint-imports", path=str(Path(sys.executable).parent)) or shutil.which("lint-imports")
    if lint is None:
        pytest.skip("import-linter is not installed (pip install -e '.[test]')")
    done = subprocess.run([lint, "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert "1 kept, 0 broken" in done.stdout
