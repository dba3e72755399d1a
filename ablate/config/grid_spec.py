"""Grid specs: a base experiment, rows (each a set of dotted-path overrides, optionally with
the paper's numbers), a baseline row and seeds. Validated completely (every row against the
config, no two rows training the same effective config) before Ray starts. ``ablate grid NAME``
resolves ``search_spaces/NAME.yaml``.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

from pydantic import Field, ValidationError, field_validator, model_validator

from ablate import names
from ablate.config.experiment import (
    ExperimentConfig,
    config_hash,
    config_warnings,
    effective_config,
    validate_model,
)
from ablate.config.explain import format_validation_error
from ablate.config.networks import Strict
from ablate.config.overrides import config_notes, refuse_section_resets, with_notes
from ablate.config.recipe import Recipe
from ablate.config.resources import Resources
from ablate.config.spec_file import read_spec
from ablate.core.catalog import ATTACK_LABELS, ATTACKS
from ablate.core.errors import ConfigError
from ablate.core.limits import MAX_CELLS, MAX_TRIALS, SafeName, Seed

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
        too_many = too_many_cells(len(self.rows), len(self.seeds))
        if too_many:
            raise ValueError(too_many)
        rows = [r.name for r in self.rows]
        # Counter, not rows.count() per row: that is quadratic in the rows.
        dup = next((n for n, count in Counter(rows).items() if count > 1), None)
        if dup is not None:
            raise ValueError(f"duplicate row name {dup!r}")
        if self.baseline not in rows:
            raise ValueError(f"baseline {self.baseline!r} is not a row; rows: {rows}")
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
        """What loading changed in the base (a method switch), and rows in which a term is
        inert (ITT that never starts), one line each."""
        return [f"base: {note}" for note in config_notes(self.base)] + [
            line for r in self.rows
            for line in config_warnings(self.cell_config(r.name, self.seeds[0]),
                                        f"row {r.name!r}: ")]

    def recipe(self) -> Recipe:
        """How every cell's config is made: the base, the row's overrides, the seed."""
        return Recipe(self.base.model_dump(mode="json"), {names.SEED: ["seed"]},
                      rows={r.name: dict(r.overrides) for r in self.rows})

    def cell_config(self, row: str, seed: int) -> ExperimentConfig:
        return self.recipe().config({names.ROW: row, names.SEED: seed})


def too_many_cells(rows: int, seeds: int) -> str | None:
    """Why a grid of ``rows`` x ``seeds`` is too large to run, if it is."""
    if rows * seeds <= MAX_CELLS:
        return None
    return (f"{rows} rows x {seeds} seeds = {rows * seeds:,} cells; a grid has at most "
            f"{MAX_CELLS:,} cells (MAX_CELLS in ablate/core/limits.py)")


def load_grid(path: str | Path, overrides: list[str] | None = None) -> GridSpec:
    """Read, override (in the order of :func:`~ablate.config.spec_file.read_spec`) and validate a
    grid file, including every row against the config. A grid of more than
    :data:`~ablate.core.limits.MAX_CELLS` cells is refused first, by the lengths of its lists:
    before a row is validated or a cell made."""
    source = str(path)
    raw, notes = read_spec(path, overrides, kind="grid")
    refuse_section_resets(overrides, GridSpec)
    rows, seeds = raw.get("rows"), raw.get("seeds")
    if isinstance(rows, list) and isinstance(seeds, list):
        too_many = too_many_cells(len(rows), len(seeds))
        if too_many:
            raise ConfigError(f"{source}: fields `rows` and `seeds`: {too_many}")
    grid: GridSpec = validate_model(GridSpec, raw, source)
    with_notes(grid.base, notes)
    for i, row in enumerate(grid.rows):
        shared = [k for k in row.overrides if k.split(".")[0] in SHARED]
        if shared:
            raise ConfigError(f"{source}: field `rows.{i}.overrides`: {shared[0]!r} cannot "
                              "differ between rows (data, teachers and seed are shared)")
        try:
            grid.cell_config(row.name, grid.seeds[0])
        except ValidationError as exc:
            where = f"{source}: row {row.name!r} (rows.{i}.overrides)"
            raise ConfigError(format_validation_error(exc, where, ExperimentConfig)) from None
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
