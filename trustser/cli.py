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


def _optional_int(value: str | None, option: str, minimum: int = 0) -> int | None:
    """An optional whole-number option given as text (MLproject passes every parameter as a string)."""
    from trustser.errors import ConfigError

    if _none_if_empty(value) is None:
        return None
    try:
        number = int(value)
    except ValueError:
        raise ConfigError(f"{option} must be a whole number or empty, got '{value}'") from None
    if number < minimum:
        raise ConfigError(f"{option} must be >= {minimum}, got {number}")
    return number


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


@main.command("flops")
@click.option("--backbone", "backbones", multiple=True, help="Restrict to these backbones (repeatable).")
@click.option("--json", "as_json", is_flag=True)
@user_errors
def flops_command(backbones: tuple[str, ...], as_json: bool) -> None:
    """FLOPs/MACs of one 6 s inference per backbone: the paper's convention beside the complete count."""
    from trustser.backbones import get_backbone_spec
    from trustser.metrics.sustainability import sustainability_table

    for name in backbones:
        get_backbone_spec(name)  # unknown names fail with the list of known ones
    rows = sustainability_table(list(backbones) or None)
    if as_json:
        click.echo(json.dumps(rows, indent=1, default=str))
        return
    click.echo(f"{'backbone':<16} {'params(M)':>9} {'paper GMACs':>11} {'table':>6} {'GFLOPs':>8} {'GMACs':>7}")
    for r in rows:
        table = r.get("paper_table_gflops")
        click.echo(f"{r['backbone']:<16} {r['params'] / 1e6:>9.2f} {r['paper_gmacs']:>11.2f} "
                   f"{'' if table is None else format(table, '.1f'):>6} {r['flops'] / 1e9:>8.2f} {r['macs'] / 1e9:>7.2f}")
    click.echo("paper GMACs: MACs of Linear/Conv/GRU modules on 6 s (attention products and mel front end not "
               "counted, Whisper on 300 positions); GFLOPs/GMACs: complete count of front end + backbone + head.")


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
@click.option("--precision", type=click.Choice(["fp32", "bf16"]), default="fp32", show_default=True,
              help="Feature extraction precision (bf16 autocast; part of the cache key).")
@click.option("--unfreeze-top", default=0, show_default=True, type=click.IntRange(0, 48),
              help="Fine-tune the top k encoder layers with the head (0 = frozen backbone).")
@click.option("--pgd", type=click.BOOL, is_flag=False, flag_value=True, default=False,
              help="Also run PGD (about 10x the cost of FGSM). Also accepts true/false.")
@click.option("--snr", default=45.0, show_default=True, type=float, help="Attack SNR in dB.")
@click.option("--max-attack-clips", default="", help="Attack at most this many test clips per fold "
              "(deterministic subset; empty = all).")
@click.option("--attack-train-mode", is_flag=True, help="Attack with dropout on, as the reference code did.")
@click.option("--no-safety", is_flag=True, help="Skip the adversarial attacks.")
@click.option("--no-probes", is_flag=True, help="Skip the privacy probes.")
@click.option("--no-cost", is_flag=True, help="Skip latency / peak-memory measurement (FLOPs are still counted).")
@click.option("--experiment", default=None, help="MLflow experiment name (default: trustser).")
@click.option("--no-progress", is_flag=True)
@user_errors
def run_command(backbone, dataset, data_root, manifest, corpus_options, folds, epochs, batch_size, lr, seed, weights, random_init,
                cache_dir, precision, unfreeze_top, pgd, snr, max_attack_clips, attack_train_mode, no_safety, no_probes, no_cost,
                experiment, no_progress) -> None:
    """Run one backbone over a corpus's folds and log every fold to MLflow."""
    from trustser.experiment import RunConfig, TrustConfig, run_experiment
    from trustser.training import TrainConfig

    if _none_if_empty(manifest):
        dataset, data_root = "manifest", manifest
    config = RunConfig(
        backbone=backbone, dataset=dataset, data_root=_none_if_empty(data_root), folds=str(folds),
        corpus_options=parse_options(corpus_options),
        weights=_none_if_empty(weights), random_init=random_init, cache_dir=_none_if_empty(cache_dir),
        precision=precision,
        train=TrainConfig(epochs=epochs, batch_size=batch_size, lr=lr, seed=seed), unfreeze_top=unfreeze_top,
        trust=TrustConfig(safety=not no_safety, snr_db=snr, attacks=("fgsm", "gaussian") + (("pgd",) if pgd else ()),
                          max_attack_clips=_optional_int(max_attack_clips, "--max-attack-clips", minimum=1),
                          attack_train_mode=attack_train_mode,
                          probes=not no_probes, measure_cost=not no_cost),
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



@main.command("study")
@click.option("--space", required=True, help="Study space YAML, e.g. studies/quick.yaml or studies/default.yaml.")
@click.option("--n-trials", default=None, help="New trials to run (default: the configurations not yet done).")
@click.option("--storage", default=None, help="Optuna storage URL (default: sqlite:///<cwd>/optuna.db).")
@click.option("--study-name", default=None, help="Study to create or resume (default: the space's name).")
@click.option("--experiment", default=None, help="MLflow experiment name (default: trustser).")
@click.option("--no-progress", is_flag=True)
@user_errors
def study_command(space, n_trials, storage, study_name, experiment, no_progress) -> None:
    """Search the space for the trust trade-offs (Pareto front); running it again resumes the study."""
    from trustser.study.runner import redact, run_study
    from trustser.study.space import load_space

    study_space = load_space(space)
    trials = _optional_int(n_trials, "--n-trials")
    if study_space.random_init:
        click.secho(f"WARNING: {space} uses RANDOM weights: its numbers are not pretrained results",
                    fg="yellow", err=True)
    result = run_study(study_space, n_trials=trials, storage=_none_if_empty(storage),
                       study_name=_none_if_empty(study_name), experiment=_none_if_empty(experiment),
                       progress=not no_progress)
    click.echo(f"study {result.study_name} in {redact(result.storage)}: {result.evaluated} evaluated, "
               f"{result.reused} reused, {result.failed} failed; MLflow run {result.mlflow_run_id}")
    for error in result.errors[:5]:
        click.echo(f"  failed: {error}", err=True)
    click.echo(f"Pareto front ({len(result.front)}):")
    for row in result.front:
        values = ", ".join(f"{k} {v:.4g}" for k, v in row.values.items())
        click.echo(f"  trial {row.trial}: {row.label}: {values}")


@main.command("recommend")
@click.option("--scenario", required=True, help="edge, cloud, critical, or a path to a scenario YAML file.")
@click.option("--study-name", default=None, help="Study whose Pareto front to choose from (default: the only one).")
@click.option("--storage", default=None, help="Optuna storage URL (default: sqlite:///<cwd>/optuna.db).")
@click.option("--front", "front_file", default=None, help="A pareto.json (logged with every study) instead of a study.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON object (scenario, choice, runner_up, reasons, ...).")
@user_errors
def recommend_command(scenario, study_name, storage, front_file, as_json) -> None:
    """Pick a configuration from a study's Pareto front for a deployment scenario."""
    from trustser.study.pareto import front_rows, load_front
    from trustser.study.runner import open_study, resolve_study_name
    from trustser.study.scenarios import load_scenario, recommend

    chosen = load_scenario(scenario)
    if _none_if_empty(front_file):
        rows, _ = load_front(front_file)
    else:
        storage = _none_if_empty(storage)
        rows = front_rows(open_study(storage, resolve_study_name(storage, _none_if_empty(study_name))))
    rec = recommend(rows, chosen)
    if as_json:
        click.echo(json.dumps(rec.to_dict(), indent=1, default=str))
        return
    click.echo(f"{rec.scenario}: {rec.choice.label}" + (f"  (runner-up: {rec.runner_up.label})" if rec.runner_up else ""))
    for reason in rec.reasons:
        click.echo(f"  - {reason}")


@main.command("report")
@click.option("--study-name", default=None, help="Report a study's configurations.")
@click.option("--storage", default=None, help="Optuna storage URL of the study (default: sqlite:///<cwd>/optuna.db).")
@click.option("--experiment", default=None, help="Report the latest run per backbone of this MLflow experiment.")
@click.option("--dataset", default=None, help="With --experiment: only runs on this dataset.")
@click.option("--out", "out_dir", required=True, help="Folder for report.html, report.md and the PNG figures.")
@click.option("--title", default="TrustSER report", show_default=True)
@user_errors
def report_command(study_name, storage, experiment, dataset, out_dir, title) -> None:
    """Write the trust report (Table 4 layout, scenario picks, Pareto plot, radar charts) as HTML and Markdown."""
    from trustser.errors import ConfigError
    from trustser.report import rows_from_mlflow, rows_from_study, write_report

    if _none_if_empty(experiment) and _none_if_empty(study_name):
        raise ConfigError("give --study-name or --experiment, not both")
    if _none_if_empty(experiment):
        rows, objectives, source = rows_from_mlflow(experiment, _none_if_empty(dataset))
    else:
        rows, objectives, source = rows_from_study(_none_if_empty(study_name), _none_if_empty(storage))
    files = write_report(rows, out_dir, objectives, title=title, source=source)
    click.echo(f"wrote {files.html} and {files.markdown} with {len(files.images)} figures")


if __name__ == "__main__":  # pragma: no cover
    main()
