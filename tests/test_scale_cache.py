"""The feature cache under concurrency and damage, end to end: two processes extracting the same backbone over the
same corpus at once leave one verified entry per clip, and an entry truncated or with flipped bytes is detected and
rebuilt by the next ``run_experiment`` (tests/test_features.py covers the unit level)."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import pytest
import torch
from scale_fixtures import TESTS
from scale_runners import CONCURRENT_CLIPS

from trustser.experiment import RunConfig, TrustConfig, run_experiment
from trustser.features import CorruptEntry, clip_digest, read_entry
from trustser.training import TrainConfig

pytestmark = pytest.mark.scale


@pytest.mark.slow
def test_two_processes_extracting_the_same_corpus_at_once_leave_one_verified_entry_per_clip(mini_emodb, tmp_path):
    cache = Path(os.environ["TRUSTSER_CACHE"])
    go, outs = tmp_path / "go", [tmp_path / "a.json", tmp_path / "b.json"]
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(TESTS), os.environ.get("PYTHONPATH")])),
        "PYTHONWARNINGS": "ignore",
    }
    code = "import sys, scale_runners; scale_runners.extract(*sys.argv[1:])"
    processes = [
        subprocess.Popen([sys.executable, "-c", code, str(mini_emodb), str(go), str(out)], env=env) for out in outs
    ]
    try:
        deadline = time.monotonic() + 180
        while not all(Path(f"{out}.ready").exists() for out in outs):  # both loaded: start them together
            assert all(p.poll() is None for p in processes) and time.monotonic() < deadline
            time.sleep(0.05)
        go.touch()
        assert [p.wait(timeout=300) for p in processes] == [0, 0]
    finally:
        for p in processes:
            if p.poll() is None:
                p.kill()
                p.wait()

    results = [json.loads(out.read_text()) for out in outs]
    clips = sorted((mini_emodb / "wav").iterdir())[:CONCURRENT_CLIPS]  # clip ids are the file stems
    files = sorted(p for p in cache.rglob("*") if p.is_file() and "features" in p.parts)
    assert sorted(p.name for p in files) == sorted(f"{clip_digest(c)}.safetensors" for c in clips)  # no duplicates,
    assert len({p.parent for p in files}) == 1  # no temporary leftovers, one directory
    for result in results:
        assert result["computed"] + result["reused"] == len(clips) and result["rebuilt"] == 0
    assert results[0]["digests"] == results[1]["digests"]  # both processes hold the same features
    on_disk = {p.name: hashlib.sha256(read_entry(p).numpy().tobytes()).hexdigest() for p in files}  # all verify
    by_clip = {f"{clip_digest(c)}.safetensors": c.stem for c in clips}
    assert {by_clip[name]: digest for name, digest in on_disk.items()} == results[0]["digests"]


@pytest.mark.slow
def test_a_truncated_and_a_bit_flipped_entry_are_detected_and_rebuilt_through_run_experiment(mini_emodb):
    config = RunConfig(
        backbone="apc",
        dataset="emodb",
        data_root=str(mini_emodb),
        folds="1",
        random_init=True,
        max_seconds=1.0,
        train=TrainConfig(schedule="paper", epochs=1, batch_size=16),
        progress=False,
        trust=TrustConfig(safety=False, probes=False, measure_cost=False),
    )
    first = run_experiment(config)
    entries = sorted(Path(os.environ["TRUSTSER_CACHE"]).rglob("*.safetensors"))
    truncated, flipped = entries[0], entries[-1]
    original = {p: p.read_bytes() for p in (truncated, flipped)}
    tensors = {p: read_entry(p).clone() for p in (truncated, flipped)}
    truncated.write_bytes(original[truncated][: len(original[truncated]) // 2])
    damaged = bytearray(original[flipped])
    damaged[-40:-30] = bytes(b ^ 0xFF for b in damaged[-40:-30])  # inside the tensor data, after the header
    flipped.write_bytes(bytes(damaged))
    for path in (truncated, flipped):
        with pytest.raises(CorruptEntry):
            read_entry(path)

    second = run_experiment(config)
    metrics = mlflow.MlflowClient().get_run(second.parent_run_id).data.metrics
    assert metrics["features_rebuilt_corrupt"] == 2 and metrics["features_computed"] == 2
    assert metrics["features_reused"] == len(entries) - 2
    # rebuilt with the same values (not byte for byte: safetensors orders the metadata keys at random)
    assert all(torch.equal(read_entry(p), tensors[p]) for p in (truncated, flipped))
    assert second.summary["test_uar_mean"] == first.summary["test_uar_mean"]
