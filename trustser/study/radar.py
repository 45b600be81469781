"""Trust profiles: radar charts over the method's five axes, larger area = more trustworthy.

Normalisation (``radar_score``, in ``trustser.axes`` beside the axes so that a run's trust profile uses it without
importing the study; fixed ranges, so a candidate's shape never depends on what it is compared with; 1 = best, values
clipped to [0, 1]; rates are fractions, not percent):

- performance   (UAR − 0.25) / 0.75          chance level of 4 balanced classes → 0, perfect recall → 1
- privacy       (1 − acc) / 0.5              gender probe at chance (0.5) → 1, a perfect probe → 0
- safety        1 − FGSM attack success rate
- fairness      1 − equality-of-odds gap
- sustainability 1 − log10(GFLOPs) / 2       1 GFLOP → 1, 100 GFLOPs → 0 (log decades; ``sustainability_gflops``
                                             counts FLOPs = 2 × MACs, about 5–84 over the registry; the paper's
                                             Table 4 figures, 2.3–41.7, are MACs)
- robustness    1 − mean flip rate           optional sixth spoke, drawn when a profile carries it (the corruption
                                             suite ran): no prediction changed → 1, every one → 0

A missing axis is drawn at 0 and its label says "n/a". A chance-level candidate (``chance_level`` labels: its UAR
is not above chance, ``trustser.study.uncertainty_rules.chance_level``) answers the same whatever the speaker or the
noise, so its perfect safety and fairness are no achievement: those axes are drawn at 0 with a cross, annotated
"n/m", and labelled "not meaningful" (in an overlay: its profile dashed and hatched), never as best.
"""

from __future__ import annotations

import math
from typing import Collection, Mapping

from trustser.axes import (  # noqa: F401 (re-exported)
    AXES,
    CHANCE_GENDER,
    GFLOPS_DECADES,
    MEANINGLESS_AT_CHANCE,
    OPTIONAL_AXES,
    radar_score,
    radar_scores,
)


def drawn_axes(profiles: Mapping[str, Mapping[str, float]]) -> tuple[str, ...]:
    """The five axes, then each optional one some profile measured."""
    extra = tuple(
        a
        for a in OPTIONAL_AXES
        if any(math.isfinite(v) for v in (p.get(a, float("nan")) for p in profiles.values()) if v is not None)
    )
    return AXES + extra


def radar_figure(
    profiles: Mapping[str, Mapping[str, float]],
    title: str = "trust profile",
    max_legend: int = 10,
    chance_level: Collection[str] = (),
):
    """One radar with every profile overlaid (raw axis values in, normalised here); a single profile is also
    annotated with its scores. Profiles named in ``chance_level`` get safety and fairness "not meaningful"."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    axes = drawn_axes(profiles)
    angles = np.linspace(0, 2 * np.pi, len(axes), endpoint=False).tolist()
    fig = plt.figure(figsize=(5.0, 5.4 if len(profiles) > 1 else 4.6), dpi=100)
    ax = fig.add_subplot(111, projection="polar")
    ax.set_theta_offset(math.pi / 2)  # performance on top, the axes clockwise
    ax.set_theta_direction(-1)
    missing = set()
    meaningless = set()
    colors = plt.get_cmap("tab10")
    for i, (label, values) in enumerate(profiles.items()):
        scores = {a: radar_score(a, values.get(a)) for a in axes}
        missing |= {a for a, s in scores.items() if math.isnan(s)}
        at_chance = label in chance_level
        blank = set(MEANINGLESS_AT_CHANCE) if at_chance else set()
        meaningless |= blank
        r = [0.0 if math.isnan(scores[a]) or a in blank else scores[a] for a in axes]
        color = colors(i % 10)
        legend = f"{label} (chance level: safety, fairness not meaningful)" if at_chance else label
        ax.plot(
            angles + angles[:1],
            r + r[:1],
            color=color,
            linewidth=1.4,
            linestyle="--" if at_chance else "-",
            label=legend if i < max_legend else None,
        )
        ax.fill(angles + angles[:1], r + r[:1], color=color, alpha=0.12, hatch="//" if at_chance else None)
        for angle, a in zip(angles, axes):
            if a in blank:
                ax.plot([angle], [0.0], marker="x", color=color, markersize=9, markeredgewidth=2)
        if len(profiles) == 1:
            for angle, s, a in zip(angles, r, axes):
                ax.annotate(
                    "n/m" if a in blank else f"{s:.2f}",
                    (angle, s),
                    fontsize=7,
                    xytext=(2, 2),
                    textcoords="offset points",
                )
    ax.set_xticks(angles, [_tick(a, a in missing, a in meaningless, len(profiles) > 1) for a in axes], fontsize=8)
    ax.set_ylim(0, 1)
    ax.set_yticks([0.25, 0.5, 0.75, 1.0], ["", "0.5", "", "1"], fontsize=6)
    single_at_chance = len(profiles) == 1 and meaningless
    ax.set_title(
        title + ("\nchance-level UAR: safety and fairness not meaningful" if single_at_chance else ""),
        fontsize=9,
        pad=14,
    )
    if len(profiles) > 1:
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.08), ncol=2, fontsize=7, frameon=False)
    fig.subplots_adjust(
        left=0.12, right=0.88, top=0.82 if single_at_chance else 0.86, bottom=0.22 if len(profiles) > 1 else 0.08
    )
    return fig


def _tick(axis: str, missing: bool, meaningless: bool, overlay: bool) -> str:
    if meaningless:
        return axis + ("\n(dashed: not meaningful)" if overlay else "\n(not meaningful)")
    return axis + (" (n/a)" if missing else "")
