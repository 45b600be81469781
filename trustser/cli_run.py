"""``trustser run``'s options, generated from the run schema (``trustser.run_config.RunConfig``).

A run is configured in three layers, later ones winning: a YAML file (``--config``, any subset of the schema, e.g.
``configs/paper.yaml``), the shorthand flags the user typed (``--lr 1e-3``), then ``--set key=value`` for any
setting by its dotted name (``--set trust.snr_db=40``). A shorthand is one row of ``SHORTHANDS``: its flag and the
schema key it sets; its default, type and validation are the schema's, so no default is written twice. A flag not
given (or given as "", which is how MLproject says "not given") leaves the file's or the schema's value alone.

Defaults are shown in ``--help`` by reading the schema when the help is drawn, so ``trustser --help`` does not
import torch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import click

from trustser.errors import ConfigError
from trustser.run_config import POOLINGS, PRECISIONS, SCHEDULES  # the schema's choices: no torch for --help


@dataclass(frozen=True)
class Shorthand:
    """A flag that sets one schema key. ``boolean``: also accepted alone (``--random-init``) meaning true."""

    flag: str
    key: str
    help: str = ""
    choices: tuple[str, ...] = ()
    boolean: bool = False

    @property
    def dest(self) -> str:
        return self.flag.lstrip("-").replace("-", "_")


SHORTHANDS: tuple[Shorthand, ...] = (
    Shorthand("--backbone", "backbone"),
    Shorthand("--dataset", "dataset"),
    Shorthand("--data-root", "data_root", "Corpus root (default: the shipped copy, where there is one)."),
    Shorthand("--folds", "folds", "'all' or fold numbers like 1,3."),
    Shorthand(
        "--schedule",
        "train.schedule",
        "converge: step floor + early stopping on validation UAR (--min-steps, "
        "--patience, --max-epochs); paper: exactly --epochs epochs (the method's 30).",
        SCHEDULES,
    ),
    Shorthand("--epochs", "train.epochs", "Epochs of the paper schedule."),
    Shorthand("--max-epochs", "train.max_epochs", "converge: at most this many epochs."),
    Shorthand("--patience", "train.patience", "converge: stop after this many epochs without a better validation UAR."),
    Shorthand("--min-steps", "train.min_steps", "converge: optimiser steps trained before early stopping may stop."),
    Shorthand(
        "--standardize",
        "train.standardize",
        "Standardise each layer's features (statistics of the training "
        "clips, stored with the head); --standardize false is the method's head.",
        boolean=True,
    ),
    Shorthand(
        "--seeds",
        "seeds",
        "Training seeds per fold; the spread of test UAR over them is logged (trust metrics: first).",
    ),
    Shorthand(
        "--bootstrap",
        "trust.bootstrap_resamples",
        "Speaker-level bootstrap resamples per 95 %% interval (0: no intervals).",
    ),
    Shorthand("--batch-size", "train.batch_size"),
    Shorthand("--lr", "train.lr"),
    Shorthand("--width", "train.width", "Head width (channels of its conv and hidden layers)."),
    Shorthand(
        "--pooling",
        "train.pooling",
        "How the head combines the backbone's hidden states: learned weighted sum, or the last layer.",
        POOLINGS,
    ),
    Shorthand("--seed", "train.seed"),
    Shorthand("--weights", "weights", "HF model dir, s3prl .ckpt, or CTranslate2 Whisper dir."),
    Shorthand(
        "--random-init",
        "random_init",
        "Random weights (NOT a pretrained result; tagged weights=random). Also accepts true/false.",
        boolean=True,
    ),
    Shorthand("--cache-dir", "cache_dir", "Feature cache (default: $TRUSTSER_CACHE or ~/.cache/trustser)."),
    Shorthand(
        "--precision",
        "precision",
        "Feature extraction precision (bf16: autocast with bf16-stored weights; "
        "opt-in, see docs/benchmarks.md; part of the cache key).",
        PRECISIONS,
    ),
    Shorthand(
        "--feature-memory",
        "feature_memory",
        "Cached features held in memory: auto (up to half the "
        "machine's memory, or $TRUSTSER_FEATURE_MEMORY_GB), memory (all), disk (none: read a batch at a time), "
        "or a number of GiB. The rest is read from the cache on access; results are the same.",
    ),
    Shorthand(
        "--device",
        "device",
        "Where models run: auto (a CUDA GPU when torch sees one, else the CPU), cpu, "
        "cuda or cuda:N. Logged; cached features serve every device.",
    ),
    Shorthand(
        "--unfreeze-top", "unfreeze_top", "Fine-tune the top k encoder layers with the head (0 = frozen backbone)."
    ),
    Shorthand("--snr", "trust.snr_db", "Attack SNR in dB."),
    Shorthand(
        "--max-attack-clips",
        "trust.max_attack_clips",
        "Attack at most this many test clips per fold (deterministic subset; empty = all).",
    ),
    Shorthand(
        "--attack-train-mode",
        "trust.attack_train_mode",
        "Attack with dropout on, as the reference code did.",
        boolean=True,
    ),
    Shorthand(
        "--corruptions",
        "trust.corruptions",
        "Corruption suite on the test clips, comma-separated: names of "
        "trustser.metrics.corruptions (white_snr10, babble_snr10, telephone, mp3_16kbps, reverb_rt60_800ms, "
        "...) or 'standard' (one per kind) or 'all'; empty = none (each costs one backbone pass per test clip).",
    ),
    Shorthand(
        "--test-dataset",
        "test_dataset",
        "Cross-corpus: also test each fold's model on all of this other "
        "corpus (logged as cross_<dataset>_uar with its interval).",
    ),
    Shorthand("--test-data-root", "test_data_root", "Root of the --test-dataset corpus (default: the shipped copy)."),
    Shorthand("--experiment", "experiment", "MLflow experiment name (default: trustser)."),
)


def schema_default(key: str) -> Any:
    from trustser.config_schema import leaf_fields
    from trustser.run_config import RunConfig

    return {f.key: f.default for f in leaf_fields(RunConfig)}[key]


class ShorthandOption(click.Option):
    """An option whose shown default is read from the schema when help is drawn (not at import)."""

    def __init__(self, *args: Any, schema_key: str, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.schema_key = schema_key

    def get_help_record(self, ctx: click.Context):
        default = schema_default(self.schema_key)
        if isinstance(default, tuple):
            default = ",".join(map(str, default)) or "none"
        self.show_default = "none" if default is None else str(default)
        return super().get_help_record(ctx)


class _Text(click.ParamType):
    """Text handed to the schema, which coerces and validates it; "" means not given."""

    name = "value"

    def convert(self, value: Any, param: Any, ctx: Any) -> Any:
        return None if value == "" else value


class OptionalBool(click.ParamType):
    """true/false, or "" (MLproject's "not given") as false."""

    name = "boolean"

    def convert(self, value: Any, param: Any, ctx: Any) -> bool:
        return False if value in ("", None) else click.BOOL.convert(value, param, ctx)


class _Choice(click.Choice):
    def convert(self, value: Any, param: Any, ctx: Any) -> Any:
        return None if value == "" else super().convert(value, param, ctx)


def shorthand_options(fn: Callable) -> Callable:
    """Decorate a command with every shorthand (in table order) plus ``--config`` and ``--set``."""
    for s in reversed(SHORTHANDS):
        kwargs: dict[str, Any] = {
            "default": None,
            "help": s.help,
            "schema_key": s.key,
            "cls": ShorthandOption,
            "type": _Choice(s.choices) if s.choices else _Text(),
        }
        if s.boolean:
            kwargs.update(is_flag=False, flag_value="true")
        fn = click.option(s.flag, s.dest, **kwargs)(fn)
    fn = click.option(
        "--set",
        "assignments",
        multiple=True,
        default=(),
        metavar="KEY=VALUE",
        help="Any setting by its dotted name, repeatable, applied last (e.g. --set train.lr=1e-3 "
        "--set trust.snr_db=40); several space-separated in one value are allowed.",
    )(fn)
    return click.option(
        "--config",
        "config_file",
        default=None,
        help="A run config YAML (any subset of the schema, e.g. configs/paper.yaml); flags and --set override it.",
    )(fn)


def build_run_config(
    config_file: str | None, values: dict[str, Any], assignments: tuple[str, ...], extra: list[tuple[str, Any]] = ()
) -> Any:
    """The RunConfig of ``trustser run``: file, then the shorthands given, then ``extra`` (special flags such as
    ``--no-safety``), then ``--set``. A bad shorthand value is a usage error naming its flag."""
    from trustser.config_schema import load_run_config, split_assignments, with_assignments
    from trustser.run_config import RunConfig

    config = load_run_config(config_file) if config_file not in (None, "") else RunConfig()
    for s in SHORTHANDS:
        value = values.get(s.dest)
        if value is None:
            continue
        try:
            config = with_assignments(config, [(s.key, value)], source=s.flag)
        except ConfigError as exc:
            raise click.BadParameter(str(exc).removeprefix(f"{s.flag}: "), param_hint=s.flag) from None
    if extra:
        config = with_assignments(config, list(extra), source="trustser run")
    return with_assignments(config, split_assignments(assignments), source="--set")
