"""Calibration: does the classifier's confidence mean what it says?

A model that says "angry, 90 %" should be right on about 90 % of such clips. Two numbers measure how far off it is:

* **ECE** (expected calibration error, top-label, Guo et al. 2017, "On Calibration of Modern Neural Networks"):
  confidence = the largest class probability, clips grouped into ``n_bins`` equal-width confidence bins over
  [0, 1] (bin i covers (i/n, (i+1)/n]; a confidence of exactly 0 goes to the first bin), and
  ECE = Σ_b (|B_b| / N) · |accuracy(B_b) − mean confidence(B_b)|. 0 is perfectly calibrated; it only looks at the
  top class, and it depends on the bin count (15, Guo et al.'s choice, is the default and is logged).
* **Brier score** (multiclass, Brier 1950): the mean over clips of Σ_k (p_k − 1[y = k])², the squared distance
  between the probability vector and the one-hot truth. Range [0, 2] (0: certain and right; 2: certain and wrong);
  some libraries divide by the number of classes or score only the true class, so the convention is stated here.
  Unlike ECE it mixes calibration with accuracy: a calibrated but uncertain model still scores above 0.

The reliability table and figure show the per-bin picture behind ECE. Everything here is pure numpy on a
probability matrix (softmax outputs, rows summing to 1); :func:`reliability_figure` returns a matplotlib figure for
the caller to log.

    from trustser.metrics.calibration import calibration_report
    rep = calibration_report(probs, y_true)  # probs: [N, K] softmax, y_true: [N] class indices
    rep.to_dict()  # {"ece": ..., "brier": ...}
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

from trustser.metrics.performance import _labels

SUM_TOLERANCE = 1e-4
"""How far a row of probabilities may sum from 1 (float32 softmax outputs are off by ~1e-7)."""


def _check(probs: ArrayLike, y_true: ArrayLike) -> tuple[NDArray[np.float64], NDArray[np.int64]]:
    """The probability matrix and labels, validated; a ValueError names what is wrong."""
    p = np.asarray(probs, dtype=np.float64)
    y = np.asarray(y_true)
    if p.ndim != 2:
        raise ValueError(f"probs must be a [N, K] matrix, got shape {p.shape}")
    if y.ndim != 1:
        raise ValueError(f"y_true must be a vector of N class indices, got shape {y.shape}")
    if p.shape[0] != y.shape[0]:
        raise ValueError(f"probs has {p.shape[0]} rows but y_true has {y.shape[0]} labels")
    if p.shape[0] == 0:
        raise ValueError("probs is empty: there is nothing to score")
    if not np.all(np.isfinite(p)):
        raise ValueError("probs holds NaN or infinite values")
    if (p < 0).any():
        raise ValueError(f"probs holds negative values (min {p.min():.3g}): pass probabilities, not logits")
    sums = p.sum(axis=1)
    worst = int(np.argmax(np.abs(sums - 1.0)))
    if abs(sums[worst] - 1.0) > SUM_TOLERANCE:
        raise ValueError(
            f"probs rows must sum to 1 (within {SUM_TOLERANCE}); row {worst} sums to {sums[worst]:.6g}: "
            "apply softmax first"
        )
    y = _labels(y, "y_true")
    if y.max() >= p.shape[1]:
        raise ValueError(f"y_true holds a class index outside [0, {p.shape[1]}) ({y.min()}..{y.max()})")
    return p, y


def _check_bins(n_bins: int) -> None:
    if n_bins < 1:
        raise ValueError(f"n_bins must be >= 1, got {n_bins}")


def _top_label(probs: NDArray[np.float64], y: NDArray[np.int64]) -> tuple[NDArray[np.float64], NDArray[np.bool_]]:
    """Confidence (largest probability) and whether the top class is right; ties go to the lowest class index."""
    return probs.max(axis=1), probs.argmax(axis=1) == y


def _bin_index(confidence: NDArray[np.float64], n_bins: int) -> NDArray[np.int64]:
    """Bin of each confidence: i such that edge_i < c ≤ edge_{i+1}; c = 0 goes to bin 0.

    Searching the same edges that the table reports keeps a confidence on an edge (0.6 with 5 bins) in the bin
    whose printed upper bound it equals, whatever the float rounding of i/n.
    """
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    return np.clip(np.searchsorted(edges, confidence, side="left") - 1, 0, n_bins - 1)


@dataclass(frozen=True)
class ReliabilityBin:
    """One confidence bin: its range, clip count, mean confidence and accuracy (NaN when empty)."""

    low: float
    high: float
    count: int
    confidence: float
    accuracy: float


def reliability_table(probs: ArrayLike, y_true: ArrayLike, n_bins: int = 15) -> tuple[ReliabilityBin, ...]:
    """Every bin of the ECE, empty ones included (so the counts sum to N)."""
    _check_bins(n_bins)
    p, y = _check(probs, y_true)
    confidence, correct = _top_label(p, y)
    b = _bin_index(confidence, n_bins)
    count = np.bincount(b, minlength=n_bins)
    conf_sum = np.bincount(b, weights=confidence, minlength=n_bins)
    acc_sum = np.bincount(b, weights=correct.astype(np.float64), minlength=n_bins)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_conf = np.where(count > 0, conf_sum / count, np.nan)
        acc = np.where(count > 0, acc_sum / count, np.nan)
    return tuple(
        ReliabilityBin(float(edges[i]), float(edges[i + 1]), int(count[i]), float(mean_conf[i]), float(acc[i]))
        for i in range(n_bins)
    )


def _ece_from_table(table: tuple[ReliabilityBin, ...]) -> float:
    n = sum(r.count for r in table)
    return float(sum(r.count / n * abs(r.accuracy - r.confidence) for r in table if r.count))


def expected_calibration_error(probs: ArrayLike, y_true: ArrayLike, n_bins: int = 15) -> float:
    """Top-label ECE with ``n_bins`` equal-width bins (Guo et al. 2017); see the module docstring."""
    return _ece_from_table(reliability_table(probs, y_true, n_bins))


def brier_score(probs: ArrayLike, y_true: ArrayLike) -> float:
    """Multiclass Brier score: mean over clips of Σ_k (p_k − 1[y = k])², in [0, 2] (not divided by K)."""
    p, y = _check(probs, y_true)
    one_hot = np.zeros_like(p)
    one_hot[np.arange(y.size), y] = 1.0
    return float(np.mean(np.sum((p - one_hot) ** 2, axis=1)))


@dataclass(frozen=True)
class CalibrationReport:
    """ECE, Brier score and the reliability table of one set of predicted probabilities."""

    ece: float
    brier: float
    n: int
    n_bins: int
    table: tuple[ReliabilityBin, ...]

    def to_dict(self) -> dict[str, float]:
        return {"ece": self.ece, "brier": self.brier}


def calibration_report(probs: ArrayLike, y_true: ArrayLike, n_bins: int = 15) -> CalibrationReport:
    """ECE (top-label, ``n_bins`` equal-width bins), multiclass Brier score and the reliability table."""
    table = reliability_table(probs, y_true, n_bins)
    return CalibrationReport(
        ece=_ece_from_table(table),
        brier=brier_score(probs, y_true),
        n=int(sum(r.count for r in table)),
        n_bins=n_bins,
        table=table,
    )


def reliability_figure(table: tuple[ReliabilityBin, ...], title: str = ""):
    """Reliability diagram: accuracy per confidence bin against the diagonal of perfect calibration.

    Bars below the diagonal are overconfident bins; the clip count is printed above each bar, since a bin of 3
    clips says little. matplotlib Agg, returned for the caller to save or log.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4.2, 4.2), dpi=110)
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=1, label="perfect calibration")
    filled = [r for r in table if r.count]
    centres = [(r.low + r.high) / 2 for r in filled]
    widths = [r.high - r.low for r in filled]
    ax.bar(centres, [r.accuracy for r in filled], width=widths, edgecolor="black", alpha=0.8, label="accuracy")
    ax.bar(
        centres,
        [r.confidence - r.accuracy for r in filled],
        bottom=[r.accuracy for r in filled],
        width=widths,
        color="tab:red",
        alpha=0.3,
        label="gap to confidence",
    )
    for x, r in zip(centres, filled):
        ax.text(x, min(max(r.accuracy, r.confidence), 1.0) + 0.01, str(r.count), ha="center", va="bottom", fontsize=6)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.08)
    ax.set_xlabel("confidence (largest class probability)")
    ax.set_ylabel("accuracy")
    ax.legend(fontsize=7, loc="upper left")
    ax.grid(alpha=0.3)
    summary = f"n={sum(r.count for r in table)}, ECE={_ece_from_table(table):.3f}"
    ax.set_title(f"{title} ({summary})" if title else summary, fontsize=9)
    fig.tight_layout()
    return fig
