"""``ablate search``: Optuna (TPE) through Ray Tune with ASHA, every trial logged to MLflow.

Flow: validate the spec and its inputs (no Ray yet) → prepare the teachers once in the driver →
start (or join) Ray → fit or restore the Tuner → summarise into the parent run and re-test the
best trial's best checkpoint on the test split with the final PGD protocol.
"""

from __future__ import annotations

import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import optuna
import ray
import yaml
from ray import tune
from ray.tune.schedulers import ASHAScheduler
from ray.tune.search.optuna import OptunaSearch

from ablate.report import (
    PUSH_KEYS,
    attack_line,
    pareto_front,
    plot_curves,
    plot_importances,
    plot_objective,
    plot_pareto,
    push_inactive,
    push_note,
    test_line,
)
from ablate.resources import concurrency
from ablate.runner import JobFields, Log, Options, run_job, trial_dirname
from ablate.safe_yaml import dump_yaml
from ablate.search_spec import SearchSpec
from ablate.tracking import Tracker
from trainables.ciard import final_test

OBJECTIVE = "val/best_w_acc"
PARETO = ("val/best_clean_acc", "val/best_robust_acc")
optuna.logging.set_verbosity(optuna.logging.WARNING)


def optuna_space(spec: SearchSpec) -> dict[str, optuna.distributions.BaseDistribution]:
    d = optuna.distributions
    out: dict[str, d.BaseDistribution] = {}
    for key, p in spec.space.items():
        if p.type == "categorical":
            out[key] = d.CategoricalDistribution(p.choices or [])
        elif p.type == "int":
            out[key] = d.IntDistribution(int(p.low or 0), int(p.high or 0), log=p.log)
        else:
            out[key] = d.FloatDistribution(float(p.low or 0), float(p.high or 0), log=p.log)
    return out


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
        f"objective: {objective}; searcher: Optuna TPE (seed {spec.searcher.seed}, "
        f"{len(spec.searcher.points_to_evaluate)} given points); scheduler: {sched}",
        "space: " + ", ".join(f"{k} {_range(p)}" for k, p in spec.space.items()),
        f"resources per trial: {r.cpu:g} CPU, {r.gpu:g} GPU; max concurrent "
        f"{spec.max_concurrent or 'unlimited'}; {here}; retries per trial {spec.max_failures}",
    ])


def _range(p: Any) -> str:
    if p.type == "categorical":
        return "{" + ", ".join(map(str, p.choices)) + "}"
    return f"[{p.low:g}, {p.high:g}]" + (" log" if p.log else "") + (" int" * (p.type == "int"))


def describe(config: dict[str, Any]) -> str:
    return " ".join(f"{k.split('.')[-1]}={v:.3g}" if isinstance(v, float)
                    else f"{k.split('.')[-1]}={v}" for k, v in sorted(config.items()))


def tune_config(spec: SearchSpec) -> tune.TuneConfig:
    """Optuna TPE (seeded, the given points first) and ASHA on the scalar objective."""
    multi = spec.objective.multi
    searcher = OptunaSearch(
        space=optuna_space(spec), metric=list(PARETO) if multi else OBJECTIVE,
        mode=["max", "max"] if multi else "max",
        points_to_evaluate=[dict(p) for p in spec.searcher.points_to_evaluate] or None,
        sampler=optuna.samplers.TPESampler(seed=spec.searcher.seed))
    scheduler = None
    if spec.scheduler.name == "asha":
        # With a single objective Tune hands metric and mode to the scheduler itself.
        scheduler = ASHAScheduler(
            metric=OBJECTIVE if multi else None, mode="max" if multi else None,
            time_attr="training_iteration",
            max_t=spec.base.optim.epochs, grace_period=spec.scheduler.grace_period,
            reduction_factor=spec.scheduler.reduction_factor)
    return tune.TuneConfig(
        search_alg=searcher, scheduler=scheduler, num_samples=spec.num_samples,
        max_concurrent_trials=spec.max_concurrent,
        metric=None if multi else OBJECTIVE, mode=None if multi else "max",
        trial_dirname_creator=trial_dirname, reuse_actors=True)


@dataclass
class SearchJob(JobFields):
    """A search as :func:`~ablate.runner.run_job` runs it: Optuna TPE (and ASHA) proposing
    trials over the spec's space; summarised into tables, plots and the best trial's test."""

    spec: SearchSpec
    log: Log = print
    kind: ClassVar[str] = "search"
    test_at_end: ClassVar[bool] = False  # only the best trial is tested, by the driver

    def __post_init__(self) -> None:
        s = self.spec
        self.name, self.digest, self.base, self.resources = s.name, s.digest(), s.base, s.resources
        self.trials, self.max_failures, self.recipe = s.num_samples, s.max_failures, s.recipe()

    def parent_params(self) -> dict[str, Any]:
        return {"search": self.spec.model_dump(mode="json", exclude={"base"}),
                "base": self.spec.base.model_dump(mode="json")}

    def parent_tags(self) -> dict[str, str]:
        return {}

    def warnings(self) -> list[str]:
        return self.spec.warnings()

    def plan(self, available: dict[str, float]) -> str:
        return plan(self.spec, available)

    def tune_config(self) -> tune.TuneConfig:
        return tune_config(self.spec)

    def param_space(self) -> None:
        return None  # the searcher proposes every trial's values

    def describe(self, sampled: dict[str, Any]) -> str:
        return describe(sampled)

    def run_params(self, sampled: dict[str, Any]) -> dict[str, Any]:
        return self.recipe.config(sampled).model_dump(mode="json")

    def run_tags(self, sampled: dict[str, Any]) -> dict[str, str]:
        return {"spec_hash": self.digest, "method": self.base.method.name,
                "seed": str(self.base.seed), "sampled": yaml.safe_dump(sampled).strip()}

    def summarize(self, results: tune.ResultGrid, tracker: Tracker, parent: str,
                  params: dict[str, Any]) -> None:
        summarize(self.spec, results, tracker, parent, params, self.log)


def run_search(spec: SearchSpec, opts: Options, log: Log = print) -> int:
    """Run (or resume) the search; returns the exit code (0, or 130 when interrupted)."""
    return run_job(SearchJob(spec, log), opts, log)


def trials_table(spec: SearchSpec, results: tune.ResultGrid) -> list[dict[str, Any]]:
    """One row per trial: status, epochs, sampled values, best-epoch validation metrics."""
    rows = []
    for result in results:
        m, cfg = result.metrics or {}, result.config or {}
        epochs = int(m.get("training_iteration", 0))
        status = ("failed" if result.error else
                  "stopped" if epochs < spec.base.optim.epochs else "finished")
        number = Path(result.path).name.split("_")[1] if result.path else "0"
        row: dict[str, Any] = {"trial": int(number) if number.isdigit() else 0,
                               "trial_id": m.get("trial_id", ""), "status": status,
                               "epochs": epochs}
        row.update({f"param/{k}": cfg.get(k) for k in spec.space})
        for key in (OBJECTIVE, *PARETO, "val/w_acc", "val/clean_acc", "val/robust_acc"):
            row[key] = float(m[key]) if key in m else None
        for key in PUSH_KEYS:  # over the epochs the trial trained
            value = m.get(f"train/run_{key}_frac")
            row[key] = float(value) if value is not None else None
        row["error"] = str(result.error).strip().splitlines()[-1][:300] if result.error else ""
        rows.append(row)
    rows.sort(key=lambda r: (r["trial"], r["trial_id"]))
    return rows


def importances(spec: SearchSpec, rows: list[dict[str, Any]]) -> dict[str, float]:
    """Optuna's default importances (PED-ANOVA in Optuna 5) of the searched values for W-acc."""
    space = optuna_space(spec)
    study = optuna.create_study(direction="maximize")
    for r in rows:
        if r[OBJECTIVE] is not None:
            study.add_trial(optuna.trial.create_trial(
                params={k: r[f"param/{k}"] for k in space}, distributions=space,
                value=r[OBJECTIVE]))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # 'importances will be equal' on tiny searches
            return dict(optuna.importance.get_param_importances(study))
    except (RuntimeError, ValueError):  # too few or constant trials
        return {}


def summarize(spec: SearchSpec, results: tune.ResultGrid, tracker: Tracker, parent: str,
              params: dict[str, Any], log: Log) -> None:
    """Parent-run summary: tables, plots, importances; best trial re-tested on the test split."""
    rows = trials_table(spec, results)
    done = [r for r in rows if r["status"] != "failed" and r[OBJECTIVE] is not None]
    front = pareto_front([(r[PARETO[0]], r[PARETO[1]]) for r in done])
    for r in rows:
        r["pareto"] = any(r is done[i] for i in front)
    counts = {f"trials/{s}": sum(r["status"] == s for r in rows)
              for s in ("finished", "stopped", "failed")}
    tracker.log_summary(parent, counts, step=0)
    log(f"{len(rows)} trials: {counts['trials/finished']} finished, {counts['trials/stopped']} "
        f"stopped early by ASHA, {counts['trials/failed']} failed")
    inactive = [r for r in rows if push_inactive(r["push_empty"])]
    if inactive:
        log(f"warning: push inactive in {len(inactive)} of {len(rows)} trials (J empty in more "
            "than 90% of their batches): trials " + ", ".join(str(r["trial"]) for r in inactive))
    log("Pareto front (val clean / PGD at the best epoch): " + ", ".join(
        f"trial {r['trial']} {100 * r[PARETO[0]]:.1f}/{100 * r[PARETO[1]]:.1f}%"
        for r in sorted((r for r in rows if r["pareto"]), key=lambda r: -r[PARETO[0]])))
    with tempfile.TemporaryDirectory() as tmp:
        _log_tables(spec, rows, tracker, parent, Path(tmp))
        if done:
            best = max(done, key=lambda r: r[OBJECTIVE])
            _final_test(spec, best, results, tracker, parent, params, Path(tmp), log)


def _log_tables(spec: SearchSpec, rows: list[dict[str, Any]], tracker: Tracker, parent: str,
                tmp: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.Table.from_pylist(rows)
    pq.write_table(table, tmp / "trials.parquet")
    tracker.log_artifact(parent, tmp / "trials.parquet")
    tracker.log_table(parent, table.to_pydict(), "trials.json")
    values = [r[OBJECTIVE] for r in rows]
    plot_objective(values, tmp / "objective.png", title=f"{spec.name}: best val W-acc per trial")
    plot_pareto([(r[PARETO[0]], r[PARETO[1]]) for r in rows], [r["pareto"] for r in rows],
                tmp / "pareto.png", title=f"{spec.name}: clean vs PGD (val, best epoch)")
    imp = importances(spec, rows)
    (tmp / "importances.json").write_text(yaml.safe_dump(imp))
    plot_importances(imp, tmp / "importances.png", title="Optuna importances for val W-acc")
    for name in ("objective.png", "pareto.png", "importances.png", "importances.json"):
        tracker.log_artifact(parent, tmp / name, "plots" if name.endswith("png") else None)


def _final_test(spec: SearchSpec, best: dict[str, Any], results: tune.ResultGrid,
                tracker: Tracker, parent: str, params: dict[str, Any], tmp: Path,
                log: Log) -> None:
    result = next(r for r in results if (r.metrics or {}).get("trial_id") == best["trial_id"])
    sampled = {k: best[f"param/{k}"] for k in spec.space}
    cfg = spec.trial_config(sampled)
    # Readable by `ablate train` (whose YAML loader refuses aliases).
    (tmp / "best_config.yaml").write_text(dump_yaml(cfg.model_dump(mode="json")))
    tracker.log_artifact(parent, tmp / "best_config.yaml")
    remote = ray.remote(num_cpus=spec.resources.cpu, num_gpus=spec.resources.gpu)(final_test)
    test, history = ray.get(remote.remote(sampled, result.checkpoint, **params))
    plot_curves(history, tmp / "best_curves.png", title=f"best trial {best['trial']}")
    tracker.log_artifact(parent, tmp / "best_curves.png", "plots")
    metrics = {f"test/{k}": v for k, v in test.items()}
    tracker.log_summary(parent, {**metrics, "best/" + OBJECTIVE: best[OBJECTIVE]}, step=0)
    child = tracker.find_run(spec.name, {"trial_id": best["trial_id"],
                                         "mlflow.parentRunId": parent})
    if child is not None:
        tracker.log_summary(child, metrics, step=cfg.optim.epochs)
        tracker.set_tags(child, {"best": "true"})
    tracker.set_tags(parent, {"best_trial": best["trial_id"]})
    log(f"best trial {best['trial_id']}: val W {100 * best[OBJECTIVE]:.1f}%  {describe(sampled)}")
    note = push_note(best["push_active"], best["push_empty"])
    if note:
        log(f"best trial push term: {note}")
    log(f"test (best epoch {int(test['best_epoch']) + 1}): {test_line(test)}   best config: "
        "best_config.yaml in the parent run")
    if cfg.eval.attacks:
        log(attack_line(test, cfg.eval.attacks))
