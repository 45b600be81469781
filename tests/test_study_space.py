"""A study space is read from YAML into frozen dataclasses; every mistake names the file and the key."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from trustser.backbones import BACKBONES
from trustser.errors import ConfigError
from trustser.study.space import OBJECTIVES, config_hash, load_space, parse_space

STUDIES = Path(__file__).resolve().parents[1] / "studies"


def write(tmp_path: Path, data, name: str = "space.yaml") -> Path:
    path = tmp_path / name
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data, sort_keys=False))
    return path


def minimal(**changes):
    raw = {
        "dataset": "emodb",
        "search": {"backbone": ["apc", "whisper_tiny"]},
        "objectives": {"performance": "maximize", "sustainability": "minimize"},
    }
    raw.update(changes)
    return raw


def test_default_space_crosses_every_paper_backbone_with_fine_tuning_width_lr_and_pooling():
    space = load_space(STUDIES / "default.yaml")
    assert set(space.choices["backbone"]) == {name for name, spec in BACKBONES.items() if spec.paper is not None}
    assert "whisper_tiny_en" not in space.choices["backbone"] and "hubert_base" not in space.choices["backbone"]
    assert space.choices["unfreeze_top"] == (0, 1)
    assert space.choices["width"] == (64, 128)
    assert space.choices["lr"] == (5e-4, 1e-3)
    assert space.choices["pooling"] == ("weighted", "last")
    assert space.grid_size == 7 * 2 * 2 * 2 * 2
    assert space.dataset == "emodb" and not space.random_init
    assert [(o.name, o.key, o.direction) for o in space.objectives] == [
        ("performance", "test_uar_mean", "maximize"),
        ("privacy", "privacy_gender_accuracy_mean", "minimize"),
        ("safety", "safety_fgsm_asr_mean", "minimize"),
        ("fairness", "fairness_equality_of_odds_mean", "minimize"),
        ("sustainability", "sustainability_gflops", "minimize"),
    ]


def test_quick_space_is_the_two_real_backbones_frozen_or_top_layer_converged_on_one_fold():
    space = load_space(STUDIES / "quick.yaml")
    assert space.choices == {"backbone": ("whisper_tiny_en", "whisper_base"), "unfreeze_top": (0, 1)}
    assert not space.random_init and space.folds == "1" and "epochs" not in dict(space.train)
    config = space.run_config({"backbone": "whisper_base", "unfreeze_top": 0})
    assert config.train.schedule == "converge" and config.train.standardize  # its candidates learn
    assert space.name == "quick"


def test_real_space_is_the_quick_comparison_on_every_fold_with_every_measurement():
    space = load_space(STUDIES / "real.yaml")
    assert space.choices == load_space(STUDIES / "quick.yaml").choices
    assert not space.random_init and space.folds == "all" and dict(space.trust) == {"measure_cost": True}


@pytest.mark.parametrize("name", ["default.yaml", "quick.yaml", "real.yaml"])
def test_each_shipped_space_starts_with_the_command_that_uses_it(name):
    first = (STUDIES / name).read_text().splitlines()[0]
    assert first.startswith("#") and f"trustser study --space studies/{name}" in first


def test_all_excludes_the_english_only_whisper_unless_listed(tmp_path):
    assert "whisper_tiny_en" not in load_space(write(tmp_path, minimal(search={"backbone": "all"}))).choices["backbone"]
    listed = load_space(write(tmp_path, minimal(search={"backbone": ["whisper_tiny_en"]})))
    assert listed.choices["backbone"] == ("whisper_tiny_en",)


@pytest.mark.parametrize(
    "change, key, words",
    [
        ({"search": {"backbone": ["apc", "hubert"]}}, "search.backbone", "unknown backbone 'hubert'"),
        ({"search": {"backbone": []}}, "search.backbone", "empty choice list"),
        ({"search": {"backbone": ["apc"], "width": []}}, "search.width", "empty choice list"),
        ({"search": {"backbone": ["apc"], "pooling": ["mean"]}}, "search.pooling", "unknown pooling 'mean'"),
        ({"search": {"backbone": ["apc"], "dropout": [0.1]}}, "search.dropout", "unknown dimension"),
        ({"search": {"backbone": ["apc"], "unfreeze_top": ["one"]}}, "search.unfreeze_top", "expected int"),
        ({"search": {"width": [64]}}, "search.backbone", "missing"),
        ({"objectives": {"accuracy": "maximize"}}, "objectives.accuracy", "unknown objective 'accuracy'"),
        ({"objectives": {"privacy": "lower"}}, "objectives.privacy", "bad direction 'lower'"),
        ({"objectives": {"privacy": "maximize"}}, "objectives.privacy", "lower-is-better"),
        ({"serach": {}}, "serach", "unknown key"),
        ({"dataset": "librispeech"}, "dataset", "unknown dataset 'librispeech'"),
        ({"dataset": None}, "dataset", "missing"),
        ({"train": {"epochs": 2, "momentum": 0.9}}, "train.momentum", "unknown training setting"),
        ({"train": {"epochs": 0}}, "train.epochs", "must be >= 1"),
        ({"search": {"backbone": ["apc"], "lr": [1e-3]}, "train": {"lr": 5e-4}}, "train.lr", "also a search dimension"),
        ({"sampler": {"kind": "tpe"}}, "sampler.kind", "unknown sampler 'tpe'"),
        ({"trust": {"attack_budget": 3}}, "trust.attack_budget", "unknown trust setting"),
        ({"trust": {"sweep_snrs": 45}}, "trust.sweep_snrs", "expected a list"),
        ({"trust": {"measure_cost": "no"}}, "trust.measure_cost", "expected true or false"),
        ({"random_init": "yes"}, "random_init", "expected true or false"),
    ],
)
def test_a_bad_space_file_names_the_file_and_the_bad_key(tmp_path, change, key, words):
    path = write(tmp_path, minimal(**change), "bad_space.yaml")
    with pytest.raises(ConfigError) as err:
        load_space(path)
    message = str(err.value)
    assert "bad_space.yaml" in message and f"{key}:" in message and words in message


def test_broken_yaml_and_missing_files_are_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_space(write(tmp_path, "search: [unclosed\n"))
    with pytest.raises(ConfigError, match="not found"):
        load_space(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match="expected a mapping"):
        load_space(write(tmp_path, "- just\n- a list\n"))


def test_british_spelling_and_yaml_1_1_exponents_are_accepted(tmp_path):
    space = load_space(
        write(
            tmp_path,
            "dataset: emodb\nsearch:\n  backbone: [apc]\n  lr: [5e-4, 1e-3]\n"
            "objectives:\n  performance: maximise\n  privacy: minimise\n",
        )
    )
    assert space.choices["lr"] == (5e-4, 1e-3)  # PyYAML reads 5e-4 as a string; the space reads it as a float
    assert [o.direction for o in space.objectives] == ["maximize", "minimize"]


def test_space_is_frozen_and_the_grid_is_every_combination_once_in_a_seeded_order():
    space = load_space(STUDIES / "default.yaml")
    with pytest.raises(AttributeError):
        space.dataset = "crema_d"
    grid = space.grid()
    assert len(grid) == space.grid_size
    assert len({tuple(sorted(p.items())) for p in grid}) == space.grid_size
    assert grid == space.grid()
    reseeded = parse_space({**space.to_dict(), "sampler": {"kind": "grid", "seed": 1}})
    assert reseeded.grid() != grid and sorted(map(str, reseeded.grid())) == sorted(map(str, grid))


def test_run_config_takes_fixed_settings_then_the_trial_choices():
    space = load_space(STUDIES / "default.yaml")
    config = space.run_config(
        {"backbone": "tera", "unfreeze_top": 1, "width": 64, "lr": 1e-3, "pooling": "last"}, experiment="exp"
    )
    assert (config.backbone, config.dataset, config.folds, config.unfreeze_top) == ("tera", "emodb", "all", 1)
    assert (config.train.width, config.train.lr, config.train.pooling) == (64, 1e-3, "last")
    assert (config.train.epochs, config.train.batch_size, config.train.seed) == (30, 64, 0)
    assert config.experiment == "exp" and not config.random_init


def test_trust_settings_reach_the_run_config_and_change_the_configuration_identity():
    space = load_space(STUDIES / "quick.yaml")
    config = space.run_config({"backbone": "apc", "unfreeze_top": 0})
    assert config.trust.sweep_snrs == (45.0,) and config.trust.max_attack_clips == 16
    assert not config.trust.measure_cost
    full = space.with_overrides(trust={}).run_config({"backbone": "apc", "unfreeze_top": 0})
    assert config_hash(full) != config_hash(config)


def test_config_hash_identifies_what_is_computed_not_where_it_is_logged():
    space = load_space(STUDIES / "quick.yaml")
    a = space.run_config({"backbone": "apc", "unfreeze_top": 0}, experiment="one")
    b = space.run_config({"backbone": "apc", "unfreeze_top": 0}, experiment="two", progress=True)
    c = space.run_config({"backbone": "apc", "unfreeze_top": 1})
    assert config_hash(a) == config_hash(b) != config_hash(c)
    other_corpus_root = space.with_overrides(data_root="/elsewhere").run_config({"backbone": "apc", "unfreeze_top": 0})
    assert config_hash(other_corpus_root) != config_hash(a)


def test_objectives_registry_holds_the_five_axes_in_table_order():
    assert list(OBJECTIVES) == ["performance", "privacy", "safety", "fairness", "sustainability"]


def test_the_unfrozen_layers_learning_rate_is_a_search_dimension(tmp_path):
    space = load_space(
        write(tmp_path, minimal(search={"backbone": ["whisper_tiny"], "unfreeze_top": [1], "top_lr": [5e-5, 5e-4]}))
    )
    assert len(space.grid()) == 2
    assert sorted(space.run_config(p).train.top_lr for p in space.grid()) == [5e-5, 5e-4]
    with_default = load_space(write(tmp_path, minimal(search={"backbone": ["whisper_tiny"], "top_lr": [None, 5e-5]})))
    assert {space.run_config(p).train.top_lr for p in with_default.grid()} == {None, 5e-5}  # null: the head's lr
