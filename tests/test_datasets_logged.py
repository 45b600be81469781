"""Every run logs the corpus it used as MLflow dataset inputs, read back with ``MlflowClient().get_run(id).inputs``:
the parent the whole corpus (context ``corpus``), each fold run its train / validation / test clips; the digests are
over the clips' content hashes, so a corpus with one clip changed is told apart."""

from __future__ import annotations

import csv
import hashlib
import json
import shutil

import mlflow

from trustser.experiment import RunConfig, TrustConfig, run_experiment
from trustser.training import TrainConfig


def run_once(data_root):
    return run_experiment(
        RunConfig(
            backbone="whisper_tiny",
            dataset="emodb",
            data_root=str(data_root),
            folds="1",
            random_init=True,
            train=TrainConfig(schedule="paper", epochs=1),
            progress=False,
            log_model=False,
            trust=TrustConfig(safety=False, probes=False, measure_cost=False, reference=False, bootstrap_resamples=0),
        )
    )


def inputs_of(client, run_id) -> dict[str, object]:
    """context → the dataset logged with it."""
    out = {}
    for item in client.get_run(run_id).inputs.dataset_inputs:
        context = {t.key: t.value for t in item.tags}["mlflow.data.context"]
        assert context not in out, f"two datasets with context {context}"
        out[context] = item.dataset
    return out


def test_parent_and_fold_runs_log_the_corpus_and_a_changed_clip_changes_the_digest(fold1_emodb, tmp_path):
    first = run_once(fold1_emodb)
    client = mlflow.MlflowClient()  # after the run has pointed MLflow at this test's store
    corpus = inputs_of(client, first.parent_run_id)
    assert list(corpus) == ["corpus"]
    assert corpus["corpus"].name == "emodb" and json.loads(corpus["corpus"].source)["uri"] == str(fold1_emodb)
    assert json.loads(corpus["corpus"].profile)["num_rows"] == 24

    # the clip table: one row per clip with its content hash and its partition in every fold
    table = list(
        csv.DictReader(
            open(client.download_artifacts(first.parent_run_id, "dataset/clips.csv", str(tmp_path)), newline="")
        )
    )
    assert len(table) == 24
    assert {"clip_id", "path", "speaker", "gender", "emotion", "sha1", "fold1"} <= set(table[0])
    for row in table:
        assert row["sha1"] == hashlib.sha1(open(row["path"], "rb").read()).hexdigest()

    fold_run = client.get_run(first.folds[0].run_id)
    parts = inputs_of(client, fold_run.info.run_id)
    assert sorted(parts) == ["test", "train", "validation"]
    for context, dataset in parts.items():
        assert dataset.name == f"emodb/fold1/{context}"
        assert json.loads(dataset.profile)["num_rows"] == int(fold_run.data.params[f"n_{context}"])
        assert sum(row["fold1"] == context for row in table) == int(fold_run.data.params[f"n_{context}"])
    assert len({d.digest for d in parts.values()} | {corpus["corpus"].digest}) == 4

    # another version of the corpus: one test clip's audio replaced by another recording
    changed = next(row for row in table if row["fold1"] == "test")
    donor = next(row for row in table if row["fold1"] == "train")
    shutil.copy(donor["path"], changed["path"])
    second = run_once(fold1_emodb)
    again = inputs_of(client, second.parent_run_id)["corpus"]
    assert again.name == "emodb" and again.digest != corpus["corpus"].digest
    parts_again = inputs_of(client, second.folds[0].run_id)
    assert parts_again["test"].digest != parts["test"].digest
    assert parts_again["train"].digest == parts["train"].digest
    assert parts_again["validation"].digest == parts["validation"].digest
