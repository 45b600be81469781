"""The trust report: the method's Table 4 layout (per configuration: UAR, gender-probe accuracy, FGSM attack
success rate, equality of odds, GFLOPs), the picks for the shipped scenarios, the Pareto plot and radar charts,
written as ``report.html`` and ``report.md`` with PNG files beside them.

Run:  trustser report --study-name quick --out reports/quick        (a study's configurations)
      trustser report --experiment trustser --out reports/runs      (the latest run per backbone in MLflow)

Rows come from a study (every completed configuration, the Pareto front flagged) or from MLflow: the parent runs of
``run_experiment`` (tag ``backbone``, no ``fold`` tag), the latest finished one per (backbone, dataset, weights,
unfreeze_top). Rates are shown in percent as in the paper's Table 4, each with its 95 % interval where the run
logged one (``90.1 [87.3–92.6]``: the mean over folds, then the speaker-level bootstrap interval over the pooled test
predictions); the Pareto plot draws the same intervals as error bars. Radar normalisation: ``trustser.study.radar``.

Uncertainty and chance (``trustser.study.uncertainty_rules``): rows whose UAR is not above chance are set aside —
marked in the table, left out of the front and of every scenario pick, their radar's safety and fairness drawn as
"not meaningful"; the scenario table names the candidates statistically indistinguishable from each pick.

MLflow: ``write_report`` logs every file it wrote under ``report/`` of the active run, if there is one;
``log_report`` does the same for any run by id, finished or not (``trustser report --study-name`` logs to the
study's run, ``--log-run ID`` to another, ``--no-log`` to none), so the figures sit beside the study they describe.
"""

from __future__ import annotations

import html
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from trustser.errors import ConfigError, TrustserError
from trustser.study.pareto import Candidate, non_dominated, pareto_figure, set_aside_chance_level
from trustser.study.radar import radar_figure
from trustser.study.scenarios import SHIPPED, Recommendation, load_scenario, recommend
from trustser.study.space import OBJECTIVES, Objective
from trustser.study.uncertainty_rules import CHANCE_MARGIN, CHANCE_UAR, has_interval, interval
from trustser.metrics.verdicts import FLIP_SHARE_OF_CHANCE, describe
from trustser.study.radar import OPTIONAL_AXES

# (axis, column title, scale, format): Table 4's columns, performance first
COLUMNS = (
    ("performance", "UAR %", 100, "{:.1f}"),
    ("privacy", "gender probe acc %", 100, "{:.1f}"),
    ("safety", "FGSM ASR %", 100, "{:.1f}"),
    ("fairness", "equality of odds %", 100, "{:.1f}"),
    ("sustainability", "GFLOPs (6 s)", 1, "{:.1f}"),
)
ROBUSTNESS_COLUMN = ("robustness", "corruption flip rate %", 100, "{:.1f}")  # shown when some row measured it
MAX_RADARS = 24  # per-candidate radar charts (Pareto rows first)
MAX_OVERLAY = 10


@dataclass
class ReportFiles:
    html: Path
    markdown: Path
    images: list[Path] = field(default_factory=list)
    recommendations: dict[str, Recommendation | str] = field(default_factory=dict)


def rows_from_study(study_name: str | None, storage: str | None) -> tuple[list[Candidate], tuple[Objective, ...], str]:
    from trustser.study.pareto import study_objectives, study_rows
    from trustser.study.storage import default_storage, open_study, redact, resolve_study_name

    name = resolve_study_name(storage, study_name)
    study = open_study(storage, name)
    rows = study_rows(study)
    if not rows:
        raise TrustserError(f"study '{name}' has no completed trials yet")
    return rows, study_objectives(study), f"Optuna study '{name}' in {redact(storage or default_storage())}"


def study_run_id(study_name: str | None, storage: str | None) -> str | None:
    """The study's current MLflow run (its user attr ``mlflow_run_id``; None for a study without one)."""
    from trustser.study.storage import open_study, resolve_study_name

    return open_study(storage, resolve_study_name(storage, study_name)).user_attrs.get("mlflow_run_id")


def log_report(files: ReportFiles, run_id: str, artifact_path: str = "report") -> list[str]:
    """Log the report's files (HTML, Markdown, figures; not whatever else lies in its folder) under
    ``artifact_path`` of MLflow run ``run_id``, which need not be active. Returns the artifact paths."""
    import mlflow

    client = mlflow.MlflowClient()
    try:
        client.get_run(run_id)
    except Exception as exc:
        raise TrustserError(
            f"cannot log the report to MLflow run {run_id} in {mlflow.get_tracking_uri()}: "
            f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"
        ) from None
    logged = []
    for path in (files.html, files.markdown, *files.images):
        client.log_artifact(run_id, str(path), artifact_path)
        logged.append(f"{artifact_path}/{path.name}")
    return logged


def rows_from_mlflow(experiment: str, dataset: str | None = None) -> tuple[list[Candidate], tuple[Objective, ...], str]:
    """The latest finished ``run_experiment`` parent run per (backbone, dataset, weights, unfreeze_top)."""
    import mlflow

    from trustser import tracking

    tracking.setup_tracking(experiment)
    client = mlflow.MlflowClient()
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        raise ConfigError(f"no MLflow experiment '{experiment}' in {mlflow.get_tracking_uri()}")
    runs = client.search_runs(
        [exp.experiment_id],
        filter_string="attributes.status = 'FINISHED'",
        order_by=["attributes.start_time DESC"],
        max_results=5000,
    )
    rows: dict[tuple, Candidate] = {}
    for run in runs:
        tags, params = run.data.tags, run.data.params
        if "backbone" not in tags or "fold" in tags or (dataset and tags.get("dataset") != dataset):
            continue
        key = (tags["backbone"], tags.get("dataset"), tags.get("weights"), params.get("unfreeze_top", "0"))
        if key in rows:
            continue
        label = tags["backbone"] + ("" if key[3] in ("0", None) else f" unfreeze_top={key[3]}")
        label += f" [{tags.get('dataset')}]" if not dataset else ""
        label += " (random weights)" if tags.get("weights") == "random" else ""
        metrics = run.data.metrics
        rows[key] = Candidate(
            label=label,
            params={"backbone": key[0], "dataset": key[1], "weights": key[2], "unfreeze_top": key[3]},
            values={o.name: metrics.get(o.key, float("nan")) for o in OBJECTIVES.values()},
            mlflow_run_id=run.info.run_id,
            metrics=dict(metrics),
        )
    if not rows:
        raise TrustserError(
            f"no finished trustser runs in MLflow experiment '{experiment}'"
            + (f" for dataset '{dataset}'" if dataset else "")
        )
    objectives = tuple(OBJECTIVES.values())
    measured = tuple(o for o in objectives if any(math.isfinite(r.value(o.name)) for r in rows.values()))
    ordered = sorted(rows.values(), key=lambda r: r.label)
    return (
        non_dominated(ordered, measured or objectives),
        objectives,
        f"MLflow experiment '{experiment}' ({mlflow.get_tracking_uri()})",
    )


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.=-]+", "_", text).strip("_")[:80]


def _cell(row: Candidate, axis: str, scale: float, fmt: str) -> str:
    """The value, then its 95 % interval where one was logged: ``90.1 [87.3–92.6]``."""
    v = row.value(axis)
    if not math.isfinite(v):
        return "–"
    if not has_interval(row, axis):
        return fmt.format(v * scale)
    low, high = interval(row, axis)
    return f"{fmt.format(v * scale)} [{fmt.format(low * scale)}–{fmt.format(high * scale)}]"


def _paper_gflops(row: Candidate) -> str:
    from trustser.backbones import BACKBONES

    spec = BACKBONES.get(str(row.params.get("backbone")))
    return f"{spec.paper.gflops_6s:.1f}" if spec and spec.paper else "–"  # the paper's "GFLOPs" are MACs


def _recommendations(
    rows: Sequence[Candidate], scenarios: Sequence[str], uar_floor: float | None = None
) -> dict[str, Recommendation | str]:
    front = [r for r in rows if r.pareto] or list(rows)
    out: dict[str, Recommendation | str] = {}
    for name in scenarios:
        try:
            out[name] = recommend(front, load_scenario(name), uar_floor)
        except TrustserError as exc:
            out[name] = str(exc)
    return out


def write_report(
    rows: Sequence[Candidate],
    out_dir: str | Path,
    objectives: Sequence[Objective] | None = None,
    title: str = "TrustSER report",
    source: str = "",
    scenarios: Sequence[str] = SHIPPED,
    uar_floor: float | None = None,
) -> ReportFiles:
    """Write report.html, report.md and the PNG figures into ``out_dir``; log them if an MLflow run is active.
    Chance-level rows (or rows not above ``uar_floor``) are set aside: flagged, and the front recomputed without
    them (``pareto.set_aside_chance_level``)."""
    import matplotlib.pyplot as plt
    import mlflow

    if not rows:
        raise TrustserError("nothing to report: no rows")
    objectives = tuple(objectives or OBJECTIVES.values())
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rows = sorted(
        set_aside_chance_level(rows, objectives, uar_floor), key=lambda r: (not r.pareto, bool(r.excluded), r.label)
    )
    front = [r for r in rows if r.pareto]
    at_chance = {r.label for r in rows if r.excluded}
    images: list[Path] = []

    def save(fig, name: str) -> Path:
        path = out / name
        fig.savefig(path)
        plt.close(fig)
        images.append(path)
        return path

    pareto_png = save(pareto_figure(rows, objectives, title + ": Pareto front"), "pareto.png")
    recs = _recommendations(rows, scenarios, uar_floor)
    overlay_rows = (
        front
        if 0 < len(front) <= MAX_OVERLAY
        else list({r.choice.label: r.choice for r in recs.values() if isinstance(r, Recommendation)}.values())
        or rows[:MAX_OVERLAY]
    )
    overlay_png = save(
        radar_figure({r.label: _profile(r) for r in overlay_rows}, "trust profiles (overlaid)", chance_level=at_chance),
        "radar_overlay.png",
    )
    radars = [
        (
            r,
            save(
                radar_figure({r.label: _profile(r)}, r.label, chance_level=at_chance),
                f"radar_{i:02d}_{_slug(r.label)}.png",
            ),
        )
        for i, r in enumerate((front or rows)[:MAX_RADARS])
    ]

    html_path, md_path = out / "report.html", out / "report.md"
    page = _html(
        title,
        source,
        rows,
        recs,
        pareto_png,
        overlay_png,
        radars,
        sum(not r.excluded for r in front) if front else len(rows),
    )
    markdown = _markdown(title, source, rows, recs, pareto_png, overlay_png, radars)
    cross = cross_corpus_tables(rows)
    if cross is not None:  # runs with --test-dataset: the train x test matrix
        markdown = markdown.rstrip() + "\n\n" + cross[0] + "\n"
        page = page.replace("</body></html>", cross[1] + "\n</body></html>")
    html_path.write_text(page)
    md_path.write_text(markdown)
    files = ReportFiles(html_path, md_path, images, recs)
    if mlflow.active_run() is not None:
        log_report(files, mlflow.active_run().info.run_id)
    return files


CROSS_NOTE = (
    "Cross-corpus UAR: rows are configurations and the corpus they were trained on, columns the corpus "
    "tested; the training corpus's own column is its within-corpus test UAR (held-out speakers), the others "
    "are the same fold models tested on all of another corpus (trustser.cross_corpus), mean over folds."
)


def cross_corpus_tables(rows: Sequence[Candidate]) -> tuple[str, str] | None:
    """The train x test UAR matrix (Markdown, HTML) over the rows that logged a cross-corpus test; None without."""
    from trustser.cross_corpus import cross_matrix

    entries = []
    for r in rows:
        dataset = r.params.get("dataset") or r.metrics.get("dataset") or "train"
        cells = cross_matrix([{"dataset": str(dataset), "metrics": r.metrics}]).get(str(dataset), {})
        if len(cells) > 1 or any(k != dataset for k in cells):
            entries.append((f"{r.label} [{dataset}]" if f"[{dataset}]" not in r.label else r.label, cells))
    if not entries:
        return None
    columns = sorted({c for _, cells in entries for c in cells})
    fmt = lambda v: "—" if v is None or not math.isfinite(v) else f"{100 * v:.1f}"  # noqa: E731
    md = [
        "## Cross-corpus UAR % (train × test)",
        "",
        CROSS_NOTE,
        "",
        "| configuration [trained on] | " + " | ".join(columns) + " |",
        "|---|" + "---|" * len(columns),
    ]
    md += ["| " + label + " | " + " | ".join(fmt(cells.get(c)) for c in columns) + " |" for label, cells in entries]
    page = [
        "<h2>Cross-corpus UAR % (train &times; test)</h2>",
        f"<p>{html.escape(CROSS_NOTE)}</p>",
        "<table>",
        "<tr><th>configuration [trained on]</th>" + "".join(f"<th>{html.escape(c)}</th>" for c in columns) + "</tr>",
    ]
    page += [
        "<tr><td>" + html.escape(label) + "</td>" + "".join(f"<td>{fmt(cells.get(c))}</td>" for c in columns) + "</tr>"
        for label, cells in entries
    ]
    page.append("</table>")
    return "\n".join(md), "\n".join(page)


NORMALISATION_NOTE = (
    "Radar axes are normalised to fixed ranges (1 = most trustworthy): performance (UAR − 0.25)/0.75; "
    "privacy (1 − gender-probe accuracy)/0.5; safety 1 − ASR; fairness 1 − equality-of-odds gap; "
    "sustainability 1 − log10(GFLOPs)/2 (1 → 100 GFLOPs); robustness (a sixth spoke where measured) "
    "1 − mean corruption flip rate. GFLOPs count FLOPs (2 × MACs); the "
    "paper's Table 4 column, shown beside ours, counts MACs."
)
RULE_NOTE = (
    "Scenario rule: candidates not above chance set aside, then hard limits; then each axis min–max "
    "normalised over the Pareto candidates (1 = best), weighted high=3, medium=2, low=1; ties by the "
    "higher-priority axes, then by name. 'Statistically indistinguishable': the candidates whose 95 % "
    "intervals overlap the pick's on every high-priority axis (or the highest level the scenario has); "
    "the data do not separate them from the pick."
)
INTERVAL_NOTE = (
    "Cells: the mean over folds, then [the speaker-level bootstrap 95 % interval over the pooled test "
    f"predictions] where the run logged one. A row whose UAR interval does not clear chance "
    f"({CHANCE_UAR:g}; without an interval, a UAR within {CHANCE_MARGIN:g} of it) is set aside: it is "
    "trivially fair and unattackable, so it is left out of the front and the picks, and its radar shows "
    "safety and fairness as not meaningful."
)


VERDICT_NOTE = (
    "Verdicts (ser-tests style, trustser.metrics.verdicts), on the pooled test clips of all folds: each "
    "figure against the same figure for class-prior random models on the same clips. Fairness passes "
    "when the equality-of-odds gap is no larger than the random models' 95th percentile; a corruption "
    f"passes when its flip rate is at most {FLIP_SHARE_OF_CHANCE:g} × the random models' (1 − Σ p²) and "
    "its UAR drop no larger than their 95th percentile. 'n/a': not measured or undefined (one gender)."
)


def _profile(r: Candidate) -> dict[str, float]:
    """The radar's values: the study's axes, and robustness where the run measured it."""
    return {**r.values, **{a: r.value(a) for a in OPTIONAL_AXES if math.isfinite(r.value(a))}}


def _columns(rows: Sequence[Candidate]) -> tuple:
    return COLUMNS + ((ROBUSTNESS_COLUMN,) if any(math.isfinite(r.value("robustness")) for r in rows) else ())


def _verdicts(r: Candidate) -> str:
    """``fairness pass; robustness 4 of 5 pass (fail: babble_snr10)`` from the run summary."""
    m = r.metrics
    parts = [f"fairness {describe(m.get('fairness_equality_of_odds_pass'))}"]
    if "robustness_pass" in m:
        names = sorted(
            k[len("robustness_") : -len("_pass")]
            for k in m
            if re.fullmatch(r"robustness_.+_pass", k)
            and not k.endswith(("_flip_rate_pass", "_uar_drop_pass"))
            and k != "robustness_pass"
        )
        failed = [n for n in names if m.get(f"robustness_{n}_pass") == 0.0]
        passed = sum(m.get(f"robustness_{n}_pass") == 1.0 for n in names)
        parts.append(f"robustness {passed} of {len(names)} pass" + (f" (fail: {', '.join(failed)})" if failed else ""))
    return "; ".join(parts)


def _table_rows(rows: Sequence[Candidate]) -> list[list[str]]:
    out = []
    for r in rows:
        where = f"trial {r.trial}" if r.trial is not None else (r.mlflow_run_id or "")[:8]
        pareto = ("set aside" if r.excluded else "yes") if r.pareto else ""
        out.append(
            [
                r.label,
                *(_cell(r, a, s, f) for a, _, s, f in _columns(rows)),
                _paper_gflops(r),
                pareto,
                r.excluded or "",
                _verdicts(r),
                where,
            ]
        )
    return out


def _header(rows: Sequence[Candidate]) -> list[str]:
    return [
        "configuration",
        *(c[1] for c in _columns(rows)),
        "paper Table 4 (GMACs)",
        "Pareto",
        "set aside (why)",
        "verdicts vs random models",
        "source",
    ]


HEADER = _header([])
REC_HEADER = [
    "scenario",
    "priorities",
    "choice",
    "runner-up",
    "statistically indistinguishable",
    "paper's pick",
    "reasons",
]


def _rec_cells(name: str, rec: Recommendation | str) -> list[str]:
    scenario = load_scenario(name)
    priorities = ", ".join(f"{a} {lvl}" for a, lvl in scenario.priorities)
    if isinstance(rec, str):
        return [name, priorities, "–", "–", "–", scenario.paper_pick or "", rec]
    ties = (
        f"{', '.join(rec.indistinguishable)} (on {', '.join(rec.decisive_axes)})"
        if rec.indistinguishable
        else "none"
        if rec.runner_up
        else "–"
    )
    return [
        name,
        priorities,
        rec.choice.label,
        rec.runner_up.label if rec.runner_up else "–",
        ties,
        scenario.paper_pick or "",
        "; ".join(rec.reasons),
    ]


def _set_aside_text(rows: Sequence[Candidate]) -> str:
    n = sum(1 for r in rows if r.excluded)
    return f"; {n} set aside as not above chance" if n else ""


def _html(title, source, rows, recs, pareto_png, overlay_png, radars, n_front) -> str:
    e = html.escape

    def table(header, body):
        head = "".join(f"<th>{e(h)}</th>" for h in header)
        lines = "".join("<tr>" + "".join(f"<td>{e(c)}</td>" for c in row) + "</tr>\n" for row in body)
        return f"<table>\n<tr>{head}</tr>\n{lines}</table>"

    rec_rows = [_rec_cells(n, r) for n, r in recs.items()]
    radar_imgs = "\n".join(
        f'<figure><img src="{e(p.name)}" alt="radar {e(r.label)}"><figcaption>{e(r.label)}</figcaption></figure>'
        for r, p in radars
    )
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{e(title)}</title>
<style>body{{font-family:sans-serif;margin:2em;max-width:1200px}} table{{border-collapse:collapse;font-size:13px}}
td,th{{border:1px solid #ccc;padding:3px 7px;text-align:right}} td:first-child,th:first-child{{text-align:left}}
figure{{display:inline-block;margin:4px}} img{{max-width:100%}}</style></head>
<body>
<h1>{e(title)}</h1>
<p>Source: {e(source)}. {len(rows)} configuration(s), {n_front} on the Pareto front{e(_set_aside_text(rows))}.
Lower is better for every column except UAR.</p>
<h2>Trust metrics (Table 4 layout)</h2>
<p>{e(INTERVAL_NOTE)} {e(VERDICT_NOTE)}</p>
{table(_header(rows), _table_rows(rows))}
<h2>Scenario picks</h2>
<p>{e(RULE_NOTE)}</p>
{table(REC_HEADER, rec_rows)}
<h2>Pareto front</h2>
<img src="{e(pareto_png.name)}" alt="Pareto front">
<h2>Trust profiles</h2>
<p>{e(NORMALISATION_NOTE)}</p>
<img src="{e(overlay_png.name)}" alt="radar overlay">
<div>{radar_imgs}</div>
</body></html>
"""


def _markdown(title, source, rows, recs, pareto_png, overlay_png, radars) -> str:
    def table(header, body):
        esc = [[str(c).replace("|", "\\|") for c in row] for row in body]
        return "\n".join(
            [
                "| " + " | ".join(header) + " |",
                "|" + "---|" * len(header),
                *("| " + " | ".join(row) + " |" for row in esc),
            ]
        )

    lines = [
        f"# {title}",
        "",
        f"Source: {source}. {len(rows)} configuration(s){_set_aside_text(rows)}.",
        "",
        "## Trust metrics (Table 4 layout)",
        "",
        INTERVAL_NOTE,
        "",
        VERDICT_NOTE,
        "",
        table(_header(rows), _table_rows(rows)),
        "",
        "## Scenario picks",
        "",
        RULE_NOTE,
        "",
        table(REC_HEADER, [_rec_cells(n, r) for n, r in recs.items()]),
        "",
        "## Pareto front",
        "",
        f"![Pareto front]({pareto_png.name})",
        "",
        "## Trust profiles",
        "",
        NORMALISATION_NOTE,
        "",
        f"![radar overlay]({overlay_png.name})",
        "",
    ]
    lines += [f"![{r.label}]({p.name})" for r, p in radars]
    return "\n".join(lines) + "\n"


__all__ = ["ReportFiles", "log_report", "rows_from_mlflow", "rows_from_study", "study_run_id", "write_report"]
