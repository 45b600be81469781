"""Privacy probes: how much the frozen embeddings reveal about who is speaking.

Beside ``trustser.training`` (they are heads trained by ``train_head``), not among the metrics, which are pure
functions of arrays.


- Gender probe (the method's privacy metric): the emotion head's architecture trained on the same cached features
  to predict gender (Adam, lr 5e-4, 10 epochs, model chosen on validation UAR), trained on the fold's train
  speakers, selected on its validation speakers and tested on its unseen test speakers. Its test accuracy is the
  privacy risk (higher = worse). Clips of unknown gender are left out and counted (``*_excluded_unknown``).
- Speaker-identification probe (the next attack the paper names): the same head predicting the speaker among the
  fold's training speakers, with an utterance-level split *within* each speaker (each speaker's clips, ordered by
  a hash of the clip id, go 60 % train / 20 % validation / 20 % test), so every test speaker was seen in training.
  Chance level is 1 / number of speakers and is logged beside it. Clips whose speaker is unknown (MSP-Podcast's
  ``unknown``) are left out and counted: they are many people under one id, so as one class they would reward
  the probe for recognising "not one of the identified speakers" and fold an unknown number of voices into a
  single class.

Both use only cached features: no backbone pass.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, replace
from typing import Any, Mapping, Sequence

import numpy as np
from torch import Tensor

from trustser.corpora.base import GENDERS, UNKNOWN_SPEAKER, Clip
from trustser.metrics.performance import uar
from trustser.run_config import PROBE_EPOCHS, TrainConfig
from trustser.training import predict, train_head

PROBE_CONFIG = TrainConfig(epochs=PROBE_EPOCHS)
"""The method's probe: its head, lr 5e-4, and (``paper`` schedule) 10 epochs. Under the default ``converge``
schedule the probes train like the emotion head (step floor, early stopping on validation UAR, standardised
features): on a small corpus such as EmoDB (~200 training clips, 4 steps per epoch) 10 epochs are 40 steps, after
which the probe has not left its initialisation and would report chance-level accuracy as if the embeddings hid
gender. The run's schedule settings are applied by ``trustser.experiment.probe_train_config``."""


@dataclass(frozen=True)
class ProbeResult:
    accuracy: float
    uar: float
    n_test: int
    n_classes: int
    chance: float
    reason: str | None = None
    excluded_unknown: int = 0  # clips left out: gender (gender probe) or speaker (speaker probe) unknown
    test_ids: tuple[str, ...] = ()  # the probe's test clips and whether it got each right (for intervals)
    correct: tuple[bool, ...] = field(default=(), repr=False)
    best_epoch: int = 0
    epochs_run: int = 0

    def to_dict(self, prefix: str) -> dict[str, float]:
        return {
            f"{prefix}_accuracy": self.accuracy,
            f"{prefix}_uar": self.uar,
            f"{prefix}_n_test": float(self.n_test),
            f"{prefix}_chance": self.chance,
            f"{prefix}_excluded_unknown": float(self.excluded_unknown),
            f"{prefix}_best_epoch": float(self.best_epoch),
            f"{prefix}_epochs_run": float(self.epochs_run),
        }


def undefined(reason: str, n_classes: int = 0, excluded_unknown: int = 0) -> ProbeResult:
    return ProbeResult(float("nan"), float("nan"), 0, n_classes, float("nan"), reason, excluded_unknown)


def _probe(
    features: Mapping[str, Tensor],
    labels: Mapping[str, int],
    train: Sequence[str],
    val: Sequence[str],
    test: Sequence[str],
    n_classes: int,
    config: TrainConfig,
    device: Any = None,
) -> ProbeResult:
    result = train_head(features, labels, list(train), list(val), n_classes, config, desc="probe", device=device)
    y_true = np.array([labels[c] for c in test])
    y_pred = predict(result.head, features, list(test), config.batch_size)
    correct = y_true == y_pred
    return ProbeResult(
        float(correct.mean()),
        uar(y_true, y_pred, n_classes),
        len(test),
        n_classes,
        1.0 / n_classes,
        test_ids=tuple(test),
        correct=tuple(bool(c) for c in correct),
        best_epoch=result.best_epoch,
        epochs_run=result.epochs_run,
    )


def gender_probe(
    features: Mapping[str, Tensor],
    clips: Mapping[str, Clip],
    train: Sequence[str],
    validation: Sequence[str],
    test: Sequence[str],
    config: TrainConfig = PROBE_CONFIG,
    device: Any = None,
) -> ProbeResult:
    """Gender probe; ``device``: where it trains (``train_head``)."""
    every = (*train, *validation, *test)
    labels = {c: GENDERS.index(clips[c].gender) for c in every if clips[c].gender in GENDERS}
    excluded = len(set(every) - set(labels))
    parts = [[c for c in ids if c in labels] for ids in (train, validation, test)]
    for name, part in zip(("train", "validation", "test"), parts):
        present = {labels[c] for c in part}
        if len(present) < 2:
            return undefined(
                f"gender probe undefined: the {name} partition has clips of {len(present)} gender(s)", 2, excluded
            )
    return replace(_probe(features, labels, *parts, 2, config, device), excluded_unknown=excluded)


def within_speaker_split(clip_ids: Sequence[str], clips: Mapping[str, Clip]) -> tuple[list[str], list[str], list[str]]:
    """Deterministic 60/20/20 utterance split inside each speaker (speakers with < 3 clips stay in train only)."""
    by_speaker: dict[str, list[str]] = {}
    for c in clip_ids:
        by_speaker.setdefault(clips[c].speaker, []).append(c)
    train, val, test = [], [], []
    for ids in by_speaker.values():
        ids = sorted(ids, key=lambda c: hashlib.sha1(c.encode()).hexdigest())
        if len(ids) < 3:
            train += ids
            continue
        n_held = max(1, round(0.2 * len(ids)))
        test += ids[:n_held]
        val += ids[n_held : 2 * n_held]
        train += ids[2 * n_held :]
    return train, val, test


def speaker_probe(
    features: Mapping[str, Tensor],
    clips: Mapping[str, Clip],
    speaker_clip_ids: Sequence[str],
    config: TrainConfig = PROBE_CONFIG,
    device: Any = None,
) -> ProbeResult:
    """Speaker probe; ``device``: where it trains (``train_head``)."""
    known = [c for c in speaker_clip_ids if clips[c].speaker != UNKNOWN_SPEAKER]
    excluded = len(set(speaker_clip_ids) - set(known))
    speakers = sorted({clips[c].speaker for c in known})
    if len(speakers) < 2:
        return undefined("speaker probe undefined: fewer than 2 identified speakers", len(speakers), excluded)
    labels = {c: speakers.index(clips[c].speaker) for c in known}
    train, val, test = within_speaker_split(known, clips)
    if not test or not val:
        return undefined(
            "speaker probe undefined: too few clips per speaker for a within-speaker split", len(speakers), excluded
        )
    return replace(_probe(features, labels, train, val, test, len(speakers), config, device), excluded_unknown=excluded)
