"""A search as an Optuna study: the space as Optuna distributions, the study the searcher
writes as trials report (stored beside a local SQLite MLflow store, so ``optuna-dashboard``
shows a running search), the importances of the searched values at one fidelity (computed as
optuna-dashboard computes them), and the study rebuilt from the trials table (figures, and
searches from before the live study)."""

from __future__ import annotations

import contextlib
import math
import sys
import warnings
from pathlib import Path
from typing import Any

import optuna

from ablate import names
from ablate.config import SearchSpec
from ablate.search.trials import ENDED, SearchFacts, param_columns, sampled_values
from ablate.tracking import Tracker


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


IMPORTANCE_MIN_TRIALS = 5  # importances compare trials at the last epoch this many reached


def metric_names(multi: bool) -> list[str]:
    """The study's objective names (what optuna-dashboard labels its axes with)."""
    return list(names.PARETO) if multi else [names.OBJECTIVE]


def _name_metrics(study: optuna.Study, multi: bool) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)  # since 3.2
        study.set_metric_names(metric_names(multi))


def rdb_storage(storage: str) -> optuna.storages.RDBStorage:
    # Wait for a reader (optuna-dashboard) to let go of the SQLite file, rather than fail.
    return optuna.storages.RDBStorage(storage, engine_kwargs={"connect_args": {"timeout": 60}})


def live_study(storage: str, name: str, multi: bool,
               attrs: dict[str, str]) -> optuna.storages.RDBStorage:
    """Create the search's study in ``storage`` (or load it: ``--resume``) before the
    searcher writes its trials there, with its objective names and where it comes from
    (``attrs``); returns the storage for Ray's OptunaSearch."""
    rdb = rdb_storage(storage)
    study = optuna.create_study(storage=rdb, study_name=name, load_if_exists=True,
                                directions=["maximize"] * len(metric_names(multi)))
    _name_metrics(study, multi)
    for key, value in attrs.items():
        study.set_user_attr(key, value)
    return rdb


def stored_study(storage: str, name: str) -> optuna.Study | None:
    """The study ``name`` in ``storage``, if there is one."""
    try:
        return optuna.load_study(study_name=name, storage=rdb_storage(storage))
    except KeyError:
        return None


def dashboard_command(storage: str) -> str:
    """How to open ``storage`` in optuna-dashboard: the script installed beside this Python
    (`.venv/bin/optuna-dashboard`: it runs without an activated venv), else its name."""
    exe = Path(sys.executable).parent / "optuna-dashboard"
    return f"{exe if exe.is_file() else 'optuna-dashboard'} {storage}"


def param_importances(study: optuna.Study) -> dict[str, float]:
    """PED-ANOVA importances of the COMPLETE trials' first objective, called exactly as
    optuna-dashboard calls it (``optuna_dashboard._importance``), so that the same trials give
    the same ranking there."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # PED-ANOVA's note on `target`; tiny searches
        return dict(optuna.importance.get_param_importances(
            study, target=lambda t: -t.values[0],
            evaluator=optuna.importance.PedAnovaImportanceEvaluator()))
def at_fidelity(histories: dict[str, dict[int, float]],
                min_trials: int = IMPORTANCE_MIN_TRIALS) -> tuple[int, dict[str, float]]:
    """The epoch at which trials are compared for importances, and each trial's val
    W-acc of the best epoch so far there (``histories``: trial id -> {epoch (1-based): value}).
    Under ASHA most trials stop early, so their last values are at different fidelities; this
    takes the last epoch that ``min_trials`` trials reached (all that trained, if fewer did
    so), i.e. the highest ASHA rung with that many trials. (0, {}) when no trial trained."""
    reached = {tid: {e: v for e, v in h.items() if v is not None and not math.isnan(v)}
               for tid, h in histories.items()}
    trained = [h for h in reached.values() if h]
    if not trained:
        return 0, {}
    need = min(min_trials, len(trained))
    epoch = max(e for e in range(1, max(max(h) for h in trained) + 1)
                if sum(e in h for h in trained) >= need)
    return epoch, {tid: h[epoch] for tid, h in reached.items() if epoch in h}


def importances(facts: SearchFacts, rows: list[dict[str, Any]],
                histories: dict[str, dict[int, float]]) -> tuple[dict[str, Any], optuna.Study]:
    """The importances of the searched values for val W-acc (:func:`param_importances`, as
    optuna-dashboard computes them), on the trials that reached one epoch
    (:func:`at_fidelity`). Returns what ``importances.json`` holds (metric, epoch, trials,
    their numbers, the importances; empty with too few or constant trials) and the in-memory
    study they come from."""
    space, columns = optuna_space(facts), param_columns(facts.space)
    epoch, values = at_fidelity(histories)
    study = optuna.create_study(direction="maximize")
    used = []
    for r in rows:
        if r["trial_id"] in values:
            with contextlib.suppress(ValueError):  # a value outside the space: left out
                study.add_trial(optuna.trial.create_trial(
                    params=sampled_values(r, columns), distributions=space,
                    value=values[r["trial_id"]]))
                used.append(r)
    try:
        imp = param_importances(study)
    except (RuntimeError, ValueError, ZeroDivisionError):  # too few or constant trials
        imp = {}
    return {"metric": names.OBJECTIVE, "method": "PED-ANOVA (as optuna-dashboard)",
            "epoch": epoch, "max_epochs": facts.epochs,
            "trials": len(used), "trial_numbers": [r["trial"] for r in used],
            "rule": f"the trials that reached epoch {epoch}: the last epoch at least "
                    f"{IMPORTANCE_MIN_TRIALS} trials reached (all that trained, if fewer)",
            "importances": imp}, study


def optuna_storage(tracker: Tracker) -> str | None:
    """Where the search's Optuna study is kept: ``optuna.db`` beside a local SQLite MLflow
    store (``sqlite:////abs/dir/optuna.db``); None for any other store."""
    db = tracker.sqlite_path
    return None if db is None else f"sqlite:///{(db.parent / names.OPTUNA_DB).resolve()}"


def study_name(name: str, digest: str, parent: str) -> str:
    """The Optuna study of a search: ``EXPERIMENT-SPECHASH-PARENTRUNID`` (unique: a search
    started again with ``--fresh`` has the same spec hash but a new parent run)."""
    return f"{name}-{digest}-{parent}"


def build_study(facts: SearchFacts, rows: list[dict[str, Any]],
                histories: dict[str, dict[int, float]], runs: dict[str, str], *,
                storage: str | None = None, name: str | None = None) -> optuna.Study:
    """The search as an Optuna study, in ``storage`` (replacing a study of that name) or in
    memory: one trial per trial that ended, in trial order: COMPLETE with the objective at its
    last epoch (``val/best_w_acc``, or val clean and PGD accuracy of the best epoch for a Pareto
    search) whether ASHA stopped it or not, FAIL for a failed trial; intermediate values: val
    W-acc of the best epoch so far per epoch; user attributes: trial number and id, status,
    epochs, MLflow run id. The search's own sampler was told PRUNED for a trial ASHA stopped
    (:class:`~ablate.search.job.StoppedAsPruned`); this study keeps that trial's value, so the
    dashboard's history and importances show every trial."""
    space, columns = optuna_space(facts), param_columns(facts.space)
    keys = names.PARETO if facts.multi else (names.OBJECTIVE,)
    rdb = None
    if storage is not None and name is not None:
        rdb = rdb_storage(storage)
        with contextlib.suppress(KeyError):  # a summary written again: rebuilt, not appended
            optuna.delete_study(study_name=name, storage=rdb)
    study = optuna.create_study(storage=rdb, study_name=name,
                                directions=["maximize"] * len(keys))
    _name_metrics(study, facts.multi)
    trials = []
    for r in rows:
        if r["status"] not in ENDED:
            continue
        values = [r[k] for k in keys]
        ok = r["status"] != "failed" and all(v is not None and not math.isnan(v)
                                             for v in values)
        attrs = {"trial": r["trial"], "trial_id": r["trial_id"], "status": r["status"],
                 "epochs": r["epochs"], "mlflow_run_id": runs.get(r["trial_id"], ""),
                 "val_best_w_acc": r[names.OBJECTIVE]}  # the target of a Pareto study's plots
        with contextlib.suppress(ValueError):  # a value outside the space: left out
            trials.append(optuna.trial.create_trial(
                state=optuna.trial.TrialState.COMPLETE if ok else optuna.trial.TrialState.FAIL,
                values=values if ok else None, params=sampled_values(r, columns),
                distributions=space, user_attrs=attrs,
                intermediate_values=histories.get(r["trial_id"]) or None))
    study.add_trials(trials)
    return study


