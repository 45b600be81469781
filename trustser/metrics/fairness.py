"""Fairness: does the emotion classifier treat female and male speakers alike?

Gender is the protected attribute. Equality of odds and statistical parity are defined for a binary decision, so
the 4-class task is split into one one-vs-rest task per emotion ("is this clip angry?"), the per-gender rates of
each task are computed with fairlearn's ``MetricFrame``, and the per-class gaps are reduced to one number:

* ``equality_of_odds`` = max over classes c of max(|TPR_f(c) − TPR_m(c)|, |FPR_f(c) − FPR_m(c)|), i.e. fairlearn's
  ``equalized_odds_difference`` (``method="between_groups"``) of each one-vs-rest task, then the worst class.
  The worst class rather than the mean, because a model that is fair on three emotions and systematically misses
  one emotion for one gender is unfair, and a mean would hide it. ``equality_of_odds_mean`` is the mean too.
* ``statistical_parity`` = max over classes of |SR_f(c) − SR_m(c)| with SR = share of the gender's clips predicted
  as c (fairlearn's ``demographic_parity_difference`` per class, then the worst class). It ignores the true label,
  so it also reflects a difference in the genders' emotion distribution, not only the model.
* ``reference_eo`` = the number the TrustSER reference code reports as equality of odds (paper Table 4), kept under
  its own name so results can be set beside the paper's: see :func:`reference_equality_of_odds`.
  ``reference_statistical_parity`` likewise is the reference's statistical parity (holisticai
  ``multiclass_statistical_parity``, max over group pairs): the total-variation distance ½·Σ_c |SR_f(c) − SR_m(c)|
  between the two genders' predicted-class distributions.

All values are fractions in [0, 1] (the paper prints percentages); lower is fairer.

Undefined is not zero: a rate needs a denominator, so where the evaluated set holds only one gender, or a gender has
no true sample of some class (TPR undefined) or only samples of it (FPR undefined), the affected metric is NaN and
``reason`` says why. fairlearn and the reference's library would instead report 0 gap for a single gender, which
reads as "perfectly fair". Clips of unknown gender (None/NaN) are left out and counted in ``n_unknown_gender``.
"""

from __future__ import annotations

import functools
import math
import warnings
from dataclasses import asdict, dataclass, field
from typing import Mapping, Sequence

import numpy as np
import pandas as pd
from fairlearn.metrics import MetricFrame, count, false_positive_rate, selection_rate, true_positive_rate
from numpy.typing import ArrayLike, NDArray

from trustser.metrics.performance import _check_pair, default_class_names

GENDERS: tuple[str, str] = ("female", "male")
"""The two values of the protected attribute, in the order the corpora label them."""


@dataclass(frozen=True)
class GroupRate:
    """One gender's rates on the one-vs-rest task of one class (one row of the per-class table)."""

    class_index: int
    class_name: str
    gender: str
    n: int  # clips of this gender
    n_positive: int  # clips of this gender whose true class is this class
    tpr: float  # P(pred = c | true = c, gender); NaN when n_positive == 0
    fpr: float  # P(pred = c | true != c, gender); NaN when n == n_positive
    selection_rate: float  # P(pred = c | gender)


@dataclass(frozen=True)
class FairnessReport:
    """Gender gaps of one set of predictions; see the module docstring for the definitions."""

    equality_of_odds: float
    equality_of_odds_mean: float
    statistical_parity: float
    reference_eo: float
    reference_statistical_parity: float
    eo_per_class: tuple[float, ...]
    sp_per_class: tuple[float, ...]
    reference_eo_per_class: tuple[float, ...]
    rates: tuple[GroupRate, ...]
    n_by_gender: Mapping[str, int]
    n_unknown_gender: int
    class_names: tuple[str, ...]
    reason: str | None = None
    """Why some metric is NaN (None when all are defined)."""
    groups: tuple[str, str] = field(default=GENDERS)

    @property
    def defined(self) -> bool:
        return self.reason is None

    def rates_frame(self) -> pd.DataFrame:
        """The per-class, per-gender rate table as a DataFrame (write it with ``.to_csv(path, index=False)``)."""
        columns = list(GroupRate.__dataclass_fields__)
        return pd.DataFrame([asdict(r) for r in self.rates], columns=columns)

    def to_dict(self) -> dict[str, float]:
        """Flat scalar view for logging; undefined values stay NaN rather than disappearing."""
        out = {
            "equality_of_odds": self.equality_of_odds,
            "equality_of_odds_mean": self.equality_of_odds_mean,
            "statistical_parity": self.statistical_parity,
            "reference_eo": self.reference_eo,
            "reference_statistical_parity": self.reference_statistical_parity,
        }
        for name, eo, sp in zip(self.class_names, self.eo_per_class, self.sp_per_class):
            out[f"eo_{name}"] = eo
            out[f"sp_{name}"] = sp
        for g in self.groups:
            out[f"n_{g}"] = float(self.n_by_gender.get(g, 0))
        out["n_unknown_gender"] = float(self.n_unknown_gender)
        return out


def _is_unknown(value: object) -> bool:
    """None, NaN or pandas.NA: the ways a missing gender arrives from a list, an array or a DataFrame column."""
    return value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value))


def split_known_gender(
    gender: ArrayLike | Sequence[str | None], groups: tuple[str, str] = GENDERS
) -> tuple[NDArray[np.object_], NDArray[np.bool_]]:
    """The gender column as an object array plus a mask of the clips whose gender is known.

    Unknown means None or NaN (what a corpus without speaker metadata gives); any other value outside ``groups``
    is an error, because silently dropping e.g. "F"/"M" would turn a labelling mismatch into a one-gender set.
    """
    g = np.asarray(gender, dtype=object).reshape(-1)
    known = np.array([not _is_unknown(v) for v in g], dtype=bool)
    unexpected = sorted({str(v) for v in g[known]} - set(groups))
    if unexpected:
        raise ValueError(f"gender values {unexpected} are neither {list(groups)} nor None (unknown)")
    return g, known


def reference_equality_of_odds(
    y_true: NDArray[np.int64],
    y_pred: NDArray[np.int64],
    gender: NDArray[np.object_],
    n_classes: int,
    groups: tuple[str, str] = GENDERS,
) -> tuple[float, tuple[float, ...]]:
    """The TrustSER reference code's fairness number and its per-class terms.

    The reference calls holisticai 0.3.0 ``multiclass_equality_of_opp(gender, y_pred, y_true,
    aggregation_fun="max")``. For each gender it builds the confusion matrix and normalises it per *true* class
    (each true class's row becomes the distribution P(pred | true = c, gender)); the distance between the two
    genders is the sum of the absolute differences of all entries divided by 2·C, i.e. the total-variation
    distance ½·Σ_pred |P_f − P_m| of each true class's row, averaged over the C true classes. "max" aggregates over
    pairs of groups, a no-op for two genders. Inputs must hold known genders only.

    Returns NaN where a gender has no sample of some class; holisticai would quietly use a uniform row (its
    1e-32 smoothing) there, and 0.0 for a single-gender set. Otherwise the value equals the reference's whenever
    every class occurs in the set (holisticai counts classes seen in y_true or y_pred; we count all n_classes).
    """
    rows = []
    for g in groups:
        mask = gender == g
        cm = np.bincount(y_true[mask] * n_classes + y_pred[mask], minlength=n_classes * n_classes)
        cm = cm.reshape(n_classes, n_classes).astype(np.float64)
        with np.errstate(invalid="ignore", divide="ignore"):
            rows.append(cm / cm.sum(axis=1, keepdims=True))  # NaN rows where the class is absent
    per_class = 0.5 * np.abs(rows[0] - rows[1]).sum(axis=1)
    per_class_t = tuple(float(v) for v in per_class)
    return float(per_class.mean()), per_class_t


def _group_rates(
    t: NDArray[np.int64], p: NDArray[np.int64], g: NDArray[np.object_], c: int
) -> dict[str, dict[str, float]]:
    """fairlearn's per-gender TPR/FPR/selection rate and counts of the one-vs-rest task of class c."""

    def n_positive(y_true: NDArray, y_pred: NDArray) -> int:
        return int(np.sum(y_true))

    metrics = {
        "tpr": functools.partial(true_positive_rate, pos_label=1),
        "fpr": functools.partial(false_positive_rate, pos_label=1),
        "selection_rate": functools.partial(selection_rate, pos_label=1),
        "n": count,
        "n_positive": n_positive,
    }
    with warnings.catch_warnings():
        # 0/0 rates are replaced by NaN below; the library's own warning about them is noise here.
        warnings.simplefilter("ignore")
        frame = MetricFrame(
            metrics=metrics,
            y_true=(t == c).astype(np.int64),
            y_pred=(p == c).astype(np.int64),
            sensitive_features=g,
        )
    by_group = frame.by_group
    return {str(k): {m: float(by_group.loc[k, m]) for m in metrics} for k in by_group.index}


def _nan_report(
    reason: str,
    n_classes: int,
    names: tuple[str, ...],
    rates: tuple[GroupRate, ...],
    n_by_gender: dict[str, int],
    n_unknown: int,
    groups: tuple[str, str],
) -> FairnessReport:
    nan = float("nan")
    return FairnessReport(
        equality_of_odds=nan,
        equality_of_odds_mean=nan,
        statistical_parity=nan,
        reference_eo=nan,
        reference_statistical_parity=nan,
        eo_per_class=(nan,) * n_classes,
        sp_per_class=(nan,) * n_classes,
        reference_eo_per_class=(nan,) * n_classes,
        rates=rates,
        n_by_gender=n_by_gender,
        n_unknown_gender=n_unknown,
        class_names=names,
        reason=reason,
        groups=groups,
    )


def fairness_report(
    y_true: ArrayLike,
    y_pred: ArrayLike,
    gender: ArrayLike | Sequence[str | None],
    n_classes: int = 4,
    class_names: tuple[str, ...] | None = None,
    groups: tuple[str, str] = GENDERS,
) -> FairnessReport:
    """Gender gaps of one set of predictions (one test fold): the definitions are in the module docstring.

    ``equality_of_odds`` is max over classes c of max(|ΔTPR_c|, |ΔFPR_c|) on the one-vs-rest task of c — fairlearn's
    ``equalized_odds_difference`` per class, then the largest. It and its mean are NaN when any class's TPR or FPR
    is undefined for a gender (reason given), so a fold missing an emotion for one gender cannot look fair.
    """
    t, p, k = _check_pair(y_true, y_pred, n_classes)
    names = class_names if class_names is not None else default_class_names(k)
    if len(names) != k:
        raise ValueError(f"{len(names)} class names given for n_classes={k}")
    g_all, known = split_known_gender(gender, groups)
    if g_all.shape != t.shape:
        raise ValueError(f"gender and y_true differ in length ({g_all.size} vs {t.size})")
    n_unknown = int((~known).sum())
    t, p, g = t[known], p[known], g_all[known].astype(str)
    n_by_gender = {grp: int(np.sum(g == grp)) for grp in groups}
    if t.size < 2:  # one clip is one gender; fairlearn's MetricFrame also fails on a single sample
        counts = ", ".join(f"{grp}: {n_by_gender[grp]}" for grp in groups)
        return _nan_report(
            f"gender gaps need both genders; the evaluated set has {t.size} clip(s) of known gender "
            f"({counts}, unknown: {n_unknown})",
            k,
            tuple(names),
            (),
            n_by_gender,
            n_unknown,
            groups,
        )

    # The per-class, per-gender table (rates of the genders that are present, fairlearn's values, 0/0 → NaN).
    rates: list[GroupRate] = []
    for c in range(k) if t.size else ():
        for grp, r in sorted(_group_rates(t, p, g, c).items(), key=lambda kv: groups.index(kv[0])):
            n, n_pos = int(r["n"]), int(r["n_positive"])
            rates.append(
                GroupRate(
                    class_index=c,
                    class_name=names[c],
                    gender=grp,
                    n=n,
                    n_positive=n_pos,
                    tpr=r["tpr"] if n_pos > 0 else float("nan"),
                    fpr=r["fpr"] if n - n_pos > 0 else float("nan"),
                    selection_rate=r["selection_rate"],
                )
            )

    missing = [grp for grp in groups if n_by_gender[grp] == 0]
    if missing:
        counts = ", ".join(f"{grp}: {n_by_gender[grp]}" for grp in groups)
        reason = (
            f"gender gaps need both genders; the evaluated set has no {' and no '.join(missing)} clip "
            f"({counts}, unknown: {n_unknown})"
        )
        return _nan_report(reason, k, tuple(names), tuple(rates), n_by_gender, n_unknown, groups)

    table = {(r.class_index, r.gender): r for r in rates}
    eo, sp, undefined = [], [], []
    for c in range(k):
        a, b = table[(c, groups[0])], table[(c, groups[1])]
        gaps = (abs(a.tpr - b.tpr), abs(a.fpr - b.fpr))  # NaN propagates from an undefined rate
        eo.append(float("nan") if any(math.isnan(x) for x in gaps) else max(gaps))
        sp.append(abs(a.selection_rate - b.selection_rate))
        for r in (a, b):
            if r.n_positive == 0:
                undefined.append(f"{r.gender} has no '{names[c]}' clip (TPR undefined)")
            elif r.n_positive == r.n:
                undefined.append(f"{r.gender} has only '{names[c]}' clips (FPR undefined)")

    ref, ref_per_class = reference_equality_of_odds(t, p, g, k, groups)
    sp_gaps = np.array(sp)
    reason = "equality of odds undefined: " + "; ".join(undefined) if undefined else None
    return FairnessReport(
        equality_of_odds=float("nan") if undefined else max(eo),
        equality_of_odds_mean=float("nan") if undefined else float(np.mean(eo)),
        statistical_parity=float(sp_gaps.max()),
        reference_eo=ref,
        # holisticai's multiclass_statistical_parity (the reference's): TV distance of P(pred | gender)
        reference_statistical_parity=float(0.5 * sp_gaps.sum()),
        eo_per_class=tuple(eo),
        sp_per_class=tuple(sp),
        reference_eo_per_class=ref_per_class,
        rates=tuple(rates),
        n_by_gender=n_by_gender,
        n_unknown_gender=n_unknown,
        class_names=tuple(names),
        reason=reason,
        groups=groups,
    )
