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
    return _save(fig, path, title)


def _save(fig: plt.Figure, path: str | os.PathLike, title: str) -> Path:
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    out = Path(path)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def pareto_front(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of the points no other point dominates (both coordinates maximised)."""
    def dominated(i: int) -> bool:
        a = points[i]
        return any(b[0] >= a[0] and b[1] >= a[1] and b != a for b in points)

    return [i for i in range(len(points)) if not dominated(i)]


def plot_objective(values: Sequence[float | None], path: str | os.PathLike,
                   title: str = "") -> Path:
    """Objective per trial (in trial order) with the running best; failed trials as x at 0."""
    fig, ax = plt.subplots(figsize=(6, 3.8))
    best, running = float("-inf"), []
    for v in values:
        best = max(best, v) if v is not None else best
        running.append(100 * best if best > float("-inf") else float("nan"))
    idx = list(range(len(values)))
    ok = [i for i in idx if values[i] is not None]
    ax.scatter(ok, [100 * values[i] for i in ok], s=18, label="trial")
    failed = [i for i in idx if values[i] is None]
    ax.scatter(failed, [0] * len(failed), marker="x", color="C3", label="failed")
    ax.step(idx, running, where="post", color="C1", label="best so far")
    ax.set_xlabel("trial")
    ax.set_ylabel("objective (%)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, path, title)


def plot_pareto(points: Sequence[tuple[float | None, float | None]], on_front: Sequence[bool],
                path: str | os.PathLike, title: str = "") -> Path:
    """Clean vs robust accuracy per trial, the Pareto front joined by a line."""
    fig, ax = plt.subplots(figsize=(5, 4.2))
    pts = [(100 * c, 100 * r, f) for (c, r), f in zip(points, on_front, strict=True)
           if c is not None and r is not None]
    ax.scatter([p[0] for p in pts], [p[1] for p in pts], s=18, color="C0", label="trial")
    front = sorted((p[0], p[1]) for p in pts if p[2])
    ax.plot([p[0] for p in front], [p[1] for p in front], "o-", color="C3", label="Pareto front")
    ax.set_xlabel("clean accuracy (%)")
    ax.set_ylabel("PGD accuracy (%)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, path, title)


def plot_importances(importances: dict[str, float], path: str | os.PathLike,
                     title: str = "") -> Path:
    """Horizontal bars, most important on top (an empty dict gives an explanatory figure)."""
    fig, ax = plt.subplots(figsize=(6, 0.5 + 0.45 * max(len(importances), 1)))
    names = list(importances)[::-1]
    ax.barh(names, [importances[n] for n in names], color="C0")
    if not importances:
        ax.text(0.5, 0.5, "too few finished trials", ha="center", transform=ax.transAxes)
    ax.set_xlabel("importance")
    return _save(fig, path, title)
