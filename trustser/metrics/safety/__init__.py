"""Safety: how easily a perturbation of the raw waveform, too quiet to matter to a listener, flips the emotion.

Per clip (x = its samples, y = its label, f = backbone + head), a perturbation δ at a target SNR
``10·log10(‖x‖² / ‖δ‖²)`` dB from FGSM, PGD (torchattacks') or white Gaussian noise; the **attack success rate**
(ASR) is the share of the correctly classified clips whose prediction the perturbation changes. One job per
submodule, each with its part of the definitions; each imports only submodules listed above it (none: settings, snr,
model, waves), so the package has no import cycle:

* :mod:`.settings`: the operating point (``DEFAULT_SNR_DB``: 45 dB), the sweep's SNRs, :class:`AttackSettings`.
* :mod:`.snr`: SNR and ε, pure maths; SNR's definition (undefined for a silent clip).
* :mod:`.model`: :class:`WaveformClassifier`, backbone + head from waveforms, its padded batches and predictions;
  "Model mode" (eval, or the reference's dropout-only train mode).
* :mod:`.views`: the [0, 1] views that torchattacks attacks; "How the attacks run".
* :mod:`.reports`: clip statuses, :class:`ClipResult`, :class:`AttackReport`; the ASR's definition.
* :mod:`.attacks`: FGSM, PGD and Gaussian noise, their definitions, and the registry ``ATTACKS``.
* :mod:`.runner`: :func:`run_attack` / :func:`attack_success_rate` over clips; "Cost" and "Batches".
* :mod:`.sweep`: :func:`snr_sweep` (each attack at each SNR) and :func:`sweep_figure`.
* :mod:`.waves`: :class:`ClipWaves`, the clips' audio read on access.

The functions here are pure: no logging, no files; :func:`sweep_figure` returns a matplotlib figure for the caller
to log. Everything is imported from the package:

    from trustser.metrics.safety import WaveformClassifier, ClipWaves, attack_success_rate
    report = attack_success_rate(WaveformClassifier(backbone, head), ClipWaves(paths), labels, "fgsm", 45.0,
                                 clip_ids=ids, clean_predictions=y_pred)

(A test that patches a module-level name patches the submodule that looks it up, e.g.
``trustser.metrics.safety.runner.SORT_WINDOW_BATCHES``: the names here are re-exports.)
"""

from __future__ import annotations

from trustser.metrics.safety.attacks import ATTACKS, AttackSpec, get_attack_spec
from trustser.metrics.safety.model import WaveformClassifier, is_dropout_like
from trustser.metrics.safety.reports import STATUSES, AttackReport, ClipResult, summarise
from trustser.metrics.safety.runner import SORT_WINDOW_BATCHES, attack_success_rate, run_attack
from trustser.metrics.safety.settings import DEFAULT_SNR_DB, SWEEP_SNRS_DB, AttackSettings
from trustser.metrics.safety.snr import snr_db, snr_epsilon
from trustser.metrics.safety.sweep import SweepResult, snr_sweep, sweep_figure
from trustser.metrics.safety.views import PaddedUnitIntervalView, UnitIntervalView
from trustser.metrics.safety.waves import ClipWaves

__all__ = [
    "ATTACKS",
    "DEFAULT_SNR_DB",
    "STATUSES",
    "SORT_WINDOW_BATCHES",
    "SWEEP_SNRS_DB",
    "AttackReport",
    "AttackSettings",
    "AttackSpec",
    "ClipResult",
    "ClipWaves",
    "PaddedUnitIntervalView",
    "SweepResult",
    "UnitIntervalView",
    "WaveformClassifier",
    "attack_success_rate",
    "get_attack_spec",
    "is_dropout_like",
    "run_attack",
    "snr_db",
    "snr_epsilon",
    "snr_sweep",
    "summarise",
    "sweep_figure",
]
