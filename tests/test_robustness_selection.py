"""The robustness axis beside the method's five: an optional sixth objective of a study, an optional priority of a
scenario (a pick that changes when the scenario weighs it), a report column with the ser-tests style verdicts, and
configurations without the corruption suite keeping their config hash."""

from __future__ import annotations

from dataclasses import asdict

import hashlib
import json

import pytest
from click.testing import CliRunner

from trustser.errors import ConfigError
from trustser.run_config import RunConfig, TrustConfig
from trustser.study.pareto import Candidate
from trustser.study.scenarios import load_scenario, parse_scenario, recommend
from trustser.study.space import ALL_OBJECTIVES, OBJECTIVES, config_hash, parse_space

FIVE = {"performance": "high", "privacy": "low", "safety": "medium", "fairness": "medium", "sustainability": "low"}


def cand(label, uar, gender_acc, asr, eo, gflops, flip_rate, **extra) -> Candidate:
    """A row as a study that did not optimise robustness gives it: the five axes as values, robustness in the
    run summary (``robustness_mean``), with its pooled interval."""
    metrics = {
        "robustness_mean": flip_rate,
        "robustness_ci_low": flip_rate - 0.02,
        "robustness_ci_high": flip_rate + 0.02,
        **extra,
    }
    return Candidate(
        label,
        {"backbone": label},
        {"performance": uar, "privacy": gender_acc, "safety": asr, "fairness": eo, "sustainability": gflops},
        metrics=metrics,
    )


# Two configurations: "sharp" is better on performance (high) and fairness, "steady" on safety and robustness.
#                performance  privacy  safety  fairness  sustainability  robustness (flip rate)
#   sharp            1           1       0        1           1           0   (0.60)
#   steady           0           0       1        0           0           1   (0.10)
FRONT = [
    cand("sharp", 0.80, 0.90, 0.50, 0.10, 5.0, flip_rate=0.60),
    cand("steady", 0.74, 0.95, 0.30, 0.20, 13.0, flip_rate=0.10),
]


def test_a_scenario_that_weighs_robustness_picks_the_configuration_whose_answers_survive_corruption():
    # the five axes alone (weights 3, 1, 2, 2, 1 of 9): sharp 3+1+0+2+1 = 7/9, steady 0+0+2+0+0 = 2/9
    assert recommend(FRONT, parse_scenario({"name": "lab", "priorities": FIVE})).choice.label == "sharp"
    # a call centre: codecs and noise first (robustness high), accuracy and fairness low: weights 1, 1, 2, 1, 1, 3
    # of 9: sharp 1+1+0+1+1+0 = 4/9, steady 0+0+2+0+0+3 = 5/9
    call_centre = {**FIVE, "performance": "low", "fairness": "low"}
    rec = recommend(FRONT, parse_scenario({"name": "call_centre", "priorities": {**call_centre, "robustness": "high"}}))
    assert rec.choice.label == "steady" and rec.runner_up.label == "sharp"
    assert rec.scores[0][1] == pytest.approx(5 / 9)
    assert any(r.startswith("robustness (high): corruption flip rate 0.100 vs 0.600") for r in rec.reasons)
    # the same weights without the robustness priority pick sharp (4/6 vs 2/6): robustness decides
    assert recommend(FRONT, parse_scenario({"name": "x", "priorities": call_centre})).choice.label == "sharp"


def test_robustness_is_optional_in_a_scenario_and_the_shipped_ones_ignore_it():
    for name in ("edge", "cloud", "critical"):
        scenario = load_scenario(name)
        assert "robustness" not in dict(scenario.priorities) and scenario.weight("robustness") == 0
    scenario = parse_scenario({"priorities": {**FIVE, "robustness": "medium"}, "limits": {"max_flip_rate": 0.3}})
    assert "robustness" in scenario.priority_order()
    rec = recommend(FRONT, scenario)
    assert rec.choice.label == "steady" and dict(rec.excluded) == {"sharp": "flip_rate 0.6 breaks max_flip_rate: 0.3"}
    with pytest.raises(ConfigError, match="priorities.robustness"):
        parse_scenario({"priorities": {**FIVE, "robustness": "urgent"}})


def test_a_candidate_without_the_suite_leaves_robustness_out_of_the_score_and_says_so():
    bare = Candidate("bare", {"backbone": "bare"}, {**FRONT[0].values}, metrics={})
    rec = recommend([FRONT[1], bare], parse_scenario({"priorities": {**FIVE, "robustness": "high"}}))
    assert any("not considered (not measured for every candidate): robustness" in r for r in rec.reasons)


SPACE = {
    "name": "robust",
    "dataset": "emodb",
    "folds": "1",
    "random_init": True,
    "search": {"backbone": ["whisper_tiny", "apc"]},
    "objectives": {
        "performance": "maximize",
        "privacy": "minimize",
        "safety": "minimize",
        "fairness": "minimize",
        "sustainability": "minimize",
        "robustness": "minimize",
    },
}


def test_a_study_may_add_robustness_as_a_sixth_objective_when_its_runs_measure_it():
    with pytest.raises(ConfigError, match=r"objectives.robustness: needs the corruption suite"):
        parse_space(SPACE)
    with pytest.raises(ConfigError, match=r"trust.corruptions: unknown corruption 'vinyl'"):
        parse_space({**SPACE, "trust": {"corruptions": ["vinyl"]}})
    space = parse_space({**SPACE, "trust": {"corruptions": ["standard"]}})
    assert [o.name for o in space.objectives][-1] == "robustness"
    assert ALL_OBJECTIVES["robustness"].key == "robustness_mean" and "robustness" not in OBJECTIVES
    assert space.run_config({"backbone": "apc"}).trust.corruptions == ("standard",)
    with pytest.raises(ConfigError, match="maximize"):
        parse_space(
            {
                **SPACE,
                "objectives": {**SPACE["objectives"], "robustness": "maximize"},
                "trust": {"corruptions": ["standard"]},
            }
        )


def test_a_study_optimises_the_sixth_objective_and_its_front_carries_it(tmp_path, monkeypatch):
    from trustser.study.pareto import front_rows
    from trustser.study.runner import run_study

    monkeypatch.chdir(tmp_path)
    flips = {"whisper_tiny": 0.2, "apc": 0.5}

    def runner(config):
        assert config.trust.corruptions == ("white_snr10", "telephone")
        return {
            "test_uar_mean": 0.6,
            "privacy_gender_accuracy_mean": 0.9,
            "safety_fgsm_asr_mean": 0.4,
            "fairness_equality_of_odds_mean": 0.1,
            "sustainability_gflops": 5.0,
            "robustness_mean": flips[config.backbone],
        }

    space = parse_space({**SPACE, "trust": {"corruptions": ["white_snr10", "telephone"]}})
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    result = run_study(space, storage=storage, runner=runner)
    assert result.evaluated == 2 and result.failed == 0
    import optuna

    study = optuna.load_study(study_name="robust", storage=storage)
    assert len(study.directions) == 6
    (row,) = front_rows(study)  # equal on five axes, whisper_tiny flips less: it alone is on the front
    assert row.params["backbone"] == "whisper_tiny" and row.values["robustness"] == 0.2


def test_configurations_without_the_suite_keep_the_config_hash_they_had_before_it_existed():
    config = RunConfig()
    values = asdict(config)
    for key in ("experiment", "progress", "cache_dir", "offline", "log_model", "feature_memory", "device"):
        values.pop(key, None)
    values["trust"].pop("corruptions")
    values.pop("test_dataset"), values.pop("test_data_root")  # cross-corpus settings came later still
    values["train"].pop("top_lr")  # and the unfrozen layers' learning rate after them
    before = hashlib.sha256(json.dumps(values, sort_keys=True, default=str).encode()).hexdigest()[:16]
    assert config_hash(config) == before
    assert config_hash(RunConfig(trust=TrustConfig(corruptions=("telephone",)))) != before


def test_an_unknown_corruption_is_a_one_line_error_naming_it():
    from trustser.cli import main

    out = CliRunner().invoke(main, ["run", "--corruptions", "white_snr10,vinyl", "--no-progress"])
    assert out.exit_code == 2 and "unknown corruption 'vinyl'" in out.output and "standard" in out.output
    with pytest.raises(ConfigError, match="unknown corruption 'vinyl'"):
        TrustConfig(corruptions=("vinyl",))


def test_the_report_shows_the_robustness_column_and_marks_each_row_pass_or_fail(tmp_path):
    from trustser.report import write_report

    rows = [
        cand(
            "sharp",
            0.80,
            0.90,
            0.50,
            0.10,
            5.0,
            0.60,
            fairness_equality_of_odds_pass=1.0,
            robustness_pass=0.0,
            robustness_white_snr10_pass=1.0,
            robustness_telephone_pass=0.0,
            robustness_telephone_flip_rate_pass=0.0,
        ),
        cand(
            "steady",
            0.74,
            0.95,
            0.30,
            0.20,
            13.0,
            0.10,
            fairness_equality_of_odds_pass=0.0,
            robustness_pass=1.0,
            robustness_white_snr10_pass=1.0,
            robustness_telephone_pass=1.0,
        ),
    ]
    files = write_report(rows, tmp_path / "report", scenarios=())
    text = files.markdown.read_text()
    assert "corruption flip rate %" in text and "verdicts vs random models" in text
    assert "fairness pass; robustness 1 of 2 pass (fail: telephone)" in text
    assert "fairness fail; robustness 2 of 2 pass" in text
    assert "60.0 [58.0–62.0]" in text  # the flip rate with its interval
