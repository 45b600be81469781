"""A generated corpus written straight into the feature-cache format (no audio, no backbone), for the out-of-core
tests: emotion, gender and speaker are each written into the features, so the head and both probes can learn.

Ten speakers (five female, five male); one fold: speakers 0-5 train, 6-7 validation, 8-9 test, so every partition
holds both genders.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from trustser import EMOTIONS
from trustser.corpora.base import GENDERS, Clip, CorpusIndex, Fold
from trustser.features import FeatureKey, write_entry

KEY = FeatureKey("synthetic", "generated")
SPEAKERS = 10


def write_store(
    root: Path, n_clips: int, layers: int = 4, hidden: int = 64, frames: tuple[int, int] = (20, 40), seed: int = 0
) -> Path:
    """Write ``n_clips`` entries under ``root/entries`` and their metadata to ``root/clips.json`` (returned)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # on a loaded machine, many small multi-threaded ops stall on each other
    try:
        return _write(root, n_clips, layers, hidden, frames, seed)
    finally:
        torch.set_num_threads(threads)


def _write(root: Path, n_clips: int, layers: int, hidden: int, frames: tuple[int, int], seed: int) -> Path:
    g = torch.Generator().manual_seed(seed)
    directions = torch.randn(len(EMOTIONS) + len(GENDERS) + SPEAKERS, layers, 1, hidden, generator=g)
    (root / "entries").mkdir(parents=True, exist_ok=True)
    meta = []
    for i in range(n_clips):
        speaker, emotion = i % SPEAKERS, (i // SPEAKERS) % len(EMOTIONS)
        gender = speaker % 2
        t = int(torch.randint(frames[0], frames[1] + 1, (1,), generator=g))
        x = torch.randn(layers, t, hidden, generator=g) * 2.0
        x += directions[emotion] + directions[len(EMOTIONS) + gender] + 0.7 * directions[len(EMOTIONS) + 2 + speaker]
        path = root / "entries" / f"{i:06d}.safetensors"
        write_entry(path, x)
        meta.append(
            {
                "clip_id": f"s{speaker}_{i:06d}",
                "path": str(path),
                "speaker": f"s{speaker}",
                "gender": GENDERS[gender],
                "emotion": EMOTIONS[emotion],
            }
        )
    out = root / "clips.json"
    out.write_text(json.dumps(meta))
    return out


def load_meta(path: Path) -> tuple[CorpusIndex, dict[str, Path]]:
    """The corpus index (one fold) and clip id → entry path of a store written by ``write_store``."""
    meta = json.loads(Path(path).read_text())
    clips = {m["clip_id"]: Clip(m["clip_id"], Path(m["path"]), m["speaker"], m["gender"], m["emotion"]) for m in meta}

    def part(speakers: range) -> tuple[str, ...]:
        return tuple(c for c, clip in clips.items() if int(clip.speaker[1:]) in speakers)

    fold = Fold("fold1", part(range(0, 6)), part(range(6, 8)), part(range(8, 10)))
    index = CorpusIndex("synthetic", Path(path).parent, clips, [fold])
    return index, {m["clip_id"]: Path(m["path"]) for m in meta}
