"""Every run ends in a model a user can load and run on audio: ``runs:/<parent>/model`` is an MLflow pyfunc model
whose prediction on a test clip is the one its fold run logged, on any sample rate and channel count."""

from __future__ import annotations

import csv

import mlflow
import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from trustser import EMOTIONS
from trustser.deploy import choose_fold
from trustser.experiment import RunConfig, TrustConfig, run_experiment
from trustser.training import TrainConfig

NO_TRUST = TrustConfig(safety=False, probes=False, measure_cost=False, reference=False, bootstrap_resamples=0)


def logged_predictions(client, run_id: str) -> dict[str, str]:
    with open(client.download_artifacts(run_id, "predictions.csv"), newline="") as handle:
        return {row["clip_id"]: row["predicted"] for row in csv.DictReader(handle)}


@pytest.fixture
def finished_run(mini_emodb):
    result = run_experiment(
        RunConfig(
            backbone="whisper_tiny",
            dataset="emodb",
            data_root=str(mini_emodb),
            folds="1,2",
            random_init=True,
            train=TrainConfig(schedule="paper", epochs=2),
            trust=NO_TRUST,
            progress=False,
        )
    )
    return result, mini_emodb


def test_the_parent_run_holds_a_pyfunc_model_that_reproduces_the_chosen_folds_predictions(finished_run, tmp_path):
    result, root = finished_run
    client = mlflow.MlflowClient()
    params = client.get_run(result.parent_run_id).data.params
    assert params["model_from"] == "best_validation" and params["model_fold"] in ("fold1", "fold2")
    model = mlflow.pyfunc.load_model(f"runs:/{result.parent_run_id}/model")
    fold = next(f for f in result.folds if f.fold == params["model_fold"])
    expected = logged_predictions(client, fold.run_id)
    clips = sorted(expected)[:4]
    out = model.predict(pd.DataFrame({"path": [str(root / "wav" / f"{c}.wav") for c in clips]}))
    assert list(out["emotion"]) == [expected[c] for c in clips]
    probs = out[[f"prob_{e}" for e in EMOTIONS]].to_numpy()
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-9)

    # a 44.1 kHz stereo file goes through the same audio rules
    samples, rate = sf.read(str(root / "wav" / f"{clips[0]}.wav"), dtype="float32")
    stereo = tmp_path / "stereo.wav"
    sf.write(stereo, np.stack([samples, samples], 1).repeat(1, 0), rate)
    import torchaudio.functional as AF
    import torch

    high = AF.resample(torch.from_numpy(samples), rate, 44100).numpy()
    sf.write(tmp_path / "hi.wav", np.stack([high, high], 1), 44100)
    out = model.predict(pd.DataFrame({"path": [str(tmp_path / "hi.wav")]}))
    assert out["emotion"][0] in EMOTIONS
    assert out[[f"prob_{e}" for e in EMOTIONS]].to_numpy().sum() == pytest.approx(1.0)

    # waveforms at 16 kHz work too, and a bad clip is an error naming it
    out = model.predict(pd.DataFrame({"audio": [samples.tolist()]}))
    assert out["emotion"][0] == expected[clips[0]]
    with pytest.raises(Exception, match="missing.wav"):
        model.predict(pd.DataFrame({"path": [str(tmp_path / "missing.wav")]}))


def test_the_model_carries_a_signature_an_input_example_and_its_provenance(finished_run):
    result, _ = finished_run
    info = mlflow.models.get_model_info(f"runs:/{result.parent_run_id}/model")
    assert {c["name"] for c in info.signature.inputs.to_dict()} == {"path", "audio"}
    assert [c["name"] for c in info.signature.outputs.to_dict()] == ["emotion", *(f"prob_{e}" for e in EMOTIONS)]
    assert info.saved_input_example_info is not None
    card_path = mlflow.artifacts.download_artifacts(f"runs:/{result.parent_run_id}/model/artifacts/model.json")
    import json

    card = json.loads(open(card_path).read())
    assert card["random_weights"] is True and card["backbone"] == "whisper_tiny"  # never passes as pretrained


def test_the_deployed_fold_is_chosen_on_validation_never_on_test():
    assert choose_fold(["fold1", "fold2", "fold3"], [0.5, 0.8, 0.7]) == 1
    assert choose_fold(["fold1", "fold2"], [float("nan"), 0.3]) == 1


def front_file(tmp_path, run_id: str):
    """A hand-made front whose two candidates point at a real run with a logged model."""
    from trustser.study.pareto import Candidate, front_to_json
    from trustser.study.space import OBJECTIVES

    def row(label, uar, gflops):
        return Candidate(
            label=label,
            params={"backbone": "whisper_tiny"},
            mlflow_run_id=run_id,
            pareto=True,
            values={"performance": uar, "privacy": 0.8, "safety": 0.3, "fairness": 0.2, "sustainability": gflops},
            metrics={"test_uar_ci_low": uar - 0.05, "test_uar_ci_high": uar + 0.05},
        )

    path = tmp_path / "pareto.json"
    path.write_text(front_to_json([row("small", 0.7, 5.0), row("large", 0.8, 50.0)], tuple(OBJECTIVES.values())))
    return path


def test_recommend_registers_the_pick_under_the_scenario_alias_and_predict_reads_it(finished_run, tmp_path):
    import json

    from click.testing import CliRunner

    from trustser.cli import main

    result, root = finished_run
    out = CliRunner().invoke(
        main,
        [
            "recommend",
            "--scenario",
            "edge",
            "--front",
            str(front_file(tmp_path, result.parent_run_id)),
            "--register",
            "ser",
            "--json",
        ],
    )
    assert out.exit_code == 0, out.output
    registered = json.loads(out.stdout[out.stdout.index("{") :])["registered"]
    assert registered["uri"] == "models:/ser@edge" and str(registered["version"]) == "1"
    assert out.stdout.lstrip().startswith("{")  # --json prints JSON only (MLflow's own messages go to stderr)
    client = mlflow.MlflowClient()
    version = client.get_model_version_by_alias("ser", "edge")
    assert version.tags["trustser.scenario"] == "edge" and version.tags["trustser.configuration"] == "small"
    assert "edge" in version.description and json.loads(version.tags["trustser.trust_profile"])["sustainability"] == 5.0

    clip = sorted((root / "wav").glob("*.wav"))[0]
    out = CliRunner().invoke(main, ["predict", "models:/ser@edge", str(clip)])
    assert out.exit_code == 0, out.output
    path, emotion, probs = out.output.strip().split("\t")
    assert path == str(clip) and emotion in EMOTIONS and probs.count("=") == 4
    out = CliRunner().invoke(main, ["predict", "models:/ser@nowhere", str(clip)])
    assert out.exit_code == 2 and "cannot load model" in out.output and "Traceback" not in out.output


@pytest.mark.slow
def test_mlflow_models_serve_answers_a_post_on_loopback(finished_run, tmp_path):
    import json
    import os
    import socket
    import subprocess
    import sys
    import time
    import urllib.request
    from pathlib import Path

    result, root = finished_run
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mlflow_cli = str(Path(sys.executable).parent / "mlflow")
    server = subprocess.Popen(
        [
            mlflow_cli,
            "models",
            "serve",
            "-m",
            f"runs:/{result.parent_run_id}/model",
            "--env-manager",
            "local",
            "-h",
            "127.0.0.1",
            "-p",
            str(port),
            "-w",
            "1",
        ],
        # the server starts `uvicorn` by name: the environment's bin folder must be on PATH,
        # as it is in an activated virtualenv
        env={
            **os.environ,
            "MLFLOW_TRACKING_URI": mlflow.get_tracking_uri(),
            "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ["PATH"]]),
        },
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.time() + 120
        while time.time() < deadline:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=2)
                break
            except OSError:
                assert server.poll() is None, server.stdout.read()[-3000:]
                time.sleep(1)
        clip = sorted((root / "wav").glob("*.wav"))[0]
        body = json.dumps({"dataframe_split": {"columns": ["path"], "data": [[str(clip)]]}}).encode()
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/invocations", data=body, headers={"Content-Type": "application/json"}
        )
        answer = json.loads(urllib.request.urlopen(request, timeout=60).read())
        (prediction,) = answer["predictions"]
        assert prediction["emotion"] in EMOTIONS
        assert sum(prediction[f"prob_{e}"] for e in EMOTIONS) == pytest.approx(1.0)
    finally:
        server.terminate()
        server.wait(timeout=30)
