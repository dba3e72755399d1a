"""How one trial's experiment config is made: the single recipe shared by search, grid, the Ray
workers and the driver.

A :class:`Recipe` is plain, picklable data (the base experiment as JSON-able dicts, which config
paths each sampled value is written to, and a grid's row overrides), so the driver can hand it
to Ray workers and both sides build exactly the same :class:`ExperimentConfig` for a trial.
Values are set as values (:func:`ablate.config.set_path`), never re-parsed from text.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from ablate import names
from ablate.config.experiment import ExperimentConfig
from ablate.config.overrides import set_path


@dataclass(frozen=True)
class Recipe:
    """``config(sampled)``: the base, then the overrides of the grid row ``sampled[ROW]``
    (when there are rows), then each sampled value written to its target paths."""

    base: dict[str, Any]  # the base experiment (its overrides applied), as plain data
    targets: dict[str, list[str]]  # sampled key -> config paths it is written to
    rows: dict[str, dict[str, Any]] = field(default_factory=dict)  # row -> dotted overrides

    def tree(self, sampled: dict[str, Any]) -> dict[str, Any]:
        """The trial's config as plain data, before validation."""
        tree = copy.deepcopy(self.base)
        if self.rows:
            for path, value in self.rows[sampled[names.ROW]].items():
                set_path(tree, path, value)
        for key, paths in self.targets.items():
            if key in sampled:
                for path in paths:
                    set_path(tree, path, sampled[key])
        return tree

    def config(self, sampled: dict[str, Any]) -> ExperimentConfig:
        return ExperimentConfig.model_validate(self.tree(sampled))

    def rooted(self, cwd: Path) -> Recipe:
        """This recipe with a relative ``data.root`` made absolute against ``cwd``: Ray runs
        each trial in its own working directory, where ``data`` names nothing."""
        base = copy.deepcopy(self.base)
        data = base.setdefault("data", {})
        data["root"] = str(cwd / data.get("root", "data"))  # an absolute root is kept as is
        return replace(self, base=base)
