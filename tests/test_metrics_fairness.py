"""Specification of trustser.metrics.fairness: gender gaps of one set of 4-class predictions."""

from __future__ import annotations

import math

import numpy as np
import pytest

from trustser.metrics.fairness import fairness_report

F, M = "female", "male"
ONE_EACH = [0, 0, 1, 1, 2, 2, 3, 3]  # two clips of every class


def _concat(female: tuple[list[int], list[int]], male: tuple[list[int], list[int]]):
    """(y_true, y_pred, gender) with the female clips first."""
    t = np.array(female[0] + male[0])
    p = np.array(female[1] + male[1])
    g = [F] * len(female[0]) + [M] * len(male[0])
    return t, p, g


def test_identical_behaviour_for_both_genders_is_perfectly_fair() -> None:
    preds = [0, 1, 1, 1, 2, 3, 3, 3]  # imperfect, but the same for both genders
    rep = fairness_report(*_concat((ONE_EACH, preds), (ONE_EACH, preds)))
    assert rep.defined and rep.reason is None
    assert rep.equality_of_odds == 0.0
    assert rep.equality_of_odds_mean == 0.0
    assert rep.statistical_parity == 0.0
    assert rep.reference_eo == 0.0
    assert rep.reference_statistical_parity == 0.0


def test_perfect_for_females_always_wrong_for_males_is_maximally_unfair() -> None:
    # Males: every clip predicted as the next class. Per class: TPR_f = 1, TPR_m = 0 -> gap 1.
    # Both genders predict each class 1/4 of the time, so statistical parity (blind to the truth) is 0.
    t = [0, 1, 2, 3]
    rep = fairness_report(*_concat((t, t), (t, [1, 2, 3, 0])))
    assert rep.equality_of_odds == pytest.approx(1.0)
    assert rep.equality_of_odds_mean == pytest.approx(1.0)
    assert rep.eo_per_class == pytest.approx((1.0,) * 4)
    assert rep.statistical_parity == pytest.approx(0.0)
    # Reference: each true class's row is e_c for females and e_{c+1} for males -> TV distance 1.
    assert rep.reference_eo == pytest.approx(1.0)


# Intermediate case, computed by hand. Females are perfect; males predict [0,1 | 1,1 | 2,2 | 3,0].
#   TPR_m = 1/2, 1, 1, 1/2 (TPR_f = 1)
#   FPR_m = 1/6 (a class-3 clip called 0), 1/6 (a class-0 clip called 1), 0, 0 (FPR_f = 0)
#   EO per class = max(|ΔTPR|, |ΔFPR|) = 1/2, 1/6, 0, 1/2 -> EO = 1/2, mean = (7/6)/4 = 7/24
#   selection rates: female 2/8 each; male 2/8, 3/8, 2/8, 1/8 -> gaps 0, 1/8, 0, 1/8 -> SP = 1/8
#   reference: TV per true class = 1/2, 0, 0, 1/2 -> mean 1/4; reference SP = ½·(1/8 + 1/8) = 1/8
MALE_PRED = [0, 1, 1, 1, 2, 2, 3, 0]


def test_hand_computed_intermediate_case() -> None:
    rep = fairness_report(*_concat((ONE_EACH, ONE_EACH), (ONE_EACH, MALE_PRED)))
    assert rep.eo_per_class == pytest.approx((1 / 2, 1 / 6, 0.0, 1 / 2))
    assert rep.equality_of_odds == pytest.approx(1 / 2)
    assert rep.equality_of_odds_mean == pytest.approx(7 / 24)
    assert rep.sp_per_class == pytest.approx((0.0, 1 / 8, 0.0, 1 / 8))
    assert rep.statistical_parity == pytest.approx(1 / 8)
    assert rep.reference_eo_per_class == pytest.approx((1 / 2, 0.0, 0.0, 1 / 2))
    assert rep.reference_eo == pytest.approx(1 / 4)
    assert rep.reference_statistical_parity == pytest.approx(1 / 8)
    assert rep.n_by_gender == {F: 8, M: 8}


def test_per_class_rate_table_holds_fairlearn_rates_and_writes_to_csv() -> None:
    rep = fairness_report(*_concat((ONE_EACH, ONE_EACH), (ONE_EACH, MALE_PRED)))
    frame = rep.rates_frame()
    assert len(frame) == 8  # 4 classes x 2 genders
    row = frame[(frame.class_name == "neutral") & (frame.gender == M)].iloc[0]
    assert (row.n, row.n_positive) == (8, 2)
    assert (row.tpr, row.fpr, row.selection_rate) == pytest.approx((1 / 2, 1 / 6, 2 / 8))
    csv = frame.to_csv(index=False)
    assert csv.splitlines()[0] == "class_index,class_name,gender,n,n_positive,tpr,fpr,selection_rate"


def test_reference_variant_sees_where_errors_go_not_only_how_many() -> None:
    # Both genders miss one of two neutral clips, females call it happy, males call it sad.
    #   reference: neutral row f = [1/2, 1/2, 0, 0], m = [1/2, 0, 1/2, 0] -> TV 1/2; other rows equal
    #              -> mean over 4 true classes = 1/8
    #   ours: ΔTPR = 0 everywhere; FPR_f(happy) = 1/6, FPR_m(sad) = 1/6 -> EO = 1/6, mean = (2/6)/4 = 1/12
    rep = fairness_report(*_concat((ONE_EACH, [0, 1, 1, 1, 2, 2, 3, 3]), (ONE_EACH, [0, 2, 1, 1, 2, 2, 3, 3])))
    assert rep.reference_eo_per_class == pytest.approx((1 / 2, 0.0, 0.0, 0.0))
    assert rep.reference_eo == pytest.approx(1 / 8)
    assert rep.equality_of_odds == pytest.approx(1 / 6)
    assert rep.equality_of_odds_mean == pytest.approx(1 / 12)


def _holisticai_multiclass_equality_of_opp(t, p, g, n_classes: int) -> float:
    """Independent transcription of the formula in holisticai 0.3.0 (what the reference code calls)."""
    groups = sorted(set(g))
    tensor = np.zeros((len(groups), n_classes, n_classes))  # [group, predicted, true]
    for gi, pi, ti in zip(g, p, t):
        tensor[groups.index(gi), pi, ti] += 1
    tensor += 1e-32
    normed = tensor / tensor.sum(axis=1)[:, None, :]  # each true-class column sums to 1
    return float(np.abs(normed[0] - normed[1]).sum() / (2 * n_classes))


def test_reference_variant_matches_the_reference_formula_on_random_predictions() -> None:
    rng = np.random.default_rng(1)
    t = rng.integers(0, 4, 300)
    p = np.where(rng.random(300) < 0.5, t, rng.integers(0, 4, 300))
    g = rng.choice([F, M], 300).tolist()
    rep = fairness_report(t, p, g)
    assert rep.reference_eo == pytest.approx(_holisticai_multiclass_equality_of_opp(t, p, g, 4))


def test_equality_of_odds_is_fairlearns_worst_class_equalized_odds_difference() -> None:
    from fairlearn.metrics import demographic_parity_difference, equalized_odds_difference

    rng = np.random.default_rng(2)
    t = rng.integers(0, 4, 400)
    p = np.where(rng.random(400) < 0.5, t, rng.integers(0, 4, 400))
    g = rng.choice([F, M], 400)
    rep = fairness_report(t, p, g)
    eod = [equalized_odds_difference(t == c, p == c, sensitive_features=g) for c in range(4)]
    dpd = [demographic_parity_difference(t == c, p == c, sensitive_features=g) for c in range(4)]
    assert rep.eo_per_class == pytest.approx(tuple(eod))
    assert rep.equality_of_odds == pytest.approx(max(eod))
    assert rep.statistical_parity == pytest.approx(max(dpd))


def test_single_gender_fold_is_undefined_with_a_reason() -> None:
    rep = fairness_report(ONE_EACH, ONE_EACH, [F] * 8)
    for value in (rep.equality_of_odds, rep.equality_of_odds_mean, rep.statistical_parity, rep.reference_eo):
        assert math.isnan(value)
    assert not rep.defined
    assert "male" in rep.reason and "female: 8" in rep.reason
    assert rep.n_by_gender == {F: 8, M: 0}
    assert len(rep.rates) == 4  # the female rates are still reported


def test_gender_without_a_class_makes_equality_of_odds_undefined_but_not_parity() -> None:
    # Males have no sad clip: TPR_m(sad) is 0/0.
    rep = fairness_report(*_concat((ONE_EACH, ONE_EACH), ([0, 1, 3], [0, 1, 3])))
    assert math.isnan(rep.equality_of_odds) and math.isnan(rep.equality_of_odds_mean)
    assert math.isnan(rep.reference_eo)
    assert math.isnan(rep.eo_per_class[2]) and rep.eo_per_class[0] == 0.0
    assert "male has no 'sad' clip" in rep.reason
    # Selection rates need no true label: female 2/8 per class, male 1/3, 1/3, 0, 1/3.
    assert rep.statistical_parity == pytest.approx(1 / 4)


def test_unknown_genders_are_excluded_and_counted() -> None:
    t, p, g = _concat((ONE_EACH, ONE_EACH), (ONE_EACH, MALE_PRED))
    t = np.concatenate([t, [0, 1, 2]])
    p = np.concatenate([p, [3, 3, 3]])  # wrong predictions that would change every number if counted
    g = g + [None, float("nan"), None]
    rep = fairness_report(t, p, np.array(g, dtype=object))
    assert rep.n_unknown_gender == 3
    assert rep.n_by_gender == {F: 8, M: 8}
    assert rep.equality_of_odds == pytest.approx(1 / 2)
    assert rep.reference_eo == pytest.approx(1 / 4)
    assert rep.to_dict()["n_unknown_gender"] == 3.0


def test_all_genders_unknown_is_undefined_not_a_crash() -> None:
    rep = fairness_report([0, 1], [0, 1], [None, None])
    assert math.isnan(rep.equality_of_odds)
    assert rep.n_unknown_gender == 2 and rep.rates == ()


def test_unexpected_gender_label_is_an_error() -> None:
    with pytest.raises(ValueError, match="'F'"):
        fairness_report([0, 1], [0, 1], ["F", "M"])


def test_to_dict_is_flat_floats() -> None:
    d = fairness_report(*_concat((ONE_EACH, ONE_EACH), (ONE_EACH, MALE_PRED))).to_dict()
    assert d["equality_of_odds"] == pytest.approx(0.5)
    assert d["eo_neutral"] == pytest.approx(0.5)
    assert d["n_female"] == 8.0
    assert all(isinstance(v, float) for v in d.values())


def test_a_single_clip_gives_undefined_gaps_with_the_reason_not_a_crash():
    report = fairness_report([1], [1], ["female"], 4)
    assert math.isnan(report.equality_of_odds) and math.isnan(report.statistical_parity)
    assert "both genders" in report.reason and "1 clip" in report.reason
