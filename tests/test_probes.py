"""Privacy probes: trained on cached features only, tested on the right speakers, undefined when they must be."""

from __future__ import annotations

from pathlib import Path

import math
import torch

from trustser.corpora.base import Clip
from trustser.probes import gender_probe, speaker_probe, within_speaker_split
from trustser.training import TrainConfig

FAST = TrainConfig(schedule="paper", epochs=2)
"""For tests that check which clips a probe uses, not how well it learns."""


def synthetic(n_speakers=4, per_speaker=10, separable=True):
    """Features where gender (and speaker) is written into one channel: a probe must find it."""
    torch.manual_seed(0)
    clips, features = {}, {}
    for s in range(n_speakers):
        gender = "female" if s % 2 == 0 else "male"
        for u in range(per_speaker):
            cid = f"s{s}_u{u}"
            clips[cid] = Clip(cid, Path(f"{cid}.wav"), f"spk{s}", gender, "neutral")
            # every channel varies across training clips (as a backbone's do), so the probe's per-channel
            # standardisation has no near-constant channel to blow up on unseen speakers
            x = torch.randn(2, 6, 8) * 0.5
            if separable:
                x[:, :, 0] += 3.0 if gender == "female" else -3.0
                x[:, :, 1 + s] += 3.0
            features[cid] = x.half()
    return clips, features


def by_speaker(clips, speakers):
    return [c for c, clip in clips.items() if clip.speaker in speakers]


def test_gender_probe_finds_gender_written_into_the_features_on_unseen_speakers():
    clips, features = synthetic(n_speakers=6)
    result = gender_probe(
        features,
        clips,
        by_speaker(clips, {"spk0", "spk1", "spk2", "spk3"}),
        by_speaker(clips, {"spk4", "spk5"}),
        by_speaker(clips, {"spk4", "spk5"}),
    )
    assert result.accuracy == 1.0 and result.n_test == 20 and result.chance == 0.5


def test_gender_probe_is_undefined_when_a_partition_has_one_gender():
    clips, features = synthetic()
    result = gender_probe(
        features,
        clips,
        by_speaker(clips, {"spk0", "spk1"}),
        by_speaker(clips, {"spk2", "spk3"}),
        by_speaker(clips, {"spk0", "spk2"}),
    )  # test partition: two female speakers
    assert math.isnan(result.accuracy) and "test partition has clips of 1 gender" in result.reason


def test_within_speaker_split_keeps_every_test_speaker_in_training_and_is_deterministic():
    clips, _ = synthetic(per_speaker=10)
    ids = list(clips)
    train, val, test = within_speaker_split(ids, clips)
    assert sorted(train + val + test) == sorted(ids) and not set(train) & set(test)
    assert {clips[c].speaker for c in test} <= {clips[c].speaker for c in train}
    assert len(test) == 4 * 2
    assert [sorted(p) for p in (train, val, test)] == [sorted(p) for p in within_speaker_split(ids[::-1], clips)]


def test_speaker_probe_identifies_speakers_written_into_the_features():
    clips, features = synthetic()
    result = speaker_probe(features, clips, list(clips))
    assert result.n_classes == 4 and result.chance == 0.25 and result.accuracy == 1.0


def with_unknown(clips, features, n=6, gender="female", speaker="unknown"):
    """Add ``n`` clips under the corpus-wide "unknown" speaker id (MSP-Podcast's SpkrID=Unknown)."""
    clips, features = dict(clips), dict(features)
    for u in range(n):
        cid = f"unk_u{u}"
        clips[cid] = Clip(cid, Path(f"{cid}.wav"), speaker, gender, "neutral")
        features[cid] = (torch.randn(2, 6, 8) * 0.1).half()
    return clips, features


def test_speaker_probe_leaves_unknown_speaker_clips_out_and_counts_them():
    clips, features = with_unknown(*synthetic())
    result = speaker_probe(features, clips, list(clips), FAST)
    assert result.n_classes == 4 and result.chance == 0.25  # "unknown" is not a fifth speaker
    assert result.n_test == 8 and result.excluded_unknown == 6
    assert result.to_dict("privacy_speaker")["privacy_speaker_excluded_unknown"] == 6.0


def test_speaker_probe_with_only_one_identified_speaker_is_undefined_and_still_counts_the_unknown():
    clips, features = with_unknown(*synthetic())
    one = [c for c in clips if clips[c].speaker in ("spk0", "unknown")]
    result = speaker_probe(features, clips, one, FAST)
    assert math.isnan(result.accuracy) and "fewer than 2 identified speakers" in result.reason
    assert result.excluded_unknown == 6


def test_gender_probe_leaves_unknown_gender_clips_out_and_counts_them():
    clips, features = with_unknown(*synthetic(n_speakers=6), gender=None)
    unknown = [c for c in clips if clips[c].speaker == "unknown"]
    result = gender_probe(
        features,
        clips,
        by_speaker(clips, {"spk0", "spk1", "spk2", "spk3"}) + unknown[:2],
        by_speaker(clips, {"spk4", "spk5"}) + unknown[2:4],
        by_speaker(clips, {"spk4", "spk5"}) + unknown[4:],
        FAST,
    )
    assert result.n_test == 20 and result.excluded_unknown == 6
    assert result.to_dict("privacy_gender")["privacy_gender_excluded_unknown"] == 6.0


def test_probes_on_corpora_without_unknowns_report_zero_excluded():
    clips, features = synthetic()
    assert speaker_probe(features, clips, list(clips), FAST).to_dict("p")["p_excluded_unknown"] == 0.0
