"""Running an attack over clips (:func:`run_attack`, :func:`attack_success_rate`): which clips are skipped and why,
the clean prediction, per-clip seeds, one clip at a time or in batches, and the records summarised per SNR.
Imports :mod:`.settings`, :mod:`.snr`, :mod:`.model`, :mod:`.reports` and :mod:`.attacks`.

Cost. FGSM costs one forward + backward per clip for all SNRs (its clean forward is reused as the clean
prediction in eval mode), plus one forward over the SNRs' perturbed versions; PGD costs ``pgd_steps`` forward +
backward per clip and SNR.

Batches. FGSM and Gaussian noise run ``batch_size`` clips per forward/backward (:class:`AttackSettings`; 1 = one
clip at a time, today's path exactly). Clips are length-sorted (within windows of ``SORT_WINDOW_BATCHES``
batches, so lazy waveforms keep memory flat), zero-padded to the longest of their batch and passed with their
lengths: the perturbation is masked to zero on the padding, ε comes from each clip's own energy (so each clip's SNR
is what it is alone), Gaussian seeds stay per clip (:func:`_clip_seed`), and the batch loss is the mean, which
scales each clip's gradient by 1/B and leaves its sign alone. This is sound because a clip's output does not
depend on its batch: every backbone guarantees it (``trustser.backbones.base``) — Whisper computes the log-mel per
clip, zeroes conv1 beyond the clip and masks padded positions out of attention, so it really batches; wav2vec 2.0 /
WavLM (GroupNorm over time: padding would change the output) and the s3prl models (APC, TERA) run each clip alone
inside their forward, so for them batching is still exact but saves only the head and the per-call overhead — no
backbone needs a per-clip fallback. What batching changes is float rounding (a batched matmul sums in another
order): logits differ by ~1e-6 relative, and a gradient entry that is ~0 may change sign; predictions, statuses and
flips agree (``tests/test_metrics_safety.py`` compares them on every backbone family). PGD (per-clip random
start from the global generator) and ``train_mode`` (per-clip dropout draws) stay one clip at a time. On the CPU
batching saves calls and thread synchronisation, not arithmetic (a clip's matmuls are already large, padding and
larger activations cost): measured, it pays at 2 threads on busy cores and not at 1 thread, hence the small
default.
"""

from __future__ import annotations

import zlib
from typing import Any, Sequence

import numpy as np
import torch
from torch import Tensor

from trustser.devices import module_device
from trustser.metrics.safety.attacks import AttackSpec, _Perturbed, get_attack_spec
from trustser.metrics.safety.model import WaveformClassifier, _predict, _predict_padded
from trustser.metrics.safety.reports import AttackReport, ClipResult, summarise
from trustser.metrics.safety.settings import DEFAULT_SNR_DB, AttackSettings
from trustser.metrics.safety.snr import snr_db


def _clip_seed(seed: int, clip_id: str) -> int:
    return zlib.crc32(f"{seed}:{clip_id}".encode())


def _as_wave(wave: Any, device: torch.device) -> Tensor:
    return (
        torch.as_tensor(np.asarray(wave) if not isinstance(wave, Tensor) else wave, dtype=torch.float32)
        .reshape(-1)
        .to(device)
    )


def _unattacked(
    x: Tensor, clip_id: str, label: int, snrs: tuple[float, ...], status: str, clean_pred: int | None = None
) -> list[ClipResult]:
    return [
        ClipResult(
            clip_id=clip_id,
            label=label,
            status=status,
            target_snr_db=snr,
            clean_pred=clean_pred,
            n_samples=int(x.numel()),
        )
        for snr in snrs
    ]


def _skipped(
    x: Tensor, clip_id: str, label: int, given: int | None, snrs: tuple[float, ...]
) -> list[ClipResult] | None:
    """The records of a clip skipped without any model call (silent, or known misclassified), else None."""
    if float(x.double().square().sum()) == 0.0:
        return _unattacked(x, clip_id, label, snrs, "silent")
    if given is not None and given != label:
        return _unattacked(x, clip_id, label, snrs, "incorrect", given)
    return None


def _attacked(
    x: Tensor,
    clip_id: str,
    label: int,
    snrs: tuple[float, ...],
    clean_pred: int,
    out: _Perturbed,
    adv_preds: Sequence[int],
) -> list[ClipResult]:
    return [
        ClipResult(
            clip_id=clip_id,
            label=label,
            status="attacked",
            target_snr_db=snr,
            clean_pred=clean_pred,
            adv_pred=int(adv),
            flipped=int(adv) != clean_pred,
            eps=float(e),
            achieved_snr_db=snr_db(x, wave),
            n_samples=int(x.numel()),
            n_unperturbed=int((wave == x).sum()),
        )
        for snr, wave, e, adv in zip(snrs, out.waves, out.eps, adv_preds)
    ]


def _attack_clip(
    classifier: WaveformClassifier,
    spec: AttackSpec,
    x: Tensor,
    clip_id: str,
    label: int,
    given: int | None,
    snrs: tuple[float, ...],
    settings: AttackSettings,
    known: int | None = None,
) -> list[ClipResult]:
    """One clip's record at each SNR: skipped with its status, or attacked. ``known``: the waveform path's clean
    prediction if another attack already made it (no clean forward then)."""

    def unattacked(status: str, clean_pred: int | None = None) -> list[ClipResult]:
        return _unattacked(x, clip_id, label, snrs, status, clean_pred)

    skipped = _skipped(x, clip_id, label, given, snrs)
    if skipped is not None:
        return skipped
    failed = "incorrect" if given is None else "clean_mismatch"
    captured = spec.first_forward_is_clean and not settings.train_mode
    if not captured:
        clean_pred = known if known is not None else _predict(classifier, x[None])[0]
        if clean_pred != label:
            return unattacked(failed, clean_pred)
    seed = _clip_seed(settings.seed, clip_id)
    device = x.device
    fork = [device.index if device.index is not None else torch.cuda.current_device()] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=fork):
        torch.manual_seed(seed)  # PGD's random start and train-mode dropout
        out = spec.perturb(classifier, x, label, snrs, settings, seed)
    if captured:
        clean_pred = int(out.clean_logits.argmax(-1)[0])
        if clean_pred != label:
            return unattacked(failed, clean_pred)
    adv_preds = _predict(classifier, torch.stack(out.waves))  # every SNR's version in one batch
    return _attacked(x, clip_id, label, snrs, clean_pred, out, adv_preds)


def _attack_batch(
    classifier: WaveformClassifier,
    spec: AttackSpec,
    xs: Sequence[Tensor],
    clip_ids: Sequence[str],
    labels: Sequence[int],
    given: Sequence[int | None],
    snrs: tuple[float, ...],
    settings: AttackSettings,
    known: Sequence[int | None],
) -> list[list[ClipResult]]:
    """:func:`_attack_clip` for clips that need the model (none silent or known misclassified), eval mode, in
    padded batches: one clean forward (Gaussian, for the clips whose waveform prediction is not ``known``) or one
    forward + backward (FGSM, whose forward is the clean one), then one forward over every clip's perturbed
    versions."""
    failed = ["incorrect" if g is None else "clean_mismatch" for g in given]
    records: list[list[ClipResult] | None] = [None] * len(xs)
    clean: list[int | None] = [None] * len(xs)
    if not spec.first_forward_is_clean:
        clean = list(known)
        unknown = [k for k in range(len(xs)) if clean[k] is None]
        if unknown:
            for k, pred in zip(unknown, _predict_padded(classifier, [xs[k] for k in unknown])):
                clean[k] = pred
        for k, (pred, label) in enumerate(zip(clean, labels)):
            if pred != label:
                records[k] = _unattacked(xs[k], clip_ids[k], label, snrs, failed[k], pred)
    todo = [k for k in range(len(xs)) if records[k] is None]
    if todo:
        outs = spec.perturb_batch(
            classifier,
            [xs[k] for k in todo],
            [labels[k] for k in todo],
            snrs,
            settings,
            [_clip_seed(settings.seed, clip_ids[k]) for k in todo],
        )
        survivors = []
        for k, out in zip(todo, outs):
            if spec.first_forward_is_clean:
                clean[k] = int(out.clean_logits.argmax(-1)[0])
            if clean[k] != labels[k]:
                records[k] = _unattacked(xs[k], clip_ids[k], labels[k], snrs, failed[k], clean[k])
            else:
                survivors.append((k, out))
        if survivors:  # every survivor's every SNR in one padded forward
            adv = _predict_padded(classifier, [w for _, out in survivors for w in out.waves])
            for j, (k, out) in enumerate(survivors):
                records[k] = _attacked(
                    xs[k], clip_ids[k], labels[k], snrs, int(clean[k]), out, adv[j * len(snrs) : (j + 1) * len(snrs)]
                )
    return records  # type: ignore[return-value]


SORT_WINDOW_BATCHES = 16
"""Batched attacks read this many batches' worth of clips at a time and sort them by length: little padding, and
memory bounded by the window for a lazy sequence of waveforms."""


def _attack_batched(
    classifier: WaveformClassifier,
    spec: AttackSpec,
    waves: Sequence[Any],
    labels: Sequence[int],
    clip_ids: Sequence[str],
    given: Sequence[int | None],
    snrs: tuple[float, ...],
    settings: AttackSettings,
    device: torch.device,
    bar: Any,
    known: Sequence[int | None],
) -> list[list[ClipResult]]:
    """Every clip's records, in input order, with the clips that need the model attacked in length-sorted batches."""
    records: list[list[ClipResult] | None] = [None] * len(waves)
    window = settings.batch_size * SORT_WINDOW_BATCHES
    for start in range(0, len(waves), window):
        todo = []
        for i in range(start, min(start + window, len(waves))):
            x = _as_wave(waves[i], device)
            records[i] = _skipped(x, clip_ids[i], int(labels[i]), given[i], snrs)
            if records[i] is None:
                todo.append((i, x))
            else:
                bar.update(1)
        todo.sort(key=lambda item: item[1].numel())
        for b in range(0, len(todo), settings.batch_size):
            group = todo[b : b + settings.batch_size]
            index = [i for i, _ in group]
            results = _attack_batch(
                classifier,
                spec,
                [x for _, x in group],
                [clip_ids[i] for i in index],
                [int(labels[i]) for i in index],
                [given[i] for i in index],
                snrs,
                settings,
                [known[i] for i in index],
            )
            for i, result in zip(index, results):
                records[i] = result
            bar.update(len(group))
    return records  # type: ignore[return-value]


def run_attack(
    classifier: WaveformClassifier,
    waves: Sequence[Any],
    labels: Sequence[int],
    attack: str = "fgsm",
    snrs: Sequence[float] = (DEFAULT_SNR_DB,),
    clip_ids: Sequence[str] | None = None,
    clean_predictions: Sequence[int] | None = None,
    settings: AttackSettings = AttackSettings(),
    progress: bool = False,
    waveform_predictions: Sequence[int | None] | None = None,
) -> dict[float, AttackReport]:
    """Attack every clip at every SNR; one :class:`AttackReport` per SNR.

    ``waves``: any sequence of 1-D waveforms (tensors or arrays; a lazy one such as :class:`ClipWaves` keeps memory
    flat). ``clean_predictions`` (e.g. the cached-feature predictions the performance metric used) lets clips
    already known to be misclassified be skipped without any compute; the clean prediction of the waveform path
    is still checked, and a disagreement is excluded as ``clean_mismatch``. ``waveform_predictions``: that check's
    answer where another attack on this classifier already gave it (:meth:`AttackReport.waveform_predictions`;
    None = not known): trusted, so an attack that needs a separate clean forward (Gaussian noise) skips it, and
    every attack runs on the same correctly classified clips. The classifier's mode is restored.
    FGSM and Gaussian noise run ``settings.batch_size`` clips at a time (module docstring, "Batches"); PGD and
    ``train_mode`` one at a time.
    """
    spec = get_attack_spec(attack)
    snrs = tuple(dict.fromkeys(float(s) for s in snrs))
    if not snrs:
        raise ValueError("at least one SNR is needed")
    if (
        len(labels) != len(waves)
        or (clip_ids is not None and len(clip_ids) != len(waves))
        or (clean_predictions is not None and len(clean_predictions) != len(waves))
        or (waveform_predictions is not None and len(waveform_predictions) != len(waves))
    ):
        raise ValueError(
            "waves, labels, clip_ids, clean_predictions and waveform_predictions must have the same length"
        )
    from tqdm.auto import tqdm

    device = module_device(classifier)
    was_training = classifier.training
    records: dict[float, list[ClipResult]] = {snr: [] for snr in snrs}
    ids = [str(clip_ids[i]) if clip_ids is not None else str(i) for i in range(len(waves))]
    given = [None if clean_predictions is None else int(clean_predictions[i]) for i in range(len(waves))]
    known = [None if waveform_predictions is None else waveform_predictions[i] for i in range(len(waves))]
    batched = settings.batch_size > 1 and spec.perturb_batch is not None and not settings.train_mode
    try:
        classifier.eval()
        with tqdm(total=len(waves), desc=f"{attack} attack", unit="clip", disable=not progress) as bar:
            if batched:
                per_clip = _attack_batched(
                    classifier, spec, waves, labels, ids, given, snrs, settings, device, bar, known
                )
            else:
                per_clip = []
                for i in range(len(waves)):
                    per_clip.append(
                        _attack_clip(
                            classifier,
                            spec,
                            _as_wave(waves[i], device),
                            ids[i],
                            int(labels[i]),
                            given[i],
                            snrs,
                            settings,
                            known[i],
                        )
                    )
                    bar.update(1)
        for results in per_clip:
            for snr, result in zip(snrs, results):
                records[snr].append(result)
    finally:
        classifier.train(was_training)
    return {snr: summarise(attack, snr, records[snr], settings) for snr in snrs}


def attack_success_rate(
    classifier: WaveformClassifier,
    waves: Sequence[Any],
    labels: Sequence[int],
    attack: str = "fgsm",
    snr: float = DEFAULT_SNR_DB,
    **kwargs: Any,
) -> AttackReport:
    """The ASR of one attack at one SNR (the method's metric: FGSM at 45 dB); see :func:`run_attack`."""
    return run_attack(classifier, waves, labels, attack, (snr,), **kwargs)[float(snr)]
