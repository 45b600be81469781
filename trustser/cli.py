"""The ``trustser`` command line: thin click commands that only compose library functions.

Errors meant for the user (TrustserError) print as one line and exit with status 2; anything else is a bug and
keeps its traceback.
"""

from __future__ import annotations

import functools
import json
import logging
import sys

import click

from trustser.errors import TrustserError


def user_errors(fn):
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except TrustserError as exc:
            click.echo(f"trustser: error: {exc}", err=True)
            sys.exit(2)

    return wrapper


@click.group()
@click.option("-v", "--verbose", is_flag=True, help="Log at INFO level.")
def main(verbose: bool) -> None:
    """Measure how trustworthy a speech emotion recognition model built on a pre-trained backbone is."""
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")


def _weights_location(spec) -> str | None:
    from trustser.backbones.weights import resolve_weights

    try:
        source = resolve_weights(spec)
    except TrustserError:
        return None
    return str(source.path) if source.path else f"{source.kind} ({source.identity[:12]})"


@main.command("ls")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list of objects.")
def ls_command(as_json: bool) -> None:
    """List backbones (with where their weights were found) and datasets."""
    from trustser.backbones import BACKBONES
    from trustser.corpora import CORPORA
    from trustser.corpora.registry import default_root

    rows = []
    for spec in BACKBONES.values():
        rows.append({"name": spec.name, "kind": "backbone", "family": spec.family, "layers": spec.num_layers,
                     "hidden_states": spec.num_hidden_states, "hidden_size": spec.hidden_size,
                     "weights": _weights_location(spec), "description": spec.description})
    for spec in CORPORA.values():
        root = default_root(spec)
        rows.append({"name": spec.name, "kind": "dataset", "description": spec.description,
                     "protocol": spec.protocol, "shipped_at": str(root) if root and root.exists() else None})
    if as_json:
        click.echo(json.dumps(rows, indent=1))
        return
    click.echo("backbones:")
    for r in rows:
        if r["kind"] == "backbone":
            click.echo(f"  {r['name']:<16} {r['layers']:>2} layers x {r['hidden_size']:<4} weights: {r['weights'] or 'not found (use --weights or --random-init)'}")
    click.echo("datasets:")
    for r in rows:
        if r["kind"] == "dataset":
            click.echo(f"  {r['name']:<16} {r['description']}" + (f"  [shipped: {r['shipped_at']}]" if r.get("shipped_at") else ""))


def _none_if_empty(value: str | None) -> str | None:
    return value if value not in (None, "", "None", "none") else None


def parse_options(pairs: tuple[str, ...]) -> tuple[tuple[str, str], ...]:
    from trustser.errors import ConfigError

    out = []
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ConfigError(f"corpus option '{pair}' is not KEY=VALUE")
        out.append((key.strip(), value.strip()))
    return tuple(out)


@main.group("data")
def data_group() -> None:
    """Inspect corpora and their protocol."""


@data_group.command("summary")
@click.argument("dataset")
@click.option("--data-root", default=None)
@click.option("--corpus-option", "corpus_options", multiple=True, metavar="KEY=VALUE")
@click.option("--json", "as_json", is_flag=True)
@user_errors
def data_summary(dataset: str, data_root: str | None, corpus_options: tuple[str, ...], as_json: bool) -> None:
    """Per-class, per-gender and per-fold counts, and what was skipped and why."""
    from trustser.corpora import load_corpus
    from trustser.corpora.summary import format_summary, summarize

    index = load_corpus(dataset, _none_if_empty(data_root), dict(parse_options(corpus_options)))
    summary = summarize(index)
    click.echo(json.dumps(summary, indent=1, default=str) if as_json else format_summary(summary))


@main.command("run")
@click.option("--backbone", default="whisper_base", show_default=True)
@click.option("--dataset", default="emodb", show_default=True)
@click.option("--data-root", default=None, help="Corpus root (default: the shipped copy, where there is one).")
@click.option("--manifest", default=None, help="A manifest CSV (path,speaker,gender,emotion[,split|fold]); implies --dataset manifest.")
@click.option("--corpus-option", "corpus_options", multiple=True, metavar="KEY=VALUE",
              help="Loader option, repeatable (e.g. merge_excited=false, label_source=intended, emotion_map=joy=happy).")
@click.option("--folds", default="all", show_default=True, help="'all' or fold numbers like 1,3.")
@click.option("--epochs", default=30, show_default=True, type=click.IntRange(1, 1000))
@click.option("--batch-size", default=64, show_default=True, type=click.IntRange(1, 4096))
@click.option("--lr", default=5e-4, show_default=True, type=click.FloatRange(0, None, min_open=True))
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--weights", default=None, help="HF model dir, s3prl .ckpt, or CTranslate2 Whisper dir.")
@click.option("--random-init", type=click.BOOL, is_flag=False, flag_value=True, default=False,
              help="Random weights (NOT a pretrained result; tagged weights=random). Also accepts true/false.")
@click.option("--cache-dir", default=None, help="Feature cache (default: $TRUSTSER_CACHE or ~/.cache/trustser).")
@click.option("--experiment", default=None, help="MLflow experiment name (default: trustser).")
@click.option("--no-progress", is_flag=True)
@user_errors
def run_command(backbone, dataset, data_root, manifest, corpus_options, folds, epochs, batch_size, lr, seed, weights, random_init,
                cache_dir, experiment, no_progress) -> None:
    """Run one backbone over a corpus's folds and log every fold to MLflow."""
    from trustser.experiment import RunConfig, run_experiment
    from trustser.training import TrainConfig

    if _none_if_empty(manifest):
        dataset, data_root = "manifest", manifest
    config = RunConfig(
        backbone=backbone, dataset=dataset, data_root=_none_if_empty(data_root), folds=str(folds),
        corpus_options=parse_options(corpus_options),
        weights=_none_if_empty(weights), random_init=random_init, cache_dir=_none_if_empty(cache_dir),
        train=TrainConfig(epochs=epochs, batch_size=batch_size, lr=lr, seed=seed),
        experiment=_none_if_empty(experiment), progress=not no_progress,
    )
    if random_init:
        click.secho(f"WARNING: {backbone} runs with RANDOM weights: not a pretrained result (tag weights=random)",
                    fg="yellow", err=True)
    result = run_experiment(config)
    s = result.summary
    click.echo(f"{backbone} on {dataset}: test UAR {s.get('test_uar_mean', float('nan')):.3f} "
               f"± {s.get('test_uar_std', float('nan')):.3f} over {len(result.folds)} fold(s); "
               f"wall time {s['wall_time_s']:.0f} s; MLflow parent run {result.parent_run_id}")


if __name__ == "__main__":  # pragma: no cover
    main()
