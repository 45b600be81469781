"""How long the method's whole grid would take on a measured device, from the per-unit costs one bench run measured.

The grid is 7 backbones x 4 corpora x every fold x all default metrics (extraction, head training, both privacy
probes, FGSM + Gaussian attacks on every test clip, FLOPs/latency/memory, the rest of a fold: linear reference,
fairness, bootstrap intervals, MLflow). A bench run measures each stage's cost per unit of work on one backbone
(``unit_costs``); other backbones are scaled by a stated factor (``backbone_scales``); ``estimate`` turns both into
hours. ``estimate`` is pure arithmetic on its inputs, so a test can check it on hand-made numbers, and every
assumption it rests on travels with the result (``assumptions``) rather than living only in this file.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Mapping, Sequence

# The method's seven backbones (TrustSER Tables 2 and 4).
BACKBONES: tuple[str, ...] = (
    "apc",
    "tera",
    "whisper_tiny",
    "whisper_base",
    "whisper_small",
    "wav2vec2_base",
    "wavlm_base_plus",
)

# Frames per second of audio that the head sees, per backbone family: Whisper's 10 ms mel hop and stride-2 conv stem,
# wav2vec2/WavLM's 320-sample conv stride, the 10 ms fbank / mel hop of s3prl's APC and TERA. Checked against
# count_flops(name, 6.0).frames: 300 (Whisper), 299 (wav2vec2, WavLM), 598 (APC), 601 (TERA).
FRAMES_PER_SECOND: dict[str, float] = {"whisper": 50.0, "ssl": 50.0, "s3prl": 100.0}

HEAD_WIDTH = 128  # the method's head (trustser.head.EmotionHead default): the per-frame cost below depends on it


@dataclass(frozen=True)
class CorpusGrid:
    """One corpus of the grid: clip count, assumed mean clip length (after the 6 s cap), folds, partition shares."""

    clips: int
    mean_s: float
    folds: int
    train: float
    val: float
    test: float


# Clip counts: issue 13's figures for IEMOCAP, CREMA-D and MSP-Improv (every clip of the release, all emotion
# labels; the 4-class subsets the loaders keep are smaller, 5,531 / 4,798 / 7,798, so those three are upper
# bounds), MSP-Podcast as docs/benchmarks.md section 6 takes it (37,924, the method's 4-class total). Mean lengths and
# partition shares as scripts/bench_sweep.CORPORA (MSP-Podcast's official split as 60/20/20, one "fold").
CORPORA: dict[str, CorpusGrid] = {
    "iemocap": CorpusGrid(10039, 4.5, 5, 0.6, 0.2, 0.2),
    "crema_d": CorpusGrid(7442, 2.5, 5, 0.6, 0.2, 0.2),
    "msp_improv": CorpusGrid(8438, 3.5, 6, 4 / 6, 1 / 6, 1 / 6),
    "msp_podcast": CorpusGrid(37924, 6.0, 1, 0.6, 0.2, 0.2),
}


@dataclass(frozen=True)
class BackboneScale:
    """What a backbone's cost is scaled by: its forward FLOPs on 6 s of audio (extraction, attacks) and the head's
    work per second of audio (head training, probes): frames per second x multiply-accumulates per frame."""

    gflops_6s: float
    frames_per_s: float
    head_macs_per_frame: float

    @property
    def head_macs_per_audio_s(self) -> float:
        return self.frames_per_s * self.head_macs_per_frame


@dataclass(frozen=True)
class UnitCosts:
    """Per-unit costs one bench run measured on one device. ``extract_backbone`` is the backbone extraction was
    timed on, ``backbone`` the one the sweep (every other stage) ran."""

    backbone: str
    extract_backbone: str
    extract_s_per_audio_s: float  # package extract_features, cold cache, fp32
    train_s_per_frame_epoch: float  # head training incl. per-epoch validation, per (train + val) frame and epoch
    probe_s_per_frame_epoch: float  # gender + speaker probes, the same unit
    attack_s_per_test_audio_s: float  # the default attacks at their SNRs, per second of attacked-subset test audio
    other_s_per_clip_fold: float  # the rest of a fold (reference probe, fairness, bootstrap, MLflow), per clip
    per_run_s: float  # once per backbone x corpus run: backbone load, MLflow setup, FLOPs count, latency, memory


@dataclass(frozen=True)
class Assumptions:
    """The grid and the recipe the estimate assumes (all of it goes into the JSON)."""

    corpora: Mapping[str, CorpusGrid]
    backbones: Mapping[str, BackboneScale]  # the grid's
    measured: Mapping[str, BackboneScale]  # the backbones unit costs were measured on (in the grid or not)
    head_epochs: int = 30  # the method's `paper` schedule
    probe_epochs: int = 10  # its probe epochs (TrustConfig.probe_epochs)
    speaker_probe_share: float = 0.8  # within_speaker_split: train + validation = 80 % of a fold's training clips
    scale_source: str = ""


# ---------------------------------------------------------------------------------------------------- the estimate
def stage_seconds(costs: UnitCosts, corpus: CorpusGrid, scale: BackboneScale, a: Assumptions) -> dict[str, float]:
    """Seconds of each stage for one backbone on one corpus: the measured unit cost x the work x the scale factor
    from the backbone the unit cost was measured on."""
    audio_s = corpus.clips * corpus.mean_s
    frames = audio_s * scale.frames_per_s
    swept = a.measured[costs.backbone]
    head = scale.head_macs_per_frame / swept.head_macs_per_frame
    trainval = corpus.train + corpus.val
    return {
        "extract": audio_s
        * costs.extract_s_per_audio_s
        * scale.gflops_6s
        / a.measured[costs.extract_backbone].gflops_6s,
        "train": corpus.folds * a.head_epochs * trainval * frames * costs.train_s_per_frame_epoch * head,
        "probes": corpus.folds
        * a.probe_epochs
        * (trainval + a.speaker_probe_share * corpus.train)
        * frames
        * costs.probe_s_per_frame_epoch
        * head,
        "attacks": corpus.folds
        * corpus.test
        * audio_s
        * costs.attack_s_per_test_audio_s
        * scale.gflops_6s
        / swept.gflops_6s,
        "other": corpus.folds * corpus.clips * costs.other_s_per_clip_fold,
        "per_run": costs.per_run_s,
    }


def estimate_device(costs: UnitCosts, a: Assumptions) -> dict[str, Any]:
    """One device's hours: the total, and by backbone, corpus and stage (seconds for every cell)."""
    cells = {
        b: {c: stage_seconds(costs, corpus, scale, a) for c, corpus in a.corpora.items()}
        for b, scale in a.backbones.items()
    }
    stages = next(iter(next(iter(cells.values())).values()))
    total_s = sum(sum(s.values()) for per_corpus in cells.values() for s in per_corpus.values())
    return {
        "total_h": total_s / 3600,
        "by_backbone_h": {b: sum(sum(s.values()) for s in per.values()) / 3600 for b, per in cells.items()},
        "by_corpus_h": {c: sum(sum(cells[b][c].values()) for b in cells) / 3600 for c in a.corpora},
        "by_stage_h": {k: sum(cells[b][c][k] for b in cells for c in a.corpora) / 3600 for k in stages},
        "cells_s": cells,
        "unit_costs": asdict(costs),
    }


def estimate(costs: Mapping[str, UnitCosts], a: Assumptions) -> dict[str, Any]:
    """Hours of the whole grid on every device that has measured costs (keyed by device, e.g. "cpu")."""
    devices = {device: estimate_device(c, a) for device, c in costs.items()}
    return {
        "hours": {d: r["total_h"] for d, r in devices.items()},
        "devices": devices,
        "assumptions": describe(a, costs),
    }


def describe(a: Assumptions, costs: Mapping[str, UnitCosts]) -> dict[str, Any]:
    """The assumptions as JSON: what was measured, what was scaled and by what, and what is left out."""
    measured = sorted(a.measured)
    return {
        "corpora": {name: asdict(c) for name, c in a.corpora.items()},
        "total_clips": sum(c.clips for c in a.corpora.values()),
        "clip_counts_source": "issue 13 for IEMOCAP 10,039, CREMA-D 7,442, MSP-Improv 8,438 (whole releases, all "
        "emotion labels: upper bounds, the 4-class subsets the loaders keep are 5,531 / "
        "4,798 / 7,798); MSP-Podcast 37,924 as docs/benchmarks.md section 6 (the method's "
        "4-class total, official split as one 60/20/20 fold)",
        "mean_clip_s": "assumed, after the 6 s cap: IEMOCAP 4.5, CREMA-D 2.5, MSP-Improv 3.5, MSP-Podcast 6.0 "
        "(scripts/bench_sweep.CORPORA); every clip at its corpus's mean length",
        "recipe": {
            "head_epochs": a.head_epochs,
            "probe_epochs": a.probe_epochs,
            "speaker_probe_share": a.speaker_probe_share,
            "seeds": 1,
            "note": "the method's paper schedule (fixed epochs); the package default (converge) stops early "
            "and ran 50-67 head / 50-100 probe epochs a fold on EmoDB (docs section 7): train and "
            "probe hours scale with the epoch count",
        },
        "backbones": {
            b: {**asdict(s), "how": "measured" if b in measured else "scaled"} for b, s in a.backbones.items()
        },
        "measured_backbones": measured,
        "scale_source": a.scale_source,
        "scaling": "extraction and attacks x (backbone GFLOPs on 6 s) / (the measured backbone's); head training and "
        "probes x (head MACs per frame) / (the measured backbone's), on the backbone's own frame count "
        "(frames_per_s); the other stages are not scaled (per clip and fold, and per run)",
        "units": "extraction per second of audio (linear in length: attention's quadratic part is ignored); head "
        "training and probes per frame-epoch of train + validation frames; attacks per second of test "
        "audio, every test clip attacked once (k folds x test share), at the measured share of correctly "
        "classified clips (harder corpora attack fewer); 'other' per clip and fold",
        "excluded": "the corruption suite and PGD (both opt-in), cross-corpus tests, fine-tuning, extra seeds, study "
        "trials; model downloads and Whisper conversion (install steps); out-of-core reads of stores "
        "larger than memory (MSP-Podcast: docs section 8 measured head training ~1.4x slower from disk); "
        "parallel runs (one run at a time, the measured thread count)",
        "devices_measured": sorted(costs),
    }


# --------------------------------------------------------------------------------------- inputs from a bench run
def unit_costs(results: Mapping[str, Any]) -> UnitCosts:
    """The unit costs of one bench result (``scripts/bench.py``): extraction from section 3, the rest from the
    sweep's stage timings (section 6) over the work each stage did."""
    ex, sweep = results["extraction"], results["sweep"]
    stages, work = sweep["stages_s"], sweep["work"]
    per_run = stages.get("flops", 0.0) + stages.get("load_backbone", 0.0) + stages.get("mlflow_setup", 0.0)
    return UnitCosts(
        backbone=sweep["backbone"],
        extract_backbone=ex["backbone"],
        extract_s_per_audio_s=ex["fp32_cold_s"] / ex["audio_s"],
        train_s_per_frame_epoch=stages["train"] / max(work["train_frame_epochs"], 1),
        probe_s_per_frame_epoch=stages["probes"] / max(work["probe_frame_epochs"], 1),
        attack_s_per_test_audio_s=stages["attacks"] / max(work["test_audio_s"], 1e-9),
        other_s_per_clip_fold=max(stages["other"], 0.0) / (sweep["clips"] * sweep["folds"]),
        per_run_s=per_run,
    )


def head_macs_per_frame(hidden_states: int, hidden_size: int, width: int = HEAD_WIDTH) -> float:
    """Multiply-accumulates of the head per frame: the layer-weighted sum, then the two k=1 convolutions (the
    pooled MLP runs once per clip and is left out). Within 1 % of half calflops' head FLOPs (its MAC figure leaves
    the layer sum out)."""
    return hidden_states * hidden_size + hidden_size * width + width * width


def backbone_scales(names: Sequence[str] = BACKBONES, source: str = "count") -> tuple[dict[str, BackboneScale], str]:
    """Scale factors of ``names`` and a sentence naming their source. ``count``: the complete FLOPs count of
    ``trustser.metrics.sustainability.count_flops`` (backbone + front end, head excluded; cached on disk, seconds per
    backbone the first time). ``paper``: the method's Table 4 GFLOPs (kept in the backbone registry; no counting,
    but they leave attention products out and undercount WavLM). A failed count falls back to ``paper`` for all."""
    from trustser.backbones.registry import get_backbone_spec

    specs = {n: get_backbone_spec(n) for n in names}
    gflops, said = None, ""
    if source == "count":
        try:
            gflops = _counted_gflops(names)
            said = "count_flops complete count (front end + backbone, head excluded), 6 s of audio"
        except Exception as error:  # noqa: BLE001 - a missing optional dependency must not lose the whole bench
            said = f"count_flops failed ({type(error).__name__}: {error}); "
    if gflops is None:
        gflops = {n: s.paper.gflops_6s for n, s in specs.items()}
        said += (
            "TrustSER Table 4 GFLOPs for 6 s (BackboneSpec.paper.gflops_6s; paper convention, attention "
            "products not counted)"
        )
    scales = {
        n: BackboneScale(
            gflops[n], FRAMES_PER_SECOND[s.family], head_macs_per_frame(s.num_hidden_states, s.hidden_size)
        )
        for n, s in specs.items()
    }
    return scales, said


def _counted_gflops(names: Sequence[str]) -> dict[str, float]:
    from trustser.metrics.sustainability import count_flops

    reports = {n: count_flops(n, 6.0) for n in names}
    return {n: (r.flops - r.head_flops) / 1e9 for n, r in reports.items()}


def full_estimate(results: Mapping[str, Any], source: str = "count", cuda_available: bool = False) -> dict[str, Any]:
    """The estimate for a bench result over the seven backbones, from its CPU unit costs: every stage of the bench
    runs on the CPU, so "cpu" is the only device with a figure (a GPU figure would have to be measured, not
    inferred). The measured backbones are scaled too when they are not in the grid (e.g. a --tiny run's)."""
    costs = unit_costs(results)
    names = list(dict.fromkeys([*BACKBONES, costs.backbone, costs.extract_backbone]))
    scales, said = backbone_scales(names, source)
    grid = {b: scales[b] for b in BACKBONES}
    measured = {b: scales[b] for b in (costs.backbone, costs.extract_backbone)}
    out = estimate({"cpu": costs}, Assumptions(CORPORA, grid, measured, scale_source=said))
    out["assumptions"]["cuda"] = (
        "available but not measured: the bench runs every stage on the CPU, so no cuda figure"
        if cuda_available
        else "not available"
    )
    return out
