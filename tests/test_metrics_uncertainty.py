"""Specification of trustser.metrics.uncertainty: speaker-level intervals and chance levels of the headline metrics."""

from __future__ import annotations

import math
import time
from functools import partial

import numpy as np
import pytest

from trustser.metrics.fairness import GENDERS, fairness_report
from trustser.metrics.performance import performance_report, uar
from trustser.metrics.uncertainty import (
    FEMALE,
    MALE,
    Interval,
    accuracy_stat,
    asr_stat,
    cluster_bootstrap,
    equality_of_odds_stat,
    fairness_chance,
    fairness_gaps,
    fairness_null,
    gender_codes,
    paired_bootstrap_difference,
    statistical_parity_stat,
    uar_stat,
)

K = 4


def _same(a: float, b: float) -> bool:
    """Equal as metric values: both NaN, or equal to float rounding."""
    return (math.isnan(a) and math.isnan(b)) or a == pytest.approx(b, abs=1e-12)


def _fold(rng: np.random.Generator, n_female: int, n_male: int, clips: int, acc_f=0.7, acc_m=0.7):
    """Speakers with their own accuracy (speaker effects): (y_true, y_pred, gender, speaker) of a test set.

    Each speaker's accuracy is drawn around acc_f / acc_m; a wrong prediction is a uniformly drawn other class.
    """
    t, p, g, s = [], [], [], []
    for i in range(n_female + n_male):
        female = i < n_female
        acc = float(np.clip(rng.normal(acc_f if female else acc_m, 0.1), 0.05, 0.95))
        yt = rng.integers(0, K, clips)
        wrong = (yt + rng.integers(1, K, clips)) % K
        t.append(yt)
        p.append(np.where(rng.random(clips) < acc, yt, wrong))
        g += [FEMALE if female else MALE] * clips
        s += [f"spk{i:02d}"] * clips
    return np.concatenate(t), np.concatenate(p), np.array(g), np.array(s)


# ------------------------------------------------------------------------------------------- fast statistics
def test_gender_names_are_those_of_the_fairness_module() -> None:
    assert (FEMALE, MALE) == GENDERS


def test_fast_uar_and_accuracy_equal_the_performance_module() -> None:
    rng = np.random.default_rng(1)
    for _ in range(200):
        n = int(rng.integers(1, 40))
        t, p = rng.integers(0, K, n), rng.integers(0, K, n)  # small n: absent classes are common
        assert uar_stat(t, p, K) == pytest.approx(uar(t, p, K), abs=1e-12)
        assert accuracy_stat(t, p) == pytest.approx(performance_report(t, p, K).weighted_accuracy, abs=1e-12)


def test_fairness_gaps_equal_fairness_report_including_undefined_cases() -> None:
    """Random cases of four kinds, so that every way of being undefined occurs: well-defined sets, a missing
    gender, a gender without one class (its TPR undefined), and tiny sets (a gender with one class only: FPR
    undefined). Both implementations must give the same numbers and NaN in the same places. 20 cases, because
    fairness_report costs ~0.1 s (fairlearn per class)."""
    rng = np.random.default_rng(2)
    kinds = {"defined": 0, "eo_nan": 0, "all_nan": 0}
    for case in range(20):
        kind = case % 4
        n = int(rng.integers(2, 9)) if kind == 3 else int(rng.integers(40, 80))  # not 1: fairlearn rejects it
        t = rng.integers(0, K, n)
        p = np.where(rng.random(n) < 0.6, t, rng.integers(0, K, n))
        g = rng.choice(GENDERS, n)
        if kind == 1:
            g[:] = GENDERS[case % 8 // 4]
        if kind == 2:
            t[(g == MALE) & (t == case % K)] = (case + 1) % K
        ref = fairness_report(t, p, g, K)
        eo, sp = fairness_gaps(t, p, g, K)
        assert _same(eo, ref.equality_of_odds), case
        assert _same(sp, ref.statistical_parity), case
        kinds["all_nan" if math.isnan(sp) else "eo_nan" if math.isnan(eo) else "defined"] += 1
    assert all(v >= 3 for v in kinds.values()), kinds  # the cases did cover all three situations


def test_fairness_gaps_accept_integer_gender_codes() -> None:
    t, p, g, _ = _fold(np.random.default_rng(3), 3, 3, 10)
    assert fairness_gaps(t, p, gender_codes(g), K) == fairness_gaps(t, p, g, K)
    assert equality_of_odds_stat(t, p, g, K) == fairness_gaps(t, p, g, K)[0]
    assert statistical_parity_stat(t, p, g, K) == fairness_gaps(t, p, g, K)[1]
    with pytest.raises(ValueError, match="unknown"):
        gender_codes(["female", "F"])


def test_attack_success_rate_is_the_share_of_flipped_clips() -> None:
    assert asr_stat(np.array([True, False, True, True])) == 0.75
    assert math.isnan(asr_stat(np.array([], dtype=bool)))


# ------------------------------------------------------------------------------------------- cluster bootstrap
def test_value_is_the_statistic_on_the_original_data_and_keys_carry_the_prefix() -> None:
    t, p, _, s = _fold(np.random.default_rng(4), 2, 2, 25)
    ci = cluster_bootstrap(partial(uar_stat, n_classes=K), {"y_true": t, "y_pred": p}, s, n_resamples=200)
    assert ci.value == uar(t, p, K)
    assert ci.low <= ci.value <= ci.high and ci.low < ci.high
    assert (ci.n_resamples, ci.n_clusters, ci.n_undefined) == (200, 4, 0)
    assert ci.to_dict("uar") == {"uar": ci.value, "uar_ci_low": ci.low, "uar_ci_high": ci.high}


def test_a_speaker_drawn_twice_contributes_its_clips_twice() -> None:
    # Speaker a has 3 clips (values 1, 2, 3), speaker b one (value 10). Every resample draws two speakers:
    # {a, a} -> 1,2,3,1,2,3; {a, b} -> 1,2,3,10; {b, b} -> 10,10. Nothing else, and never a partial speaker.
    seen: list[tuple[int, ...]] = []

    def record(x: np.ndarray) -> float:
        seen.append(tuple(sorted(x.tolist())))
        return float(len(x))

    x = np.array([1, 2, 10, 3])  # the clips of a speaker need not be contiguous
    ci = cluster_bootstrap(record, {"x": x}, np.array(["a", "a", "b", "a"]), n_resamples=400, seed=0)
    resamples = seen[1:]  # the first call is the value on the original data
    assert set(resamples) == {(1, 1, 2, 2, 3, 3), (1, 2, 3, 10), (10, 10)}
    share_aa = resamples.count((1, 1, 2, 2, 3, 3)) / len(resamples)
    assert 0.18 < share_aa < 0.32  # P(a, a) = 1/4
    assert ci.value == 4.0 and (ci.low, ci.high) == (2.0, 6.0)


def test_same_seed_same_interval_other_seed_other_draws() -> None:
    t, p, _, s = _fold(np.random.default_rng(5), 3, 3, 15)
    stat, arrays = partial(uar_stat, n_classes=K), {"y_true": t, "y_pred": p}
    a = cluster_bootstrap(stat, arrays, s, n_resamples=300, seed=7)
    assert cluster_bootstrap(stat, arrays, s, n_resamples=300, seed=7) == a
    assert cluster_bootstrap(stat, arrays, s, n_resamples=300, seed=8) != a


def test_zero_resamples_switches_the_interval_off() -> None:
    t, p, _, s = _fold(np.random.default_rng(6), 1, 1, 10)
    ci = cluster_bootstrap(partial(uar_stat, n_classes=K), {"y_true": t, "y_pred": p}, s, n_resamples=0)
    assert ci.value == uar(t, p, K)
    assert math.isnan(ci.low) and math.isnan(ci.high) and ci.n_resamples == 0
    d = ci.to_dict("uar")
    assert math.isnan(d["uar_ci_low"]) and math.isnan(d["uar_ci_high"])


def test_no_interval_where_the_resamples_carry_no_information() -> None:
    """One speaker: every resample is the data itself. A gender gap on 1 female + 1 male speaker (an IEMOCAP
    session): the resamples holding both genders are all the fold itself, the others are undefined. A zero-width
    interval would read as certainty, so the bounds are NaN."""
    t, p, g, s = _fold(np.random.default_rng(7), 1, 1, 35)
    one = cluster_bootstrap(partial(uar_stat, n_classes=K), {"y_true": t[:35], "y_pred": p[:35]}, s[:35], 200)
    assert math.isnan(one.low) and math.isnan(one.high) and one.n_clusters == 1
    for seed in range(5):
        eo = cluster_bootstrap(
            partial(equality_of_odds_stat, n_classes=K), {"y_true": t, "y_pred": p, "gender": g}, s, 200, seed=seed
        )
        assert not math.isnan(eo.value) and math.isnan(eo.low) and math.isnan(eo.high)
        assert 0.35 < eo.n_undefined / 200 < 0.65  # P(both draws of one gender) = 1/2
    # UAR on the same 2 speakers has an interval: the resamples {A, A} and {B, B} differ from the fold.
    ci = cluster_bootstrap(partial(uar_stat, n_classes=K), {"y_true": t, "y_pred": p}, s, 200)
    assert ci.low < ci.high


def test_mostly_undefined_resamples_give_no_interval_and_are_counted() -> None:
    # 1 female and 4 male speakers: a resample misses the female speaker with probability (4/5)^5 = 0.33, so
    # statistical parity is undefined in a third of the resamples, which are left out of the percentiles.
    rng = np.random.default_rng(8)
    t, p, g, s = _fold(rng, 1, 4, 20)
    sp = cluster_bootstrap(
        partial(statistical_parity_stat, n_classes=K), {"y_true": t, "y_pred": p, "gender": g}, s, 400
    )
    assert 0.25 < sp.n_undefined / 400 < 0.42 and sp.low <= sp.high

    def nan_mostly(x: np.ndarray) -> float:
        # Four draws from 1, 2, 3, 4 average above 3 with probability 35/256: defined in 14 % of the resamples.
        return float(x.mean()) if x.mean() > 3 else float("nan")

    ci = cluster_bootstrap(nan_mostly, {"x": np.array([1.0, 2.0, 3.0, 4.0])}, np.array([1, 2, 3, 4]), 200)
    assert ci.n_undefined > 150 and math.isnan(ci.low) and math.isnan(ci.high)


def test_cluster_bootstrap_covers_the_true_accuracy_and_a_clip_bootstrap_does_not() -> None:
    """Simulated test sets of 40 speakers x 8 clips whose accuracy varies by speaker (Beta(3, 3): population
    accuracy 0.5, intra-speaker correlation 1/7). The 95 % speaker bootstrap interval covers 0.5 in about 95 % of
    the sets; a clip bootstrap, which treats the 320 clips as independent, is too narrow by sqrt(1 + 7/7) = 1.41
    and covers it in only about 83 %. This is why intervals are over speakers."""
    rng = np.random.default_rng(9)
    speakers = np.repeat(np.arange(40), 8)
    covered_speaker = covered_clip = 0
    n_sims = 200
    for sim in range(n_sims):
        correct = rng.random(320) < rng.beta(3, 3, 40)[speakers]
        stat, arrays = (lambda c: float(c.mean())), {"c": correct}
        covered_speaker += cluster_bootstrap(stat, arrays, speakers, n_resamples=100, seed=sim).contains(0.5)
        covered_clip += cluster_bootstrap(stat, arrays, np.arange(320), n_resamples=100, seed=sim).contains(0.5)
    assert 0.90 <= covered_speaker / n_sims <= 0.99
    assert covered_clip / n_sims < 0.9


def test_thousand_resamples_of_a_fold_take_well_under_a_second() -> None:
    t, p, g, s = _fold(np.random.default_rng(10), 2, 2, 25)  # 100 clips
    start = time.perf_counter()
    cluster_bootstrap(partial(uar_stat, n_classes=K), {"y_true": t, "y_pred": p}, s, n_resamples=1000)
    assert time.perf_counter() - start < 0.5


def test_interval_comparisons() -> None:
    a, b, c = Interval(0.5, 0.4, 0.6, 100, 4), Interval(0.65, 0.55, 0.75, 100, 4), Interval(0.8, 0.7, 0.9, 100, 4)
    nan = Interval(0.5, float("nan"), float("nan"), 0, 4)
    assert a.overlaps(b) and b.overlaps(a) and not a.overlaps(c)
    assert nan.overlaps(c)  # an undefined interval rules nothing out
    assert a.contains(0.4) and not a.contains(0.39)


# -------------------------------------------------------------------------------------------- paired bootstrap
def test_identical_models_are_indistinguishable_with_a_zero_width_difference() -> None:
    t, p, _, s = _fold(np.random.default_rng(11), 3, 3, 20)
    d = paired_bootstrap_difference(
        partial(uar_stat, n_classes=K), {"y_true": t, "y_pred": p}, {"y_true": t, "y_pred": p}, s, 300
    )
    assert (d.value, d.low, d.high) == (0.0, 0.0, 0.0)
    assert d.indistinguishable


def test_a_clearly_better_model_is_told_apart_on_the_same_speakers() -> None:
    """The better model fixes 15 % of the clips on every speaker. Each model's own interval is wide, because the
    speakers differ a lot, and the two overlap; on the same resampled speakers the difference is clearly > 0."""
    rng = np.random.default_rng(12)
    t, worse, _, s = _fold(rng, 4, 4, 25, acc_f=0.55, acc_m=0.55)
    better = np.where(rng.random(t.size) < 0.15, t, worse)
    stat = partial(uar_stat, n_classes=K)
    d = paired_bootstrap_difference(stat, {"y_true": t, "y_pred": better}, {"y_true": t, "y_pred": worse}, s, 500)
    assert d.value == pytest.approx(uar(t, better, K) - uar(t, worse, K))
    assert 0 < d.low <= d.value <= d.high and not d.indistinguishable
    a = cluster_bootstrap(stat, {"y_true": t, "y_pred": better}, s, 500)
    b = cluster_bootstrap(stat, {"y_true": t, "y_pred": worse}, s, 500)
    assert a.overlaps(b)


# --------------------------------------------------------------------------------------------- fairness null
def test_null_observed_gaps_are_the_fold_gaps_and_keys_are_named() -> None:
    t, p, g, s = _fold(np.random.default_rng(13), 6, 6, 20)
    null = fairness_null(t, p, g, s, K, n_permutations=300)
    assert (null.equality_of_odds, null.statistical_parity) == pytest.approx(fairness_gaps(t, p, g, K), abs=1e-12)
    assert not null.exact and null.n_permutations == 300 and null.n_assignments == math.comb(12, 6)
    assert set(null.to_dict()) == {
        "equality_of_odds_null_p95",
        "equality_of_odds_p_value",
        "statistical_parity_null_p95",
        "statistical_parity_p_value",
        "null_n_permutations",
    }
    assert 1 / 301 <= null.eo_p_value <= 1.0 and 1 / 301 <= null.sp_p_value <= 1.0


def test_a_gender_blind_model_is_rarely_called_unfair() -> None:
    """Predictions independent of gender, but with speaker effects: under the speaker-permutation null the
    p-value is (close to) uniform, so p < 0.05 happens in about 5 % of the test sets, not more."""
    rng = np.random.default_rng(14)
    p_values = []
    for sim in range(100):
        t, p, g, s = _fold(rng, 8, 8, 15)
        p_values.append(fairness_null(t, p, g, s, K, n_permutations=199, seed=sim).eo_p_value)
    p_values = np.array(p_values)
    assert np.mean(p_values < 0.05) <= 0.1
    assert 0.35 < np.median(p_values) < 0.65


def test_a_model_biased_against_one_gender_is_detected() -> None:
    t, p, g, s = _fold(np.random.default_rng(15), 20, 20, 15, acc_f=0.8, acc_m=0.45)
    null = fairness_null(t, p, g, s, K, n_permutations=500)
    assert null.eo_p_value < 0.05 and null.equality_of_odds > null.eo_p95


def test_few_speakers_enumerate_every_assignment_exactly() -> None:
    # 2 female + 2 male speakers: C(4, 2) = 6 assignments, each with its complement giving the same gaps, so
    # the smallest possible p-value is 2/6.
    t, p, g, s = _fold(np.random.default_rng(16), 2, 2, 20, acc_f=0.9, acc_m=0.3)
    null = fairness_null(t, p, g, s, K, n_permutations=1000)
    assert null.exact and null.n_permutations == null.n_assignments == 6
    assert (null.n_female_speakers, null.n_male_speakers) == (2, 2)
    assert null.eo_p_value == pytest.approx(2 / 6)  # the observed split is the most extreme one
    assert fairness_null(t, p, g, s, K, n_permutations=5).exact is False  # 6 > 5: Monte Carlo instead


def test_one_speaker_per_gender_has_no_power_p_is_one() -> None:
    """The only other assignment swaps the two speakers, which leaves absolute gaps unchanged."""
    t, p, g, s = _fold(np.random.default_rng(17), 1, 1, 35, acc_f=0.95, acc_m=0.2)
    null = fairness_null(t, p, g, s, K)
    assert null.exact and null.n_permutations == 2
    assert null.eo_p_value == 1.0 and null.sp_p_value == 1.0
    assert null.eo_p95 == pytest.approx(null.equality_of_odds)


def test_a_speaker_of_both_genders_is_an_error() -> None:
    with pytest.raises(ValueError, match="both genders"):
        fairness_null([0, 1, 2, 3], [0, 1, 2, 3], [FEMALE, MALE, MALE, FEMALE], ["a", "a", "b", "c"], K)


# -------------------------------------------------------------------------------------------- random classifier
def test_random_classifier_gaps_equal_a_loop_over_fairness_gaps() -> None:
    t, _, g, _ = _fold(np.random.default_rng(18), 3, 3, 20)
    priors = np.array([0.4, 0.3, 0.2, 0.1])
    chance = fairness_chance(t, g, priors, K, n_sim=200, seed=3)
    preds = np.random.default_rng(3).choice(K, size=(200, t.size), p=priors)  # the draws it makes
    gaps = np.array([fairness_gaps(t, pr, g, K) for pr in preds])
    assert chance.eo_p95 == pytest.approx(np.percentile(gaps[:, 0], 95), abs=1e-12)
    assert chance.sp_p95 == pytest.approx(np.percentile(gaps[:, 1], 95), abs=1e-12)
    assert chance.to_dict() == {
        "equality_of_odds_random_p95": chance.eo_p95,
        "statistical_parity_random_p95": chance.sp_p95,
    }


def test_random_classifier_gaps_shrink_with_more_clips() -> None:
    rng = np.random.default_rng(19)
    small = fairness_chance(*_fold(rng, 1, 1, 35)[::2], None, K, n_sim=300)  # (y_true, gender)
    large = fairness_chance(*_fold(rng, 20, 20, 50)[::2], None, K, n_sim=300)
    assert small.n_valid == 300 and 0 < large.eo_p95 < small.eo_p95 and 0 < large.sp_p95 < small.sp_p95
    with pytest.raises(ValueError, match="class_priors"):
        fairness_chance([0, 1], [FEMALE, MALE], [0.5, 0.6, 0.0, 0.0], K)
