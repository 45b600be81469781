"""End to end on real EmoDB clips: one parent MLflow run per (backbone, dataset) with a nested run per fold,
read back with MlflowClient."""

from __future__ import annotations

import json

import mlflow
import pytest
from click.testing import CliRunner

from trustser.cli import main
from trustser.experiment import RunConfig, TrustConfig, run_experiment
from trustser.training import TrainConfig

QUICK_TRUST = TrustConfig(
    max_attack_clips=3,
    sweep_snrs=(40.0,),
    sweep_attacks=("fgsm",),
    measure_cost=False,
    probe_epochs=2,
    bootstrap_resamples=50,
)
NO_TRUST = TrustConfig(safety=False, probes=False, measure_cost=False)


def run_tiny(data_root, folds="1,2", backbone="whisper_tiny", epochs=2, trust=QUICK_TRUST, unfreeze_top=0):
    return run_experiment(
        RunConfig(
            backbone=backbone,
            dataset="emodb",
            data_root=str(data_root),
            folds=folds,
            random_init=True,
            train=TrainConfig(schedule="paper", epochs=epochs),
            progress=False,
            trust=trust,
            unfreeze_top=unfreeze_top,
        )
    )


def test_parent_and_fold_runs_hold_params_metrics_and_artifacts(mini_emodb):
    result = run_tiny(mini_emodb)
    client = mlflow.MlflowClient()
    parent = client.get_run(result.parent_run_id)
    assert parent.data.tags["weights"] == "random"
    assert parent.data.params["backbone"] == "whisper_tiny" and parent.data.params["dataset"] == "emodb"
    assert {"test_uar_mean", "test_uar_std", "features_computed"} <= set(parent.data.metrics)
    # the five trust families, aggregated on the parent
    assert {
        "privacy_gender_accuracy_mean",
        "safety_fgsm_asr_mean",
        "fairness_equality_of_odds_mean",
        "sustainability_gflops",
        "sustainability_paper_gmacs",
    } <= set(parent.data.metrics)
    children = client.search_runs(
        [parent.info.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{result.parent_run_id}'"
    )
    assert sorted(r.data.tags["fold"] for r in children) == ["fold1", "fold2"]
    for child in children:
        assert 0.0 <= child.data.metrics["test_uar"] <= 1.0
        assert {"test_recall_neutral", "test_recall_angry", "fairness_equality_of_odds"} <= set(child.data.metrics)
        assert len(client.get_metric_history(child.info.run_id, "val_uar")) == 2
        artifacts = {a.path for a in client.list_artifacts(child.info.run_id)}
        assert {"confusion_matrix.png", "predictions.csv", "speakers.json", "safety"} <= artifacts
        safety = {a.path for a in client.list_artifacts(child.info.run_id, "safety")}
        assert {"safety/fgsm_clips.csv", "safety/snr_sweep.png"} <= safety
        if child.data.metrics["safety_fgsm_n_attacked"] > 0:
            assert abs(child.data.metrics["safety_fgsm_achieved_snr_db_mean"] - 45.0) < 0.1
        # FGSM is swept, Gaussian noise runs at 45 dB only, on the clips FGSM found correct on the waveform path
        assert "safety_fgsm_asr_snr40" in child.data.metrics and "safety_gaussian_asr_snr40" not in child.data.metrics
        for count in ("n_attacked", "n_clean_mismatch"):
            assert child.data.metrics[f"safety_gaussian_{count}"] == child.data.metrics[f"safety_fgsm_{count}"]
        speakers = json.loads(open(client.download_artifacts(child.info.run_id, "speakers.json")).read())
        assert not set(speakers["test"]) & set(speakers["train"])
    mean = sum(c.data.metrics["test_uar"] for c in children) / 2
    assert parent.data.metrics["test_uar_mean"] == pytest.approx(mean)


def test_every_headline_metric_has_its_interval_and_calibration_and_the_reference_is_logged(mini_emodb):
    result = run_tiny(mini_emodb)
    client = mlflow.MlflowClient()
    parent = client.get_run(result.parent_run_id).data.metrics
    # the parent's intervals are over the pooled test clips of all folds (every test speaker)
    for key in (
        "test_uar",
        "privacy_gender_accuracy",
        "safety_fgsm_asr",
        "fairness_equality_of_odds",
        "fairness_statistical_parity",
        "test_ece",
    ):
        assert f"{key}_ci_low" in parent and f"{key}_ci_high" in parent, key
    assert parent["test_uar_ci_low"] <= parent["test_uar_pooled"] <= parent["test_uar_ci_high"]
    assert {
        "test_ece_mean",
        "test_brier_mean",
        "reference_linear_uar_mean",
        "fairness_equality_of_odds_null_p95",
        "fairness_equality_of_odds_random_p95",
    } <= set(parent)
    for fold in result.folds:
        run = client.get_run(fold.run_id)
        metrics = run.data.metrics
        assert 0.0 <= metrics["reference_linear_uar"] <= 1.0 and 0.0 <= metrics["test_ece"] <= 1.0
        assert {
            "test_uar_ci_low",
            "test_brier",
            "fairness_equality_of_odds_p_value",
            "epochs_run",
            "train_steps",
            "best_epoch",
        } <= set(metrics)
        artifacts = {a.path for a in client.list_artifacts(fold.run_id, "calibration")}
        assert {"calibration/reliability.png", "calibration/reliability.json"} <= artifacts


def test_every_fold_run_carries_all_five_trust_families_and_the_parent_a_trust_profile(mini_emodb):
    result = run_tiny(mini_emodb, folds="1")
    client = mlflow.MlflowClient()
    (child,) = client.search_runs(
        [client.get_run(result.parent_run_id).info.experiment_id],
        filter_string=f"tags.mlflow.parentRunId = '{result.parent_run_id}'",
    )
    metrics = child.data.metrics
    assert {
        "test_uar",
        "privacy_gender_accuracy",
        "safety_fgsm_asr",
        "fairness_equality_of_odds",
        "sustainability_gflops",
        "sustainability_paper_gmacs",
        "sustainability_backbone_gmacs",
    } <= set(metrics)
    assert metrics["sustainability_gflops"] == result.summary["sustainability_gflops"]
    assert child.data.params["weights_source"] == "random"
    confusion = json.loads(open(client.download_artifacts(child.info.run_id, "confusion_matrix.json")).read())
    assert sum(map(sum, confusion["counts"])) == metrics["test_n_samples"] == int(child.data.params["n_test"]) > 0
    assert len(confusion["counts"]) == 4 and confusion["classes"] == ["neutral", "happy", "sad", "angry"]

    profile = json.loads(open(client.download_artifacts(result.parent_run_id, "trust_profile.json")).read())
    assert list(profile["axes"]) == ["performance", "privacy", "safety", "fairness", "sustainability"]
    performance = profile["axes"]["performance"]
    assert performance["metric"] == "test_uar_mean"
    assert performance["value"] == pytest.approx(result.summary["test_uar_mean"])
    assert performance["radar_score"] == pytest.approx(max(0.0, (performance["value"] - 0.25) / 0.75))
    assert profile["axes"]["sustainability"]["value"] == pytest.approx(result.summary["sustainability_gflops"])


def test_privacy_probes_use_the_method_probe_whatever_head_the_emotion_model_used():
    from trustser.experiment import probe_train_config
    from trustser.probes import PROBE_CONFIG

    trial = TrainConfig(
        width=64,
        lr=1e-3,
        pooling="last",
        seed=3,
        batch_size=32,
        min_steps=300,
        patience=7,
        max_epochs=90,
        standardize=False,
    )
    probe = probe_train_config(trial, TrustConfig(probe_epochs=10))
    assert (probe.width, probe.lr, probe.pooling) == (PROBE_CONFIG.width, 5e-4, PROBE_CONFIG.pooling)
    assert (probe.epochs, probe.seed, probe.batch_size) == (10, 3, 32)
    # the probes train the way the run trains: as converged as the emotion head
    assert (probe.schedule, probe.min_steps, probe.patience, probe.max_epochs, probe.standardize) == (
        "converge",
        300,
        7,
        90,
        False,
    )


def test_training_is_deterministic_on_cpu(mini_emodb):
    a = run_tiny(mini_emodb, folds="1", trust=NO_TRUST)
    b = run_tiny(mini_emodb, folds="1", trust=NO_TRUST)
    assert a.folds[0].train.history == b.folds[0].train.history


@pytest.mark.parametrize("backbone", ["apc", "tera", "whisper_small", "wav2vec2_base", "wavlm_base_plus"])
def test_every_backbone_runs_a_fold_end_to_end(fold1_emodb, backbone):
    result = run_tiny(fold1_emodb, folds="1", backbone=backbone, epochs=1, trust=NO_TRUST)
    assert 0.0 <= result.folds[0].metrics["test_uar"] <= 1.0


def test_unfreezing_the_top_layer_runs_all_metrics_through_the_fine_tuned_model(mini_emodb):
    result = run_tiny(mini_emodb, folds="1", epochs=1, unfreeze_top=1)
    metrics = result.folds[0].metrics
    assert {"test_uar", "privacy_gender_accuracy", "safety_fgsm_asr", "fairness_equality_of_odds"} <= set(metrics)
    params = mlflow.MlflowClient().get_run(result.parent_run_id).data.params
    assert params["unfreeze_top"] == "1"


def test_cli_run_prints_uar_and_warns_about_random_weights(mini_emodb):
    out = CliRunner().invoke(
        main,
        [
            "run",
            "--backbone",
            "whisper_tiny",
            "--random-init",
            "--data-root",
            str(mini_emodb),
            "--folds",
            "1",
            "--schedule",
            "paper",
            "--epochs",
            "1",
            "--no-progress",
            "--max-attack-clips",
            "2",
            "--no-cost",
            "--no-probes",
        ],
    )
    assert out.exit_code == 0, out.output
    assert "RANDOM weights" in out.output and "test UAR" in out.output
    # the defaults measure the attacks at the method's 45 dB only: no sweep, so no sweep artifacts
    (fold,) = mlflow.search_runs(
        filter_string="tags.fold = 'fold1'",
        order_by=["attributes.start_time DESC"],
        max_results=1,
        search_all_experiments=True,
        output_format="list",
    )
    assert "safety_fgsm_asr_snr45" in fold.data.metrics and "safety_fgsm_asr_snr30" not in fold.data.metrics
    safety = {a.path for a in mlflow.MlflowClient().list_artifacts(fold.info.run_id, "safety")}
    assert "safety/fgsm_clips.csv" in safety and "safety/snr_sweep.png" not in safety


def test_cli_errors_are_one_line_without_traceback(tmp_path):
    out = CliRunner().invoke(main, ["run", "--dataset", "emodb", "--data-root", str(tmp_path), "--random-init"])
    assert out.exit_code == 2
    last = out.output.strip().splitlines()[-1]
    assert last.startswith("trustser: error: EmoDB not found") and "Traceback" not in out.output


def test_cli_ls_json_lists_backbones_and_datasets():
    out = CliRunner().invoke(main, ["ls", "--json"])
    rows = json.loads(out.output)
    by_name = {r["name"]: r for r in rows}
    assert by_name["whisper_base"]["kind"] == "backbone" and by_name["whisper_base"]["layers"] == 6
    assert by_name["whisper_base"]["hidden_size"] == 512 and "weights" in by_name["apc"]
    assert by_name["emodb"]["kind"] == "dataset"
