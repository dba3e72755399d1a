"""``ablate grid``: named ablation grids (rows × seeds, :mod:`ablate.config.grid_spec`) through Ray
Tune, with the paper's table.

Every cell trains to the end and is tested once (best checkpoint by validation W-acc, final PGD
protocol); the table aggregates the cells over seeds and compares each row with the baseline by
a paired test (same seed = same data order and initialisation).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, ClassVar

from ray import tune

from ablate import names
from ablate.config import GridSpec, concurrency
from ablate.core.console import Log
from ablate.grid.summary import summarize_grid
from ablate.runtime import JobFields, Options, cell_dirname, run_job
from ablate.tracking import Tracker, flatten


def plan(grid: GridSpec, available: dict[str, float]) -> str:
    cells = len(grid.rows) * len(grid.seeds)
    at_once = concurrency(grid, available, trials=cells)
    return (f"grid {grid.name} (spec hash {grid.digest()}): {len(grid.rows)} rows x "
            f"{len(grid.seeds)} seeds = {cells} cells of {grid.base.optim.epochs} epochs on "
            f"{grid.base.data.name}; baseline {grid.baseline!r}; {grid.resources.cpu:g} CPU, "
            f"{grid.resources.gpu:g} GPU per cell, {at_once} at a time")


@dataclass
class GridJob(JobFields):
    """A grid as :func:`~ablate.runtime.run_job` runs it: every row x seed cell trained to the
    end and tested; summarised into the table against the baseline row."""

    grid: GridSpec
    log: Log = print
    nested_in: str | None = None  # a search's parent run (its confirm stage, an around-grid)
    kind: ClassVar[str] = names.KIND_GRID
    test_at_end: ClassVar[bool] = True  # a cell's result is its best checkpoint's test

    def __post_init__(self) -> None:
        g = self.grid
        self.name, self.digest, self.base, self.resources = g.name, g.digest(), g.base, g.resources
        self.trials, self.max_failures = len(g.rows) * len(g.seeds), g.max_failures
        self.recipe = g.recipe()
        self.view_params = [names.ROW, names.SEED]
        self.first_tag = 0  # Ray counts grid variants from 0

    def start(self, tracker: Tracker, parent: str) -> None:
        pass  # nothing to prepare once the parent run exists

    def _settings(self) -> dict[str, Any]:
        return self.grid.model_dump(mode="json", exclude={"base"})

    def parent_params(self) -> dict[str, Any]:
        return {names.PARAMS_GRID: self._settings(),
                names.PARAMS_BASE: self.grid.base.model_dump(mode="json")}

    def parent_tags(self) -> dict[str, str]:
        return {names.GRID: json.dumps(self._settings())}  # what `ablate report` rebuilds from

    def warnings(self) -> list[str]:
        return self.grid.warnings()

    def plan(self, available: dict[str, float]) -> str:
        return plan(self.grid, available)

    def tune_config(self) -> tune.TuneConfig:
        return tune.TuneConfig(num_samples=1, max_concurrent_trials=self.grid.max_concurrent,
                               trial_dirname_creator=cell_dirname, reuse_actors=True)

    def param_space(self) -> dict[str, Any]:
        return {names.ROW: tune.grid_search([r.name for r in self.grid.rows]),
                names.SEED: tune.grid_search(list(self.grid.seeds))}

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
        return {**varying, names.ROW: sampled[names.ROW], names.SEED: sampled[names.SEED],
                names.METHOD: flat["method.name"]}

    def run_tags(self, sampled: dict[str, Any]) -> dict[str, str]:
        return {names.SPEC_HASH: self.digest, names.METHOD: self.base.method.name,
                names.ROW: sampled[names.ROW], names.SEED: str(sampled[names.SEED])}

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


