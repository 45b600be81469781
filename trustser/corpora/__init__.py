"""Corpora: loaders for each corpus's real distribution layout, registered by name.

Importing this package registers every built-in corpus.
"""

from trustser.corpora.base import Clip, CorpusIndex, CorpusSpec, Fold, Skip, check_speaker_disjoint
from trustser.corpora.registry import CORPORA, get_corpus, load_corpus, register_corpus
from trustser.corpora import emodb  # noqa: F401  (registers)
from trustser.corpora import crema_d, iemocap, manifest, msp_improv, msp_podcast  # noqa: F401  (register)

__all__ = [
    "CORPORA",
    "Clip",
    "CorpusIndex",
    "CorpusSpec",
    "Fold",
    "Skip",
    "check_speaker_disjoint",
    "get_corpus",
    "load_corpus",
    "register_corpus",
]
