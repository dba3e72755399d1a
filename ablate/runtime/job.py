"""What :func:`~ablate.runtime.runner.run_job` runs: a :class:`Job` (a search or a grid: one
Ray Tune experiment of trials over a base experiment) and the :class:`Options` of one command
(where to log, where Ray keeps state, which cluster, resume or not)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from ray import tune

from ablate.config import ExperimentConfig, Recipe, Resources
from ablate.tracking import Tracker


@dataclass
class Options:
    """How to run a job: where to log, where Ray keeps state, which cluster, resume or not."""

    tracking_uri: str | None = None
    storage: str | None = None
    address: str | None = None
    resume: bool = False
    fresh: bool = False
    connect_timeout: float = 30.0  # seconds to wait for --address to answer
    heartbeat: float = 30.0  # seconds between progress lines; 0 = none
    command: str = "ablate search SPEC"  # how the job was started, for the resume hint


class Job(Protocol):
    """What :func:`run_job` needs from a search (:class:`ablate.search.SearchJob`) or a grid
    (:class:`ablate.grid.GridJob`): one Ray Tune experiment of CIARD trials over a base
    experiment, how each trial is logged, and how the whole is summarised into the parent run."""

    kind: str  # the parent run's `kind` tag: names.KIND_SEARCH, KIND_GRID or KIND_CONFIRM
    name: str  # MLflow experiment; the Ray experiment is NAME-DIGEST
    digest: str  # the spec's hash
    base: ExperimentConfig  # the experiment every trial starts from (teachers, data)
    resources: Resources  # per trial
    trials: int  # how many trials make the job complete
    max_failures: int  # retries of a trial from its last checkpoint
    recipe: Recipe  # how each trial's config is made, on the workers and in the driver
    test_at_end: bool  # each trial tests its best checkpoint when done (a grid cell)
    view_params: list[str]  # the params that tell its trials apart: the runs table's columns
    expected_epochs: float | None  # epochs a trial is expected to train (None: all of them)
    first_tag: int  # Ray's first experiment-tag number: 1 for a searcher, 0 for a grid

    def start(self, tracker: Tracker, parent: str) -> None: ...  # once the parent run exists
    def parent_params(self) -> dict[str, Any]: ...
    def parent_tags(self) -> dict[str, str]: ...
    def warnings(self) -> list[str]: ...  # inert terms, printed before the run
    def plan(self, available: dict[str, float]) -> str: ...
    def tune_config(self) -> tune.TuneConfig: ...
    def param_space(self) -> dict[str, Any] | None: ...
    def describe(self, sampled: dict[str, Any]) -> str: ...  # a trial on the console
    def run_name(self, sampled: dict[str, Any], number: int, trial_id: str) -> str: ...
    def run_params(self, sampled: dict[str, Any]) -> dict[str, Any]: ...  # what varies
    def run_config(self, sampled: dict[str, Any]) -> dict[str, Any]: ...  # config.yaml
    def run_tags(self, sampled: dict[str, Any]) -> dict[str, str]: ...
    def summarize(self, results: tune.ResultGrid, tracker: Tracker, parent: str,
                  params: dict[str, Any]) -> None: ...


@dataclass
class JobFields:
    """The data fields of a :class:`Job`, which a job sets from its spec in ``__post_init__``
    (shared by :class:`ablate.search.SearchJob` and :class:`ablate.grid.GridJob`)."""

    name: str = field(init=False)
    digest: str = field(init=False)
    base: ExperimentConfig = field(init=False)
    resources: Resources = field(init=False)
    trials: int = field(init=False)
    max_failures: int = field(init=False)
    recipe: Recipe = field(init=False)
    view_params: list[str] = field(init=False)
    expected_epochs: float | None = field(init=False, default=None)
    first_tag: int = field(init=False, default=1)

    def run_config(self, sampled: dict[str, Any]) -> dict[str, Any]:
        return self.recipe.config(sampled).model_dump(mode="json")


