"""Specification of trustser.metrics.calibration: top-label ECE, multiclass Brier score, reliability diagram."""

from __future__ import annotations

import numpy as np
import pytest

from trustser.metrics.calibration import (
    CalibrationReport,
    brier_score,
    calibration_report,
    expected_calibration_error,
    reliability_figure,
    reliability_table,
)

# Six clips, four classes, three bins: (0, 1/3], (1/3, 2/3], (2/3, 1].
#   clip  probs                    y  confidence  top class  correct  bin
#   1     .30 .25 .25 .20          0  .30         0          yes      0
#   2     .25 .30 .25 .20          0  .30         1          no       0
#   3     .60 .20 .10 .10          0  .60         0          yes      1
#   4     .10 .50 .20 .20          2  .50         1          no       1
#   5     .90 .05 .05 .00          0  .90         0          yes      2
#   6     .00 .00 .20 .80          3  .80         3          yes      2
# bin 0: 2 clips, mean confidence .30, accuracy 1/2 -> |.50 - .30| = .20
# bin 1: 2 clips, mean confidence .55, accuracy 1/2 -> |.50 - .55| = .05
# bin 2: 2 clips, mean confidence .85, accuracy 1   -> |1 - .85|   = .15
# ECE = 2/6 * (.20 + .05 + .15) = .4/3 = 0.1333...
# Brier per clip, Σ_k (p_k - 1[y = k])²:
#   1: .49 + .0625 + .0625 + .04 = .655      2: .5625 + .09 + .0625 + .04 = .755
#   3: .16 + .04 + .01 + .01 = .22           4: .01 + .25 + .64 + .04 = .94
#   5: .01 + .0025 + .0025 + 0 = .015        6: 0 + 0 + .04 + .04 = .08
# Brier = 2.665 / 6 = 0.444166...
PROBS = np.array(
    [
        [0.30, 0.25, 0.25, 0.20],
        [0.25, 0.30, 0.25, 0.20],
        [0.60, 0.20, 0.10, 0.10],
        [0.10, 0.50, 0.20, 0.20],
        [0.90, 0.05, 0.05, 0.00],
        [0.00, 0.00, 0.20, 0.80],
    ]
)
Y = np.array([0, 0, 0, 2, 0, 3])


def test_hand_computed_ece_and_reliability_table() -> None:
    assert expected_calibration_error(PROBS, Y, n_bins=3) == pytest.approx(0.4 / 3)
    table = reliability_table(PROBS, Y, n_bins=3)
    assert [r.count for r in table] == [2, 2, 2]
    assert [r.confidence for r in table] == pytest.approx([0.30, 0.55, 0.85])
    assert [r.accuracy for r in table] == pytest.approx([0.5, 0.5, 1.0])
    assert [r.low for r in table] == pytest.approx([0, 1 / 3, 2 / 3])
    assert [r.high for r in table] == pytest.approx([1 / 3, 2 / 3, 1])


def test_hand_computed_brier_score() -> None:
    assert brier_score(PROBS, Y) == pytest.approx(2.665 / 6)


def test_report_bundles_both_and_names_its_keys() -> None:
    rep = calibration_report(PROBS, Y, n_bins=3)
    assert isinstance(rep, CalibrationReport)
    assert (rep.n, rep.n_bins, len(rep.table)) == (6, 3, 3)
    assert rep.to_dict() == pytest.approx({"ece": 0.4 / 3, "brier": 2.665 / 6})


def test_perfect_calibration_has_zero_ece() -> None:
    # Ten clips all at confidence 0.8 of which exactly 8 are right: accuracy = confidence in their one bin.
    probs = np.tile([0.8, 0.2], (10, 1))
    y = np.array([0] * 8 + [1] * 2)
    assert expected_calibration_error(probs, y) == pytest.approx(0.0, abs=1e-12)
    # Certain and right: ECE 0 and Brier 0. Certain and wrong: ECE 1 and Brier 2, the ends of their ranges.
    one_hot = np.eye(4)[[0, 1, 2, 3]]
    assert expected_calibration_error(one_hot, np.arange(4)) == 0.0 and brier_score(one_hot, np.arange(4)) == 0.0
    wrong = np.array([1, 2, 3, 0])
    assert expected_calibration_error(one_hot, wrong) == 1.0 and brier_score(one_hot, wrong) == 2.0


def test_bins_are_closed_on_the_right_and_every_clip_is_counted() -> None:
    # With 5 bins a confidence of exactly 0.6 belongs to (0.4, 0.6], and 1.0 to the last bin.
    table = reliability_table(np.array([[0.6, 0.4], [1.0, 0.0], [0.5, 0.5]]), np.array([0, 0, 1]), n_bins=5)
    assert [r.count for r in table] == [0, 0, 2, 0, 1]
    assert np.isnan(table[0].accuracy) and np.isnan(table[0].confidence)  # empty bins: no accuracy, not 0
    assert table[2].accuracy == 0.5  # 0.5 tie: the top class is the first one (0), wrong for y = 1
    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.ones(4), 257)
    for n_bins in (1, 10, 15):
        assert sum(r.count for r in reliability_table(probs, rng.integers(0, 4, 257), n_bins)) == 257


def test_an_overconfident_model_has_an_ece_near_its_gap() -> None:
    # Says 0.95 for its top class, right 60 % of the time: ECE ~ 0.35.
    rng = np.random.default_rng(1)
    n = 2000
    y = rng.integers(0, 4, n)
    top = np.where(rng.random(n) < 0.6, y, (y + 1) % 4)
    probs = np.full((n, 4), 0.05 / 3)
    probs[np.arange(n), top] = 0.95
    assert expected_calibration_error(probs, y) == pytest.approx(0.35, abs=0.03)


@pytest.mark.parametrize(
    ("probs", "y", "message"),
    [
        (np.full((3, 2), 0.5), np.array([0, 1]), "3 rows but y_true has 2"),
        (np.array([[0.5, 0.6]]), np.array([0]), "sum to 1"),
        (np.array([[1.2, -0.2]]), np.array([0]), "negative"),
        (np.array([0.5, 0.5]), np.array([0]), r"\[N, K\] matrix"),
        (np.array([[0.5, 0.5]]), np.array([2]), "outside"),
        (np.array([[np.nan, 1.0]]), np.array([0]), "NaN"),
        (np.zeros((0, 4)), np.zeros(0, dtype=int), "empty"),
    ],
)
def test_invalid_inputs_are_rejected_with_the_reason(probs, y, message) -> None:
    with pytest.raises(ValueError, match=message):
        calibration_report(probs, y)


def test_rows_may_be_off_by_float32_rounding() -> None:
    probs = np.array([[0.7, 0.3 + 5e-5]], dtype=np.float32)
    assert brier_score(probs, np.array([0])) == pytest.approx(0.18, abs=1e-3)


def test_reliability_figure_draws_one_bar_per_filled_bin() -> None:
    import matplotlib.pyplot as plt
    from matplotlib.figure import Figure

    rep = calibration_report(PROBS, Y, n_bins=3)
    fig = reliability_figure(rep.table, "fold 1")
    try:
        assert isinstance(fig, Figure)
        ax = fig.axes[0]
        assert len(ax.patches) == 2 * 3  # accuracy bar + gap bar per filled bin
        assert [t.get_text() for t in ax.texts] == ["2", "2", "2"]  # the counts
        assert "fold 1" in ax.get_title() and "ECE=0.133" in ax.get_title()
    finally:
        plt.close(fig)
