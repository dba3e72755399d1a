"""``ablate grid``: named ablation grids (rows × seeds) through Ray Tune, with the paper's table.

A grid file names a base experiment, rows (each a set of dotted-path overrides, optionally with
the paper's numbers), a baseline row and seeds. Every cell trains to the end and is tested once
(best checkpoint by validation W-acc, final PGD protocol); the table aggregates the cells over
seeds and compares each row with the baseline by a paired test (same seed = same data order and
initialisation). ``ablate grid NAME`` resolves ``search_spaces/NAME.yaml``.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from pydantic import Field, ValidationError, field_validator, model_validator
from ray import tune

from ablate.config import (
    ConfigError,
    ExperimentConfig,
    Strict,
    config_hash,
    config_warnings,
    effective_config,
    format_validation_error,
    validate_model,
)
from ablate.core.limits import MAX_TRIALS, SafeName, Seed
from ablate.core.robustness import ATTACKS
from ablate.core.robustness import LABELS as ATTACK_LABELS
from ablate.recipe import Recipe
from ablate.report import (
    PUSH_KEYS,
    aggregate,
    plot_grid,
    push_inactive,
    push_note,
    table_markdown,
    write_table,
)
from ablate.resources import Resources, concurrency
from ablate.runner import JobFields, Log, Options, run_job, trial_dirname
from ablate.spec import read_spec_dict
from ablate.tracking import Tracker

LABELS = {"clean_acc": "Clean (test)",
          **{f"{a}_acc": ATTACK_LABELS[a] for a in ATTACKS},
          **{f"{a}_wr": f"{ATTACK_LABELS[a]} W-R" for a in ATTACKS}}
METRICS = tuple(LABELS)  # test/<metric> of a cell; <attack>_* need the attack in eval.attacks
ALWAYS_TESTED = ("pgd_sat",)  # the test-time PGD every cell runs
SHARED = ("data", "teachers", "seed")  # rows cannot change what all cells share


def _known_metric(name: str) -> str:
    if name not in METRICS:
        raise ValueError(f"unknown metric {name!r}; known: clean_acc, <attack>_acc, "
                         "<attack>_wr (pgd_sat is always tested)")
    return name


class Row(Strict):
    name: str = Field(min_length=1, description="row label in the table")
    overrides: dict[str, Any] = Field(default_factory=dict, description="dotted config path "
                                      "-> value, applied to the base")
    paper: dict[str, float] = Field(default_factory=dict, description="the paper's value "
                                       "per metric, in percent")

    @field_validator("paper")
    @classmethod
    def _paper_metrics(cls, paper: dict[str, float]) -> dict[str, float]:
        return {_known_metric(k): v for k, v in paper.items()}


class GridSpec(Strict):
    name: SafeName = Field(description="MLflow experiment and Ray experiment name")
    base: ExperimentConfig = Field(description="the experiment every cell starts from")
    overrides: dict[str, Any] = Field(default_factory=dict, description="dotted config path "
                                      "-> value, applied to the base (already applied here)")
    rows: list[Row] = Field(min_length=1)
    baseline: str = Field(description="row every other row is compared with")
    seeds: list[Seed] = Field(min_length=1, description="training seeds (init, data order)")
    metrics: list[str] = Field(default_factory=lambda: ["pgd_sat_acc", "clean_acc",
                                                        "pgd_sat_wr"],
                               description="test metrics in the table: clean_acc, "
                               "<attack>_acc, <attack>_wr (pgd_sat always; other attacks need "
                               "eval.attacks)")
    paper_note: str = Field("", description="where the paper's numbers come from")
    resources: Resources = Field(default_factory=Resources)
    max_concurrent: int | None = Field(None, ge=1, le=MAX_TRIALS)
    max_failures: int = Field(1, ge=0, le=MAX_TRIALS)

    @model_validator(mode="after")
    def _names(self) -> GridSpec:
        names = [r.name for r in self.rows]
        dup = next((n for n in names if names.count(n) > 1), None)
        if dup is not None:
            raise ValueError(f"duplicate row name {dup!r}")
        if self.baseline not in names:
            raise ValueError(f"baseline {self.baseline!r} is not a row; rows: {names}")
        if len(set(self.seeds)) != len(self.seeds):
            raise ValueError("seeds must be distinct")
        for name in self.metrics:
            attack = name.rsplit("_", 1)[0]
            if (attack in ATTACKS and attack not in self.base.eval.attacks
                    and attack not in ALWAYS_TESTED):
                raise ValueError(f"metric {name!r} needs {attack!r} in the base's eval.attacks")
        return self

    @field_validator("metrics")
    @classmethod
    def _metrics(cls, metrics: list[str]) -> list[str]:
        return [_known_metric(m) for m in metrics]

    def digest(self) -> str:
        return config_hash(self.model_dump(mode="json"))

    def warnings(self) -> list[str]:
        """Rows in which a term is inert (ITT that never starts), one line each."""
        return [line for r in self.rows
                for line in config_warnings(self.cell_config(r.name, self.seeds[0]),
                                            f"row {r.name!r}: ")]

    def recipe(self) -> Recipe:
        """How every cell's config is made: the base, the row's overrides, the seed."""
        return Recipe(self.base.model_dump(mode="json"), {"seed": ["seed"]},
                      rows={r.name: dict(r.overrides) for r in self.rows})

    def cell_config(self, row: str, seed: int) -> ExperimentConfig:
        return self.recipe().config({"row": row, "seed": seed})


def resolve(name_or_path: str, search_dir: Path) -> Path:
    """``ablation_table7`` -> ``search_spaces/ablation_table7.yaml``; a path is used as is."""
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") or path.exists():
        return path
    return search_dir / f"{name_or_path}.yaml"


def load_grid(path: str | Path, overrides: list[str] | None = None) -> GridSpec:
    """Read, override and validate a grid file, including every row against the config."""
    source = str(path)
    grid: GridSpec = validate_model(GridSpec, read_spec_dict(path, overrides), source)
    for i, row in enumerate(grid.rows):
        shared = [k for k in row.overrides if k.split(".")[0] in SHARED]
        if shared:
            raise ConfigError(f"{source}: field `rows.{i}.overrides`: {shared[0]!r} cannot "
                              "differ between rows (data, teachers and seed are shared)")
        try:
            grid.cell_config(row.name, grid.seeds[0])
        except ValidationError as exc:
            where = f"{source}: row {row.name!r} (rows.{i}.overrides)"
            raise ConfigError(format_validation_error(exc, where)) from None
    _refuse_duplicate_rows(grid, source)
    return grid


def _refuse_duplicate_rows(grid: GridSpec, source: str) -> None:
    """Two rows that train the same effective config would make the table compare a row with a
    copy of itself (e.g. 'w/ ITT' in a grid too short for ITT to start)."""
    seen: dict[str, str] = {}
    for i, row in enumerate(grid.rows):
        cfg = grid.cell_config(row.name, grid.seeds[0])
        key = config_hash(effective_config(cfg))
        if key in seen:
            why = "; ".join(config_warnings(cfg)) or "the settings they differ in have no effect"
            raise ConfigError(f"{source}: field `rows.{i}`: row {row.name!r} trains the same "
                              f"effective config as row {seen[key]!r} ({why})")
        seen[key] = row.name


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

    def run_params(self, sampled: dict[str, Any]) -> dict[str, Any]:
        return self.recipe.config(sampled).model_dump(mode="json")

    def run_tags(self, sampled: dict[str, Any]) -> dict[str, str]:
        return {"spec_hash": self.digest, "method": self.base.method.name,
                "row": sampled["row"], "seed": str(sampled["seed"])}

    def summarize(self, results: tune.ResultGrid, tracker: Tracker, parent: str,
                  params: dict[str, Any]) -> None:
        summarize_grid(self.grid, tracker, parent, self.log)


def run_grid(grid: GridSpec, opts: Options, log: Log = print) -> int:
    """Run (or resume) every cell; returns the exit code (0, or 130 when interrupted)."""
    return run_job(GridJob(grid, log), opts, log)


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
    """``ablate report``: rebuild a grid's table and plot from MLflow (a parent run id, or an
    experiment name for its newest grid run)."""
    try:
        info = tracker.run_info(target)
    except Exception:  # not a run id: an experiment name
        run_id = tracker.find_run(target, {"kind": "grid"})
        if run_id is None:
            raise ConfigError(f"{target!r}: neither a run id nor an experiment with a grid run "
                              f"in {tracker.uri}") from None
        info = tracker.run_info(run_id)
    if "grid" not in info["tags"]:
        raise ConfigError(f"run {info['run_id']} is not a grid's parent run (kind "
                          f"{info['tags'].get('kind', 'unknown')!r}); a search's summary is "
                          "in its parent run's artifacts")
    return summarize_cells(json.loads(info["tags"]["grid"]), tracker, info["run_id"], log)
