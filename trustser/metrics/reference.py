"""The reference baseline every fold is checked against: a standardised linear probe on the same cached features.

Why: a benchmark's head must at least match the simplest model on its own features. If the method's head falls
clearly below a logistic regression on per-layer mean-pooled states, its trust profile describes an under-trained
model, not the backbone, and the reader must be told (``REFERENCE_MARGIN``).

The probe: every layer's hidden states averaged over the clip's frames, the layers concatenated ([L * H] per clip),
standardised with the training clips' statistics (scikit-learn ``StandardScaler``), multinomial logistic
regression (``LogisticRegression``, L2, C = 1, class-balanced weights because the score is UAR), trained on the
fold's train + validation speakers (it has no model selection to make) and scored on the test speakers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np
from torch import Tensor

from trustser.metrics.performance import uar

REFERENCE_MARGIN = 0.03
"""A head whose test UAR is more than this below the reference's is flagged (run tag ``trustser.warning``)."""


@dataclass(frozen=True)
class ReferenceResult:
    uar: float
    n_train: int
    n_test: int
    n_features: int

    def to_dict(self) -> dict[str, float]:
        return {"reference_linear_uar": self.uar, "reference_linear_n_features": float(self.n_features)}


def mean_pooled(features: Mapping[str, Tensor], clip_ids: Sequence[str]) -> np.ndarray:
    """[N, L * H]: each clip's per-layer time-mean, layers concatenated (float64)."""
    return np.stack([features[c].float().mean(1).reshape(-1).double().numpy() for c in clip_ids])


def linear_reference(
    features: Mapping[str, Tensor],
    labels: Mapping[str, int],
    train_ids: Sequence[str],
    test_ids: Sequence[str],
    n_classes: int,
    seed: int = 0,
    max_iter: int = 2000,
) -> ReferenceResult:
    """Fit the reference probe on ``train_ids`` and return its test UAR (see the module docstring)."""
    import warnings

    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x_train, x_test = mean_pooled(features, train_ids), mean_pooled(features, test_ids)
    y_train = np.array([labels[c] for c in train_ids])
    y_test = np.array([labels[c] for c in test_ids])
    model = make_pipeline(
        StandardScaler(), LogisticRegression(C=1.0, class_weight="balanced", max_iter=max_iter, random_state=seed)
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # the score is what it is; convergence is not the point
        model.fit(x_train, y_train)
    return ReferenceResult(
        uar(y_test, model.predict(x_test), n_classes), len(train_ids), len(test_ids), x_train.shape[1]
    )


def reference_warning(head_uar: float, reference_uar: float, margin: float = REFERENCE_MARGIN) -> str | None:
    """The warning to attach when the head is worse than the linear reference by more than ``margin``."""
    if not (np.isfinite(head_uar) and np.isfinite(reference_uar)):
        return None
    if head_uar < reference_uar - margin:
        return (
            f"head test UAR {head_uar:.3f} is {reference_uar - head_uar:.3f} below the linear reference "
            f"{reference_uar:.3f} on the same features (margin {margin}): the head is under-trained or "
            f"mis-specified for this corpus; its trust metrics describe a weaker model than the features allow"
        )
    return None
