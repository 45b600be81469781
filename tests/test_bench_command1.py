"""scripts/bench_command1.py: both schedules run through the real pipeline, each timed, and compared."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"

pytestmark = pytest.mark.slow


def load():
    sys.path.insert(0, str(SCRIPTS))
    spec = importlib.util.spec_from_file_location("bench_command1", SCRIPTS / "bench_command1.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_both_schedules_are_timed_by_stage_and_compared(fold1_emodb):
    bench = load()
    tiny = {
        "random_init": True,
        "max_attack_clips": 2,
        "measure_cost": False,
        "sweep_snrs": [45.0],
        "probe_epochs": 1,
        "epochs": 1,
        "min_steps": 0,
        "max_epochs": 2,
        "patience": 1,
        "bootstrap_resamples": 0,
    }
    report = bench.compare("1", "whisper_tiny", 1, str(fold1_emodb), tiny)
    for name in ("converge", "paper"):
        run = report[name]
        assert run["wall_s"] > 0 and {"extract", "train", "probes", "attacks"} <= set(run["stages_s"])
        assert 0.0 <= run["test_uar_mean"] <= 1.0
    assert report["converge_vs_paper"] == pytest.approx(report["converge"]["wall_s"] / report["paper"]["wall_s"])
    assert report["converge_beats_reference"] == (report["converge"]["wall_s"] < bench.REFERENCE_WALL_S)
    assert report["common_overrides"] == tiny and report["threads"] == 1
