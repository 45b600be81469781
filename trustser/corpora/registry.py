"""The corpus registry: one entry per corpus; the CLI, the study and the tests all read it."""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

from trustser.corpora.base import CorpusIndex, CorpusSpec, check_speaker_disjoint
from trustser.errors import UnknownNameError

CORPORA: dict[str, CorpusSpec] = {}

PROJECT_ROOT = Path(__file__).resolve().parents[2]


def register_corpus(spec: CorpusSpec) -> CorpusSpec:
    if spec.name in CORPORA:
        raise ValueError(f"corpus '{spec.name}' registered twice")
    CORPORA[spec.name] = spec
    return spec


def get_corpus(name: str) -> CorpusSpec:
    try:
        return CORPORA[name]
    except KeyError:
        raise UnknownNameError("dataset", name, list(CORPORA)) from None


def default_root(spec: CorpusSpec) -> Path | None:
    """Where a shipped corpus lives when --data-root is not given (``../shared/data/...`` beside the project)."""
    return (PROJECT_ROOT / spec.default_root).resolve() if spec.default_root else None


def load_corpus(name: str, root: Path | str | None = None, options: Mapping[str, object] | None = None) -> CorpusIndex:
    """Load a corpus's index and folds, and check the folds are speaker-disjoint before anyone trains on them."""
    spec = get_corpus(name)
    resolved = Path(root).expanduser().resolve() if root else default_root(spec)
    if resolved is None:
        from trustser.errors import CorpusNotFoundError

        raise CorpusNotFoundError(f"dataset '{name}' needs --data-root (no shipped copy)")
    index = spec.loader(resolved, dict(options or {}))
    check_speaker_disjoint(index, spec.unidentified_speakers)
    return index
