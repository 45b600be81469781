"""Performance: how well the emotion classifier does, independent of who is speaking.

The headline number is UAR (unweighted average recall, macro recall), the SER convention because emotion corpora
are unbalanced (MSP-Podcast is 55 % neutral): a model that always says "neutral" gets a high accuracy but a UAR of
1/4. Accuracy is kept as ``weighted_accuracy`` (WA in SER papers, where each class weighs by its support).

Absent classes, the one convention that can change a number: a class with no true sample in the evaluated set has
no recall (0/0), so UAR averages the recalls of the classes *present in y_true* only. scikit-learn's
``recall_score(average="macro")`` (what the reference code calls) instead averages over every label seen in
y_true or y_pred and counts a predicted-but-absent class as recall 0; the two agree whenever every class occurs in
y_true, as it does in every test fold of the four corpora. Predicting an absent class is still penalised here: it
lowers the recall of the true class of that sample.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

from trustser import EMOTIONS


def _labels(y: ArrayLike, name: str) -> NDArray[np.int64]:
    """Integer class indices as a flat int64 array; rejects floats with fractions and negatives."""
    arr = np.asarray(y)
    if arr.ndim != 1:
        arr = arr.reshape(-1)
    if arr.dtype.kind not in "biuf":
        raise ValueError(f"{name} must hold integer class indices, got dtype {arr.dtype}")
    if arr.dtype.kind == "f" and arr.size:
        if not np.all(np.equal(np.mod(arr, 1), 0)):
            raise ValueError(f"{name} must hold integer class indices, got dtype {arr.dtype}")
    arr = arr.astype(np.int64, copy=False)
    if arr.size and arr.min() < 0:
        raise ValueError(f"{name} holds a negative class index ({arr.min()})")
    return arr


def _check_pair(
    y_true: ArrayLike, y_pred: ArrayLike, n_classes: int | None
) -> tuple[NDArray[np.int64], NDArray[np.int64], int]:
    t, p = _labels(y_true, "y_true"), _labels(y_pred, "y_pred")
    if t.shape != p.shape:
        raise ValueError(f"y_true and y_pred differ in length ({t.size} vs {p.size})")
    if t.size == 0:
        raise ValueError("y_true is empty: there is nothing to score")
    top = int(max(t.max(), p.max())) + 1
    if n_classes is None:
        n_classes = top
    elif top > n_classes:
        raise ValueError(f"class index {top - 1} is out of range for n_classes={n_classes}")
    return t, p, n_classes


def uar(y_true: ArrayLike, y_pred: ArrayLike, n_classes: int | None = None) -> float:
    """Unweighted average recall over the classes present in ``y_true`` (see the module docstring).

    Called once per validation epoch for model selection, so it is two ``bincount`` calls rather than an sklearn
    call with its input validation.
    """
    t, p, k = _check_pair(y_true, y_pred, n_classes)
    support = np.bincount(t, minlength=k)
    correct = np.bincount(t[t == p], minlength=k)
    present = support > 0
    return float(np.mean(correct[present] / support[present]))


@dataclass(frozen=True)
class PerformanceReport:
    """Classification quality on one evaluation set.

    ``per_class_recall`` and ``per_class_f1`` hold NaN where the value is 0/0 (recall: class absent from y_true;
    F1: class neither true nor predicted). ``confusion`` has rows = true class, columns = predicted class.
    """

    uar: float
    weighted_accuracy: float
    macro_f1: float
    per_class_recall: tuple[float, ...]
    per_class_f1: tuple[float, ...]
    support: tuple[int, ...]
    confusion: NDArray[np.int64]
    class_names: tuple[str, ...]

    @property
    def n_samples(self) -> int:
        return int(sum(self.support))

    def to_dict(self) -> dict[str, float]:
        """Flat scalar view for logging (one key per number; absent-class recalls stay NaN)."""
        out = {"uar": self.uar, "weighted_accuracy": self.weighted_accuracy, "macro_f1": self.macro_f1}
        for name, r, f in zip(self.class_names, self.per_class_recall, self.per_class_f1):
            out[f"recall_{name}"] = r
            out[f"f1_{name}"] = f
        out["n_samples"] = float(self.n_samples)
        return out


def default_class_names(n_classes: int) -> tuple[str, ...]:
    """The method's emotion names for the 4-class task, else the indices as strings."""
    return EMOTIONS if n_classes == len(EMOTIONS) else tuple(str(i) for i in range(n_classes))


def confusion_matrix(y_true: ArrayLike, y_pred: ArrayLike, n_classes: int) -> NDArray[np.int64]:
    """Counts with rows = true class, columns = predicted class (sklearn's orientation)."""
    t, p, k = _check_pair(y_true, y_pred, n_classes)
    return np.bincount(t * k + p, minlength=k * k).reshape(k, k)


def performance_report(
    y_true: ArrayLike,
    y_pred: ArrayLike,
    n_classes: int = 4,
    class_names: tuple[str, ...] | None = None,
) -> PerformanceReport:
    """UAR, accuracy, macro F1, per-class recall/F1 and the confusion matrix of one set of predictions.

    Macro F1 averages F1 over the classes that occur in y_true or y_pred (sklearn's default labels): a class that
    is predicted but absent has F1 = 0 there, which is the penalty for inventing it.
    """
    names = class_names if class_names is not None else default_class_names(n_classes)
    if len(names) != n_classes:
        raise ValueError(f"{len(names)} class names given for n_classes={n_classes}")
    cm = confusion_matrix(y_true, y_pred, n_classes)
    tp = np.diag(cm).astype(np.float64)
    support = cm.sum(axis=1)
    predicted = cm.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        recall = np.where(support > 0, tp / support, np.nan)
        f1_den = support + predicted  # = 2tp + fp + fn
        f1 = np.where(f1_den > 0, 2 * tp / f1_den, np.nan)
    return PerformanceReport(
        uar=float(np.nanmean(recall)),
        weighted_accuracy=float(tp.sum() / cm.sum()),
        macro_f1=float(np.nanmean(f1)),
        per_class_recall=tuple(float(r) for r in recall),
        per_class_f1=tuple(float(f) for f in f1),
        support=tuple(int(s) for s in support),
        confusion=cm,
        class_names=tuple(names),
    )
