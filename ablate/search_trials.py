"""A search's trials as rows (one per trial: status, sampled values under dot-free column
names, best validation metrics), from Ray's results or back from the MLflow child runs; the
Optuna space, importances at one fidelity, and the Optuna study rebuilt from the rows.
"""

from __future__ import annotations

import ast
import contextlib
import math
import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from pydantic import ValidationError
from ray import tune

from ablate.config import ConfigError
from ablate.grid_table import PUSH_KEYS
from ablate.safe_yaml import YamlRefused, parse_yaml
from ablate.search_spec import Param, SearchSpec
from ablate.tracking import Tracker

OBJECTIVE = "val/best_w_acc"
PARETO = ("val/best_clean_acc", "val/best_robust_acc")
optuna.logging.set_verbosity(optuna.logging.WARNING)


def describe(config: dict[str, Any]) -> str:
    return " ".join(f"{k.split('.')[-1]}={v:.3g}" if isinstance(v, float)
                    else f"{k.split('.')[-1]}={v}" for k, v in sorted(config.items()))


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


ENDED = ("finished", "stopped", "failed")  # statuses of trials that ended
IMPORTANCE_MIN_TRIALS = 5  # importances compare trials at the last epoch this many reached
OPTUNA_DB = "optuna.db"  # the Optuna study's SQLite file, beside a local SQLite MLflow store
OPTUNA_DIR = "optuna"  # the parent run's artifact folder of Optuna's HTML figures


@dataclass(frozen=True)
class SearchFacts:
    """What a search's summary needs from its spec: from the spec of a running search, or
    rebuilt from its parent run's params and tags by ``ablate report``."""

    name: str  # the MLflow experiment
    digest: str  # the spec hash
    space: dict[str, Param]
    multi: bool  # objective [clean_acc, robust_acc]
    epochs: int  # of a trial that is not stopped early
    attacks: tuple[str, ...] = ()  # eval.attacks of the final test

    @classmethod
    def of(cls, spec: SearchSpec) -> SearchFacts:
        return cls(spec.name, spec.digest(), dict(spec.space), spec.objective.multi,
                   spec.base.optim.epochs, tuple(spec.base.eval.attacks))

    @classmethod
    def from_run(cls, info: dict[str, Any]) -> SearchFacts:
        """From a search's parent run (:meth:`Tracker.run_info`): its params are the spec
        flattened (``search.space.method.alpha.low``), each value as ``str()`` wrote it."""
        params, fields = info["params"], set(Param.model_fields)
        raw: dict[str, dict[str, Any]] = {}
        for name, text in params.items():
            key, _, field = name.removeprefix("search.space.").rpartition(".")
            if name.startswith("search.space.") and key and field in fields:
                raw.setdefault(key, {})[field] = literal(text)
        if not raw or "base.optim.epochs" not in params:
            raise ConfigError(f"run {info['run_id']}: its params do not hold a search spec "
                              "(search.space.*, base.optim.epochs)")
        order = literal(params.get("search.space_order", "[]"))  # older runs: none
        order = order if isinstance(order, list) else []
        raw = {k: raw[k] for k in order if k in raw} | raw
        try:
            space = {k: Param.model_validate(v) for k, v in raw.items()}
        except ValidationError as exc:
            raise ConfigError(f"run {info['run_id']}: its search space does not parse: "
                              f"{exc.errors()[0]['msg']}") from None
        return cls(info["experiment"], info["tags"].get("spec_hash", ""), space,
                   isinstance(literal(params.get("search.objective.metric", "w_acc")), list),
                   int(params["base.optim.epochs"]),
                   tuple(literal(params.get("base.eval.attacks", "[]")) or ()))


def literal(text: str) -> Any:
    """A param value back from ``str()``: numbers, booleans, None, lists; else the text."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return text


def param_columns(keys: Iterable[str]) -> dict[str, str]:
    """The trials table's column of each searched value: ``param/`` and the space key with
    every dot made an underscore (``method.alpha`` -> ``param/method_alpha``, ``push_temp`` ->
    ``param/push_temp``). MLflow's table view reads a dot in a column name as a path into
    nested data and shows such a column blank. Should two keys then share a name (``a.b``
    beside ``a_b``), the later in sorted order gets ``_2`` (``_3``, ...)."""
    keys = list(keys)
    taken: dict[str, str] = {}
    for key in sorted(keys):
        name = base = "param/" + key.replace(".", "_")
        n = 1
        while name in taken.values():
            n += 1
            name = f"{base}_{n}"
        taken[key] = name
    return {k: taken[k] for k in keys}


def sampled_values(row: dict[str, Any], columns: dict[str, str]) -> dict[str, Any]:
    """A trials-table row's sampled values, keyed by the space keys again."""
    return {k: row.get(c) for k, c in columns.items()}


def trials_table(spec: SearchSpec, results: tune.ResultGrid) -> list[dict[str, Any]]:
    """One row per trial (from Ray's results): trial number, trial id, status, epochs, sampled
    values (:func:`param_columns`), best-epoch and last-epoch validation metrics, push set."""
    columns = param_columns(spec.space)
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
        row.update({columns[k]: cfg.get(k) for k in spec.space})
        row.update(_metrics(m))
        row["error"] = str(result.error).strip().splitlines()[-1][:300] if result.error else ""
        rows.append(row)
    rows.sort(key=lambda r: (r["trial"], r["trial_id"]))
    return rows


def _metrics(m: dict[str, Any]) -> dict[str, float | None]:
    row: dict[str, float | None] = {}
    for key in (OBJECTIVE, *PARETO, "val/w_acc", "val/clean_acc", "val/robust_acc"):
        row[key] = float(m[key]) if m.get(key) is not None else None
    for key in PUSH_KEYS:  # over the epochs the trial trained
        value = m.get(f"train/run_{key}_frac")
        row[key] = float(value) if value is not None else None
    return row


def trials_from_runs(facts: SearchFacts, children: list[dict[str, Any]]
                     ) -> list[dict[str, Any]]:
    """The rows of :func:`trials_table` from the trials' MLflow child runs (their tags
    ``trial_id``, ``trial_number``, ``sampled``, ``epochs_trained``, ``stopped_early``,
    ``error`` and latest metrics), for ``ablate report``: no Ray state needed. A trial of an
    interrupted search that did not end has the status ``interrupted`` (or ``running``)."""
    columns = param_columns(facts.space)
    rows = []
    for run in children:
        tags, m = run["tags"], run["metrics"]
        if "trial_id" not in tags:
            continue
        try:
            sampled = parse_yaml(tags.get("sampled") or "{}")
        except YamlRefused:
            sampled = None
        sampled = sampled if isinstance(sampled, dict) else {}
        if "epochs_trained" in tags:
            epochs = int(tags["epochs_trained"])
        else:  # failed or interrupted: the epochs it logged
            epochs = int(m["epoch"]) + 1 if "epoch" in m else 0
        status = {"FINISHED": "stopped" if tags.get("stopped_early") == "True" else "finished",
                  "FAILED": "failed", "KILLED": "interrupted"}.get(run["status"], "running")
        number = tags.get("trial_number", "0")
        row: dict[str, Any] = {"trial": int(number) if number.isdigit() else 0,
                               "trial_id": tags["trial_id"], "status": status, "epochs": epochs}
        row.update({columns[k]: sampled.get(k) for k in facts.space})
        row.update(_metrics(m))
        row["error"] = tags.get("error", "")[:300]
        rows.append(row)
    rows.sort(key=lambda r: (r["trial"], r["trial_id"]))
    return rows


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
    """Optuna's default importances (PED-ANOVA in Optuna 5) of the searched values for val
    W-acc, on the trials that reached one epoch (:func:`at_fidelity`). Returns what
    ``importances.json`` holds (metric, epoch, trials, their numbers, the importances; empty
    with too few or constant trials) and the in-memory study they come from."""
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
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # 'importances will be equal' on tiny searches
            imp = dict(optuna.importance.get_param_importances(study))
    except (RuntimeError, ValueError, ZeroDivisionError):  # too few or constant trials
        imp = {}
    return {"metric": OBJECTIVE, "epoch": epoch, "max_epochs": facts.epochs,
            "trials": len(used), "trial_numbers": [r["trial"] for r in used],
            "rule": f"the trials that reached epoch {epoch}: the last epoch at least "
                    f"{IMPORTANCE_MIN_TRIALS} trials reached (all that trained, if fewer)",
            "importances": imp}, study


def optuna_storage(tracker: Tracker) -> str | None:
    """Where the search's Optuna study is kept: ``optuna.db`` beside a local SQLite MLflow
    store (``sqlite:////abs/dir/optuna.db``); None for any other store."""
    db = tracker.sqlite_path
    return None if db is None else f"sqlite:///{(db.parent / OPTUNA_DB).resolve()}"


def study_name(facts: SearchFacts, parent: str) -> str:
    """The Optuna study of a search: ``EXPERIMENT-SPECHASH-PARENTRUNID`` (unique: a search
    started again with ``--fresh`` has the same spec hash but a new parent run)."""
    return f"{facts.name}-{facts.digest}-{parent}"


def build_study(facts: SearchFacts, rows: list[dict[str, Any]],
                histories: dict[str, dict[int, float]], runs: dict[str, str], *,
                storage: str | None = None, name: str | None = None) -> optuna.Study:
    """The search as an Optuna study, in ``storage`` (replacing a study of that name) or in
    memory: one trial per trial that ended, in trial order, as Ray's OptunaSearch told its
    sampler: COMPLETE with the objective at its last epoch (``val/best_w_acc``, or val clean
    and PGD accuracy of the best epoch for a Pareto search) whether ASHA stopped it or not, FAIL
    for a failed trial; intermediate values: val W-acc of the best epoch so far per epoch;
    user attributes: trial number and id, status, epochs, MLflow run id."""
    space, columns = optuna_space(facts), param_columns(facts.space)
    keys = PARETO if facts.multi else (OBJECTIVE,)
    rdb = None
    if storage is not None and name is not None:
        rdb = optuna.storages.RDBStorage(  # wait for a reader (optuna-dashboard) to let go
            storage, engine_kwargs={"connect_args": {"timeout": 60}})
        with contextlib.suppress(KeyError):  # a summary written again: rebuilt, not appended
            optuna.delete_study(study_name=name, storage=rdb)
    study = optuna.create_study(storage=rdb, study_name=name,
                                directions=["maximize"] * len(keys))
    trials = []
    for r in rows:
        if r["status"] not in ENDED:
            continue
        values = [r[k] for k in keys]
        ok = r["status"] != "failed" and all(v is not None and not math.isnan(v)
                                             for v in values)
        attrs = {"trial": r["trial"], "trial_id": r["trial_id"], "status": r["status"],
                 "epochs": r["epochs"], "mlflow_run_id": runs.get(r["trial_id"], ""),
                 "val_best_w_acc": r[OBJECTIVE]}
        with contextlib.suppress(ValueError):  # a value outside the space: left out
            trials.append(optuna.trial.create_trial(
                state=optuna.trial.TrialState.COMPLETE if ok else optuna.trial.TrialState.FAIL,
                values=values if ok else None, params=sampled_values(r, columns),
                distributions=space, user_attrs=attrs,
                intermediate_values=histories.get(r["trial_id"]) or None))
    study.add_trials(trials)
    return study


