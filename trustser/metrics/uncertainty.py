"""Uncertainty of the headline metrics: how sure a number measured on one test set is, and what chance would give.

A test fold of a SER corpus holds few speakers (IEMOCAP: 2 per session; EmoDB: 1-3 per fold), and the clips of one
speaker are not independent: a model that fails on one speaker's voice fails on most of that speaker's clips. The
unit of sampling is therefore the *speaker*, and every interval here is a cluster bootstrap over speakers
(:func:`cluster_bootstrap`): resample the speakers with replacement, keep all clips of each drawn speaker. A clip-level
bootstrap treats 100 clips of 2 speakers as 100 independent draws and gives intervals that are far too narrow
(``tests/test_metrics_uncertainty.py`` shows its under-coverage on simulated data). With 2 speakers the speaker
bootstrap has only 3 distinct resamples up to order, and its interval honestly says so by being wide.

Two reference distributions answer "is this fairness gap more than noise?":

* :func:`fairness_null` -- a permutation test over speakers. It shuffles which speakers are female, keeping each
  speaker's clips together and the number of speakers of each gender, and recomputes the gaps with the model's real
  predictions: the gaps a model with *no* relation to gender would show on the same speakers and clips. A gap in
  the tail of this distribution (small p-value) is more than the differences between individual speakers.
* :func:`fairness_chance` -- the gaps of a random classifier that ignores its input and draws each prediction from
  the class priors (how audEERING's ser-tests derive their thresholds): a floor below which a gap means nothing.

Everything is pure numpy and fast enough to run 1000 resamples per metric per run: :func:`uar_stat`,
:func:`accuracy_stat` and :func:`fairness_gaps` are ``bincount`` versions of ``trustser.metrics.performance.uar``,
the accuracy of ``performance_report`` and ``trustser.metrics.fairness.fairness_report`` (which calls fairlearn once
per class, far too slow for 1000 calls); the tests check that they agree.

    from functools import partial
    from trustser.metrics.uncertainty import cluster_bootstrap, uar_stat
    ci = cluster_bootstrap(partial(uar_stat, n_classes=4), {"y_true": t, "y_pred": p}, clusters=speakers)
    ci.to_dict("uar")  # {"uar": ..., "uar_ci_low": ..., "uar_ci_high": ...}
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Callable, Iterator, Mapping

import numpy as np
from numpy.typing import ArrayLike, NDArray

from trustser.metrics.performance import _check_pair

FEMALE, MALE = "female", "male"
"""The two genders, code 0 and 1: the values of ``trustser.metrics.fairness.GENDERS``, not imported from there
because that module loads fairlearn and pandas, which this one does not need."""

Statistic = Callable[..., float]
"""A metric called with the (resampled) arrays as keyword arguments, e.g. ``partial(uar_stat, n_classes=4)``."""

_TIE = 1e-12  # two gaps this close are equal: the same counts summed in another order may differ in the last bit


# ------------------------------------------------------------------------------------------------------ intervals
@dataclass(frozen=True)
class Interval:
    """A metric's value on the data and its bootstrap percentile interval.

    ``low``/``high`` are NaN when the bootstrap was switched off (``n_resamples == 0``), when the statistic was
    undefined (NaN) in more than half of the resamples (``n_undefined``), e.g. a fairness gap on resamples that
    drew speakers of one gender only, since an interval from the few defined resamples would describe a different
    population than the value does; and when every defined resample drew the same speakers, since a zero-width
    interval would then claim certainty where there is no information (one speaker; a gender gap on a fold of one
    female and one male speaker, IEMOCAP's sessions).
    """

    value: float
    low: float
    high: float
    n_resamples: int  # resamples drawn (0: bootstrap off)
    n_clusters: int  # distinct speakers resampled
    n_undefined: int = 0  # resamples where the statistic was NaN, left out of the percentiles
    level: float = 0.95

    @property
    def defined(self) -> bool:
        return not (math.isnan(self.low) or math.isnan(self.high))

    def to_dict(self, prefix: str) -> dict[str, float]:
        """``{prefix: value, prefix_ci_low: low, prefix_ci_high: high}`` for logging; NaN stays NaN."""
        return {prefix: self.value, f"{prefix}_ci_low": self.low, f"{prefix}_ci_high": self.high}

    def contains(self, x: float) -> bool:
        """Whether x lies in [low, high]; True when the interval is undefined (nothing rules x out)."""
        return not self.defined or self.low <= x <= self.high

    def overlaps(self, other: Interval) -> bool:
        """Whether the two intervals share a point; True when either is undefined (nothing tells them apart).

        Overlapping 95 % intervals do not prove two models equal (the test is conservative); for two models on
        the same clips use :func:`paired_bootstrap_difference`, which is sharper.
        """
        if not (self.defined and other.defined):
            return True
        return self.low <= other.high and other.low <= self.high

    @property
    def indistinguishable(self) -> bool:
        """For a difference interval (:func:`paired_bootstrap_difference`): it contains 0 (or is undefined)."""
        return self.contains(0.0)


def _percentile_interval(
    value: float,
    samples: NDArray[np.float64],
    draws: NDArray[np.int64],
    n_clusters: int,
    level: float,
) -> Interval:
    """The interval of the defined ``samples``; ``draws`` (resamples × clusters drawn) tells which speakers made each.

    Besides the more-than-half-undefined rule, the bounds are NaN when every defined resample drew the same
    speakers (each speaker once, in some order): then the "interval" is the value itself, zero width, which would
    read as certainty where there is no information. This is the case of one speaker, and of a gender gap on a
    fold of one female and one male speaker (the only resamples holding both genders are the fold itself).
    """
    n_resamples = int(samples.size)
    defined = ~np.isnan(samples)
    n_undefined = int(n_resamples - defined.sum())
    nan = float("nan")
    if n_resamples == 0 or 2 * n_undefined > n_resamples:
        return Interval(float(value), nan, nan, n_resamples, n_clusters, n_undefined, level)
    counts = np.sort(draws[defined], axis=1)  # a resample's speakers as a multiset
    if not (counts != counts[0]).any():
        return Interval(float(value), nan, nan, n_resamples, n_clusters, n_undefined, level)
    low, high = (float(v) for v in np.percentile(samples[defined], [50 * (1 - level), 50 * (1 + level)]))
    return Interval(float(value), low, high, n_resamples, n_clusters, n_undefined, level)


@dataclass(frozen=True, eq=False)
class _Resampler:
    """Speaker-level resamples of clip indices, drawn once from a seed.

    The clips of each cluster are laid out contiguously once (``order``); the resample of drawn clusters d is then
    the concatenation of ``order[start[d_j] : start[d_j] + count[d_j]]`` over j, built with one ``repeat`` and one
    ``arange`` instead of a Python loop over the clusters. A cluster drawn twice contributes its clips twice.
    """

    order: NDArray[np.int64]
    starts: NDArray[np.int64]
    counts: NDArray[np.int64]
    draws: NDArray[np.int64]  # (n_resamples, n_clusters): the clusters drawn by each resample

    @classmethod
    def draw(cls, clusters: ArrayLike, n_resamples: int, seed: int) -> _Resampler:
        c = np.asarray(clusters).reshape(-1)
        if c.size == 0:
            raise ValueError("clusters is empty: there is nothing to resample")
        _, inverse, counts = np.unique(c, return_inverse=True, return_counts=True)
        order = np.argsort(inverse.reshape(-1), kind="stable")
        starts = np.concatenate(([0], np.cumsum(counts)[:-1]))
        draws = np.random.default_rng(seed).integers(0, counts.size, size=(n_resamples, counts.size))
        return cls(order, starts, counts, draws)

    @property
    def n_clusters(self) -> int:
        return int(self.counts.size)

    def __iter__(self) -> Iterator[NDArray[np.int64]]:
        for d in self.draws:
            lengths = self.counts[d]
            ends = np.cumsum(lengths)
            yield self.order[np.arange(ends[-1]) + np.repeat(self.starts[d] - (ends - lengths), lengths)]


def _check_arrays(arrays: Mapping[str, ArrayLike], n: int, what: str) -> dict[str, np.ndarray]:
    out = {k: np.asarray(v) for k, v in arrays.items()}
    for k, v in out.items():
        if v.ndim == 0 or v.shape[0] != n:
            raise ValueError(f"{what}[{k!r}] has {v.shape[0] if v.ndim else 0} rows, clusters has {n}")
    return out


def _check_bootstrap_args(n_resamples: int, level: float) -> None:
    if n_resamples < 0:
        raise ValueError(f"n_resamples must be >= 0 (0 switches the bootstrap off), got {n_resamples}")
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must lie in (0, 1), got {level}")


def cluster_bootstrap(
    statistic: Statistic,
    arrays: Mapping[str, ArrayLike],
    clusters: ArrayLike,
    n_resamples: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> Interval:
    """Speaker-level (cluster) bootstrap percentile interval of ``statistic(**arrays)``.

    Each resample draws as many speakers as there are, with replacement, takes all clips of each drawn speaker
    (twice if drawn twice) and evaluates the statistic on them; ``value`` is the statistic on the original data.
    ``arrays`` are indexed along their first axis (a probability matrix works too). Resamples where the statistic
    is NaN are left out and counted; see :class:`Interval` for when the bounds are NaN. ``n_resamples=0`` switches
    the bootstrap off (value only). The same seed draws the same speakers, so metrics bootstrapped with one seed
    share their resamples.
    """
    _check_bootstrap_args(n_resamples, level)
    n = np.asarray(clusters).reshape(-1).size
    data = _check_arrays(arrays, n, "arrays")
    value = float(statistic(**data))
    rs = _Resampler.draw(clusters, n_resamples, seed)
    samples = np.array([float(statistic(**{k: v[idx] for k, v in data.items()})) for idx in rs], dtype=np.float64)
    return _percentile_interval(value, samples, rs.draws, rs.n_clusters, level)


def paired_bootstrap_difference(
    statistic: Statistic,
    arrays_a: Mapping[str, ArrayLike],
    arrays_b: Mapping[str, ArrayLike],
    clusters: ArrayLike,
    n_resamples: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> Interval:
    """Interval of statistic(a) − statistic(b) for two models scored on the same clips.

    Both models are evaluated on the *same* resampled speakers in every resample, so what the two share (which
    speakers are hard) cancels and only their difference varies: far sharper than comparing two separate
    intervals. ``arrays_a`` and ``arrays_b`` hold the same clips in the same order (typically the same
    ``y_true`` and each model's ``y_pred``). :attr:`Interval.indistinguishable` is True when the interval holds 0.
    """
    _check_bootstrap_args(n_resamples, level)
    n = np.asarray(clusters).reshape(-1).size
    a = _check_arrays(arrays_a, n, "arrays_a")
    b = _check_arrays(arrays_b, n, "arrays_b")
    value = float(statistic(**a)) - float(statistic(**b))
    rs = _Resampler.draw(clusters, n_resamples, seed)

    def difference(idx: NDArray[np.int64]) -> float:
        stat_a = statistic(**{k: v[idx] for k, v in a.items()})
        return float(stat_a) - float(statistic(**{k: v[idx] for k, v in b.items()}))

    samples = np.array([difference(idx) for idx in rs], dtype=np.float64)
    return _percentile_interval(value, samples, rs.draws, rs.n_clusters, level)


# ------------------------------------------------------------------------------------------- fast statistics
def uar_stat(y_true: NDArray[np.integer], y_pred: NDArray[np.integer], n_classes: int) -> float:
    """UAR with ``trustser.metrics.performance.uar``'s semantics (mean recall over the classes present in y_true).

    No input validation: it is called once per resample on arrays already validated by the caller.
    """
    support = np.bincount(y_true, minlength=n_classes)
    correct = np.bincount(y_true[y_true == y_pred], minlength=n_classes)
    present = support > 0
    if not present.any():
        return float("nan")
    return float(np.mean(correct[present] / support[present]))


def accuracy_stat(y_true: NDArray[np.integer], y_pred: NDArray[np.integer]) -> float:
    """Share of correct clips (``weighted_accuracy`` of ``performance_report``); NaN on an empty set."""
    return float(np.mean(y_true == y_pred)) if y_true.size else float("nan")


def asr_stat(success: NDArray[np.bool_]) -> float:
    """Attack success rate: the share of attacked clips whose prediction the attack flipped; NaN when none.

    Bootstrap it with the speakers of the attacked clips (the correctly classified ones) as clusters.
    """
    s = np.asarray(success)
    return float(np.mean(s)) if s.size else float("nan")


def gender_codes(gender: ArrayLike) -> NDArray[np.int64]:
    """Gender as codes 0 = "female", 1 = "male"; integer codes pass through.

    Converting once before a bootstrap saves a string comparison per resample. Unknown genders must already be
    removed (``trustser.metrics.fairness.split_known_gender``); any other value is an error.
    """
    g = np.asarray(gender).reshape(-1)
    if g.dtype.kind in "iu":
        codes = g.astype(np.int64, copy=False)
        if codes.size and (codes.min() < 0 or codes.max() > 1):
            raise ValueError(f"integer gender codes must be 0 ({FEMALE}) or 1 ({MALE})")
        return codes
    codes = np.full(g.shape, -1, dtype=np.int64)
    codes[g == FEMALE] = 0
    codes[g == MALE] = 1
    if (codes < 0).any():
        bad = sorted({str(v) for v in g[codes < 0]})
        raise ValueError(f"gender values {bad} are neither {FEMALE!r} nor {MALE!r} (remove unknown genders first)")
    return codes


def _gaps_from_counts(
    pos: NDArray[np.int64], sel: NDArray[np.int64], tp: NDArray[np.int64], n: NDArray[np.int64]
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Equality of odds and statistical parity from per-gender counts, vectorised over leading axes.

    ``pos``/``sel``/``tp`` have shape (..., 2, K): clips of true class c, predicted as c, and both, per gender;
    ``n`` has shape (..., 2). Undefined rates are NaN, and NaN propagates through ``maximum``/``max``, so one
    undefined TPR or FPR makes equality of odds NaN, as in ``fairness_report``.
    """
    size = n[..., None]
    with np.errstate(invalid="ignore", divide="ignore"):
        tpr = np.where(pos > 0, tp / pos, np.nan)
        neg = size - pos
        fpr = np.where(neg > 0, (sel - tp) / neg, np.nan)
        sr = np.where(size > 0, sel / size, np.nan)
    eo = np.maximum(np.abs(tpr[..., 0, :] - tpr[..., 1, :]), np.abs(fpr[..., 0, :] - fpr[..., 1, :])).max(axis=-1)
    sp = np.abs(sr[..., 0, :] - sr[..., 1, :]).max(axis=-1)
    return eo, sp


def fairness_gaps(
    y_true: NDArray[np.integer], y_pred: NDArray[np.integer], gender: ArrayLike, n_classes: int
) -> tuple[float, float]:
    """(equality_of_odds, statistical_parity) exactly as ``trustser.metrics.fairness.fairness_report`` defines them.

    equality_of_odds = max over classes c of max(|ΔTPR_c|, |ΔFPR_c|) of the one-vs-rest task of c, NaN when any
    class's TPR or FPR is undefined for a gender or a gender is missing; statistical_parity = max over c of
    |ΔSR_c|, NaN when a gender is missing. Three ``bincount`` calls instead of fairlearn's per-class MetricFrame,
    so it can run inside a bootstrap. ``gender`` holds "female"/"male" or :func:`gender_codes`.
    """
    t, p, g = np.asarray(y_true), np.asarray(y_pred), gender_codes(gender)
    k = n_classes
    base = g * k
    hit = t == p
    pos = np.bincount(base + t, minlength=2 * k)
    sel = np.bincount(base + p, minlength=2 * k)
    if pos.size != 2 * k or sel.size != 2 * k:
        raise ValueError(f"a class index is out of range for n_classes={k}")
    tp = np.bincount(base[hit] + t[hit], minlength=2 * k)
    eo, sp = _gaps_from_counts(pos.reshape(2, k), sel.reshape(2, k), tp.reshape(2, k), np.bincount(g, minlength=2))
    return float(eo), float(sp)


def equality_of_odds_stat(
    y_true: NDArray[np.integer], y_pred: NDArray[np.integer], gender: ArrayLike, n_classes: int
) -> float:
    """The first value of :func:`fairness_gaps`, as a statistic for :func:`cluster_bootstrap`."""
    return fairness_gaps(y_true, y_pred, gender, n_classes)[0]


def statistical_parity_stat(
    y_true: NDArray[np.integer], y_pred: NDArray[np.integer], gender: ArrayLike, n_classes: int
) -> float:
    """The second value of :func:`fairness_gaps`, as a statistic for :func:`cluster_bootstrap`."""
    return fairness_gaps(y_true, y_pred, gender, n_classes)[1]


# ------------------------------------------------------------------------------- reference distributions
def _p95(values: NDArray[np.float64]) -> float:
    v = values[~np.isnan(values)]
    return float(np.percentile(v, 95)) if v.size else float("nan")


@dataclass(frozen=True)
class NullDistribution:
    """Equality of odds and statistical parity against the speaker-permutation null of :func:`fairness_null`.

    ``*_p95`` is the 95th percentile of the gaps a gender-blind model shows on these speakers; ``*_p_value`` the
    share of null gaps at least as large as the observed one. Monte Carlo (``exact=False``): p = (1 + #null ≥
    observed) / (1 + #valid), never 0. Exact (``exact=True``, every distinct assignment enumerated, the observed
    one among them): p = #null ≥ observed / #valid, at least 1/``n_assignments``.

    With one speaker per gender the only assignments are the observed one and its swap, and the swap gives the
    same gaps (they are absolute differences), so p = 1 and p95 = observed whatever the model does: the test has
    no power, because with two speakers a gender gap cannot be told apart from a difference between two people.
    The same symmetry makes every assignment and its complement equal when both genders have as many speakers,
    so the smallest attainable p there is 2/``n_assignments``. A NaN gap (undefined for these clips) gives NaN.
    """

    equality_of_odds: float  # observed
    statistical_parity: float  # observed
    eo_p95: float
    sp_p95: float
    eo_p_value: float
    sp_p_value: float
    n_permutations: int  # assignments evaluated
    n_valid: int  # of those, where equality of odds is defined (statistical parity always is)
    exact: bool
    n_assignments: int  # distinct speaker → gender assignments, C(n_speakers, n_female_speakers)
    n_female_speakers: int
    n_male_speakers: int

    def to_dict(self) -> dict[str, float]:
        return {
            "equality_of_odds_null_p95": self.eo_p95,
            "equality_of_odds_p_value": self.eo_p_value,
            "statistical_parity_null_p95": self.sp_p95,
            "statistical_parity_p_value": self.sp_p_value,
            "null_n_permutations": float(self.n_permutations),
        }


def _p_value(null: NDArray[np.float64], observed: float, exact: bool) -> tuple[float, int]:
    valid = null[~np.isnan(null)]
    if math.isnan(observed) or valid.size == 0:
        return float("nan"), int(valid.size)
    hits = int(np.sum(valid >= observed - _TIE))
    return (hits / valid.size if exact else (1 + hits) / (1 + valid.size)), int(valid.size)


def fairness_null(
    y_true: ArrayLike,
    y_pred: ArrayLike,
    gender: ArrayLike,
    speakers: ArrayLike,
    n_classes: int,
    n_permutations: int = 1000,
    seed: int = 0,
) -> NullDistribution:
    """Permutation null of the gender gaps: what a model unrelated to gender would show on the same test set.

    Each speaker keeps one gender for all its clips; the speaker → gender assignment is shuffled (the number of
    female and male speakers kept) and the gaps recomputed with the model's real predictions. Permuting speakers,
    not clips, keeps each speaker's clips together, so differences between individual speakers stay in the null,
    as they should: a gap that a reshuffle of who is female reproduces is not evidence about gender.

    When the distinct assignments number at most ``n_permutations`` all of them are enumerated (an exact test,
    ``exact=True``); otherwise ``n_permutations`` random ones are drawn. See :class:`NullDistribution` for the
    p-values and what they mean with one speaker per gender. Genders must be known ("female"/"male").
    """
    t, p, k = _check_pair(y_true, y_pred, n_classes)
    g = gender_codes(gender)
    spk = np.asarray(speakers).reshape(-1)
    if not (g.size == spk.size == t.size):
        raise ValueError(f"y_true, gender and speakers differ in length ({t.size}, {g.size}, {spk.size})")
    if n_permutations < 1:
        raise ValueError(f"n_permutations must be >= 1, got {n_permutations}")
    ids, first, inverse = np.unique(spk, return_index=True, return_inverse=True)
    inverse = inverse.reshape(-1)
    spk_gender = g[first]
    mixed = np.unique(inverse[g != spk_gender[inverse]])
    if mixed.size:
        raise ValueError(f"speakers {[str(s) for s in ids[mixed]]} have clips of both genders")
    n_spk, n_f = int(ids.size), int(np.sum(spk_gender == 0))

    # Per-speaker counts (true class, predicted class, correct class; clips): a gender's counts under any
    # assignment are then a sum of speaker rows, and all assignments are one matrix product.
    hit = t == p
    per_spk = np.concatenate(
        [
            np.bincount(inverse * k + t, minlength=n_spk * k).reshape(n_spk, k),
            np.bincount(inverse * k + p, minlength=n_spk * k).reshape(n_spk, k),
            np.bincount(inverse[hit] * k + t[hit], minlength=n_spk * k).reshape(n_spk, k),
            np.bincount(inverse, minlength=n_spk)[:, None],
        ],
        axis=1,
    )

    n_assignments = math.comb(n_spk, n_f)
    exact = n_assignments <= n_permutations
    if exact:
        female = np.zeros((n_assignments, n_spk), dtype=np.int64)
        for row, chosen in enumerate(itertools.combinations(range(n_spk), n_f)):
            female[row, list(chosen)] = 1
    else:
        rng = np.random.default_rng(seed)
        female = np.stack([rng.permutation(spk_gender) for _ in range(n_permutations)]) == 0
        female = female.astype(np.int64)

    def gaps(female_rows: NDArray[np.int64]) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        f = female_rows @ per_spk
        m = per_spk.sum(axis=0) - f
        both = np.stack([f, m], axis=-2)  # (..., 2, 3k + 1)
        return _gaps_from_counts(both[..., :k], both[..., k : 2 * k], both[..., 2 * k : 3 * k], both[..., 3 * k])

    obs_eo, obs_sp = (float(v) for v in gaps((spk_gender == 0).astype(np.int64)))
    null_eo, null_sp = gaps(female)
    eo_p, n_valid = _p_value(null_eo, obs_eo, exact)
    sp_p, _ = _p_value(null_sp, obs_sp, exact)
    return NullDistribution(
        equality_of_odds=obs_eo,
        statistical_parity=obs_sp,
        eo_p95=_p95(null_eo),
        sp_p95=_p95(null_sp),
        eo_p_value=eo_p,
        sp_p_value=sp_p,
        n_permutations=int(female.shape[0]),
        n_valid=n_valid,
        exact=exact,
        n_assignments=n_assignments,
        n_female_speakers=n_f,
        n_male_speakers=n_spk - n_f,
    )


@dataclass(frozen=True)
class ChanceDistribution:
    """The gender gaps of a random classifier on the same clips (:func:`fairness_chance`).

    A gap below ``*_p95`` is within what a model that never looks at the audio shows by chance on a set of this
    size and gender balance. ``n_valid`` counts simulations where equality of odds is defined: all or none, since
    whether a rate is defined depends only on the true labels and genders.
    """

    eo_p95: float
    sp_p95: float
    n_sim: int
    n_valid: int

    def to_dict(self) -> dict[str, float]:
        return {"equality_of_odds_random_p95": self.eo_p95, "statistical_parity_random_p95": self.sp_p95}


def fairness_chance(
    y_true: ArrayLike,
    gender: ArrayLike,
    class_priors: ArrayLike | None,
    n_classes: int,
    n_sim: int = 1000,
    seed: int = 0,
) -> ChanceDistribution:
    """Gap distribution of a classifier that predicts independently of its input, drawing from ``class_priors``.

    This is how audEERING's ser-tests derive fairness thresholds (random models). ``class_priors`` is the
    distribution the random classifier draws each prediction from, e.g. the training fold's class shares; None
    uses the class shares of ``y_true``. Unlike :func:`fairness_null` it ignores the model and the speakers: it
    says how large a gap the clip counts alone make likely, not whether this model's gap is about gender.
    """
    t, _, k = _check_pair(y_true, y_true, n_classes)
    g = gender_codes(gender)
    if g.size != t.size:
        raise ValueError(f"gender and y_true differ in length ({g.size} vs {t.size})")
    if n_sim < 1:
        raise ValueError(f"n_sim must be >= 1, got {n_sim}")
    priors = np.bincount(t, minlength=k) / t.size if class_priors is None else np.asarray(class_priors, float)
    if priors.shape != (k,) or (priors < 0).any() or abs(priors.sum() - 1.0) > 1e-6:
        raise ValueError(f"class_priors must be {k} non-negative shares summing to 1, got {priors.tolist()}")

    preds = np.random.default_rng(seed).choice(k, size=(n_sim, t.size), p=priors)
    # Counts of all simulations at once: one bincount over (simulation, gender, class).
    sim = np.arange(n_sim)[:, None] * (2 * k)
    base = sim + (g * k)[None, :]
    sel = np.bincount((base + preds).ravel(), minlength=n_sim * 2 * k).reshape(n_sim, 2, k)
    hit = preds == t[None, :]
    tp = np.bincount((base + t[None, :])[hit], minlength=n_sim * 2 * k).reshape(n_sim, 2, k)
    pos = np.broadcast_to(np.bincount(g * k + t, minlength=2 * k).reshape(2, k), sel.shape)
    n = np.broadcast_to(np.bincount(g, minlength=2), (n_sim, 2))
    eo, sp = _gaps_from_counts(pos, sel, tp, n)
    return ChanceDistribution(eo_p95=_p95(eo), sp_p95=_p95(sp), n_sim=n_sim, n_valid=int(np.sum(~np.isnan(eo))))
