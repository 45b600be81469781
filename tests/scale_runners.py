"""Trial runners for the scale tests, loaded by worker processes through ``TRUSTSER_TRIAL_RUNNER=scale_runners:NAME``
(with tests/ on PYTHONPATH). Every call is recorded as one JSON line appended to ``$SCALE_CALLS`` (a single
``write`` on an O_APPEND file: lines of concurrent workers never interleave).

- ``fake``: a deterministic summary from the configuration after ``$SCALE_FAKE_SECONDS`` of sleep; with
  ``$SCALE_HANG`` = a file path, the first call to find no such file creates it (holding its pid) and hangs, to be
  killed.
- ``real``: ``run_experiment`` itself; with ``$SCALE_PAUSE_AT`` = ``fold:K`` it hangs when fold K starts, with
  ``extract:N`` when the (N+1)-th clip is about to be extracted (N entries are on disk), after writing
  ``$SCALE_PAUSED`` (its pid), to be killed there.
"""

from __future__ import annotations

import json
import os
import time
import zlib

CONCURRENT_CLIPS = 16  # clips the two processes of the cache test extract
GFLOPS = {"whisper_tiny": 2.3, "apc": 2.5, "wav2vec2_base": 41.7}


def record(event: str, config, **extra) -> None:
    line = json.dumps(
        {
            "event": event,
            "pid": os.getpid(),
            "t": time.time(),
            "backbone": config.backbone,
            "unfreeze_top": config.unfreeze_top,
            "width": config.train.width,
            **extra,
        }
    )
    fd = os.open(os.environ["SCALE_CALLS"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (line + "\n").encode())
    finally:
        os.close(fd)


def read_calls(path) -> list[dict]:
    try:
        with open(path) as f:
            return [json.loads(line) for line in f if line.strip()]
    except FileNotFoundError:
        return []


def _hang(marker: str) -> None:
    tmp = f"{marker}.tmp"
    with open(tmp, "w") as f:
        f.write(str(os.getpid()))
    os.replace(tmp, marker)
    while True:
        time.sleep(60)


def fake(config) -> dict[str, float]:
    record("start", config)
    hang = os.environ.get("SCALE_HANG")
    if hang:
        try:
            fd = os.open(f"{hang}.claimed", os.O_CREAT | os.O_EXCL | os.O_WRONLY)  # the first call anywhere
            os.close(fd)
            _hang(hang)
        except FileExistsError:
            pass
    time.sleep(float(os.environ.get("SCALE_FAKE_SECONDS", "0.5")))
    k = zlib.crc32(f"{config.backbone}/{config.unfreeze_top}/{config.train.width}".encode()) % 100 / 1000
    record("end", config)
    return {
        "test_uar_mean": 0.4 + k + 0.05 * config.unfreeze_top,
        "privacy_gender_accuracy_mean": 0.8 - k,
        "safety_fgsm_asr_mean": 0.7 + 0.1 * config.unfreeze_top - k,
        "fairness_equality_of_odds_mean": 0.2 + k,
        "sustainability_gflops": GFLOPS[config.backbone] + config.train.width / 1000,
    }


def real(config) -> dict[str, float]:
    import trustser.experiment as experiment
    import trustser.features as features

    pause = os.environ.get("SCALE_PAUSE_AT", "")
    kind, _, number = pause.partition(":")
    if kind == "fold":
        evaluate_fold, folds_started = experiment.evaluate_fold, []

        def paused_fold(*args, **kwargs):
            folds_started.append(1)
            if len(folds_started) == int(number):
                _hang(os.environ["SCALE_PAUSED"])
            return evaluate_fold(*args, **kwargs)

        experiment.evaluate_fold = paused_fold
    elif kind == "extract":
        compute_hidden, computed = features.compute_hidden, []

        def paused_compute(*args, **kwargs):
            if len(computed) == int(number):
                _hang(os.environ["SCALE_PAUSED"])
            computed.append(1)
            return compute_hidden(*args, **kwargs)

        features.compute_hidden = paused_compute
    record("start", config)
    summary = experiment.run_experiment(config).summary
    record("end", config)
    return summary


def extract(data_root: str, go: str, out: str) -> None:
    """One extraction process of the cache test: random-init APC over the corpus at ``data_root`` (1 s clips) into
    $TRUSTSER_CACHE, starting when file ``go`` appears; writes counters and per-clip feature digests to ``out``."""
    import hashlib
    from pathlib import Path

    from trustser.backbones.loading import load_backbone
    from trustser.corpora import load_corpus
    from trustser.features import extract_features

    index = load_corpus("emodb", data_root, {})
    backbone, source = load_backbone("apc", None, True, 0)
    Path(f"{out}.ready").touch()
    while not Path(go).exists():
        time.sleep(0.005)
    store, stats = extract_features(
        index, backbone, source, max_seconds=1.0, progress=False, clip_ids=sorted(index.clips)[:CONCURRENT_CLIPS]
    )
    digests = {cid: hashlib.sha256(store[cid].numpy().tobytes()).hexdigest() for cid in store}
    Path(out).write_text(
        json.dumps(
            {"computed": stats.computed, "reused": stats.reused, "rebuilt": stats.rebuilt_corrupt, "digests": digests}
        )
    )
