"""Plots and tables built from logged metrics (no training here); a grid's statistics and table
are in :mod:`ablate.grid.table`."""

from __future__ import annotations

import html
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

from ablate import names

matplotlib.use("Agg")  # headless: files only, never a window
import matplotlib.pyplot as plt  # noqa: E402

CURVES = (
    ("student", names.VAL_CLEAN, names.VAL_ROBUST),
    *((f"{who} teacher", f"{names.VAL}{who}_teacher_clean_acc",
       f"{names.VAL}{who}_teacher_robust_acc") for who in ("clean", "robust")),
)


def plot_curves(history: Sequence[dict[str, float]], path: str | os.PathLike,
                title: str = "") -> Path:
    """Fig. 3-style curves: clean and robust validation accuracy of the student and both
    teachers over epochs (teachers' robust accuracy on the student's adversarial examples)."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8), sharex=True)
    epochs = [h[names.EPOCH] for h in history]
    for (label, clean_key, robust_key), color in zip(CURVES, ("C0", "C1", "C2"), strict=True):
        if history and clean_key in history[0]:
            axes[0].plot(epochs, [100 * h[clean_key] for h in history], color=color, label=label)
            axes[1].plot(epochs, [100 * h[robust_key] for h in history], color=color, label=label)
    ylabels = ("clean accuracy (%)", "accuracy on the student's PGD examples (%)")
    for ax, name in zip(axes, ylabels, strict=True):
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
    params = list(importances)[::-1]
    ax.barh(params, [importances[n] for n in params], color="C0")
    if not importances:
        ax.text(0.5, 0.5, "too few finished trials", ha="center", transform=ax.transAxes)
    ax.set_xlabel("importance")
    return _save(fig, path, title)


def write_html(figures: Mapping[str, Any], path: str | os.PathLike, title: str = "") -> Path:
    """All plotly ``figures`` on one HTML page, each under its name, with plotly.js inline once
    (~4.8 MB): the page opens offline, and MLflow previews it."""
    parts = [f"<h2>{html.escape(name.replace('_', ' '))}</h2>"
             + fig.to_html(full_html=False, include_plotlyjs=i == 0)
             for i, (name, fig) in enumerate(figures.items())]
    page = (f"<html><head><meta charset='utf-8'><title>{html.escape(title)}</title></head>"
            f"<body><h1>{html.escape(title)}</h1>{''.join(parts)}</body></html>")
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(page, encoding="utf-8")
    return out


def optuna_figures(study: Any, *, target_name: str, title: str,
                   target: Any = None, importance_study: Any = None,
                   importance_title: str = "", pareto_names: Sequence[str] = ()
                   ) -> tuple[dict[str, Any], dict[str, str]]:
    """Optuna's plotly figures of a study, by name: ``history`` (optimisation history),
    ``parallel_coordinate``, ``slice``, ``contour`` (with two or more parameters), ``importances``
    (of ``importance_study`` when given: e.g. the trials at one fidelity), and ``pareto_front``
    when ``pareto_names`` names the objectives of a multi-objective study. ``target`` (a
    function of a trial) is the plotted value of a multi-objective study. Returns the figures and,
    per figure that could not be drawn, why."""
    import warnings

    import optuna.visualization as vis

    kw = {"target": target, "target_name": target_name}
    params = {p for t in study.trials for p in t.params}
    makers: dict[str, Any] = {
        "history": lambda: vis.plot_optimization_history(study, **kw),
        "parallel_coordinate": lambda: vis.plot_parallel_coordinate(study, **kw),
        "slice": lambda: vis.plot_slice(study, **kw),
    }
    if len(params) >= 2:
        makers["contour"] = lambda: vis.plot_contour(study, **kw)
    imp = importance_study if importance_study is not None else study
    makers["importances"] = lambda: vis.plot_param_importances(
        imp, target=None if importance_study is not None else target, target_name=target_name)
    if pareto_names:
        makers["pareto_front"] = lambda: vis.plot_pareto_front(study,
                                                               target_names=list(pareto_names))
    figures, skipped = {}, {}
    for name, make in makers.items():
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # experimental-feature and few-trials warnings
                fig = make()
        except (RuntimeError, ValueError, ZeroDivisionError) as exc:
            skipped[name] = f"{type(exc).__name__}: {exc}"
            continue
        fig.update_layout(title=importance_title if name == "importances" and importance_title
                          else f"{title}: {fig.layout.title.text or name}")
        figures[name] = fig
    return figures, skipped


def plot_grid(table: Sequence[Mapping[str, Any]], metrics: Sequence[str],
              path: str | os.PathLike, *, labels: Mapping[str, str] | None = None,
              title: str = "") -> Path:
    """One panel per metric: each seed as a dot, the per-row mean as a bar with its 95% interval
    (clipped to [0, 100]: an accuracy interval beyond them is the t-interval's, not the data's),
    the paper's value as a cross."""
    fig, axes = plt.subplots(1, len(metrics), figsize=(4.2 * len(metrics), 3.8), squeeze=False)
    rows = [str(r["row"]) for r in table]
    for ax, m in zip(axes[0], metrics, strict=True):
        means = [r[f"{m}_mean"] for r in table]
        ax.bar(range(len(rows)), means, color="C0", alpha=0.5, label="mean")
        for i, r in enumerate(table):
            lo, hi = r[f"{m}_ci_low"], r[f"{m}_ci_high"]
            if not math.isnan(lo):
                ax.plot([i, i], [max(lo, 0.0), min(hi, 100.0)], color="k", lw=1.2)
            values = r.get(f"{m}_values") or []
            ax.scatter([i] * len(values), values, s=14, color="C1", zorder=3,
                       label="seed" if i == 0 and values else None)
        paper = [(i, r[f"{m}_paper"]) for i, r in enumerate(table) if r[f"{m}_paper"] is not None]
        if paper:
            ax.scatter([p[0] for p in paper], [p[1] for p in paper], marker="x", color="C3",
                       zorder=4, label="paper")
        ax.legend(fontsize=8)
        ax.set_xticks(range(len(rows)), rows, rotation=30, ha="right", fontsize=8)
        ax.set_ylabel(f"{(labels or {}).get(m, m)} (%)")
        ax.grid(axis="y", alpha=0.3)
    return _save(fig, path, title)


