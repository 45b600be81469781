"""The deployable model of a run: backbone + front end + trained head (with its feature standardisation) as an
MLflow pyfunc model that takes audio and returns an emotion with the four class probabilities.

Why pyfunc: it is what ``mlflow.pyfunc.load_model``, ``mlflow models predict`` / ``serve`` and the Model Registry
understand, so the model a study picks can be loaded, served and registered with MLflow's own tools.

What the model holds (artifacts of ``model/``): ``backbone.safetensors`` (the backbone's full state, fine-tuned top
layers included: a copy, so the model loads on a machine without the weights cache or the hub), ``head.safetensors``
(the head, its standardisation buffers included) and ``model.json`` (architecture, classes, audio rules, provenance:
weights identity, which fold's head). The feature path is the one the run measured: audio rules of
``trustser.audio.load_audio`` (any sample rate and channel count → 16 kHz mono, first 6 s), the backbone's hidden
states rounded to fp16 exactly as the feature cache stores them, then the head. So a test clip gets the prediction
its fold run logged.

Input: a DataFrame with a ``path`` column (audio files) or an ``audio`` column (16 kHz mono waveforms as lists of
floats). Output: a DataFrame with ``emotion`` and ``prob_<class>`` columns (probabilities sum to 1).

Which head: the run's fold whose validation UAR is best (``MODEL_FROM``; logged as param ``model_from`` and
``model_fold``): every fold's head is trained on other speakers; picking on validation, never on test, keeps the
choice honest.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Sequence

import mlflow
import numpy as np

from trustser import EMOTIONS, MAX_SECONDS, SAMPLE_RATE
from trustser.run_config import MODEL_FROM

MODEL_ARTIFACT = "model"
FORMAT = 1


@dataclass(frozen=True)
class ModelCard:
    """``model.json``: everything needed to rebuild the model and to say where it came from."""

    backbone: str
    num_layers: int
    hidden_size: int
    width: int
    pooling: str
    classes: tuple[str, ...]
    max_seconds: float
    sample_rate: int
    weights_source: str
    weights_identity: str
    random_weights: bool
    unfreeze_top: int
    model_from: str
    model_fold: str
    validation_uar: float
    dataset: str
    format: int = FORMAT


def choose_fold(fold_names: Sequence[str], validation_uars: Sequence[float], rule: str = "best_validation") -> int:
    """Index of the fold whose head is deployed (``MODEL_FROM``)."""
    if rule not in MODEL_FROM:
        from trustser.errors import ConfigError

        raise ConfigError(f"model_from must be one of {', '.join(MODEL_FROM)}, got '{rule}'")
    if not fold_names:
        raise ValueError("no folds to choose a model from")
    scores = [v if math.isfinite(v) else -1.0 for v in validation_uars]
    return int(np.argmax(scores))


def write_model_files(directory: Path, backbone: Any, head: Any, card: ModelCard) -> dict[str, str]:
    """The three artifact files; returns pyfunc's ``artifacts`` mapping (name → local path)."""
    from safetensors.torch import save_file

    directory.mkdir(parents=True, exist_ok=True)
    files = {
        "backbone": directory / "backbone.safetensors",
        "head": directory / "head.safetensors",
        "card": directory / "model.json",
    }
    save_file({k: v.detach().cpu().contiguous() for k, v in backbone.state_dict().items()}, str(files["backbone"]))
    save_file({k: v.detach().cpu().contiguous() for k, v in head.state_dict().items()}, str(files["head"]))
    files["card"].write_text(json.dumps(asdict(card), indent=1))
    return {k: str(v) for k, v in files.items()}


def build_architecture(name: str):
    """The backbone's published architecture with no weights loaded (they come from the model's own file)."""
    from trustser.backbones.registry import get_backbone_spec

    spec = get_backbone_spec(name)
    return spec.backbone_family.build(spec, None)


class SerModel(mlflow.pyfunc.PythonModel):
    """The pyfunc model: rebuilt from its artifacts in ``load_context``, audio in, emotions out in ``predict``."""

    # predict is untyped on purpose (MLflow would read type hints as the input schema, and the input is audio in
    # several shapes, checked by input_waves); this MLflow class attribute skips its type-hint wrapping and the
    # warning it prints at import ("Add type hints to the `predict` method") on every trustser command
    _skip_type_hint_validation = True

    def load_context(self, context: Any) -> None:
        from safetensors.torch import load_file

        from trustser.head import EmotionHead

        card = json.loads(Path(context.artifacts["card"]).read_text())
        card["classes"] = tuple(card["classes"])
        self.card = ModelCard(**card)
        backbone = build_architecture(self.card.backbone)
        backbone.load_state_dict(load_file(context.artifacts["backbone"]))
        self.backbone = backbone.eval()
        head = EmotionHead(
            self.card.num_layers, self.card.hidden_size, len(self.card.classes), self.card.width, self.card.pooling
        )
        head.load_state_dict(load_file(context.artifacts["head"]))
        self.head = head.eval()

    def predict(self, context, model_input, params=None):  # untyped: MLflow would read type hints as a schema
        import pandas as pd

        waves = list(input_waves(model_input, self.card.max_seconds))
        probs = np.stack([self.probabilities(w) for w in waves]) if waves else np.zeros((0, len(self.card.classes)))
        out = pd.DataFrame({"emotion": [self.card.classes[i] for i in probs.argmax(-1)]})
        for k, name in enumerate(self.card.classes):
            out[f"prob_{name}"] = probs[:, k]
        return out

    def probabilities(self, samples: np.ndarray) -> np.ndarray:
        import torch

        from trustser.features import compute_hidden

        with torch.no_grad():
            hidden = compute_hidden(self.backbone, torch.from_numpy(samples)).to(torch.float16)  # as cached
            logits = self.head.forward_clips([hidden.float()])
        return torch.softmax(logits.double(), -1)[0].numpy()


def input_waves(model_input: Any, max_seconds: float = MAX_SECONDS):
    """Waveforms from a DataFrame (``path`` or ``audio`` column), a list of paths, or one path; the corpora's
    audio rules apply, and a bad clip is an error naming it (a model asked about a clip must answer or say why)."""
    import pandas as pd

    from trustser.audio import load_audio
    from trustser.errors import AudioError

    if isinstance(model_input, (str, Path)):
        model_input = [model_input]
    if not isinstance(model_input, pd.DataFrame):
        model_input = pd.DataFrame({"path": [str(p) for p in model_input]})
    has_path = "path" in model_input.columns
    has_audio = "audio" in model_input.columns
    if not (has_path or has_audio):
        raise ValueError(
            f"model input needs a 'path' column (audio files) or an 'audio' column (16 kHz waveforms); "
            f"got columns {list(model_input.columns)}"
        )
    for row, record in enumerate(model_input.to_dict("records")):
        path, audio = record.get("path"), record.get("audio")
        if has_path and isinstance(path, str) and path:
            try:
                yield load_audio(path, max_seconds)
            except AudioError as exc:
                raise ValueError(f"row {row}: {exc}") from None
        elif audio is not None and len(audio):
            wave = np.asarray(audio, dtype=np.float32).reshape(-1)[: int(round(max_seconds * SAMPLE_RATE))]
            if not np.all(np.isfinite(wave)) or not np.any(wave):
                raise ValueError(f"row {row}: the waveform is silent or holds NaN/inf samples")
            yield wave
        else:
            raise ValueError(f"row {row}: neither a path nor a waveform")


def signature_and_example():
    """Input: optional ``path`` (string) and ``audio`` (array of float) columns; output: emotion + probabilities."""
    from mlflow.models import ModelSignature
    from mlflow.types.schema import Array, ColSpec, Schema

    inputs = Schema([ColSpec("string", "path", required=False), ColSpec(Array("double"), "audio", required=False)])
    outputs = Schema([ColSpec("string", "emotion"), *(ColSpec("double", f"prob_{c}") for c in EMOTIONS)])
    t = np.arange(SAMPLE_RATE // 4) / SAMPLE_RATE  # 0.25 s, 220 Hz: a valid clip that needs no file
    example = {"audio": [[round(float(x), 5) for x in 0.1 * np.sin(2 * np.pi * 220 * t)]]}
    return ModelSignature(inputs=inputs, outputs=outputs), example


def requirements() -> list[str]:
    """Pinned to what this run used, so ``mlflow models serve`` with an environment manager rebuilds it."""
    from importlib.metadata import PackageNotFoundError, version

    out = []
    for name in (
        "torch",
        "torchaudio",
        "transformers",
        "s3prl",
        "safetensors",
        "soundfile",
        "pandas",
        "numpy",
        "mlflow",
    ):
        try:
            out.append(f"{name}=={version(name)}")
        except PackageNotFoundError:
            pass
    return out


def log_model(backbone: Any, head: Any, card: ModelCard, workdir: Path) -> str:
    """Log the pyfunc model under ``model/`` of the active run; returns its ``runs:/`` URI."""
    import pandas as pd

    files = write_model_files(workdir, backbone, head, card)
    signature, example = signature_and_example()
    mlflow.pyfunc.log_model(
        name=MODEL_ARTIFACT,
        python_model=SerModel(),
        artifacts=files,
        signature=signature,
        input_example=pd.DataFrame(example),
        pip_requirements=requirements(),
    )
    run = mlflow.active_run()
    return f"runs:/{run.info.run_id}/{MODEL_ARTIFACT}"
