"""Per-backbone FLOPs/MACs/parameters of one inference (front end → backbone → head), cached on disk.

:func:`count_spec` counts any spec with :func:`~trustser.metrics.sustainability.flops.count_module`, split into the
front end its family names (``BackboneFamily.front_end``), the backbone and the head.

Counting a 95 M-parameter model takes seconds, so :func:`count_flops` caches each result as JSON under
``trustser.paths.cache_dir()/flops/<backbone>-<hash>.json``, keyed by the architecture config, clip length, head
shape, counting convention and library versions.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, fields
from importlib.metadata import version as _dist_version
from pathlib import Path
from typing import Any

from torch import Tensor, nn

from trustser.backbones.base import BackboneSpec
from trustser.backbones.registry import get_backbone_spec
from trustser.metrics.sustainability.architecture import (
    CLIP_SECONDS,
    HEAD_WIDTH,
    NUM_CLASSES,
    SAMPLE_RATE,
    _inputs,
    build_architecture,
)
from trustser.metrics.sustainability.flops import count_module
from trustser.paths import write_atomically

CONVENTION_VERSION = 1  # bump when what is counted changes: it keys the on-disk cache


@dataclass(frozen=True)
class FlopsReport:
    """One inference on ``seconds`` of 16 kHz audio. Counts are plain numbers (FLOPs, MACs), not giga."""

    backbone: str
    seconds: float
    frames: int  # frames the head sees (backbone output length)
    params: int  # backbone + head
    backbone_params: int  # front end included
    head_params: int
    flops: int  # complete: front end + backbone + head, attention products included
    macs: int
    front_end_flops: int
    front_end_macs: int
    backbone_flops: int
    backbone_macs: int
    head_flops: int
    head_macs: int
    paper_gmacs: float  # paper convention (see the package docstring), in G, front end + backbone + head
    paper_front_end_macs: int
    paper_backbone_macs: int
    paper_head_macs: int
    extra_flops: int  # the part of ``flops`` counted by EXTRA_COUNTERS/_gru_hook rather than calflops itself
    extra_macs: int
    paper_table_gflops: float | None  # the method's Table 4 figure, for comparison
    counter: str  # e.g. "calflops 0.3.2"

    @property
    def gflops(self) -> float:
        return self.flops / 1e9

    @property
    def gmacs(self) -> float:
        return self.macs / 1e9

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _count_backbone(name: str, seconds: float) -> FlopsReport:
    return count_spec(get_backbone_spec(name), seconds)


def count_spec(spec: BackboneSpec, seconds: float = CLIP_SECONDS) -> FlopsReport:
    """:func:`count_flops` of any spec, registered or not (e.g. a family's tiny spec), uncached. The front end is
    the part the backbone's family names (``BackboneFamily.front_end``)."""
    backbone, head = build_architecture(spec)
    waves, lengths = _inputs(seconds)
    split = spec.backbone_family.front_end(backbone)

    def run(w: Tensor, n: Tensor) -> Tensor:
        out = split.forward(w, n)
        return head(out.hidden, out.mask)

    parts: dict[str, nn.Module] = {"head": head, "front_end": split.module, "backbone": backbone}
    counts = count_module(run, parts, waves, lengths)
    # Code in run itself (Whisper's conv-stem GELUs and positional add) belongs to the backbone.
    fe, bb, hd, rest = (counts.parts[k] for k in ("front_end", "backbone", "head", "rest"))
    bb = tuple(a + b for a, b in zip(bb, rest))
    backbone_params = sum(p.numel() for p in backbone.parameters())
    head_params = sum(p.numel() for p in head.parameters())
    paper = spec.paper.gflops_6s if spec.paper else None
    return FlopsReport(
        backbone=spec.name,
        seconds=seconds,
        frames=int(backbone.output_lengths(lengths)[0]),
        params=backbone_params + head_params,
        backbone_params=backbone_params,
        head_params=head_params,
        flops=counts.flops,
        macs=counts.macs,
        front_end_flops=fe[0],
        front_end_macs=fe[1],
        backbone_flops=bb[0],
        backbone_macs=bb[1],
        head_flops=hd[0],
        head_macs=hd[1],
        paper_gmacs=counts.paper_macs / 1e9,
        paper_front_end_macs=fe[2],
        paper_backbone_macs=bb[2],
        paper_head_macs=hd[2],
        extra_flops=counts.extra_flops,
        extra_macs=counts.extra_macs,
        paper_table_gflops=paper,
        counter=f"calflops {_dist_version('calflops')}",
    )


def _cache_key(name: str, seconds: float) -> str:
    spec = get_backbone_spec(name)
    key = {
        "backbone": name,
        "config": spec.config,
        "front_end": spec.front_end,
        "seconds": seconds,
        "sample_rate": SAMPLE_RATE,
        "head": [spec.num_hidden_states, spec.hidden_size, NUM_CLASSES, HEAD_WIDTH],
        "convention": CONVENTION_VERSION,
        "versions": {d: _dist_version(d) for d in ("calflops", "torch", "transformers", "s3prl")},
    }
    return hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:16]


def flops_cache_path(name: str, seconds: float = CLIP_SECONDS, cache: str | Path | None = None) -> Path:
    from trustser.paths import cache_dir

    return cache_dir(cache) / "flops" / f"{name}-{_cache_key(name, seconds)}.json"


def count_flops(
    name: str, seconds: float = CLIP_SECONDS, *, use_cache: bool = True, cache: str | Path | None = None
) -> FlopsReport:
    """FLOPs/MACs/parameters of one inference (front end + backbone + head) on ``seconds`` of audio; cached."""
    path = flops_cache_path(name, seconds, cache)
    if use_cache and path.is_file():
        data = json.loads(path.read_text())
        if set(data) == {f.name for f in fields(FlopsReport)}:
            return FlopsReport(**data)
    report = _count_backbone(name, seconds)
    if use_cache:
        text = json.dumps(report.as_dict(), indent=1)
        write_atomically(path, lambda tmp: Path(tmp).write_text(text))  # parallel workers count the same backbone
    return report
