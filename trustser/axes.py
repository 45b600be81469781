"""The trust axes, as data: what each reads from a run's summary, which way is better, and how a radar chart
normalises it. At the bottom of the package (it imports nothing of trustser but the emotion list), so that a run's
trust profile (``trustser.experiment``), the study's objectives (``trustser.study.space``), the selection rules and
the report all read one definition without importing each other.

Objectives are the five trust axes of the method; each reads one key of ``run_experiment``'s summary and has a
fixed direction. A sixth, optional axis, ``robustness`` (the mean flip rate over the corruption suite), may be
added beside them where the runs measured it.

Radar normalisation (fixed ranges, so a candidate's shape never depends on what it is compared with; 1 = best,
values clipped to [0, 1]; rates are fractions, not percent):

- performance   (UAR − 0.25) / 0.75          chance level of 4 balanced classes → 0, perfect recall → 1
- privacy       (1 − acc) / 0.5              gender probe at chance (0.5) → 1, a perfect probe → 0
- safety        1 − FGSM attack success rate
- fairness      1 − equality-of-odds gap
- sustainability 1 − log10(GFLOPs) / 2       1 GFLOP → 1, 100 GFLOPs → 0 (log decades)
- robustness    1 − mean flip rate
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping

from trustser import EMOTIONS

MAXIMIZE, MINIMIZE = "maximize", "minimize"


@dataclass(frozen=True)
class Objective:
    """A trust axis: its name, the ``run_experiment`` summary key it reads, and which way is better."""

    name: str
    key: str
    direction: str  # "maximize" | "minimize" (Optuna's words)
    label: str  # for tables and plots
    unit: str = ""

    @property
    def higher_is_better(self) -> bool:
        return self.direction == MAXIMIZE


OBJECTIVES: dict[str, Objective] = {
    o.name: o
    for o in (
        Objective("performance", "test_uar_mean", MAXIMIZE, "UAR"),
        Objective("privacy", "privacy_gender_accuracy_mean", MINIMIZE, "gender-probe acc"),
        Objective("safety", "safety_fgsm_asr_mean", MINIMIZE, "FGSM ASR"),
        Objective("fairness", "fairness_equality_of_odds_mean", MINIMIZE, "equality of odds"),
        Objective("sustainability", "sustainability_gflops", MINIMIZE, "GFLOPs (6 s)", "GFLOPs"),
    )
}
"""The method's five axes, in the order tables and radar charts use."""

OPTIONAL_OBJECTIVES: dict[str, Objective] = {
    o.name: o for o in (Objective("robustness", "robustness_mean", MINIMIZE, "corruption flip rate"),)
}
"""Axes a study or scenario may add to the five: ``robustness`` is the mean prediction flip rate over the corruption
suite (``trustser.metrics.robustness``), measured only when ``trust.corruptions`` names some."""

ALL_OBJECTIVES: dict[str, Objective] = {**OBJECTIVES, **OPTIONAL_OBJECTIVES}

CHANCE_UAR = 1 / len(EMOTIONS)  # 0.25 for the method's four classes
CHANCE_MARGIN = 0.02  # without an interval: a point UAR up to chance + this counts as chance level
MEANINGLESS_AT_CHANCE = ("safety", "fairness", "robustness")  # axes a chance-level classifier wins for free

AXES = ("performance", "privacy", "safety", "fairness", "sustainability")
OPTIONAL_AXES = ("robustness",)  # drawn only when some profile has a value for it
CHANCE_GENDER = 0.5
GFLOPS_DECADES = (0.0, 2.0)  # log10 range: 1 to 100 GFLOPs


def _clip(x: float) -> float:
    return min(1.0, max(0.0, x))


def radar_score(axis: str, value: float | None) -> float:
    """One axis value → [0, 1] with 1 = most trustworthy; NaN when the value is missing or not finite."""
    if value is None or not math.isfinite(value):
        return float("nan")
    if axis == "performance":
        return _clip((value - CHANCE_UAR) / (1 - CHANCE_UAR))
    if axis == "privacy":
        return _clip((1 - value) / (1 - CHANCE_GENDER))
    if axis in ("safety", "fairness", "robustness"):
        return _clip(1 - value)
    if axis == "sustainability":
        if value <= 0:
            return 1.0
        lo, hi = GFLOPS_DECADES
        return _clip(1 - (math.log10(value) - lo) / (hi - lo))
    raise KeyError(f"unknown radar axis '{axis}'; known: {', '.join(AXES + OPTIONAL_AXES)}")


def radar_scores(values: Mapping[str, float]) -> dict[str, float]:
    """The five axes' scores, and an optional axis's where ``values`` has it."""
    return {
        axis: radar_score(axis, values.get(axis)) for axis in AXES + OPTIONAL_AXES if axis in AXES or axis in values
    }
