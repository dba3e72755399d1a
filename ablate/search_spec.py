"""Search specs: a base experiment, a space over dotted config paths, objective, searcher,
scheduler and per-trial resources (SPEC §5). Validated completely before Ray starts.

A spec names its base experiment inline or by a path relative to the spec file; the space maps
dotted paths of :class:`~ablate.config.ExperimentConfig` (``method.alpha``) to distributions.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationError, model_validator

from ablate.config import (
    ConfigError,
    ExperimentConfig,
    Strict,
    apply_overrides,
    config_hash,
    config_warnings,
    format_validation_error,
    read_yaml,
    validate_model,
)
from ablate.core.limits import MAX_EPOCHS, MAX_SEED, MAX_TRIALS, SafeName
from ablate.recipe import Recipe
from ablate.resources import Resources


class Param(Strict):
    """One searched hyperparameter."""

    type: Literal["float", "int", "categorical"]
    low: float | None = Field(None, description="lower bound (float/int), inclusive")
    high: float | None = Field(None, description="upper bound (float/int), inclusive")
    log: bool = Field(False, description="sample uniformly in log space (needs low > 0)")
    choices: list[bool | int | float | str | None] | None = Field(
        None, description="values of a categorical (Optuna needs plain scalars)")
    paths: list[str] | None = Field(None, description="config paths set to this value "
                                    "(default: the key itself), e.g. both push temperatures")

    @model_validator(mode="after")
    def _bounds(self) -> Param:
        if self.type == "categorical":
            if not self.choices:
                raise ValueError("a categorical needs a non-empty `choices` list")
            if self.low is not None or self.high is not None or self.log:
                raise ValueError("a categorical takes `choices`, not low/high/log")
            return self
        if self.low is None or self.high is None:
            raise ValueError(f"a {self.type} needs `low` and `high`")
        if self.choices is not None:
            raise ValueError(f"a {self.type} takes low/high, not `choices`")
        if self.low > self.high:
            raise ValueError(f"low={self.low} > high={self.high}")
        if self.log and self.low <= 0:
            raise ValueError(f"log=true needs low > 0, got low={self.low}")
        if self.type == "int" and (self.low != int(self.low) or self.high != int(self.high)):
            raise ValueError("an int range needs integer low and high")
        return self

    def contains(self, value: Any) -> bool:
        if self.type == "categorical":
            return value in (self.choices or [])
        if isinstance(value, bool) or not isinstance(value, int | float):
            return False
        ok_type = self.type == "float" or float(value).is_integer()
        return ok_type and (self.low or 0) <= value <= (self.high or 0)

    def corners(self) -> list[Any]:
        """Extreme values, used to validate the space against the config model."""
        if self.type == "categorical":
            return list(self.choices or [])
        cast = int if self.type == "int" else float
        return [cast(self.low), cast(self.high)]


class Objective(Strict):
    metric: Literal["w_acc"] | list[Literal["clean_acc", "robust_acc"]] = Field(
        "w_acc", description="scalar W-acc, or multi-objective [clean_acc, robust_acc]")
    w: float = Field(0.5, ge=0, le=1, description="clean weight of W-acc (sets eval.w; ASHA "
                     "and the best checkpoint use W-acc also in the multi-objective case)")

    @property
    def multi(self) -> bool:
        return isinstance(self.metric, list)


class Searcher(Strict):
    name: Literal["optuna_tpe"] = "optuna_tpe"
    seed: int = Field(0, ge=0, le=MAX_SEED, description="sampler seed")
    points_to_evaluate: list[dict[str, Any]] = Field(
        default_factory=list, description="first trials, e.g. the paper's defaults; keys are "
        "space keys and count towards num_samples")


class Scheduler(Strict):
    name: Literal["asha", "none"] = "asha"
    grace_period: int = Field(2, ge=1, le=MAX_EPOCHS, description="epochs every trial runs "
                              "before ASHA may stop it")
    reduction_factor: float = Field(2.0, gt=1, le=1000,
                                    description="ASHA keeps 1/rf of trials per rung")


class SearchSpec(Strict):
    name: SafeName = Field(description="MLflow experiment and Ray experiment name (a safe "
                           "slug: it becomes a directory)")
    base: ExperimentConfig = Field(description="the experiment every trial starts from")
    overrides: dict[str, Any] = Field(default_factory=dict, description="dotted config path "
                                      "-> value, applied to the base (already applied here)")
    space: dict[str, Param] = Field(min_length=1, description="dotted config path -> range")
    objective: Objective = Field(default_factory=Objective)
    searcher: Searcher = Field(default_factory=Searcher)
    scheduler: Scheduler = Field(default_factory=Scheduler)
    num_samples: int = Field(16, ge=1, le=MAX_TRIALS, description="number of trials")
    resources: Resources = Field(default_factory=Resources)
    max_concurrent: int | None = Field(None, ge=1, le=MAX_TRIALS, description="trials at once "
                                       "(None: as many as the resources allow)")
    max_failures: int = Field(1, ge=0, le=MAX_TRIALS, description="retries of a failed trial "
                              "from its last checkpoint")

    def digest(self) -> str:
        return config_hash(self.model_dump(mode="json"))

    def targets(self, key: str) -> list[str]:
        return self.space[key].paths or [key]

    def recipe(self) -> Recipe:
        """How every trial's config is made (what the Ray workers receive)."""
        return Recipe(self.base.model_dump(mode="json"),
                      {k: self.targets(k) for k in self.space})

    def trial_config(self, sampled: dict[str, Any]) -> ExperimentConfig:
        """The base experiment with sampled values written to their config paths."""
        return self.recipe().config(sampled)

    def warnings(self) -> list[str]:
        """Trials in which a term is inert (ITT that never starts), one line each."""
        searched = [k for k in self.space if "itt.freeze_epochs" in self.targets(k)]
        if not searched:
            return config_warnings(self.base, "base: ")
        key = searched[0]
        high = max(self.space[key].corners())
        out = config_warnings(self.trial_config({key: high}), f"space `{key}` at {high}: ")
        for i, point in enumerate(self.searcher.points_to_evaluate):
            out += config_warnings(self.trial_config(point),
                                   f"searcher.points_to_evaluate.{i}: ")
        return out


def _has_path(tree: dict[str, Any], path: str) -> bool:
    node: Any = tree
    for part in path.split("."):
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return True


def _check_space(spec: SearchSpec, source: str) -> None:
    """Every path exists and every corner of every range is a valid experiment."""
    recipe = spec.recipe()
    for key, param in spec.space.items():
        for path in spec.targets(key):
            if not _has_path(recipe.base, path):
                raise ConfigError(f"{source}: space `{key}`: unknown config path `{path}`")
        for value in param.corners():
            try:
                recipe.config({key: value})
            except ValidationError as exc:
                why = format_validation_error(exc, f"{source}: space `{key}`: value {value!r}")
                raise ConfigError(why) from None
    epochs = spec.base.optim.epochs
    for key, param in spec.space.items():
        high = max(param.corners(), key=lambda v: v if isinstance(v, (int, float)) else 0)
        if "itt.freeze_epochs" in spec.targets(key) and high > epochs:
            raise ConfigError(f"{source}: space `{key}`: freeze epoch {high} is past the last "
                              f"epoch (base.optim.epochs={epochs})")


def _check_points(spec: SearchSpec, source: str) -> None:
    for i, point in enumerate(spec.searcher.points_to_evaluate):
        unknown = sorted(set(point) - set(spec.space))
        if unknown:
            raise ConfigError(f"{source}: field `searcher.points_to_evaluate.{i}`: "
                              f"{unknown[0]!r} is not a key of `space`")
        missing = sorted(set(spec.space) - set(point))
        if missing:
            raise ConfigError(f"{source}: field `searcher.points_to_evaluate.{i}`: missing "
                              f"{missing[0]!r} (a point sets every searched key)")
        for key, value in point.items():
            if not spec.space[key].contains(value):
                raise ConfigError(f"{source}: field `searcher.points_to_evaluate.{i}.{key}`: "
                                  f"{value!r} is outside the space")
    if len(spec.searcher.points_to_evaluate) > spec.num_samples:
        raise ConfigError(f"{source}: field `num_samples`: {spec.num_samples} is fewer than "
                          f"the {len(spec.searcher.points_to_evaluate)} points to evaluate")


def read_spec_dict(path: str | Path, overrides: list[str] | None = None) -> dict[str, Any]:
    """The spec as a dict with its base inlined (a path is relative to the spec file)."""
    raw = read_yaml(path)
    if isinstance(raw.get("base"), str):
        raw["base"] = read_yaml(Path(path).parent / raw["base"])
    base_overrides = raw.get("overrides") or {}
    if isinstance(raw.get("base"), dict) and isinstance(base_overrides, dict):
        items = [f"{k}={json.dumps(v)}" for k, v in base_overrides.items()]
        raw["base"] = apply_overrides(raw["base"], items)
    return apply_overrides(raw, overrides or [])  # the command line wins


def load_search_spec(path: str | Path, overrides: list[str] | None = None) -> SearchSpec:
    """Read, override and validate a search spec, including its space against the config."""
    source = str(path)
    raw = read_spec_dict(path, overrides)
    objective = raw.get("objective")
    if isinstance(raw.get("base"), dict) and isinstance(objective, dict) and "w" in objective:
        # The objective's clean weight is the experiment's W-acc weight.
        raw["base"].setdefault("eval", {})["w"] = objective["w"]
    spec: SearchSpec = validate_model(SearchSpec, raw, source)
    _check_space(spec, source)
    _check_points(spec, source)
    return spec
