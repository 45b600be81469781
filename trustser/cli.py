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

from trustser.cli_run import OptionalBool, build_run_config, shorthand_options
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
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )
    from trustser.allocator import keep_freed_memory

    logging.getLogger(__name__).info("allocator: %s", keep_freed_memory())  # faster CPU steps, same numbers


@main.command("ls")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list of objects.")
@click.option("--offline", is_flag=True, help="Say what is usable offline (default: HF_HUB_OFFLINE).")
def ls_command(as_json: bool, offline: bool) -> None:
    """List backbones (where their weights are found locally, or what would be downloaded) and datasets.
    Touches no network and hashes nothing."""
    from trustser.backbones import BACKBONES
    from trustser.backbones.weights import plan_weights
    from trustser.corpora import CORPORA
    from trustser.corpora.registry import default_root

    rows = []
    for spec in BACKBONES.values():
        plan = plan_weights(spec, offline=True if offline else None)
        rows.append(
            {
                "name": spec.name,
                "kind": "backbone",
                "family": spec.family,
                "layers": spec.num_layers,
                "hidden_states": spec.num_hidden_states,
                "hidden_size": spec.hidden_size,
                "weights": plan.location if plan.status == "local" else None,
                "weights_status": plan.status,
                "weights_kind": plan.kind,
                "weights_detail": plan.detail,
                "description": spec.description,
            }
        )
    for spec in CORPORA.values():
        root = default_root(spec)
        rows.append(
            {
                "name": spec.name,
                "kind": "dataset",
                "description": spec.description,
                "protocol": spec.protocol,
                "shipped_at": str(root) if root and root.exists() else None,
            }
        )
    if as_json:
        click.echo(json.dumps(rows, indent=1))
        return
    click.echo("backbones:")
    for r in rows:
        if r["kind"] == "backbone":
            click.echo(
                f"  {r['name']:<16} {r['layers']:>2} layers x {r['hidden_size']:<4} weights: {r['weights_detail']}"
            )
    click.echo("datasets:")
    for r in rows:
        if r["kind"] == "dataset":
            click.echo(
                f"  {r['name']:<16} {r['description']}"
                + (f"  [shipped: {r['shipped_at']}]" if r.get("shipped_at") else "")
            )


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
        click.echo(
            f"{r['backbone']:<16} {r['params'] / 1e6:>9.2f} {r['paper_gmacs']:>11.2f} "
            f"{'' if table is None else format(table, '.1f'):>6} {r['flops'] / 1e9:>8.2f} {r['macs'] / 1e9:>7.2f}"
        )
    click.echo(
        "paper GMACs: MACs of Linear/Conv/GRU modules on 6 s (attention products and mel front end not "
        "counted, Whisper on 300 positions); GFLOPs/GMACs: complete count of front end + backbone + head."
    )


@main.command("run")
@shorthand_options
@click.option(
    "--manifest",
    default=None,
    help="A manifest: CSV (path,speaker,gender,emotion[,split|fold]), SpeechBrain "
    "JSON or EmoBox JSONL; absolute paths are read as listed; implies --dataset manifest.",
)
@click.option(
    "--corpus-option",
    "corpus_options",
    multiple=True,
    metavar="KEY=VALUE",
    help="Loader option, repeatable (e.g. merge_excited=false, label_source=intended, emotion_map=joy=happy).",
)
@click.option("--no-reference", is_flag=True, help="Skip the linear reference probe (reference_linear_uar).")
@click.option(
    "--offline",
    is_flag=True,
    help="Download no weights (as HF_HUB_OFFLINE=1): only --weights, packaged and cached weights.",
)
@click.option(
    "--pgd",
    type=OptionalBool(),
    is_flag=False,
    flag_value="true",
    default="",
    help="Also run PGD (about 10x the cost of FGSM). Also accepts true/false.",
)
@click.option("--no-safety", is_flag=True, help="Skip the adversarial attacks.")
@click.option("--no-probes", is_flag=True, help="Skip the privacy probes.")
@click.option("--no-cost", is_flag=True, help="Skip latency / peak-memory measurement (FLOPs are still counted).")
@click.option("--no-progress", is_flag=True)
@user_errors
def run_command(
    config_file,
    assignments,
    manifest,
    corpus_options,
    no_reference,
    offline,
    pgd,
    no_safety,
    no_probes,
    no_cost,
    no_progress,
    **shorthands,
) -> None:
    """Run one backbone over a corpus's folds and log every fold to MLflow.

    Settings come from --config FILE, then the flags given, then --set KEY=VALUE (any setting of the run schema by
    its dotted name: train.lr, trust.snr_db, precision, ...); the rest keep the schema's defaults.
    """
    from trustser.experiment import run_experiment

    extra: list[tuple[str, object]] = []
    if _none_if_empty(manifest):
        extra += [("dataset", "manifest"), ("data_root", manifest)]
    if corpus_options:
        extra.append(("corpus_options", [f"{k}={v}" for k, v in parse_options(corpus_options)]))
    flags = {
        "trust.reference": no_reference,
        "trust.safety": no_safety,
        "trust.probes": no_probes,
        "trust.measure_cost": no_cost,
        "progress": no_progress,
    }
    extra += [(key, False) for key, off in flags.items() if off]
    if offline:
        extra.append(("offline", True))
    config = build_run_config(config_file, shorthands, assignments, extra)
    if pgd and "pgd" not in config.trust.attacks:
        from trustser.config_schema import with_assignments

        config = with_assignments(config, [("trust.attacks", list(config.trust.attacks) + ["pgd"])], "--pgd")
    backbone, dataset = config.backbone, config.dataset
    if config.random_init:
        click.secho(
            f"WARNING: {backbone} runs with RANDOM weights: not a pretrained result (tag weights=random)",
            fg="yellow",
            err=True,
        )
    result = run_experiment(config)
    s = result.summary
    nan = float("nan")
    click.echo(
        f"{backbone} on {dataset}: test UAR {s.get('test_uar_mean', nan):.3f} "
        f"± {s.get('test_uar_std', nan):.3f} (std over {len(result.folds)} fold(s); 95 % interval over all "
        f"test speakers [{s.get('test_uar_ci_low', nan):.3f}, {s.get('test_uar_ci_high', nan):.3f}]); "
        f"linear reference {s.get('reference_linear_uar_mean', nan):.3f}; "
        f"wall time {s['wall_time_s']:.0f} s; MLflow parent run {result.parent_run_id}"
    )
    if "robustness_mean" in s:
        click.echo(
            f"robustness: mean flip rate {s['robustness_mean']:.3f} over "
            f"{s.get('robustness_n_corruptions_mean', nan):.0f} corruption(s), 95 % interval "
            f"[{s.get('robustness_ci_low', nan):.3f}, {s.get('robustness_ci_high', nan):.3f}]; passing "
            f"against random models: {s.get('robustness_n_pass_pooled', nan):.0f} "
            f"(robustness_<corruption>_* in the run)"
        )


def heartbeat_options(fn):
    """--heartbeat, --grace-period, --max-retry: how a dead worker's trial is detected and retried."""
    fn = click.option(
        "--max-retry",
        default=2,
        show_default=True,
        type=click.IntRange(0, 100),
        help="Times a dead worker's trial is queued again.",
    )(fn)
    fn = click.option(
        "--grace-period",
        default=60,
        show_default=True,
        type=click.IntRange(2, None),
        help="Seconds without a heartbeat after which a running trial counts as dead.",
    )(fn)
    return click.option(
        "--heartbeat",
        default=10,
        show_default=True,
        type=click.IntRange(1, None),
        help="Seconds between a running trial's heartbeats.",
    )(fn)


def _echo_front(rows) -> None:
    click.echo(f"Pareto front ({len(rows)}):")
    for row in rows:
        values = ", ".join(f"{k} {v:.4g}" for k, v in row.values.items())
        click.echo(f"  trial {row.trial}: {row.label}: {values}")


@main.command("study")
@click.option("--space", required=True, help="Study space YAML, e.g. studies/quick.yaml or studies/default.yaml.")
@click.option("--n-trials", default=None, help="New trials to run (default: the configurations not yet done).")
@click.option(
    "--storage",
    default=None,
    envvar="TRUSTSER_STORAGE",
    help="Optuna storage URL (default: $TRUSTSER_STORAGE, else sqlite:///<cwd>/optuna.db).",
)
@click.option("--study-name", default=None, help="Study to create or resume (default: the space's name).")
@click.option("--experiment", default=None, help="MLflow experiment name (default: trustser).")
@click.option(
    "--workers",
    default=1,
    show_default=True,
    type=click.IntRange(0, 256),
    help="Worker processes on this machine (1: this process; 0: only create the study and queue its "
    "configurations for `trustser worker`s elsewhere).",
)
@heartbeat_options
@click.option("--no-progress", is_flag=True)
@user_errors
def study_command(
    space, n_trials, storage, study_name, experiment, workers, heartbeat, grace_period, max_retry, no_progress
) -> None:
    """Search the space for the trust trade-offs (Pareto front); running it again resumes the study."""
    from trustser.study.runner import run_study
    from trustser.study.storage import Heartbeat, default_storage, redact
    from trustser.study.space import load_space
    from trustser.study.workers import run_local_workers, runner_from_env

    study_space = load_space(space)
    trials = _optional_int(n_trials, "--n-trials")
    beat = Heartbeat(heartbeat, grace_period, max_retry)
    if study_space.random_init:
        click.secho(
            f"WARNING: {space} uses RANDOM weights: its numbers are not pretrained results", fg="yellow", err=True
        )
    storage = _none_if_empty(storage) or default_storage()
    result = run_study(
        study_space,
        n_trials=trials,
        storage=storage,
        study_name=_none_if_empty(study_name),
        experiment=_none_if_empty(experiment),
        progress=not no_progress,
        heartbeat=beat,
        runner=runner_from_env(),
        work=workers == 1,
    )
    if workers == 1:
        click.echo(
            f"study {result.study_name} in {redact(result.storage)}: {result.evaluated} evaluated, "
            f"{result.reused} reused, {result.failed} failed; MLflow run {result.mlflow_run_id}"
        )
        for error in result.errors[:5]:
            click.echo(f"  failed: {error}", err=True)
        _echo_front(result.front)
        return
    if workers == 0:
        click.echo(
            f"study {result.study_name} in {redact(storage)} is ready (MLflow run {result.mlflow_run_id}); "
            f"work on it from any machine with: trustser worker --storage URL --study-name {result.study_name}"
        )
        return
    if storage.startswith("sqlite"):
        click.secho(
            "note: several processes on one SQLite file wait for each other's writes; PostgreSQL is the "
            "storage made for this (trustser services start, docs/scale-out.md)",
            fg="yellow",
            err=True,
        )
    grid = study_space.sampler.kind == "grid"
    codes = run_local_workers(workers, storage, result.study_name, beat, None if grid else trials, not no_progress)
    # a last pass here: whatever a dead worker left is retried, then the Pareto front is logged once
    run_study(
        study_space,
        n_trials=None if grid else 0,
        storage=storage,
        study_name=result.study_name,
        experiment=_none_if_empty(experiment),
        progress=not no_progress,
        heartbeat=beat,
        runner=runner_from_env(),
        enqueue=False,
    )
    _echo_study_state(storage, result.study_name, result.mlflow_run_id, f"{workers} workers")
    if any(codes):
        raise click.ClickException(f"worker exit codes: {codes}")


def _echo_study_state(storage: str, study_name: str, run_id: str | None, who: str) -> None:
    from collections import Counter

    from trustser.study.pareto import front_rows
    from trustser.study.storage import open_study, redact

    study = open_study(storage, study_name)
    states = Counter(t.state.name for t in study.get_trials(deepcopy=False))
    click.echo(
        f"study {study_name} in {redact(storage)} ({who}): {states['COMPLETE']} complete, {states['FAIL']} "
        f"failed, {states['WAITING'] + states['RUNNING']} queued or running; MLflow run {run_id}"
    )
    _echo_front(front_rows(study))


@main.command("worker")
@click.option(
    "--storage",
    default=None,
    envvar="TRUSTSER_STORAGE",
    help="Optuna storage URL of the study (default: $TRUSTSER_STORAGE, else sqlite:///<cwd>/optuna.db).",
)
@click.option("--study-name", default=None, help="The study to work on (default: the only one in the storage).")
@click.option(
    "--n-trials",
    default=None,
    help="Trials this worker runs at most (random/nsga2 samplers: new ones "
    "to sample; default: for a grid, until its queue is empty; otherwise the grid size).",
)
@heartbeat_options
@click.option("--no-front", is_flag=True, help="Do not log the Pareto front at the end (another process does).")
@click.option("--no-progress", is_flag=True)
@user_errors
def worker_command(storage, study_name, n_trials, heartbeat, grace_period, max_retry, no_front, no_progress) -> None:
    """Work on an existing study: evaluate its queued configurations, and those of dead workers again, until none is
    left. Logs to $MLFLOW_TRACKING_URI, which must be the study's tracking server."""
    from trustser.study.storage import Heartbeat, default_storage, redact
    from trustser.study.workers import run_worker, runner_from_env

    storage = _none_if_empty(storage) or default_storage()
    result = run_worker(
        storage,
        _none_if_empty(study_name),
        _optional_int(n_trials, "--n-trials"),
        Heartbeat(heartbeat, grace_period, max_retry),
        runner_from_env(),
        not no_progress,
        front=not no_front,
    )
    click.echo(
        f"worker on study {result.study_name} in {redact(storage)}: {result.evaluated} evaluated, "
        f"{result.reused} reused, {result.failed} failed"
    )
    for error in result.errors[:5]:
        click.echo(f"  failed: {error}", err=True)


@main.group("services")
def services_group() -> None:
    """A local PostgreSQL (Optuna storage, MLflow backend) and MLflow tracking server (docs/scale-out.md)."""


@services_group.command("start")
@click.option(
    "--dir",
    "directory",
    default="trustser-services",
    show_default=True,
    help="Folder for the cluster, artifacts, logs, PIDs and services.json.",
)
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    help="Interface both servers listen on; anything but loopback exposes them (see --allow).",
)
@click.option("--pg-port", default=5432, show_default=True, type=click.IntRange(0, 65535), help="0: a free port.")
@click.option("--mlflow-port", default=5000, show_default=True, type=click.IntRange(0, 65535), help="0: a free port.")
@click.option(
    "--allow",
    multiple=True,
    metavar="CIDR",
    help="A network whose hosts may connect to PostgreSQL (repeatable; with --host not loopback).",
)
@click.option("--pg-user", default=None, help="OS user running PostgreSQL when started by root (default: postgres).")
@click.option("--no-mlflow", is_flag=True, help="Start PostgreSQL only.")
@click.option("--fast", is_flag=True, help="fsync off: quicker, but a crash can lose the databases (tests, throwaway).")
@click.option("--json", "as_json", is_flag=True, help="Print services.json (password included).")
@user_errors
def services_start(directory, host, pg_port, mlflow_port, allow, pg_user, no_mlflow, fast, as_json) -> None:
    """Start PostgreSQL (initdb and databases optuna, mlflow the first time) and an MLflow server; record PIDs."""
    from pathlib import Path

    from trustser.services import ServiceConfig, Services, is_loopback, redact

    services = Services(directory)
    if not is_loopback(host):
        click.secho(
            f"WARNING: the servers listen on {host}: reachable from the network "
            f"(PostgreSQL only from {', '.join(allow) or 'loopback'}, with the password)",
            fg="yellow",
            err=True,
        )
    info = services.start(
        ServiceConfig(
            Path(directory),
            host=host,
            pg_port=pg_port,
            mlflow_port=mlflow_port,
            allow=tuple(allow),
            pg_user=_none_if_empty(pg_user),
            durable=not fast,
        ),
        mlflow=not no_mlflow,
    )
    if as_json:
        click.echo(json.dumps(info, indent=1))
        return
    pg = info["postgres"]
    click.echo(f"postgres: pid {pg['pid']} on {info['host']}:{pg['port']}, data {pg['data']}")
    click.echo(f"  optuna storage: {redact(info['storage'])}")
    if info.get("mlflow"):
        click.echo(
            f"mlflow:   pid {info['mlflow']['pid']} at {info['tracking_uri']}, artifacts {info['mlflow']['artifacts']}"
        )
    click.echo(f'use them: eval "$(trustser services env --dir {services.dir})"')


@services_group.command("stop")
@click.option("--dir", "directory", default="trustser-services", show_default=True)
@user_errors
def services_stop(directory) -> None:
    """Stop the MLflow server and PostgreSQL started from --dir, by their recorded PIDs."""
    from trustser.services import Services

    for line in Services(directory).stop():
        click.echo(line)


@services_group.command("status")
@click.option("--dir", "directory", default="trustser-services", show_default=True)
@click.option("--json", "as_json", is_flag=True)
@user_errors
def services_status(directory, as_json) -> None:
    """Whether the services of --dir run, on which ports."""
    from trustser.services import Services

    status = Services(directory).status()
    if as_json:
        click.echo(json.dumps(status, indent=1))
        return
    for name in ("postgres", "mlflow"):
        s = status[name]
        click.echo(f"{name}: {'running' if s['running'] else 'stopped'} (pid {s['pid']}, port {s['port']})")


@services_group.command("env")
@click.option("--dir", "directory", default="trustser-services", show_default=True)
@user_errors
def services_env(directory) -> None:
    """Print `export TRUSTSER_STORAGE=... MLFLOW_TRACKING_URI=...` for a shell (eval "$(trustser services env)")."""
    from trustser.services import Services

    for line in Services(directory).env_lines():
        click.echo(line)


@main.command("recommend")
@click.option("--scenario", required=True, help="edge, cloud, critical, or a path to a scenario YAML file.")
@click.option("--study-name", default=None, help="Study whose Pareto front to choose from (default: the only one).")
@click.option("--storage", default=None, help="Optuna storage URL (default: sqlite:///<cwd>/optuna.db).")
@click.option("--front", "front_file", default=None, help="A pareto.json (logged with every study) instead of a study.")
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="Print a JSON object (scenario, choice, runner_up, reasons, excluded, indistinguishable, ...).",
)
@click.option(
    "--uar-floor",
    default=None,
    type=click.FloatRange(0, 1),
    help="Also set aside candidates whose UAR does not clear this floor (interval low end, or the point "
    "value without one); chance (0.25) is always the least bar.",
)
@click.option(
    "--register",
    "register_name",
    default=None,
    metavar="NAME",
    help="Register the pick's model in the MLflow Model Registry as NAME, alias = the scenario's name.",
)
@click.option("--alias", default=None, help="Registry alias (default: the scenario's name).")
@user_errors
def recommend_command(scenario, study_name, storage, front_file, as_json, uar_floor, register_name, alias) -> None:
    """Pick a configuration from a study's Pareto front for a deployment scenario. Candidates not above chance are
    set aside (listed with the reason); the reasons name the candidates statistically indistinguishable from the
    pick on the scenario's high-priority axes."""
    from trustser.study.pareto import load_front, set_aside_chance_level, study_objectives, study_rows
    from trustser.study.storage import open_study, resolve_study_name
    from trustser.study.scenarios import load_scenario, recommend

    chosen = load_scenario(scenario)
    if _none_if_empty(front_file):
        rows, _ = load_front(front_file)
    else:
        storage = _none_if_empty(storage)
        study = open_study(storage, resolve_study_name(storage, _none_if_empty(study_name)))
        # the front without chance-level rows (those on Optuna's front stay, to be listed as set aside)
        rows = [r for r in set_aside_chance_level(study_rows(study), study_objectives(study), uar_floor) if r.pareto]
    rec = recommend(rows, chosen, uar_floor)
    registered = None
    if _none_if_empty(register_name):
        import mlflow

        from trustser import tracking
        from trustser.registry import alias_for, register_pick

        mlflow.set_tracking_uri(tracking.tracking_uri())  # the registry lives in the tracking store
        version = register_pick(rec, register_name, alias)
        registered = {
            "name": version.name,
            "version": version.version,
            "alias": alias_for(alias or rec.scenario),
            "uri": f"models:/{version.name}@{alias_for(alias or rec.scenario)}",
            "source": version.source,
        }
    if as_json:
        click.echo(json.dumps({**rec.to_dict(), "registered": registered}, indent=1, default=str))
        return
    click.echo(
        f"{rec.scenario}: {rec.choice.label}" + (f"  (runner-up: {rec.runner_up.label})" if rec.runner_up else "")
    )
    for reason in rec.reasons:
        click.echo(f"  - {reason}")
    if registered:
        click.echo(f"registered {registered['name']} version {registered['version']} as {registered['uri']}")


@main.command("predict")
@click.argument("model_uri")
@click.argument("clips", nargs=-1, required=True)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object per clip.")
@user_errors
def predict_command(model_uri, clips, as_json) -> None:
    """Emotion and class probabilities of audio CLIPS from a trustser model (models:/NAME@edge, runs:/ID/model)."""
    import mlflow
    import pandas as pd

    from trustser import tracking

    mlflow.set_tracking_uri(tracking.tracking_uri())  # models:/ and runs:/ URIs resolve against it
    try:
        model = mlflow.pyfunc.load_model(model_uri)
    except Exception as exc:  # MLflow raises several types for a bad URI; the user gets one line
        raise TrustserError(f"cannot load model {model_uri}: {str(exc).splitlines()[0] if str(exc) else exc}") from None
    try:
        out = model.predict(pd.DataFrame({"path": list(clips)}))
    except Exception as exc:
        raise TrustserError(str(exc).splitlines()[0]) from None
    for clip, row in zip(clips, out.to_dict("records")):
        if as_json:
            click.echo(json.dumps({"clip": clip, **row}))
        else:
            probs = " ".join(f"{k[5:]}={v:.3f}" for k, v in row.items() if k.startswith("prob_"))
            click.echo(f"{clip}\t{row['emotion']}\t{probs}")


@main.command("report")
@click.option("--study-name", default=None, help="Report a study's configurations.")
@click.option("--storage", default=None, help="Optuna storage URL of the study (default: sqlite:///<cwd>/optuna.db).")
@click.option("--experiment", default=None, help="Report the latest run per backbone of this MLflow experiment.")
@click.option("--dataset", default=None, help="With --experiment: only runs on this dataset.")
@click.option("--out", "out_dir", required=True, help="Folder for report.html, report.md and the PNG figures.")
@click.option("--title", default="TrustSER report", show_default=True)
@click.option(
    "--log-run",
    default=None,
    metavar="RUN_ID",
    help="Log the report and its figures under report/ of this MLflow run (default for a study: the "
    "study's run; for --experiment: none).",
)
@click.option("--no-log", is_flag=True, help="Do not log the report to MLflow.")
@click.option(
    "--uar-floor",
    default=None,
    type=click.FloatRange(0, 1),
    help="Set aside rows whose UAR does not clear this floor, as well as those at chance (0.25).",
)
@user_errors
def report_command(study_name, storage, experiment, dataset, out_dir, title, log_run, no_log, uar_floor) -> None:
    """Write the trust report (Table 4 layout, scenario picks, Pareto plot, radar charts) as HTML and Markdown, and
    log it to MLflow (a study's report to the study's run)."""
    import mlflow

    from trustser import tracking
    from trustser.errors import ConfigError
    from trustser.report import log_report, rows_from_mlflow, rows_from_study, study_run_id, write_report

    if _none_if_empty(experiment) and _none_if_empty(study_name):
        raise ConfigError("give --study-name or --experiment, not both")
    if no_log and _none_if_empty(log_run):
        raise ConfigError("give --log-run or --no-log, not both")
    run_id = None if no_log else _none_if_empty(log_run)
    if _none_if_empty(experiment):
        rows, objectives, source = rows_from_mlflow(experiment, _none_if_empty(dataset))
    else:
        rows, objectives, source = rows_from_study(_none_if_empty(study_name), _none_if_empty(storage))
        if run_id is None and not no_log:
            run_id = study_run_id(_none_if_empty(study_name), _none_if_empty(storage))
    files = write_report(rows, out_dir, objectives, title=title, source=source, uar_floor=uar_floor)
    click.echo(f"wrote {files.html} and {files.markdown} with {len(files.images)} figures")
    if run_id is None:
        return
    mlflow.set_tracking_uri(tracking.tracking_uri())
    try:
        logged = log_report(files, run_id)
    except TrustserError as exc:
        if _none_if_empty(log_run):
            raise
        click.secho(f"note: report not logged to the study's MLflow run: {exc}", fg="yellow", err=True)
        return
    click.echo(f"logged {len(logged)} files under report/ of MLflow run {run_id}")


if __name__ == "__main__":  # pragma: no cover
    main()
