"""Search specs: a base experiment, a space over dotted config paths, objective, searcher,
scheduler and per-trial resources. Validated completely before Ray starts.

A spec names its base experiment inline or by a path relative to the spec file; the space maps
dotted paths of :class:`~ablate.config.ExperimentConfig` (``method.alpha``) to distributions.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationError, field_validator, model_validator

from ablate.config.experiment import ExperimentConfig, config_hash, config_warnings, validate_model
from ablate.config.explain import (
    close_match,
    format_validation_error,
    suggest_path,
)
from ablate.config.networks import Strict
from ablate.config.overrides import config_notes, refuse_section_resets, with_notes
from ablate.config.recipe import Recipe
from ablate.config.resources import Resources
from ablate.config.space import Param
from ablate.config.spec_file import read_spec
from ablate.core.errors import ConfigError
from ablate.core.limits import MAX_CELLS, MAX_EPOCHS, MAX_SEED, MAX_TRIALS, SafeName, Seed


class Objective(Strict):
    metric: Literal["w_acc"] | list[Literal["clean_acc", "robust_acc"]] = Field(
        "w_acc", description="scalar W-acc, or multi-objective [clean_acc, robust_acc]")
    w: float = Field(0.5, ge=0, le=1, description="clean weight of W-acc (sets eval.w; ASHA "
                     "and the best checkpoint use W-acc also in the multi-objective case)")

    @property
    def multi(self) -> bool:
        return isinstance(self.metric, list)


class Searcher(Strict):
    name: Literal["optuna_tpe", "optuna_random"] = Field(
        "optuna_tpe", description="Optuna's TPE sampler, or its random sampler (a baseline)")
    seed: int = Field(0, ge=0, le=MAX_SEED, description="sampler seed")
    points_to_evaluate: list[dict[str, Any]] = Field(
        default_factory=list, description="first trials, e.g. the paper's defaults; keys are "
        "space keys and count towards num_samples")
    n_startup_trials: int = Field(10, ge=0, le=MAX_TRIALS, description="TPE: trials sampled "
                                  "at random (given points included) before TPE's model is used")
    multivariate: bool | None = Field(None, description="TPE: model the parameters jointly; "
                                      "None = Optuna's default (jointly for the scalar "
                                      "objective, independently for the Pareto one)")

    @model_validator(mode="after")
    def _tpe_only(self) -> Searcher:
        changed = self._tpe_options_set()
        if self.name != "optuna_tpe" and changed:
            raise ValueError(f"{', '.join(changed)} set, but only optuna_tpe uses "
                             f"{'them' if len(changed) > 1 else 'it'}")
        return self

    def _tpe_options_set(self) -> list[str]:
        return [k for k in _TPE_ONLY if getattr(self, k) != Searcher.model_fields[k].default]

    def hashed(self) -> dict[str, Any]:
        """The fields in the spec hash: TPE options at their defaults are left out, so searches
        from before they existed keep their hash (and resume)."""
        unset = set(_TPE_ONLY) - set(self._tpe_options_set())
        return self.model_dump(mode="json", exclude=unset)


_TPE_ONLY = ("n_startup_trials", "multivariate")


class Scheduler(Strict):
    name: Literal["asha", "none"] = "asha"
    grace_period: int = Field(2, ge=1, le=MAX_EPOCHS, description="epochs every trial runs "
                              "before ASHA may stop it")
    reduction_factor: float = Field(2.0, gt=1, le=1000,
                                    description="ASHA keeps 1/rf of trials per rung")


class Confirm(Strict):
    top_k: int = Field(3, ge=2, le=MAX_TRIALS, description="configurations re-trained: the "
                       "best by the search's validation objective")
    seeds: list[Seed] | None = Field(None, min_length=2, description="training seeds each "
                                     "one is re-trained with, never the search's own "
                                     "(base.seed); None: the first three others (1, 2, 3 for "
                                     "seed 0)")
    with_base: bool = Field(False, description="also train the base config (the spec's "
                            "default, before any search) on the same seeds, test it beside "
                            "the winner and report winner − base with its 95% interval")

    @field_validator("seeds")
    @classmethod
    def _distinct(cls, seeds: list[int] | None) -> list[int] | None:
        if seeds is not None and len(set(seeds)) != len(seeds):
            raise ValueError("seeds must be distinct")
        return seeds


def unseen_seeds(seed: int, n: int = 3) -> list[int]:
    """The confirm stage's default seeds: the first ``n`` seeds other than the search's."""
    return [s for s in range(n + 1) if s != seed][:n]


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
    confirm: Confirm | None = Field(None, description="after the search, re-train the top_k "
                                    "configurations on each seed and choose the winner by the "
                                    "lower 95% bound of its validation objective")

    @model_validator(mode="after")
    def _default_confirm_seeds(self) -> SearchSpec:
        if self.confirm is not None and self.confirm.seeds is None:
            self.confirm.seeds = unseen_seeds(self.base.seed)
        return self

    def digest(self) -> str:
        """The search's hash; ``confirm`` is left out: it runs after the same search."""
        dump = self.model_dump(mode="json", exclude={"confirm"})
        return config_hash(dump | {"searcher": self.searcher.hashed()})

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
        """What loading changed in the base (a method switch), and trials in which a term is
        inert (ITT that never starts), one line each."""
        searched = [k for k in self.space if "itt.freeze_epochs" in self.targets(k)]
        if not searched:
            return config_warnings(self.base, "base: ")  # with the notes of loading it
        key = searched[0]
        high = max(self.space[key].corners())
        out = [f"base: {note}" for note in config_notes(self.base)]
        out += config_warnings(self.trial_config({key: high}), f"space `{key}` at {high}: ")
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
                raise ConfigError(f"{source}: space `{key}`: unknown config path `{path}`"
                                  f"{suggest_path(recipe.base, path)}")
        for value in param.corners():
            try:
                recipe.config({key: value})
            except ValidationError as exc:
                why = format_validation_error(exc, f"{source}: space `{key}`: value {value!r}",
                                              ExperimentConfig)
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
            match = close_match(unknown[0], spec.space)
            raise ConfigError(f"{source}: field `searcher.points_to_evaluate.{i}`: "
                              f"{unknown[0]!r} is not a key of `space`"
                              + (f" (did you mean {match!r}?)" if match else ""))
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


def load_search_spec(path: str | Path, overrides: list[str] | None = None) -> SearchSpec:
    """Read, override (in the order of :func:`read_spec`) and validate a search spec,
    including its space against the config."""
    source = str(path)
    raw, notes = read_spec(path, overrides)
    refuse_section_resets(overrides, SearchSpec)
    objective = raw.get("objective")
    if isinstance(raw.get("base"), dict) and isinstance(objective, dict) and "w" in objective:
        # The objective's clean weight is the experiment's W-acc weight.
        raw["base"].setdefault("eval", {})["w"] = objective["w"]
    spec: SearchSpec = validate_model(SearchSpec, raw, source)
    with_notes(spec.base, notes)
    _check_space(spec, source)
    _check_points(spec, source)
    _check_confirm(spec, source)
    return spec


def _check_confirm(spec: SearchSpec, source: str) -> None:
    """The confirm stage re-trains on seeds the search did not train with: the seed whose luck
    ranked a configuration first would lift it again (selection bias)."""
    if spec.confirm is not None:
        cells = spec.confirm.top_k * len(spec.confirm.seeds or [])
        if cells > MAX_CELLS:
            raise ConfigError(f"{source}: field `confirm`: top_k {spec.confirm.top_k} x "
                              f"{len(spec.confirm.seeds or [])} seeds = {cells:,} cells; the "
                              f"stage's grid has at most {MAX_CELLS:,} (MAX_CELLS in "
                              "ablate/core/limits.py)")
    if spec.confirm is not None and spec.base.seed in (spec.confirm.seeds or []):
        raise ConfigError(f"{source}: field `confirm.seeds`: {spec.base.seed} is the seed the "
                          "search trains with (base.seed); the stage re-trains on unseen "
                          f"seeds only (e.g. {unseen_seeds(spec.base.seed)})")
