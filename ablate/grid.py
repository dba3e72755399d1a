"""``ablate grid``: named ablation grids (rows × seeds, :mod:`ablate.grid_spec`) through Ray
Tune, with the paper's table.

Every cell trains to the end and is tested once (best checkpoint by validation W-acc, final PGD
protocol); the table aggregates the cells over seeds and compares each row with the baseline by
a paired test (same seed = same data order and initialisation).
"""

from __future__ import annotations

import json
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from ray import tune

from ablate.config import ConfigError
from ablate.grid_spec import LABELS, GridSpec
from ablate.grid_table import (
    PUSH_KEYS,
    aggregate,
    push_inactive,
    push_note,
    table_markdown,
    write_table,
)
from ablate.report import plot_grid
from ablate.resources import concurrency
from ablate.runner import JobFields, Log, Options, run_job
from ablate.tracking import Tracker, flatten
from ablate.tracking_uri import redact
from ablate.trial_logger import trial_dirname


def plan(grid: GridSpec, available: dict[str, float]) -> str:
    cells = len(grid.rows) * len(grid.seeds)
    at_once = concurrency(grid, available, trials=cells)
    return (f"grid {grid.name} (spec hash {grid.digest()}): {len(grid.rows)} rows x "
            f"{len(grid.seeds)} seeds = {cells} cells of {grid.base.optim.epochs} epochs on "
            f"{grid.base.data.name}; baseline {grid.baseline!r}; {grid.resources.cpu:g} CPU, "
            f"{grid.resources.gpu:g} GPU per cell, {at_once} at a time")


@dataclass
class GridJob(JobFields):
    """A grid as :func:`~ablate.runner.run_job` runs it: every row x seed cell trained to the
    end and tested; summarised into the table against the baseline row."""

    grid: GridSpec
    log: Log = print
    nested_in: str | None = None  # a search's parent run (its confirm stage, an around-grid)
    kind: ClassVar[str] = "grid"
    test_at_end: ClassVar[bool] = True  # a cell's result is its best checkpoint's test

    def __post_init__(self) -> None:
        g = self.grid
        self.name, self.digest, self.base, self.resources = g.name, g.digest(), g.base, g.resources
        self.trials, self.max_failures = len(g.rows) * len(g.seeds), g.max_failures
        self.recipe = g.recipe()

    def _settings(self) -> dict[str, Any]:
        return self.grid.model_dump(mode="json", exclude={"base"})

    def parent_params(self) -> dict[str, Any]:
        return {"grid": self._settings(), "base": self.grid.base.model_dump(mode="json")}

    def parent_tags(self) -> dict[str, str]:
        return {"grid": json.dumps(self._settings())}  # what `ablate report` rebuilds from

    def warnings(self) -> list[str]:
        return self.grid.warnings()

    def plan(self, available: dict[str, float]) -> str:
        return plan(self.grid, available)

    def tune_config(self) -> tune.TuneConfig:
        return tune.TuneConfig(num_samples=1, max_concurrent_trials=self.grid.max_concurrent,
                               trial_dirname_creator=trial_dirname, reuse_actors=True)

    def param_space(self) -> dict[str, Any]:
        return {"row": tune.grid_search([r.name for r in self.grid.rows]),
                "seed": tune.grid_search(list(self.grid.seeds))}

    def describe(self, sampled: dict[str, Any]) -> str:
        return f"row={sampled['row']!r} seed={sampled['seed']}"

    def run_name(self, sampled: dict[str, Any], number: int, trial_id: str) -> str:
        return f"{slug(sampled['row'])}-s{sampled['seed']}"  # 'w/ ITT, w/ push' -> w-ITT-w-push-s1

    def run_params(self, sampled: dict[str, Any]) -> dict[str, Any]:
        """The cell's values of every path some row overrides (one column each in the UI),
        its row, seed and method."""
        flat = flatten(self.run_config(sampled))
        keys = {k for r in self.grid.rows for k in r.overrides}
        varying = {k: v for k, v in flat.items()
                   if any(k == key or k.startswith(f"{key}.") for key in keys)}
        return {**varying, "row": sampled["row"], "seed": sampled["seed"],
                "method": flat["method.name"]}

    def run_tags(self, sampled: dict[str, Any]) -> dict[str, str]:
        return {"spec_hash": self.digest, "method": self.base.method.name,
                "row": sampled["row"], "seed": str(sampled["seed"])}

    def summarize(self, results: tune.ResultGrid, tracker: Tracker, parent: str,
                  params: dict[str, Any]) -> None:
        summarize_grid(self.grid, tracker, parent, self.log)


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-") or "row"


def run_grid(grid: GridSpec, opts: Options, log: Log = print,
             nested_in: str | None = None) -> int:
    """Run (or resume) every cell; returns the exit code (0, or 130 when interrupted).
    ``nested_in``: the parent run the grid's run nests in."""
    return run_job(GridJob(grid, log, nested_in), opts, log)


def cells_from_runs(children: list[dict[str, Any]], metrics: list[str]) -> list[dict[str, Any]]:
    """Grid cells from the MLflow child runs (so a report needs no Ray state)."""
    cells = []
    for run in children:
        tags, m = run["tags"], run["metrics"]
        if "row" not in tags:
            continue
        done = run["status"] == "FINISHED" and all(f"test/{k}" in m for k in metrics)
        cells.append({"row": tags["row"], "seed": int(tags["seed"]),
                      "status": "finished" if done else run["status"].lower(),
                      **{k: m.get(f"test/{k}") for k in metrics},
                      **{k: m.get(f"train/run_{k}_frac") for k in PUSH_KEYS}})
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
        for path in write_table(table, markdown, tmp, stem="grid_table"):
            tracker.log_artifact(parent, path)
        plot_grid(table, metrics, Path(tmp) / "grid.png", labels=LABELS,
                  title=f"{grid['name']}: {len(grid['seeds'])} seeds (dots), mean and 95% "
                  "interval")
        tracker.log_artifact(parent, Path(tmp) / "grid.png", "plots")
    finished = sum(c["status"] == "finished" for c in cells)
    tracker.log_summary(parent, {"cells/finished": finished,
                                 "cells/failed": len(cells) - finished}, step=0)
    log(markdown)
    for w in warnings:
        log(f"warning: {w}")
    return markdown


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


def report(target: str, tracker: Tracker, log: Log = print) -> str:
    """``ablate report``: rebuild a grid's table and plot, or a search's summary
    (:func:`ablate.search_summary.report_search`), from MLflow: a parent run id, or an
    experiment name for its newest search (else grid) run."""
    try:
        info = tracker.run_info(target)
    except Exception:  # not a run id: an experiment name
        # A search first: its experiment may also hold around-grids, which its report shows.
        run_id = tracker.find_run(target, {"kind": "search"}) or tracker.find_run(
            target, {"kind": "grid"})
        if run_id is None:
            raise ConfigError(f"{target!r}: neither a run id nor an experiment with a grid or "
                              f"search run in {redact(tracker.uri)}") from None
        info = tracker.run_info(run_id)
    if info["tags"].get("kind") == "search":
        from ablate.search_summary import report_search  # Optuna: only for searches

        return report_search(info, tracker, log) + report_stages(info["run_id"], tracker, log)
    if "grid" not in info["tags"]:
        raise ConfigError(f"run {info['run_id']} is neither a grid's nor a search's parent run "
                          f"(kind {info['tags'].get('kind', 'unknown')!r})")
    return summarize_cells(json.loads(info["tags"]["grid"]), tracker, info["run_id"], log)


def report_stages(search: str, tracker: Tracker, log: Log = print) -> str:
    """The runs nested in a search's parent run, after its summary: the confirm stage's table
    (its ``confirm.md``) and each around-grid's table, rebuilt from its cells."""
    out = ""
    for run in sorted(tracker.children(search), key=lambda r: r["start_time"]):
        kind, tags = run["tags"].get("kind"), run["tags"]
        if kind == "confirm":
            with tempfile.TemporaryDirectory() as tmp:
                try:
                    text = Path(tracker.download(run["run_id"], "confirm.md", tmp)).read_text()
                except Exception:  # noqa: BLE001 - a stage that chose no winner has none
                    text = f"Confirm stage {run['run_id']}: {run['status'].lower()}, no winner\n"
            log(text)
            out += "\n" + text
        elif kind == "grid" and "grid" in tags:
            log(f"Around-grid {run['run_id']} ({run['status'].lower()}):")
            out += "\n" + summarize_cells(json.loads(tags["grid"]), tracker, run["run_id"], log)
    return out
