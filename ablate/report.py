"""Plots and tables built from logged metrics (no training here)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless: files only, never a window
import matplotlib.pyplot as plt  # noqa: E402

CURVES = (
    ("student", "val/clean_acc", "val/robust_acc"),
    ("clean teacher", "val/clean_teacher_clean_acc", "val/clean_teacher_robust_acc"),
    ("robust teacher", "val/robust_teacher_clean_acc", "val/robust_teacher_robust_acc"),
)


def plot_curves(history: Sequence[dict[str, float]], path: str | os.PathLike,
                title: str = "") -> Path:
    """Fig. 3-style curves: clean and robust validation accuracy of the student and both
    teachers over epochs (teachers' robust accuracy on the student's adversarial examples)."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8), sharex=True)
    epochs = [h["epoch"] for h in history]
    for (label, clean_key, robust_key), color in zip(CURVES, ("C0", "C1", "C2"), strict=True):
        if history and clean_key in history[0]:
            axes[0].plot(epochs, [100 * h[clean_key] for h in history], color=color, label=label)
            axes[1].plot(epochs, [100 * h[robust_key] for h in history], color=color, label=label)
    names = ("clean accuracy (%)", "accuracy on the student's PGD examples (%)")
    for ax, name in zip(axes, names, strict=True):
        ax.set_xlabel("epoch")
        ax.set_ylabel(name)
        ax.grid(alpha=0.3)
    axes[0].legend(loc="lower right", fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    out = Path(path)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
