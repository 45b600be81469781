"""scripts/gpu_check.py: says plainly that there is nothing to compare without CUDA; on a GPU machine (marker
``gpu``) its feature check must find every backbone's CUDA features within the stated tolerance of the CPU's."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "gpu_check.py"


def load_script():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_without_cuda_it_reports_so_and_succeeds(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    out = tmp_path / "check.json"
    assert load_script().main(["--out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["cuda"] is False and "no CUDA device" in report["message"]
    assert json.loads(capsys.readouterr().out) == report


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_features_match_the_cpu_within_tolerance(tmp_path):
    out = tmp_path / "check.json"
    status = load_script().main(["--quick", "--out", str(out)])
    report = json.loads(out.read_text())
    assert status == 0 and report["features_ok"], report["features"]
