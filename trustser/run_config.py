"""The configuration of one run (a backbone over a corpus's folds) and what it returns, as data.

The bottom of the package's layers (see ``[tool.importlinter]`` in pyproject.toml): it imports no torch and nothing
of trustser that runs anything, so every layer above (training, metrics, features, the experiment, the study, the
CLI's ``--help``) reads the one schema and its vocabularies (schedules, poolings, precisions, ``model_from``,
``feature_memory``) from here. Two checks consult an implementation's registry, lazily, on construction: attack
names (``metrics.safety.ATTACKS``) and corruption names (``metrics.corruptions``), the registries being the one
list of what exists; the import contract names these two exceptions.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from trustser import MAX_SECONDS
from trustser.errors import ConfigError

if TYPE_CHECKING:  # result types, for annotations only: importing them would pull in torch
    from trustser.metrics.headline import TestOutcomes
    from trustser.training import TrainResult

POOLINGS = ("weighted", "last")
"""How the head pools layers: a learned softmax-weighted sum (the method's), or the last layer only."""

PRECISIONS = ("fp32", "bf16")
"""Extraction precision: fp32, or bf16 autocast (``trustser.features``; part of the cache key)."""

MODEL_FROM = ("best_validation",)
"""How a run's deployable head is chosen: the fold with the best validation UAR (ties: the first fold)."""

FEATURE_MEMORY = ("auto", "memory", "disk")
"""How much of the feature store is held in memory (``RunConfig.feature_memory``, ``--feature-memory``):
``auto`` (the default) holds up to half the machine's memory (``TRUSTSER_FEATURE_MEMORY_GB`` overrides it) and reads
the rest from the cache; ``memory`` holds everything; ``disk`` holds nothing; a number holds up to that many GiB.
Results do not depend on it (``trustser.features.resident_budget``)."""

DEVICE_PATTERN = re.compile(r"auto|cpu|cuda(:\d+)?")
"""Where a run computes (``trustser.devices``): auto (a CUDA device when torch sees one), cpu, cuda, cuda:N."""


def check_device(setting: str) -> str:
    """A ``device`` setting checked for its form (whether this machine has it is ``devices.resolve_device``'s)."""
    text = str(setting).strip().lower()
    if not DEVICE_PATTERN.fullmatch(text):
        raise ConfigError(f"device: unknown value '{setting}'; allowed: auto, cpu, cuda, cuda:N")
    return text


PROBE_EPOCHS = 10
"""The method's probe epochs (its gender probe: 10 epochs), used by the ``paper`` schedule."""

DEFAULT_RESAMPLES = 1000
"""Bootstrap resamples per metric: about 0.1 s per metric on a fold (measured), nothing next to training."""


def feature_memory_gib(setting: str | float | None) -> str | float:
    """A ``feature_memory`` setting checked: one of ``FEATURE_MEMORY``, or a number of GiB >= 0."""
    text = "auto" if setting is None else str(setting).strip().lower()
    if text in FEATURE_MEMORY:
        return text
    try:
        gib = float(text)
    except ValueError:
        gib = float("nan")
    if not gib >= 0:
        raise ConfigError(
            f"feature_memory must be one of {', '.join(FEATURE_MEMORY)} or a number of GiB >= 0, got '{setting}'"
        )
    return gib


SCHEDULES = ("converge", "paper")
"""How long a head trains.

``converge`` (the default): at least ``min_steps`` optimiser steps, then early stopping once validation UAR has not
improved for ``patience`` epochs, at most ``max_epochs``; the epoch with the best validation UAR is kept. Why: the
method's 30 epochs were written for corpora of 4–38 k clips (≥ 1,500 steps); on a corpus of a few hundred clips
they are 90–200 steps and the head is still climbing when they end (measured on EmoDB: 3 of 5 folds picked their
last epoch). ``paper``: exactly ``epochs`` epochs (the method's 30), best validation epoch kept — the method's
recipe, for reproducing its figures.
"""


@dataclass(frozen=True)
class TrainConfig:
    """Adam on cross-entropy, lr 5e-4, batch 64, model chosen on validation UAR (the method's), trained to
    convergence with standardised features by default (``SCHEDULES``; ``schedule="paper"``, ``standardize=False``
    is the method exactly)."""

    epochs: int = 30  # the `paper` schedule's epoch count
    batch_size: int = 64
    lr: float = 5e-4
    width: int = 128
    pooling: str = "weighted"
    seed: int = 0
    min_steps: int = 100  # converge: optimiser steps before early stopping may stop (paper: ignored)
    schedule: str = "converge"
    max_epochs: int = 200  # converge: the cap
    patience: int = 20  # converge: epochs without a better validation UAR before stopping (after the floor)
    standardize: bool = True  # per-layer, per-dimension standardisation fitted on the training clips
    # learning rate of the unfrozen encoder layers (unfreeze_top > 0); None: the head's lr, as the method does. The
    # head's 5e-4 is large for a pretrained transformer layer: fine-tuned Whisper Base lost 7 UAR points to its
    # frozen features on EmoDB at 5e-4 (README, "Measured: the real study"). No effect on a frozen backbone.
    top_lr: float | None = None

    def __post_init__(self) -> None:
        if self.schedule not in SCHEDULES:
            raise ConfigError(f"train.schedule must be one of {', '.join(SCHEDULES)}, got '{self.schedule}'")
        if self.pooling not in POOLINGS:
            raise ConfigError(f"train.pooling: unknown pooling '{self.pooling}'; known: {', '.join(POOLINGS)}")
        for name in ("epochs", "batch_size", "width", "max_epochs", "patience"):
            if int(getattr(self, name)) < 1:
                raise ConfigError(f"train.{name} must be >= 1, got {getattr(self, name)}")
        if self.min_steps < 0:
            raise ConfigError(f"train.min_steps must be >= 0, got {self.min_steps}")
        if not self.lr > 0:
            raise ConfigError(f"train.lr must be > 0, got {self.lr}")
        if self.top_lr is not None and not self.top_lr > 0:
            raise ConfigError(f"train.top_lr must be > 0 (or none: the head's lr), got {self.top_lr}")

    def as_params(self) -> dict[str, object]:
        return asdict(self)

    def epoch_budget(self, steps_per_epoch: int) -> tuple[int, int]:
        """(epochs that must run, epochs that may run) for a partition giving ``steps_per_epoch`` batches."""
        if self.schedule == "paper":
            return self.epochs, self.epochs
        floor = -(-self.min_steps // steps_per_epoch)
        return min(floor, self.max_epochs), self.max_epochs


@dataclass(frozen=True)
class TrustConfig:
    """Which trust measurements a fold runs, and their settings (all logged as params).

    PGD is opt-in: at 10 steps it costs about ten FGSM attacks. FGSM and Gaussian noise take one gradient / noise
    draw per clip for every SNR, but every SNR needs its own forward of the perturbed clip: a sweep costs one
    forward per attacked clip and SNR, hence it is opt-in (``sweep_attacks``) and the default measures the method's
    operating point (``snr_db``) only.
    """

    safety: bool = True
    snr_db: float = 45.0
    attacks: tuple[str, ...] = ("fgsm", "gaussian")
    sweep_snrs: tuple[float, ...] = (30.0, 35.0, 40.0, 45.0, 50.0, 55.0, 60.0)
    # which of the attacks are also measured at every sweep SNR (e.g. ("fgsm",): the ASR-vs-SNR curve); the others
    # run at snr_db only. None by default: no objective, scenario or pick reads the curve, and FGSM's 6 extra SNRs
    # cost 6 forwards per attacked clip against ~4.4 forward-equivalents for the rest of the safety family (its
    # gradient ≈ 2.4 forwards, the 45 dB check, the Gaussian control): over half the attack stage, which is about
    # two thirds of the method's full grid as estimated in docs/benchmarks.md §6 (command 1: §7)
    sweep_attacks: tuple[str, ...] = ()
    pgd_steps: int = 10
    attack_train_mode: bool = False
    max_attack_clips: int | None = None  # attack at most this many test clips (deterministic subset), for speed
    probes: bool = True
    probe_epochs: int = PROBE_EPOCHS  # the `paper` schedule's probe epochs; `converge` probes converge
    measure_cost: bool = True  # latency (median of 3) and peak memory of one 6 s inference, on this machine
    reference: bool = True  # the linear reference probe (reference_linear_uar) on every fold
    bootstrap_resamples: int = DEFAULT_RESAMPLES  # speaker-level bootstrap resamples per interval (0 = none)
    # the corruption suite (trustser.metrics.corruptions names, or the aliases "standard", "all"); none by default:
    # each corruption costs one backbone forward per test clip, and configurations without it keep their config hash
    corruptions: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        from trustser.metrics.safety import ATTACKS

        unknown = [a for a in self.attacks if a not in ATTACKS]
        if unknown:
            raise ConfigError(f"trust.attacks: unknown attack '{unknown[0]}'; known: {', '.join(ATTACKS)}")
        unknown = [a for a in self.sweep_attacks if a not in ATTACKS]
        if unknown:
            raise ConfigError(f"trust.sweep_attacks: unknown attack '{unknown[0]}'; known: {', '.join(ATTACKS)}")
        for name in ("pgd_steps", "probe_epochs"):
            if int(getattr(self, name)) < 1:
                raise ConfigError(f"trust.{name} must be >= 1, got {getattr(self, name)}")
        if self.bootstrap_resamples < 0:
            raise ConfigError(f"trust.bootstrap_resamples must be >= 0, got {self.bootstrap_resamples}")
        if self.max_attack_clips is not None and self.max_attack_clips < 1:
            raise ConfigError(f"trust.max_attack_clips must be >= 1 or null (all clips), got {self.max_attack_clips}")
        if self.corruptions:
            from trustser.metrics.corruptions import resolve

            resolve(self.corruptions)  # an unknown name is a ConfigError naming it and the known ones

    def as_params(self) -> dict[str, object]:
        return {f"trust.{k}": v for k, v in asdict(self).items()}

    def check_sweep(self) -> None:
        """A swept attack must be one that runs. Checked when a run starts, not on construction: ``--pgd`` adds PGD
        to the attacks after ``--set`` may have asked to sweep it."""
        not_run = [a for a in self.sweep_attacks if a not in self.attacks]
        if not_run and self.safety:
            raise ConfigError(
                f"trust.sweep_attacks: '{not_run[0]}' is not among the attacks run (trust.attacks: "
                f"{', '.join(self.attacks) or 'none'}); add it there (PGD: --pgd) to sweep it"
            )

    def attack_snrs(self, attack: str) -> tuple[float, ...]:
        """The SNRs ``attack`` is measured at: the operating point first, then the sweep's if it is swept."""
        swept = self.sweep_snrs if attack in self.sweep_attacks else ()
        return tuple(dict.fromkeys((float(self.snr_db), *map(float, swept))))


@dataclass(frozen=True)
class RunConfig:
    backbone: str = "whisper_base"
    dataset: str = "emodb"
    data_root: str | None = None
    corpus_options: tuple[tuple[str, str], ...] = ()  # loader options, e.g. (("merge_excited", "false"),)
    folds: str = "all"  # "all", or fold numbers "1,3", 1-based
    weights: str | None = None
    random_init: bool = False
    cache_dir: str | None = None
    max_seconds: float = MAX_SECONDS
    precision: str = "fp32"  # feature extraction: fp32 or bf16 autocast
    feature_memory: str = "auto"  # held in memory: auto, memory, disk or GiB (trustser.features.FEATURE_MEMORY)
    device: str = "auto"  # where models run: auto, cpu, cuda, cuda:N (trustser.devices); not part of config_hash
    train: TrainConfig = field(default_factory=TrainConfig)
    unfreeze_top: int = 0  # fine-tuning: number of top encoder layers trained (0 = frozen backbone)
    seeds: int = 1  # training seeds per fold (seed, seed+1, ...): the spread of test UAR over them is logged
    log_model: bool = True  # log the deployable pyfunc model (trustser.deploy) on the parent run
    model_from: str = "best_validation"  # which fold's head the deployable model uses (trustser.deploy.MODEL_FROM)
    trust: TrustConfig = field(default_factory=TrustConfig)
    # cross-corpus: also test every fold's model on all of this other corpus (trustser.cross_corpus)
    test_dataset: str | None = None
    test_data_root: str | None = None  # its root (default: the shipped copy, where there is one)
    experiment: str | None = None
    progress: bool = True
    offline: bool | None = None  # download no weights (None: HF_HUB_OFFLINE decides); not part of what is computed

    def __post_init__(self) -> None:
        """Values are checked here, on construction, so a bad file or --set fails before anything runs."""
        if self.precision not in PRECISIONS:
            raise ConfigError(f"precision: unknown value '{self.precision}'; allowed: {', '.join(sorted(PRECISIONS))}")
        if self.model_from not in MODEL_FROM:
            raise ConfigError(f"model_from: unknown value '{self.model_from}'; allowed: {', '.join(MODEL_FROM)}")
        if self.seeds < 1:
            raise ConfigError(f"seeds must be >= 1, got {self.seeds}")
        if self.unfreeze_top < 0:
            raise ConfigError(f"unfreeze_top must be >= 0, got {self.unfreeze_top}")
        if not self.max_seconds > 0:
            raise ConfigError(f"max_seconds must be > 0, got {self.max_seconds}")
        check_device(self.device)
        try:
            feature_memory_gib(self.feature_memory)
        except ConfigError as exc:
            raise ConfigError(f"feature_memory: {exc}") from None


def config_hash(run_config: Any) -> str:
    """Identity of what a trial computes: every RunConfig field except where it is logged, how it is shown, and
    where it runs (``device``, ``feature_memory``: the same computation; on a GPU the last bits differ, within the
    tolerance ``scripts/gpu_check.py`` measures)."""
    values = asdict(run_config)
    for key in ("experiment", "progress", "cache_dir", "offline", "log_model", "feature_memory", "device"):
        values.pop(key, None)
    if values.get("test_dataset") is None:  # added later: a run without a cross-corpus test keeps its hash
        values.pop("test_dataset", None)
        values.pop("test_data_root", None)
    if not values.get("trust", {}).get("corruptions"):  # added later: without it a configuration keeps its hash
        values.get("trust", {}).pop("corruptions", None)
    train = values.get("train", {})
    if train.get("top_lr") is None or not values.get("unfreeze_top"):  # added later; no effect on a frozen backbone
        train.pop("top_lr", None)
    trust = values.get("trust", {})
    if set(map(float, trust.get("sweep_snrs", ()))) <= {float(trust.get("snr_db", 45.0))}:
        # no SNR besides the operating point: nothing can be swept, whatever sweep_attacks says, so hash it as the
        # default before the sweep became opt-in (("fgsm",)), and such configurations keep the hash they had
        trust["sweep_attacks"] = ["fgsm"]
    text = json.dumps(values, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass
class FoldResult:
    fold: str
    run_id: str | None
    metrics: dict[str, float]
    train: TrainResult
    outcomes: TestOutcomes | None = None  # per-clip test outcomes, pooled over folds on the parent


@dataclass
class ExperimentResult:
    parent_run_id: str | None
    folds: list[FoldResult]
    summary: dict[str, float]
