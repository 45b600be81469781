"""Verdicts in the manner of audEERING's ser-tests: a figure passes where it beats what random models show on the
same test set by a stated margin.

A random model here is the class-prior random classifier: it ignores its input and draws every prediction from the
test set's class shares (``trustser.metrics.uncertainty.fairness_chance``; ser-tests draws from a uniform
distribution, which for EmoDB's unbalanced classes would make chance look worse than it is). How chance enters
depends on which side of a figure chance sits:

* **Robustness flip rate** — chance is the *bad* end: a random model changes its answer on a corrupted clip with
  probability ``1 − Σ p_k²`` (its clean and corrupted answers are independent draws), about 0.75 for four balanced
  classes. Pass: ``flip_rate ≤ FLIP_SHARE_OF_CHANCE × that`` (a quarter: ≈ 0.19 for four balanced classes, close
  to ser-tests' "at least 80 % unchanged predictions").
* **Robustness UAR drop** and **fairness gaps** — chance is the *noise floor*: a random model loses no UAR under a
  corruption and has no gender bias, yet on a finite test set it shows a drop or a gap by chance. Pass: the figure
  is no larger than the ``CHANCE_QUANTILE``-th percentile of the same figure over ``n_sim`` random models
  (``*_random_p95``), i.e. not distinguishable from what chance alone does (ser-tests takes the maximum over 1000
  simulations, a more lenient bar).

A verdict is 1.0 (pass), 0.0 (fail) or NaN (a figure or its reference undefined). A model at chance level passes the
noise-floor tests trivially and a constant one the flip-rate test: the scenario rule sets such models aside before
any of this is read (``trustser.study.uncertainty_rules.chance_level``).
"""

from __future__ import annotations

import math
from typing import Mapping

FLIP_SHARE_OF_CHANCE = 0.25
"""A flip rate passes at most at this share of a random model's (``1 − Σ p²``)."""

CHANCE_QUANTILE = 95
"""A drop or a gap passes up to this percentile of the random models' (the ``*_random_p95`` references)."""

FAIRNESS_FIGURES = ("equality_of_odds", "statistical_parity")


def _verdict(passed: bool, *values: float) -> float:
    return float("nan") if any(v is None or not math.isfinite(v) for v in values) else float(passed)


def flip_rate_verdict(flip_rate: float, chance_flip_rate: float) -> float:
    """1.0 when the flip rate is at most ``FLIP_SHARE_OF_CHANCE`` of the random model's."""
    return _verdict(flip_rate <= FLIP_SHARE_OF_CHANCE * chance_flip_rate, flip_rate, chance_flip_rate)


def noise_floor_verdict(value: float, random_p95: float) -> float:
    """1.0 when a drop or a gap is no larger than the random models' 95th percentile on the same clips."""
    return _verdict(value <= random_p95, value, random_p95)


def fairness_verdicts(metrics: Mapping[str, float], prefix: str = "fairness_", suffix: str = "") -> dict[str, float]:
    """``fairness_<figure>_pass`` for each gap with a random reference in ``metrics``: the gap (``<prefix><figure>
    <suffix>``) against ``<prefix><figure>_random_p95``."""
    out = {}
    for figure in FAIRNESS_FIGURES:
        gap, reference = metrics.get(f"{prefix}{figure}{suffix}"), metrics.get(f"{prefix}{figure}_random_p95")
        if gap is not None and reference is not None:
            out[f"{prefix}{figure}_pass"] = noise_floor_verdict(float(gap), float(reference))
    return out


def describe(verdict: float | None) -> str:
    if verdict is None or not math.isfinite(verdict):
        return "n/a"
    return "pass" if verdict >= 0.5 else "fail"


def pooled_fairness_verdicts(
    y_true, y_pred, genders, n_classes: int, references: Mapping[str, float]
) -> dict[str, float]:
    """The gaps over the pooled test clips of all folds (``fairness_<figure>_pooled``) and their verdicts against
    the pooled random references in ``references`` (``fairness_<figure>_random_p95``); clips of unknown gender are
    left out, and with one gender the gaps are NaN."""
    import numpy as np

    from trustser.metrics import uncertainty as unc

    g = np.asarray(genders, dtype=object)
    known = np.array([x in (unc.FEMALE, unc.MALE) for x in g], dtype=bool)
    nan = float("nan")
    gaps = (nan, nan)
    if len(set(g[known])) == 2:
        gaps = unc.fairness_gaps(
            np.asarray(y_true)[known], np.asarray(y_pred)[known], unc.gender_codes(g[known]), n_classes
        )
    out = {f"fairness_{figure}_pooled": gap for figure, gap in zip(FAIRNESS_FIGURES, gaps)}
    return out | fairness_verdicts({**references, **out}, suffix="_pooled")
