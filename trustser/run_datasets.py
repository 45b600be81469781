"""The corpus a run used, logged as MLflow dataset inputs.

Every run logs the corpus it used as an MLflow dataset input (the UI's Dataset column): the parent run the
whole corpus (context ``corpus``), each fold run its ``train`` / ``validation`` / ``test`` subsets. A dataset is the
clip table (clip id, path, speaker, gender, emotion, content hash; on the parent also each clip's partition in every
fold), named after the corpus (``emodb``, ``emodb/fold1/train``; a manifest corpus: ``manifest:<file name>``), with
the data root or manifest file as its source and a digest over each clip's id, content hash (sha1 of the file) and
labels: two runs on different versions of a corpus show different digests. The parent also keeps the table as
``dataset/clips.csv``. The content hashes are computed once more after feature extraction (the cache already hashes
every clip but does not hand the hashes out; the files are then in the page cache).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trustser.corpora import CorpusIndex, Fold
from trustser.run_config import RunConfig

log = logging.getLogger(__name__)

CLIP_COLUMNS = ("clip_id", "path", "speaker", "gender", "emotion", "sha1")


@dataclass(frozen=True)
class CorpusTable:
    """The clips a run used, as its MLflow dataset input: one row per clip (``CLIP_COLUMNS``, then the clip's
    partition in every fold of the corpus, "" where a fold leaves it out), with the dataset's name, source and
    digest."""

    name: str
    source: str
    frame: Any  # pandas.DataFrame
    digest: str

    def subset(self, clip_ids: tuple[str, ...] | list[str], partition: str):
        wanted = set(clip_ids)
        return self.frame.loc[self.frame["clip_id"].isin(wanted), list(CLIP_COLUMNS)].assign(partition=partition)


def corpus_table(index: CorpusIndex, config: RunConfig) -> CorpusTable:
    """The corpus as loaded and extracted (clips with unusable audio are gone), each file hashed once more."""
    import pandas as pd

    from trustser.features import clip_digest

    rows = [
        (cid, str(clip.path), clip.speaker, clip.gender or "", clip.emotion, clip_digest(clip.path))
        for cid, clip in sorted(index.clips.items())
    ]
    frame = pd.DataFrame(rows, columns=list(CLIP_COLUMNS))
    for fold in index.folds:
        where = {cid: part for part, ids in fold.partitions().items() for cid in ids}
        frame[fold.name] = [where.get(cid, "") for cid in frame["clip_id"]]
    source = corpus_source(index, config)
    name = f"manifest:{Path(source).name}" if index.name == "manifest" else index.name
    return CorpusTable(name, source, frame, table_digest(frame))


def corpus_source(index: CorpusIndex, config: RunConfig) -> str:
    """Where the corpus came from: the manifest file for a manifest corpus, else its data root."""
    if index.name == "manifest" and config.data_root:
        from trustser.corpora.manifest import manifest_path

        try:
            return str(manifest_path(Path(config.data_root).expanduser().resolve(), dict(config.corpus_options)))
        except Exception:  # it was found a moment ago; should it be gone now, the data root still says where
            pass
    return str(index.root)


def table_digest(frame: Any) -> str:
    """Digest of a clip table: its clips' ids, content hashes and labels, in clip-id order (MLflow keeps up to 36
    characters)."""
    import hashlib

    h = hashlib.sha256()
    for row in sorted(frame[["clip_id", "sha1", "speaker", "gender", "emotion"]].itertuples(index=False)):
        h.update(("\t".join(map(str, row)) + "\n").encode())
    return h.hexdigest()[:16]


def mlflow_dataset(frame: Any, name: str, source: str, digest: str) -> Any:
    import warnings

    import mlflow

    with warnings.catch_warnings():  # MLflow registers local paths twice ("" and file schemes), to the same class
        warnings.filterwarnings("ignore", message="The specified dataset source can be interpreted")
        return mlflow.data.from_pandas(frame, source=source, name=name, digest=digest)


def log_corpus_input(corpus: CorpusTable) -> None:
    """The whole corpus on the parent run (context ``corpus``), its table as ``dataset/clips.csv``."""
    import mlflow

    mlflow.log_input(mlflow_dataset(corpus.frame, corpus.name, corpus.source, corpus.digest), context="corpus")
    mlflow.log_text(corpus.frame.to_csv(index=False), "dataset/clips.csv")


def log_fold_inputs(corpus: CorpusTable, fold: Fold) -> None:
    """A fold run's three dataset inputs: its train, validation and test clips (contexts of those names)."""
    import mlflow

    parts = fold.partitions()
    datasets = []
    for part, ids in parts.items():
        frame = corpus.subset(ids, part)
        datasets.append(mlflow_dataset(frame, f"{corpus.name}/{fold.name}/{part}", corpus.source, table_digest(frame)))
    mlflow.log_inputs(datasets, contexts=list(parts), tags_list=[None] * len(parts))
