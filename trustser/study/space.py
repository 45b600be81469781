"""A study's search space and objectives, read from a YAML file in ``studies/`` and validated on load.

The file says which configurations to try (a grid of categorical choices: backbone, fine-tuning depth, head width,
learning rate, pooling), what stays fixed (corpus, folds, epochs, the trust measurements' settings ...) and which
trust axes to optimise. Every
problem is reported as a ConfigError naming the file and the key, e.g.
``studies/x.yaml: search.backbone: unknown backbone 'hubert'; known: apc, ...``.

Objectives are the five trust axes of the method; each reads one key of ``run_experiment``'s summary and has a
fixed direction (the file states it too, so that a reader sees it, and a contradiction is an error). A sixth,
optional axis, ``robustness: minimize`` (the mean flip rate over the corruption suite), may be added beside them; it
needs ``trust: {corruptions: [standard]}`` (or named corruptions) so that the runs measure it.

The sustainability objective (``sustainability_gflops``) is counted once per backbone with the method's head
(``trustser.metrics.sustainability``: width 128, learned weighted-sum pooling), whatever ``width`` and ``pooling``
the configuration chose: the count does not see them. The head is small beside the backbone: on a 6 s clip it is
frames x (hidden x width + width^2) MACs, measured 0.020 GMACs of Whisper Tiny's 2.62 and 0.049 of APC's 2.51 at
width 128. Width 256 would add about 0.03 (Whisper Tiny) to 0.07 (APC) GMACs, up to 3 % on the smallest backbones
and less on the others; "last" pooling only skips the layer weighting (layers x hidden MACs per frame). So
configurations differing only in head width or pooling tie on this axis, a few percent from their true cost.
"""

from __future__ import annotations

import itertools
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping


from trustser.errors import ConfigError
from trustser.run_config import (  # noqa: F401 (config_hash re-exported: a trial's identity)
    POOLINGS,
    SCHEDULES,
    RunConfig,
    TrainConfig,
    TrustConfig,
    config_hash,
)

from trustser.axes import (  # noqa: F401 (re-exported: a study optimises these axes)
    ALL_OBJECTIVES,
    MAXIMIZE,
    MINIMIZE,
    OBJECTIVES,
    OPTIONAL_OBJECTIVES,
    Objective,
)

_DIRECTION_SPELLINGS = {"maximize": MAXIMIZE, "maximise": MAXIMIZE, "minimize": MINIMIZE, "minimise": MINIMIZE}

# `backbone: all` means the method's comparison: every backbone registered with the paper's figures (its seven).
# Others (whisper_tiny_en, hubert_base, any added later) are listed by name, so adding a backbone leaves every
# existing study's grid as it was.

# What a search dimension may vary, and the type each choice must have. Booleans are rejected for int/float keys.
SEARCHABLE: dict[str, type] = {
    "backbone": str,
    "unfreeze_top": int,
    "width": int,
    "lr": float,
    "top_lr": float,
    "pooling": str,
    "epochs": int,
    "batch_size": int,
    "seed": int,
    "min_steps": int,
    "schedule": str,
    "max_epochs": int,
    "patience": int,
    "standardize": bool,
}
TRAIN_KEYS = (
    "epochs",
    "batch_size",
    "lr",
    "width",
    "pooling",
    "seed",
    "min_steps",
    "schedule",
    "max_epochs",
    "patience",
    "standardize",
    "top_lr",
)  # TrainConfig fields
TOP_LEVEL = (
    "name",
    "dataset",
    "data_root",
    "folds",
    "corpus_options",
    "random_init",
    "weights",
    "max_seconds",
    "seeds",
    "train",
    "trust",
    "search",
    "objectives",
    "sampler",
)
SAMPLERS = ("grid", "random", "nsga2")


@dataclass(frozen=True)
class SamplerSpec:
    """``grid``: every configuration once, in a seeded shuffled order; ``random``/``nsga2``: Optuna's seeded
    samplers over the same categorical choices (repeats are answered from earlier results, not retrained)."""

    kind: str = "grid"
    seed: int = 0


@dataclass(frozen=True)
class StudySpace:
    name: str
    dataset: str
    search: tuple[tuple[str, tuple[Any, ...]], ...]  # (dimension, choices), in file order
    objectives: tuple[Objective, ...]
    data_root: str | None = None
    folds: str = "all"
    corpus_options: tuple[tuple[str, str], ...] = ()
    random_init: bool = False
    weights: str | None = None
    max_seconds: float | None = None
    seeds: int = RunConfig.seeds  # training seeds per fold (the schema's default)
    train: tuple[tuple[str, Any], ...] = ()  # fixed TrainConfig values not searched
    trust: tuple[tuple[str, Any], ...] = ()  # TrustConfig settings (attacks, SNRs, probes, cost measurement)
    run: tuple[tuple[str, Any], ...] = ()  # other RunConfig settings fixed by the file (precision, feature_memory ...)
    sampler: SamplerSpec = field(default_factory=SamplerSpec)
    source: str = "<memory>"  # the file it came from, for messages

    @property
    def choices(self) -> dict[str, tuple[Any, ...]]:
        return dict(self.search)

    @property
    def grid_size(self) -> int:
        size = 1
        for _, values in self.search:
            size *= len(values)
        return size

    def grid(self) -> list[dict[str, Any]]:
        """Every configuration, shuffled with the sampler's seed (so a partial run covers the space evenly)."""
        names = [name for name, _ in self.search]
        points = [dict(zip(names, combo)) for combo in itertools.product(*(v for _, v in self.search))]
        random.Random(self.sampler.seed).shuffle(points)
        return points

    def run_config(self, params: Mapping[str, Any], experiment: str | None = None, progress: bool = False):
        """The ``RunConfig`` one trial evaluates: fixed settings, then the trial's choices."""
        train_values = {**dict(self.train), **{k: v for k, v in params.items() if k in TRAIN_KEYS}}
        extra = dict(self.run)
        if self.max_seconds is not None:
            extra["max_seconds"] = self.max_seconds
        if "unfreeze_top" in params:
            extra["unfreeze_top"] = int(params["unfreeze_top"])
        return RunConfig(
            backbone=params["backbone"],
            dataset=self.dataset,
            data_root=self.data_root,
            corpus_options=self.corpus_options,
            folds=self.folds,
            weights=self.weights,
            random_init=self.random_init,
            train=TrainConfig(**train_values),
            seeds=self.seeds,
            trust=TrustConfig(**dict(self.trust)),
            experiment=experiment,
            progress=progress,
            **extra,
        )

    def with_overrides(self, **changes: Any) -> "StudySpace":
        """A copy with top-level fields replaced (``search`` may be given as a mapping); validated again."""
        raw = self.to_dict()
        raw.update(changes)
        return parse_space(raw, self.source)

    def to_dict(self) -> dict[str, Any]:
        """The space as YAML-shaped data (what the file would hold); stored with the study for provenance."""
        return {
            "name": self.name,
            "dataset": self.dataset,
            "data_root": self.data_root,
            "folds": self.folds,
            "corpus_options": dict(self.corpus_options),
            "random_init": self.random_init,
            "weights": self.weights,
            "max_seconds": self.max_seconds,
            "seeds": self.seeds,
            "train": dict(self.train),
            "trust": {k: list(v) if isinstance(v, tuple) else v for k, v in self.trust},
            **{k: list(v) if isinstance(v, tuple) else v for k, v in self.run},
            "search": {k: list(v) for k, v in self.search},
            "objectives": {o.name: o.direction for o in self.objectives},
            "sampler": {"kind": self.sampler.kind, "seed": self.sampler.seed},
        }


def config_label(params: Mapping[str, Any]) -> str:
    """A readable name for a configuration: the backbone, then the other choices as key=value."""
    rest = " ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items() if k != "backbone")
    return f"{params.get('backbone', '?')} {rest}".strip()


def load_space(path: str | Path) -> StudySpace:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"study space file not found: {path}")
    from trustser.config_io import read_yaml_mapping

    return parse_space(read_yaml_mapping(path, TOP_LEVEL), str(path))


def parse_space(raw: Mapping[str, Any], source: str = "<memory>") -> StudySpace:
    def fail(key: str, message: str) -> ConfigError:
        return ConfigError(f"{source}: {key}: {message}")

    run_keys = _run_keys()
    unknown = sorted(set(raw) - set(TOP_LEVEL) - set(run_keys))
    if unknown:
        raise fail(unknown[0], f"unknown key; known: {', '.join([*TOP_LEVEL, *run_keys])}")
    for key in ("dataset", "search", "objectives"):
        if raw.get(key) in (None, "", {}):
            raise fail(key, "missing (required)")

    from trustser.corpora import CORPORA

    dataset = _typed(raw["dataset"], str, "dataset", fail)
    if dataset not in CORPORA:
        raise fail("dataset", f"unknown dataset '{dataset}'; known: {', '.join(sorted(CORPORA))}")
    search = _parse_search(raw["search"], fail)
    objectives = _parse_objectives(raw["objectives"], fail)
    train = _parse_train(raw.get("train") or {}, dict(search), fail)
    trust = _parse_trust(raw.get("trust") or {}, fail)
    if any(o.name == "robustness" for o in objectives) and not dict(trust).get("corruptions"):
        raise fail(
            "objectives.robustness",
            "needs the corruption suite: add trust: {corruptions: [standard]} "
            "(or a list of trustser.metrics.corruptions names)",
        )
    sampler = _parse_sampler(raw.get("sampler") or {}, fail)
    options = raw.get("corpus_options") or {}
    if not isinstance(options, dict):
        raise fail("corpus_options", f"expected a mapping KEY: VALUE, got {options!r}")
    folds = str(raw.get("folds", "all"))
    random_init = raw.get("random_init", False)
    if not isinstance(random_init, bool):
        raise fail("random_init", f"expected true or false, got {random_init!r}")
    max_seconds = raw.get("max_seconds")
    if max_seconds is not None and (
        isinstance(max_seconds, bool) or not isinstance(max_seconds, (int, float)) or max_seconds <= 0
    ):
        raise fail("max_seconds", f"expected a positive number of seconds, got {max_seconds!r}")
    seeds = _typed(raw.get("seeds", RunConfig.seeds), int, "seeds", fail)
    _check_choice("seeds", seeds, "seeds", fail, {})
    name = _typed(raw.get("name") or Path(source).stem, str, "name", fail)
    run = _parse_run(raw, run_keys, dict(search), source, fail)
    space = StudySpace(
        name=name,
        dataset=dataset,
        search=search,
        objectives=objectives,
        data_root=_optional_str(raw.get("data_root")),
        folds=folds,
        corpus_options=tuple((str(k), str(v)) for k, v in options.items()),
        random_init=random_init,
        weights=_optional_str(raw.get("weights")),
        max_seconds=float(max_seconds) if max_seconds else None,
        seeds=seeds,
        train=train,
        trust=trust,
        run=run,
        sampler=sampler,
        source=source,
    )
    try:  # the fixed part is the run schema: a configuration of the grid must construct (a bad value fails here,
        space.run_config(space.grid()[0])  # at load, not in every trial after training)
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from None
    return space


def _run_keys() -> list[str]:
    """RunConfig settings a study file may fix beside the keys it has always had (one schema: trustser.run_config)."""
    from dataclasses import fields

    managed = set(TOP_LEVEL) | {"backbone", "train", "trust", "experiment", "progress"}
    return [f.name for f in fields(RunConfig) if f.name not in managed]


def _parse_run(
    raw: Mapping[str, Any], run_keys: list[str], searched: dict[str, Any], source: str, fail
) -> tuple[tuple[str, Any], ...]:
    from trustser.config_schema import from_mapping

    given = {k: raw[k] for k in run_keys if k in raw}
    for key in given:
        if key in searched:
            raise fail(key, f"also a search dimension (search.{key}); give it in one place")
    config = from_mapping(RunConfig, given, source)  # types and values, errors naming the key
    return tuple((k, getattr(config, k)) for k in given)


def _optional_str(value: Any) -> str | None:
    return None if value in (None, "") else str(value)


NULLABLE = frozenset(k for k in TRAIN_KEYS if getattr(TrainConfig(), k) is None)
"""Training settings whose null is their default rule (``top_lr``: the head's lr), so a study can search it."""


def _typed(value: Any, kind: type, key: str, fail) -> Any:
    if value is None and key.rpartition(".")[2] in NULLABLE:
        return None
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if kind is float and isinstance(value, str):  # YAML 1.1 reads 5e-4 (no dot) as a string
        try:
            return float(value)
        except ValueError:
            pass
    if isinstance(value, bool) and kind is not bool or not isinstance(value, kind):
        raise fail(key, f"expected {kind.__name__}, got {value!r}")
    return value


def _parse_search(raw: Any, fail) -> tuple[tuple[str, tuple[Any, ...]], ...]:
    from trustser.backbones import BACKBONES

    if not isinstance(raw, dict):
        raise fail("search", f"expected a mapping of dimension: [choices], got {raw!r}")
    if "backbone" not in raw:
        raise fail("search.backbone", "missing (required: the backbones to compare, or 'all')")
    out = []
    for name, values in raw.items():
        key = f"search.{name}"
        if name not in SEARCHABLE:
            raise fail(key, f"unknown dimension; searchable: {', '.join(SEARCHABLE)}")
        if name == "backbone" and values == "all":
            values = [b for b, spec in BACKBONES.items() if spec.paper is not None]
        if not isinstance(values, list):
            values = [values]
        if not values:
            raise fail(key, "empty choice list")
        typed = tuple(_typed(v, SEARCHABLE[name], key, fail) for v in values)
        if len(set(typed)) != len(typed):
            raise fail(key, f"repeated choice in {list(typed)}")
        for v in typed:
            _check_choice(name, v, key, fail, BACKBONES)
        out.append((name, typed))
    return tuple(out)


def _check_choice(name: str, value: Any, key: str, fail, backbones) -> None:
    """One search choice or fixed training value, checked by the schema that owns the field (``TrainConfig``, or
    ``RunConfig`` for ``unfreeze_top``), so a study accepts exactly what a run accepts; backbones by the registry."""
    if name == "backbone":
        if value not in backbones:
            raise fail(key, f"unknown backbone '{value}'; known: {', '.join(sorted(backbones))}")
        return
    try:
        if name in TRAIN_KEYS:
            TrainConfig(**{name: value})
        else:
            RunConfig(**{name: value})
    except ConfigError as exc:
        raise fail(key, str(exc)) from None


def _parse_objectives(raw: Any, fail) -> tuple[Objective, ...]:
    if not isinstance(raw, dict):
        raise fail("objectives", f"expected a mapping of axis: direction, got {raw!r}")
    out = []
    for name, direction in raw.items():
        key = f"objectives.{name}"
        if name not in ALL_OBJECTIVES:
            raise fail(key, f"unknown objective '{name}'; known: {', '.join(ALL_OBJECTIVES)}")
        spelled = _DIRECTION_SPELLINGS.get(str(direction).lower())
        if spelled is None:
            raise fail(key, f"bad direction '{direction}'; use maximize or minimize")
        objective = ALL_OBJECTIVES[name]
        if spelled != objective.direction:
            raise fail(
                key,
                f"bad direction '{direction}': {name} ({objective.key}) is "
                f"{'higher' if objective.higher_is_better else 'lower'}-is-better, so {objective.direction}",
            )
        out.append(objective)
    return tuple(out)


def _parse_train(raw: Any, searched: dict[str, Any], fail) -> tuple[tuple[str, Any], ...]:
    if not isinstance(raw, dict):
        raise fail("train", f"expected a mapping of training settings, got {raw!r}")
    out = []
    for name, value in raw.items():
        key = f"train.{name}"
        if name not in TRAIN_KEYS:
            raise fail(key, f"unknown training setting; known: {', '.join(TRAIN_KEYS)}")
        if name in searched:
            raise fail(key, f"also a search dimension (search.{name}); give it in one place")
        value = _typed(value, SEARCHABLE[name], key, fail)
        _check_choice(name, value, key, fail, {})
        out.append((name, value))
    return tuple(out)


def _parse_trust(raw: Any, fail) -> tuple[tuple[str, Any], ...]:
    """Settings of ``trustser.experiment.TrustConfig``, checked against its fields and their defaults' types."""
    from dataclasses import fields

    if not isinstance(raw, dict):
        raise fail("trust", f"expected a mapping of trust settings, got {raw!r}")
    defaults = {f.name: getattr(TrustConfig(), f.name) for f in fields(TrustConfig)}
    out = []
    for name, value in raw.items():
        key = f"trust.{name}"
        if name not in defaults:
            raise fail(key, f"unknown trust setting; known: {', '.join(defaults)}")
        default = defaults[name]
        if isinstance(default, tuple):
            if not isinstance(value, list):
                raise fail(key, f"expected a list, got {value!r}")
            value = tuple(value)
            if name == "corruptions":
                from trustser.metrics.corruptions import resolve

                try:
                    resolve(value)
                except ConfigError as exc:
                    raise fail(key, str(exc)) from None
        elif isinstance(default, bool) and not isinstance(value, bool):
            raise fail(key, f"expected true or false, got {value!r}")
        elif isinstance(default, (int, float)) and not isinstance(default, bool):
            value = _typed(value, type(default), key, fail)
        elif default is None and value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
            raise fail(key, f"expected a number or null, got {value!r}")
        out.append((name, value))
    return tuple(out)


def _parse_sampler(raw: Any, fail) -> SamplerSpec:
    if isinstance(raw, str):
        raw = {"kind": raw}
    if not isinstance(raw, dict):
        raise fail("sampler", f"expected a mapping (kind, seed), got {raw!r}")
    unknown = sorted(set(raw) - {"kind", "seed"})
    if unknown:
        raise fail(f"sampler.{unknown[0]}", "unknown key; known: kind, seed")
    kind = raw.get("kind", "grid")
    if kind not in SAMPLERS:
        raise fail("sampler.kind", f"unknown sampler '{kind}'; known: {', '.join(SAMPLERS)}")
    return SamplerSpec(kind=kind, seed=_typed(raw.get("seed", 0), int, "sampler.seed", fail))


__all__ = [
    "ALL_OBJECTIVES",
    "OBJECTIVES",
    "OPTIONAL_OBJECTIVES",
    "Objective",
    "SamplerSpec",
    "StudySpace",
    "config_hash",
    "config_label",
    "load_space",
    "parse_space",
]
