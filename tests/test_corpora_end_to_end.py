"""Every licensed-corpus replica (real layout, generated audio) and a manifest CSV run end to end into the same
kind of MLflow runs as the shipped EmoDB."""

from __future__ import annotations

import mlflow
import pytest

from replicas import build_crema_d, build_iemocap, build_manifest, build_msp_improv, build_msp_podcast
from trustser.experiment import RunConfig, TrustConfig, run_experiment
from trustser.training import TrainConfig

BUILDERS = {"iemocap": build_iemocap, "crema_d": build_crema_d, "msp_improv": build_msp_improv,
            "msp_podcast": build_msp_podcast, "manifest": build_manifest}
CHEAP = TrustConfig(safety=False, probes=False, measure_cost=False)


@pytest.mark.parametrize("dataset", sorted(BUILDERS))
def test_a_random_init_run_completes_on_each_replica(tmp_path, dataset):
    root = BUILDERS[dataset](tmp_path)
    result = run_experiment(RunConfig(backbone="whisper_tiny", dataset=dataset, data_root=str(root), folds="1",
                                      random_init=True, train=TrainConfig(epochs=1), trust=CHEAP, progress=False))
    client = mlflow.MlflowClient()
    parent = client.get_run(result.parent_run_id)
    assert parent.data.params["dataset"] == dataset and parent.data.tags["weights"] == "random"
    children = client.search_runs([parent.info.experiment_id],
                                  filter_string=f"tags.mlflow.parentRunId = '{result.parent_run_id}'")
    assert len(children) == 1 and 0.0 <= children[0].data.metrics["test_uar"] <= 1.0
    assert {"predictions.csv", "fold_assignment.json", "speakers.json"} <= {
        a.path for a in client.list_artifacts(children[0].info.run_id)}
