"""Cross-corpus evaluation: each fold's model, trained and selected on corpus A, tested on all of corpus B.

Why: within-corpus UAR says how a model does on the speakers, microphones and acting style of the corpus it was
trained on; a deployed model meets others. EmoBox's leaderboard shows accuracy collapsing across corpora, so a trust
profile without a cross-corpus figure overstates what a pick will do in the field.

- Class maps are aligned by construction: every corpus loader maps its labels to trustser's four emotions
  (``trustser.EMOTIONS``) and skips the rest, counted, as within-corpus runs do.
- All of B's speakers are unseen: B must be another corpus than A (the same corpus under another root is refused
  too, since its speakers would overlap the training folds).
- B's features come from the same feature cache (same backbone, weights and settings), extracted once and reused
  by every fold; a fine-tuned model's live top layers run on them like on A's.
- ``cross_<B>_uar`` per fold with its speaker-level bootstrap interval (``_ci_low`` / ``_ci_high``), the fold mean on
  the parent (``cross_<B>_uar_mean``), and the number of B clips tested (``cross_<B>_n_clips``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import numpy as np

from trustser import EMOTIONS
from trustser.corpora import CorpusIndex
from trustser.errors import ConfigError


@dataclass
class CrossCorpus:
    """The test corpus B of a cross-corpus run, with its features (from the run's feature cache)."""

    name: str
    index: CorpusIndex
    features: Any  # a FeatureStore over all of B's clips

    @property
    def clip_ids(self) -> list[str]:
        return list(self.index.clips)

    @property
    def key(self) -> str:
        return metric_name(self.name)


def metric_name(dataset: str) -> str:
    """``cross_<dataset>`` with the dataset name made safe for an MLflow metric key."""
    return "cross_" + re.sub(r"[^0-9A-Za-z_]+", "_", dataset)


def check_distinct(train_dataset: str, test_dataset: str) -> None:
    if train_dataset == test_dataset:
        raise ConfigError(
            f"test_dataset: '{test_dataset}' is the training corpus; a cross-corpus test needs another "
            "corpus (its speakers must all be unseen): the within-corpus test is test_uar"
        )


def cross_metrics(
    cross: CrossCorpus, head: Any, features: Any, batch_size: int, n_resamples: int, seed: int
) -> dict[str, float]:
    """UAR of ``head`` on all of B's clips (``features``: B's features as the head reads them), with its
    speaker-level 95 % bootstrap interval."""
    from trustser.metrics.uncertainty import cluster_bootstrap, uar_stat
    from trustser.training import predict

    ids = cross.clip_ids
    y_true = np.array([cross.index.clips[c].label for c in ids])
    y_pred = np.asarray(predict(head, features, ids, batch_size))
    speakers = np.array([cross.index.clips[c].speaker for c in ids], dtype=object)
    interval = cluster_bootstrap(
        lambda y_true, y_pred: uar_stat(y_true, y_pred, len(EMOTIONS)),
        {"y_true": y_true, "y_pred": y_pred},
        speakers,
        n_resamples,
        seed,
    )
    key = cross.key
    return {
        f"{key}_uar": interval.value,
        f"{key}_uar_ci_low": interval.low,
        f"{key}_uar_ci_high": interval.high,
        f"{key}_n_clips": float(len(ids)),
        f"{key}_n_speakers": float(len(set(speakers))),
    }


def cross_matrix(rows: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """The train × test matrix from experiment runs: each row is ``{"dataset": A, "metrics": {...}}`` (a parent
    run's); the diagonal is the within-corpus ``test_uar_mean``, other cells ``cross_<B>_uar_mean``. Where several
    runs give one cell, the latest row wins (rows come newest first: the first seen is kept)."""
    matrix: dict[str, dict[str, float]] = {}
    for row in rows:
        train, metrics = row["dataset"], row["metrics"]
        cells = matrix.setdefault(train, {})
        if "test_uar_mean" in metrics:
            cells.setdefault(train, float(metrics["test_uar_mean"]))
        for key, value in metrics.items():
            m = re.fullmatch(r"cross_(.+)_uar_mean", key)
            if m:
                cells.setdefault(m.group(1), float(value))
    return matrix
