"""The run configuration is one schema: files, ``--set`` overrides and study files read it by the same rules, every
setting is reachable by its dotted name, and a bad value is an error naming the file and the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from trustser.config_schema import (
    from_mapping,
    leaf_fields,
    load_run_config,
    split_assignments,
    to_mapping,
    with_assignments,
)
from trustser.errors import ConfigError
from trustser.run_config import RunConfig

ROOT = Path(__file__).resolve().parents[1]


def test_every_leaf_setting_has_a_dotted_key_and_the_nested_sections_are_flattened():
    keys = [f.key for f in leaf_fields(RunConfig)]
    assert "train.lr" in keys and "trust.snr_db" in keys and "precision" in keys and "backbone" in keys
    assert "train" not in keys and "trust" not in keys  # sections are not leaves
    assert len(keys) == len(set(keys))


def test_a_config_round_trips_through_its_yaml_shape():
    config = RunConfig(corpus_options=(("merge_excited", "false"),))
    assert from_mapping(RunConfig, to_mapping(config)) == config


def _other_value(field) -> str:
    """A value for ``field``, as command-line text, that differs from its default."""
    from trustser.config_schema import _optional_of

    special = {
        "schedule": "paper",
        "pooling": "last",
        "precision": "bf16",
        "feature_memory": "disk",
        "attacks": "fgsm",
        "sweep_attacks": "fgsm,gaussian",
        "corruptions": "white_snr10",
        "backbone": "apc",
        "dataset": "crema_d",
        "folds": "1,3",
        "corpus_options": "merge_excited=false",
        "sweep_snrs": "40,45",
        "model_from": "best_validation",
        "device": "cpu",
    }
    name = field.key.rsplit(".", 1)[-1]
    if name in special:
        return special[name]
    kind = _optional_of(field.type) or field.type
    if kind is bool:
        return "false" if field.default is True else "true"
    if kind is int:
        return str((field.default or 0) + 2)
    if kind is float:
        return str((field.default or 1.25) * 2)
    return "somewhere"


def test_every_leaf_setting_can_be_set_by_its_dotted_key():
    """Each field, set to a value other than its default (as text, as a command line gives it), arrives."""
    for field in leaf_fields(RunConfig):
        config = with_assignments(RunConfig(), [f"{field.key}={_other_value(field)}"])
        value = config
        for part in field.key.split("."):
            value = getattr(value, part)
        if not field.key.endswith("model_from"):  # one allowed value today: reachable, but not a change
            assert value != field.default, field.key


def test_unknown_keys_and_bad_values_name_the_key_and_what_is_allowed(tmp_path):
    with pytest.raises(ConfigError, match=r"--set: train\.lrr: unknown setting"):
        with_assignments(RunConfig(), ["train.lrr=1"])
    with pytest.raises(ConfigError, match=r"did you mean train\.lr"):
        with_assignments(RunConfig(), ["lr=1e-3"])
    with pytest.raises(ConfigError, match=r"train\.schedule must be one of converge, paper"):
        with_assignments(RunConfig(), ["train.schedule=fast"])
    with pytest.raises(ConfigError, match=r"trust\.attacks.*'fgm'.*fgsm"):
        with_assignments(RunConfig(), ["trust.attacks=[fgm]"])
    with pytest.raises(ConfigError, match=r"trust\.sweep_attacks.*'pgdd'.*fgsm"):
        with_assignments(RunConfig(), ["trust.sweep_attacks=[pgdd]"])
    with pytest.raises(ConfigError, match=r"precision.*'fp8'.*bf16"):
        with_assignments(RunConfig(), ["precision=fp8"])
    with pytest.raises(ConfigError, match=r"train\.epochs: expected a whole number, got 'many'"):
        with_assignments(RunConfig(), ["train.epochs=many"])
    path = tmp_path / "run.yaml"
    path.write_text("train:\n  lr: fast\n")
    with pytest.raises(ConfigError, match=rf"{path}: train\.lr: expected a number"):
        load_run_config(path)
    path.write_text("trust: [fgsm]\n")
    with pytest.raises(ConfigError, match=rf"{path}: trust: expected a mapping"):
        load_run_config(path)


def test_overrides_apply_in_order_and_keep_the_rest():
    config = with_assignments(RunConfig(), split_assignments(["train.lr=1e-3 trust.snr_db=40", "train.lr=2e-3"]))
    assert config.train.lr == 2e-3 and config.trust.snr_db == 40.0
    assert config.train.batch_size == RunConfig().train.batch_size


def test_empty_assignments_are_skipped_when_asked_so_mlproject_defaults_stay_the_schemas():
    config = with_assignments(RunConfig(), ["train.lr=", "backbone=apc"], skip_empty=True)
    assert config.train.lr == RunConfig().train.lr and config.backbone == "apc"


@pytest.mark.parametrize("path", sorted((ROOT / "configs").glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_preset_loads_and_starts_with_the_command_that_uses_it(path):
    first = path.read_text().splitlines()[0]
    assert first.startswith("# Used as:") and f"configs/{path.name}" in first, first
    load_run_config(path)


def test_the_paper_preset_is_the_methods_recipe():
    config = load_run_config(ROOT / "configs" / "paper.yaml")
    assert config.train.schedule == "paper" and config.train.epochs == 30 and config.train.standardize is False
    assert config.train.lr == 5e-4 and config.train.batch_size == 64 and config.trust.snr_db == 45.0


STUDY_MANAGED = {
    "backbone": "searched (search.backbone)",
    "experiment": "the study's MLflow experiment",
    "progress": "studies run without progress bars",
}


def test_every_leaf_setting_is_reachable_from_a_study_file():
    """The fixed part of a study file is the run schema: each setting given there arrives in the trials' configs."""
    from trustser.study.space import parse_space

    base = {"dataset": "emodb", "search": {"backbone": ["apc"]}, "objectives": {"performance": "maximize"}}
    for field in leaf_fields(RunConfig):
        if field.key in STUDY_MANAGED:
            continue
        value = with_assignments(RunConfig(), [f"{field.key}={_other_value(field)}"])
        for part in field.key.split("."):
            value = getattr(value, part)
        raw = dict(base)
        *sections, leaf = field.key.split(".")
        target = raw
        for section in sections:
            target = target.setdefault(section, {})
        target[leaf] = (
            list(value)
            if isinstance(value, tuple) and not field.key.endswith("corpus_options")
            else (dict(value) if field.key.endswith("corpus_options") else value)
        )
        config = parse_space(raw).run_config({"backbone": "apc"})
        got = config
        for part in field.key.split("."):
            got = getattr(got, part)
        assert got == value, field.key


def test_a_study_file_with_a_bad_run_setting_fails_at_load_naming_the_file_and_key():
    from trustser.study.space import parse_space

    base = {"dataset": "emodb", "search": {"backbone": ["apc"]}, "objectives": {"performance": "maximize"}}
    with pytest.raises(ConfigError, match=r"s\.yaml: .*trust\.attacks.*'fgm'"):
        parse_space({**base, "trust": {"attacks": ["fgm"]}}, "s.yaml")
    with pytest.raises(ConfigError, match=r"s\.yaml: precision.*'fp8'"):
        parse_space({**base, "precision": "fp8"}, "s.yaml")


@pytest.mark.parametrize("path", sorted((ROOT / "studies").rglob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_study_file_loads(path):
    from trustser.study.scenarios import load_scenario
    from trustser.study.space import load_space

    (load_scenario if "scenarios" in path.parts else load_space)(path)


def test_the_cli_precision_choices_are_the_extractions():
    """``trustser.cli_run`` lists them without importing torch; they must stay the ones extraction accepts."""
    from trustser.cli_run import PRECISIONS
    from trustser.features import PRECISIONS as EXTRACTION_PRECISIONS

    assert set(PRECISIONS) == set(EXTRACTION_PRECISIONS)


def test_only_the_swept_attacks_run_at_every_sweep_snr_the_others_at_the_operating_point():
    trust = RunConfig().trust
    assert trust.attack_snrs("fgsm") == trust.attack_snrs("gaussian") == (45.0,)  # no sweep unless asked for
    fgsm = with_assignments(RunConfig(), ["trust.sweep_attacks=fgsm"]).trust
    assert fgsm.attack_snrs("fgsm") == (45.0, 30.0, 35.0, 40.0, 50.0, 55.0, 60.0)  # the operating point first
    assert fgsm.attack_snrs("gaussian") == fgsm.attack_snrs("pgd") == (45.0,)
    swept = with_assignments(RunConfig(), ["trust.sweep_attacks=[fgsm,gaussian]", "trust.sweep_snrs=[40,45]"]).trust
    assert swept.attack_snrs("gaussian") == (45.0, 40.0) and swept.attack_snrs("pgd") == (45.0,)


def test_sweeping_an_attack_that_does_not_run_is_an_error_naming_it_when_the_run_starts():
    from trustser.experiment import run_experiment

    config = with_assignments(RunConfig(), ["trust.sweep_attacks=pgd"])  # --pgd may still add it: no error yet
    with pytest.raises(ConfigError, match=r"sweep_attacks: 'pgd' is not among the attacks run.*--pgd"):
        run_experiment(config)
    with_assignments(config, ["trust.attacks=[fgsm,pgd]"]).trust.check_sweep()  # added: fine


def test_configurations_that_cannot_sweep_keep_their_hash_and_a_frozen_backbone_ignores_top_lr():
    from trustser.run_config import TrainConfig, config_hash

    at_45 = with_assignments(RunConfig(), ["trust.sweep_snrs=[45]"])
    assert config_hash(at_45) == config_hash(with_assignments(at_45, ["trust.sweep_attacks=fgsm"]))
    assert config_hash(RunConfig()) != config_hash(with_assignments(RunConfig(), ["trust.sweep_attacks=fgsm"]))
    assert config_hash(RunConfig(train=TrainConfig(top_lr=5e-5))) == config_hash(RunConfig())
    tuned = RunConfig(unfreeze_top=1)
    assert config_hash(RunConfig(unfreeze_top=1, train=TrainConfig(top_lr=5e-5))) != config_hash(tuned)
