"""The sustainability table and the figures read off the counts: which backbones, how close to the paper, and
what padding Whisper to its 30 s window costs."""

from __future__ import annotations

from typing import Any, Iterable

from trustser.backbones.registry import BACKBONES, get_backbone_spec
from trustser.metrics.sustainability.architecture import CLIP_SECONDS
from trustser.metrics.sustainability.counts import count_flops

WHISPER_WINDOW_SECONDS = 30.0


def paper_backbones() -> list[str]:
    """The seven backbones of the method's tables, in registry order."""
    return [name for name, spec in BACKBONES.items() if spec.paper is not None]


def table_backbones() -> list[str]:
    """What :func:`sustainability_table` lists by default: the paper's seven first (Table 4's rows), then every
    other registered backbone in registry order (whisper_tiny_en, hubert_base, ...)."""
    paper = paper_backbones()
    return paper + [name for name in BACKBONES if name not in paper]


def sustainability_table(
    backbones: Iterable[str] | None = None, seconds: float = CLIP_SECONDS, *, use_cache: bool = True
) -> list[dict[str, Any]]:
    """One row per backbone (default: :func:`table_backbones`): ``backbone``, ``params``, ``paper_gmacs``,
    ``flops``, ``macs``, the front end / backbone / head split, and the paper's figure (``paper_table_gflops``,
    None for backbones the paper did not measure). No logging, no tracking."""
    names = list(backbones) if backbones is not None else table_backbones()
    return [count_flops(name, seconds, use_cache=use_cache).as_dict() for name in names]


def paper_tolerance(paper_gflops: float) -> float:
    """How far ``paper_gmacs`` may sit from the table: 1 % of it, or the table's rounding to 0.1 if larger."""
    return max(0.01 * paper_gflops, 0.05)


def whisper_padding_flops_ratio(
    name: str = "whisper_tiny", seconds: float = CLIP_SECONDS, *, use_cache: bool = True
) -> float:
    """FLOPs of Whisper's encoder on a clip zero-padded to its 30 s window over FLOPs on the true length.

    Linear layers scale with the 5× longer sequence and attention products with its square, so the ratio exceeds
    5: what running Whisper as it was trained (always 30 s) wastes on a 6 s clip.
    """
    if get_backbone_spec(name).family != "whisper":
        raise ValueError(f"'{name}' is not a Whisper backbone")
    padded = count_flops(name, WHISPER_WINDOW_SECONDS, use_cache=use_cache)
    true = count_flops(name, seconds, use_cache=use_cache)
    return padded.flops / true.flops
