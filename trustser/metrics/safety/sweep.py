"""SNR sweeps: the ASR of each attack at each SNR (:func:`snr_sweep`, :class:`SweepResult`) and its figure
(:func:`sweep_figure`, returned for the caller to save or log). The top of the package: built on :mod:`.runner`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from trustser.metrics.safety.attacks import get_attack_spec
from trustser.metrics.safety.model import WaveformClassifier
from trustser.metrics.safety.reports import AttackReport
from trustser.metrics.safety.runner import run_attack
from trustser.metrics.safety.settings import SWEEP_SNRS_DB


@dataclass(frozen=True)
class SweepResult:
    """ASR per attack per SNR."""

    reports: Mapping[str, Mapping[float, AttackReport]]

    def asr(self, attack: str, snr: float) -> float:
        return self.reports[attack][float(snr)].asr

    def table(self):
        """One row per (attack, SNR): ASR, counts and achieved SNR."""
        import pandas as pd

        rows = [
            {"attack": a, "snr_db": s, **r.to_dict()}
            for a, by_snr in self.reports.items()
            for s, r in sorted(by_snr.items())
        ]
        return pd.DataFrame(rows)

    def to_dict(self) -> dict[str, float]:
        """``asr_{attack}_snr{SNR}`` → ASR, for logging as metrics."""
        return {f"asr_{a}_snr{s:g}": r.asr for a, by_snr in self.reports.items() for s, r in by_snr.items()}


def snr_sweep(
    classifier: WaveformClassifier,
    waves: Sequence[Any],
    labels: Sequence[int],
    attacks: Sequence[str] = ("fgsm", "pgd", "gaussian"),
    snrs: Sequence[float] = SWEEP_SNRS_DB,
    **kwargs: Any,
) -> SweepResult:
    """ASR of each attack at each SNR. FGSM and Gaussian take one gradient/noise draw per clip for all SNRs."""
    for a in attacks:
        get_attack_spec(a)
    return SweepResult({a: run_attack(classifier, waves, labels, a, snrs, **kwargs) for a in attacks})


def sweep_figure(sweep: SweepResult, title: str = ""):
    """ASR (%) against SNR (dB), one line per attack; matplotlib Agg, returned for the caller to save or log."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.0, 3.6), dpi=110)
    for attack, by_snr in sweep.reports.items():
        snrs = sorted(by_snr)
        ax.plot(snrs, [100 * by_snr[s].asr for s in snrs], marker="o", label=attack)
    ax.set_xlabel("SNR of the perturbation (dB; higher = quieter)")
    ax.set_ylabel("attack success rate (%)")
    ax.set_ylim(-2, 102)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    if title:
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return fig
