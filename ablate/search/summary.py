"""A search's summary in its parent run: the trials table (Parquet, CSV, Markdown, an MLflow
table), the objective and Pareto plots, importances at one fidelity, the Optuna study (an
``optuna.db`` beside a local SQLite MLflow store, for ``optuna-dashboard``) and its figures, and
the best trial's checkpoint tested on the test split. ``ablate report`` rebuilds it from MLflow.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna
import ray
import torch
from ray import tune

from ablate import names
from ablate.config import Resources, SearchSpec, dump_yaml, redact
from ablate.core.console import Log
from ablate.core.errors import ConfigError
from ablate.grid import report_grid
from ablate.report import (
    attack_line,
    optuna_figures,
    pareto_front,
    plot_curves,
    plot_importances,
    plot_objective,
    plot_pareto,
    push_inactive,
    push_note,
    test_line,
    write_html,
    write_table,
)
from ablate.search.study import (
    build_study,
    dashboard_command,
    importances,
    optuna_storage,
    stored_study,
    study_name,
)
from ablate.search.trials import (
    ENDED,
    SearchFacts,
    describe,
    param_columns,
    sampled_values,
    trials_from_runs,
    trials_markdown,
    trials_table,
)
from ablate.tracking import Tracker, run_link
from trainables.ciard import check_checkpoint, final_test


def summarize(spec: SearchSpec, results: tune.ResultGrid, tracker: Tracker, parent: str,
              params: dict[str, Any], log: Log) -> list[dict[str, Any]]:
    """Parent-run summary: tables, plots, importances, the Optuna study; best trial re-tested
    on the test split (on a cluster, while the driver writes the rest), unless a confirm
    stage chooses the winner. Returns the ended trials' rows, best first."""
    rows = trials_table(spec, results)
    ranked = sorted(_ended(rows), key=lambda r: (-r[names.OBJECTIVE], r["trial"]))
    best = ranked[0] if ranked else None
    test = None
    if best is not None and spec.confirm is None:
        result = next(r for r in results
                      if (r.metrics or {}).get("trial_id") == best["trial_id"])
        check_checkpoint(result.checkpoint, f"best trial {best['trial_id']}")  # before any log
        test = launch_test(sampled_values(best, param_columns(spec.space)), result.checkpoint,
                           params, spec.resources)
    summarize_trials(SearchFacts.of(spec), rows, tracker, parent, log)
    if best is not None and test is not None:
        with tempfile.TemporaryDirectory() as tmp:
            _final_test(spec, best, test, tracker, parent, Path(tmp), log)
    return ranked


def best_trial(rows: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The row of the trial with the highest objective among those that ended with one."""
    done = _ended(rows)
    return max(done, key=lambda r: r[names.OBJECTIVE]) if done else None


def _ended(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in rows if r["status"] in ("finished", "stopped")
            and r[names.OBJECTIVE] is not None]


FinalTest = Callable[[], tuple[dict[str, float], list[dict[str, float]]]]


def launch_test(sampled: dict[str, Any], checkpoint: tune.Checkpoint, params: dict[str, Any],
                resources: Resources) -> FinalTest:
    """Start testing a trial's best checkpoint (``sampled``: its values, ``params``: the
    trainable's recipe, teachers and threads); the returned call waits for the result.
    On a one-machine Ray the driver tests it itself when called: its imports are warm, where
    a fresh Ray worker would spend seconds importing torch. On a cluster a Ray task with the
    trial's resources runs it at once (the driver may have no GPU), alongside the summary."""
    if on_one_machine():
        return lambda: in_driver(final_test, sampled, checkpoint, **params)
    remote = ray.remote(num_cpus=resources.cpu, num_gpus=resources.gpu)(final_test)
    ref = remote.remote(sampled, checkpoint, **params)
    return lambda: ray.get(ref)


def on_one_machine() -> bool:
    """Whether the Ray cluster is the driver's own node and nothing else."""
    alive = [n["NodeID"] for n in ray.nodes() if n.get("Alive")]
    return alive == [ray.get_runtime_context().get_node_id()]


def in_driver(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """``fn`` in this process, which gets back its torch thread count afterwards (a trial's
    trainer pins it to the trial's CPU share)."""
    threads = torch.get_num_threads()
    try:
        return fn(*args, **kwargs)
    finally:
        torch.set_num_threads(threads)


def summarize_trials(facts: SearchFacts, rows: list[dict[str, Any]], tracker: Tracker,
                     parent: str, log: Log) -> tuple[dict[str, Any] | None, str]:
    """Everything of a search's summary that needs no Ray: counts, warnings, the Pareto
    front, the trials table, plots, importances, the Optuna study and its figures (for
    :func:`summarize` and ``ablate report``). Returns the best trial's row (None if none
    ended with a value) and the trials table in Markdown."""
    done = _ended(rows)
    front = pareto_front([(r[names.PARETO[0]], r[names.PARETO[1]]) for r in done])
    for r in rows:
        r["pareto"] = any(r is done[i] for i in front)
    counts = {f"{names.TRIALS_PREFIX}{s}": sum(r["status"] == s for r in rows) for s in ENDED}
    tracker.log_summary(parent, counts, step=0)
    unended = len(rows) - sum(counts.values())
    log(f"{len(rows)} trials: {counts['trials/finished']} finished, {counts['trials/stopped']} "
        f"stopped early by ASHA, {counts['trials/failed']} failed"
        + (f", {unended} did not end (interrupted)" if unended else ""))
    inactive = [r for r in rows if push_inactive(r["push_empty"])]
    if inactive:
        log(f"warning: push inactive in {len(inactive)} of {len(rows)} trials (J empty in more "
            "than 90% of their batches): trials " + ", ".join(str(r["trial"]) for r in inactive))
    log("Pareto front (val clean / PGD at the best epoch): " + ", ".join(
        f"trial {r['trial']} {100 * r[names.PARETO[0]]:.1f}/{100 * r[names.PARETO[1]]:.1f}%"
        for r in sorted((r for r in rows if r["pareto"]), key=lambda r: -r[names.PARETO[0]])))
    runs = {c["tags"][names.TRIAL_ID]: c["run_id"] for c in tracker.children(parent)
            if names.TRIAL_ID in c["tags"]}
    histories = {tid: {step: v
                       for step, v in tracker.metric_history(run, names.OBJECTIVE).items()}
                 for tid, run in runs.items()}
    with tempfile.TemporaryDirectory() as tmp:
        markdown = _log_tables(facts, rows, tracker, parent, Path(tmp))
        imp, imp_study = _log_importances(facts, rows, histories, tracker, parent, Path(tmp),
                                          log)
        _log_study(facts, rows, histories, runs, imp, imp_study, tracker, parent, Path(tmp), log)
    return best_trial(rows), markdown


def _log_tables(facts: SearchFacts, rows: list[dict[str, Any]], tracker: Tracker, parent: str,
                tmp: Path) -> str:
    """trials.parquet, trials.csv, trials.md and the MLflow table trials.json (dot-free
    column names, :func:`param_columns`); the objective and Pareto plots. Returns the
    Markdown table."""
    columns = list(param_columns(facts.space).values())
    markdown = trials_markdown(rows, columns)
    for path in write_table(rows, markdown, tmp, stem=names.TRIALS_TABLE):
        tracker.log_artifact(parent, path)
    tracker.replace_table(parent, {k: [r.get(k) for r in rows] for k in (rows[0] if rows else {})},
                          names.TRIALS_MLFLOW_TABLE)
    values = [r[names.OBJECTIVE] for r in rows]
    plot_objective(values, tmp / "objective.png", title=f"{facts.name}: best val W-acc per trial")
    clean, robust = names.PARETO
    plot_pareto([(r[clean], r[robust]) for r in rows], [r["pareto"] for r in rows],
                tmp / "pareto.png", title=f"{facts.name}: clean vs PGD (val, best epoch)")
    for name in ("objective.png", "pareto.png"):
        tracker.log_artifact(parent, tmp / name, names.PLOTS)
    return markdown


def _fidelity_title(info: dict[str, Any]) -> str:
    return (f"Optuna importances for val W-acc at epoch {info['epoch']}/{info['max_epochs']} "
            f"({info['trials']} trials that reached it)")


def _log_importances(facts: SearchFacts, rows: list[dict[str, Any]],
                     histories: dict[str, dict[int, float]], tracker: Tracker, parent: str,
                     tmp: Path, log: Log) -> tuple[dict[str, Any], optuna.Study]:
    """importances.json (JSON: metric, epoch, trials, importances) and its plot."""
    info, study = importances(facts, rows, histories)
    (tmp / names.IMPORTANCES).write_text(json.dumps(info, indent=2) + "\n")
    plot_importances(info["importances"], tmp / "importances.png", title=_fidelity_title(info))
    tracker.log_artifact(parent, tmp / names.IMPORTANCES)
    tracker.log_artifact(parent, tmp / "importances.png", names.PLOTS)
    if info["importances"]:
        log(f"importances (PED-ANOVA) for val W-acc at epoch {info['epoch']} of "
            f"{info['max_epochs']}, trials {_numbers(info['trial_numbers'])}: "
            + ", ".join(f"{k} {v:.2f}" for k, v in info["importances"].items()))
        log(dashboard_note(facts, info, rows))
    return info, study


def _numbers(numbers: list[int]) -> str:
    shown = ", ".join(str(n) for n in numbers[:12])
    return shown + (f" and {len(numbers) - 12} more" if len(numbers) > 12 else "")


def dashboard_note(facts: SearchFacts, info: dict[str, Any], rows: list[dict[str, Any]]) -> str:
    """Whether optuna-dashboard's ranking of the same study is this one, and why not: it ranks
    the study's COMPLETE trials (those that ran every epoch; ASHA's stopped ones are PRUNED
    there) by their final value, for each objective of a Pareto study."""
    if facts.multi:
        return ("optuna-dashboard ranks each objective of the Pareto study (val clean, val PGD) "
                "on its COMPLETE trials, not W-acc: its rankings differ from this one")
    full = [r["trial"] for r in rows if r["status"] == "finished" and r["epochs"] == facts.epochs]
    if info["epoch"] == facts.epochs and sorted(full) == sorted(info["trial_numbers"]):
        return (f"optuna-dashboard shows the same ranking: the same {len(full)} COMPLETE trials, "
                "the same method")
    return (f"optuna-dashboard ranks only the {len(full)} trials that ran all {facts.epochs} "
            "epochs (COMPLETE in the study; those ASHA stopped are PRUNED there), by their "
            "final value, so its ranking can differ from this one at a fidelity more trials "
            "reached")


def _log_study(facts: SearchFacts, rows: list[dict[str, Any]],
               histories: dict[str, dict[int, float]], runs: dict[str, str],
               imp: dict[str, Any], imp_study: optuna.Study, tracker: Tracker, parent: str,
               tmp: Path, log: Log) -> None:
    """The Optuna study in ``optuna.db`` beside a local SQLite store (tags ``optuna_storage``
    and ``optuna_study`` on the parent run; in memory for other stores): the one the searcher
    wrote, or for a search from before that, one rebuilt from the trials table; and Optuna's
    HTML figures of the rebuilt study (ASHA's stopped trials with their values) under
    ``optuna/`` in the parent run."""
    storage, name = optuna_storage(tracker), study_name(facts.name, facts.digest, parent)
    study = None if storage is None else stored_study(storage, name)  # the searcher's own
    live = study is not None
    if live:
        log(f"Optuna study {name} in {storage} ({len(study.trials)} trials, written as they "
            f"reported); {dashboard_command(storage)}")
    elif storage is None:
        log(f"Optuna study: not stored (the MLflow store {redact(tracker.uri)} is not a local "
            f"SQLite file, beside which {names.OPTUNA_DB} would go); its figures are under "
            f"{names.OPTUNA_FIGURES}/")
    else:
        try:
            with tracker.lock():  # two commands creating optuna.db at once race in its schema
                study = build_study(facts, rows, histories, runs, storage=storage, name=name)
                study.set_user_attr("mlflow_tracking_uri", tracker.uri)
                study.set_user_attr("mlflow_parent_run_id", parent)
                study.set_user_attr(names.SPEC_HASH, facts.digest)
        except Exception as exc:  # the trials are done: say what went wrong, do not fail
            log(f"warning: Optuna study not stored in {storage}: {type(exc).__name__}: {exc}")
        else:
            tracker.set_tags(parent, {names.OPTUNA_STORAGE: storage, names.OPTUNA_STUDY: name})
            log(f"Optuna study {name} in {storage} ({len(study.trials)} trials); "
                f"{dashboard_command(storage)}")
    if study is None or live:  # the figures show every trial with its value
        study = build_study(facts, rows, histories, runs)
    target = (lambda t: t.user_attrs["val_best_w_acc"]) if facts.multi else None
    figures, skipped = optuna_figures(
        study, target=target, title=facts.name,
        target_name="val W-acc of the best epoch (at each trial's last epoch)",
        importance_study=imp_study, importance_title=_fidelity_title(imp),
        pareto_names=("val clean acc", "val PGD acc") if facts.multi else ())
    if figures:
        page = write_html(figures, tmp / names.OPTUNA_FIGURES / "figures.html",
                          title=f"{facts.name}: Optuna figures")
        tracker.log_artifact(parent, page, names.OPTUNA_FIGURES)
    for fig, why in skipped.items():
        log(f"Optuna figure {fig} not drawn: {why}")


def _final_test(spec: SearchSpec, best: dict[str, Any], final: FinalTest, tracker: Tracker,
                parent: str, tmp: Path, log: Log) -> None:
    sampled = sampled_values(best, param_columns(spec.space))
    cfg = spec.trial_config(sampled)
    # Readable by `ablate train` (whose YAML loader refuses aliases).
    (tmp / names.BEST_CONFIG).write_text(dump_yaml(cfg.model_dump(mode="json")), encoding="utf-8")
    tracker.log_artifact(parent, tmp / names.BEST_CONFIG)
    test, history = final()
    plot_curves(history, tmp / "best_curves.png", title=f"best trial {best['trial']}")
    tracker.log_artifact(parent, tmp / "best_curves.png", names.PLOTS)
    metrics = names.prefixed(names.TEST, test)
    tracker.log_summary(parent, {**metrics, names.BEST_OBJECTIVE: best[names.OBJECTIVE]}, step=0)
    child = tracker.find_run(spec.name, {names.TRIAL_ID: best["trial_id"],
                                         names.PARENT_RUN: parent})
    if child is not None:
        tracker.log_summary(child, metrics, step=cfg.optim.epochs)
        tracker.set_tags(child, {names.BEST: names.flag(True)})
    tracker.set_tags(parent, {names.BEST_TRIAL: best["trial_id"]})
    log(_best_line(best, sampled))
    if child is not None:
        log(f"best trial's curves: {run_link(tracker, child)}")
    note = push_note(best["push_active"], best["push_empty"])
    if note:
        log(f"best trial push term: {note}")
    log(f"test (best epoch {int(test['best_epoch'])}): {test_line(test)}   best config: "
        "best_config.yaml in the parent run")
    if cfg.eval.attacks:
        log(attack_line(test, cfg.eval.attacks))


def _best_line(best: dict[str, Any], sampled: dict[str, Any]) -> str:
    return (f"best trial {best['trial_id']}: val W {100 * best[names.OBJECTIVE]:.1f}%  "
            f"{describe(sampled)}")


def report_search(info: dict[str, Any], tracker: Tracker, log: Log = print) -> str:
    """``ablate report`` of a search's parent run (:meth:`Tracker.run_info`): its summary
    rebuilt from MLflow without Ray or training (the trials table from the child runs, plots,
    importances, the Optuna study and its figures, logged again into the parent run), the
    table printed, then the best trial and its final test (the parent's ``test/*`` metrics,
    when the search got that far). Returns the Markdown table."""
    facts, parent = SearchFacts.from_run(info), info["run_id"]
    rows = trials_from_runs(facts, tracker.children(parent))
    if not rows:
        raise ConfigError(f"run {parent}: search {facts.name!r} has no trial runs to report")
    best, markdown = summarize_trials(facts, rows, tracker, parent, log)
    log(markdown)
    if best is None:
        log("no trial ended with a value: no best trial")
        return markdown
    log(_best_line(best, sampled_values(best, param_columns(facts.space))))
    note = push_note(best["push_active"], best["push_empty"])
    if note:
        log(f"best trial push term: {note}")
    metrics = tracker.run_metrics(parent)
    test = {k.removeprefix(names.TEST): v for k, v in metrics.items()
            if k.startswith(names.TEST)}
    if {"clean_acc", "pgd_sat_acc", "pgd_sat_wr"} <= set(test):
        epoch = f" (best epoch {int(test['best_epoch'])})" if "best_epoch" in test else ""
        tested = info["tags"].get(names.BEST_TRIAL)
        who = f" of trial {tested}" if tested and tested != best["trial_id"] else ""
        log(f"test{who}{epoch}: {test_line(test)}")
        if facts.attacks:
            line = attack_line(test, facts.attacks)
            if line:
                log(line)
    else:
        log("the best trial has no final test in this run (the search ended before it)")
    return markdown
def report_stages(search: str, tracker: Tracker, log: Log = print) -> str:
    """The runs nested in a search's parent run, after its summary: the confirm stage's table
    (its ``confirm.md``) and each around-grid's table, rebuilt from its cells."""
    out = ""
    for run in sorted(tracker.children(search), key=lambda r: r["start_time"]):
        kind, tags = run["tags"].get(names.KIND), run["tags"]
        if kind == names.KIND_CONFIRM:
            with tempfile.TemporaryDirectory() as tmp:
                found = tracker.download_if_present(run["run_id"], names.CONFIRM_TABLE, tmp)
                # a stage that chose no winner has no table
                text = (Path(found).read_text() if found else
                        f"Confirm stage {run['run_id']}: {run['status'].lower()}, no winner\n")
            log(text)
            out += "\n" + text
        elif kind == names.KIND_GRID and names.GRID in tags:
            log(f"Around-grid {run['run_id']} ({run['status'].lower()}):")
            out += "\n" + report_grid(run, tracker, log)
    return out


