"""Robustness: how a model's answers change when its input meets the world (noise, other talkers, phone lines,
codecs, rooms, levels: ``trustser.metrics.corruptions``), measured against its answers on the clean clips.

Per corruption c, over the test clips it was applied to (babble skips a clip with no other speaker in the set):

* ``robustness_<c>_uar`` — UAR on the corrupted clips;
* ``robustness_<c>_uar_drop`` — clean UAR minus corrupted UAR on the same clips (positive = worse);
* ``robustness_<c>_flip_rate`` — the share of clips whose prediction differs from the clean prediction, over *all*
  clips (ser-tests' "1 − percentage of unchanged predictions"), right or wrong;

each with its speaker-level cluster bootstrap 95 % interval (``_ci_low`` / ``_ci_high``;
``trustser.metrics.uncertainty.cluster_bootstrap``; the drop is paired: both UARs on the same resampled speakers).
Beside them what random models give on the same clips (``_flip_rate_random``, ``_uar_drop_random_p95``) and the
verdict ``_pass`` (``trustser.metrics.verdicts``). The summary axis ``robustness`` is the mean flip rate over the
corruptions evaluated (lower is better), with its interval; ``robustness_pass`` is 1 when every corruption passes.

The clean prediction is the model's on the clean waveform through the same path (front end, backbone, head, in one
batch with the clip's corrupted versions), not the cached-feature one: a flip then measures the corruption alone.
``robustness_clean_mismatch`` counts clips where the two clean predictions disagree (fp16 feature rounding). The
corrupted audio goes through the whole front end and backbone every time; nothing of it is cached.

:func:`evaluate_corruptions` runs the model (no logging); :func:`robustness_metrics` is pure numpy over the per-clip
predictions, so the same function scores one fold or the pooled test clips of all folds (the parent run).

    from trustser.metrics.robustness import evaluate_corruptions
    run = evaluate_corruptions(WaveformClassifier(backbone, head), waves, labels, speakers, resolve("standard"),
                               clip_ids=ids)
    run.metrics(n_classes=4)["robustness_white_snr10_flip_rate"]
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Sequence

import numpy as np

from trustser.metrics import uncertainty as unc
from trustser.metrics.corruptions import Corruption, babble_sources
from trustser.metrics.verdicts import flip_rate_verdict, noise_floor_verdict

NOT_EVALUATED = -1  # a prediction slot of a clip the corruption was not applied to
BABBLE_POOL_CACHE = 64  # babble source clips kept in memory while a test set is evaluated


# ---------------------------------------------------------------------------------------------- chance
@dataclass(frozen=True)
class ChanceReference:
    """What class-prior random models give on these clips: their flip rate (exact: ``1 − Σ p²``) and the 95th
    percentile of their UAR drop (two independent random UARs; simulated)."""

    flip_rate: float
    uar_drop_p95: float
    n_sim: int


def _uar_many(y_true: np.ndarray, preds: np.ndarray, k: int) -> np.ndarray:
    """UAR of each row of ``preds`` (n_sim × N) against ``y_true`` (classes present in y_true), vectorised."""
    n_sim = preds.shape[0]
    support = np.bincount(y_true, minlength=k)
    hit = preds == y_true[None, :]
    rows = np.broadcast_to(np.arange(n_sim)[:, None] * k, preds.shape)
    correct = np.bincount((rows + y_true[None, :])[hit], minlength=n_sim * k).reshape(n_sim, k)
    present = support > 0
    return (correct[:, present] / support[present]).mean(axis=1)


def chance_reference(
    y_true: np.ndarray, n_classes: int, class_priors: np.ndarray | None = None, n_sim: int = 1000, seed: int = 0
) -> ChanceReference:
    """The random models' figures on the clips of ``y_true``; priors: the clips' class shares unless given."""
    t = np.asarray(y_true, dtype=np.int64).reshape(-1)
    if t.size == 0:
        return ChanceReference(float("nan"), float("nan"), 0)
    priors = np.bincount(t, minlength=n_classes) / t.size if class_priors is None else np.asarray(class_priors, float)
    flip = float(1.0 - np.sum(priors**2))
    if n_sim < 1:
        return ChanceReference(flip, float("nan"), 0)
    rng = np.random.default_rng(seed)
    clean = rng.choice(n_classes, size=(n_sim, t.size), p=priors)
    corrupted = rng.choice(n_classes, size=(n_sim, t.size), p=priors)
    drops = _uar_many(t, clean, n_classes) - _uar_many(t, corrupted, n_classes)
    return ChanceReference(flip, float(np.percentile(drops, 95)), n_sim)


# ----------------------------------------------------------------------------------------- statistics
def flip_stat(clean: np.ndarray, pred: np.ndarray) -> float:
    return float(np.mean(clean != pred)) if clean.size else float("nan")


def uar_drop_stat(y_true: np.ndarray, clean: np.ndarray, pred: np.ndarray, n_classes: int) -> float:
    return unc.uar_stat(y_true, clean, n_classes) - unc.uar_stat(y_true, pred, n_classes)


def mean_flip_stat(clean: np.ndarray, pred: np.ndarray) -> float:
    """The robustness axis: the mean over corruptions (columns of ``pred``) of each one's flip rate over the clips
    it was applied to; NaN when none was applied anywhere."""
    if pred.ndim != 2 or pred.shape[1] == 0 or pred.shape[0] == 0:
        return float("nan")
    done = pred != NOT_EVALUATED
    flips = (pred != clean[:, None]) & done
    counts = done.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        rates = np.where(counts > 0, flips.sum(axis=0) / np.maximum(counts, 1), np.nan)
    return float(np.nanmean(rates)) if np.isfinite(rates).any() else float("nan")


def robustness_metrics(
    names: Sequence[str],
    y_true: np.ndarray,
    clean: np.ndarray,
    pred: np.ndarray,
    speakers: np.ndarray,
    n_classes: int,
    n_resamples: int = 1000,
    seed: int = 0,
    skipped: Sequence[str] = (),
    pooled: bool = False,
) -> dict[str, float]:
    """Per-corruption UAR, UAR drop and flip rate with intervals, chance references and verdicts, and the axis.

    ``pred`` is clips × corruptions (``NOT_EVALUATED`` where a corruption was not applied); ``skipped`` names the
    corruptions that could not run here (``robustness_<c>_skipped`` = 1, no other figures). ``pooled``: the point
    values get the suffix ``_pooled`` (the parent run's convention: its unsuffixed figures are fold means), the
    intervals, references and verdicts keep their names.
    """
    y_true, clean = np.asarray(y_true, dtype=np.int64), np.asarray(clean, dtype=np.int64)
    pred, speakers = np.asarray(pred, dtype=np.int64).reshape(len(y_true), len(names)), np.asarray(speakers)
    point = "_pooled" if pooled else ""
    boot = partial(unc.cluster_bootstrap, n_resamples=n_resamples, seed=seed)
    uar = partial(unc.uar_stat, n_classes=n_classes)
    out: dict[str, float] = {}
    verdicts = []
    for j, name in enumerate(names):
        p = f"robustness_{name}"
        if name in skipped:
            out[f"{p}_skipped"] = 1.0
            continue
        done = pred[:, j] != NOT_EVALUATED
        out[f"{p}_n_clips{point}"] = float(done.sum())
        if not done.any():
            continue
        t, c, q, s = y_true[done], clean[done], pred[done, j], speakers[done]
        figures = {
            "uar": boot(lambda y_true, pred: uar(y_true, pred), {"y_true": t, "pred": q}, s),
            "uar_drop": boot(partial(uar_drop_stat, n_classes=n_classes), {"y_true": t, "clean": c, "pred": q}, s),
            "flip_rate": boot(flip_stat, {"clean": c, "pred": q}, s),
        }
        for figure, interval in figures.items():
            out[f"{p}_{figure}{point}"] = interval.value
            out[f"{p}_{figure}_ci_low"], out[f"{p}_{figure}_ci_high"] = interval.low, interval.high
        out[f"{p}_clean_uar{point}"] = uar(t, c)
        chance = chance_reference(t, n_classes, n_sim=n_resamples, seed=seed)
        flip_ok = flip_rate_verdict(figures["flip_rate"].value, chance.flip_rate)
        drop_ok = noise_floor_verdict(figures["uar_drop"].value, chance.uar_drop_p95)
        verdict = float("nan") if math.isnan(flip_ok) or math.isnan(drop_ok) else float(flip_ok and drop_ok)
        out.update(
            {
                f"{p}_flip_rate_random": chance.flip_rate,
                f"{p}_uar_drop_random_p95": chance.uar_drop_p95,
                f"{p}_flip_rate_pass": flip_ok,
                f"{p}_uar_drop_pass": drop_ok,
                f"{p}_pass": verdict,
            }
        )
        verdicts.append(verdict)
    evaluated = [j for j, n in enumerate(names) if n not in skipped]
    axis = boot(mean_flip_stat, {"clean": clean, "pred": pred[:, evaluated]}, speakers) if len(clean) else None
    out[f"robustness{point}"] = axis.value if axis else float("nan")
    out["robustness_ci_low"] = axis.low if axis else float("nan")
    out["robustness_ci_high"] = axis.high if axis else float("nan")
    out[f"robustness_n_corruptions{point}"] = float(len(verdicts))
    out[f"robustness_n_pass{point}"] = float(sum(v == 1.0 for v in verdicts))
    defined = [v for v in verdicts if not math.isnan(v)]
    out["robustness_pass"] = float(all(v == 1.0 for v in defined)) if defined else float("nan")
    return out


# ------------------------------------------------------------------------------------------- running
@dataclass
class RobustnessRun:
    """What the model answered, clip by clip, on the clean and on each corrupted version of the test clips."""

    corruptions: tuple[Corruption, ...]
    clip_ids: list[str]
    speakers: np.ndarray  # [N]
    y_true: np.ndarray  # [N]
    clean: np.ndarray  # [N] prediction on the clean waveform (same path as the corrupted ones)
    pred: np.ndarray  # [N, C] prediction under each corruption, NOT_EVALUATED where not applied
    achieved_snr_db: np.ndarray  # [N, C] additive corruptions; NaN otherwise
    bitrate_kbps: np.ndarray  # [N, C] codecs; NaN otherwise
    sources: dict[str, list[tuple[str, ...]]] = field(default_factory=dict)  # babble: the talkers' clip ids
    skipped: dict[str, str] = field(default_factory=dict)  # corruption -> why it could not run here
    notes: dict[str, str] = field(default_factory=dict)  # corruption -> clips left out and why
    given_clean: np.ndarray | None = None  # the caller's clean predictions (cached features), for the mismatch count

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.corruptions)

    def metrics(self, n_classes: int, n_resamples: int = 1000, seed: int = 0) -> dict[str, float]:
        """:func:`robustness_metrics` of this run, plus what was measured on the audio (achieved SNR and bitrate)
        and the clean-prediction check."""
        out = robustness_metrics(
            self.names,
            self.y_true,
            self.clean,
            self.pred,
            self.speakers,
            n_classes,
            n_resamples,
            seed,
            tuple(self.skipped),
        )
        for j, c in enumerate(self.corruptions):
            for what, values in (
                ("achieved_snr_db", self.achieved_snr_db[:, j]),
                ("bitrate_kbps", self.bitrate_kbps[:, j]),
            ):
                finite = values[np.isfinite(values)]
                if finite.size:
                    out.update(
                        {
                            f"robustness_{c.name}_{what}_mean": float(finite.mean()),
                            f"robustness_{c.name}_{what}_min": float(finite.min()),
                            f"robustness_{c.name}_{what}_max": float(finite.max()),
                        }
                    )
        out["robustness_clean_uar"] = unc.uar_stat(self.y_true, self.clean, n_classes) if len(self.clean) else math.nan
        if self.given_clean is not None:
            out["robustness_clean_mismatch"] = float(np.sum(self.given_clean != self.clean))
        return out

    def clips_frame(self):
        """One row per (clip, corruption): speaker, label, clean and corrupted prediction, SNR, bitrate, sources."""
        import pandas as pd

        rows = []
        for j, c in enumerate(self.corruptions):
            if c.name in self.skipped:
                continue
            for i, clip in enumerate(self.clip_ids):
                rows.append(
                    {
                        "corruption": c.name,
                        "clip_id": clip,
                        "speaker": self.speakers[i],
                        "label": int(self.y_true[i]),
                        "clean_pred": int(self.clean[i]),
                        "pred": int(self.pred[i, j]),
                        "flipped": bool(self.pred[i, j] != self.clean[i]) if self.pred[i, j] != NOT_EVALUATED else None,
                        "achieved_snr_db": float(self.achieved_snr_db[i, j]),
                        "bitrate_kbps": float(self.bitrate_kbps[i, j]),
                        "babble_sources": " ".join(self.sources[c.name][i]) if c.name in self.sources else "",
                    }
                )
        return pd.DataFrame(rows)


def evaluate_corruptions(
    classifier: Any,
    waves: Sequence[Any],
    labels: Sequence[int],
    speakers: Sequence[Any],
    corruptions: Sequence[Corruption],
    clip_ids: Sequence[str] | None = None,
    clean_predictions: Sequence[int] | None = None,
    seed: int = 0,
    progress: bool = False,
) -> RobustnessRun:
    """Every clip, clean and under every corruption, through ``classifier`` (waveforms ``[B, T]`` and lengths in,
    logits out: ``trustser.metrics.safety.WaveformClassifier``), one batch per clip.

    Babble draws its talkers from the other speakers of these same clips. A corruption that cannot run here (a
    codec libsndfile lacks) is skipped with its reason in ``skipped``. ``seed`` fixes every clip's noise, talkers
    and room: the same seed corrupts the clips identically for every model compared.
    """
    import torch
    from tqdm.auto import tqdm

    n = len(waves)
    if len(labels) != n or len(speakers) != n or (clip_ids is not None and len(clip_ids) != n):
        raise ValueError("waves, labels, speakers and clip_ids must have the same length")
    ids = [str(c) for c in clip_ids] if clip_ids is not None else [str(i) for i in range(n)]
    spk = np.empty(n, dtype=object)
    spk[:] = list(speakers)
    skipped = {c.name: why for c in corruptions for why in [c.unavailable()] if why}
    active = [j for j, c in enumerate(corruptions) if c.name not in skipped]
    shape = (n, len(corruptions))
    pred = np.full(shape, NOT_EVALUATED, dtype=np.int64)
    snr, kbps = np.full(shape, np.nan), np.full(shape, np.nan)
    clean = np.zeros(n, dtype=np.int64)
    sources: dict[str, list[tuple[str, ...]]] = {c.name: [()] * n for c in corruptions if c.needs_other_speakers}
    lonely = 0

    from functools import lru_cache

    @lru_cache(maxsize=BABBLE_POOL_CACHE)
    def wave(i: int) -> np.ndarray:
        w = waves[i]
        return (w.detach().cpu().numpy() if isinstance(w, torch.Tensor) else np.asarray(w)).astype(np.float32).ravel()

    from trustser.devices import module_device

    device = module_device(classifier)
    was_training = getattr(classifier, "training", False)
    if hasattr(classifier, "eval"):
        classifier.eval()
    try:
        for i in tqdm(range(n), desc="corruptions", unit="clip", disable=not progress):
            x = wave(i)
            batch, slots = [x], []
            for j in active:
                c = corruptions[j]
                others, chosen = (), ()
                if c.needs_other_speakers:
                    chosen = babble_sources(i, list(spk), int(c.param("talkers")), seed, ids[i])
                    if not chosen:
                        lonely += 1
                        continue
                    others = [wave(k) for k in chosen]
                    sources[c.name][i] = tuple(ids[k] for k in chosen)
                out = c.apply(x, ids[i], seed, others, chosen)
                snr[i, j], kbps[i, j] = out.achieved_snr_db, out.bitrate_kbps
                batch.append(out.wave)
                slots.append(j)
            stacked = torch.from_numpy(np.stack(batch)).to(device)
            lengths = torch.full((len(batch),), x.size, dtype=torch.long, device=device)
            with torch.no_grad():
                answers = classifier(stacked, lengths).argmax(-1).cpu().tolist()
            clean[i] = answers[0]
            for j, a in zip(slots, answers[1:]):
                pred[i, j] = a
    finally:
        if hasattr(classifier, "train"):
            classifier.train(was_training)
    notes = {}
    if lonely:
        for c in corruptions:
            if c.needs_other_speakers and c.name not in skipped:
                notes[c.name] = "clips whose speaker is the only one in the test set are left out (no babble talker)"
    given = None if clean_predictions is None else np.asarray(clean_predictions, dtype=np.int64)
    return RobustnessRun(
        tuple(corruptions),
        ids,
        spk,
        np.asarray(labels, dtype=np.int64),
        clean,
        pred,
        snr,
        kbps,
        sources,
        skipped,
        notes,
        given,
    )


def outcome_arrays(run: RobustnessRun) -> dict[str, np.ndarray]:
    """The run's per-clip arrays under ``trustser.metrics.headline.TestOutcomes``'s field names (pooled on the
    parent run, kept by a resumed one)."""
    return {
        "robustness_speakers": run.speakers,
        "robustness_y_true": run.y_true,
        "robustness_clean": run.clean,
        "robustness_pred": run.pred,
    }


def pooled_robustness_metrics(
    outcomes: Any, names: Sequence[str], n_classes: int, n_resamples: int = 1000, seed: int = 0
) -> dict[str, float]:
    """:func:`robustness_metrics` over pooled ``TestOutcomes`` (every fold's test clips): intervals over all test
    speakers, point values as ``*_pooled``; empty when no fold ran the suite."""
    pred = np.asarray(outcomes.robustness_pred)
    if pred.ndim != 2 or pred.shape[0] == 0 or pred.shape[1] != len(names):
        return {}
    return robustness_metrics(
        names,
        outcomes.robustness_y_true,
        outcomes.robustness_clean,
        pred,
        outcomes.robustness_speakers,
        n_classes,
        n_resamples,
        seed,
        pooled=True,
    )


__all__ = [
    "ChanceReference",
    "RobustnessRun",
    "chance_reference",
    "evaluate_corruptions",
    "mean_flip_stat",
    "outcome_arrays",
    "pooled_robustness_metrics",
    "robustness_metrics",
]
