"""What a candidate's 95 % intervals allow one to say: is it above chance, and which candidates can't be told
apart from the pick. Pure functions over ``Candidate``-like rows (``values`` by axis, ``metrics`` = the run summary).

Intervals. For an axis whose objective key is ``K_mean`` (performance, privacy, safety, fairness) the run summary
holds the speaker-level bootstrap 95 % interval over the pooled test predictions of all folds as ``K_ci_low`` and
``K_ci_high`` (e.g. ``test_uar_ci_low``). The point value stays the mean over folds, so it may sit a little
off-centre in its interval, or even just outside it; both are used as logged. Sustainability (GFLOPs) is counted,
not sampled: it has no interval, and two candidates tie on it only when their counts are equal (configurations
differing only in head width or pooling do: the count uses the method's head). A row without the interval keys
(an older study, a hand-made front) falls back to its point value, a zero-width interval ``(v, v)``; the rules
below say so in their messages.

Chance rule (``chance_level``). A classifier that is not above chance is trivially "fair" and "unattackable" (it
answers the same whatever the speaker or the noise), so its safety and fairness numbers mean nothing and it must
not win a scenario. A candidate is set aside when

- its UAR interval does not clear chance, 1 / 4 emotion classes = 0.25 (the interval's low end ≤ 0.25); or, with
  no interval logged, its point UAR is within ``CHANCE_MARGIN`` (0.02) of chance;
- or a floor is stated (``recommend --uar-floor``) and its UAR does not clear the floor either: point UAR at or
  below the floor, or an interval whose low end is at or below it. (A scenario's ``limits: min_uar`` is a hard
  limit on the point value, checked separately.)

A row without a UAR is not judged by this rule.

Indistinguishable rule (``indistinguishable``). The study's objectives and the scenario's score use the point
values; the intervals then say which other candidates the data can't separate from the pick. A candidate is
indistinguishable from the choice when, on EVERY decisive axis (the scenario's high-priority axes; with none,
those of its highest level present), its interval overlaps the choice's (closed intervals: touching counts).
An axis without intervals (sustainability, or rows that lack them) therefore compares by equality of the values.
A candidate that overlaps on lower-priority axes only is not listed: the scenario says those matter less.
Overlapping 95 % intervals are a lenient test of "no difference" — two candidates whose intervals overlap a
little may still differ under a paired test — so the list errs towards naming too many ties, which is the safe
side for a user choosing between them. A paired bootstrap on the same test clips (for candidates sharing a
corpus) needs the per-clip predictions, which the run summary does not carry; it is not done here.
"""

from __future__ import annotations

import math
from typing import Any, Iterable, Sequence

from trustser.axes import ALL_OBJECTIVES, CHANCE_MARGIN, CHANCE_UAR, MEANINGLESS_AT_CHANCE  # noqa: F401 (re-exported)

LEVEL = "95 %"  # the level of the logged intervals


def interval_keys(axis: str) -> tuple[str, str] | None:
    """The summary keys of an axis's interval (``test_uar_ci_low``, ``test_uar_ci_high``), None for an axis that
    has none (sustainability: counted, not sampled)."""
    key = ALL_OBJECTIVES[axis].key
    if not key.endswith("_mean"):
        return None
    base = key[: -len("_mean")]
    return f"{base}_ci_low", f"{base}_ci_high"


def has_interval(candidate: Any, axis: str) -> bool:
    """Whether the row carries a finite interval for ``axis``."""
    keys = interval_keys(axis)
    return keys is not None and all(_finite(candidate.metrics.get(k)) is not None for k in keys)


def interval(candidate: Any, axis: str) -> tuple[float, float]:
    """The axis's 95 % interval ``(low, high)``; ``(v, v)`` for an axis or a row without one (NaN when the axis
    was not measured)."""
    if has_interval(candidate, axis):
        low, high = (float(candidate.metrics[k]) for k in interval_keys(axis))
        return (low, high) if low <= high else (high, low)
    v = candidate.value(axis)
    return v, v


def overlaps(a: tuple[float, float], b: tuple[float, float], tolerance: float = 1e-9) -> bool:
    """Closed intervals share a point (zero-width ones: equal values, up to a relative ``tolerance``)."""
    if any(math.isnan(x) for x in (*a, *b)):
        return False
    slack = tolerance * max(1.0, *(abs(x) for x in (*a, *b)))
    return a[0] <= b[1] + slack and b[0] <= a[1] + slack


def chance_level(
    candidate: Any, floor: float | None = None, chance: float = CHANCE_UAR, margin: float = CHANCE_MARGIN
) -> str | None:
    """Why the candidate is set aside as not above chance (or a stated UAR floor), or None if it is above."""
    uar = candidate.value("performance")
    if math.isnan(uar):
        return None
    logged = has_interval(candidate, "performance")
    low, high = interval(candidate, "performance")
    if floor is not None and floor > chance:
        if uar <= floor:
            return f"UAR {uar:.3f} is not above the stated floor {floor:g}"
        if logged and low <= floor:
            return f"UAR {LEVEL} interval [{low:.3f}, {high:.3f}] does not clear the stated floor {floor:g}"
    if logged:
        if low <= chance:
            return f"UAR {LEVEL} interval [{low:.3f}, {high:.3f}] does not clear chance {chance:g}"
        return None
    if uar <= chance + margin:
        return (
            f"UAR {uar:.3f} is within {margin:g} of chance {chance:g} (no UAR interval logged: "
            f"the point estimate is used)"
        )
    return None


def indistinguishable(choice: Any, others: Iterable[Any], axes: Sequence[str]) -> list[Any]:
    """The ``others`` (in their order, the choice itself left out) whose interval overlaps the choice's on every
    one of ``axes``; none when ``axes`` is empty."""
    if not axes:
        return []
    mine = {a: interval(choice, a) for a in axes}
    return [o for o in others if o.label != choice.label and all(overlaps(mine[a], interval(o, a)) for a in axes)]


def missing_intervals(candidates: Iterable[Any], axes: Sequence[str]) -> list[str]:
    """``label (axis, ...)`` for each row lacking an interval on an axis that should have one (not sustainability)."""
    out = []
    for c in candidates:
        lacking = [a for a in axes if interval_keys(a) and not has_interval(c, a) and not math.isnan(c.value(a))]
        if lacking:
            out.append(f"{c.label} ({', '.join(lacking)})")
    return out


def interval_record(candidate: Any, axes: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Per axis: the point value, the interval and whether it was logged (False: the point value stands in)."""
    out = {}
    for a in axes:
        low, high = interval(candidate, a)
        out[a] = {
            "value": _finite(candidate.value(a)),
            "ci_low": _finite(low),
            "ci_high": _finite(high),
            "interval": has_interval(candidate, a),
        }
    return out


def _finite(v: Any) -> float | None:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None
