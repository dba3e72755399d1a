"""A grid's summary in its parent run: the cells read back from their MLflow child runs, the
table over seeds against the baseline row (Markdown, CSV, Parquet) and its plot, and the
warnings that change how the table reads. ``ablate report`` rebuilds it without training."""

from __future__ import annotations

import json
import tempfile
import textwrap
from pathlib import Path
from typing import Any

from ablate import names
from ablate.config import LABELS, GridSpec
from ablate.core.console import Log
from ablate.grid.table import TERMINAL_COLUMNS, aggregate, table_console, table_markdown
from ablate.report import plot_grid, push_inactive, push_note, write_table
from ablate.tracking import Tracker


def cells_from_runs(children: list[dict[str, Any]], metrics: list[str]) -> list[dict[str, Any]]:
    """Grid cells from the MLflow child runs (so a report needs no Ray state)."""
    cells = []
    for run in children:
        tags, m = run["tags"], run["metrics"]
        if names.ROW not in tags:
            continue
        done = run["status"] == "FINISHED" and all(f"{names.TEST}{k}" in m for k in metrics)
        cells.append({"row": tags[names.ROW], "seed": int(tags[names.SEED]),
                      "status": "finished" if done else run["status"].lower(),
                      **{k: m.get(f"{names.TEST}{k}") for k in metrics},
                      **{k: m.get(names.run_mean(k)) for k in names.PUSH_KEYS}})
    return cells


def summarize_grid(grid: GridSpec, tracker: Tracker, parent: str, log: Log) -> str:
    """Aggregate the cells logged under ``parent`` into the table; attach and print it."""
    return summarize_cells(grid.model_dump(mode="json", exclude={"base"}), tracker, parent, log)


def summarize_cells(grid: dict[str, Any], tracker: Tracker, parent: str, log: Log) -> str:
    """The table from a grid's settings (its parent run's ``grid`` tag) and its child runs;
    ``ablate report`` calls this on a finished or interrupted grid without training."""
    rows, metrics = [r["name"] for r in grid["rows"]], list(grid["metrics"])
    paper = {r["name"]: dict(r["paper"]) for r in grid["rows"] if r.get("paper")}
    cells = cells_from_runs(tracker.children(parent), metrics)
    table = aggregate(cells, rows=rows, baseline=grid["baseline"], seeds=grid["seeds"],
                      metrics=metrics, paper=paper)
    markdown = table_markdown(table, metrics=metrics, baseline=grid["baseline"], labels=LABELS)
    if grid.get("paper_note"):
        markdown += f"\nPaper values: {grid['paper_note']}\n"
    warnings = grid_warnings(table, len(grid["seeds"]))
    markdown += "".join(f"\n**Warning:** {w}\n" for w in warnings)
    with tempfile.TemporaryDirectory() as tmp:
        for path in write_table(table, markdown, tmp, stem=names.GRID_TABLE):
            tracker.log_artifact(parent, path)
        plot_grid(table, metrics, Path(tmp) / "grid.png", labels=LABELS,
                  title=f"{grid['name']}: {len(grid['seeds'])} seeds (dots), mean and 95% "
                  "interval")
        tracker.log_artifact(parent, Path(tmp) / "grid.png", names.PLOTS)
    finished = sum(c["status"] == "finished" for c in cells)
    tracker.log_summary(parent, {names.CELLS_FINISHED: finished,
                                 names.CELLS_FAILED: len(cells) - finished}, step=0)
    notes = ([f"Paper values: {grid['paper_note']}"] if grid.get("paper_note") else []) + [
        "Δ: paired difference over seeds with its 95% interval and p (two-sided paired t-test). "
        "The full table (95% CIs of the means, push diagnostics): "
        f"{names.GRID_TABLE}.md in parent run {parent}."]
    log(table_console(table, metrics=metrics, baseline=grid["baseline"], labels=LABELS)
        + "\n".join(textwrap.fill(n, TERMINAL_COLUMNS) for n in notes))
    for w in warnings:
        log(f"warning: {w}")
    return markdown


def report_grid(info: dict[str, Any], tracker: Tracker, log: Log = print) -> str:
    """``ablate report`` of a grid's parent run (:meth:`Tracker.run_info`): its table and plot
    rebuilt from its cells' runs and its ``grid`` tag (the grid's settings)."""
    return summarize_cells(json.loads(info["tags"][names.GRID]), tracker, info["run_id"], log)


def grid_warnings(table: list[dict[str, Any]], seeds: int) -> list[str]:
    """What makes the table read differently from what its rows claim: an inert push term,
    too few seeds for the intervals to mean anything."""
    out = [f"row {t['row']!r}: {push_note(t['push_active'], t['push_empty'])} (the push term "
           "hardly acted; see attack.objective)" for t in table if push_inactive(t["push_empty"])]
    if seeds < 3:
        why = ("no interval or p-value exists with one seed" if seeds == 1 else
               "with 2, the interval is ±12.7 standard errors wide")
        out.append(f"{seeds} seed(s): the 95% intervals and paired p-values are uninformative "
                   f"with fewer than 3 seeds ({why}); run more seeds before reading differences")
    return out


