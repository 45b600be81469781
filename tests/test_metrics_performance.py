"""Specification of trustser.metrics.performance: UAR, accuracy, macro F1 and the confusion matrix."""

from __future__ import annotations

import math

import numpy as np
import pytest

from trustser.metrics.performance import confusion_matrix, performance_report, uar

# Hand-computed case (4 classes, 10 clips).
#   class 0: 4 clips predicted 0,0,1,2 -> recall 2/4    class 1: 2 clips predicted 1,0 -> recall 1/2
#   class 2: 3 clips predicted 2,2,2 -> recall 1       class 3: 1 clip predicted 3    -> recall 1
#   UAR = (1/2 + 1/2 + 1 + 1) / 4 = 0.75; accuracy = 7/10
#   predicted counts per class = 3, 2, 4, 1; F1_c = 2·tp / (support + predicted):
#   4/7, 2/4, 6/7, 2/2 -> macro F1 = (4/7 + 1/2 + 6/7 + 1) / 4 = 41/56
Y_TRUE = np.array([0, 0, 0, 0, 1, 1, 2, 2, 2, 3])
Y_PRED = np.array([0, 0, 1, 2, 1, 0, 2, 2, 2, 3])


def test_hand_computed_case() -> None:
    rep = performance_report(Y_TRUE, Y_PRED)
    assert rep.uar == pytest.approx(0.75)
    assert rep.weighted_accuracy == pytest.approx(0.7)
    assert rep.macro_f1 == pytest.approx(41 / 56)
    assert rep.per_class_recall == pytest.approx((0.5, 0.5, 1.0, 1.0))
    assert rep.per_class_f1 == pytest.approx((4 / 7, 0.5, 6 / 7, 1.0))
    assert rep.support == (4, 2, 3, 1)
    assert rep.n_samples == 10


def test_confusion_matrix_rows_are_true_classes() -> None:
    expected = np.array(
        [
            [2, 1, 1, 0],
            [1, 1, 0, 0],
            [0, 0, 3, 0],
            [0, 0, 0, 1],
        ]
    )
    np.testing.assert_array_equal(performance_report(Y_TRUE, Y_PRED).confusion, expected)
    np.testing.assert_array_equal(confusion_matrix(Y_TRUE, Y_PRED, 4), expected)


def test_fast_uar_equals_report_uar() -> None:
    assert uar(Y_TRUE, Y_PRED) == pytest.approx(0.75)
    assert uar(Y_TRUE, Y_PRED, n_classes=4) == pytest.approx(0.75)


def test_uar_matches_sklearn_macro_recall_when_all_classes_are_present() -> None:
    from sklearn.metrics import f1_score, recall_score

    rng = np.random.default_rng(0)
    t = rng.integers(0, 4, 500)
    p = np.where(rng.random(500) < 0.6, t, rng.integers(0, 4, 500))
    assert uar(t, p) == pytest.approx(recall_score(t, p, average="macro"))
    rep = performance_report(t, p)
    assert rep.uar == pytest.approx(recall_score(t, p, average="macro"))
    assert rep.macro_f1 == pytest.approx(f1_score(t, p, average="macro"))
    assert rep.weighted_accuracy == pytest.approx(np.mean(t == p))


def test_uar_averages_only_classes_present_in_y_true() -> None:
    # Class 3 never occurs but is predicted once. Recalls 1/2, 1, 1, (undefined) -> UAR = 2.5/3.
    # sklearn's macro recall would count class 3 as recall 0 and give 2.5/4.
    t = np.array([0, 0, 1, 1, 2, 2])
    p = np.array([0, 3, 1, 1, 2, 2])
    rep = performance_report(t, p)
    assert rep.uar == pytest.approx(2.5 / 3)
    assert uar(t, p, n_classes=4) == pytest.approx(2.5 / 3)
    assert math.isnan(rep.per_class_recall[3])
    # F1 of the invented class is 0 (2·0 / (0 + 1)), so macro F1 = (2/3 + 1 + 1 + 0) / 4.
    assert rep.per_class_f1[3] == 0.0
    assert rep.macro_f1 == pytest.approx((2 / 3 + 2) / 4)


def test_class_neither_true_nor_predicted_has_nan_f1_and_is_left_out() -> None:
    rep = performance_report([0, 1, 1], [0, 1, 0])
    assert math.isnan(rep.per_class_f1[2]) and math.isnan(rep.per_class_f1[3])
    # F1: class 0 = 2/(1+2) , class 1 = 2/(2+1)
    assert rep.macro_f1 == pytest.approx(2 / 3)


def test_to_dict_names_classes_by_emotion() -> None:
    d = performance_report(Y_TRUE, Y_PRED).to_dict()
    assert d["uar"] == pytest.approx(0.75)
    assert d["recall_neutral"] == pytest.approx(0.5)
    assert d["f1_angry"] == pytest.approx(1.0)
    assert all(isinstance(v, float) for v in d.values())


def test_accepts_lists_and_integral_floats() -> None:
    assert uar([0, 1, 1], [0.0, 1.0, 0.0]) == pytest.approx(0.75)


@pytest.mark.parametrize(
    ("y_true", "y_pred", "message"),
    [
        ([0, 1], [0], "length"),
        ([], [], "empty"),
        ([0, 4], [0, 1], "out of range"),
        ([0, -1], [0, 1], "negative"),
        ([0.5, 1], [0, 1], "integer"),
    ],
)
def test_invalid_input_is_rejected_with_a_clear_message(y_true: list, y_pred: list, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        performance_report(y_true, y_pred)
