"""What a loaded corpus contains, as numbers to compare with the method's data table and as a printable table.

``summarize`` is pure (index in, plain dict out: easy to test, to log to MLflow or to dump as JSON);
``format_summary`` only lays that dict out, in the column order of the method's table (neutral, happy, sad, angry,
total), so the counts can be checked against the paper by eye.
"""

from __future__ import annotations

from collections import Counter
from typing import Any, Iterable

from trustser import EMOTIONS
from trustser.corpora.base import GENDERS, Clip, CorpusIndex

UNKNOWN_GENDER = "unknown"
GENDER_ROWS = (*GENDERS, UNKNOWN_GENDER)


def summarize(index: CorpusIndex) -> dict[str, Any]:
    """Counts per gender × class, per fold × partition, and skips per reason."""
    clips = list(index.clips.values())
    by_gender = {g: class_counts(c for c in clips if (c.gender or UNKNOWN_GENDER) == g) for g in GENDER_ROWS}
    by_gender["total"] = class_counts(clips)
    return {
        "corpus": index.name,
        "root": str(index.root),
        "clips": len(clips),
        "speakers": len({c.speaker for c in clips}),
        "by_gender": by_gender,
        "gender_unknown": by_gender[UNKNOWN_GENDER]["total"],
        "folds": [
            {"name": fold.name, "partitions": {p: partition_counts(index, ids) for p, ids in fold.partitions().items()}}
            for fold in index.folds
        ],
        "skipped": dict(Counter(s.reason for s in index.skipped).most_common()),
        "kept_with_caveats": dict(index.caveat_counts().most_common()),
    }


def class_counts(clips: Iterable[Clip]) -> dict[str, int]:
    counts = Counter(c.emotion for c in clips)
    return {**{e: counts.get(e, 0) for e in EMOTIONS}, "total": sum(counts.values())}


def partition_counts(index: CorpusIndex, clip_ids: tuple[str, ...]) -> dict[str, Any]:
    return {
        "clips": len(clip_ids),
        "speakers": len(index.speakers(clip_ids)),
        "classes": class_counts(index.clips[c] for c in clip_ids),
    }


def format_summary(summary: dict[str, Any]) -> str:
    """A plain-text report: the class table by gender, the folds, the skips."""
    lines = [
        f"{summary['corpus']}: {summary['clips']} clips, {summary['speakers']} speakers "
        f"(gender unknown: {summary['gender_unknown']})  root: {summary['root']}",
        "",
    ]
    class_columns = [*EMOTIONS, "total"]
    rows = [
        [gender, *(summary["by_gender"][gender][e] for e in class_columns)]
        for gender in (*GENDER_ROWS, "total")
        if gender != UNKNOWN_GENDER or summary["gender_unknown"]
    ]
    lines += table(["gender", *class_columns], rows)
    fold_rows = [
        [fold["name"], part, counts["clips"], counts["speakers"], *(counts["classes"][e] for e in EMOTIONS)]
        for fold in summary["folds"]
        for part, counts in fold["partitions"].items()
    ]
    lines += ["", *table(["fold", "partition", "clips", "speakers", *EMOTIONS], fold_rows)]
    skipped = summary["skipped"]
    caveats = summary.get("kept_with_caveats") or {}
    if caveats:  # only shown when there are any, so complete corpora read as before
        lines += ["", "kept, metadata missing: " + ", ".join(f"{reason} {n}" for reason, n in caveats.items())]
    lines += ["", "skipped: " + (", ".join(f"{reason} {n}" for reason, n in skipped.items()) if skipped else "none")]
    return "\n".join(lines)


def table(header: list[str], rows: list[list[Any]]) -> list[str]:
    """Left-align the first columns that hold names, right-align the numbers."""
    cells = [header, *[[str(v) for v in row] for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    numeric = [all(isinstance(row[i], int) for row in rows) if rows else False for i in range(len(header))]

    def line(row: list[str]) -> str:
        return "  ".join(c.rjust(w) if num else c.ljust(w) for c, w, num in zip(row, widths, numeric, strict=True))

    return [line(row).rstrip() for row in cells]
