"""Every licensed-corpus replica (real layout, generated audio) and a manifest CSV run end to end into the same
kind of MLflow runs as the shipped EmoDB."""

from __future__ import annotations

import mlflow
import pytest

from replicas import build_crema_d, build_iemocap, build_manifest, build_msp_improv, build_msp_podcast
from trustser.experiment import RunConfig, TrustConfig, run_experiment
from trustser.training import TrainConfig

BUILDERS = {
    "iemocap": build_iemocap,
    "crema_d": build_crema_d,
    "msp_improv": build_msp_improv,
    "msp_podcast": build_msp_podcast,
    "manifest": build_manifest,
}
CHEAP = TrustConfig(safety=False, probes=False, measure_cost=False)


@pytest.mark.parametrize("dataset", sorted(BUILDERS))
def test_a_random_init_run_completes_on_each_replica(tmp_path, dataset):
    root = BUILDERS[dataset](tmp_path)
    result = run_experiment(
        RunConfig(
            backbone="whisper_tiny",
            dataset=dataset,
            data_root=str(root),
            folds="1",
            random_init=True,
            train=TrainConfig(schedule="paper", epochs=1),
            trust=CHEAP,
            progress=False,
        )
    )
    client = mlflow.MlflowClient()
    parent = client.get_run(result.parent_run_id)
    assert parent.data.params["dataset"] == dataset and parent.data.tags["weights"] == "random"
    children = client.search_runs(
        [parent.info.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{result.parent_run_id}'"
    )
    assert len(children) == 1 and 0.0 <= children[0].data.metrics["test_uar"] <= 1.0
    assert {"predictions.csv", "fold_assignment.json", "speakers.json"} <= {
        a.path for a in client.list_artifacts(children[0].info.run_id)
    }


def _artifact_csv(client, run_id: str, path: str) -> list[dict[str, str]]:
    import csv

    with open(client.download_artifacts(run_id, path), newline="") as handle:
        return list(csv.DictReader(handle))


def test_a_run_counts_and_lists_its_skipped_clips_and_the_clips_kept_with_missing_metadata(tmp_path, mini_emodb):
    wavs = sorted((mini_emodb / "wav").glob("*.wav"))
    wavs[0].write_bytes(b"RIFF\x00\x00garbage")  # unreadable: skipped at extraction
    result = run_experiment(
        RunConfig(
            backbone="whisper_tiny",
            dataset="emodb",
            data_root=str(mini_emodb),
            folds="1",
            random_init=True,
            train=TrainConfig(schedule="paper", epochs=1),
            trust=CHEAP,
            progress=False,
        )
    )
    client = mlflow.MlflowClient()
    metrics = client.get_run(result.parent_run_id).data.metrics
    assert metrics["skipped_unreadable"] == 1 and metrics["n_kept_with_caveats"] == 0
    rows = _artifact_csv(client, result.parent_run_id, "skipped.csv")
    assert len(rows) == metrics["n_skipped"] >= 1  # one row per skipped item, with its reason
    assert {r["reason"] for r in rows if r["item"] == str(wavs[0])} == {"unreadable"}

    root = build_msp_podcast(tmp_path)  # its replica has clips of unknown speaker and gender
    result = run_experiment(
        RunConfig(
            backbone="whisper_tiny",
            dataset="msp_podcast",
            data_root=str(root),
            random_init=True,
            train=TrainConfig(schedule="paper", epochs=1),
            trust=CHEAP,
            progress=False,
        )
    )
    metrics = client.get_run(result.parent_run_id).data.metrics
    caveats = _artifact_csv(client, result.parent_run_id, "caveats.csv")
    assert len(caveats) == metrics["n_kept_with_caveats"] > 0
    assert metrics["kept_with_unknown_gender"] == sum(r["reason"] == "unknown_gender" for r in caveats) > 0
