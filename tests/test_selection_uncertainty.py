"""Selection that knows its limits: a model at chance never wins a scenario, and the pick names the candidates its
data can't separate from it (``trustser.study.uncertainty_rules``), on hand-made fronts worked out in the comments."""

from __future__ import annotations

import pytest

from trustser.study.pareto import Candidate, front_to_csv, set_aside_chance_level
from trustser.study.scenarios import SHIPPED, NoCandidateError, load_scenario, parse_scenario, recommend
from trustser.study.space import OBJECTIVES
from trustser.study.uncertainty_rules import (
    CHANCE_UAR,
    chance_level,
    has_interval,
    indistinguishable,
    interval,
    overlaps,
)

BASE = {
    "performance": "test_uar",
    "privacy": "privacy_gender_accuracy",
    "safety": "safety_fgsm_asr",
    "fairness": "fairness_equality_of_odds",
}


def cand(label, uar, gender_acc, asr, eo, gflops, **intervals) -> Candidate:
    """A row; ``performance=(low, high)`` ... become the summary's ``test_uar_ci_low`` / ``_ci_high`` keys."""
    metrics = {}
    for axis, (low, high) in intervals.items():
        metrics[f"{BASE[axis]}_ci_low"], metrics[f"{BASE[axis]}_ci_high"] = low, high
    return Candidate(
        label,
        {"backbone": label},
        {"performance": uar, "privacy": gender_acc, "safety": asr, "fairness": eo, "sustainability": gflops},
        metrics=metrics,
    )


# Useful models (as in test_scenarios.HAND_MADE) and one that learned nothing: at chance its predictions ignore the
# speaker and the noise, so it scores the best possible privacy, ASR 0 and equality of odds 0, and the least compute.
USEFUL = [
    cand("tiny", 0.60, 0.925, 0.80, 0.10, 2.0, performance=(0.56, 0.64)),
    cand("small", 0.65, 0.900, 0.70, 0.15, 30.0, performance=(0.61, 0.69)),
    cand("wavlm", 0.70, 0.950, 0.60, 0.20, 16.0, performance=(0.66, 0.74)),
]
USELESS = cand("useless", 0.25, 0.5, 0.0, 0.0, 1.0, performance=(0.21, 0.29))


def test_the_logged_interval_is_read_from_the_summary_and_a_row_without_one_falls_back_to_its_point():
    row = USEFUL[0]
    assert has_interval(row, "performance") and interval(row, "performance") == (0.56, 0.64)
    assert not has_interval(row, "safety") and interval(row, "safety") == (0.80, 0.80)
    assert not has_interval(row, "sustainability") and interval(row, "sustainability") == (2.0, 2.0)  # counted
    assert overlaps((0.1, 0.2), (0.2, 0.3)) and not overlaps((0.1, 0.2), (0.21, 0.3))  # closed: touching counts
    assert overlaps((2.0, 2.0), (2.0, 2.0)) and not overlaps((2.0, 2.0), (2.3, 2.3))  # zero width: equality


def test_chance_rule_judges_the_interval_and_without_one_the_point_with_a_margin():
    assert CHANCE_UAR == 0.25  # four emotion classes
    assert chance_level(USELESS) == "UAR 95 % interval [0.210, 0.290] does not clear chance 0.25"
    assert chance_level(cand("lucky", 0.40, 0.9, 0.5, 0.1, 2.0, performance=(0.24, 0.56))) is not None  # too wide
    assert chance_level(cand("fine", 0.40, 0.9, 0.5, 0.1, 2.0, performance=(0.30, 0.50))) is None
    no_interval = chance_level(cand("old", 0.26, 0.9, 0.5, 0.1, 2.0))
    assert no_interval.startswith("UAR 0.260 is within 0.02 of chance 0.25") and "point estimate" in no_interval
    assert chance_level(cand("old", 0.30, 0.9, 0.5, 0.1, 2.0)) is None
    # a stated floor: the point, then the interval, must clear it; a floor below chance changes nothing
    assert chance_level(USEFUL[0], floor=0.62) == "UAR 0.600 is not above the stated floor 0.62"
    assert (
        chance_level(USEFUL[1], floor=0.62) == "UAR 95 % interval [0.610, 0.690] does not clear the stated floor 0.62"
    )
    assert chance_level(USEFUL[2], floor=0.62) is None and chance_level(USELESS, floor=0.1) is not None


@pytest.mark.parametrize("name", SHIPPED)
def test_a_chance_level_model_that_would_win_every_shipped_scenario_never_wins_and_is_listed_as_excluded(
    name, monkeypatch
):
    scenario = load_scenario(name)
    front = [*USEFUL, USELESS]
    with monkeypatch.context() as m:  # without the chance rule it would win: best on every axis but UAR
        m.setattr("trustser.study.scenarios.chance_level", lambda c, floor=None: None)
        assert recommend(front, scenario).choice.label == "useless"
    rec = recommend(front, scenario)
    assert rec.choice.label != "useless" and "useless" not in dict(rec.scores)
    assert dict(rec.excluded)["useless"] == "UAR 95 % interval [0.210, 0.290] does not clear chance 0.25"
    assert rec.chance_level == ("useless",)
    assert any(r.startswith("set aside as not above chance") and "useless" in r for r in rec.reasons)
    excluded = {e["label"]: e for e in rec.to_dict()["excluded"]}
    assert excluded["useless"]["rule"] == "chance level"


def test_a_chance_level_row_without_an_interval_is_set_aside_by_its_point_estimate_and_the_reason_says_so():
    bare = cand("useless", 0.25, 0.5, 0.0, 0.0, 1.0)  # an older study: no interval keys
    rec = recommend([*USEFUL, bare], load_scenario("critical"))
    assert rec.choice.label == "wavlm" and "no UAR interval logged" in dict(rec.excluded)["useless"]


def test_a_study_where_nothing_learned_says_so_instead_of_picking():
    front = [USELESS, cand("also", 0.26, 0.6, 0.1, 0.05, 2.0)]
    with pytest.raises(
        NoCandidateError,
        match=r"no candidate is above chance 0\.25: the study's models learned "
        r"nothing usable.*useless: UAR 95 % interval.*also: UAR 0\.260",
    ):
        recommend(front, load_scenario("cloud"))
    with pytest.raises(NoCandidateError, match="no candidate clears the UAR floor 0.8 .tiny: UAR 0.600 is not above"):
        recommend(USEFUL, load_scenario("cloud"), uar_floor=0.8)


def test_chance_level_and_hard_limit_exclusions_are_listed_together():
    rec = recommend([*USEFUL, USELESS], load_scenario("edge"))  # max_gflops 15 drops small and wavlm
    assert rec.choice.label == "tiny"
    assert [label for label, _ in rec.excluded] == ["useless", "small", "wavlm"]
    assert [e["rule"] for e in rec.to_dict()["excluded"]] == ["chance level", "hard limit", "hard limit"]
    assert any("excluded by the hard limits: 2 of 4" in r for r in rec.reasons)


def test_the_front_is_recomputed_without_chance_level_rows_which_stay_flagged():
    # "barely" (UAR 0.29 [0.27, 0.31]) is above chance, but "lucky" (UAR 0.30, interval reaching 0.24) beats it on
    # every axis: only with "lucky" set aside does "barely" come back onto the front
    lucky = cand("lucky", 0.30, 0.5, 0.0, 0.0, 1.0, performance=(0.24, 0.36))
    barely = cand("barely", 0.29, 0.6, 0.1, 0.1, 2.0, performance=(0.27, 0.31))
    rows = {r.label: r for r in set_aside_chance_level([lucky, barely, *USEFUL], tuple(OBJECTIVES.values()))}
    assert rows["lucky"].pareto and rows["lucky"].excluded.startswith("UAR 95 % interval [0.240, 0.360]")
    assert rows["barely"].pareto and rows["barely"].excluded is None
    table = front_to_csv(list(rows.values()), tuple(OBJECTIVES.values())).splitlines()
    assert table[0].endswith(",excluded") and "does not clear chance" in table[1] and table[2].endswith(",")


# critical: high = performance, safety; medium = fairness; low = privacy, sustainability.
#            UAR              gender acc        FGSM ASR          EO                GFLOPs
#   wavlm    .70 [.66,.74]    .95 [.93,.97]     .60 [.55,.65]     .20 [.15,.25]     16
#   small    .68 [.64,.72]    .90 [.88,.92]     .63 [.58,.68]     .18 [.13,.23]     30   overlaps on both high axes
#   base     .69 [.65,.73]    .93 [.91,.95]     .75 [.71,.79]     .19 [.14,.24]      6   all but safety (high)
#   tiny     .60 [.57,.63]    .92 [.90,.94]     .80 [.76,.84]     .10 [.08,.12]      2   privacy (low) only
# scores (weights 3,1,3,2,1 over min-max normalised axes): wavlm .650, small .635, base .491, tiny .360
TIES = [
    cand(
        "wavlm",
        0.70,
        0.95,
        0.60,
        0.20,
        16.0,
        performance=(0.66, 0.74),
        privacy=(0.93, 0.97),
        safety=(0.55, 0.65),
        fairness=(0.15, 0.25),
    ),
    cand(
        "small",
        0.68,
        0.90,
        0.63,
        0.18,
        30.0,
        performance=(0.64, 0.72),
        privacy=(0.88, 0.92),
        safety=(0.58, 0.68),
        fairness=(0.13, 0.23),
    ),
    cand(
        "base",
        0.69,
        0.93,
        0.75,
        0.19,
        6.0,
        performance=(0.65, 0.73),
        privacy=(0.91, 0.95),
        safety=(0.71, 0.79),
        fairness=(0.14, 0.24),
    ),
    cand(
        "tiny",
        0.60,
        0.92,
        0.80,
        0.10,
        2.0,
        performance=(0.57, 0.63),
        privacy=(0.90, 0.94),
        safety=(0.76, 0.84),
        fairness=(0.08, 0.12),
    ),
]


def test_indistinguishable_needs_overlap_on_every_decisive_axis():
    wavlm, small, base, tiny = TIES
    assert indistinguishable(wavlm, TIES, ["performance", "safety"]) == [small]
    assert indistinguishable(wavlm, TIES, ["performance"]) == [small, base]  # the choice itself is left out
    assert indistinguishable(wavlm, TIES, ["privacy"]) == [base, tiny]
    assert indistinguishable(wavlm, TIES, []) == []


def test_recommend_names_the_candidates_tied_on_the_high_priority_axes_but_not_those_tied_on_lower_ones():
    rec = recommend(TIES, load_scenario("critical"))
    assert (rec.choice.label, rec.runner_up.label) == ("wavlm", "small")
    assert rec.decisive_axes == ("performance", "safety")
    assert rec.indistinguishable == ("small",)  # base differs on safety; tiny overlaps on privacy (low) only
    assert (
        "statistically indistinguishable from the pick on performance (high), safety (high) (95 % intervals "
        "overlap on each): small — treat as a tie"
    ) in rec.reasons
    data = rec.to_dict()
    assert [t["label"] for t in data["indistinguishable"]] == ["small"]
    assert data["indistinguishable"][0]["intervals"]["safety"] == {
        "value": 0.63,
        "ci_low": 0.58,
        "ci_high": 0.68,
        "interval": True,
    }
    assert data["indistinguishable_on"] == ["performance", "safety"]
    assert data["choice_intervals"]["performance"]["ci_low"] == 0.66


def test_without_a_high_priority_axis_the_highest_level_present_decides():
    scenario = parse_scenario(
        {
            "name": "calm",
            "priorities": {
                "performance": "medium",
                "privacy": "low",
                "safety": "medium",
                "fairness": "low",
                "sustainability": "ignore",
            },
        }
    )
    assert scenario.decisive_axes() == ["performance", "safety"]
    assert recommend(TIES, scenario).decisive_axes == ("performance", "safety")
    assert load_scenario("cloud").decisive_axes() == ["performance", "privacy", "fairness"]


def test_counted_gflops_tie_only_when_equal():
    # edge: sustainability is the one high axis; head width does not change the counted GFLOPs
    rows = [
        cand("tiny w=128", 0.60, 0.92, 0.80, 0.10, 2.0, performance=(0.57, 0.63)),
        cand("tiny w=256", 0.61, 0.92, 0.80, 0.10, 2.0, performance=(0.58, 0.64)),
        cand("base", 0.66, 0.92, 0.70, 0.10, 6.0, performance=(0.62, 0.70)),
    ]
    rec = recommend(rows, load_scenario("edge"))
    assert rec.choice.label == "tiny w=256" and rec.indistinguishable == ("tiny w=128",)
    assert any("sustainability is counted, not sampled: only equal values tie" in r for r in rec.reasons)


def test_rows_without_interval_keys_still_work_and_compare_point_values():
    rows = [
        cand("a", 0.60, 0.92, 0.70, 0.10, 2.0),
        cand("b", 0.60, 0.92, 0.70, 0.10, 2.0),
        cand("c", 0.65, 0.92, 0.60, 0.1, 9.0),
    ]
    rec = recommend(rows, load_scenario("critical"))
    assert rec.choice.label == "c" and rec.indistinguishable == ()
    tie_line = next(r for r in rec.reasons if "indistinguishable" in r)
    assert "no interval logged for c (performance, safety), a (performance, safety)" in tie_line
    assert rec.to_dict()["choice_intervals"]["performance"] == {
        "value": 0.65,
        "ci_low": 0.65,
        "ci_high": 0.65,
        "interval": False,
    }
    assert recommend(rows[:2], load_scenario("critical")).indistinguishable == ("b",)  # equal points tie
