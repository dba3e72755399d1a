"""``ablate search``: Optuna (TPE) through Ray Tune with ASHA, every trial logged to MLflow.

Flow: validate the spec and its inputs (no Ray yet) → prepare the teachers once in the driver →
start (or join) Ray → fit or restore the Tuner → summarise into the parent run and re-test the
best trial's best checkpoint on the test split with the final PGD protocol.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import optuna
from ray import tune
from ray.tune.result import TRAINING_ITERATION
from ray.tune.schedulers import ASHAScheduler
from ray.tune.search.optuna import OptunaSearch

from ablate import names
from ablate.config import SearchSpec, concurrency, dump_yaml
from ablate.core.console import Log
from ablate.cost import confirm_runs, expected_epochs
from ablate.runtime import JobFields, Options, run_job, trial_dirname
from ablate.search.confirm import run_confirm
from ablate.search.study import (
    dashboard_command,
    live_study,
    optuna_space,
    optuna_storage,
    study_name,
)
from ablate.search.summary import summarize
from ablate.search.trials import describe
from ablate.tracking import Tracker

_SAMPLERS = {"optuna_tpe": "TPE", "optuna_random": "random sampling"}


def plan(spec: SearchSpec, available: dict[str, float]) -> str:
    """The resource plan of ``--dry-run``: trials, per-trial resources, concurrency here."""
    r, s = spec.resources, spec.scheduler
    sched = (f"ASHA (grace {s.grace_period} epochs, reduction factor {s.reduction_factor:g}, "
             f"max {spec.base.optim.epochs} epochs)" if s.name == "asha" else "no early stopping")
    objective = (f"W-acc (clean weight {spec.objective.w:g})" if not spec.objective.multi
                 else "Pareto front of clean and PGD accuracy")
    n = concurrency(spec, available)
    here = (f"{n} at a time on this machine ({available['CPU']:g} CPUs, "
            f"{available['GPU']:g} GPUs)" if n else
            "none fit on this machine: run with --address on a cluster that has the resources")
    return "\n".join([
        f"search {spec.name} (spec hash {spec.digest()}): {spec.num_samples} trials of "
        f"{spec.base.method.name} on {spec.base.data.name}, {spec.base.optim.epochs} epochs each",
        f"objective: {objective}; searcher: Optuna {_SAMPLERS[spec.searcher.name]} (seed "
        f"{spec.searcher.seed}, "
        f"{len(spec.searcher.points_to_evaluate)} given points{_tpe_options(spec)}); "
        f"scheduler: {sched}",
        "space: " + ", ".join(f"{k} {_range(p)}" for k, p in spec.space.items()),
        f"resources per trial: {r.cpu:g} CPU, {r.gpu:g} GPU; max concurrent "
        f"{spec.max_concurrent or 'unlimited'}; {here}; retries per trial {spec.max_failures}",
        *([] if spec.confirm is None else [_confirm_plan(spec)]),
    ])


def _confirm_plan(spec: SearchSpec) -> str:
    c = spec.confirm
    assert c is not None
    base = " and the base config (unless it is one of them)" if c.with_base else ""
    return (f"then confirm: the top {c.top_k} configurations{base} re-trained on seeds "
            f"{c.seeds} ({confirm_runs(spec)} more runs of {spec.base.optim.epochs} epochs), "
            f"winner by the lower 95% bound; only it{' and the base config' if base else ''} "
            "tested")


def _tpe_options(spec: SearchSpec) -> str:
    s = spec.searcher
    if s.name != "optuna_tpe":
        return ""
    joint = {None: "", True: ", multivariate", False: ", independent"}[s.multivariate]
    return f", {s.n_startup_trials} random startup trials{joint}"


def _range(p: Any) -> str:
    if p.type == "categorical":
        return "{" + ", ".join(map(str, p.choices)) + "}"
    return f"[{p.low:g}, {p.high:g}]" + (" log" if p.log else "") + (" int" * (p.type == "int"))


def make_sampler(spec: SearchSpec) -> optuna.samplers.BaseSampler:
    """The spec's Optuna sampler (seeded)."""
    if spec.searcher.name == "optuna_random":
        return optuna.samplers.RandomSampler(seed=spec.searcher.seed)
    s = spec.searcher
    return optuna.samplers.TPESampler(seed=s.seed, n_startup_trials=s.n_startup_trials,
                                      multivariate=s.multivariate)


class StoppedAsPruned(OptunaSearch):
    """Ray's OptunaSearch tells Optuna that a trial ASHA stopped early is COMPLETE with its
    value at the stopping epoch, so TPE ranks an epoch-1 value beside full-length ones. Here
    such a trial is told PRUNED: Optuna keeps the intermediate values reported every epoch and
    TPE ranks pruned trials by how far they got, then by their last value, as it does under
    Optuna's own pruners. Scalar objective only (Optuna has no pruning for several)."""

    def __init__(self, *args: Any, epochs: int, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.epochs = epochs

    def suggest(self, trial_id: str) -> dict | None:
        config = super().suggest(trial_id)
        trial = self._ot_trials.get(trial_id)
        if trial is not None:  # how a dashboard trial is found in MLflow (its trial_id tag)
            trial.set_user_attr("ray_trial_id", trial_id)
        return config

    def on_trial_complete(self, trial_id: str, result: dict | None = None,
                          error: bool = False) -> None:
        single = not isinstance(self.metric, list)  # Optuna keeps per-step values of one
        if single and not error and result and trial_id not in self._completed_trials and (
                self.metric in result):
            # Ray reports the last epoch here, not to on_trial_result: keep it in the curve.
            trial, step = self._ot_trials[trial_id], result[TRAINING_ITERATION]
            if step not in self._ot_study._storage.get_trial(trial._trial_id).intermediate_values:
                trial.report(result[self.metric], step)
        stopped = (not error and result is not None and single
                   and result.get(TRAINING_ITERATION, self.epochs) < self.epochs)
        if not stopped or trial_id in self._completed_trials:
            return super().on_trial_complete(trial_id, result, error)
        self._ot_study.tell(self._ot_trials[trial_id], state=optuna.trial.TrialState.PRUNED)
        self._completed_trials.add(trial_id)
        return None


def tune_config(spec: SearchSpec, study: str | None = None,
                storage: optuna.storages.BaseStorage | None = None) -> tune.TuneConfig:
    """Optuna TPE (seeded, the given points first) and ASHA on the scalar objective; the
    searcher's study is ``study`` in ``storage`` when given (written as trials report)."""
    multi = spec.objective.multi
    searcher = StoppedAsPruned(
        space=optuna_space(spec), metric=list(names.PARETO) if multi else names.OBJECTIVE,
        mode=["max", "max"] if multi else "max",
        points_to_evaluate=[dict(p) for p in spec.searcher.points_to_evaluate] or None,
        sampler=make_sampler(spec), epochs=spec.base.optim.epochs, study_name=study,
        storage=storage)
    scheduler = None
    if spec.scheduler.name == "asha":
        # With a single objective Tune hands metric and mode to the scheduler itself.
        scheduler = ASHAScheduler(
            metric=names.OBJECTIVE if multi else None, mode="max" if multi else None,
            time_attr="training_iteration",
            max_t=spec.base.optim.epochs, grace_period=spec.scheduler.grace_period,
            reduction_factor=spec.scheduler.reduction_factor)
    return tune.TuneConfig(
        search_alg=searcher, scheduler=scheduler, num_samples=spec.num_samples,
        max_concurrent_trials=spec.max_concurrent,
        metric=None if multi else names.OBJECTIVE, mode=None if multi else "max",
        trial_dirname_creator=trial_dirname, reuse_actors=True)


@dataclass
class SearchJob(JobFields):
    """A search as :func:`~ablate.runtime.run_job` runs it: Optuna TPE (and ASHA) proposing
    trials over the spec's space; summarised into tables, plots and the best trial's test."""

    spec: SearchSpec
    log: Log = print
    ranked: list[dict[str, Any]] = field(default_factory=list)  # ended trials, best first
    parent: str = ""  # the parent run
    study: str | None = None  # the live Optuna study, beside a local SQLite store
    storage: optuna.storages.BaseStorage | None = None
    kind: ClassVar[str] = names.KIND_SEARCH
    test_at_end: ClassVar[bool] = False  # only the best trial is tested, by the driver

    def __post_init__(self) -> None:
        s = self.spec
        self.name, self.digest, self.base, self.resources = s.name, s.digest(), s.base, s.resources
        self.trials, self.max_failures, self.recipe = s.num_samples, s.max_failures, s.recipe()
        self.view_params = list(s.space)
        if s.scheduler.name == "asha":
            self.expected_epochs = expected_epochs(s.scheduler.grace_period,
                                                   s.scheduler.reduction_factor,
                                                   s.base.optim.epochs)

    def parent_params(self) -> dict[str, Any]:
        # MLflow returns params unordered: the space's order is kept for around-grids' rows.
        return {names.PARAMS_SEARCH: self.spec.model_dump(mode="json", exclude={"base"})
                | {names.SPACE_ORDER: list(self.spec.space)},
                names.PARAMS_BASE: self.spec.base.model_dump(mode="json")}

    def parent_tags(self) -> dict[str, str]:
        return {}

    def warnings(self) -> list[str]:
        return self.spec.warnings()

    def plan(self, available: dict[str, float]) -> str:
        return plan(self.spec, available)

    def start(self, tracker: Tracker, parent: str) -> None:
        """Create the study the searcher writes (``optuna.db`` beside a local SQLite store),
        so optuna-dashboard shows the search while it runs."""
        self.parent, url = parent, optuna_storage(tracker)
        if url is None:
            return
        self.study = study_name(self.name, self.digest, parent)
        attrs = {"mlflow_tracking_uri": tracker.uri, "mlflow_parent_run_id": parent,
                 names.SPEC_HASH: self.digest}
        with tracker.lock():  # two commands creating optuna.db at once race in its schema
            self.storage = live_study(url, self.study, self.spec.objective.multi, attrs)
        tracker.set_tags(parent, {names.OPTUNA_STORAGE: url, names.OPTUNA_STUDY: self.study})
        self.log(f"Optuna study {self.study}, written as trials report: "
                 f"{dashboard_command(url)}")

    def tune_config(self) -> tune.TuneConfig:
        return tune_config(self.spec, self.study, self.storage)

    def param_space(self) -> None:
        return None  # the searcher proposes every trial's values

    def describe(self, sampled: dict[str, Any]) -> str:
        return describe(sampled)

    def run_name(self, sampled: dict[str, Any], number: int, trial_id: str) -> str:
        return f"trial-{number:02d}-{trial_id.split('_')[0]}"

    def run_params(self, sampled: dict[str, Any]) -> dict[str, Any]:
        # 6 significant digits: a column of the runs table, not the value trained with (that
        # is in the run's config.yaml and `sampled` tag).
        shown = {k: float(f"{v:.6g}") if isinstance(v, float) else v for k, v in sampled.items()}
        return {**shown, names.METHOD: self.base.method.name}

    def run_tags(self, sampled: dict[str, Any]) -> dict[str, str]:
        # dump_yaml: read back by parse_yaml (YAML 1.2), which must see the same values.
        return {names.SPEC_HASH: self.digest, names.METHOD: self.base.method.name,
                names.SEED: str(self.base.seed),
                names.SAMPLED: dump_yaml(sampled, sort_keys=True).strip()}

    def summarize(self, results: tune.ResultGrid, tracker: Tracker, parent: str,
                  params: dict[str, Any]) -> None:
        self.ranked = summarize(self.spec, results, tracker, parent, params, self.log)
        self.parent = parent


def run_search(spec: SearchSpec, opts: Options, log: Log = print) -> int:
    """Run (or resume) the search, then its confirm stage if the spec has one; returns the
    exit code (0, 1 when every trial failed, 130 when interrupted)."""
    job = SearchJob(spec, log)
    code = run_job(job, opts, log)
    if code or spec.confirm is None:
        return code
    return run_confirm(spec, job.parent, job.ranked, opts, log)
