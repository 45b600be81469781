"""The report: Table 4 layout, scenario picks, Pareto plot and radar charts, as HTML and Markdown with PNGs beside
them; rows from a study or from MLflow runs of ``run_experiment``."""

from __future__ import annotations

import math
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

import matplotlib.image
import mlflow
import pytest
from click.testing import CliRunner

from trustser.report import rows_from_mlflow, write_report
from trustser.study.pareto import Candidate, non_dominated
from trustser.study.radar import radar_score, radar_scores
from trustser.study.space import OBJECTIVES


@pytest.fixture(scope="session")
def migrated_mlflow_db(tmp_path_factory) -> Iterator[Path]:
    """An empty MLflow store with its tables created, built once (in memory-backed /dev/shm where there is one:
    the migrations commit hundreds of times)."""
    shm = Path("/dev/shm")
    folder = (
        Path(tempfile.mkdtemp(dir=shm))
        if shm.is_dir() and os.access(shm, os.W_OK)
        else tmp_path_factory.mktemp("mlflow-template")
    )
    path = folder / "mlflow.db"
    here = Path.cwd()
    os.chdir(folder)  # the store's Default experiment points its artifacts at ./mlruns: keep that out of the repo
    try:
        mlflow.MlflowClient(tracking_uri=f"sqlite:///{path}").search_experiments()  # creates and migrates tables
    finally:
        os.chdir(here)
    yield path
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(autouse=True)
def fast_isolated_tracking(migrated_mlflow_db, tmp_path, monkeypatch):
    """Each test's (conftest) MLflow store starts as a copy of a migrated empty one; cwd is tmp_path; no telemetry."""
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    target = Path(os.environ["MLFLOW_TRACKING_URI"].removeprefix("sqlite:///"))
    if not target.exists():
        shutil.copy(migrated_mlflow_db, target)
    monkeypatch.chdir(tmp_path)


def cand(label, uar, gender_acc, asr, eo, gflops) -> Candidate:
    return Candidate(
        label,
        {"backbone": label},
        {"performance": uar, "privacy": gender_acc, "safety": asr, "fairness": eo, "sustainability": gflops},
    )


ROWS = non_dominated(
    [
        cand("whisper_tiny", 0.60, 0.922, 0.789, 0.166, 2.3),
        cand("whisper_small", 0.67, 0.974, 0.610, 0.166, 26.2),
        cand("wavlm_base_plus", 0.68, 0.984, 0.579, 0.168, 33.2),
        cand("apc", 0.55, 0.956, 0.882, 0.209, 2.5),
    ],
    tuple(OBJECTIVES.values()),
)


def test_radar_axes_use_fixed_ranges_with_one_as_most_trustworthy():
    assert radar_score("performance", 0.25) == 0.0 and radar_score("performance", 1.0) == 1.0
    assert radar_score("performance", 0.625) == pytest.approx(0.5)
    assert radar_score("privacy", 0.5) == 1.0 and radar_score("privacy", 1.0) == 0.0
    assert radar_score("privacy", 0.922) == pytest.approx(0.156)
    assert radar_score("safety", 0.789) == pytest.approx(0.211)
    assert radar_score("fairness", 0.166) == pytest.approx(0.834)
    assert radar_score("sustainability", 1.0) == 1.0 and radar_score("sustainability", 100.0) == 0.0
    assert radar_score("sustainability", 10.0) == pytest.approx(0.5)
    assert radar_score("sustainability", 1000.0) == 0.0  # clipped
    assert math.isnan(radar_scores({"performance": 0.7})["safety"])


def test_report_renders_table_4_rows_scenario_picks_and_existing_figures(tmp_path):
    out = tmp_path / "report"
    files = write_report(ROWS, out, title="hand-made", source="a test")
    page = files.html.read_text()
    for row in ROWS:
        assert f"<td>{row.label}</td>" in page
    # Table 4 columns in percent, GFLOPs as is; the paper's GFLOPs from the backbone registry beside ours
    tiny_row = re.search(r"<tr><td>whisper_tiny</td>(.*?)</tr>", page).group(1)
    assert re.findall(r"<td>([^<]*)</td>", tiny_row)[:7] == ["60.0", "92.2", "78.9", "16.6", "2.3", "2.3", "yes"]
    assert "<td>apc</td>" in page and re.search(r"<tr><td>apc</td>.*?<td></td>", page)  # dominated: not Pareto
    for header in ("UAR %", "gender probe acc %", "FGSM ASR %", "equality of odds %", "GFLOPs (6 s)"):
        assert f"<th>{header}</th>" in page
    for scenario in ("edge", "cloud", "critical"):
        assert f"<td>{scenario}</td>" in page
    sources = re.findall(r'<img src="([^"]+)"', page)
    assert {"pareto.png", "radar_overlay.png"} <= set(sources) and len(sources) == 2 + 3  # + a radar per Pareto row
    for name in sources:
        image = matplotlib.image.imread(out / name)
        assert image.shape[0] > 200 and image.shape[1] > 200
    assert sorted(p.name for p in files.images) == sorted(sources)
    markdown = files.markdown.read_text()
    assert (
        "| whisper_tiny | 60.0 | 92.2 | 78.9 | 16.6 | 2.3 |" in markdown and "![Pareto front](pareto.png)" in markdown
    )
    assert files.recommendations["edge"].choice.label == "whisper_tiny"


def test_report_figures_are_logged_when_an_mlflow_run_is_active(tmp_path):
    mlflow.set_experiment("reports")
    with mlflow.start_run() as run:
        write_report(ROWS, tmp_path / "report")
    logged = {a.path for a in mlflow.MlflowClient().list_artifacts(run.info.run_id, "report")}
    assert {"report/report.html", "report/report.md", "report/pareto.png", "report/radar_overlay.png"} <= logged


def log_parent_run(backbone, metrics, dataset="emodb", weights="pretrained", with_fold=True):
    with mlflow.start_run(tags={"backbone": backbone, "dataset": dataset, "weights": weights}) as run:
        mlflow.log_metrics(metrics)
        if with_fold:
            with mlflow.start_run(nested=True, tags={"backbone": backbone, "dataset": dataset, "fold": "fold1"}):
                mlflow.log_metric("test_uar", 0.01)
    return run.info.run_id


def axis_metrics(uar, gender, asr, eo, gflops):
    return {
        "test_uar_mean": uar,
        "privacy_gender_accuracy_mean": gender,
        "safety_fgsm_asr_mean": asr,
        "fairness_equality_of_odds_mean": eo,
        "sustainability_gflops": gflops,
    }


def test_rows_from_mlflow_take_the_latest_parent_run_per_backbone_and_skip_fold_runs(tmp_path):
    from trustser import tracking
    from trustser.cli import main

    tracking.setup_tracking("runs")
    log_parent_run("whisper_tiny", axis_metrics(0.30, 0.9, 0.9, 0.3, 2.3))  # older: superseded
    latest = log_parent_run("whisper_tiny", axis_metrics(0.61, 0.92, 0.79, 0.17, 2.3))
    log_parent_run("apc", {"test_uar_mean": 0.55, "privacy_gender_accuracy_mean": 0.95})  # not yet every axis
    log_parent_run("apc", axis_metrics(0.2, 0.9, 0.9, 0.3, 2.5), dataset="crema_d")  # other corpus: filtered
    rows, _, source = rows_from_mlflow("runs", dataset="emodb")
    assert sorted(r.label for r in rows) == ["apc", "whisper_tiny"] and "runs" in source
    tiny = next(r for r in rows if r.label == "whisper_tiny")
    assert tiny.mlflow_run_id == latest and tiny.values["performance"] == pytest.approx(0.61)
    assert math.isnan(next(r for r in rows if r.label == "apc").value("safety"))
    out = CliRunner().invoke(
        main, ["report", "--experiment", "runs", "--dataset", "emodb", "--out", str(tmp_path / "r")]
    )
    assert out.exit_code == 0, out.output
    page = (tmp_path / "r" / "report.html").read_text()
    assert "<td>whisper_tiny</td><td>61.0</td><td>92.0</td><td>79.0</td>" in page
    assert re.search(r"<tr><td>apc</td><td>55.0</td><td>95.0</td><td>–</td>", page)  # missing shown as –
    out = CliRunner().invoke(main, ["report", "--experiment", "nothing-here", "--out", str(tmp_path / "x")])
    assert out.exit_code == 2 and "nothing-here" in out.output


def test_table_4_cells_show_the_interval_and_the_picks_name_their_ties_and_set_aside_chance_level_rows(tmp_path):
    from test_selection_uncertainty import TIES, USELESS

    files = write_report([*TIES, USELESS], tmp_path / "r", title="with intervals")
    markdown = files.markdown.read_text()
    # mean over folds, then the 95 % interval, in percent; GFLOPs (counted) without one
    assert "| wavlm | 70.0 [66.0–74.0] | 95.0 [93.0–97.0] | 60.0 [55.0–65.0] | 20.0 [15.0–25.0] | 16.0 |" in markdown
    useless = next(line for line in markdown.splitlines() if line.startswith("| useless |"))
    assert "| set aside | UAR 95 % interval [0.210, 0.290] does not clear chance 0.25 |" in useless
    assert "1 set aside as not above chance" in markdown
    for name, rec in files.recommendations.items():
        assert rec.choice.label != "useless" and "useless" in rec.chance_level, name
    critical = next(line for line in markdown.splitlines() if line.startswith("| critical |"))
    assert "| wavlm | small | small (on performance, safety) |" in critical
    page = files.html.read_text()
    assert "<th>statistically indistinguishable</th>" in page and "<td>70.0 [66.0–74.0]</td>" in page


def test_the_pareto_plot_draws_interval_error_bars_and_marks_chance_level_rows():
    from matplotlib.container import ErrorbarContainer

    from test_selection_uncertainty import TIES, USELESS
    from trustser.study.pareto import pareto_figure, set_aside_chance_level

    rows = set_aside_chance_level([*TIES, USELESS], tuple(OBJECTIVES.values()))
    fig = pareto_figure(rows, tuple(OBJECTIVES.values()))
    first = fig.axes[0]  # performance vs privacy: both have intervals
    bars = [c for c in first.containers if isinstance(c, ErrorbarContainer)]
    assert bars and bars[0].has_xerr and bars[0].has_yerr
    assert "chance level (set aside)" in [t.get_text() for t in first.get_legend().get_texts()]
    assert "95 % intervals" in fig._suptitle.get_text()
    plain = pareto_figure(ROWS, tuple(OBJECTIVES.values()))  # no intervals logged: no bars
    assert not any(isinstance(c, ErrorbarContainer) for ax in plain.axes for c in ax.containers)


def test_a_chance_level_radar_shows_safety_and_fairness_as_not_meaningful_rather_than_best():
    from trustser.study.radar import radar_figure

    values = {"performance": 0.25, "privacy": 0.5, "safety": 0.0, "fairness": 0.0, "sustainability": 1.0}
    assert radar_scores(values)["safety"] == radar_scores(values)["fairness"] == 1.0  # the raw scores: "best"
    fig = radar_figure({"useless": values}, "useless", chance_level={"useless"})
    ax = fig.axes[0]
    ticks = [t.get_text() for t in ax.get_xticklabels()]
    assert ticks[2] == "safety\n(not meaningful)" and ticks[3] == "fairness\n(not meaningful)"
    assert ticks[0] == "performance"
    assert list(ax.lines[0].get_ydata()) == pytest.approx([0.0, 1.0, 0.0, 0.0, 1.0, 0.0])  # drawn at 0, not 1
    assert "n/m" in [t.get_text() for t in ax.texts]
