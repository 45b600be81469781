"""Scenario files (the method's Table 5) and the recommendation rule, on hand-made fronts whose answers are worked
out by hand in the comments."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from trustser.errors import ConfigError
from trustser.study.pareto import Candidate, front_to_json, non_dominated
from trustser.study.scenarios import NoCandidateError, load_scenario, normalise, parse_scenario, recommend
from trustser.study.space import OBJECTIVES

SCENARIOS = Path(__file__).resolve().parents[1] / "studies" / "scenarios"


def cand(label, uar, gender_acc, asr, eo, gflops, **metrics) -> Candidate:
    return Candidate(
        label,
        {"backbone": label},
        {"performance": uar, "privacy": gender_acc, "safety": asr, "fairness": eo, "sustainability": gflops},
        metrics=metrics,
    )


# Three configurations whose min-max normalised values are 0, 0.5 or 1 on every axis (1 = best):
#                  performance  privacy  safety  fairness  sustainability
#   tiny               0          0.5      0       1          1
#   small              0.5        1        0.5     0.5        0
#   wavlm              1          0        1       0          0.5
HAND_MADE = [
    cand("tiny", uar=0.60, gender_acc=0.925, asr=0.80, eo=0.10, gflops=2.0),
    cand("small", uar=0.65, gender_acc=0.900, asr=0.70, eo=0.15, gflops=30.0),
    cand("wavlm", uar=0.70, gender_acc=0.950, asr=0.60, eo=0.20, gflops=16.0),
]


def without_limits(name: str):
    scenario = load_scenario(name)
    return parse_scenario({"name": name, "priorities": dict(scenario.priorities)})


def test_shipped_scenarios_hold_the_priorities_of_table_5_and_the_papers_picks():
    table5 = {
        "edge": {
            "performance": "medium",
            "safety": "low",
            "privacy": "low",
            "sustainability": "high",
            "fairness": "medium",
        },
        "cloud": {
            "performance": "high",
            "safety": "medium",
            "privacy": "high",
            "sustainability": "low",
            "fairness": "high",
        },
        "critical": {
            "performance": "high",
            "safety": "high",
            "privacy": "low",
            "sustainability": "low",
            "fairness": "medium",
        },
    }
    picks = {"edge": "whisper_tiny", "cloud": "whisper_small", "critical": "wavlm_base_plus"}
    for name, priorities in table5.items():
        scenario = load_scenario(name)
        assert dict(scenario.priorities) == priorities and scenario.paper_pick == picks[name]
        first = (SCENARIOS / f"{name}.yaml").read_text().splitlines()[0]
        assert first.startswith("#") and f"trustser recommend --scenario {name}" in first
    assert dict(load_scenario("edge").limits) == {"max_gflops": 15.0}


def test_edge_without_limits_picks_tiny_by_score():
    # weights perf 2, privacy 1, safety 1, fairness 2, sustainability 3 (sum 9)
    # tiny 0+0.5+0+2+3 = 5.5/9; small 1+1+0.5+1+0 = 3.5/9; wavlm 2+0+1+0+1.5 = 4.5/9
    rec = recommend(HAND_MADE, without_limits("edge"))
    assert (rec.choice.label, rec.runner_up.label) == ("tiny", "wavlm")
    assert [label for label, _ in rec.scores] == ["tiny", "wavlm", "small"]
    assert rec.scores[0][1] == pytest.approx(5.5 / 9) and rec.scores[2][1] == pytest.approx(3.5 / 9)


def test_edge_hard_limit_leaves_only_configurations_within_15_gflops():
    rec = recommend(HAND_MADE, load_scenario("edge"))
    assert rec.choice.label == "tiny" and rec.runner_up is None
    assert {label for label, _ in rec.excluded} == {"small", "wavlm"}
    assert "breaks max_gflops: 15" in dict(rec.excluded)["small"]
    assert any("excluded by the hard limits: 2 of 3" in r for r in rec.reasons)


def test_cloud_picks_small_and_breaks_the_runner_up_tie_by_the_high_priority_axes():
    # weights perf 3, privacy 3, safety 2, fairness 3, sustainability 1 (sum 12)
    # small 1.5+3+1+1.5+0 = 7/12; tiny 0+1.5+0+3+1 = 5.5/12; wavlm 3+0+2+0+0.5 = 5.5/12 -> a tie for second,
    # decided by the first high-priority axis in canonical order (performance): wavlm 1 > tiny 0
    rec = recommend(HAND_MADE, load_scenario("cloud"))
    assert (rec.choice.label, rec.runner_up.label) == ("small", "wavlm")
    assert [label for label, _ in rec.scores] == ["small", "wavlm", "tiny"]
    assert rec.scores[1][1] == pytest.approx(rec.scores[2][1])


def test_critical_picks_wavlm_and_says_which_priorities_decided():
    # weights perf 3, privacy 1, safety 3, fairness 2, sustainability 1 (sum 10)
    # wavlm 3+0+3+0+0.5 = 6.5/10; small 1.5+1+1.5+1+0 = 5/10; tiny 0+0.5+0+2+1 = 3.5/10
    rec = recommend(HAND_MADE, load_scenario("critical"))
    assert (rec.choice.label, rec.runner_up.label) == ("wavlm", "small")
    # weighted differences wavlm - small: performance +0.15, safety +0.15, sustainability +0.05,
    # fairness -0.10, privacy -0.10
    assert rec.reasons[0].startswith("score 0.650 vs 0.500")
    assert rec.reasons[1].startswith("performance (high)") and rec.reasons[2].startswith("safety (high)")
    assert rec.reasons[3].startswith("sustainability (low)")
    # equal contributions are listed in priority order (high, medium, low)
    assert rec.reasons[4].startswith("runner-up better on fairness (medium): equality of odds 0.150 vs 0.200")
    assert rec.reasons[5].startswith("runner-up better on privacy (low)")


def test_the_answer_does_not_depend_on_the_order_of_the_rows():
    for name in ("edge", "cloud", "critical"):
        answers = {
            (r.choice.label, r.runner_up and r.runner_up.label)
            for rows in itertools.permutations(HAND_MADE)
            for r in [recommend(list(rows), load_scenario(name))]
        }
        assert len(answers) == 1


def test_identical_candidates_are_decided_by_name():
    twins = [cand("b", 0.6, 0.9, 0.7, 0.2, 5.0), cand("a", 0.6, 0.9, 0.7, 0.2, 5.0)]
    rec = recommend(twins, load_scenario("critical"))
    assert (rec.choice.label, rec.runner_up.label) == ("a", "b")
    assert "tied on every axis; decided by name" in rec.reasons[1]


def test_normalisation_is_min_max_direction_aware_and_constant_axes_score_one():
    norm = normalise(HAND_MADE, ["performance", "privacy", "sustainability"])
    assert norm["wavlm"]["performance"] == 1.0 and norm["tiny"]["performance"] == 0.0
    assert norm["small"]["privacy"] == 1.0 and norm["wavlm"]["privacy"] == 0.0  # lower is better
    assert norm["small"]["sustainability"] == 0.0 and norm["tiny"]["sustainability"] == 1.0
    flat = normalise([cand("x", 0.5, 0.9, 0.7, 0.2, 2.0), cand("y", 0.5, 0.9, 0.7, 0.2, 9.0)], ["performance"])
    assert flat["x"]["performance"] == flat["y"]["performance"] == 1.0


# The method's Table 4 (gender-probe acc, FGSM ASR, equality of odds, GFLOPs as printed, i.e. MACs; the min-max
# normalisation is scale-free) with ILLUSTRATIVE average UARs (Table 3 is not in our notes): with these the rule,
# run on the Pareto front, returns the paper's three picks.
TABLE4 = {
    "apc": (0.55, 0.956, 0.882, 0.209, 2.5),
    "tera": (0.57, 0.957, 0.707, 0.205, 12.8),
    "whisper_tiny": (0.60, 0.922, 0.789, 0.166, 2.3),
    "whisper_base": (0.63, 0.976, 0.732, 0.170, 6.0),
    "whisper_small": (0.67, 0.974, 0.610, 0.166, 26.2),
    "wav2vec2_base": (0.63, 0.972, 0.539, 0.164, 41.7),
    "wavlm_base_plus": (0.68, 0.984, 0.579, 0.168, 33.2),
}


def test_on_a_paper_like_front_the_rule_returns_the_papers_picks():
    rows = non_dominated([cand(name, *values) for name, values in TABLE4.items()], tuple(OBJECTIVES.values()))
    front = [r for r in rows if r.pareto]
    assert "apc" not in {r.label for r in front}  # whisper_tiny dominates it
    for name in ("edge", "cloud", "critical"):
        scenario = load_scenario(name)
        assert recommend(front, scenario).choice.label == scenario.paper_pick


def write(tmp_path, raw, name="mine.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def test_a_users_scenario_file_is_accepted_by_path(tmp_path):
    path = write(
        tmp_path,
        {
            "priorities": {
                "performance": "high",
                "privacy": "ignore",
                "safety": "ignore",
                "fairness": "ignore",
                "sustainability": "ignore",
            }
        },
    )
    scenario = load_scenario(str(path))
    assert scenario.name == "mine"
    assert recommend(HAND_MADE, scenario).choice.label == "wavlm"  # only performance counts


@pytest.mark.parametrize(
    "raw, key, words",
    [
        ({"priorities": {"speed": "high"}}, "priorities.speed", "unknown axis"),
        ({"priorities": {"performance": "urgent"}}, "priorities.performance", "bad level 'urgent'"),
        ({"priorities": {"performance": "high"}}, "priorities.privacy", "missing"),
        ({"priorities": {a: "ignore" for a in OBJECTIVES}}, "priorities", "nothing to decide on"),
        (
            {"priorities": {a: "low" for a in OBJECTIVES}, "limits": {"max_watts": 3}},
            "limits.max_watts",
            "unknown limit",
        ),
        (
            {"priorities": {a: "low" for a in OBJECTIVES}, "limits": {"max_gflops": "ten"}},
            "limits.max_gflops",
            "expected a number",
        ),
        ({"priorities": {a: "low" for a in OBJECTIVES}, "deadline": 3}, "deadline", "unknown key"),
    ],
)
def test_a_bad_scenario_file_names_the_file_and_the_key(tmp_path, raw, key, words):
    with pytest.raises(ConfigError) as err:
        load_scenario(write(tmp_path, raw, "bad_scenario.yaml"))
    assert "bad_scenario.yaml" in str(err.value) and f"{key}:" in str(err.value) and words in str(err.value)


def test_unknown_scenario_names_list_the_shipped_ones():
    with pytest.raises(ConfigError, match="unknown scenario 'moon'.*cloud, critical, edge"):
        load_scenario("moon")


def test_a_limit_on_an_unmeasured_metric_excludes_and_a_measured_one_filters(tmp_path):
    raw = {"priorities": dict(load_scenario("edge").priorities), "limits": {"max_latency_ms": 50}}
    scenario = load_scenario(write(tmp_path, raw))
    with pytest.raises(NoCandidateError, match="latency_ms not measured"):
        recommend(HAND_MADE, scenario)
    timed = [
        cand("fast", 0.6, 0.9, 0.7, 0.2, 30.0, sustainability_latency_s=0.020),  # the summary has seconds
        cand("slow", 0.7, 0.9, 0.7, 0.2, 3.0, sustainability_latency_s=0.080),
    ]
    rec = recommend(timed, scenario)
    assert rec.choice.label == "fast" and rec.runner_up is None


def test_cli_recommend_reads_a_front_file_and_prints_json(tmp_path):
    from trustser.cli import main

    front = tmp_path / "pareto.json"
    front.write_text(front_to_json(HAND_MADE, tuple(OBJECTIVES.values()), study="hand"))
    out = CliRunner().invoke(main, ["recommend", "--scenario", "cloud", "--front", str(front), "--json"])
    assert out.exit_code == 0, out.output
    rec = json.loads(out.output)
    assert (rec["scenario"], rec["choice"], rec["runner_up"]) == ("cloud", "small", "wavlm")
    assert rec["reasons"] and rec["scores"][0]["label"] == "small"
    assert rec["indistinguishable"] == [] and rec["excluded"] == []  # no intervals logged: only equal points tie
    out = CliRunner().invoke(main, ["recommend", "--scenario", "critical", "--front", str(front)])
    assert out.exit_code == 0 and out.output.startswith("critical: wavlm  (runner-up: small)")


def test_cli_recommend_json_carries_the_indistinguishable_candidates_and_the_set_aside_ones(tmp_path):
    from trustser.cli import main
    from test_selection_uncertainty import TIES, USELESS

    front = tmp_path / "pareto.json"
    front.write_text(front_to_json([*TIES, USELESS], tuple(OBJECTIVES.values()), study="hand"))
    out = CliRunner().invoke(main, ["recommend", "--scenario", "critical", "--front", str(front), "--json"])
    assert out.exit_code == 0, out.output
    rec = json.loads(out.output)
    assert rec["choice"] == "wavlm" and rec["indistinguishable_on"] == ["performance", "safety"]
    assert [t["label"] for t in rec["indistinguishable"]] == ["small"]
    assert rec["indistinguishable"][0]["intervals"]["performance"] == {
        "value": 0.68,
        "ci_low": 0.64,
        "ci_high": 0.72,
        "interval": True,
    }
    assert rec["excluded"] == [
        {
            "label": "useless",
            "rule": "chance level",
            "why": "UAR 95 % interval [0.210, 0.290] does not clear chance 0.25",
        }
    ]
    # a floor: only wavlm's interval [0.66, 0.74] clears 0.65 (small's and base's reach below it)
    out = CliRunner().invoke(
        main, ["recommend", "--scenario", "critical", "--front", str(front), "--uar-floor", "0.65"]
    )
    assert out.exit_code == 0, out.output
    assert out.output.startswith("critical: wavlm\n") and "does not clear the stated floor 0.65" in out.output
    only_useless = tmp_path / "useless.json"
    only_useless.write_text(front_to_json([USELESS], tuple(OBJECTIVES.values())))
    out = CliRunner().invoke(main, ["recommend", "--scenario", "edge", "--front", str(only_useless)])
    assert out.exit_code == 2 and "no candidate is above chance 0.25" in out.output
