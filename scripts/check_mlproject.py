"""Check the MLproject ``main`` entry point for every registered backbone, the way a user calls it.

    python scripts/check_mlproject.py                   # every backbone, random init (+ whisper_tiny_en real weights)
    python scripts/check_mlproject.py --backbone apc    # just one

For each backbone it runs ``mlflow run <repo> -P backbone=B -P dataset=emodb -P random_init=true -P folds=1
-P epochs=1 --env-manager local`` (``whisper_tiny_en`` once more with its real packaged weights) against a fresh
temporary sqlite store, on a small copy of the shipped EmoDB (one clip per speaker and emotion: 40 clips; the check
is that the path works, not the figures), then reads the store back with MlflowClient: one parent run with one
nested fold run, a finite test UAR, all five trust families, and the ``weights`` tag saying random or pretrained.
Prints one line per run and a summary; exits 1 if any check failed. Takes a few minutes per large backbone on
2 CPU cores (the safety attacks and probes run with their defaults).
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
EMODB = REPO.parent / "shared" / "data" / "emodb"
FAMILIES = (
    "test_uar",
    "privacy_gender_accuracy",
    "safety_fgsm_asr",
    "fairness_equality_of_odds",
    "sustainability_gflops",
)


def small_emodb(root: Path) -> Path:
    """One clip per (speaker, 4-class emotion) of the shipped EmoDB, in its real layout."""
    from trustser.corpora.emodb import EMOTION_CODES, FILE_NAME

    (root / "wav").mkdir(parents=True)
    taken: set[tuple[str, str]] = set()
    for path in sorted((EMODB / "wav").iterdir()):
        m = FILE_NAME.match(path.name)
        if m and m["emotion"] in EMOTION_CODES and (m["speaker"], m["emotion"]) not in taken:
            shutil.copy(path, root / "wav" / path.name)
            taken.add((m["speaker"], m["emotion"]))
    return root


def check_one(backbone: str, random_init: bool, data_root: Path, work: Path) -> tuple[bool, str]:
    import mlflow

    store = work / f"{backbone}-{'random' if random_init else 'real'}"
    store.mkdir()
    uri = f"sqlite:///{store / 'mlflow.db'}"
    env = {
        **os.environ,
        "MLFLOW_TRACKING_URI": uri,
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "TRUSTSER_CACHE": str(work / "cache"),
        # the entry point's command starts `python`: this interpreter's, where trustser is installed
        "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]),
    }
    mlflow_cli = Path(sys.executable).with_name("mlflow")
    command = [
        str(mlflow_cli),
        "run",
        str(REPO),
        "-P",
        f"backbone={backbone}",
        "-P",
        "dataset=emodb",
        "-P",
        f"data_root={data_root}",
        "-P",
        f"random_init={'true' if random_init else 'false'}",
        "-P",
        "folds=1",
        "-P",
        "schedule=paper",
        "-P",
        "epochs=1",
        "--env-manager",
        "local",
    ]
    t0 = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True, cwd=store)
    wall = time.perf_counter() - t0
    if done.returncode != 0:
        return False, f"mlflow run exited {done.returncode} after {wall:.0f} s: {done.stderr.strip()[-400:]}"
    client = mlflow.MlflowClient(uri)
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    folds = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    if len(parents) != 1 or len(folds) != 1:
        return False, f"expected 1 parent and 1 fold run, found {len(parents)} and {len(folds)}"
    fold = folds[0].data
    missing = [k for k in FAMILIES if k not in fold.metrics]
    uar = fold.metrics.get("test_uar", float("nan"))
    weights = parents[0].data.tags.get("weights")
    expected = "random" if random_init else "pretrained"
    if missing or not math.isfinite(uar) or weights != expected:
        return False, f"missing {missing}, test UAR {uar}, weights tag {weights!r} (expected {expected})"
    return True, (
        f"{wall:5.0f} s  UAR {uar:.3f}  weights={weights} ({parents[0].data.tags.get('weights_source')})  "
        f"FGSM ASR {fold.metrics['safety_fgsm_asr']:.3f}  {fold.metrics['sustainability_gflops']:.2f} GFLOPs"
    )


def main(argv: list[str] | None = None) -> int:
    from trustser.backbones import BACKBONES

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backbone", action="append", help="only these (repeatable); default: all")
    args = parser.parse_args(argv)
    names = args.backbone or list(BACKBONES)
    plan = [(name, True) for name in names] + [(name, False) for name in names if BACKBONES[name].packaged]
    failures = 0
    with tempfile.TemporaryDirectory(prefix="trustser-mlproject-") as tmp:
        work = Path(tmp)
        data_root = small_emodb(work / "emodb")
        for name, random_init in plan:
            ok, line = check_one(name, random_init, data_root, work)
            failures += not ok
            print(
                f"{'ok  ' if ok else 'FAIL'} {name:<16} {'random init' if random_init else 'real weights':<12} {line}",
                flush=True,
            )
    print(f"{len(plan) - failures} passed, {failures} failed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
