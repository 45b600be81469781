"""The Pareto front of a study: the configurations no other configuration beats on every objective at once.

Rows (``Candidate``) hold a configuration, its objective values by axis name and where it was computed, so the
front can be written as JSON, plotted, handed to ``recommend`` or to the report without Optuna at hand.

Chance-level rows. A configuration whose UAR is not above chance (``uncertainty_rules.chance_level``) is trivially
"fair" and "unattackable", so it can sit on the front without being of any use. The study's objectives stay as they
are (Optuna's front is what it is), but every row says why it is set aside in ``Candidate.excluded``, written to
``pareto.json`` / ``pareto.csv`` and drawn apart in the plots; ``set_aside_chance_level`` recomputes the front
without them (a chance-level row with a perfect ASR can hide a barely useful one), keeping them flagged for lists.
The flag is a record: ``recommend`` judges every row again (with its ``uar_floor``).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from trustser.errors import ConfigError
from trustser.study.space import ALL_OBJECTIVES, Objective, config_label
from trustser.study.uncertainty_rules import chance_level, interval


@dataclass(frozen=True)
class Candidate:
    """One configuration and what it measured: ``values`` maps axis name (performance, ...) to the objective."""

    label: str
    params: dict[str, Any]
    values: dict[str, float]
    trial: int | None = None
    study: str | None = None
    mlflow_run_id: str | None = None
    pareto: bool | None = None
    metrics: dict[str, float] = field(default_factory=dict)  # the rest of the run summary, for limits and reports
    excluded: str | None = None  # why no scenario may pick it (chance-level UAR), None when it may

    def value(self, name: str) -> float:
        """The axis value; an axis the study did not optimise (robustness) is read from the run summary."""
        v = self.values.get(name)
        if v is None and name in ALL_OBJECTIVES:
            v = self.metrics.get(ALL_OBJECTIVES[name].key)
        return float("nan") if v is None else float(v)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "Candidate":
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in d.items() if k in known})


def study_objectives(study) -> tuple[Objective, ...]:
    """The objectives a trustser study optimises, in its value order (stored as a study user attr)."""
    names = study.user_attrs.get("objectives")
    if not names:
        raise ConfigError(f"study '{study.study_name}' was not created by trustser (no 'objectives' user attr)")
    return tuple(ALL_OBJECTIVES[n] for n in names)


def _candidate(trial, objectives: Sequence[Objective], study_name: str, pareto: bool | None) -> Candidate:
    row = Candidate(
        label=config_label(trial.params),
        params=dict(trial.params),
        values={o.name: float(v) for o, v in zip(objectives, trial.values)},
        trial=trial.number,
        study=study_name,
        mlflow_run_id=trial.user_attrs.get("mlflow_run_id"),
        pareto=pareto,
        metrics={k: v for k, v in (trial.user_attrs.get("summary") or {}).items() if v is not None},
    )
    return flag_chance_level([row])[0]


def flag_chance_level(rows: Iterable[Candidate], floor: float | None = None) -> list[Candidate]:
    """The rows with ``excluded`` set to the chance rule's reason (or None), judged again with ``floor``."""
    return [replace(r, excluded=chance_level(r, floor)) for r in rows]


def set_aside_chance_level(
    rows: Sequence[Candidate], objectives: Sequence[Objective], floor: float | None = None
) -> list[Candidate]:
    """Flag chance-level rows (``excluded``) and recompute ``pareto``: the others against each other only, so a
    row hidden by a chance-level one comes back; a chance-level row keeps the flag it has among all rows (so that
    lists of the front can still name it as set aside)."""
    flagged = flag_chance_level(rows, floor)
    among_all = non_dominated(flagged, objectives)
    eligible = iter(non_dominated([r for r in flagged if not r.excluded], objectives))
    return [r if r.excluded else next(eligible) for r in among_all]


def _distinct(trials: Iterable) -> list:
    """One trial per configuration (the earliest): reused trials repeat a configuration and its values."""
    seen, out = set(), []
    for t in sorted(trials, key=lambda t: t.number):
        key = t.user_attrs.get("config_hash") or json.dumps(t.params, sort_keys=True)
        if key not in seen:
            seen.add(key)
            out.append(t)
    return out


def front_rows(study) -> list[Candidate]:
    """The study's Pareto front (Optuna's ``best_trials``), one row per distinct configuration."""
    objectives = study_objectives(study)
    return [_candidate(t, objectives, study.study_name, True) for t in _distinct(study.best_trials)]


def study_rows(study) -> list[Candidate]:
    """Every completed configuration of the study, flagged ``pareto`` when it is on the front."""
    from optuna.trial import TrialState

    objectives = study_objectives(study)
    front = {t.number for t in study.best_trials}
    trials = _distinct(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))
    # a repeated configuration is on the front when any of its trials is
    front_keys = {t.user_attrs.get("config_hash") for t in study.best_trials} - {None}
    return [
        _candidate(t, objectives, study.study_name, t.number in front or t.user_attrs.get("config_hash") in front_keys)
        for t in trials
    ]


def dominates(a: Candidate, b: Candidate, objectives: Sequence[Objective]) -> bool:
    """a is at least as good as b on every objective and strictly better on one (NaN counts as worst)."""
    better = False
    for o in objectives:
        x, y = _oriented(a.value(o.name), o), _oriented(b.value(o.name), o)
        if x < y:
            return False
        better |= x > y
    return better


def _oriented(v: float, o: Objective) -> float:
    if math.isnan(v):
        return -math.inf
    return v if o.higher_is_better else -v


def non_dominated(rows: Sequence[Candidate], objectives: Sequence[Objective]) -> list[Candidate]:
    """The Pareto front of arbitrary rows (e.g. runs read back from MLflow), flagged ``pareto``."""
    out = []
    for r in rows:
        on_front = not any(dominates(o, r, objectives) for o in rows if o is not r)
        out.append(Candidate(**{**r.to_dict(), "pareto": on_front}))
    return out


def front_to_json(rows: Sequence[Candidate], objectives: Sequence[Objective], **extra: Any) -> str:
    return json.dumps(
        {
            **extra,
            "objectives": [{"name": o.name, "key": o.key, "direction": o.direction} for o in objectives],
            "rows": [r.to_dict() for r in rows],
        },
        indent=2,
        default=str,
    )


def front_to_csv(rows: Sequence[Candidate], objectives: Sequence[Objective]) -> str:
    """The front as a table: one row per configuration, its parameters and objective values in their own units
    (rates as fractions, GFLOPs as counted), where it came from, and why it is set aside (``excluded``, empty when
    it is not); the columns are the union of all rows' params."""
    from trustser.tracking import csv_text

    param_names = list(dict.fromkeys(k for r in rows for k in r.params))
    header = [
        "trial",
        "label",
        *param_names,
        *(o.name for o in objectives),
        "pareto",
        "study",
        "mlflow_run_id",
        "excluded",
    ]
    return csv_text(
        header,
        (
            [
                r.trial if r.trial is not None else "",
                r.label,
                *(r.params.get(k, "") for k in param_names),
                *(repr(r.value(o.name)) for o in objectives),
                "" if r.pareto is None else str(bool(r.pareto)).lower(),
                r.study or "",
                r.mlflow_run_id or "",
                r.excluded or "",
            ]
            for r in rows
        ),
    )


def load_front(path: str | Path) -> tuple[list[Candidate], tuple[Objective, ...]]:
    """Read a ``pareto.json`` written by ``front_to_json`` (also logged with every study)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"front file not found: {path}")
    try:
        data = json.loads(path.read_text())
        objectives = tuple(ALL_OBJECTIVES[o["name"]] for o in data["objectives"])
        rows = [Candidate.from_dict(r) for r in data["rows"]]
    except (ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"{path}: not a trustser front file ({exc})") from None
    return rows, objectives


def pareto_figure(rows: Sequence[Candidate], objectives: Sequence[Objective], title: str = "Pareto front"):
    """Pairwise scatter of every objective pair: all configurations grey, the front in colour, labelled by trial
    number (or row index), with 95 % interval error bars where the rows carry them; rows set aside as chance level
    (``excluded``) drawn as black crosses — a 2-D view of a 5-D front, so a front point can look dominated in one
    panel."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pairs = [(a, b) for i, a in enumerate(objectives) for b in objectives[i + 1 :]]
    if not pairs:  # one objective: its values, best first
        pairs = [(objectives[0], None)]
    ncols = min(len(pairs), 5)
    nrows = math.ceil(len(pairs) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.0 * ncols, 2.5 * nrows), dpi=90, squeeze=False)
    for ax in axes.flat[len(pairs) :]:
        ax.axis("off")
    groups = (
        ("dominated", lambda r: not r.pareto and not r.excluded, dict(c="0.7", s=14), "0.8"),
        (
            "Pareto front",
            lambda r: bool(r.pareto) and not r.excluded,
            dict(c="tab:red", s=26, edgecolors="k"),
            "tab:red",
        ),
        ("chance level (set aside)", lambda r: bool(r.excluded), dict(c="k", s=26, marker="x"), "0.4"),
    )
    for ax, (a, b) in zip(axes.flat, pairs):
        for name, member, style, bar_color in groups:
            pts = [r for r in rows if member(r)]
            if not pts:
                continue
            xs = [r.value(a.name) for r in pts]
            ys = [r.value(b.name) for r in pts] if b else list(range(len(pts)))
            xerr = _error_bars(pts, a.name)
            yerr = _error_bars(pts, b.name) if b else None
            if xerr is not None or yerr is not None:
                ax.errorbar(
                    xs, ys, xerr=xerr, yerr=yerr, fmt="none", ecolor=bar_color, elinewidth=0.7, capsize=1.5, zorder=1
                )
            ax.scatter(xs, ys, label=name, zorder=2, **style)
            if name != "dominated":
                for r, x, y in zip(pts, xs, ys):
                    ax.annotate(
                        str(r.trial if r.trial is not None else r.label.split()[0]),
                        (x, y),
                        fontsize=7,
                        xytext=(3, 3),
                        textcoords="offset points",
                    )
        ax.set_xlabel(_axis_label(a), fontsize=8)
        ax.set_ylabel(_axis_label(b) if b else "rank", fontsize=8)
        ax.tick_params(labelsize=7)
    axes.flat[0].legend(fontsize=7, loc="best")
    fig.suptitle(
        title + ("  (bars: 95 % intervals)" if any(_error_bars(rows, o.name) is not None for o in objectives) else ""),
        fontsize=10,
    )
    fig.subplots_adjust(
        left=0.07,
        right=0.98,
        bottom=0.16 if nrows == 1 else 0.09,
        top=0.86 if nrows == 1 else 0.91,
        wspace=0.6,
        hspace=0.45,
    )  # fixed margins: tight_layout costs more than the plot
    return fig


def _error_bars(rows: Sequence[Candidate], axis: str) -> list[list[float]] | None:
    """Matplotlib's asymmetric errors (below, above) from each row's interval; 0 where a row has none (or its
    point lies outside it: the point is the fold mean, the interval is over pooled predictions); None if no row
    has one."""
    below, above = [], []
    for r in rows:
        v, (low, high) = r.value(axis), interval(r, axis)
        ok = all(math.isfinite(x) for x in (v, low, high))
        below.append(max(0.0, v - low) if ok else 0.0)
        above.append(max(0.0, high - v) if ok else 0.0)
    return [below, above] if any(below) or any(above) else None


def _axis_label(o: Objective) -> str:
    return f"{o.label} ({'↑' if o.higher_is_better else '↓'} better)"


def log_front(study) -> list[Candidate]:
    """Log the front as ``pareto.json`` (read back by ``load_front``), ``pareto.csv`` (a table), ``pareto.png`` and
    its radar overlay, and every configuration as ``trials.json``, to the active MLflow run. The front is Optuna's;
    chance-level rows on it carry their reason in ``excluded`` (``recommend`` and the report set them aside)."""
    import matplotlib.pyplot as plt
    import mlflow

    from trustser.study.radar import radar_figure

    objectives = study_objectives(study)
    rows = study_rows(study)
    front = [r for r in rows if r.pareto]
    mlflow.log_text(front_to_json(front, objectives, study=study.study_name), "pareto.json")
    mlflow.log_text(front_to_csv(front, objectives), "pareto.csv")
    mlflow.log_text(front_to_json(rows, objectives, study=study.study_name), "trials.json")
    if rows:
        fig = pareto_figure(rows, objectives, f"study {study.study_name}: Pareto front")
        mlflow.log_figure(fig, "pareto.png")
        plt.close(fig)
        fig = radar_figure(
            {r.label: r.values for r in front},
            f"study {study.study_name}: front",
            chance_level={r.label for r in front if r.excluded},
        )
        mlflow.log_figure(fig, "radar_front.png")
        plt.close(fig)
    return front
