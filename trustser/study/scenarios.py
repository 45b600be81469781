"""Deployment scenarios (the method's Table 5) and the rule that picks a configuration for one.

A scenario file (``studies/scenarios/<name>.yaml``, or any path) gives a priority per trust axis (high / medium /
low / ignore) — the method's five, each required, and optionally ``robustness`` (the mean prediction flip rate over
the corruption suite, read from the run summary when the study did not optimise it; 'ignore' when not named) — and
optional hard limits (``max_gflops: 10``, ``min_uar: 0.5``, ``max_latency_ms: 50`` ...; the
fields are listed in ``LIMIT_FIELDS``).

The rule (``recommend``), deterministic for a given set of candidates:

0. Chance rule: drop every candidate whose UAR is not above chance (its 95 % interval does not clear 0.25, or
   with no interval its point UAR is within 0.02 of it), or not above a stated ``uar_floor``
   (``trustser.study.uncertainty_rules.chance_level``): a classifier at chance is trivially fair and unattackable.
   If that leaves nothing, the study learned nothing, and ``NoCandidateError`` says so.
1. Hard limits: drop every candidate that breaks a limit, or lacks the limited metric ("not measured").
2. Normalise each axis over the candidates left, min–max and direction-aware: 1 = the best value among them,
   0 = the worst (``(v − worst) / (best − worst)``; an axis where all are equal gives 1 to all).
3. Score = Σ weight · normalised / Σ weight, with weights high = 3, medium = 2, low = 1, ignore = 0; an axis
   missing from any candidate is left out (and said so).
4. Rank by score; ties (within 1e-9) go to the better normalised value on the axes in priority order (high first,
   then medium, then low; within a level in the order performance, privacy, safety, fairness, sustainability,
   robustness),
   then to the label in alphabetical order.
5. Reasons: the score of choice and runner-up, then the axes with the largest weighted differences between them
   (where the choice wins, and where the runner-up would have been better).
6. Uncertainty: the candidates statistically indistinguishable from the choice on the decisive axes (the
   high-priority ones; with none, the highest level present) — their 95 % intervals overlap the choice's on each
   (``uncertainty_rules.indistinguishable``) — are named in the reasons and in ``Recommendation.indistinguishable``:
   the pick among them is decided by the point values and the lower-priority axes, not by the data.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence


from trustser.errors import ConfigError, TrustserError
from trustser.study.pareto import Candidate
from trustser.study.space import ALL_OBJECTIVES, OBJECTIVES, OPTIONAL_OBJECTIVES
from trustser.study.uncertainty_rules import (
    CHANCE_UAR,
    LEVEL,
    chance_level,
    indistinguishable,
    interval_keys,
    interval_record,
    missing_intervals,
)

AXES = tuple(OBJECTIVES)  # performance, privacy, safety, fairness, sustainability: every scenario weighs these
OPTIONAL_AXES = tuple(OPTIONAL_OBJECTIVES)  # robustness: weighed where a scenario names it ('ignore' otherwise)
ALL_AXES = AXES + OPTIONAL_AXES
WEIGHTS = {"high": 3, "medium": 2, "low": 1, "ignore": 0}
TIE = 1e-9
SCENARIO_DIR = Path(__file__).resolve().parents[2] / "studies" / "scenarios"
SHIPPED = ("edge", "cloud", "critical")

# Limit names: max_<field> / min_<field>. A field reads an axis value (by name or alias) or run-summary keys
# (the first one present, times a scale), as (key, scale) pairs.
LIMIT_FIELDS: dict[str, tuple[tuple[str, float], ...]] = {
    **{axis: ((axis, 1.0),) for axis in ALL_AXES},
    "uar": (("performance", 1.0),),
    "gender_accuracy": (("privacy", 1.0),),
    "asr": (("safety", 1.0),),
    "flip_rate": (("robustness", 1.0),),
    "equality_of_odds": (("fairness", 1.0),),
    "gflops": (("sustainability", 1.0),),
    "params_m": (("sustainability_params", 1e-6),),
    "latency_ms": (("sustainability_latency_s", 1e3), ("sustainability_latency_s_mean", 1e3)),  # measured, CPU
    "memory_mb": (("sustainability_peak_memory_mb", 1.0), ("sustainability_peak_memory_mb_mean", 1.0)),
}
TOP_LEVEL = ("name", "description", "priorities", "limits", "paper_pick")


class NoCandidateError(TrustserError):
    """No configuration is above chance and satisfies a scenario's hard limits."""


@dataclass(frozen=True)
class Scenario:
    name: str
    priorities: tuple[tuple[str, str], ...]  # (axis, level), in ALL_AXES order; optional axes only when given
    limits: tuple[tuple[str, float], ...] = ()
    description: str = ""
    paper_pick: str | None = None
    source: str = "<memory>"

    def weight(self, axis: str) -> int:
        return WEIGHTS[dict(self.priorities).get(axis, "ignore")]

    def priority_order(self) -> list[str]:
        """Axes by priority (high first), the canonical order within a level; ignored axes left out."""
        return sorted(
            (a for a, lvl in self.priorities if WEIGHTS[lvl] > 0),
            key=lambda a: (-WEIGHTS[dict(self.priorities)[a]], ALL_AXES.index(a)),
        )

    def decisive_axes(self, axes: Sequence[str] | None = None) -> list[str]:
        """The axes (of ``axes``, default all weighted ones) at the highest priority level present among them:
        the high-priority ones, or with none, the medium ones, ... — those the indistinguishable rule compares."""
        axes = self.priority_order() if axes is None else [a for a in self.priority_order() if a in axes]
        if not axes:
            return []
        top = self.weight(axes[0])
        return [a for a in axes if self.weight(a) == top]


@dataclass(frozen=True)
class Recommendation:
    scenario: str
    choice: Candidate
    runner_up: Candidate | None
    reasons: tuple[str, ...]
    scores: tuple[tuple[str, float], ...]  # (label, score), best first
    excluded: tuple[tuple[str, str], ...] = ()  # (label, why), by the chance rule, then the hard limits
    normalised: dict[str, dict[str, float]] = field(default_factory=dict)  # label -> axis -> [0, 1]
    indistinguishable: tuple[str, ...] = ()  # labels tied with the choice on the decisive axes, best score first
    decisive_axes: tuple[str, ...] = ()  # the axes the indistinguishable rule compared
    chance_level: tuple[str, ...] = ()  # the labels in ``excluded`` set aside by the chance rule
    intervals: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)  # label -> axis -> interval record

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready. ``indistinguishable``: one object per tied candidate (best score first), ``{"label",
        "intervals": {axis: {"value", "ci_low", "ci_high", "interval"}}}`` over the scored axes (``interval`` false:
        none logged, the point value stands in); ``indistinguishable_on``: the decisive axes compared; the choice's
        own intervals in ``choice_intervals``; ``excluded[].rule``: "chance level" or "hard limit"."""
        return {
            "scenario": self.scenario,
            "choice": self.choice.label,
            "runner_up": self.runner_up.label if self.runner_up else None,
            "reasons": list(self.reasons),
            "scores": [{"label": l, "score": s} for l, s in self.scores],
            "excluded": [
                {"label": l, "why": w, "rule": "chance level" if l in self.chance_level else "hard limit"}
                for l, w in self.excluded
            ],
            "indistinguishable": [{"label": l, "intervals": self.intervals.get(l, {})} for l in self.indistinguishable],
            "indistinguishable_on": list(self.decisive_axes),
            "choice_intervals": self.intervals.get(self.choice.label, {}),
            "choice_detail": self.choice.to_dict(),
            "runner_up_detail": self.runner_up.to_dict() if self.runner_up else None,
        }


def scenario_path(name_or_path: str | Path) -> Path:
    """A shipped scenario name (edge, cloud, critical) or a path to a user's file."""
    text = str(name_or_path)
    path = Path(text)
    if path.suffix in (".yaml", ".yml") or path.is_file():
        if not path.is_file():
            raise ConfigError(f"scenario file not found: {path}")
        return path
    for folder in (Path.cwd() / "studies" / "scenarios", SCENARIO_DIR):
        candidate = folder / f"{text}.yaml"
        if candidate.is_file():
            return candidate
    known = sorted(p.stem for p in SCENARIO_DIR.glob("*.yaml")) or list(SHIPPED)
    raise ConfigError(f"unknown scenario '{text}'; shipped: {', '.join(known)} (or give a path to a YAML file)")


def load_scenario(name_or_path: str | Path) -> Scenario:
    from trustser.config_io import read_yaml_mapping

    path = scenario_path(name_or_path)
    return parse_scenario(read_yaml_mapping(path, TOP_LEVEL), str(path))


def parse_scenario(raw: Mapping[str, Any], source: str = "<memory>") -> Scenario:
    def fail(key: str, message: str) -> ConfigError:
        return ConfigError(f"{source}: {key}: {message}")

    unknown = sorted(set(raw) - set(TOP_LEVEL))
    if unknown:
        raise fail(unknown[0], f"unknown key; known: {', '.join(TOP_LEVEL)}")
    priorities = raw.get("priorities")
    if not isinstance(priorities, dict) or not priorities:
        raise fail("priorities", f"missing: give a level ({', '.join(WEIGHTS)}) for each of {', '.join(AXES)}")
    for axis, level in priorities.items():
        if axis not in ALL_AXES:
            raise fail(f"priorities.{axis}", f"unknown axis; known: {', '.join(ALL_AXES)}")
        if level not in WEIGHTS:
            raise fail(f"priorities.{axis}", f"bad level '{level}'; use one of {', '.join(WEIGHTS)}")
    missing = [a for a in AXES if a not in priorities]
    if missing:
        raise fail(f"priorities.{missing[0]}", "missing (say 'ignore' to leave an axis out)")
    if all(WEIGHTS[level] == 0 for level in priorities.values()):
        raise fail("priorities", "every axis is 'ignore': nothing to decide on")
    limits = raw.get("limits") or {}
    if not isinstance(limits, dict):
        raise fail("limits", f"expected a mapping like max_gflops: 10, got {limits!r}")
    parsed_limits = []
    for key, value in limits.items():
        bound, _, name = str(key).partition("_")
        if bound not in ("max", "min") or name not in LIMIT_FIELDS:
            raise fail(
                f"limits.{key}",
                f"unknown limit; use max_<field> or min_<field> with field one of {', '.join(LIMIT_FIELDS)}",
            )
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise fail(f"limits.{key}", f"expected a number, got {value!r}")
        parsed_limits.append((str(key), float(value)))
    return Scenario(
        name=str(raw.get("name") or Path(source).stem),
        priorities=tuple((a, priorities[a]) for a in ALL_AXES if a in priorities),
        limits=tuple(parsed_limits),
        description=str(raw.get("description") or ""),
        paper_pick=raw.get("paper_pick"),
        source=source,
    )


def limit_value(candidate: Candidate, name: str) -> float | None:
    for key, scale in LIMIT_FIELDS[name]:
        v = candidate.value(key) if key in ALL_AXES else candidate.metrics.get(key)
        if v is not None and math.isfinite(float(v)):
            return float(v) * scale
    return None


def _limit_failure(candidate: Candidate, limits: Sequence[tuple[str, float]]) -> str | None:
    for key, bound in limits:
        kind, _, name = key.partition("_")
        v = limit_value(candidate, name)
        if v is None:
            return f"{name} not measured (limit {key}: {bound:g})"
        if (kind == "max" and v > bound) or (kind == "min" and v < bound):
            return f"{name} {v:.4g} breaks {key}: {bound:g}"
    return None


def normalise(candidates: Sequence[Candidate], axes: Sequence[str]) -> dict[str, dict[str, float]]:
    """Min–max over the candidates, direction-aware: 1 = best among them, 0 = worst; all equal → 1."""
    out: dict[str, dict[str, float]] = {c.label: {} for c in candidates}
    for axis in axes:
        objective = ALL_OBJECTIVES[axis]
        values = [c.value(axis) for c in candidates]
        lo, hi = min(values), max(values)
        for c, v in zip(candidates, values):
            if hi == lo:
                n = 1.0
            else:
                n = (v - lo) / (hi - lo) if objective.higher_is_better else (hi - v) / (hi - lo)
            out[c.label][axis] = n
    return out


def recommend(front_rows: Sequence[Candidate], scenario: Scenario, uar_floor: float | None = None) -> Recommendation:
    """Pick a configuration for ``scenario`` from ``front_rows`` by the rule in the module docstring; ``uar_floor``
    raises the chance rule's bar (see ``uncertainty_rules.chance_level``)."""
    if not front_rows:
        raise NoCandidateError(f"scenario {scenario.name}: no candidates (is the study empty?)")
    labels = [c.label for c in front_rows]
    if len(set(labels)) != len(labels):
        raise ConfigError(f"scenario {scenario.name}: candidate labels must be unique, got {labels}")
    chance = [(c.label, why) for c in front_rows for why in [chance_level(c, uar_floor)] if why]
    if len(chance) == len(front_rows):
        if all(chance_level(c) for c in front_rows):
            raise NoCandidateError(
                f"scenario {scenario.name}: no candidate is above chance {CHANCE_UAR:g}: the study's models learned "
                f"nothing usable, and their safety and fairness mean nothing ({_listed(chance, 5)})"
            )
        raise NoCandidateError(
            f"scenario {scenario.name}: no candidate clears the UAR floor {uar_floor:g} ({_listed(chance, 5)})"
        )
    set_aside = {l for l, _ in chance}
    limited, candidates = [], []
    for c in front_rows:
        if c.label in set_aside:
            continue
        why = _limit_failure(c, scenario.limits)
        (limited.append((c.label, why)) if why else candidates.append(c))
    excluded = chance + limited
    if not candidates:
        details = "; ".join(f"{l}: {w}" for l, w in excluded[:5])
        raise NoCandidateError(
            f"scenario {scenario.name}: no candidate meets the limits {dict(scenario.limits)} ({details})"
        )
    order = scenario.priority_order()
    unmeasured = [a for a in order if any(not math.isfinite(c.value(a)) for c in candidates)]
    axes = [a for a in order if a not in unmeasured]
    if not axes:
        raise NoCandidateError(f"scenario {scenario.name}: none of its axes is measured for every candidate")
    norm = normalise(candidates, axes)
    total = sum(scenario.weight(a) for a in axes)
    scores = {c.label: sum(scenario.weight(a) * norm[c.label][a] for a in axes) / total for c in candidates}

    def rank_key(c: Candidate):
        return (-round(scores[c.label], 9), *(-norm[c.label][a] for a in axes), c.label)

    ranked = sorted(candidates, key=rank_key)
    choice = ranked[0]
    runner_up = ranked[1] if len(ranked) > 1 else None
    decisive = scenario.decisive_axes(axes)
    ties = indistinguishable(choice, ranked[1:], decisive)
    reasons = _reasons(scenario, choice, runner_up, axes, norm, scores, total)
    if runner_up is not None:
        reasons.append(_tie_reason(scenario, ranked, ties, decisive))
    if unmeasured:
        reasons.append(f"not considered (not measured for every candidate): {', '.join(unmeasured)}")
    if chance:
        reasons.append(
            f"set aside as not above chance (a model at chance is trivially fair and unattackable): "
            f"{len(chance)} of {len(front_rows)} ({_listed(chance)})"
        )
    if limited:
        reasons.append(f"excluded by the hard limits: {len(limited)} of {len(front_rows)} ({_listed(limited)})")
    return Recommendation(
        scenario.name,
        choice,
        runner_up,
        tuple(reasons),
        tuple((c.label, scores[c.label]) for c in ranked),
        tuple(excluded),
        norm,
        indistinguishable=tuple(c.label for c in ties),
        decisive_axes=tuple(decisive),
        chance_level=tuple(l for l, _ in chance),
        intervals={c.label: interval_record(c, axes) for c in ranked},
    )


def _listed(pairs: Sequence[tuple[str, str]], first: int = 3) -> str:
    return "; ".join(f"{l}: {w}" for l, w in pairs[:first]) + (" ..." if len(pairs) > first else "")


def _tie_reason(
    scenario: Scenario, ranked: Sequence[Candidate], ties: Sequence[Candidate], decisive: Sequence[str]
) -> str:
    levels = dict(scenario.priorities)
    on = ", ".join(f"{a} ({levels[a]})" for a in decisive)
    counted = [a for a in decisive if interval_keys(a) is None]
    how = f" ({LEVEL} intervals overlap on each)" if len(counted) < len(decisive) else ""
    if ties:
        text = (
            f"statistically indistinguishable from the pick on {on}{how}: "
            f"{', '.join(c.label for c in ties)} — treat as a tie"
        )
    else:
        text = f"no other candidate is statistically indistinguishable from the pick on {on}"
    if counted:
        text += f"; {', '.join(counted)} is counted, not sampled: only equal values tie"
    lacking = missing_intervals(ranked, decisive)
    if lacking:
        text += (
            f"; no interval logged for {', '.join(lacking[:3])}{' ...' if len(lacking) > 3 else ''}: "
            f"point values compared there"
        )
    return text


def _fmt(axis: str, v: float) -> str:
    return f"{v:.3g}" if ALL_OBJECTIVES[axis].unit else f"{v:.3f}"


def _reasons(
    scenario: Scenario,
    choice: Candidate,
    runner_up: Candidate | None,
    axes: list[str],
    norm: dict[str, dict[str, float]],
    scores: dict[str, float],
    total: int,
) -> list[str]:
    levels = dict(scenario.priorities)
    if runner_up is None:
        return [f"only candidate within the limits (score {scores[choice.label]:.3f})"]
    reasons = [
        f"score {scores[choice.label]:.3f} vs {scores[runner_up.label]:.3f} for the runner-up "
        f"{runner_up.label} (weights high=3, medium=2, low=1 over min-max normalised axes)"
    ]
    diffs = {a: scenario.weight(a) * (norm[choice.label][a] - norm[runner_up.label][a]) / total for a in axes}
    diffs = {a: round(d, 9) for a, d in diffs.items()}  # so that equal contributions keep the priority order
    wins = sorted((a for a in axes if diffs[a] > TIE), key=lambda a: (-diffs[a], axes.index(a)))
    losses = sorted((a for a in axes if diffs[a] < -TIE), key=lambda a: (diffs[a], axes.index(a)))
    for a in wins:
        reasons.append(
            f"{a} ({levels[a]}): {ALL_OBJECTIVES[a].label} {_fmt(a, choice.value(a))} vs "
            f"{_fmt(a, runner_up.value(a))} "
            f"(+{diffs[a]:.3f} to the score)"
        )
    for a in losses:
        reasons.append(
            f"runner-up better on {a} ({levels[a]}): {ALL_OBJECTIVES[a].label} {_fmt(a, runner_up.value(a))} vs "
            f"{_fmt(a, choice.value(a))} ({diffs[a]:.3f})"
        )
    if abs(scores[choice.label] - scores[runner_up.label]) <= TIE:
        decider = next((a for a in axes if abs(norm[choice.label][a] - norm[runner_up.label][a]) > TIE), None)
        reasons.insert(
            1,
            f"tied score; decided by {decider} ({levels[decider]})"
            if decider
            else "tied on every axis; decided by name",
        )
    return reasons
