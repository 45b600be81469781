"""The configuration of one run (a backbone over a corpus's folds) and what it returns, as data.

Kept apart from ``trustser.experiment`` so that the modules that read or write runs (resume, dataset inputs, the
study's search space) import the schema without importing the experiment that runs it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from trustser import MAX_SECONDS
from trustser.metrics.headline import DEFAULT_RESAMPLES, TestOutcomes
from trustser.metrics.privacy import PROBE_CONFIG
from trustser.training import TrainConfig, TrainResult


@dataclass(frozen=True)
class TrustConfig:
    """Which trust measurements a fold runs, and their settings (all logged as params).

    PGD is opt-in: at 10 steps it costs about ten FGSM attacks. FGSM and Gaussian noise take one gradient / noise
    draw per clip for every SNR, so the sweep costs little beyond the 45 dB point.
    """

    safety: bool = True
    snr_db: float = 45.0
    attacks: tuple[str, ...] = ("fgsm", "gaussian")
    sweep_snrs: tuple[float, ...] = (30.0, 35.0, 40.0, 45.0, 50.0, 55.0, 60.0)
    pgd_steps: int = 10
    attack_train_mode: bool = False
    max_attack_clips: int | None = None  # attack at most this many test clips (deterministic subset), for speed
    probes: bool = True
    probe_epochs: int = PROBE_CONFIG.epochs  # the `paper` schedule's probe epochs; `converge` probes converge
    measure_cost: bool = True  # latency (median of 3) and peak memory of one 6 s inference, on this machine
    reference: bool = True  # the linear reference probe (reference_linear_uar) on every fold
    bootstrap_resamples: int = DEFAULT_RESAMPLES  # speaker-level bootstrap resamples per interval (0 = none)
    # the corruption suite (trustser.metrics.corruptions names, or the aliases "standard", "all"); none by default:
    # each corruption costs one backbone forward per test clip, and configurations without it keep their config hash
    corruptions: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        from trustser.errors import ConfigError
        from trustser.metrics.safety import ATTACKS

        unknown = [a for a in self.attacks if a not in ATTACKS]
        if unknown:
            raise ConfigError(f"trust.attacks: unknown attack '{unknown[0]}'; known: {', '.join(ATTACKS)}")
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
        from trustser.deploy import MODEL_FROM
        from trustser.errors import ConfigError
        from trustser.features import PRECISIONS, resident_budget

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
        try:
            resident_budget(self.feature_memory)
        except ConfigError as exc:
            raise ConfigError(f"feature_memory: {exc}") from None


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
