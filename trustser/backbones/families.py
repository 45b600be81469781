"""The backbone families: one object per architecture family, each defined beside its builder.

``FAMILIES`` maps a spec's ``family`` to it: ``whisper`` (:class:`~trustser.backbones.whisper.WhisperFamily`),
``ssl`` (:class:`~trustser.backbones.hf_ssl.TransformersSslFamily`: wav2vec 2.0, WavLM, HuBERT) and ``s3prl``
(:class:`~trustser.backbones.s3prl_models.S3prlFamily`: APC, TERA). What a family holds is the interface of
:class:`~trustser.backbones.base.BackboneFamily`; the metrics and fine-tuning code ask ``spec.backbone_family``
instead of keeping tables of their own.
"""

from __future__ import annotations

from functools import lru_cache

from trustser.backbones.base import BackboneFamily
from trustser.backbones.hf_ssl import TransformersSslFamily
from trustser.backbones.registry import BACKBONES
from trustser.backbones.s3prl_models import S3prlFamily
from trustser.backbones.whisper import WhisperFamily
from trustser.errors import UnknownNameError

FAMILIES: dict[str, BackboneFamily] = {f.name: f for f in (WhisperFamily(), TransformersSslFamily(), S3prlFamily())}


def get_family(name: str) -> BackboneFamily:
    try:
        return FAMILIES[name]
    except KeyError:
        raise UnknownNameError("backbone family", name, list(FAMILIES)) from None


def dropout_like_module_names() -> frozenset[str]:
    """Every registered backbone's dropout-like module classes (``BackboneFamily.dropout_like``), for attacks run
    in train mode: a module's class name is all ``trustser.metrics.safety.is_dropout_like`` sees."""
    return _dropout_like(tuple(BACKBONES))


@lru_cache(maxsize=4)
def _dropout_like(names: tuple[str, ...]) -> frozenset[str]:  # keyed by the registry's contents: it may grow
    specs = [BACKBONES[name] for name in names]
    return frozenset().union(*(spec.backbone_family.dropout_like(spec) for spec in specs))
