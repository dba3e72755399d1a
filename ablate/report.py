"""Plots and tables built from logged metrics (no training here)."""

from __future__ import annotations

import csv
import html
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib
import pyarrow as pa
import pyarrow.parquet as pq
from scipy.stats import t as student_t

from ablate.core.catalog import ATTACK_LABELS

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


def trials_markdown(rows: Sequence[Mapping[str, Any]], params: Sequence[str]) -> str:
    """A search's trials as a Markdown table (``trials.md``; the MLflow UI previews it): trial,
    status, epochs, the sampled values (``params``: their column names), validation W-acc,
    clean and PGD accuracy at the best epoch (percent), Pareto membership, the push set, error."""
    header = ["trial", "status", "epochs", *params, "val W-acc (%)", "val clean (%)",
              "val PGD (%)", "Pareto", "push", "error"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in rows:
        cells = [str(r["trial"]), str(r["status"]), str(r["epochs"]),
                 *(_value(r.get(p)) for p in params),
                 *(_percent(r.get(k)) for k in ("val/best_w_acc", "val/best_clean_acc",
                                                "val/best_robust_acc")),
                 "yes" if r.get("pareto") else "", _push(r), str(r.get("error") or "")]
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    note = ("val W-acc, clean and PGD: at each trial's best epoch by W-acc so far (its "
            "checkpoint), on the validation split; stopped = stopped early by ASHA; param/ "
            "columns: the sampled values, named after the space key with its dots as "
            "underscores.")
    return "\n".join([*lines, "", note]) + "\n"


def _value(v: Any) -> str:
    if v is None:
        return "–"
    return format(v, ".4g") if isinstance(v, float) else str(v)


def _percent(v: float | None) -> str:
    return "–" if v is None or math.isnan(v) else f"{100 * v:.1f}"


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
    names = {p for t in study.trials for p in t.params}
    makers: dict[str, Any] = {
        "history": lambda: vis.plot_optimization_history(study, **kw),
        "parallel_coordinate": lambda: vis.plot_parallel_coordinate(study, **kw),
        "slice": lambda: vis.plot_slice(study, **kw),
    }
    if len(names) >= 2:
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


# --- ablation grids: statistics over seeds and the results table ---------------------------------

NAN = float("nan")


def seed_stats(values: Sequence[float]) -> dict[str, float]:
    """n, mean, std (sample, ddof=1), and the 95% t-interval ci_low/ci_high of the mean.
    n == 0 -> mean/std/ci NaN; n == 1 -> std and ci NaN."""
    n = len(values)
    mean = math.fsum(values) / n if n else NAN
    if n < 2:
        return {"n": n, "mean": mean, "std": NAN, "ci_low": NAN, "ci_high": NAN}
    std = math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (n - 1))
    half = student_t.ppf(0.975, n - 1) * std / math.sqrt(n)
    return {"n": n, "mean": mean, "std": std, "ci_low": mean - half, "ci_high": mean + half}


def paired_test(row: Sequence[float], baseline: Sequence[float]) -> dict[str, float]:
    """Paired t-test over seeds (same seed = same data order and init): n, diff (mean of
    row - baseline), diff_ci_low/diff_ci_high (95% t-interval of the mean difference), t, p
    (two-sided). Fewer than 2 pairs -> t, p, ci NaN (diff still the mean if n == 1). Zero variance
    of the differences: all diffs 0 -> t = 0, p = 1; else t = +-inf, p = 0."""
    s = seed_stats([r - b for r, b in zip(row, baseline, strict=True)])
    out = {"n": s["n"], "diff": s["mean"], "diff_ci_low": s["ci_low"],
           "diff_ci_high": s["ci_high"], "t": NAN, "p": NAN}
    if s["n"] < 2:
        return out
    if s["std"] == 0:  # the t statistic is 0/0 or x/0: take its limit instead of NaN
        t_inf = math.copysign(math.inf, s["mean"])
        out["t"], out["p"] = (0.0, 1.0) if s["mean"] == 0 else (t_inf, 0.0)
        return out
    t = s["mean"] / (s["std"] / math.sqrt(s["n"]))
    out["t"], out["p"] = t, float(2 * student_t.sf(abs(t), s["n"] - 1))
    return out


PUSH_KEYS = ("push_active", "push_empty")  # per cell: mean |J|/B, share of batches with J = ∅


def aggregate(cells: Sequence[Mapping[str, Any]], *, rows: Sequence[str], baseline: str,
              seeds: Sequence[int], metrics: Sequence[str],
              paper: Mapping[str, Mapping[str, float]] | None = None) -> list[dict[str, Any]]:
    """One dict per row (in `rows` order): seeds_finished, seeds_asked, push_active and
    push_empty (means over the finished seeds that logged them, fractions; None without a push
    term) and, per metric m (a fraction in the cells, a percentage here), m_values (per seed),
    m_mean/_std/_ci_low/_ci_high, m_diff/_p (paired against the baseline over the seeds both
    finished) and m_paper (paper[row][m] or None)."""
    finished: dict[str, dict[int, Mapping[str, Any]]] = {r: {} for r in rows}
    for c in cells:
        if c.get("status") == "finished" and c["row"] in finished and c["seed"] in seeds:
            finished[c["row"]][c["seed"]] = c

    def percent(row: str, m: str) -> dict[int, float]:
        # a finished run may still lack a metric (or have NaN, e.g. a diverged run): not a value
        vals = {s: c.get(m) for s, c in finished[row].items()}
        return {s: 100 * v for s, v in vals.items() if v is not None and not math.isnan(v)}

    table = []
    for r in rows:
        out: dict[str, Any] = {"row": r, "seeds_finished": len(finished[r]),
                               "seeds_asked": len(seeds)}
        for key in PUSH_KEYS:
            logged = [c[key] for c in finished[r].values() if c.get(key) is not None]
            out[key] = math.fsum(logged) / len(logged) if logged else None
        for m in metrics:
            vals, base = percent(r, m), percent(baseline, m)
            s = seed_stats(list(vals.values()))
            common = [k for k in seeds if k in vals and k in base]
            test = paired_test([vals[k] for k in common], [base[k] for k in common])
            out.update({f"{m}_values": [vals[k] for k in sorted(vals)],
                        f"{m}_mean": s["mean"], f"{m}_std": s["std"], f"{m}_ci_low": s["ci_low"],
                        f"{m}_ci_high": s["ci_high"],
                        f"{m}_diff": 0.0 if r == baseline else test["diff"],
                        f"{m}_p": NAN if r == baseline else test["p"],
                        f"{m}_paper": (paper or {}).get(r, {}).get(m)})
        table.append(out)
    return table


def _num(x: float | None, fmt: str = ".2f") -> str:
    return "–" if x is None or math.isnan(x) else format(x, fmt)


def table_markdown(table: Sequence[Mapping[str, Any]], *, metrics: Sequence[str], baseline: str,
                   labels: Mapping[str, str] | None = None) -> str:
    """Markdown table: per row and metric the mean ± std, 95% CI, Δ vs baseline (p) and the
    paper's value; then a footnote on the statistics. Up to three metrics sit side by side
    (one line per row); more go one block per metric (the paper's attack-major Tables 3-6)."""
    label = {m: (labels or {}).get(m, m) for m in metrics}
    stats = ["(mean ± std)", "95% CI", "Δ vs baseline (p)", "paper"]
    push = any(t.get("push_empty") is not None for t in table)
    if len(metrics) <= 3:
        header = ["row", "seeds", *(["push"] if push else []),
                  *(f"{label[m]} {s}" if s.startswith("(") else s
                    for m in metrics for s in stats)]
        body = [[_row_name(t), _seeds(t), *([_push(t)] if push else []),
                 *(c for m in metrics for c in _cells(t, m, baseline))] for t in table]
    else:
        header = ["metric", "row", "seeds", *(["push"] if push else []), "mean ± std",
                  *stats[1:]]
        body = [[label[m], _row_name(t), _seeds(t), *([_push(t)] if push else []),
                 *_cells(t, m, baseline)] for m in metrics for t in table]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cells) + " |" for cells in body]
    note = ("Mean ± sample std over seeds (percent); 95% CI: t-interval of the mean; Δ: paired "
            f"difference to the baseline row ({baseline}) over the seeds both finished, p from a "
            "two-sided paired t-test over seeds; – = not available.")
    if push:
        note += (" push: mean share of each batch in the push set J (clean teacher wrong on "
                 "x*) over training, and the share of batches with J = ∅, in which the push "
                 "term is exactly 0 (– = no push term).")
    return "\n".join([*lines, "", note]) + "\n"


def _push(t: Mapping[str, Any]) -> str:
    return push_note(t.get("push_active"), t.get("push_empty")) or "–"


def _row_name(t: Mapping[str, Any]) -> str:
    return str(t["row"]).replace("|", "\\|")


def _seeds(t: Mapping[str, Any]) -> str:
    done, asked = t["seeds_finished"], t["seeds_asked"]
    return str(done) if done >= asked else f"{done}/{asked} ({asked - done} missing)"


def _cells(t: Mapping[str, Any], m: str, baseline: str) -> list[str]:
    """mean ± std, 95% CI, Δ vs baseline (p), paper: one metric of one table row."""
    mean, std, lo, hi = (t[f"{m}_{k}"] for k in ("mean", "std", "ci_low", "ci_high"))
    p = t[f"{m}_p"]
    p_text = "p<0.001" if p < 0.001 else f"p={_num(p, '.3f')}"
    return [
        "–" if math.isnan(mean) else f"{_num(mean)} ± {_num(std)}",
        "–" if math.isnan(lo) else f"[{_num(lo)}, {_num(hi)}]",
        "baseline" if t["row"] == baseline else
        "–" if math.isnan(t[f"{m}_diff"]) else f"{_num(t[f'{m}_diff'], '+.2f')} ({p_text})",
        _num(t[f"{m}_paper"]),
    ]


def write_table(table: Sequence[Mapping[str, Any]], markdown: str, directory: str | os.PathLike,
                stem: str = "table") -> list[Path]:
    """Write <stem>.md, <stem>.csv (NaN/None as empty) and <stem>.parquet into directory."""
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    md, csv_path, parquet = (out / f"{stem}.{ext}" for ext in ("md", "csv", "parquet"))
    md.write_text(markdown)
    keys = list(table[0]) if table else []
    with csv_path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(keys)
        for t in table:
            writer.writerow([_csv_value(t.get(k)) for k in keys])
    pq.write_table(pa.Table.from_pylist([dict(t) for t in table]), parquet)
    return [md, csv_path, parquet]


def _csv_value(v: Any) -> Any:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return ""
    if isinstance(v, list):  # per-seed values
        return ";".join(f"{x:g}" for x in v)
    return v


def plot_grid(table: Sequence[Mapping[str, Any]], metrics: Sequence[str],
              path: str | os.PathLike, *, labels: Mapping[str, str] | None = None,
              title: str = "") -> Path:
    """One panel per metric: each seed as a dot, the per-row mean as a bar with its 95% interval
    (clipped to [0, 100]: an accuracy interval beyond them is the t-interval's, not the data's),
    the paper's value as a cross."""
    fig, axes = plt.subplots(1, len(metrics), figsize=(4.2 * len(metrics), 3.8), squeeze=False)
    names = [str(r["row"]) for r in table]
    for ax, m in zip(axes[0], metrics, strict=True):
        means = [r[f"{m}_mean"] for r in table]
        ax.bar(range(len(names)), means, color="C0", alpha=0.5, label="mean")
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
        ax.set_xticks(range(len(names)), names, rotation=30, ha="right", fontsize=8)
        ax.set_ylabel(f"{(labels or {}).get(m, m)} (%)")
        ax.grid(axis="y", alpha=0.3)
    return _save(fig, path, title)


def progress_line(m: Mapping[str, float], epochs: int, seconds: float) -> str:
    """The console line of one ``ablate train`` epoch."""
    pct = {k: 100 * v for k, v in m.items() if k.startswith("val/")}
    line = (f"epoch {int(m['epoch']) + 1:>3}/{epochs}  loss {m.get('train/loss', 0):+.4f}  "
            f"val clean {pct['val/clean_acc']:5.1f}%  PGD {pct['val/robust_acc']:5.1f}%  "
            f"W {pct['val/w_acc']:5.1f}%")
    if "val/robust_teacher_clean_acc" in pct:
        line += (f"  | t' {pct['val/robust_teacher_clean_acc']:.1f}/"
                 f"{pct['val/robust_teacher_robust_acc']:.1f}%  "
                 f"t {pct['val/clean_teacher_clean_acc']:.1f}/"
                 f"{pct['val/clean_teacher_robust_acc']:.1f}%")
    if "train/push_active_frac" in m:  # how much the push term acted this epoch
        line += (f"  | push J {100 * m['train/push_active_frac']:.0f}%, empty "
                 f"{100 * m['train/push_empty_frac']:.0f}%")
    return line + f"  {seconds:.1f}s"


def attack_line(test: Mapping[str, float], attacks: Sequence[str]) -> str:
    """One console line of the final protocol's accuracies (``<attack>_acc`` keys), or ''."""
    parts = [f"{ATTACK_LABELS[a]} {100 * test[f'{a}_acc']:.1f}%" for a in attacks
             if f"{a}_acc" in test]
    return ("test under attack: " + "  ".join(parts)) if parts else ""


def test_line(test: Mapping[str, float]) -> str:
    """Clean, PGD_SAT and its W-R of a final test, for a console line."""
    return (f"clean {100 * test['clean_acc']:.1f}%  PGD_SAT {100 * test['pgd_sat_acc']:.1f}%  "
            f"W-R {100 * test['pgd_sat_wr']:.1f}%")


# A push term that acted in fewer than 10% of the batches is reported as inactive.
PUSH_INACTIVE_EMPTY_FRAC = 0.9


def push_inactive(empty_frac: float | None) -> bool:
    return empty_frac is not None and empty_frac > PUSH_INACTIVE_EMPTY_FRAC


def push_note(active_frac: float | None, empty_frac: float | None) -> str:
    """'J 31.2% of samples, empty in 0% of batches' (fractions in, percentages out; no '|', it
    sits in Markdown tables); '' if unknown."""
    if active_frac is None or empty_frac is None:
        return ""
    if push_inactive(empty_frac):
        return (f"push inactive: J empty in {100 * empty_frac:.0f}% of batches "
                f"({100 * active_frac:.1f}% of samples)")
    return f"J {100 * active_frac:.1f}% of samples, empty in {100 * empty_frac:.0f}% of batches"
