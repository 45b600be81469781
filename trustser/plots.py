"""Figures logged as artifacts. matplotlib's Agg backend: no display needed."""

from __future__ import annotations

from typing import Sequence

import numpy as np


def confusion_figure(confusion: np.ndarray, class_names: Sequence[str], title: str):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4.2, 3.8), dpi=110)
    ax.imshow(confusion, cmap="Blues")
    ax.set_xticks(range(len(class_names)), class_names, rotation=30)
    ax.set_yticks(range(len(class_names)), class_names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title, fontsize=9)
    top = confusion.max() if confusion.size else 0
    for (i, j), n in np.ndenumerate(confusion):
        ax.text(j, i, str(n), ha="center", va="center", color="white" if n > top / 2 else "black", fontsize=8)
    fig.tight_layout()
    return fig
