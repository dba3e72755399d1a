"""Search specs: a base experiment, a space over dotted config paths, objective, searcher,
scheduler and per-trial resources. Validated completely before Ray starts.

A spec names its base experiment inline or by a path relative to the spec file; the space maps
dotted paths of :class:`~ablate.config.ExperimentConfig` (``method.alpha``) to distributions.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationError, field_validator, model_validator

from ablate.config import (
    ConfigError,
    ExperimentConfig,
    Strict,
    config_hash,
    config_warnings,
    read_yaml,
    validate_model,
)
from ablate.core.limits import MAX_EPOCHS, MAX_SEED, MAX_TRIALS, SafeName, Seed
from ablate.explain import (
    KINDS,
    check_kind,
    close_match,
    file_kind,
    format_validation_error,
    suggest_path,
)
from ablate.overrides import (
    config_notes,
    method_name,
    parse_override,
    set_path,
    shown_override,
    switch_method,
    with_notes,
)
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
    seeds: list[Seed] = Field(default_factory=lambda: [0, 1, 2], min_length=2,
                              description="training seeds each one is re-trained with")

    @field_validator("seeds")
    @classmethod
    def _distinct(cls, seeds: list[int]) -> list[int]:
        if len(set(seeds)) != len(seeds):
            raise ValueError("seeds must be distinct")
        return seeds


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


def read_spec(path: str | Path, overrides: list[str] | None = None,
              kind: str = "search") -> tuple[dict[str, Any], list[str]]:
    """A search spec (or grid: ``kind``) as a dict with its base inlined and overridden, and
    the notes of a method switch in the base (:func:`~ablate.config.switch_method`).

    The base is built in this order: the base file (``base: PATH``, relative to the spec; a
    command-line ``base=PATH``, relative to the working directory, replaces it); then the
    spec's ``overrides`` (the file's, updated by command-line ``overrides.KEY=VALUE``, ``KEY`` a
    whole dotted config path); then command-line ``base.KEY=VALUE``. Every other command-line
    override sets a field of the spec itself (``num_samples=4``; in the space, whose keys are
    dotted paths, ``space.method.alpha.high=0.9`` sets ``high`` of ``method.alpha``)."""
    source = str(path)
    raw = read_yaml(path)
    check_kind(raw, path, kind)
    items = [(item, *parse_override(item)) for item in overrides or []]
    if isinstance(raw.get("base"), str):
        raw["base"] = _read_base(Path(path).parent / raw["base"], source)
    for _, key, value in items:
        if key == "base":
            raw["base"] = _read_base(Path(value), source) if isinstance(value, str) else value
    for item, key, value in items:
        if key == "overrides":
            raw["overrides"] = value
        elif key.startswith("overrides."):  # one entry, set (or added last, so it wins) whole
            block = raw.setdefault("overrides", {})
            if not isinstance(block, dict):
                raise ConfigError(f"{source}: override {shown_override(item)}: `overrides` "
                                  "is not a mapping")
            block[key.removeprefix("overrides.")] = value
    base_items = [(key.removeprefix("base."), value) for _, key, value in items
                  if key.startswith("base.")]
    notes = _build_base(raw, base_items, source)
    for item, key, value in items:
        where = f"{source}: override {shown_override(item)}"
        if key.startswith("space.") and isinstance(raw.get("space"), dict):
            _set_space(raw["space"], key.removeprefix("space."), value, where)
        elif key.split(".")[0] not in ("base", "overrides"):
            set_path(raw, key, value, where=where)
    return raw, notes


def read_spec_dict(path: str | Path, overrides: list[str] | None = None) -> dict[str, Any]:
    """:func:`read_spec` without the notes (and without checking the file's kind)."""
    return read_spec(path, overrides, kind=file_kind(read_yaml(path)) or "search")[0]


def _read_base(path: Path, source: str) -> dict[str, Any]:
    raw = read_yaml(path)
    kind = file_kind(raw)
    if kind not in (None, "experiment"):
        raise ConfigError(f"{source}: field `base`: {path} is {KINDS[kind][0]}, not an "
                          "experiment config")
    return raw


def _build_base(raw: dict[str, Any], base_items: list[tuple[str, Any]], source: str
                ) -> list[str]:
    """Apply the spec's ``overrides``, then the command line's ``base.*``, to ``raw["base"]``
    in place; the note of a method switch, if any."""
    base, block = raw.get("base"), raw.get("overrides")
    if not isinstance(base, dict):
        return []  # validation names the field
    before = method_name(base)
    pairs = list(block.items()) if isinstance(block, dict) else []
    for key, value in pairs:  # a copy: the spec's own `overrides` must not change with base
        set_path(base, key, copy.deepcopy(value), where=f"{source}: field `overrides.{key}`")
    for key, value in base_items:
        set_path(base, key, value, where=f"{source}: override `base.{key}`")
    note = switch_method(base, before, [k for k, _ in pairs + base_items])
    return [note] if note else []


def _set_space(space: dict[str, Any], key: str, value: Any, where: str) -> None:
    """``space.KEY[.FIELD]=value``: ``KEY`` is a whole key of the space (a dotted config path),
    ``FIELD`` a field of its :class:`Param`; a new ``KEY`` without ``FIELD`` adds a parameter.
    A ``FIELD`` of a missing ``KEY`` is a typo, not a new nested mapping."""
    parts = key.split(".")
    if any(".".join(parts[:j]) in space for j in range(len(parts), 0, -1)):
        set_path(space, key, value, where=where)  # matches the longest existing key
        return
    if len(parts) > 1 and parts[-1] in Param.model_fields:
        missing = ".".join(parts[:-1])
        match = close_match(missing, space)
        hint = (f"did you mean `{match}`?" if match else
                f"the space has {', '.join(f'`{k}`' for k in space)}; add a parameter whole: "
                f"space.{missing}={{type: float, low: ..., high: ...}}")
        raise ConfigError(f"{where}: field `space`: no parameter `{missing}` in the space "
                          f"({hint})")
    space[key] = value


def load_search_spec(path: str | Path, overrides: list[str] | None = None) -> SearchSpec:
    """Read, override (in the order of :func:`read_spec`) and validate a search spec,
    including its space against the config."""
    source = str(path)
    raw, notes = read_spec(path, overrides)
    objective = raw.get("objective")
    if isinstance(raw.get("base"), dict) and isinstance(objective, dict) and "w" in objective:
        # The objective's clean weight is the experiment's W-acc weight.
        raw["base"].setdefault("eval", {})["w"] = objective["w"]
    spec: SearchSpec = validate_model(SearchSpec, raw, source)
    with_notes(spec.base, notes)
    _check_space(spec, source)
    _check_points(spec, source)
    return spec
