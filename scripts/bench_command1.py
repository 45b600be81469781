"""README command 1 timed side by side: the default recipe against the method's, in one run, on this machine.

Usage: ``python scripts/bench_command1.py [--folds all] [--output FILE]`` (about 15-25 minutes on 2 cores; run it on
an otherwise idle machine, the load average before and after is reported so a reader can tell).

Both schedules run README command 1's configuration (real Whisper Base over every EmoDB fold, every trust family)
through ``bench_sweep.run_sweep``: a fresh process and a fresh (cold) feature cache each, so each figure includes
extraction, as command 1 does on a fresh clone, and each stage's time is reported:

- ``converge``: the defaults (step floor + early stopping on validation UAR, standardised features);
- ``paper``: the method's recipe exactly (``schedule: paper``, ``standardize: false``: 30 epochs, raw features).

``REFERENCE_WALL_S`` is the figure this project measured for command 1 on 2026-12-01 on this 2-core machine, idle
(then the paper schedule and fewer metrics); the JSON says whether the default now beats it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
from pathlib import Path
from typing import Any, Sequence

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_sweep import run_sweep  # noqa: E402

REFERENCE_WALL_S = 451.0  # README command 1, 2026-12-01, this machine, idle (docs/benchmarks.md)
SCHEDULES: dict[str, dict[str, Any]] = {
    "converge": {},
    "paper": {"schedule": "paper", "standardize": False},
}
REPORTED = ("test_uar_mean", "privacy_gender_accuracy_mean", "safety_fgsm_asr_mean")


def compare(
    folds: str = "all",
    backbone: str = "whisper_base",
    threads: int | None = None,
    data_root: str | None = None,
    common: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Both schedules, one after the other, each in a fresh process with a cold cache; wall time and stages.
    ``common``: overrides given to both (the tests' tiny settings)."""
    import torch

    threads = threads or torch.get_num_threads()
    out: dict[str, Any] = {
        "backbone": backbone,
        "folds": folds,
        "threads": threads,
        "cpus": os.cpu_count(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "load_average_before": list(os.getloadavg()),
        "reference_wall_s": REFERENCE_WALL_S,
        "common_overrides": dict(common or {}),
    }
    for name, overrides in SCHEDULES.items():
        with tempfile.TemporaryDirectory(prefix=f"trustser-command1-{name}-") as tmp:
            result = run_sweep(backbone, folds, Path(tmp), None, threads, {**(common or {}), **overrides}, data_root)
        out[name] = {
            "wall_s": result["wall_s"],
            "process_wall_s": result["process_wall_s"],
            "stages_s": result["stages_s"],
            **{k: result.get(k) for k in REPORTED},
        }
    out["load_average_after"] = list(os.getloadavg())
    out["converge_vs_paper"] = out["converge"]["wall_s"] / out["paper"]["wall_s"]
    out["converge_beats_reference"] = out["converge"]["wall_s"] < REFERENCE_WALL_S
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--folds", default="all")
    parser.add_argument("--backbone", default="whisper_base")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's, as command 1)")
    parser.add_argument("--output", default=None, help="also write the JSON here")
    args = parser.parse_args(argv)
    report = compare(args.folds, args.backbone, args.threads)
    text = json.dumps(report, indent=2)
    print(text)
    if args.output:
        Path(args.output).write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
