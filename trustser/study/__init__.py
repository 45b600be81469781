"""Studies: search a space of configurations for the trust trade-offs, and pick one per deployment scenario.

space (YAML → StudySpace) → runner (Optuna + MLflow) → pareto (front rows, plot) → scenarios (recommend) → radar.
"""

from trustser.study.pareto import Candidate, front_rows, study_rows
from trustser.study.runner import StudyResult, TrialRunner, run_study
from trustser.study.scenarios import Recommendation, Scenario, load_scenario, recommend
from trustser.study.space import OBJECTIVES, Objective, StudySpace, load_space

__all__ = [
    "OBJECTIVES",
    "Candidate",
    "Objective",
    "Recommendation",
    "Scenario",
    "StudyResult",
    "StudySpace",
    "TrialRunner",
    "front_rows",
    "load_scenario",
    "load_space",
    "recommend",
    "run_study",
    "study_rows",
]
