"""What a user writes, validated: the experiment config, the search spec and grid files, the
``key=value`` overrides, and the command-line values checked before anything starts (spec
names, per-trial resources, the tracking URI).

Plain pydantic and PyYAML: no torch, Ray, MLflow or Optuna is imported here, so ``--help`` and
every refusal of bad input answer in a fraction of a second. Every problem is a one-line
:class:`~ablate.core.errors.ConfigError` naming the file and field."""

from __future__ import annotations

from ablate.config.experiment import (
    AttackConfig,
    ComputeConfig,
    DataConfig,
    EvalConfig,
    ExperimentConfig,
    IgdmConfig,
    IttConfig,
    OptimConfig,
    config_hash,
    config_warnings,
    effective_config,
    itt_never_starts,
    load_config,
    validate_model,
)
from ablate.config.grid_spec import LABELS, GridSpec, Row, load_grid
from ablate.config.networks import (
    ModelConfig,
    NormalizeConfig,
    Strict,
    TeacherConfig,
    TeachersConfig,
    TeacherTrainConfig,
)
from ablate.config.overrides import apply_overrides, parse_override, set_path
from ablate.config.recipe import Recipe
from ablate.config.resources import Resources, check_resources, check_trial_device, concurrency
from ablate.config.safe_yaml import YamlRefused, dump_yaml, parse_yaml, read_yaml
from ablate.config.search_spec import (
    Confirm,
    Objective,
    Scheduler,
    Searcher,
    SearchSpec,
    load_search_spec,
    unseen_seeds,
)
from ablate.config.space import Param
from ablate.config.spec_paths import available_specs, resolve_spec, shipped_dir
from ablate.config.tracking_uri import (
    check_eval_target,
    check_tracking_uri,
    default_uri,
    not_a_target,
    redact,
    sqlite_file,
    store_exists,
)

__all__ = [
    "AttackConfig",
    "ComputeConfig",
    "Confirm",
    "DataConfig",
    "EvalConfig",
    "ExperimentConfig",
    "GridSpec",
    "IgdmConfig",
    "IttConfig",
    "LABELS",
    "ModelConfig",
    "NormalizeConfig",
    "Objective",
    "OptimConfig",
    "Param",
    "Recipe",
    "Resources",
    "Row",
    "Scheduler",
    "SearchSpec",
    "Searcher",
    "Strict",
    "TeacherConfig",
    "TeacherTrainConfig",
    "TeachersConfig",
    "YamlRefused",
    "apply_overrides",
    "available_specs",
    "check_eval_target",
    "check_resources",
    "check_tracking_uri",
    "check_trial_device",
    "concurrency",
    "config_hash",
    "config_warnings",
    "default_uri",
    "dump_yaml",
    "effective_config",
    "itt_never_starts",
    "load_config",
    "load_grid",
    "load_search_spec",
    "unseen_seeds",
    "not_a_target",
    "parse_override",
    "parse_yaml",
    "read_yaml",
    "redact",
    "resolve_spec",
    "set_path",
    "shipped_dir",
    "sqlite_file",
    "store_exists",
    "validate_model",
]
